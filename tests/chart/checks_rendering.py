"""What the chart renders by default and with the usual values: lint, valid objects, the
Deployment, the arguments `herald controller` accepts, NOTES.txt."""

from __future__ import annotations

import os
import re
import subprocess

import helm_python as helm

from common import (
    CHART,
    FLAGGER_VALUES,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    ROOT,
    SLACK_BOT_VALUES,
    STATE_ARG,
    TEAMS_URL,
    TOKEN_ARG,
    TOKEN_SECRET,
    Skip,
    check,
    container,
    expect_equal,
    kinds,
    one,
    render,
    render_files,
)
from structure import validate_structure


@check
def lint() -> None:
    """`helm lint` (strict: warnings fail too) with the default and the Flagger values."""
    for label, values in (
        ("default values", None),
        ("Flagger values", FLAGGER_VALUES),
        ("Slack bot values", SLACK_BOT_VALUES),
    ):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["total_charts_linted"] == 1, report
        assert not report["errors"] and not bad, f"{label}: {report}"



@check
def default_render() -> None:
    """Default values render the controller and nothing that needs a receiver or Prometheus
    Operator; every object is valid."""
    docs = render()
    for doc in docs:
        assert (
            doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name")
        ), f"{doc.get('__source__')}: a document without apiVersion, kind or metadata.name"
    expect_equal(
        kinds(docs),
        sorted(
            [
                ("ClusterRole", FULLNAME),
                ("ClusterRoleBinding", FULLNAME),
                ("Deployment", FULLNAME),
                ("Role", FULLNAME),
                ("RoleBinding", FULLNAME),
                ("Secret", TOKEN_SECRET),
                ("Service", FULLNAME),
                ("ServiceAccount", FULLNAME),
            ]
        ),
        "objects rendered by default",
    )
    problems = validate_structure(docs)
    assert not problems, "\n".join(problems)



@check
def core_objects_valid() -> None:
    """Every core object of several value sets is valid for Kubernetes (strict schemas) and
    the objects refer to each other correctly."""
    value_sets = {
        "flagger": {
            **FLAGGER_VALUES,
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        },
        "replicas": {
            "replicaCount": 3,
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "podAnnotations": {"a": "b"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccount": {"annotations": {"x": "y"}},
            "priorityClassName": "high",
        },
        "other-release": {"fullnameOverride": ""},
        "slack-bot": {**SLACK_BOT_VALUES, "msteams": {"url": TEAMS_URL}},
        "network-policy": {
            "networkPolicy": {
                "enabled": True,
                "flaggerNamespaces": ["flagger-system", "istio-system"],
                "extraFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            },
            "eventToken": {"existingSecret": {"name": "my-token", "key": "value"}},
        },
    }
    problems = []
    for label, values in value_sets.items():
        name = "team-a" if label == "other-release" else RELEASE
        problems += [f"[{label}] {p}" for p in validate_structure(render(values, name=name))]
    # The check itself must be able to fail.
    broken = render()
    container_ = one(broken, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    container_["imagePullPolcy"] = "Always"
    one(broken, "Service")["spec"]["ports"][0]["targetPort"] = "metrics"
    found = validate_structure(broken)
    if not any("imagePullPolcy" in p for p in found) or not any("targetPort" in p for p in found):
        problems.append(f"the validation misses planted errors: {found}")
    assert not problems, "\n".join(problems)



@check
def deployment() -> None:
    """The controller's arguments, environment, security, probes, resources and image."""
    docs = render()
    deployment_ = one(docs, "Deployment")
    c = container(docs)
    expect_equal(
        c["args"],
        ["controller", "--listen=0.0.0.0:8080", TOKEN_ARG, STATE_ARG, "--log-format=json", "--log-level=info"],
        "args with default values",
    )
    expect_equal(
        c["env"],
        [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "env",
    )
    with helm.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    version = re.search(
        r'\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M
    )
    assert version, "Cargo.toml: no [workspace.package] version"
    expect_equal(app_version, version.group(1), "Chart.yaml appVersion (Herald's version in Cargo.toml)")
    expect_equal(c["image"], f"ghcr.io/herald-dev/herald:{app_version}", "image: the published one, tag defaults to appVersion")
    expect_equal(c["imagePullPolicy"], "IfNotPresent", "imagePullPolicy")
    expect_equal(c["ports"], [{"name": "http", "containerPort": 8080, "protocol": "TCP"}], "ports")
    sc = c["securityContext"]
    expect_equal(
        {
            k: sc.get(k)
            for k in ("runAsNonRoot", "runAsUser", "readOnlyRootFilesystem", "allowPrivilegeEscalation")
        },
        {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        },
        "container securityContext",
    )
    expect_equal(sc.get("capabilities"), {"drop": ["ALL"]}, "capabilities")
    pod_sc = deployment_["spec"]["template"]["spec"]["securityContext"]
    expect_equal((pod_sc.get("runAsNonRoot"), pod_sc.get("runAsUser")), (True, 65532), "pod securityContext")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        port = ports.get(get["port"], get["port"])
        expect_equal((get["path"], port), (path, 8080), probe)
    for part in ("requests", "limits"):
        res = c["resources"].get(part) or {}
        assert res.get("cpu") and res.get(
            "memory"
        ), f"resources.{part} needs cpu and memory: {c['resources']}"
    expect_equal(deployment_["spec"]["replicas"], 1, "replicas")
    expect_equal(
        deployment_["spec"].get("strategy"), {"type": "Recreate"}, "strategy without leader election"
    )

    docs = render(
        {
            "replicaCount": 2,
            "clusterName": "prod eu",
            "logLevel": "debug",
            "image": {"repository": "registry.example.com/herald", "tag": "1.2.3", "pullPolicy": "Always"},
            "extraArgs": ["--min-interval=1s"],
        }
    )
    c = container(docs)
    expect_equal(
        c["args"],
        [
            "controller",
            "--listen=0.0.0.0:8080",
            "--cluster-name=prod eu",
            "--leader-election",
            TOKEN_ARG,
            STATE_ARG,
            "--log-format=json",
            "--log-level=debug",
            "--min-interval=1s",
        ],
        "args with two replicas and a cluster name",
    )
    expect_equal((c["image"], c["imagePullPolicy"]), ("registry.example.com/herald:1.2.3", "Always"), "image")
    assert "strategy" not in one(docs, "Deployment")["spec"], "leader election allows rolling updates"



@check
def controller_args() -> None:
    """The herald binary accepts the arguments the chart gives `herald controller`."""
    binary = os.environ.get("HERALD_BIN")
    if not binary:
        raise Skip("HERALD_BIN is not set")
    gates = {
        "externalURL": "https://herald.example.com",
        "slackSigningSecret": {"existingSecret": {"name": "slack-app"}},
        "identityHeader": "X-Forwarded-Email",
    }
    for values in (
        {},
        {"replicaCount": 2, "clusterName": "prod eu", "logLevel": "herald=debug,info"},
        {"gates": gates},
    ):
        args = container(render(values))["args"]
        run = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"herald {' '.join(args)} --help: exit {run.returncode}\n{run.stderr}"
    # A flag herald does not know is refused, so the check above means something.
    run = subprocess.run(
        [binary, "controller", "--no-such-flag", "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0, "herald accepted an unknown flag"



@check
def notes() -> None:
    """NOTES.txt renders and says how to see the policies."""
    text = render_files(FLAGGER_VALUES)["herald/templates/NOTES.txt"]
    assert "kubectl get clusternotificationpolicies -l app.kubernetes.io/instance=herald" in text, text
    assert "herald.flagger-system" in text, text
