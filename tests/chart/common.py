"""Shared by the chart checks: where things are, the values Flagger users have, the check
registry, and helpers that render the chart and pick objects out of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
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
