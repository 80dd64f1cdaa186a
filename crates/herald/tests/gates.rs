//! Herald as Flagger's gate, over real HTTP: Flagger's gate calls with its exact payload, the
//! ask in Slack (a stand-in for Slack's Web API) with buttons, presses signed as Slack signs
//! them, decisions kept across a restart.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::slack::{FakeSlack, GROUP_MEMBER, TOKEN, USER_GROUP};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ALICE: &str = "U1ALICE";
const REV1: &str = "7c4d1a2f9e0b";
const REV2: &str = "99aa00bb11cc";

fn gate_policy(slack: &FakeSlack, types: &str) -> String {
    format!(
        r##"
apiVersion: v1
kind: Secret
metadata: {{name: slack-bot, namespace: default}}
stringData:
  token: {TOKEN}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: gates, namespace: default}}
spec:
  canaries: [podinfo]
  receivers:
    - name: deploys
      slack:
        tokenSecretRef: {{name: slack-bot}}
        channel: "#deploys"
        apiUrl: {api}
  template:
    title: "{{{{name}}}}.{{{{namespace}}}}"
  gates:
    types: {types}
    approvers:
      slackUsers: [{ALICE}]
      slackUserGroups: [{USER_GROUP}]
"##,
        api = slack.api_url()
    )
}

/// Flagger's gate payload, as it marshals it (a webhook without metadata).
fn gate_call(phase: &str, checksum: &str) -> String {
    format!(
        r#"{{"name":"podinfo","namespace":"default","phase":"{phase}","checksum":"{checksum}"}}"#
    )
}

async fn call_gate(addr: SocketAddr, gate: &str, phase: &str, checksum: &str) -> (u16, Value) {
    post_event(addr, &format!("/gates/{gate}"), &gate_call(phase, checksum)).await
}

struct Started {
    server: herald::serve::Running,
    slack: FakeSlack,
    _dir: PolicyDir,
    _secrets: tempfile::TempDir,
}

async fn start(types: &str, state_dir: Option<std::path::PathBuf>) -> Started {
    let slack = FakeSlack::start().await;
    start_with(slack, types, state_dir).await
}

async fn start_with(
    slack: FakeSlack,
    types: &str,
    state_dir: Option<std::path::PathBuf>,
) -> Started {
    let dir = PolicyDir::new(&[("gates.yaml", &gate_policy(&slack, types))]);
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("signing-secret");
    std::fs::write(&secret, format!("{SIGNING_SECRET}\n")).unwrap();
    let mut options = options(dir.path());
    options.state_dir = state_dir;
    options.gates.slack_signing_secret_file = Some(secret);
    let server = herald::serve::start(options).await.unwrap();
    Started {
        server,
        slack,
        _dir: dir,
        _secrets: secrets,
    }
}

fn sign(body: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Slack's user names of the test's user IDs.
fn username(user: &str) -> &'static str {
    match user {
        ALICE => "alice",
        GROUP_MEMBER => "carol",
        _ => "mallory",
    }
}

/// A press of one of the ask's buttons, as Slack POSTs it.
fn press_body(ask: &Value, action: &str, user: &str, response_url: &str) -> String {
    let button = ask["blocks"][2]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["action_id"] == action)
        .unwrap();
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": username(user)},
        "api_app_id": "A0APP",
        "container": {"type": "message", "message_ts": "1700000000.000002", "channel_id": "C0123ABCD", "is_ephemeral": false},
        "channel": {"id": "C0123ABCD", "name": "deploys"},
        "message": {"type": "message", "ts": "1700000000.000002", "thread_ts": ask["thread_ts"], "text": ask["text"]},
        "response_url": response_url,
        "actions": [{"action_id": action, "block_id": "herald_gate", "type": "button", "value": button["value"], "action_ts": "1700000001.000000"}],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

async fn post_press(addr: SocketAddr, body: &str, timestamp: i64, signature: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Slack's own Block Kit models (`slack_sdk`) read every block back unchanged and find
/// nothing over Slack's limits (`validate_json`).
fn slack_sdk_accepts(message: &Value) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::process::Command::new("bash")
        .arg(root.join("tests/chart/venv.sh"))
        .output()
        .expect("the tests' Python environment");
    assert!(
        venv.status.success(),
        "{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_owned();
    let check = r#"
import json, sys
from slack_sdk.models.blocks import Block
message = json.load(sys.stdin)
for given in message["blocks"]:
    block = Block.parse(given)
    block.validate_json()
    assert block.to_dict() == given, (block.to_dict(), given)
print("ok")
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ask Herald posted for a gate.
async fn the_ask(slack: &FakeSlack, n: usize) -> Value {
    let calls = slack.wait_for(n).await;
    calls[n - 1].body.clone()
}

#[tokio::test]
async fn a_gate_is_closed_until_approved_from_slack_and_only_for_its_revision() {
    let started = start("[confirm-promotion, rollback]", None).await;
    let (addr, slack) = (started.server.addr, &started.slack);
    // The rollout's thread starts with Flagger's first event.
    let first = event(
        "podinfo",
        "default",
        "Progressing",
        "New revision detected! Scaling up podinfo.default",
        "Normal",
        1_764_072_000_000,
    )
    .replace("abc123", REV1);
    assert_eq!(post_event(addr, "/events", &first).await.0, 202);
    slack.wait_for(1).await;

    let (status, answer) = call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        answer,
        json!({
            "gate": "confirm-promotion",
            "canary": "default/podinfo",
            "revision": REV1,
            "open": false,
            "message": "closed: promotion of podinfo.default (revision 7c4d1a2f) waits for approval",
        })
    );
    let ask = the_ask(slack, 2).await;
    // The button's value, as Herald writes it: what the press brings back.
    let value = format!(
        r#"{{"ns":"default","c":"podinfo","r":"{REV1}","g":"confirm-promotion","p":"default/gates","rc":"deploys"}}"#
    );
    assert_eq!(
        ask,
        json!({
            "channel": "#deploys",
            "text": "podinfo.default: Promotion of podinfo.default (revision 7c4d1a2f) waits for approval.",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*podinfo.default*\nPromotion of podinfo.default (revision 7c4d1a2f) waits for approval."}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("May decide: <@{ALICE}>, <!subteam^{USER_GROUP}>")}]},
                {"type": "actions", "block_id": "herald_gate", "elements": [
                    {"type": "button", "action_id": "herald_approve", "text": {"type": "plain_text", "text": "Approve"}, "style": "primary", "value": value,
                     "confirm": {"title": {"type": "plain_text", "text": "Approve the promotion?"}, "text": {"type": "mrkdwn", "text": "Flagger goes on with the promotion of this revision."}, "confirm": {"type": "plain_text", "text": "Approve"}, "deny": {"type": "plain_text", "text": "Cancel"}}},
                    {"type": "button", "action_id": "herald_rollback", "text": {"type": "plain_text", "text": "Roll back"}, "style": "danger", "value": value,
                     "confirm": {"title": {"type": "plain_text", "text": "Roll back?"}, "text": {"type": "mrkdwn", "text": "Flagger rolls this revision back at its next check."}, "confirm": {"type": "plain_text", "text": "Roll back"}, "deny": {"type": "plain_text", "text": "Cancel"}, "style": "danger"}},
                ]},
            ],
            // In the rollout's thread.
            "thread_ts": "1700000000.000001",
        })
    );
    slack_sdk_accepts(&ask);
    // Flagger asks every interval; the ask is posted once.
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    assert_eq!(
        call_gate(addr, "rollback", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slack.calls().len(), 2, "{:#?}", slack.calls());

    let response_url = Sink::start().await;
    let body = press_body(
        &ask,
        "herald_approve",
        ALICE,
        &response_url.url("/actions/T1/1/abc"),
    );
    let ts = now_s();
    assert_eq!(post_press(addr, &body, ts, &sign(&body, ts)).await, 200);
    let update = response_url.wait_for(1, WAIT).await[0].json();
    assert_eq!(update["replace_original"], json!(true));
    assert_eq!(
        update["blocks"][1]["elements"][0]["text"],
        json!(format!(":white_check_mark: Approved by <@{ALICE}>"))
    );
    assert_eq!(
        update["blocks"].as_array().unwrap().len(),
        2,
        "the buttons are gone: {update}"
    );

    let (status, answer) = call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["message"],
        "promotion of podinfo.default (revision 7c4d1a2f) approved by @alice via slack"
    );
    assert_eq!(answer["decision"]["by"], "@alice");
    // Not the rollback, not another revision.
    assert_eq!(
        call_gate(addr, "rollback", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV2)
            .await
            .0,
        403
    );
    // The decision is told in the rollout's thread.
    let calls = slack.wait_for(4).await;
    let told = calls
        .iter()
        .find(|c| {
            c.body["attachments"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("approved by"))
        })
        .expect("announced");
    assert_eq!(
        told.body["attachments"][0]["text"],
        "Promotion of podinfo.default (revision 7c4d1a2f) approved by @alice via Slack."
    );
    assert_eq!(told.body["thread_ts"], "1700000000.000001");
    let metrics = metrics_text(addr).await;
    assert_eq!(
        metric(
            &metrics,
            r#"herald_gate_decisions_total{verdict="Approve",via="slack"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"herald_gate_answers_total{gate="confirm-promotion",answer="open"}"#
        ),
        1.0
    );
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn forged_stale_or_unlisted_presses_change_nothing() {
    let started = start("[confirm-promotion]", None).await;
    let (addr, slack) = (started.server.addr, &started.slack);
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    let ask = the_ask(slack, 1).await;
    let response_url = Sink::start().await;
    let url = response_url.url("/r");
    let body = press_body(&ask, "herald_approve", ALICE, &url);
    let ts = now_s();
    // A forged signature, a stale request (replayed after 5 minutes), no signature.
    assert_eq!(
        post_press(addr, &body, ts, &sign("payload=other", ts)).await,
        401
    );
    assert_eq!(
        post_press(addr, &body, ts - 301, &sign(&body, ts - 301)).await,
        401
    );
    assert_eq!(post_press(addr, &body, ts, "").await, 401);
    // Someone not on the list is told so, and the gate stays closed.
    let stranger = press_body(&ask, "herald_approve", "U2MALLORY", &url);
    assert_eq!(
        post_press(addr, &stranger, ts, &sign(&stranger, ts)).await,
        200
    );
    let told = response_url.wait_for(1, WAIT).await[0].json();
    assert_eq!(told["response_type"], "ephemeral");
    assert_eq!(
        told["text"],
        format!("You are not on the approvers list of policy default/gates: ask <@{ALICE}>, <!subteam^{USER_GROUP}> to decide.")
    );
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    let metrics = metrics_text(addr).await;
    assert_eq!(
        metric(
            &metrics,
            r#"herald_gate_refusals_total{reason="slack_signature"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"herald_gate_refusals_total{reason="not_approver"}"#
        ),
        1.0
    );
    // A member of the approvers' user group may decide (read from Slack with the bot token).
    let member = press_body(&ask, "herald_approve", GROUP_MEMBER, &url);
    assert_eq!(post_press(addr, &member, ts, &sign(&member, ts)).await, 200);
    response_url.wait_for(2, WAIT).await;
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        200
    );
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_rollback_pressed_in_slack_rolls_back_and_keeps_the_gate_closed() {
    let started = start("[confirm-promotion, rollback]", None).await;
    let (addr, slack) = (started.server.addr, &started.slack);
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    let ask = the_ask(slack, 1).await;
    let response_url = Sink::start().await;
    let body = press_body(&ask, "herald_rollback", ALICE, &response_url.url("/r"));
    let ts = now_s();
    assert_eq!(post_press(addr, &body, ts, &sign(&body, ts)).await, 200);
    response_url.wait_for(1, WAIT).await;
    let (status, answer) = call_gate(addr, "rollback", "WaitingPromotion", REV1).await;
    assert_eq!(
        (status, answer["message"].as_str().unwrap()),
        (
            200,
            "roll back podinfo.default (revision 7c4d1a2f): requested by @alice via slack"
        )
    );
    let (status, answer) = call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1).await;
    assert_eq!(
        (status, answer["message"].as_str().unwrap()),
        (
            403,
            "closed: rollback of podinfo.default (revision 7c4d1a2f) requested by @alice via slack"
        )
    );
    // A later approval does not undo it.
    let approve = press_body(&ask, "herald_approve", ALICE, &response_url.url("/r"));
    assert_eq!(
        post_press(addr, &approve, ts, &sign(&approve, ts)).await,
        200
    );
    let told = response_url.wait_for(2, WAIT).await[1].json();
    assert_eq!(told["text"], "Already decided: Rollback of podinfo.default (revision 7c4d1a2f) requested by @alice via Slack.");
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_decision_survives_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let started = start("[confirm-promotion]", Some(state.path().to_owned())).await;
    let addr = started.server.addr;
    assert_eq!(
        call_gate(addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    let ask = the_ask(&started.slack, 1).await;
    let response_url = Sink::start().await;
    let body = press_body(&ask, "herald_approve", ALICE, &response_url.url("/r"));
    let ts = now_s();
    assert_eq!(post_press(addr, &body, ts, &sign(&body, ts)).await, 200);
    response_url.wait_for(1, WAIT).await;
    let slack = started.slack.clone();
    started.server.stop().await.unwrap();

    let restarted = start_with(
        slack.clone(),
        "[confirm-promotion]",
        Some(state.path().to_owned()),
    )
    .await;
    let (status, answer) = call_gate(
        restarted.server.addr,
        "confirm-promotion",
        "WaitingPromotion",
        REV1,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Nothing is asked again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        slack
            .calls()
            .iter()
            .filter(|c| c.body["blocks"].is_array())
            .count()
            == 1
    );
    restarted.server.stop().await.unwrap();
}

#[tokio::test]
async fn gates_without_a_policy_stay_closed_and_bad_calls_say_why() {
    let started = start("[confirm-promotion]", None).await;
    let addr = started.server.addr;
    // The policy does not answer confirm-rollout.
    let (status, answer) = call_gate(addr, "confirm-rollout", "Waiting", REV1).await;
    assert_eq!(status, 403);
    assert_eq!(answer["message"], "closed: no policy answers the confirm-rollout gate of podinfo.default (add spec.gates to a NotificationPolicy that selects it)");
    let (status, answer) = post_event(
        addr,
        "/gates/confirm-promotion",
        r#"{"name":"podinfo","namespace":"default","phase":"WaitingPromotion"}"#,
    )
    .await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("checksum")));
    let (status, answer) = post_event(addr, "/gates/confirm", &gate_call("Waiting", REV1)).await;
    assert_eq!(status, 404);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("/gates/confirm-promotion"),
        "{answer}"
    );
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn without_slack_interactivity_a_bot_gets_no_buttons_and_is_told_how_to_decide() {
    let slack = FakeSlack::start().await;
    let dir = PolicyDir::new(&[("gates.yaml", &gate_policy(&slack, "[confirm-promotion]"))]);
    // No --slack-signing-secret-file: presses could not reach Herald.
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    assert_eq!(
        call_gate(server.addr, "confirm-promotion", "WaitingPromotion", REV1)
            .await
            .0,
        403
    );
    let ask = the_ask(&slack, 1).await;
    assert_eq!(ask.get("blocks"), None, "{ask}");
    assert_eq!(
        ask["attachments"][0]["text"],
        "Promotion of podinfo.default (revision 7c4d1a2f) waits for approval.\nDecide with: herald gate approve default/podinfo (or: herald gate rollback default/podinfo)"
    );
    let (addr, body) = (server.addr, "payload=%7B%7D");
    assert_eq!(
        post_press(addr, body, now_s(), &sign(body, now_s())).await,
        404
    );
    server.stop().await.unwrap();
}
