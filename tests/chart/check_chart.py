#!/usr/bin/env python3
"""Checks of the Helm chart in charts/herald, with Helm's own engine (helm-python-sdk, which
bundles Helm as a library) and the Kubernetes JSON schemas (kubernetes-validate).

    check_chart.py --list          the names of the checks
    check_chart.py [NAME ...]      runs the named checks (all without names)

Prints `PASS name`, `FAIL name` (with the reasons) or `SKIP name` (with the reason) per check,
then `N passed, N failed`; exits 1 when a check failed. crates/herald/tests/chart.rs runs each
check as its own Rust test, in the virtualenv it creates from requirements.txt.

HERALD_BIN, when set, is the herald binary: the rendered controller arguments are parsed by it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "herald"
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples" / "policies"

RELEASE = "herald"
NAMESPACE = "flagger-system"
# The Kubernetes version whose schemas core objects are checked against (k8s-openapi's v1_33).
KUBE_VERSION = "1.33"

FULLNAME = "herald"
SECRET = "herald-receivers"
TOKEN_SECRET = "herald-event-token"
TOKEN_ARG = "--event-token-file=/etc/herald/event-token/token"
STATE_ARG = "--state-dir=/var/lib/herald"
TOKEN_MOUNT = {"name": "event-token", "mountPath": "/etc/herald/event-token", "readOnly": True}
TOKEN_VOLUME = {"name": "event-token", "secret": {"secretName": TOKEN_SECRET, "items": [{"key": "token", "path": "token"}]}}
STATE_MOUNT = {"name": "state", "mountPath": "/var/lib/herald"}
PATTERN = (
    "^(Initialization done|New revision detected|Promotion completed|Rolling back|"
    "Canary failed|Progress deadline exceeded|Promotion failed)"
)
SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXX"
TEAMS_URL = "https://example.webhook.office.com/webhookb2/abc"
WEBHOOK_URL = "https://audit.example.com/flagger"
SLACK_TOKEN = "xoxb-1111-2222-abcdefABCDEF"

# What Flagger users have in their values.
FLAGGER_VALUES = {
    "clusterName": "prod-eu",
    "slack": {"url": SLACK_URL, "channel": "#deploys"},
    "msteams": {"url": TEAMS_URL},
    "eventWebhook": WEBHOOK_URL,
}

# Flagger's values with a Slack bot token (Flagger's SLACK_TOKEN) instead of a webhook URL.
SLACK_BOT_VALUES = {
    "clusterName": "prod-eu",
    "slack": {"token": SLACK_TOKEN, "channel": "#deploys"},
}

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterNotificationPolicy"}

CHECKS: dict[str, Callable[[], None]] = {}


class Skip(Exception):
    """A check that cannot run here (said why); the Rust tests treat it as a failure."""


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__] = fn
    return fn


# --- helpers ---------------------------------------------------------------------------------


def render_files(values: dict | None = None, name: str = RELEASE) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=name, namespace=NAMESPACE)


def render(values: dict | None = None, name: str = RELEASE) -> list[dict]:
    """Every rendered object (NOTES.txt aside), each parsed from the template's YAML."""
    docs = []
    for path, text in sorted(render_files(values, name).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: a document is not a mapping: {doc!r}"
                doc.setdefault("__source__", path)
                docs.append(doc)
    return docs


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__source__"}


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind}{' ' + name if name else ''}, found " f"{[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def kinds(docs: list[dict]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def expect_equal(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise AssertionError(
            f"{what}:\n  expected {json.dumps(expected, sort_keys=True)}\n"
            f"  actual   {json.dumps(actual, sort_keys=True)}"
        )


def render_error(values: dict) -> str:
    """The error rendering `values` gives; fails when it renders."""
    try:
        render_files(values)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"rendered, but should have been refused: {json.dumps(values)}")


def receiver_secrets(docs: list[dict]) -> list[dict]:
    """The Secrets other than the event token's."""
    return [d for d in objects(docs, "Secret") if not d["metadata"]["name"].endswith("-event-token")]


def container(docs: list[dict]) -> dict:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"one container expected, got {len(containers)}"
    return containers[0]


def policy_specs(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in objects(docs, "ClusterNotificationPolicy")}


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def validate_structure(docs: list[dict]) -> list[str]:
    """Every rendered object: identity fields, names, labels, the Kubernetes schema of its
    kind (strict: unknown fields are errors) and the references between objects."""
    problems = []
    for doc in docs:
        where = f"{doc.get('__source__')}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        obj = strip(doc)
        for field in ("apiVersion", "kind"):
            if not isinstance(obj.get(field), str) or not obj[field]:
                problems.append(f"{where}: no {field}")
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            problems.append(f"{where}: no metadata.name")
            continue
        name = meta["name"]
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            problems.append(f"{where}: name {name!r} is not a DNS subdomain")
        if obj["kind"] == "Service" and (len(name) > 63 or not DNS_LABEL.match(name)):
            problems.append(f"{where}: a Service name must be a DNS-1035 label")
        if obj["kind"] in CLUSTER_SCOPED:
            if "namespace" in meta:
                problems.append(f"{where}: cluster-scoped object with a namespace")
        elif meta.get("namespace") != NAMESPACE:
            problems.append(f"{where}: namespace {meta.get('namespace')!r}, not {NAMESPACE!r}")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                problems.append(f"{where}: label {key}={value!r} is not a valid label value")
        if obj["apiVersion"].startswith(("herald.dev/", "monitoring.coreos.com/")):
            continue  # Not Kubernetes kinds: checked by their own checks.
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{where}: Kubernetes {KUBE_VERSION} schema: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: {e.message}")
    problems.extend(check_references(docs))
    return problems


def check_references(docs: list[dict]) -> list[str]:
    problems = []
    deployments = objects(docs, "Deployment")
    if not deployments:
        return ["no Deployment"]
    deployment = deployments[0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels") or {}
    selector = deployment["spec"]["selector"]["matchLabels"]
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append(f"Deployment selector {selector} does not select its pods {pod_labels}")
    port_names = {
        p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])
    }
    for c in pod["spec"]["containers"]:
        for probe in ("livenessProbe", "readinessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in port_names:
                problems.append(f"{probe} port {port!r} is no container port")
    service_accounts = {d["metadata"]["name"] for d in objects(docs, "ServiceAccount")}
    sa = pod["spec"].get("serviceAccountName")
    if sa not in service_accounts:
        problems.append(f"the pods' ServiceAccount {sa!r} is not rendered")
    services = objects(docs, "Service")
    for service in services:
        sel = service["spec"]["selector"]
        if any(pod_labels.get(k) != v for k, v in sel.items()):
            problems.append(f"Service selector {sel} does not select the pods {pod_labels}")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in port_names:
                problems.append(f"Service targetPort {target!r} is no container port")
    roles = {(d["kind"], d["metadata"]["name"]) for d in objects(docs, "Role") + objects(docs, "ClusterRole")}
    for binding in objects(docs, "RoleBinding") + objects(docs, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        if (ref["kind"], ref["name"]) not in roles:
            problems.append(f"{binding['kind']} {binding['metadata']['name']} refers to missing {ref}")
        for subject in binding["subjects"]:
            if (
                subject["kind"] != "ServiceAccount"
                or subject["name"] != sa
                or subject.get("namespace") != NAMESPACE
            ):
                problems.append(f"{binding['kind']} subject {subject} is not Herald's ServiceAccount")
    for monitor in objects(docs, "ServiceMonitor"):
        sel = monitor["spec"]["selector"]["matchLabels"]
        matching = [
            s
            for s in services
            if all((s["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
        ]
        if len(matching) != 1:
            problems.append(f"ServiceMonitor selects {len(matching)} Services")
        else:
            names = {p["name"] for p in matching[0]["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                if endpoint["port"] not in names:
                    problems.append(
                        f"ServiceMonitor endpoint port {endpoint['port']!r} is not a Service port"
                    )
    return problems


# --- CRD schema -------------------------------------------------------------------------------

# The CEL rules of the CRDs, evaluated here by hand (jsonschema cannot). A new rule in crds/
# fails the check until it is taught here.
KNOWN_CEL_RULES = {
    "[has(self.slack), has(self.msteams), has(self.webhook), has(self.discord), "
    "has(self.googlechat), has(self.rocketchat)].filter(k, k).size() == 1",
    "has(self.url) != has(self.secretRef)",
    "[has(self.url), has(self.secretRef), has(self.tokenSecretRef)].filter(k, k).size() == 1",
    "!has(self.tokenSecretRef) || has(self.channel)",
}


RECEIVER_KINDS = ("slack", "msteams", "webhook", "discord", "googlechat", "rocketchat")


def load_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def structural_to_jsonschema(schema: Any, rules: set[str]) -> Any:
    """A CRD's structural schema as JSON Schema: `nullable` becomes a null type, objects
    with properties reject unknown fields (the API server's strict field validation), and
    x-kubernetes-* keys are dropped (CEL rules are collected in `rules`)."""
    if isinstance(schema, list):
        return [structural_to_jsonschema(s, rules) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            rules.update(v["rule"] for v in value)
        if key.startswith("x-kubernetes-") or key in ("nullable", "format"):
            continue
        if key == "properties":
            out[key] = {k: structural_to_jsonschema(v, rules) for k, v in value.items()}
        else:
            out[key] = structural_to_jsonschema(value, rules)
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(crd: dict) -> tuple[jsonschema.protocols.Validator, set[str], str]:
    versions = [v for v in crd["spec"]["versions"] if v.get("served")]
    assert versions, "the CRD serves no version"
    version = versions[0]
    rules: set[str] = set()
    schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"], rules)
    # The object's identity fields are not in the CRD's schema; the API server adds them.
    schema["properties"].update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema), rules, f"{crd['spec']['group']}/{version['name']}"


def validate_policy(policy: dict, crds: dict[str, dict]) -> list[str]:
    """A herald.dev object against its CRD: schema, CEL rules, list-map keys, identity."""
    kind = policy.get("kind")
    if kind not in crds:
        return [f"no CRD for kind {kind!r}"]
    validator, rules, api_version = crd_validator(crds[kind])
    unknown = rules - KNOWN_CEL_RULES
    if unknown:
        return [f"the CRD has CEL rules this checker does not evaluate: {sorted(unknown)}"]
    name = policy.get("metadata", {}).get("name", "?")
    problems = []
    if policy.get("apiVersion") != api_version:
        problems.append(f"{kind}/{name}: apiVersion {policy.get('apiVersion')!r}, not {api_version}")
    for error in validator.iter_errors(strip(policy)):
        path = ".".join(str(p) for p in error.absolute_path)
        problems.append(f"{kind}/{name}: {path}: {error.message}")
    receivers = policy.get("spec", {}).get("receivers") or []
    names = [r.get("name") for r in receivers if isinstance(r, dict)]
    if len(names) != len(set(names)):
        problems.append(f"{kind}/{name}: receiver names are not unique: {names}")
    for i, receiver in enumerate(r for r in receivers if isinstance(r, dict)):
        kinds_set = [k for k in RECEIVER_KINDS if receiver.get(k) is not None]
        if len(kinds_set) != 1:
            problems.append(
                f"{kind}/{name}: receivers[{i}]: a receiver sets exactly one of {', '.join(RECEIVER_KINDS)}"
            )
        for k in kinds_set:
            target = receiver[k]
            if not isinstance(target, dict):
                continue
            # Slack may name a bot token instead of a webhook URL; a bot needs a channel.
            addresses = ("url", "secretRef", "tokenSecretRef") if k == "slack" else ("url", "secretRef")
            if sum(a in target for a in addresses) != 1:
                problems.append(f"{kind}/{name}: receivers[{i}].{k}: set exactly one of {', '.join(addresses)}")
            if k == "slack" and "tokenSecretRef" in target and "channel" not in target:
                problems.append(f"{kind}/{name}: receivers[{i}].slack: a bot token needs a channel")
    return problems


# --- the checks -------------------------------------------------------------------------------


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
    for values in ({}, {"replicaCount": 2, "clusterName": "prod eu", "logLevel": "herald=debug,info"}):
        args = container(render(values))["args"]
        run = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"herald {' '.join(args)} --help: exit {run.returncode}\n{run.stderr}"
    # A flag herald does not know is refused, so the check above means something.
    run = subprocess.run(
        [binary, "controller", "--no-such-flag", "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0, "herald accepted an unknown flag"


@check
def flagger_values() -> None:
    """Flagger's values give the Secret and the ClusterNotificationPolicies Flagger's
    notifications correspond to, exactly; URLs only in the Secret."""
    docs = render(FLAGGER_VALUES)
    secret = one(docs, "Secret", SECRET)
    expect_equal(secret["metadata"]["name"], SECRET, "Secret name")
    expect_equal(secret["metadata"]["namespace"], NAMESPACE, "Secret namespace")
    expect_equal(secret.get("type"), "Opaque", "Secret type")
    expect_equal(
        secret.get("stringData"),
        {"slack": SLACK_URL, "msteams": TEAMS_URL, "webhook": WEBHOOK_URL},
        "stringData",
    )
    assert "data" not in secret, "no data expected besides stringData"
    expect_equal(
        policy_specs(docs),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [
                    {
                        "name": "slack",
                        "slack": {
                            "secretRef": {"name": SECRET, "key": "slack"},
                            "channel": "#deploys",
                            "username": "flagger",
                        },
                    },
                    {
                        "name": "msteams",
                        "msteams": {
                            "secretRef": {"name": SECRET, "key": "msteams"},
                        },
                    },
                ],
            },
            "herald-default-webhook": {
                "receivers": [
                    {"name": "webhook", "webhook": {"secretRef": {"name": SECRET, "key": "webhook"}}}
                ],
            },
        },
        "ClusterNotificationPolicies",
    )
    assert "--cluster-name=prod-eu" in container(docs)["args"], container(docs)["args"]
    for doc in docs:
        if doc["kind"] != "Secret":
            text = json.dumps(doc)
            for url in (SLACK_URL, TEAMS_URL, WEBHOOK_URL):
                assert url not in text, f"{doc['kind']}/{doc['metadata']['name']} holds a receiver URL"
    # A message pattern in Rust regex syntax that Flagger's alert messages match.
    for message, sent in (
        ("Initialization done! podinfo.test", True),
        ("New revision detected! Scaling up podinfo.test", True),
        ("Promotion completed! Scaling down podinfo.test", True),
        ("Rolling back podinfo.test failed checks threshold reached 5", True),
        ("Canary failed! Scaling down podinfo.test", True),
        ("Advance podinfo.test canary weight 10", False),
        ("Starting canary analysis for podinfo.test", False),
    ):
        assert bool(re.search(PATTERN, message)) == sent, f"pattern on {message!r}"


@check
def receiver_variants() -> None:
    """Each receiver alone, the Teams format, templates, namespaces, and no default policy."""
    only_webhook = render({"eventWebhook": WEBHOOK_URL})
    expect_equal(
        sorted(policy_specs(only_webhook)), ["herald-default-webhook"], "policies for eventWebhook only"
    )
    expect_equal(
        one(only_webhook, "Secret", SECRET)["stringData"],
        {"webhook": WEBHOOK_URL},
        "stringData for eventWebhook only",
    )

    only_slack = render({"slack": {"url": SLACK_URL, "user": ""}})
    expect_equal(
        policy_specs(only_slack),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [{"name": "slack", "slack": {"secretRef": {"name": SECRET, "key": "slack"}}}],
            }
        },
        "policies for Slack only, no channel or user",
    )

    teams = render(
        {
            "msteams": {"url": TEAMS_URL, "format": "MessageCard"},
            "defaultPolicy": {
                "template": {"title": "[{{cluster}}] {{name}}", "text": "{{message}} ({{phase}})"},
                "namespaceSelector": {"matchNames": ["prod-*"]},
                "repeatInterval": "30m",
            },
        }
    )
    expect_equal(
        policy_specs(teams),
        {
            "herald-default": {
                "namespaceSelector": {"matchNames": ["prod-*"]},
                "messagePattern": PATTERN,
                "repeatInterval": "30m",
                "template": {"title": "[{{cluster}}] {{name}}", "text": "{{message}} ({{phase}})"},
                "receivers": [
                    {
                        "name": "msteams",
                        "msteams": {"secretRef": {"name": SECRET, "key": "msteams"}, "format": "MessageCard"},
                    }
                ],
            }
        },
        "Teams MessageCard policy with templates, a namespace selector and a repeat interval",
    )

    disabled = render({**FLAGGER_VALUES, "defaultPolicy": {"enabled": False}})
    expect_equal(policy_specs(disabled), {}, "policies with defaultPolicy.enabled=false")
    assert one(disabled, "Secret", SECRET)["metadata"]["name"] == SECRET, "the Secret stays for your own policies"

    named = render(FLAGGER_VALUES, name="notify")
    expect_equal(
        sorted(policy_specs(named)),
        ["notify-default", "notify-default-webhook"],
        "policy names follow the release",
    )
    assert one(named, "Secret", "notify-herald-receivers")["metadata"]["name"] == "notify-herald-receivers", "Secret name"


@check
def existing_secret() -> None:
    """existingSecret options reference the given Secrets and render no Secret."""
    docs = render(
        {
            "slack": {"existingSecret": {"name": "flagger-slack", "key": "url"}, "channel": "#ops"},
            "msteams": {"existingSecret": {"name": "teams"}},
            "eventWebhookExistingSecret": {"name": "audit", "key": "endpoint"},
        }
    )
    assert not receiver_secrets(docs), "no Secret expected with existing Secrets"
    expect_equal(
        policy_specs(docs),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [
                    {
                        "name": "slack",
                        "slack": {
                            "secretRef": {"name": "flagger-slack", "key": "url"},
                            "channel": "#ops",
                            "username": "flagger",
                        },
                    },
                    {
                        "name": "msteams",
                        "msteams": {
                            "secretRef": {"name": "teams", "key": "address"},
                        },
                    },
                ],
            },
            "herald-default-webhook": {
                "receivers": [
                    {"name": "webhook", "webhook": {"secretRef": {"name": "audit", "key": "endpoint"}}}
                ],
            },
        },
        "policies with existing Secrets",
    )
    error = render_error({"slack": {"url": SLACK_URL, "existingSecret": {"name": "flagger-slack"}}})
    assert "slack.url" in error, f"both a URL and an existing Secret: {error}"


@check
def slack_bot() -> None:
    """slack.token: the token only in the Secret (key slackToken), the default policy's Slack
    receiver a bot (tokenSecretRef, channel, username); threads=false passes through."""
    docs = render(SLACK_BOT_VALUES)
    secret = one(docs, "Secret", SECRET)
    expect_equal(secret["metadata"]["name"], SECRET, "Secret name")
    expect_equal(secret.get("stringData"), {"slackToken": SLACK_TOKEN}, "stringData with a Slack bot token")
    expect_equal(
        policy_specs(docs),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [
                    {
                        "name": "slack",
                        "slack": {
                            "tokenSecretRef": {"name": SECRET, "key": "slackToken"},
                            "channel": "#deploys",
                            "username": "flagger",
                        },
                    }
                ],
            }
        },
        "policies with a Slack bot token",
    )
    assert "--cluster-name=prod-eu" in container(docs)["args"], container(docs)["args"]
    for doc in docs:
        if doc["kind"] != "Secret":
            assert SLACK_TOKEN not in json.dumps(doc), f"{doc['kind']}/{doc['metadata']['name']} holds the token"

    # With Teams and the event webhook, threads off, no username.
    docs = render(
        {
            **FLAGGER_VALUES,
            "slack": {"token": SLACK_TOKEN, "channel": "C0123ABCD", "threads": False, "user": ""},
        }
    )
    expect_equal(
        one(docs, "Secret", SECRET)["stringData"],
        {"slackToken": SLACK_TOKEN, "msteams": TEAMS_URL, "webhook": WEBHOOK_URL},
        "stringData with a Slack bot token, Teams and the event webhook",
    )
    expect_equal(
        policy_specs(docs)["herald-default"]["receivers"],
        [
            {
                "name": "slack",
                "slack": {
                    "tokenSecretRef": {"name": SECRET, "key": "slackToken"},
                    "channel": "C0123ABCD",
                    "threads": False,
                },
            },
            {"name": "msteams", "msteams": {"secretRef": {"name": SECRET, "key": "msteams"}}},
        ],
        "receivers with a Slack bot (threads off, no username) and Teams",
    )
    expect_equal(
        sorted(policy_specs(docs)), ["herald-default", "herald-default-webhook"], "policies with every receiver"
    )

    # defaultPolicy.enabled=false: the token stays in the Secret for your own policies, and
    # needs no channel (your policies name theirs).
    disabled = render({"slack": {"token": SLACK_TOKEN}, "defaultPolicy": {"enabled": False}})
    expect_equal(policy_specs(disabled), {}, "policies with defaultPolicy.enabled=false")
    expect_equal(one(disabled, "Secret", SECRET)["stringData"], {"slackToken": SLACK_TOKEN}, "the Secret stays")

    # NOTES.txt tells to invite the bot to the channel.
    notes_ = render_files(SLACK_BOT_VALUES)["herald/templates/NOTES.txt"]
    assert "invite the app (scope chat:write) to #deploys" in notes_, notes_
    assert "Each rollout is one thread." in notes_, notes_
    assert "invite the app" not in render_files(FLAGGER_VALUES)["herald/templates/NOTES.txt"], "bot notes without a bot"


@check
def slack_bot_existing_secret() -> None:
    """slack.existingTokenSecret is referenced as given (key defaults to `token`) and renders
    no Secret."""
    for existing, ref in (
        ({"name": "slack-bot", "key": "bot-token"}, {"name": "slack-bot", "key": "bot-token"}),
        ({"name": "slack-bot"}, {"name": "slack-bot", "key": "token"}),
        # null drops the values' default key: the template's default is `token` too.
        ({"name": "slack-bot", "key": None}, {"name": "slack-bot", "key": "token"}),
    ):
        docs = render({"slack": {"existingTokenSecret": existing, "channel": "#deploys"}})
        assert not receiver_secrets(docs), f"no Secret expected with an existing token Secret: {existing}"
        expect_equal(
            policy_specs(docs),
            {
                "herald-default": {
                    "messagePattern": PATTERN,
                    "receivers": [
                        {
                            "name": "slack",
                            "slack": {"tokenSecretRef": ref, "channel": "#deploys", "username": "flagger"},
                        }
                    ],
                }
            },
            f"policies with the existing token Secret {existing}",
        )


@check
def slack_bot_errors() -> None:
    """A bot token without slack.channel, or with a Slack webhook, or given twice, fails the
    render and says what to set."""
    no_channel = (
        "slack.channel is required with a Slack bot token (slack.token or slack.existingTokenSecret)"
    )
    both = (
        "set either a Slack webhook (slack.url or slack.existingSecret) or a Slack bot token "
        "(slack.token or slack.existingTokenSecret), not both"
    )
    cases = [
        ({"slack": {"token": SLACK_TOKEN}}, no_channel),
        ({"slack": {"existingTokenSecret": {"name": "slack-bot"}}}, no_channel),
        ({**FLAGGER_VALUES, "slack": {"token": SLACK_TOKEN, "channel": ""}}, no_channel),
        ({"slack": {"token": SLACK_TOKEN, "url": SLACK_URL, "channel": "#deploys"}}, both),
        ({"slack": {"token": SLACK_TOKEN, "existingSecret": {"name": "hook"}, "channel": "#d"}}, both),
        ({"slack": {"existingTokenSecret": {"name": "bot"}, "url": SLACK_URL, "channel": "#d"}}, both),
        (
            {"slack": {"existingTokenSecret": {"name": "bot"}, "existingSecret": {"name": "hook"}, "channel": "#d"}},
            both,
        ),
        # Also without the default policy: the values contradict each other.
        ({"slack": {"token": SLACK_TOKEN, "url": SLACK_URL}, "defaultPolicy": {"enabled": False}}, both),
        (
            {"slack": {"token": SLACK_TOKEN, "existingTokenSecret": {"name": "bot"}, "channel": "#d"}},
            "set either slack.token or its existing Secret, not both",
        ),
    ]
    for values, message in cases:
        error = render_error(values)
        assert message in error, f"{json.dumps(values)}:\n  expected {message!r}\n  got {error}"


@check
def schema_rejects_typos() -> None:
    """values.schema.json refuses misspelt and unknown values when rendering, installing and
    linting; the default and Flagger values pass."""
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
        assert schema is not None, "the chart has no values.schema.json"
        expect_equal(schema.get("$schema"), "http://json-schema.org/draft-07/schema#", "$schema")
        for path in (
            [],
            ["slack"],
            ["msteams"],
            ["defaultPolicy"],
            ["defaultPolicy", "template"],
            ["eventWebhookExistingSecret"],
            ["slack", "existingSecret"],
            ["slack", "existingTokenSecret"],
            ["msteams", "existingSecret"],
            ["stateDir"],
        ):
            node = schema
            for key in path:
                node = node["properties"][key]
            assert (
                node.get("additionalProperties") is False
            ), f"{'.'.join(path) or 'top level'}: additionalProperties is not false"
        chart.validate_schema({})
        chart.validate_schema(FLAGGER_VALUES)
        chart.validate_schema(SLACK_BOT_VALUES)
        typos = [
            ({"slack": {"ur": SLACK_URL}}, "ur"),
            ({"clustername": "prod"}, "clustername"),
            ({"msteams": {"urll": TEAMS_URL}}, "urll"),
            ({"eventwebhook": WEBHOOK_URL}, "eventwebhook"),
            ({"defaultPolicy": {"template": {"titel": "x"}}}, "titel"),
            ({"slack": {"existingSecret": {"nmae": "x"}}}, "nmae"),
            ({"msteams": {"format": "Adaptive"}}, "Adaptive"),
            ({"slack": {"url": "hooks.slack.com/services/x"}}, "pattern"),
            ({"slack": {"proxy": "http://proxy:3128"}}, "proxy"),
            ({"slack": {"tokn": SLACK_TOKEN}}, "tokn"),
            ({"slack": {"existingTokenSecret": {"nmae": "x"}}}, "nmae"),
            ({"slack": {"token": SLACK_URL, "channel": "#d"}}, "pattern"),
            ({"slack": {"threads": "no"}}, "threads"),
            ({"defaultPolicy": {"repeatInterval": "30 minutes"}}, "pattern"),
            ({"stateDir": {"existingclaim": "q"}}, "existingclaim"),
            ({"stateDir": {"sizeLimit": "1 GB"}}, "pattern"),
        ]
        for values, word in typos:
            try:
                chart.validate_schema(values)
            except helm.HelmValuesError as e:
                assert word in str(e), f"{values}: the error does not name {word!r}: {e}"
            else:
                raise AssertionError(f"the schema accepted {values}")
            error = render_error(values)
            assert word in error, f"render of {values}: {error}"
    report = helm.lint(CHART, {"slack": {"ur": SLACK_URL}}, namespace=NAMESPACE)
    assert report["errors"], f"lint accepted a typo: {report}"
    # `helm install` (client-side dry run: no cluster is contacted) refuses it as well.
    with helm.Chart.load(CHART) as chart, helm.Config(
        namespace=NAMESPACE, storage_driver="memory", kube_apiserver="https://127.0.0.1:1"
    ) as cfg:
        try:
            cfg.install(chart, RELEASE, {"slack": {"ur": SLACK_URL}}, namespace=NAMESPACE, dry_run="client")
        except helm.HelmError as e:
            assert "ur" in str(e), str(e)
        else:
            raise AssertionError("install accepted a typo")
        release = cfg.install(chart, RELEASE, FLAGGER_VALUES, namespace=NAMESPACE, dry_run="client")
        installed = sorted(
            (d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(release["manifest"]) if d
        )
        expect_equal(installed, kinds(render(FLAGGER_VALUES)), "objects of a dry-run install")
        assert "clusternotificationpolicies" in release["notes"], release["notes"]


@check
def crds_match() -> None:
    """The chart ships exactly the files in crds/, byte for byte."""
    with helm.Chart.load(CHART) as chart:
        shipped = {Path(c["name"]).name: c["data"] for c in chart.crds}
    expected = {p.name: p.read_text() for p in sorted(CRDS.glob("*.yaml"))}
    assert expected, "crds/ is empty"
    expect_equal(sorted(shipped), sorted(expected), "CRD files in the chart")
    for name, data in expected.items():
        assert shipped[name] == data, f"charts/herald/crds/{name} differs from crds/{name}"
    link = CHART / "crds"
    if link.is_symlink():
        assert link.resolve() == CRDS.resolve(), f"charts/herald/crds points at {os.readlink(link)}"
    # A packaged chart carries the files themselves.
    with tempfile.TemporaryDirectory() as tmp:
        archive = helm.package(CHART, destination=tmp)
        with helm.Chart.load(archive) as packaged:
            packed = {Path(c["name"]).name: c["data"] for c in packaged.crds}
    expect_equal(sorted(packed), sorted(expected), "CRD files in the packaged chart")
    for name, data in expected.items():
        assert packed[name] == data, f"the packaged chart's {name} differs from crds/{name}"
    problems = []
    for name in expected:
        crd = yaml.safe_load(expected[name])
        try:
            kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not problems, "\n".join(problems)


@check
def rbac() -> None:
    """Exactly the rights the controller uses, for Herald's ServiceAccount."""
    docs = render()
    expect_equal(
        one(docs, "ClusterRole")["rules"],
        [
            {
                "apiGroups": ["herald.dev"],
                "resources": ["notificationpolicies", "clusternotificationpolicies"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["herald.dev"],
                "resources": ["notificationpolicies/status", "clusternotificationpolicies/status"],
                "verbs": ["patch"],
            },
            {"apiGroups": ["flagger.app"], "resources": ["canaries"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        ],
        "ClusterRole rules",
    )
    role = one(docs, "Role")
    expect_equal(role["metadata"]["namespace"], NAMESPACE, "Role namespace")
    expect_equal(
        role["rules"],
        [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["herald-leader"],
                "verbs": ["get", "patch"],
            },
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["herald-state"] + [f"herald-state-{i}" for i in range(1, 8)],
                "verbs": ["get", "patch"],
            },
        ],
        "Role rules",
    )
    subject = [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(docs, kind)
        expect_equal(
            binding["roleRef"],
            {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": FULLNAME},
            f"{kind} roleRef",
        )
        expect_equal(binding["subjects"], subject, f"{kind} subjects")
    expect_equal(one(docs, "ServiceAccount")["metadata"]["name"], FULLNAME, "ServiceAccount")
    # The Lease and ConfigMap names the Role allows are the controller's defaults.
    cli = (ROOT / "crates" / "herald" / "src" / "cli.rs").read_text()
    for flag, default in (("lease_name", "herald-leader"), ("state_configmap", "herald-state")):
        assert re.search(
            r'default_value = "%s"\)\]\s*pub %s: String' % (default, flag), cli
        ), f"cli.rs: --{flag.replace('_', '-')} no longer defaults to {default}"
    # One resourceName per state shard (crates/herald/src/controller/state.rs).
    state_rs = (ROOT / "crates" / "herald" / "src" / "controller" / "state.rs").read_text()
    assert re.search(r"pub const SHARDS: usize = 8;", state_rs), "state.rs: SHARDS is no longer 8"
    off = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    expect_equal(sorted(k for k, _ in kinds(off)), ["Deployment", "Secret", "Service"], "objects without RBAC")
    expect_equal(
        one(off, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"], "mine", "serviceAccountName"
    )


@check
def service() -> None:
    """Port 80 to the container's 8080, named http, selecting Herald's pods."""
    docs = render()
    svc = one(docs, "Service")
    expect_equal(
        svc["spec"]["ports"],
        [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        "Service ports",
    )
    expect_equal(svc["spec"]["type"], "ClusterIP", "Service type")
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    expect_equal(ports.get(svc["spec"]["ports"][0]["targetPort"]), 8080, "the Service's target port")


@check
def monitoring() -> None:
    """ServiceMonitor and PrometheusRule: off by default; when on, Flagger's canary_rollback
    alert on herald_canary_status."""
    assert not objects(render(), "PrometheusRule") and not objects(
        render(), "ServiceMonitor"
    ), "on by default"
    docs = render(
        {
            "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}, "scrapeTimeout": "10s"},
        }
    )
    rule = one(docs, "PrometheusRule")
    expect_equal(rule["apiVersion"], "monitoring.coreos.com/v1", "PrometheusRule apiVersion")
    expect_equal(rule["metadata"]["labels"].get("release"), "kps", "PrometheusRule labels")
    expect_equal(
        rule["spec"],
        {
            "groups": [
                {
                    "name": "herald",
                    "rules": [
                        {
                            "alert": "canary_rollback",
                            "expr": "herald_canary_status > 1",
                            "for": "1m",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "Canary failed",
                                "description": "Workload {{ $labels.name }} namespace {{ $labels.namespace }}",
                            },
                        }
                    ],
                }
            ]
        },
        "PrometheusRule spec",
    )
    monitor = one(docs, "ServiceMonitor")
    expect_equal(monitor["apiVersion"], "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    expect_equal(
        monitor["spec"]["endpoints"],
        [{"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}],
        "endpoints",
    )
    expect_equal(monitor["metadata"]["labels"].get("release"), "kps", "ServiceMonitor labels")
    metrics = (ROOT / "crates" / "herald" / "src" / "metrics.rs").read_text()
    assert '"herald_canary_status"' in metrics, "metrics.rs has no herald_canary_status"
    problems = check_references(docs)
    assert not problems, "\n".join(problems)


@check
def policies_match_crd() -> None:
    """Rendered policies are valid for the CRDs in crds/ (schema with unknown fields refused,
    CEL rules, unique receiver names); so are the examples; broken ones are refused."""
    crds = load_crds()
    problems = []
    value_sets = [
        FLAGGER_VALUES,
        {
            "slack": {"existingSecret": {"name": "s", "key": "k"}},
            "msteams": {"url": TEAMS_URL, "format": "MessageCard"},
            "defaultPolicy": {
                "template": {"title": "t", "text": "x"},
                "namespaceSelector": {"matchNames": ["a"], "matchLabels": {"b": "c"}},
            },
        },
        {"eventWebhookExistingSecret": {"name": "audit"}},
        SLACK_BOT_VALUES,
        {
            "slack": {"existingTokenSecret": {"name": "bot"}, "channel": "C0123ABCD", "threads": False},
            "msteams": {"existingSecret": {"name": "teams"}},
        },
    ]
    rendered = 0
    for values in value_sets:
        for policy in render(values):
            if policy["apiVersion"].startswith("herald.dev/"):
                rendered += 1
                problems += validate_policy(policy, crds)
    assert rendered == 6, f"expected 6 policies across the value sets, got {rendered}"
    examples = 0
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("herald.dev/"):
                examples += 1
                problems += [f"{path.name}: {p}" for p in validate_policy(doc, crds)]
    assert examples >= 3, f"only {examples} example policies"
    assert not problems, "\n".join(problems)
    # The validation must refuse what the API server refuses.
    good = one(render(FLAGGER_VALUES), "ClusterNotificationPolicy", "herald-default")
    bot = one(render(SLACK_BOT_VALUES), "ClusterNotificationPolicy", "herald-default")
    broken_cases = {
        "unknown field": lambda p: p["spec"]["receivers"][0]["slack"].update(chanel="#x"),
        "bad receiver name": lambda p: p["spec"]["receivers"][0].update(name="Slack_1"),
        "no receivers": lambda p: p["spec"].update(receivers=[]),
        "two kinds in a receiver": lambda p: p["spec"]["receivers"][0].update(webhook={"url": "https://x"}),
        "url and secretRef": lambda p: p["spec"]["receivers"][0]["slack"].update(url="https://x"),
        "two chat kinds in a receiver": lambda p: p["spec"]["receivers"].append(
            {"name": "chat", "discord": {"url": "https://x"}, "rocketchat": {"url": "https://y"}}
        ),
        "chat kind without url or secretRef": lambda p: p["spec"]["receivers"].append(
            {"name": "chat", "googlechat": {}}
        ),
        "Slack bot without a channel": lambda p: p["spec"]["receivers"][0].update(
            slack={"tokenSecretRef": {"name": "bot"}}
        ),
        "unknown chat field": lambda p: p["spec"]["receivers"].append(
            {"name": "chat", "rocketchat": {"url": "https://x", "icon_emoji": ":x:"}}
        ),
        "duplicate receiver": lambda p: p["spec"]["receivers"].append(
            copy.deepcopy(p["spec"]["receivers"][0])
        ),
        "bad format": lambda p: p["spec"]["receivers"][1]["msteams"].update(format="Card"),
        "bad phase": lambda p: p["spec"].update(phases=["Done"]),
        "wrong apiVersion": lambda p: p.update(apiVersion="herald.dev/v1"),
    }
    # The chart's Slack bot receiver, broken.
    bot_broken_cases = {
        "Slack bot without its channel": lambda p: p["spec"]["receivers"][0]["slack"].pop("channel"),
        "Slack bot and a webhook": lambda p: p["spec"]["receivers"][0]["slack"].update(
            secretRef={"name": SECRET, "key": "slack"}
        ),
        "Slack bot token ref without a name": lambda p: p["spec"]["receivers"][0]["slack"]["tokenSecretRef"].pop(
            "name"
        ),
        "Slack bot threads not a boolean": lambda p: p["spec"]["receivers"][0]["slack"].update(threads="no"),
    }
    missed = []
    for base, cases in ((good, broken_cases), (bot, bot_broken_cases)):
        for label, breaks in cases.items():
            policy = copy.deepcopy(base)
            breaks(policy)
            if not validate_policy(policy, crds):
                missed.append(label)
    assert not missed, f"invalid policies accepted: {missed}"


@check
def notes() -> None:
    """NOTES.txt renders and says how to see the policies."""
    text = render_files(FLAGGER_VALUES)["herald/templates/NOTES.txt"]
    assert "kubectl get clusternotificationpolicies -l app.kubernetes.io/instance=herald" in text, text
    assert "herald.flagger-system" in text, text


@check
def event_token() -> None:
    """By default the chart makes a random token Secret, mounts it and passes
    --event-token-file; an existing Secret replaces it; disabled, nothing is asked; NOTES
    print the URL for Flagger; the NetworkPolicy admits Flagger's namespaces only."""
    docs = render()
    secret = one(docs, "Secret", TOKEN_SECRET)
    import base64

    token = base64.b64decode(secret["data"]["token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", token), f"token {token!r} is not 32 random characters"
    assert secret["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep", secret["metadata"]
    other = base64.b64decode(one(render(), "Secret", TOKEN_SECRET)["data"]["token"]).decode()
    assert other != token, "each fresh install gets its own token"
    c = container(docs)
    assert TOKEN_ARG in c["args"], c["args"]
    expect_equal(c["volumeMounts"], [TOKEN_MOUNT, STATE_MOUNT], "mounts")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    expect_equal(pod["volumes"], [TOKEN_VOLUME, {"name": "state", "emptyDir": {}}], "volumes")

    existing = render({"eventToken": {"existingSecret": {"name": "my-token", "key": "value"}}})
    assert not [d for d in objects(existing, "Secret") if d["metadata"]["name"] == TOKEN_SECRET], "no chart token"
    expect_equal(
        one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"],
        {"secretName": "my-token", "items": [{"key": "value", "path": "token"}]},
        "existing Secret mounted",
    )

    off = render({"eventToken": {"enabled": False}})
    assert not objects(off, "Secret"), "no token Secret when disabled"
    c = container(off)
    assert not any(a.startswith("--event-token-file") for a in c["args"]), c["args"]
    expect_equal(c["volumeMounts"], [STATE_MOUNT], "mounts without the token")
    expect_equal(
        [v["name"] for v in one(off, "Deployment")["spec"]["template"]["spec"]["volumes"]], ["state"], "volumes"
    )

    text = render_files()["herald/templates/NOTES.txt"]
    assert (
        "http://herald.flagger-system/t/$(kubectl get secret -n flagger-system herald-event-token "
        "-o jsonpath='{.data.token}' | base64 -d)/events" in text
    ), text
    assert "anyone who reaches the Service" in render_files({"eventToken": {"enabled": False}})["herald/templates/NOTES.txt"]

    assert not objects(docs, "NetworkPolicy"), "no NetworkPolicy by default"
    np_docs = render(
        {
            "networkPolicy": {
                "enabled": True,
                "extraFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            }
        }
    )
    policy = one(np_docs, "NetworkPolicy", FULLNAME)
    expect_equal(policy["spec"]["policyTypes"], ["Ingress"], "policyTypes")
    expect_equal(
        policy["spec"]["ingress"],
        [
            {
                "ports": [{"port": "http", "protocol": "TCP"}],
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flagger-system"}}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
                ],
            }
        ],
        "ingress",
    )
    expect_equal(
        policy["spec"]["podSelector"]["matchLabels"],
        one(np_docs, "Deployment")["spec"]["selector"]["matchLabels"],
        "the NetworkPolicy selects Herald's pods",
    )
    render_error({"eventToken": {"enabled": True, "secret": "x"}})
    render_error({"networkPolicy": {"enabled": True, "namespaces": ["x"]}})


@check
def state_dir() -> None:
    """By default --state-dir points at an emptyDir (kept across container restarts) mounted
    writable at /var/lib/herald, with Herald's group owning volumes; a sizeLimit, an existing
    PersistentVolumeClaim (one replica only) or no state directory at all on request."""
    docs = render()
    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert STATE_ARG in c["args"], c["args"]
    expect_equal([m for m in c["volumeMounts"] if m["name"] == "state"], [STATE_MOUNT], "the state mount (writable)")
    expect_equal([v for v in pod["volumes"] if v["name"] == "state"], [{"name": "state", "emptyDir": {}}], "emptyDir")
    expect_equal(pod["securityContext"].get("fsGroup"), 65532, "pod fsGroup")
    # The root filesystem stays read-only: the mount is the only place Herald writes.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True

    def state_volume(values: dict) -> list[dict]:
        spec = one(render(values), "Deployment")["spec"]["template"]["spec"]
        return [v for v in spec.get("volumes", []) if v["name"] == "state"]

    expect_equal(
        state_volume({"stateDir": {"sizeLimit": "512Mi"}}),
        [{"name": "state", "emptyDir": {"sizeLimit": "512Mi"}}],
        "emptyDir with a sizeLimit",
    )
    expect_equal(
        state_volume({"stateDir": {"existingClaim": "herald-queue"}}),
        [{"name": "state", "persistentVolumeClaim": {"claimName": "herald-queue"}}],
        "an existing PersistentVolumeClaim",
    )
    off = render({"stateDir": {"enabled": False}})
    assert not any(a.startswith("--state-dir") for a in container(off)["args"]), container(off)["args"]
    assert not state_volume({"stateDir": {"enabled": False}}), "no state volume when disabled"
    both_off = render({"stateDir": {"enabled": False}, "eventToken": {"enabled": False}})
    assert "volumeMounts" not in container(both_off), container(both_off)
    assert "volumes" not in one(both_off, "Deployment")["spec"]["template"]["spec"]
    # Two replicas: each pod has its own emptyDir; one claim cannot serve two processes.
    expect_equal(state_volume({"replicaCount": 2}), [{"name": "state", "emptyDir": {}}], "two replicas")
    error = render_error({"replicaCount": 2, "stateDir": {"existingClaim": "herald-queue"}})
    assert "stateDir.existingClaim needs replicaCount 1" in error, error
    for values in ({"stateDir": {"sizeLimit": "512Mi"}}, {"stateDir": {"existingClaim": "herald-queue"}}):
        problems = validate_structure(render(values))
        assert not problems, "\n".join(problems)


# --- runner -----------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        print("\n".join(CHECKS))
        return 0
    names = argv or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown checks: {unknown}; known: {list(CHECKS)}", file=sys.stderr)
        return 2
    passed = failed = skipped = 0
    for name in names:
        try:
            CHECKS[name]()
        except Skip as e:
            skipped += 1
            print(f"SKIP {name}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its check
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) and str(e) else traceback.format_exc()
            print(f"FAIL {name}\n" + "\n".join("    " + line for line in detail.splitlines()), flush=True)
        else:
            passed += 1
            print(f"PASS {name}", flush=True)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
