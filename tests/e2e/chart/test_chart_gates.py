"""Flagger's gates as the chart runs them: two replicas, the Slack app's signing secret and
the gate values from the chart, a Slack bot receiver whose Web API is a stand-in on
127.0.0.1, the decisions kept in Approval resources.

Run: tests/e2e/run.sh --chart-only -k gate
"""

from __future__ import annotations

import json
import time

import harness as h

# The Slack app's signing secret (in the Secret the values name) and the bot's token.
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-e2e-gate-bot-token"
ALICE = "U1ALICE"
# Flagger's checksum of the canary's spec: the revision gates are decided for.
REVISION = "7c4d1a2f9e0b"
EXTERNAL_URL = "https://herald.example.com"
# Gates answer from Approvals the replicas watch: how long the other replica may take.
OPENS_WITHIN = 10


def gate_values() -> dict:
    return {
        "gates": {
            "externalURL": EXTERNAL_URL,
            "slackSigningSecret": {"existingSecret": {"name": "herald-slack-app"}},
            "identityHeader": "X-Forwarded-Email",
        }
    }


def gate_policy(install, api: h.SlackApi) -> list[dict]:
    """The bot token's Secret and a NotificationPolicy answering podinfo's confirm-promotion
    and rollback gates, Alice allowed to decide."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "slack-bot", "namespace": install.apps},
            "type": "Opaque",
            "stringData": {"token": BOT_TOKEN},
        },
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "NotificationPolicy",
            "metadata": {"name": "gates", "namespace": install.apps},
            "spec": {
                "canaries": ["podinfo"],
                "receivers": [
                    {
                        "name": "deploys",
                        "slack": {"tokenSecretRef": {"name": "slack-bot"}, "channel": "#deploys", "apiUrl": api.url},
                    }
                ],
                "gates": {"types": ["confirm-promotion", "rollback"], "approvers": {"slackUsers": [ALICE]}},
            },
        },
    ]


def approvals(install) -> list[dict]:
    path = h.collection(("herald.dev/v1alpha1", "Approval"), install.apps)
    return (install.kube.get(f"{path}?labelSelector=herald.dev%2Fcanary%3Dpodinfo") or {}).get("items", [])


def press(herald: h.Herald, body: str, timestamp: int, signature: str) -> tuple[int, str]:
    return h.http_post(
        herald.port,
        "/slack/interactions",
        body,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature,
        },
    )


def test_gate_approved_in_slack_on_one_replica_opens_it_on_the_other(install):
    """replicaCount 2 with the chart's gate values: Flagger's confirm-promotion call on B is
    closed and asks once in Slack, with buttons; Alice's press (signed as Slack signs it) on A
    opens the gate on B within seconds, through the Approval in the canary's namespace, and
    is recorded as a GateApproved Event on the Canary; a forged press is refused; the
    rollback gate stays closed; the decision outlives A's kill -9."""
    api = h.SlackApi(BOT_TOKEN)
    responses = h.Capture("response")
    install.servers += [api, responses]
    signing = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "herald-slack-app"},
        "type": "Opaque",
        "stringData": {"signingSecret": SIGNING_SECRET},
    }
    install.install(replicas=2, extra_values=gate_values(), existing_secrets=[signing])
    # The chart's gate arguments, run by both replicas (the mounts are the harness's dirs).
    args = h.deployment_command(install.docs)[0]
    for arg in (
        f"--external-url={EXTERNAL_URL}",
        "--gate-link-key-file=/etc/herald/gate-link-key/key",
        "--slack-signing-secret-file=/etc/herald/slack-signing-secret/signingSecret",
        "--identity-header=X-Forwarded-Email",
        "--leader-election",
    ):
        assert arg in args, args
    assert any(d["kind"] == "Secret" and d["metadata"]["name"] == "herald-gate-link-key" for d in install.docs)

    leader = install.leader()
    # B asks and answers Flagger, A (the follower) takes the press.
    b = leader
    a = next(r for r in install.replicas if r is not leader)
    canary = install.canary("podinfo", phase="WaitingPromotion", revision=REVISION)
    for doc in gate_policy(install, api):
        install.kube.apply(doc)

    # Flagger calls the gate every analysis interval; closed until the policy is read, it
    # asks the first time the policy answers it.
    answers = []

    def asked():
        answers.append(install.post_gate(b, "confirm-promotion", "WaitingPromotion", REVISION))
        return api.asks()

    h.wait_for("the ask in Slack", asked, 20, 0.5)
    assert all(status == 403 for status, _ in answers), answers
    status, answer = answers[-1]
    target = f"podinfo.{install.apps}"
    assert answer["open"] is False and answer["revision"] == REVISION, answer
    status, answer = install.post_gate(b, "confirm-promotion", "WaitingPromotion", REVISION)
    assert (status, answer["message"]) == (
        403,
        f"closed: promotion of {target} (revision 7c4d1a2f) waits for approval",
    ), answer
    status, answer = install.post_gate(b, "rollback", "WaitingPromotion", REVISION)
    assert status == 403 and answer["open"] is False, answer
    time.sleep(1)
    # Asked once, by the bot (its token), with Approve / Roll back buttons.
    (ask,) = api.asks()
    assert all(r.headers.get("authorization") == f"Bearer {BOT_TOKEN}" for r in api.snapshot()), [
        r.headers for r in api.snapshot()
    ]
    assert ask["channel"] == "#deploys", ask
    # The default title, `[cluster] name.namespace`, then the ask.
    assert ask["text"] == f"[{h.CLUSTER_NAME}] {target}: Promotion of {target} (revision 7c4d1a2f) waits for approval.", ask
    actions = next(b_ for b_ in ask["blocks"] if b_["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == ["herald_approve", "herald_rollback"], actions
    value = json.loads(actions["elements"][0]["value"])
    assert value == {
        "ns": install.apps,
        "c": "podinfo",
        "r": REVISION,
        "g": "confirm-promotion",
        "p": f"{install.apps}/gates",
        "rc": "deploys",
    }, value
    # The Approval exists (the ask is recorded in it), with no decision yet.
    (approval,) = approvals(install)
    assert approval["metadata"]["namespace"] == install.apps
    assert approval["spec"]["revision"] == REVISION and not approval["spec"].get("decisions"), approval

    body = h.slack_press(ask, "herald_approve", ALICE, "alice", f"{responses.url}/actions/T1/1/abc")
    ts = int(time.time())
    # Forged (signed with another secret), and signed over another body: refused on A.
    assert press(a, body, ts, h.slack_signature("0" * 32, ts, body))[0] == 401
    assert press(a, body, ts, h.slack_signature(SIGNING_SECRET, ts, "payload=other"))[0] == 401
    assert press(a, body, ts - 301, h.slack_signature(SIGNING_SECRET, ts - 301, body))[0] == 401
    assert install.post_gate(b, "confirm-promotion", "WaitingPromotion", REVISION)[0] == 403

    status, text = press(a, body, ts, h.slack_signature(SIGNING_SECRET, ts, body))
    pressed = time.monotonic()
    assert status == 200, text
    update = h.wait_for("the ask updated through response_url", responses.snapshot, 10, 0.05)[0].json()
    assert update.get("replace_original") is True, update
    assert f"Approved by <@{ALICE}>" in json.dumps(update), update

    # B answers from the Approval A wrote.
    def opened():
        status, answer = install.post_gate(b, "confirm-promotion", "WaitingPromotion", REVISION)
        return (status, answer) if status == 200 else None

    status, answer = h.wait_for("the gate open on the other replica", opened, OPENS_WITHIN, 0.1)
    took = time.monotonic() - pressed
    h.measure(f"gate: approved on one replica, open on the other after {took:.2f} s")
    assert answer["message"] == f"promotion of {target} (revision 7c4d1a2f) approved by @alice via slack", answer
    assert answer["decision"]["by"] == "@alice", answer
    (approval,) = approvals(install)
    assert approval["spec"]["canary"] == "podinfo" and approval["spec"]["revision"] == REVISION, approval
    decisions = approval["spec"]["decisions"]
    assert [(d.get("gate"), d["verdict"], d["by"], d["via"]) for d in decisions] == [
        ("confirm-promotion", "Approve", "@alice", "slack")
    ], decisions
    # Only the promotion: the rollback gate stays closed, on both replicas.
    for replica in (a, b):
        assert install.post_gate(replica, "rollback", "WaitingPromotion", REVISION)[0] == 403
        assert install.post_gate(replica, "confirm-promotion", "WaitingPromotion", REVISION)[0] == 200

    # The decision is told in Slack, by the bot.
    approved = f"Promotion of {target} (revision 7c4d1a2f) approved by @alice via Slack."

    def told():
        return [r for r in api.posts() if approved in json.dumps(r.parsed)]

    h.wait_for("the decision told in Slack", told, 10, 0.1)

    # The decision, audited on the Canary (`kubectl describe canary`).
    events_path = h.collection(("events.k8s.io/v1", "Event"), install.apps)

    def audited():
        items = (install.kube.get(events_path) or {}).get("items", [])
        return [e for e in items if e.get("reason") == "GateApproved"]

    (event,) = h.wait_for("a GateApproved Event on the Canary", audited, 10, 0.2)
    regarding = event["regarding"]
    assert (regarding["kind"], regarding["name"], regarding.get("uid")) == (
        "Canary",
        "podinfo",
        canary["metadata"]["uid"],
    ), event
    assert event["type"] == "Normal" and "@alice" in (event.get("note") or ""), event

    # A dies (kill -9): the decision is in the API server, not in A.
    a.kill()
    status, answer = install.post_gate(b, "confirm-promotion", "WaitingPromotion", REVISION)
    assert status == 200, answer
    assert install.post_gate(b, "rollback", "WaitingPromotion", REVISION)[0] == 403
    assert len(approvals(install)) == 1
    # Nothing asked again, and the decision told once: Herald's own Event on the Canary is
    # not taken for one of Flagger's.
    assert len(api.asks()) == 1, api.asks()
    assert len(told()) == 1, told()
