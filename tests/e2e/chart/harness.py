"""The chart suite's harness: a small Kubernetes client (plain HTTPS), the chart rendered with
Helm's engine, capture servers for the receivers, and Herald processes run with the rendered
Deployment's args and env as the chart's ServiceAccount.

Nothing here knows Herald's internals: it sees what a user sees (the API server's objects,
Herald's log and what the receivers get).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlparse

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "herald"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

RELEASE = "herald"
# The Lease and state ConfigMap the chart's Role allows (Herald's defaults).
LEASE = "herald-leader"
STATE_CONFIGMAP = "herald-state"
# The state is spread over eight ConfigMaps (crates/herald/src/controller/state/mod.rs: SHARDS).
STATE_CONFIGMAPS = [STATE_CONFIGMAP] + [f"{STATE_CONFIGMAP}-{i}" for i in range(1, 8)]
CLUSTER_NAME = "e2e"
# The chart's default messagePattern.
DEFAULT_PATTERN = (
    "^(Initialization done|New revision detected|Promotion completed|Rolling back|"
    "Canary failed|Progress deadline exceeded|Promotion failed)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Polls until `predicate()` is truthy (and returns it); fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def k8s_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Kubernetes over HTTPS ---------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


# Collection paths of the kinds the suite touches.
PATHS = {
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "Event"): "/api/v1/namespaces/{ns}/events",
    ("events.k8s.io/v1", "Event"): "/apis/events.k8s.io/v1/namespaces/{ns}/events",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    ("rbac.authorization.k8s.io/v1", "Role"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    ("herald.dev/v1alpha1", "ClusterNotificationPolicy"): "/apis/herald.dev/v1alpha1/clusternotificationpolicies",
    ("herald.dev/v1alpha1", "NotificationPolicy"): "/apis/herald.dev/v1alpha1/namespaces/{ns}/notificationpolicies",
    ("herald.dev/v1alpha1", "Approval"): "/apis/herald.dev/v1alpha1/namespaces/{ns}/approvals",
    ("flagger.app/v1beta1", "Canary"): "/apis/flagger.app/v1beta1/namespaces/{ns}/canaries",
    ("coordination.k8s.io/v1", "Lease"): "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
}


def collection(obj_or_kind: dict | tuple[str, str], ns: str | None = None) -> str:
    if isinstance(obj_or_kind, dict):
        key = (obj_or_kind["apiVersion"], obj_or_kind["kind"])
        ns = ns or obj_or_kind.get("metadata", {}).get("namespace")
    else:
        key = obj_or_kind
    path = PATHS[key]
    if "{ns}" in path:
        assert ns, f"{key} is namespaced: no namespace given"
        path = path.replace("{ns}", ns)
    return path


class Kube:
    """A Kubernetes client over plain HTTPS: one keep-alive connection per thread."""

    def __init__(self, server: str, token: str):
        url = urlparse(server)
        self.host, self.port = url.hostname, url.port or 443
        self.token = token
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.local = threading.local()

    @classmethod
    def from_kubeconfig(cls, path: str) -> "Kube":
        cfg = yaml.safe_load(Path(path).read_text())
        return cls(cfg["clusters"][0]["cluster"]["server"], cfg["users"][0]["user"]["token"])

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self.local.conn = conn
        return conn

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed

    def call(self, method: str, path: str, body: Any = None, ok=(200, 201, 202), **kw) -> Any:
        status, parsed = self.request(method, path, body, **kw)
        if status not in ok:
            raise ApiError(method, path, status, json.dumps(parsed) if not isinstance(parsed, str) else parsed)
        return parsed

    def get(self, path: str) -> Any | None:
        status, parsed = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise ApiError("GET", path, status, json.dumps(parsed))
        return parsed

    def create(self, obj: dict, ns: str | None = None) -> dict:
        return self.call("POST", collection(obj, ns), obj)

    def apply(self, obj: dict) -> dict:
        """Creates `obj`, or replaces it (PUT) when it exists. Not server-side apply: the 1.20
        API server refuses the CRDs' CEL rules under SSA but accepts them on create/replace."""
        path = collection(obj)
        status, parsed = self.request("POST", path, obj)
        if status in (200, 201):
            return parsed
        if status != 409:
            raise ApiError("POST", path, status, json.dumps(parsed))
        item = f"{path}/{obj['metadata']['name']}"
        current = self.call("GET", item)
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.call("PUT", item, obj)

    def delete(self, path: str) -> None:
        self.call("DELETE", path, ok=(200, 202, 404))

    def merge_patch(self, path: str, patch: dict) -> dict:
        return self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    def wait_gone(self, path: str, timeout: float = 30) -> None:
        wait_for(f"{path} deleted", lambda: self.get(path) is None, timeout, 0.2)


# --- the chart -----------------------------------------------------------------------------------


def render_chart(values: dict, namespace: str) -> list[dict]:
    """Every object `helm template` gives for these values (NOTES.txt aside), with Helm's engine."""
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=namespace)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def chart_crds() -> list[dict]:
    """The CRDs in the chart's crds/ directory (Helm installs them before the templates)."""
    return [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]


def canary_crd() -> dict:
    """The stand-in Flagger Canary CRD (herald-api's `Canary::crd()`, kept in sync by
    crates/herald-api/tests/canary_crd_fixture.rs)."""
    return yaml.safe_load((FIXTURES / "canaries.flagger.app.yaml").read_text())


def install_crd(kube: Kube, crd: dict, timeout: float = 30) -> None:
    kube.apply(crd)
    path = f"{collection(crd)}/{crd['metadata']['name']}"

    def established():
        got = kube.get(path) or {}
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (got.get("status") or {}).get("conditions") or []
        )

    wait_for(f"CRD {crd['metadata']['name']} established", established, timeout)
    # The new resource is served a moment after Established.
    plural, group = crd["spec"]["names"]["plural"], crd["spec"]["group"]
    version = crd["spec"]["versions"][0]["name"]
    list_path = f"/apis/{group}/{version}/{plural}?limit=1"
    wait_for(f"{plural}.{group} served", lambda: kube.request("GET", list_path)[0] == 200, timeout)


# --- capture servers ---------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic()
    wall: float  # time.time()
    parsed: Any = None  # the body as JSON, parsed once on arrival (None when it is not JSON)

    def json(self) -> Any:
        return json.loads(self.body)


class Capture:
    """An HTTP server on 127.0.0.1 that records every request and answers `status`."""

    def __init__(self, name: str, status: int = 200, answer: bytes = b"ok"):
        self.name = name
        self.status = status
        self.answer = answer
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                req = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(), time.time()
                )
                try:
                    req.parsed = json.loads(body)
                except ValueError:
                    pass
                with capture.lock:
                    capture.requests.append(req)
                self.send_response(capture.status)
                self.send_header("Content-Length", str(len(capture.answer)))
                self.end_headers()
                self.wfile.write(capture.answer)

            do_PUT = do_POST  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{self.name}"

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SlackApi:
    """A stand-in for Slack's Web API on 127.0.0.1 (a Slack bot receiver's `apiUrl`):
    `POST /api/chat.postMessage` and `/api/chat.update` with the bot token answer as Slack
    does (`ok`, the channel ID, a new `ts` per message); a wrong token gets `invalid_auth`.
    Every call is recorded, the bodies parsed."""

    CHANNEL_ID = "C0123ABCD"

    def __init__(self, token: str):
        self.token = token
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.next_ts = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                req = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(), time.time()
                )
                try:
                    req.parsed = json.loads(body)
                except ValueError:
                    pass
                with api.lock:
                    api.requests.append(req)
                    if req.headers.get("authorization") != f"Bearer {api.token}":
                        answer = {"ok": False, "error": "invalid_auth"}
                    elif self.path == "/api/chat.postMessage":
                        api.next_ts += 1
                        answer = {"ok": True, "channel": api.CHANNEL_ID, "ts": f"1700000000.{api.next_ts:06d}"}
                    elif self.path == "/api/chat.update":
                        answer = {"ok": True, "channel": api.CHANNEL_ID, "ts": (req.parsed or {}).get("ts")}
                    else:
                        answer = {"ok": False, "error": "unknown_method"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The receiver's `apiUrl`."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def posts(self) -> list[Request]:
        return [r for r in self.snapshot() if r.path == "/api/chat.postMessage"]

    def asks(self) -> list[dict]:
        """The messages posted with buttons (an `actions` block): gates' asks."""
        return [
            r.parsed
            for r in self.posts()
            if isinstance(r.parsed, dict) and any(b.get("type") == "actions" for b in r.parsed.get("blocks") or [])
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def slack_signature(secret: str, timestamp: int, body: str) -> str:
    """Slack's request signature: `v0=` hex HMAC-SHA256 of `v0:<timestamp>:<body>`."""
    import hashlib
    import hmac

    mac = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return f"v0={mac.hexdigest()}"


def slack_press(ask: dict, action: str, user: str, username: str, response_url: str) -> str:
    """The form body Slack POSTs to the Interactivity Request URL when `user` presses the
    ask's button `action` (`herald_approve`, `herald_rollback`): a `block_actions` payload
    carrying the button's value back."""
    from urllib.parse import urlencode

    actions = next(b for b in ask["blocks"] if b.get("type") == "actions")
    button = next(e for e in actions["elements"] if e.get("action_id") == action)
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": username},
        "api_app_id": "A0APP",
        "container": {"type": "message", "message_ts": "1700000000.000002", "channel_id": SlackApi.CHANNEL_ID, "is_ephemeral": False},
        "channel": {"id": SlackApi.CHANNEL_ID, "name": "deploys"},
        "message": {"type": "message", "ts": "1700000000.000002", "thread_ts": ask.get("thread_ts"), "text": ask.get("text")},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action,
                "block_id": actions.get("block_id", "herald_gate"),
                "type": "button",
                "value": button["value"],
                "action_ts": "1700000001.000000",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def http_post(port: int, path: str, body: str | bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, str]:
    """POSTs to a Herald on 127.0.0.1: the status and the answer's text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def webhook_message(req: Request) -> str:
    body = req.parsed if isinstance(req.parsed, dict) else {}
    return (body.get("metadata") or {}).get("eventMessage", "")


def slack_text(req: Request) -> str:
    try:
        return req.parsed["attachments"][0]["text"]
    except (TypeError, KeyError, IndexError):
        return 


def teams_text(req: Request) -> str:
    """The texts of a Teams body (AdaptiveCard or MessageCard), joined."""
    body = req.json()
    texts = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("text", "activityTitle", "title", "summary") and isinstance(v, str):
                    texts.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(body)
    return "\n".join(texts)


# --- Flagger ---------------------------------------------------------------------------------------


def canary_object(name: str, ns: str, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10},
        },
    }


def create_canary(kube: Kube, name: str, ns: str, phase: str = "Progressing", revision: str = "rev-1") -> dict:
    kube.apply(canary_object(name, ns))
    return set_phase(kube, name, ns, phase, revision)


def set_phase(kube: Kube, name: str, ns: str, phase: str, revision: str = "rev-1") -> dict:
    """Writes the status Flagger writes: phase, weight, the revision's hash, Promoted condition."""
    now = k8s_time(datetime.now(timezone.utc))
    promoted = {"Initialized": "True", "Succeeded": "True", "Failed": "False"}.get(phase, "Unknown")
    status = {
        "phase": phase,
        "canaryWeight": 10,
        "failedChecks": 0,
        "iterations": 0,
        "lastAppliedSpec": revision,
        "lastTransitionTime": now,
        "conditions": [
            {
                "type": "Promoted",
                "status": promoted,
                "reason": phase,
                "message": f"Canary phase {phase}",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        ],
    }
    path = f"{collection(('flagger.app/v1beta1', 'Canary'), ns)}/{name}/status"
    return kube.merge_patch(path, {"status": status})


_seq = iter(range(1, 1 << 62))
_seq_lock = threading.Lock()


def flagger_event(
    kube: Kube,
    ns: str,
    canary: str,
    message: str,
    type_: str = "Normal",
    at: datetime | None = None,
    name: str | None = None,
    count: int = 1,
    uid: str | None = None,
) -> dict:
    """A core/v1 Event on a Canary the way Flagger's recorder (client-go's legacy
    EventRecorder) writes it: `<canary>.<hex unix nanos>`, reason Synced, source flagger."""
    at = at or datetime.now(timezone.utc)
    if name is None:
        with _seq_lock:
            n = next(_seq)
        name = f"{canary}.{time.time_ns() + n:x}"
    ts = k8s_time(at)
    involved = {"kind": "Canary", "namespace": ns, "name": canary, "apiVersion": "flagger.app/v1beta1"}
    if uid:
        involved["uid"] = uid
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": "Synced",
        "message": message,
        "source": {"component": "flagger"},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": count,
        "type": type_,
        "eventTime": None,
        "reportingComponent": "",
        "reportingInstance": "",
    }
    return kube.create(event, ns)


# --- Herald, as the chart runs it ------------------------------------------------------------------


FORBIDDEN = re.compile(r"\b403\b|forbidden", re.IGNORECASE)


def sa_kubeconfig(kube: Kube, ns: str, sa: str, path: Path) -> str:
    """A kubeconfig holding only a TokenRequest token of the ServiceAccount `ns/sa`."""
    req = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200},
    }
    got = kube.call("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", req)
    token = got["status"]["token"]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": kube.server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": sa, "namespace": ns}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(cfg))
    return token


def deployment_command(docs: list[dict]) -> tuple[list[str], list[dict]]:
    dep = next(d for d in docs if d["kind"] == "Deployment")
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return list(containers[0]["args"]), list(containers[0].get("env", []))


def volume_mounts(docs: list[dict], into: Path) -> dict[str, Path]:
    """The pod's volumes as local directories under `into`, and each mountPath with its
    directory: the files the kubelet would mount from the rendered Secrets (the event token),
    an empty directory for an emptyDir (kept while this replica, the pod, lives: across its
    restarts, as an emptyDir across container restarts), and `into/../pvc-<claim>` for a
    PersistentVolumeClaim (kept across pods)."""
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    mounts = {}
    for mount in pod["containers"][0].get("volumeMounts", []):
        volume = volumes[mount["name"]]
        local = into / mount["name"]
        if "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in volume:
            local = into.parent / f"pvc-{volume['persistentVolumeClaim']['claimName']}"
            local.mkdir(parents=True, exist_ok=True)
        else:
            assert "secret" in volume, f"volume {volume} is not supported by the harness"
            secret = secrets[volume["secret"]["secretName"]]
            data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            local.mkdir(parents=True, exist_ok=True)
            for item in items:
                (local / item["path"]).write_bytes(data[item["key"]])
        mounts[mount["mountPath"]] = local
    return mounts


class Herald:
    """One replica: the herald binary with the rendered Deployment's args and env."""

    def __init__(self, binary: str, docs: list[dict], namespace: str, pod: str, kubeconfig: Path, logdir: Path):
        self.binary = binary
        self.pod = pod
        self.namespace = namespace
        args, env_spec = deployment_command(docs)
        self.port = free_port()
        # The one change to the rendered args: --listen binds a free loopback port instead of
        # the pod's 0.0.0.0:8080 (several replicas share this machine's network).
        listen = [a for a in args if a.startswith("--listen=")]
        assert listen == ["--listen=0.0.0.0:8080"], f"unexpected --listen in the chart: {listen}"
        self.args = [f"--listen=127.0.0.1:{self.port}" if a.startswith("--listen=") else a for a in args]
        # The kubelet's volumes (the event token, the state directory) are directories under
        # logdir instead: the paths in the args that point into a mount are rewritten to them.
        for mount_path, local in volume_mounts(docs, logdir / f"{pod}-mounts").items():
            self.args = [a.replace(mount_path, str(local)) for a in self.args]
        fields = {"metadata.namespace": namespace, "metadata.name": pod}
        env = {}
        for var in env_spec:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "fieldRef" in var.get("valueFrom", {}):
                env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                raise AssertionError(f"env {var} is not supported by the harness")
        # Only the Deployment's env, plus what a pod gets from its ServiceAccount (here a
        # kubeconfig with its token instead of the mounted token file).
        env["KUBECONFIG"] = str(kubeconfig)
        env["PATH"] = "/usr/bin:/bin"
        self.env = env
        self.log_path = logdir / f"{pod}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.first_start: float | None = None  # time.time() of the first start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> "Herald":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.first_start = self.first_start or time.time()
        log = open(self.log_path, "ab")
        log.write(f"=== start {self.starts}: {self.binary} {' '.join(self.args)} (env {self.env})\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [self.binary, *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        self.started_at = time.monotonic()
        if wait:
            self.wait_ready()
        return self

    def http_status(self, path: str) -> int | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            return status
        except OSError:
            return None

    def wait_ready(self, timeout: float = 30) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"herald {self.pod} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.http_status("/readyz") == 200

        wait_for(f"herald {self.pod} ready", ready, timeout, 0.1)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as the kubelet does, and waits for the exit (up to the pod's grace period)."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()

    def rss_kib(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_lines()[-n:])

    def forbidden_lines(self) -> list[str]:
        return [line for line in self.log_lines() if not line.startswith("=== ") and FORBIDDEN.search(line)]


# --- the audit log -----------------------------------------------------------------------------


class Audit:
    """The API server's audit log (start.sh with AUDIT_LOG): requests per user."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def entries(self) -> list[dict]:
        if not self.path or not self.path.exists():
            return []
        out = []
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written
        return out

    def requests(self, user: str, since_wall: float = 0, until_wall: float = 1e18) -> list[dict]:
        """Requests by `user` that arrived between the two wall-clock times."""
        out = []
        for e in self.entries():
            if e.get("stage") != "RequestReceived" or e.get("user", {}).get("username") != user:
                continue
            t = parse_micro(e.get("requestReceivedTimestamp") or e.get("stageTimestamp"))
            if since_wall <= t <= until_wall:
                out.append(e)
        return out

    def forbidden(self, user: str, since_wall: float = 0) -> list[dict]:
        return [
            e
            for e in self.entries()
            if e.get("stage") == "ResponseComplete"
            and e.get("user", {}).get("username") == user
            and e.get("responseStatus", {}).get("code") == 403
            and parse_micro(e.get("requestReceivedTimestamp")) >= since_wall
        ]


def parse_micro(ts: str | None) -> float:
    if not ts:
        return 0.0
    return datetime.strptime(ts.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def summarize_requests(entries: list[dict]) -> str:
    counts: dict[str, int] = {}
    for e in entries:
        ref = e.get("objectRef", {})
        key = f"{e.get('verb')} {ref.get('resource', e.get('requestURI', '?'))}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


# --- measurements ------------------------------------------------------------------------------


MEASUREMENTS: list[str] = []


def measure(line: str) -> None:
    print(f"MEASURE {line}", flush=True)
    MEASUREMENTS.append(line)


def parallel(fn: Callable, items, workers: int = 8) -> list:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def quote_name(name: str) -> str:
    return quote(name, safe="")
