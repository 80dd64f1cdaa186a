"""Flagger's gates in the chart: gates.externalURL (and the link key Secret it brings),
gates.slackSigningSecret, gates.identityHeader; nothing of them by default; the RBAC for
Approvals."""

from __future__ import annotations

import base64
import re

from common import (
    CHART,
    FULLNAME,
    NAMESPACE,
    STATE_ARG,
    STATE_MOUNT,
    TOKEN_ARG,
    TOKEN_MOUNT,
    TOKEN_VOLUME,
    check,
    container,
    expect_equal,
    objects,
    one,
    render,
    render_error,
    render_files,
)
from structure import validate_structure

LINK_KEY_SECRET = f"{FULLNAME}-gate-link-key"
GATE_FLAGS = ("--external-url", "--gate-link-key-file", "--gate-link-ttl", "--slack-signing-secret-file", "--identity-header")
GATE_VOLUMES = ("gate-link-key", "slack-signing-secret")

EXTERNAL_URL = "https://herald.example.com"
LINK_KEY_MOUNT = {"name": "gate-link-key", "mountPath": "/etc/herald/gate-link-key", "readOnly": True}
SIGNING_MOUNT = {"name": "slack-signing-secret", "mountPath": "/etc/herald/slack-signing-secret", "readOnly": True}

# Every gate value set, the Slack signing secret from the Secret of the Slack app.
GATE_VALUES = {
    "gates": {
        "externalURL": EXTERNAL_URL,
        "slackSigningSecret": {"existingSecret": {"name": "slack-app"}},
        "identityHeader": "X-Forwarded-Email",
    }
}


def pod(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def gate_args(docs: list[dict]) -> list[str]:
    return [a for a in container(docs)["args"] if a.startswith(GATE_FLAGS)]


def gate_volumes(docs: list[dict]) -> list[dict]:
    return [v for v in pod(docs).get("volumes", []) if v["name"] in GATE_VOLUMES]


def gate_mounts(docs: list[dict]) -> list[dict]:
    return [m for m in container(docs).get("volumeMounts", []) if m["name"] in GATE_VOLUMES]


def link_key_secrets(docs: list[dict]) -> list[dict]:
    return [d for d in objects(docs, "Secret") if d["metadata"]["name"] == LINK_KEY_SECRET]


@check
def gates_off_by_default() -> None:
    """Default values: no gate arguments, Secrets, volumes or mounts (the gate endpoints
    answer from policies alone); the same with replicas, without the event token or state
    directory."""
    for values in ({}, {"replicaCount": 2}, {"eventToken": {"enabled": False}, "stateDir": {"enabled": False}}):
        docs = render(values)
        expect_equal(gate_args(docs), [], f"gate args with {values}")
        expect_equal(gate_volumes(docs), [], f"gate volumes with {values}")
        expect_equal(gate_mounts(docs), [], f"gate mounts with {values}")
        expect_equal(link_key_secrets(docs), [], f"link key Secret with {values}")
    both_off = render({"eventToken": {"enabled": False}, "stateDir": {"enabled": False}})
    assert "volumes" not in pod(both_off) and "volumeMounts" not in container(both_off), "empty volume lists"
    assert "Gates:" not in render_files()["herald/templates/NOTES.txt"], "NOTES speak of gates by default"


@check
def gates_values() -> None:
    """gates.*: the arguments, the read-only mounts under /etc/herald, the link key Secret (a
    random 48-character key kept by Helm, its own per install) or an existing one, the Slack
    signing secret only when named; refused combinations and typos; NOTES; valid objects."""
    docs = render(GATE_VALUES)
    c = container(docs)
    expect_equal(
        c["args"],
        [
            "controller",
            "--listen=0.0.0.0:8080",
            TOKEN_ARG,
            STATE_ARG,
            f"--external-url={EXTERNAL_URL}",
            "--gate-link-key-file=/etc/herald/gate-link-key/key",
            "--slack-signing-secret-file=/etc/herald/slack-signing-secret/signingSecret",
            "--identity-header=X-Forwarded-Email",
            "--log-format=json",
            "--log-level=info",
        ],
        "args with every gate value",
    )
    expect_equal(c["volumeMounts"], [TOKEN_MOUNT, LINK_KEY_MOUNT, SIGNING_MOUNT, STATE_MOUNT], "mounts")
    expect_equal(
        pod(docs)["volumes"],
        [
            TOKEN_VOLUME,
            {"name": "gate-link-key", "secret": {"secretName": LINK_KEY_SECRET, "items": [{"key": "key", "path": "key"}]}},
            {
                "name": "slack-signing-secret",
                "secret": {"secretName": "slack-app", "items": [{"key": "signingSecret", "path": "signingSecret"}]},
            },
            {"name": "state", "emptyDir": {}},
        ],
        "volumes",
    )
    (secret,) = link_key_secrets(docs)
    expect_equal(secret["metadata"]["namespace"], NAMESPACE, "link key Secret namespace")
    expect_equal(secret["metadata"]["annotations"], {"helm.sh/resource-policy": "keep"}, "link key annotations")
    expect_equal(sorted(secret["data"]), ["key"], "link key Secret keys")
    key = base64.b64decode(secret["data"]["key"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", key), f"link key {key!r} is not 48 random characters"
    again = base64.b64decode(link_key_secrets(render(GATE_VALUES))[0]["data"]["key"]).decode()
    assert again != key, "each fresh install gets its own link key"
    # Kept across upgrades: the template reads the Secret it made before (lookup).
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \$name \}\}\s*\{\{- \$key := ""', template), (
        "the link key is not looked up before a new one is made"
    )

    # Each value alone.
    only_url = render({"gates": {"externalURL": EXTERNAL_URL + "/"}})
    expect_equal(
        gate_args(only_url),
        [f"--external-url={EXTERNAL_URL}/", "--gate-link-key-file=/etc/herald/gate-link-key/key"],
        "args with externalURL only",
    )
    expect_equal(gate_mounts(only_url), [LINK_KEY_MOUNT], "mounts with externalURL only")
    assert len(link_key_secrets(only_url)) == 1, "the chart's link key with externalURL"
    only_slack = render({"gates": {"slackSigningSecret": {"existingSecret": {"name": "slack-app", "key": "secret"}}}})
    expect_equal(
        gate_args(only_slack),
        ["--slack-signing-secret-file=/etc/herald/slack-signing-secret/signingSecret"],
        "args with the signing secret only",
    )
    expect_equal(gate_mounts(only_slack), [SIGNING_MOUNT], "mounts with the signing secret only")
    expect_equal(
        gate_volumes(only_slack),
        [{"name": "slack-signing-secret", "secret": {"secretName": "slack-app", "items": [{"key": "secret", "path": "signingSecret"}]}}],
        "the signing secret's key",
    )
    expect_equal(link_key_secrets(only_slack), [], "no link key without externalURL")
    only_header = render({"gates": {"identityHeader": "X-Auth-Request-Email"}})
    expect_equal(gate_args(only_header), ["--identity-header=X-Auth-Request-Email"], "args with identityHeader only")
    expect_equal(gate_volumes(only_header), [], "no gate volumes with identityHeader only")
    # A key without a name, or a name alone, mounts nothing.
    expect_equal(gate_args(render({"gates": {"slackSigningSecret": {"existingSecret": {"key": "x"}}}})), [], "key only")

    existing = render({"gates": {"externalURL": EXTERNAL_URL, "linkKey": {"existingSecret": {"name": "links", "key": "k"}}}})
    expect_equal(link_key_secrets(existing), [], "no chart link key with an existing Secret")
    expect_equal(
        gate_volumes(existing),
        [{"name": "gate-link-key", "secret": {"secretName": "links", "items": [{"key": "k", "path": "key"}]}}],
        "the existing link key mounted",
    )
    error = render_error({"gates": {"linkKey": {"existingSecret": {"name": "links"}}}})
    assert "set gates.externalURL too" in error, error

    for values, word in (
        ({"gates": {"externalUrl": EXTERNAL_URL}}, "externalUrl"),
        ({"gates": {"externalURL": "herald.example.com"}}, "pattern"),
        ({"gates": {"identityHeader": "X Forwarded Email"}}, "pattern"),
        ({"gates": {"slackSigningSecret": {"name": "slack-app"}}}, "name"),
        ({"gates": {"linkKey": {"existingSecret": {"nmae": "x"}}}}, "nmae"),
        ({"gates": {"slackSigningSecret": {"existingSecret": {"name": "s", "key": ""}}}}, "key"),
        ({"gate": {}}, "gate"),
    ):
        error = render_error(values)
        assert word in error, f"render of {values}: {error}"

    notes = render_files(GATE_VALUES)["herald/templates/NOTES.txt"]
    for line in (
        f"signed links: {EXTERNAL_URL}/links/... (route it to this Service; key in Secret {LINK_KEY_SECRET})",
        f"Slack buttons: set the Slack app's Interactivity Request URL to {EXTERNAL_URL}/slack/interactions",
        "/t/<token>/gates/confirm-promotion",
    ):
        assert line in notes, f"NOTES lack {line!r}:\n{notes}"

    for values in (GATE_VALUES, {**GATE_VALUES, "replicaCount": 3}, {**GATE_VALUES, "eventToken": {"enabled": False}}):
        problems = validate_structure(render(values))
        assert not problems, "\n".join(problems)


@check
def gates_rbac() -> None:
    """Approvals (the gate decisions, in the canaries' namespaces): exactly list, watch, get,
    create and update, cluster-wide, and nothing else of them; Events on Canaries."""
    for values in ({}, GATE_VALUES):
        rules = one(render(values), "ClusterRole")["rules"]
        approvals = [r for r in rules if any(x.startswith("approvals") for x in r["resources"])]
        expect_equal(
            approvals,
            [{"apiGroups": ["herald.dev"], "resources": ["approvals"], "verbs": ["list", "watch", "get", "create", "update"]}],
            "the rules for approvals",
        )
        expect_equal(
            [r["verbs"] for r in rules if r["apiGroups"] == ["events.k8s.io"]], [["create", "patch"]], "events.k8s.io"
        )
    role = one(render(GATE_VALUES), "Role")
    assert not any("approvals" in r["resources"] for r in role["rules"]), "approvals in the namespaced Role"
