"""Fixtures of the chart suite. tests/e2e/run.sh starts the API server (with an audit log) and
runs `pytest tests/e2e/chart` with:

    KUBECONFIG   the admin kubeconfig start.sh writes
    AUDIT_LOG    the API server's audit log (optional: request counts are then not measured)
    HERALD_BIN   the release herald binary (default: $CARGO_TARGET_DIR/release/herald)
    HERALD_E2E_DIR  where logs are kept (default: $CARGO_TARGET_DIR/e2e-chart)
    HERALD_E2E_SINGLE_REPLICA_ARGS  more chart extraArgs for replicaCount 1 (a debugging aid)
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or h.ROOT / "target")
RUN_DIR = Path(os.environ.get("HERALD_E2E_DIR") or TARGET / "e2e-chart")
MEASUREMENTS = TARGET / "e2e-measurements.txt"


def pytest_configure(config):
    RUN_DIR.mkdir(parents=True, exist_ok=True)


def pytest_sessionfinish(session, exitstatus):
    if session.config.option.collectonly:
        return
    text = "".join(f"{line}\n" for line in h.MEASUREMENTS)
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    MEASUREMENTS.write_text(
        f"# Herald end-to-end measurements (tests/e2e/chart), {time.strftime('%Y-%m-%d %H:%M:%S')}\n{text}"
    )
    print(f"\n== measurements ({MEASUREMENTS})\n{text}", flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def kube() -> h.Kube:
    path = os.environ.get("KUBECONFIG")
    assert path, "KUBECONFIG must point at the test API server's admin kubeconfig (tests/e2e/run.sh)"
    kube = h.Kube.from_kubeconfig(path)
    h.wait_for("the API server ready", lambda: kube.request("GET", "/readyz")[0] == 200, 60, 0.2)
    for crd in h.chart_crds() + [h.canary_crd()]:
        h.install_crd(kube, crd)
    return kube


@pytest.fixture(scope="session")
def audit() -> h.Audit:
    return h.Audit(os.environ.get("AUDIT_LOG"))


@pytest.fixture(scope="session")
def herald_bin() -> str:
    binary = os.environ.get("HERALD_BIN") or str(TARGET / "release" / "herald")
    assert os.access(binary, os.X_OK), f"no herald binary at {binary}: cargo build --release -p herald"
    return binary


class Install:
    """The chart installed for one test: its own release namespace (so the ServiceAccount's
    user is the test's own in the audit log), capture servers for Slack, Teams and the event
    webhook, and the replicas of the rendered Deployment."""

    def __init__(self, kube: h.Kube, audit: h.Audit, binary: str, name: str, logdir: Path):
        self.kube, self.audit, self.binary, self.logdir = kube, audit, binary, logdir
        self.short = name
        self.namespace = f"herald-{name}"
        self.apps = f"apps-{name}"
        self.slack = h.Capture("slack")
        self.teams = h.Capture("teams")
        self.hook = h.Capture("hook")
        self.replicas: list[h.Herald] = []
        self.docs: list[dict] = []
        # Secrets the values name (`existingSecret`), created by the test before the install
        # and mounted into the replicas as the rendered ones are.
        self.existing_secrets: list[dict] = []
        # More servers of the test (h.SlackApi, ...), closed at teardown.
        self.servers: list = []
        self.pods = 0
        self.user = f"system:serviceaccount:{self.namespace}:{h.RELEASE}"
        self.cleanup = True  # delete the test's Events and Canaries afterwards

    def values(self, replicas: int, extra: dict | None = None) -> dict:
        # Flagger's notification values, moved to Herald's chart as the README says.
        values = {
            "replicaCount": replicas,
            "clusterName": h.CLUSTER_NAME,
            "slack": {"url": self.slack.url, "channel": "#deploys"},
            "msteams": {"url": self.teams.url},
            "eventWebhook": self.hook.url,
        }
        # A developer's knob, not for CI: more chart `extraArgs` for single-replica installs,
        # e.g. HERALD_E2E_SINGLE_REPLICA_ARGS=--leader-election to look past a bug of the
        # lease-less mode at the rest of a scenario.
        more = os.environ.get("HERALD_E2E_SINGLE_REPLICA_ARGS", "").split()
        if more and replicas == 1:
            values["extraArgs"] = more
        values.update(extra or {})
        return values

    def install(
        self,
        replicas: int = 1,
        extra_values: dict | None = None,
        start: bool = True,
        existing_secrets: list[dict] | None = None,
    ) -> "Install":
        """Renders and applies the chart; `existing_secrets` (Secrets in the release
        namespace that values name) are created first, as a user does before installing."""
        self.docs = h.render_chart(self.values(replicas, extra_values), self.namespace)
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.apps}})
        for secret in existing_secrets or []:
            secret = {**secret, "metadata": {**secret["metadata"], "namespace": self.namespace}}
            self.kube.apply(secret)
            self.existing_secrets.append(secret)
        self.apply_rendered()
        self.kubeconfig = self.logdir / "kubeconfig-sa"
        h.sa_kubeconfig(self.kube, self.namespace, self.service_account(), self.kubeconfig)
        for _ in range(replicas):
            self.add_replica()
        if start:
            for r in self.replicas:
                r.start(wait=False)
            for r in self.replicas:
                r.wait_ready()
        return self

    APPLIED = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "ClusterNotificationPolicy",
    }
    # Not applied: the Deployment (the harness runs its pods) and the Service (nothing routes
    # to these processes; their /events is reached on loopback).

    def apply_rendered(self, kinds: set[str] | None = None) -> None:
        kinds = kinds or self.APPLIED
        rendered = {d["kind"] for d in self.docs}
        assert {"ServiceAccount", "ClusterRole", "Role", "Secret", "ClusterNotificationPolicy"} <= rendered
        for doc in self.docs:
            if doc["kind"] in kinds:
                self.kube.apply(doc)

    def policies(self) -> list[dict]:
        return [d for d in self.docs if d["kind"] == "ClusterNotificationPolicy"]

    def service_account(self) -> str:
        return next(d for d in self.docs if d["kind"] == "ServiceAccount")["metadata"]["name"]

    def add_replica(self) -> h.Herald:
        """A replica with a new pod name, as a ReplicaSet would create."""
        self.pods += 1
        template = hashlib.sha1(self.namespace.encode()).hexdigest()[:9]
        pod = f"{h.RELEASE}-{template}-{self.pods:05x}"
        replica = h.Herald(
            self.binary, self.docs + self.existing_secrets, self.namespace, pod, self.kubeconfig, self.logdir
        )
        self.replicas.append(replica)
        return replica

    def running(self) -> list[h.Herald]:
        return [r for r in self.replicas if r.running()]

    # --- Flagger's side ---

    def canary(self, name: str = "podinfo", phase: str = "Progressing", revision: str = "rev-1") -> dict:
        return h.create_canary(self.kube, name, self.apps, phase, revision)

    def event(self, canary: str, message: str, type_: str = "Normal", **kw) -> dict:
        return h.flagger_event(self.kube, self.apps, canary, message, type_, **kw)

    def event_token(self) -> str:
        """The event token of the chart's Secret."""
        secret = next(d for d in self.docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-event-token"))
        return base64.b64decode(secret["data"]["token"]).decode()

    def post_gate(self, herald: h.Herald, gate: str, phase: str, checksum: str, canary: str = "podinfo") -> tuple[int, dict]:
        """Flagger's gate webhook (`/t/<token>/gates/<gate>`, as NOTES print it) with Flagger's
        payload: the status (200 open, 403 closed) and the answer."""
        body = json.dumps({"name": canary, "namespace": self.apps, "phase": phase, "checksum": checksum})
        status, text = h.http_post(
            herald.port, f"/t/{self.event_token()}/gates/{gate}", body, {"Content-Type": "application/json"}
        )
        try:
            return status, json.loads(text)
        except ValueError:
            return status, {"text": text}

    def post_event(self, herald: h.Herald, message: str, canary: str = "podinfo") -> tuple[int, str]:
        """POSTs Flagger's event JSON to Herald's /events the way Flagger is told to (the URL
        with the chart's event token, as NOTES print it): the status and the answer."""
        token = self.event_token()
        body = json.dumps(
            {
                "name": canary,
                "namespace": self.apps,
                "phase": "Progressing",
                "checksum": "rev-1",
                "metadata": {"eventMessage": message, "eventType": "Normal", "timestamp": str(int(time.time()))},
            }
        )
        conn = http.client.HTTPConnection("127.0.0.1", herald.port, timeout=10)
        try:
            conn.request("POST", f"/t/{token}/events", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    # --- Herald's objects ---

    def lease_holder(self) -> str | None:
        lease = self.kube.get(f"{h.collection(('coordination.k8s.io/v1', 'Lease'), self.namespace)}/{h.LEASE}")
        return (lease or {}).get("spec", {}).get("holderIdentity")

    def lease(self) -> dict:
        path = f"{h.collection(('coordination.k8s.io/v1', 'Lease'), self.namespace)}/{h.LEASE}"
        return (self.kube.get(path) or {}).get("spec", {})

    def wait_lease_renewed(self, timeout: float = 30) -> None:
        """Returns right after the holder renewed the lease: a crash or SIGTERM then leaves the
        whole lease duration to run (the worst case, and the same every run)."""
        first = self.lease().get("renewTime")
        h.wait_for("the lease renewed", lambda: self.lease().get("renewTime") != first, timeout, 0.05)

    def leader(self, timeout: float = 30) -> h.Herald:
        def find():
            holder = self.lease_holder()
            return next((r for r in self.running() if r.pod == holder), None)

        return h.wait_for("a running replica holding the lease", find, timeout, 0.1)

    def state(self) -> dict | None:
        """The state ConfigMaps' data merged (None when there is none)."""
        found = [self.kube.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{name}") for name in h.STATE_CONFIGMAPS]
        found = [cm for cm in found if cm]
        if not found:
            return None
        data: dict = {}
        for cm in found:
            data.update(cm.get("data") or {})
        return {"data": data, "configmaps": len(found)}

    # --- what the receivers got ---

    def hook_messages(self) -> list[str]:
        return [h.webhook_message(r) for r in self.hook.snapshot()]

    def wait_hook(self, message: str, timeout: float = 20) -> h.Request:
        return h.wait_for(
            f"the event webhook to receive {message!r}",
            lambda: next((r for r in self.hook.snapshot() if h.webhook_message(r) == message), None),
            timeout,
            0.05,
        )

    def wait_slack(self, text: str, timeout: float = 20) -> h.Request:
        return h.wait_for(
            f"Slack to receive {text!r}",
            lambda: next((r for r in self.slack.snapshot() if h.slack_text(r) == text), None),
            timeout,
            0.05,
        )

    def count_hook(self, message: str) -> int:
        return sum(1 for m in self.hook_messages() if m == message)

    def count_slack(self, text: str) -> int:
        return sum(1 for r in self.slack.snapshot() if h.slack_text(r) == text)

    # --- checks every test gets ---

    def problems(self) -> list[str]:
        out = []
        for r in self.replicas:
            for line in r.forbidden_lines()[:5]:
                out.append(f"{r.pod} logged a 403/forbidden: {line}")
        # Requests by the ServiceAccount once Herald runs (the harness's own probes come first).
        started = min((r.first_start for r in self.replicas if r.first_start), default=None)
        for e in (self.audit.forbidden(self.user, started) if started else [])[:5]:
            out.append(f"the API server answered 403 to {e.get('verb')} {e.get('requestURI')}")
        return out

    def teardown(self) -> None:
        for r in self.replicas:
            if r.running():
                r.signal(signal.SIGCONT)
        for r in self.replicas:
            r.terminate(timeout=25)
        for cap in (self.slack, self.teams, self.hook, *self.servers):
            cap.close()
        # No namespace controller runs (no kube-controller-manager): delete what later tests'
        # Herald would otherwise see.
        if not self.cleanup:
            return
        for path in (
            f"/api/v1/namespaces/{self.apps}/events",
            f"/apis/flagger.app/v1beta1/namespaces/{self.apps}/canaries",
            f"/apis/herald.dev/v1alpha1/namespaces/{self.apps}/notificationpolicies",
            f"/apis/herald.dev/v1alpha1/namespaces/{self.apps}/approvals",
        ):
            # A deletecollection of many Events outlives the request timeout (504): repeat.
            for _ in range(5):
                status, _ = self.kube.request("DELETE", path)
                left = self.kube.get(f"{path}?limit=1") or {}
                if not left.get("items"):
                    break
            else:
                print(f"cleanup: {path} still has objects")

    def dump(self) -> str:
        parts = []
        for r in self.replicas:
            parts.append(f"--- {r.log_path} (last 80 lines) ---\n{r.log_tail(80)}")
        return "\n".join(parts)


@pytest.fixture
def install(request, kube, audit, herald_bin):
    # The first three words of the test's name: herald-<name> is its release namespace.
    name = "-".join(request.node.name.removeprefix("test_").split("_")[:3])
    logdir = RUN_DIR / name
    if logdir.exists():
        for old in logdir.iterdir():
            old.unlink()
    logdir.mkdir(parents=True, exist_ok=True)
    inst = Install(kube, audit, herald_bin, name, logdir)
    yield inst
    inst.teardown()
    failed = any(getattr(request.node, f"rep_{w}", None) and getattr(request.node, f"rep_{w}").failed for w in ("call", "setup"))
    problems = inst.problems()
    if failed or problems:
        print(f"\n===== Herald logs of {request.node.name} (kept in {logdir}) =====\n{inst.dump()}", flush=True)
    if problems:
        pytest.fail("Herald was refused by the API server (the chart's RBAC is not enough):\n" + "\n".join(problems))
