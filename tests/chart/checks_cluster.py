"""What the chart asks of the cluster and exposes: RBAC, the Service, monitoring, the event
token and the NetworkPolicy."""

from __future__ import annotations

import re

from common import (
    FULLNAME,
    NAMESPACE,
    ROOT,
    STATE_ARG,
    STATE_MOUNT,
    TOKEN_ARG,
    TOKEN_MOUNT,
    TOKEN_SECRET,
    TOKEN_VOLUME,
    check,
    container,
    expect_equal,
    kinds,
    objects,
    one,
    render,
    render_error,
    render_files,
)
from structure import check_references, validate_structure


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
            {
                "apiGroups": ["herald.dev"],
                "resources": ["approvals"],
                "verbs": ["list", "watch", "get", "create", "update"],
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
    # One resourceName per state shard (crates/herald/src/controller/state/mod.rs).
    state_rs = (ROOT / "crates" / "herald" / "src" / "controller" / "state" / "mod.rs").read_text()
    assert re.search(r"pub const SHARDS: usize = 8;", state_rs), "state/mod.rs: SHARDS is no longer 8"
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
