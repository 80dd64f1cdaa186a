//! Slack bots: Herald against a local stand-in for Slack's Web API on 127.0.0.1 that answers
//! like Slack (HTTP 200 with `ok`, `channel`, `ts`; `ok:false` with an error code), so the
//! threads, the outcome update and the failure handling are checked over real HTTP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::slack::{Call, FakeSlack, CHANNEL_ID, TOKEN};
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn bot_policy(slack: &FakeSlack, channel: &str) -> String {
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
metadata: {{name: rollouts, namespace: default}}
spec:
  receivers:
    - name: deploys
      slack:
        tokenSecretRef: {{name: slack-bot}}
        channel: "{channel}"
        apiUrl: {api}
        username: herald
  template:
    title: "{{{{name}}}}.{{{{namespace}}}}"
"##,
        api = slack.api_url()
    )
}

fn rollout_event(checksum: &str, phase: &str, message: &str, kind: &str, n: u64) -> String {
    event(
        "podinfo",
        "default",
        phase,
        message,
        kind,
        1_764_072_000_000 + n,
    )
    .replace("abc123", checksum)
}

async fn post_all(addr: SocketAddr, events: &[String]) {
    for body in events {
        let (status, answer) = post_event(addr, "/events", body).await;
        assert_eq!(status, 202, "{answer}");
    }
}

fn attachment(color: &str, text: &str, phase: &str, n: u64) -> Value {
    json!({
        "color": color,
        "fallback": format!("podinfo.default {text}"),
        "author_name": "podinfo.default",
        "text": text,
        "mrkdwn_in": ["text"],
        "fields": [{"title": "Phase", "value": phase, "short": true}],
        "ts": (1_764_072_000_000 + n) / 1000
    })
}

#[tokio::test]
async fn a_rollout_is_one_thread_and_its_first_message_shows_the_outcome() {
    let slack = FakeSlack::start().await;
    let dir = PolicyDir::new(&[("bot.yaml", &bot_policy(&slack, "#deploys"))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_all(
        server.addr,
        &[
            rollout_event(
                "7c4d5e6f8",
                "Progressing",
                "New revision detected! Scaling up podinfo.default",
                "Normal",
                1,
            ),
            rollout_event(
                "7c4d5e6f8",
                "Progressing",
                "Advance podinfo.default canary weight 10",
                "Normal",
                2,
            ),
            rollout_event(
                "7c4d5e6f8",
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                "Normal",
                3,
            ),
        ],
    )
    .await;
    let calls = slack.wait_for(4).await;
    let summary: Vec<(&str, Value)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.body.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "chat.postMessage",
                json!({"channel": "#deploys", "username": "herald", "attachments": [attachment(
                    "#0076D7", "New revision detected! Scaling up podinfo.default", "Progressing", 1)]})
            ),
            (
                "chat.postMessage",
                json!({"channel": "#deploys", "username": "herald", "thread_ts": "1700000000.000001",
                       "attachments": [attachment("#0076D7", "Advance podinfo.default canary weight 10", "Progressing", 2)]})
            ),
            (
                "chat.postMessage",
                json!({"channel": "#deploys", "username": "herald", "thread_ts": "1700000000.000001",
                       "attachments": [attachment("good", "Promotion completed! Scaling down podinfo.default", "Succeeded", 3)]})
            ),
            (
                "chat.update",
                json!({"channel": CHANNEL_ID, "ts": "1700000000.000001",
                       "attachments": [attachment("good", "Promotion completed! Scaling down podinfo.default", "Succeeded", 3)]})
            ),
        ]
    );
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="slack",outcome="delivered"}"#,
        3.0,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_deliveries_total{receiver_type="slack",outcome="failed"}"#
        ),
        0.0
    );
    server.stop().await.unwrap();
}

/// Flagger's real order: "New revision detected!" is recorded before Flagger stores the new
/// revision, so it carries the previous rollout's checksum (and, seen from the cluster, the
/// previous phase). It must start a new thread, not reply in (or rewrite) the previous one.
#[tokio::test]
async fn each_rollout_gets_its_own_thread_in_flaggers_real_order() {
    let slack = FakeSlack::start().await;
    let dir = PolicyDir::new(&[("bot.yaml", &bot_policy(&slack, "#deploys"))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_all(
        server.addr,
        &[
            rollout_event(
                "aaa",
                "Succeeded",
                "New revision detected! Scaling up podinfo.default",
                "Normal",
                1,
            ),
            rollout_event(
                "bbb",
                "Progressing",
                "Advance podinfo.default canary weight 10",
                "Normal",
                2,
            ),
            rollout_event(
                "bbb",
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                "Normal",
                3,
            ),
            // The next rollout: the start carries the previous checksum and phase.
            rollout_event(
                "bbb",
                "Succeeded",
                "New revision detected! Scaling up podinfo.default",
                "Normal",
                4,
            ),
            rollout_event(
                "ccc",
                "Progressing",
                "Advance podinfo.default canary weight 10",
                "Normal",
                5,
            ),
            // In a cluster the phase may still say Progressing when Flagger records this.
            rollout_event(
                "ccc",
                "Progressing",
                "Canary failed! Scaling down podinfo.default",
                "Warning",
                6,
            ),
        ],
    )
    .await;
    let calls = slack.wait_for(8).await;
    // (method, thread_ts, ts, reply_broadcast, text)
    type Seen<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<bool>,
        &'a str,
    );
    let summary: Vec<Seen> = calls
        .iter()
        .map(|c| {
            (
                c.method.as_str(),
                c.body["thread_ts"].as_str(),
                c.body["ts"].as_str(),
                c.body["reply_broadcast"].as_bool(),
                c.body["attachments"][0]["text"].as_str().unwrap(),
            )
        })
        .collect();
    let first = Some("1700000000.000001");
    let second = Some("1700000000.000004");
    assert_eq!(
        summary,
        [
            (
                "chat.postMessage",
                None,
                None,
                None,
                "New revision detected! Scaling up podinfo.default"
            ),
            (
                "chat.postMessage",
                first,
                None,
                None,
                "Advance podinfo.default canary weight 10"
            ),
            (
                "chat.postMessage",
                first,
                None,
                None,
                "Promotion completed! Scaling down podinfo.default"
            ),
            (
                "chat.update",
                None,
                first,
                None,
                "Promotion completed! Scaling down podinfo.default"
            ),
            (
                "chat.postMessage",
                None,
                None,
                None,
                "New revision detected! Scaling up podinfo.default"
            ),
            (
                "chat.postMessage",
                second,
                None,
                None,
                "Advance podinfo.default canary weight 10"
            ),
            (
                "chat.postMessage",
                second,
                None,
                Some(true),
                "Canary failed! Scaling down podinfo.default"
            ),
            (
                "chat.update",
                None,
                second,
                None,
                "Canary failed! Scaling down podinfo.default"
            ),
        ]
    );
    assert_eq!(calls[7].body["attachments"][0]["color"], "danger");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(slack.calls().len(), 8, "nothing else is sent");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ok_false_is_a_failure_and_is_not_retried() {
    let slack = FakeSlack::start().await;
    let dir = PolicyDir::new(&[("bot.yaml", &bot_policy(&slack, "#nowhere"))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_all(
        server.addr,
        &[rollout_event(
            "aaa",
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            "Normal",
            1,
        )],
    )
    .await;
    wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="slack",outcome="failed"}"#,
        1.0,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        slack.calls().len(),
        1,
        "channel_not_found fails the same way every time"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn threads_survive_a_restart_with_a_state_file() {
    let slack = FakeSlack::start().await;
    let dir = PolicyDir::new(&[("bot.yaml", &bot_policy(&slack, "#deploys"))]);
    let state = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.state_file = Some(state.path().join("threads.json"));
    let first = herald::serve::start(opts.clone()).await.unwrap();
    post_all(
        first.addr,
        &[rollout_event(
            "7c4d5e6f8",
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            "Normal",
            1,
        )],
    )
    .await;
    slack.wait_for(1).await;
    wait_for_metric(
        first.addr,
        r#"herald_deliveries_total{receiver_type="slack",outcome="delivered"}"#,
        1.0,
        WAIT,
    )
    .await;
    first.stop().await.unwrap();

    let second = herald::serve::start(opts).await.unwrap();
    post_all(
        second.addr,
        &[rollout_event(
            "7c4d5e6f8",
            "Progressing",
            "Advance podinfo.default canary weight 10",
            "Normal",
            2,
        )],
    )
    .await;
    let calls = slack.wait_for(2).await;
    assert_eq!(calls[1].body["thread_ts"], "1700000000.000001");
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_429_pauses_every_channel_of_the_token() {
    let slack = FakeSlack::start().await;
    // Two policies, one token: podinfo's events go to #deploys, other's to #alerts.
    let deploys =
        bot_policy(&slack, "#deploys").replace("spec:\n", "spec:\n  canaries: [podinfo]\n");
    let alerts = bot_policy(&slack, "#alerts")
        .replace("name: rollouts", "name: alerts")
        .replace("spec:\n", "spec:\n  canaries: [other]\n");
    let dir = PolicyDir::new(&[("deploys.yaml", &deploys), ("alerts.yaml", &alerts)]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    slack.rate_limit_next(1);
    post_all(
        server.addr,
        &[rollout_event(
            "aaa",
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            "Normal",
            1,
        )],
    )
    .await;
    let limited = slack.wait_for(1).await[0].clone();
    // Herald reads the 429 just after the stand-in recorded the call: let it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = event(
        "other",
        "default",
        "Progressing",
        "New revision detected! Scaling up other.default",
        "Normal",
        1_764_072_000_002,
    );
    post_all(server.addr, &[other]).await;
    let calls = slack.wait_for(3).await;
    let to_alerts: Vec<&Call> = calls
        .iter()
        .filter(|c| c.body["channel"] == "#alerts")
        .collect();
    assert_eq!(to_alerts.len(), 1, "{calls:#?}");
    let waited = to_alerts[0].at.duration_since(limited.at);
    assert!(
        waited >= Duration::from_millis(950),
        "#alerts was called {waited:?} after the token got a 429 with Retry-After: 1"
    );
    wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="slack",outcome="delivered"}"#,
        2.0,
        WAIT,
    )
    .await;
    server.stop().await.unwrap();
}
