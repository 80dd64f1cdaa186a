//! `herald serve` end to end, in process: the real router on a real loopback socket, real
//! HTTP sinks, real retries.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn three_receivers(sink: &Sink) -> String {
    format!(
        r##"
apiVersion: v1
kind: Secret
metadata: {{name: hooks, namespace: default}}
stringData:
  slack: {slack}
  teams: {teams}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: team, namespace: default}}
spec:
  canaries: [podinfo]
  receivers:
    - name: chat
      slack: {{secretRef: {{name: hooks, key: slack}}, channel: "#deploys"}}
    - name: teams
      msteams: {{secretRef: {{name: hooks, key: teams}}}}
    - name: audit
      webhook:
        url: {audit}
        headers: {{X-Team: payments}}
"##,
        slack = sink.url("/slack"),
        teams = sink.url("/teams"),
        audit = sink.url("/audit"),
    )
}

#[tokio::test]
async fn delivers_exact_bodies_to_each_receiver_in_event_order() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("policy.yaml", &three_receivers(&sink))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let rollout: Vec<String> = [
        (
            "Initialized",
            "Initialization done! podinfo.default",
            "Normal",
        ),
        (
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            "Normal",
        ),
        (
            "Progressing",
            "Advance podinfo.default canary weight 10",
            "Normal",
        ),
        (
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
            "Normal",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(i, (phase, message, kind))| {
        event(
            "podinfo",
            "default",
            phase,
            message,
            kind,
            1_700_000_000_000 + i as u64,
        )
    })
    .collect();
    for body in &rollout {
        assert_eq!(
            post_event(server.addr, "/events", body).await,
            (202, json!({"deliveries": 3}))
        );
    }
    // Another canary: no policy matches it.
    let other = event("checkout", "default", "Progressing", "x", "Normal", 1);
    assert_eq!(
        post_event(server.addr, "/events", &other).await,
        (202, json!({"deliveries": 0}))
    );
    sink.wait_for(12, WAIT).await;

    // The webhook gets Flagger's JSON byte for byte, in event order, with its headers.
    let audit = sink.received_on("/audit");
    assert_eq!(audit.iter().map(|r| r.text()).collect::<Vec<_>>(), rollout);
    assert_eq!(audit[0].headers["x-team"], "payments");
    assert_eq!(audit[0].headers["content-type"], "application/json");

    let slack = sink.received_on("/slack");
    assert_eq!(
        slack
            .iter()
            .map(|r| r.json()["attachments"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned())
            .collect::<Vec<_>>(),
        [
            "Initialization done! podinfo.default",
            "New revision detected! Scaling up podinfo.default",
            "Advance podinfo.default canary weight 10",
            "Promotion completed! Scaling down podinfo.default"
        ]
    );
    assert_eq!(
        slack[3].json(),
        json!({
            "channel": "#deploys",
            "attachments": [{
                "color": "good",
                "fallback": "podinfo.default Promotion completed! Scaling down podinfo.default",
                "author_name": "podinfo.default",
                "text": "Promotion completed! Scaling down podinfo.default",
                "mrkdwn_in": ["text"],
                "fields": [{"title": "Phase", "value": "Succeeded", "short": true}],
                "ts": 1_700_000_000
            }]
        })
    );
    let teams = sink.received_on("/teams");
    assert_eq!(teams.len(), 4);
    assert_eq!(
        teams[0].json()["attachments"][0]["content"]["body"][1]["text"],
        "Initialization done! podinfo.default"
    );
    assert_eq!(
        teams[0].json()["attachments"][0]["content"]["version"],
        "1.4"
    );

    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        4.0,
        WAIT,
    )
    .await;
    assert_eq!(metric(&text, "herald_events_received_total"), 5.0);
    assert_eq!(
        metric(
            &text,
            r#"herald_deliveries_total{receiver_type="slack",outcome="delivered"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_deliveries_total{receiver_type="msteams",outcome="delivered"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="slack"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_canary_status{name="podinfo",namespace="default"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_canary_status{name="checkout",namespace="default"}"#
        ),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_duration_seconds_count{receiver_type="slack"}"#
        ),
        4.0
    );
    assert_eq!(metric(&text, "herald_queue_depth"), 0.0);
    assert_eq!(metric(&text, "herald_policies"), 1.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn canary_status_follows_flagger_semantics() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let status = r#"herald_canary_status{name="podinfo",namespace="default"}"#;
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "Advance", "Normal", 1),
    )
    .await;
    assert_eq!(metric(&metrics_text(server.addr).await, status), 0.0);
    assert!(metrics_text(server.addr)
        .await
        .contains(&format!("{status} 0")));
    post_event(
        server.addr,
        "/events",
        &event(
            "podinfo",
            "default",
            "Failed",
            "Canary failed!",
            "Warning",
            2,
        ),
    )
    .await;
    assert_eq!(metric(&metrics_text(server.addr).await, status), 2.0);
    post_event(
        server.addr,
        "/events",
        &event(
            "podinfo",
            "default",
            "Succeeded",
            "Promotion completed!",
            "Normal",
            3,
        ),
    )
    .await;
    assert_eq!(metric(&metrics_text(server.addr).await, status), 1.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retries_server_errors_then_delivers() {
    let sink = Sink::start().await;
    sink.script("/hook", [Reply::Status(500), Reply::Status(503)]);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event(
        "podinfo",
        "default",
        "Progressing",
        "New revision detected!",
        "Normal",
        1,
    );
    post_event(server.addr, "/events", &body).await;
    let got = sink.wait_for(3, WAIT).await;
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    assert!(got.iter().all(|r| r.text() == body));
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="webhook"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_deliveries_total{receiver_type="webhook",outcome="failed"}"#
        ),
        0.0
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let sink = Sink::start().await;
    sink.script("/hook", [Reply::RetryAfter(429, "1")]);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "m", "Normal", 1),
    )
    .await;
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!((got[0].status, got[1].status), (429, 200));
    // The backoff alone would retry after 10-50 ms; the receiver asked for 1 s.
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_429_pauses_the_receiver_for_every_canary() {
    let sink = Sink::start().await;
    sink.script("/hook", [Reply::RetryAfter(429, "1")]);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "m", "Normal", 1),
    )
    .await;
    let limited = sink.wait_for(1, WAIT).await[0].at;
    post_event(
        server.addr,
        "/events",
        &event("other", "default", "Progressing", "m", "Normal", 2),
    )
    .await;
    let got = sink.wait_for(3, WAIT).await;
    let other = got.iter().find(|r| r.json()["name"] == "other").unwrap();
    assert_eq!(other.status, 200);
    let waited = other.at - limited;
    assert!(
        waited >= Duration::from_millis(950),
        "another canary was sent {waited:?} after the 429"
    );
    server.stop().await.unwrap();
}

/// Posts one event for each of the canaries `app-0` to `app-<n-1>`.
async fn post_for_canaries(addr: std::net::SocketAddr, n: u64) {
    for i in 0..n {
        let body = event(
            &format!("app-{i}"),
            "default",
            "Progressing",
            "m",
            "Normal",
            i,
        );
        let (status, _) = post_event(addr, "/events", &body).await;
        assert_eq!(status, 202);
    }
}

#[tokio::test]
async fn a_429_also_holds_requests_waiting_for_their_min_interval_turn() {
    let sink = Sink::start().await;
    sink.script("/hook", [Reply::RetryAfter(429, "1")]);
    // The 429 comes back while the other canaries' requests wait for their turn.
    sink.delay_every_answer(Duration::from_millis(100));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    // Well past the 429's answer, even on a loaded machine: the next turn comes after it.
    opts.delivery.min_interval = Duration::from_millis(500);
    let server = herald::serve::start(opts).await.unwrap();
    post_for_canaries(server.addr, 3).await;
    let mut got = sink.wait_for(4, WAIT).await;
    got.sort_by_key(|r| r.at);
    assert_eq!(got[0].status, 429);
    for later in &got[1..] {
        let waited = later.at - got[0].at;
        assert!(
            waited >= Duration::from_millis(950),
            "a request went out {waited:?} after the 429"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn does_not_retry_a_client_error() {
    let sink = Sink::start().await;
    sink.script("/hook", [Reply::Status(400)]);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "m", "Normal", 1),
    )
    .await;
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="failed"}"#,
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="webhook"}"#
        ),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.received().len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_counts_the_failure() {
    let sink = Sink::start().await;
    sink.script("/hook", std::iter::repeat_n(Reply::Status(502), 10));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "m", "Normal", 1),
    )
    .await;
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="failed"}"#,
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="webhook"}"#
        ),
        4.0
    );
    assert_eq!(sink.received().len(), 4);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retries_a_timeout() {
    let sink = Sink::start().await;
    sink.script("/hook", [Reply::Slow(Duration::from_secs(2))]);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.delivery.timeout = Duration::from_millis(300);
    let server = herald::serve::start(opts).await.unwrap();
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "m", "Normal", 1),
    )
    .await;
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="webhook"}"#
        ),
        2.0
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retries_a_refused_connection_until_the_receiver_is_up() {
    // A loopback port with nothing listening: connections are refused.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let dir = PolicyDir::new(&[(
        "p.yaml",
        &webhook_policy("all", &format!("http://{addr}/hook")),
    )]);
    let mut opts = options(dir.path());
    opts.delivery.min_backoff = Duration::from_millis(300);
    opts.delivery.max_backoff = Duration::from_millis(300);
    opts.delivery.max_attempts = 10;
    let server = herald::serve::start(opts).await.unwrap();
    post_event(
        server.addr,
        "/events",
        &event("podinfo", "default", "Progressing", "m", "Normal", 1),
    )
    .await;
    wait_for_metric(
        server.addr,
        r#"herald_delivery_attempts_total{receiver_type="webhook"}"#,
        1.0,
        WAIT,
    )
    .await;
    let sink = Sink::start_on(addr).await;
    sink.wait_for(1, WAIT).await;
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        1.0,
        WAIT,
    )
    .await;
    assert!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="webhook"}"#
        ) >= 2.0
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn answers_bad_requests_precisely() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.body_limit = 1024;
    let server = herald::serve::start(opts).await.unwrap();
    let addr = server.addr;
    let good = event("podinfo", "default", "Progressing", "m", "Normal", 1);

    assert_eq!(
        post_event(addr, "/events", r#"{"name":"podinfo","namespace":"default","phase":"Failed","metadata":{"eventMessage":"x","timestamp":"1"}}"#).await,
        (400, json!({"error": "metadata.eventType: missing field", "field": "metadata.eventType"}))
    );
    assert_eq!(
        post_event(
            addr,
            "/events",
            &good.replace(r#""timestamp":"1""#, r#""timestamp":1"#)
        )
        .await,
        (
            400,
            json!({"error": "metadata.timestamp: expected a string, found a number", "field": "metadata.timestamp"})
        )
    );
    assert_eq!(
        post_event(addr, "/events", "{not json").await,
        (
            400,
            json!({"error": "invalid JSON at line 1, column 2: key must be a string"})
        )
    );
    let huge = good.replace(r#""m""#, &format!("\"{}\"", "x".repeat(2000)));
    assert_eq!(
        post_event(addr, "/events", &huge).await,
        (413, json!({"error": "event body exceeds 1024 bytes"}))
    );
    assert_eq!(
        post_event(addr, "/events/default/missing", &good).await,
        (
            404,
            json!({"error": "no valid NotificationPolicy default/missing"})
        )
    );
    assert_eq!(
        post_event(addr, "/events/default/all", &good).await,
        (202, json!({"deliveries": 1}))
    );

    let client = reqwest::Client::new();
    let form = client
        .post(format!("http://{addr}/events"))
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    assert_eq!(
        form.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "Content-Type must be application/json"})
    );
    let get = client
        .get(format!("http://{addr}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let nowhere = client
        .post(format!("http://{addr}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    assert_eq!(
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let text = metrics_text(addr).await;
    assert_eq!(metric(&text, "herald_events_rejected_total"), 6.0);
    assert_eq!(metric(&text, "herald_events_received_total"), 1.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn repeat_interval_holds_back_a_repeated_message_but_not_the_next_rollouts() {
    let sink = Sink::start().await;
    let policy = format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: team\n  namespace: default\nspec:\n  repeatInterval: 1h\n  receivers:\n    - name: hook\n      webhook:\n        url: {}\n",
        sink.url("/hook")
    );
    let dir = PolicyDir::new(&[("p.yaml", &policy)]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let halt = "Halt podinfo.default advancement waiting for approval confirm-rollout";
    let posts = [
        // Flagger repeats the message every analysis interval: sent once.
        event("podinfo", "default", "Progressing", halt, "Normal", 1),
        event("podinfo", "default", "Progressing", halt, "Normal", 2),
        event(
            "podinfo",
            "default",
            "Progressing",
            "Advance podinfo.default canary weight 10",
            "Normal",
            3,
        ),
        event("podinfo", "default", "Progressing", halt, "Normal", 4),
        // The next rollout (another revision) waits for approval again: sent.
        event("podinfo", "default", "Progressing", halt, "Normal", 5).replace("abc123", "def456"),
        // Another canary's message is its own.
        event("frontend", "default", "Progressing", halt, "Normal", 6),
    ];
    let mut answers = Vec::new();
    for body in &posts {
        answers.push(post_event(server.addr, "/events", body).await.1["deliveries"].clone());
    }
    assert_eq!(answers, [1, 0, 1, 0, 1, 1]);
    let got = sink.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent: Vec<(String, String, String)> = sink
        .received()
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["name"].as_str().unwrap().to_owned(),
                body["checksum"].as_str().unwrap().to_owned(),
                body["metadata"]["eventMessage"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4);
    sent.sort();
    let expected = |name: &str, revision: &str, message: &str| {
        (name.to_owned(), revision.to_owned(), message.to_owned())
    };
    assert_eq!(
        sent,
        [
            expected("frontend", "abc123", halt),
            expected(
                "podinfo",
                "abc123",
                "Advance podinfo.default canary weight 10"
            ),
            expected("podinfo", "abc123", halt),
            expected("podinfo", "def456", halt),
        ]
    );
    let text = metrics_text(server.addr).await;
    assert_eq!(metric(&text, "herald_repeats_held_total"), 2.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_policy_endpoint_only_uses_that_policy() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[
        ("a.yaml", &webhook_policy("first", &sink.url("/first"))),
        ("b.yaml", &webhook_policy("second", &sink.url("/second"))),
        (
            "c.yaml",
            &format!(
                "apiVersion: herald.dev/v1alpha1\nkind: ClusterNotificationPolicy\nmetadata:\n  name: platform\nspec:\n  receivers:\n    - name: hook\n      webhook:\n        url: {}\n",
                sink.url("/platform")
            ),
        ),
    ]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event("podinfo", "default", "Progressing", "m", "Normal", 1);
    assert_eq!(
        post_event(server.addr, "/events/default/second", &body).await,
        (202, json!({"deliveries": 1}))
    );
    assert_eq!(
        post_event(server.addr, "/cluster-events/platform", &body).await,
        (202, json!({"deliveries": 1}))
    );
    // "second" is a NotificationPolicy, not a cluster one.
    assert_eq!(
        post_event(server.addr, "/cluster-events/second", &body).await,
        (
            404,
            json!({"error": "no valid ClusterNotificationPolicy second"})
        )
    );
    assert_eq!(
        post_event(server.addr, "/events", &body).await,
        (202, json!({"deliveries": 3}))
    );
    sink.wait_for(5, WAIT).await;
    assert_eq!(sink.received_on("/first").len(), 1);
    assert_eq!(sink.received_on("/second").len(), 2);
    assert_eq!(sink.received_on("/platform").len(), 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reloads_changed_policies_and_keeps_the_last_good_ones_on_a_bad_edit() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/before")))]);
    let mut opts = options(dir.path());
    opts.reload_interval = Duration::from_millis(50);
    let server = herald::serve::start(opts).await.unwrap();
    let body = event("podinfo", "default", "Progressing", "m", "Normal", 1);

    dir.write(
        "p.yaml",
        &webhook_policy("all", &sink.url("/after-the-edit")),
    );
    wait_for_metric(
        server.addr,
        r#"herald_policy_reloads_total{result="success"}"#,
        1.0,
        WAIT,
    )
    .await;
    post_event(server.addr, "/events", &body).await;

    dir.write("p.yaml", "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: all}\nspec:\n  phase: [Failed]\n  receivers: []\n");
    wait_for_metric(
        server.addr,
        r#"herald_policy_reloads_total{result="failure"}"#,
        1.0,
        WAIT,
    )
    .await;
    post_event(server.addr, "/events", &body).await;

    sink.wait_for(2, WAIT).await;
    assert_eq!(sink.received_on("/after-the-edit").len(), 2);
    assert!(sink.received_on("/before").is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued() {
    let sink = Sink::start().await;
    sink.delay_every_answer(Duration::from_millis(100));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let addr = server.addr;
    for i in 0..8 {
        let body = event(
            "podinfo",
            "default",
            "Progressing",
            &format!("step {i}"),
            "Normal",
            i,
        );
        assert_eq!(post_event(addr, "/events", &body).await.0, 202);
    }
    let report = server.stop().await.unwrap();
    assert!(report.complete);
    let got = sink.received();
    assert_eq!(got.len(), 8);
    let messages: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["metadata"]["eventMessage"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        messages,
        (0..8).map(|i| format!("step {i}")).collect::<Vec<_>>()
    );
    // The server no longer accepts events.
    assert!(reqwest::Client::new()
        .post(format!("http://{addr}/events"))
        .body("{}")
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn shutdown_deadline_counts_in_flight_as_unknown_and_queued_as_dropped() {
    let sink = Sink::start().await;
    sink.delay_every_answer(Duration::from_millis(400));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.drain_timeout = Duration::from_millis(500);
    let server = herald::serve::start(opts).await.unwrap();
    for i in 0..6 {
        post_event(
            server.addr,
            "/events",
            &event(
                "podinfo",
                "default",
                "Progressing",
                &format!("{i}"),
                "Normal",
                i,
            ),
        )
        .await;
    }
    let state = server.state.clone();
    let report = server.stop().await.unwrap();
    assert!(!report.complete);
    let text = state.metrics.encode();
    let delivered = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
    );
    let dropped = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="dropped"}"#,
    );
    // The request on the wire at the deadline may have reached the receiver: unknown.
    let unknown = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="unknown"}"#,
    );
    assert!(delivered >= 1.0 && dropped >= 1.0, "{text}");
    assert_eq!(unknown, 1.0, "{text}");
    assert_eq!(
        delivered + dropped + unknown,
        6.0,
        "every notification has exactly one outcome"
    );
    assert_eq!(metric(&text, "herald_queue_depth"), 0.0);
}

/// 2,000 events through receivers that fail 30% of requests at random: every notification is
/// delivered exactly once or counted as failed after its last attempt; none vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_loses_nothing() {
    const EVENTS: usize = 2000;
    let sink = Sink::start().await;
    sink.fail_randomly(0.3);
    let policy = format!(
        "{}---\n{}",
        webhook_policy("first", &sink.url("/first")),
        webhook_policy("second", &sink.url("/second"))
    );
    let dir = PolicyDir::new(&[("p.yaml", &policy)]);
    let mut opts = options(dir.path());
    opts.delivery.max_attempts = 3;
    opts.delivery.min_backoff = Duration::from_millis(1);
    opts.delivery.max_backoff = Duration::from_millis(2);
    opts.delivery.queue_capacity = EVENTS;
    let server = herald::serve::start(opts).await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{}/events", server.addr);
    for i in 0..EVENTS {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(event(
                "podinfo",
                "default",
                "Progressing",
                &format!("event {i}"),
                "Normal",
                i as u64,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let state = server.state.clone();
    let report = server.stop().await.unwrap();
    assert!(report.complete);
    let text = state.metrics.encode();
    let delivered = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
    );
    let failed = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="failed"}"#,
    );
    let dropped = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="dropped"}"#,
    );
    assert_eq!(dropped, 0.0);
    assert_eq!(delivered + failed, (2 * EVENTS) as f64);
    // About 0.3^3 = 2.7% fail every attempt; far more would mean retries are broken.
    assert!(failed < (2 * EVENTS) as f64 * 0.08, "failed {failed}");

    let received = sink.received();
    for path in ["/first", "/second"] {
        let mut successes = std::collections::HashMap::<String, usize>::new();
        let mut attempts = std::collections::HashMap::<String, usize>::new();
        for r in received.iter().filter(|r| r.path == path) {
            let message = r.json()["metadata"]["eventMessage"]
                .as_str()
                .unwrap()
                .to_owned();
            *attempts.entry(message.clone()).or_default() += 1;
            if r.status == 200 {
                *successes.entry(message).or_default() += 1;
            }
        }
        assert_eq!(attempts.len(), EVENTS, "{path}: every event was attempted");
        assert!(
            successes.values().all(|n| *n == 1),
            "{path}: no event delivered twice"
        );
        assert!(
            attempts.values().all(|n| *n <= 3),
            "{path}: at most max_attempts requests"
        );
        let failed_here = attempts
            .iter()
            .filter(|(m, _)| !successes.contains_key(*m))
            .count();
        assert!(attempts
            .iter()
            .filter(|(m, _)| !successes.contains_key(*m))
            .all(|(_, n)| *n == 3));
        assert_eq!(successes.len() + failed_here, EVENTS);
    }
    assert_eq!(
        received.iter().filter(|r| r.status == 200).count() as f64,
        delivered,
        "the delivered count is what the sinks accepted"
    );
}

#[tokio::test]
async fn min_interval_spaces_messages_to_one_receiver() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    // Long against the jitter of arrivals on a loaded machine (a late arrival shortens the
    // gap after it): gaps are checked to 80% of it.
    opts.delivery.min_interval = Duration::from_millis(500);
    let server = herald::serve::start(opts).await.unwrap();
    // Four canaries: their requests could go out together, but the interval holds across them.
    for i in 0..4 {
        post_event(
            server.addr,
            "/events",
            &event(
                &format!("podinfo-{i}"),
                "default",
                "Progressing",
                &format!("{i}"),
                "Normal",
                i,
            ),
        )
        .await;
    }
    let got = sink.wait_for(4, WAIT).await;
    // Herald spaces the starts of its requests; the first one also opened the connection,
    // so compare arrivals from the second on.
    for pair in got[1..].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(400), "messages {gap:?} apart");
    }
    server.stop().await.unwrap();
}

/// The message of each request the sink got for canary `name`, in arrival order.
fn messages_of(got: &[Received], name: &str) -> Vec<(String, Instant)> {
    let mut of: Vec<(String, Instant)> = got
        .iter()
        .filter(|r| r.json()["name"] == name)
        .map(|r| {
            let message = r.json()["metadata"]["eventMessage"]
                .as_str()
                .unwrap()
                .to_owned();
            (message, r.at)
        })
        .collect();
    of.sort_by_key(|(_, at)| *at);
    of
}

#[tokio::test]
async fn a_slow_canary_does_not_hold_up_others_and_each_keeps_its_order() {
    let sink = Sink::start().await;
    // Long, so that "did not wait for it" (under half of it) holds on a loaded machine too.
    let slow = Duration::from_millis(2000);
    sink.delay_when_body_contains(r#""name":"slow""#, slow);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let posts = [
        ("slow", "slow 1"),
        ("fast", "fast 1"),
        ("fast", "fast 2"),
        ("slow", "slow 2"),
        ("fast", "fast 3"),
    ];
    for (i, (name, message)) in posts.iter().enumerate() {
        let (status, _) = post_event(
            server.addr,
            "/events",
            &event(name, "default", "Progressing", message, "Normal", i as u64),
        )
        .await;
        assert_eq!(status, 202);
    }
    let got = sink.wait_for(5, WAIT).await;
    let slow_ones = messages_of(&got, "slow");
    let fast_ones = messages_of(&got, "fast");
    let names = |of: &[(String, Instant)]| of.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>();
    assert_eq!(names(&slow_ones), ["slow 1", "slow 2"]);
    assert_eq!(names(&fast_ones), ["fast 1", "fast 2", "fast 3"]);
    // The other canary went out while the slow one's first request was still unanswered...
    let first_slow = slow_ones[0].1;
    for (message, at) in &fast_ones {
        assert!(
            at.saturating_duration_since(first_slow) < slow / 2,
            "{message} waited for the slow canary"
        );
    }
    // ...while the slow canary's second message waited for its first to be answered.
    assert!(
        slow_ones[1].1 - first_slow >= slow - Duration::from_millis(20),
        "slow 2 was sent {:?} after slow 1, before slow 1 was answered",
        slow_ones[1].1 - first_slow
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn requests_in_flight_to_one_receiver_are_limited() {
    let sink = Sink::start().await;
    // Long, so that "at once" (under half of it) holds on a loaded machine too.
    let answer_after = Duration::from_millis(1000);
    sink.delay_every_answer(answer_after);
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.delivery.max_in_flight = 2;
    let server = herald::serve::start(opts).await.unwrap();
    post_for_canaries(server.addr, 4).await;
    let mut arrivals: Vec<Instant> = sink.wait_for(4, WAIT).await.iter().map(|r| r.at).collect();
    arrivals.sort();
    // Two go out at once; the next two only as the first two are answered.
    assert!(arrivals[1] - arrivals[0] < answer_after / 2, "{arrivals:?}");
    assert!(
        arrivals[2] - arrivals[0] >= answer_after - Duration::from_millis(20),
        "a third request was in flight: {arrivals:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_refuses_new_events_with_503_and_drops_nothing() {
    let sink = Sink::start().await;
    // Slow enough that no delivery finishes while the six events are posted.
    sink.delay_every_answer(Duration::from_millis(1500));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.delivery.queue_capacity = 1;
    let server = herald::serve::start(opts).await.unwrap();
    let mut queued = 0;
    let mut refused = 0;
    let client = reqwest::Client::new();
    for i in 0..6 {
        let response = client
            .post(format!("http://{}/events", server.addr))
            .header("content-type", "application/json")
            .body(event(
                "podinfo",
                "default",
                "Progressing",
                &format!("{i}"),
                "Normal",
                i,
            ))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            202 => {
                let body: serde_json::Value = response.json().await.unwrap();
                queued += body["deliveries"].as_u64().unwrap();
            }
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                refused += 1;
            }
            other => panic!("status {other}"),
        }
    }
    // One queue slot: the first event's notification takes it until it is delivered.
    assert_eq!((queued, refused), (1, 5));
    let text = metrics_text(server.addr).await;
    assert_eq!(
        metric(&text, r#"herald_events_refused_total{reason="queue_full"}"#),
        5.0
    );
    let state = server.state.clone();
    server.stop().await.unwrap();
    let text = state.metrics.encode();
    assert_eq!(
        metric(
            &text,
            r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#
        ),
        1.0
    );
    assert!(!text.contains(r#"outcome="dropped""#), "{text}");
}

/// A closed-loop overload: 16 senders post as fast as they are answered against a receiver
/// slower than the intake. Herald answers 503 with `Retry-After` for what it cannot queue,
/// and every event it answered 202 is delivered: nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_overload_ends_with_503s_and_nothing_dropped() {
    let sink = Sink::start().await;
    sink.delay_every_answer(Duration::from_millis(20));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.delivery.queue_capacity = 20;
    opts.delivery.max_in_flight = 2;
    opts.drain_timeout = Duration::from_secs(30);
    let server = herald::serve::start(opts).await.unwrap();
    let addr = server.addr;
    let until = Instant::now() + Duration::from_secs(2);
    let mut senders = Vec::new();
    for sender in 0..16u64 {
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut accepted, mut refused) = (0u64, 0u64);
            let mut i = 0u64;
            while Instant::now() < until {
                i += 1;
                let body = event(
                    &format!("c{}", i % 8),
                    "default",
                    "Progressing",
                    &format!("s{sender} e{i}"),
                    "Normal",
                    i,
                );
                let response = client
                    .post(format!("http://{addr}/events"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => accepted += 1,
                    503 => {
                        assert!(response.headers().contains_key("retry-after"));
                        refused += 1;
                    }
                    other => panic!("status {other}"),
                }
            }
            (accepted, refused)
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for sender in senders {
        let (a, r) = sender.await.unwrap();
        accepted += a;
        refused += r;
    }
    let state = server.state.clone();
    let report = server.stop().await.unwrap();
    assert!(report.complete);
    let text = state.metrics.encode();
    let delivered = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
    );
    assert!(refused > 0, "the sender saw no 503: {accepted} accepted");
    assert_eq!(delivered, accepted as f64, "{text}");
    assert_eq!(sink.received_on("/hook").len() as u64, accepted);
    assert!(!text.contains(r#"outcome="dropped""#), "{text}");
    assert_eq!(
        metric(&text, r#"herald_events_refused_total{reason="queue_full"}"#),
        refused as f64
    );
    eprintln!("closed loop: {accepted} accepted and delivered, {refused} refused with 503");
}

/// With `--state-dir`, `herald_canary_status` comes back after a restart, and notifications
/// still queued when Herald stopped (deferred) are sent by the next process.
#[tokio::test]
async fn state_dir_restores_canary_status_and_deferred_notifications() {
    let sink = Sink::start().await;
    sink.delay_every_answer(Duration::from_millis(300));
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("all", &sink.url("/hook")))]);
    let state = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.state_dir = Some(state.path().to_owned());
    opts.drain_timeout = Duration::from_millis(100);
    let server = herald::serve::start(opts.clone()).await.unwrap();
    for (i, phase) in ["Progressing", "Progressing", "Failed"].iter().enumerate() {
        let body = event(
            "podinfo",
            "default",
            phase,
            &format!("m{i}"),
            "Normal",
            i as u64,
        );
        assert_eq!(post_event(server.addr, "/events", &body).await.0, 202);
    }
    let state_before = server.state.clone();
    server.stop().await.unwrap();
    let text = state_before.metrics.encode();
    let deferred = metric(
        &text,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="deferred"}"#,
    );
    assert!(deferred >= 1.0, "{text}");

    sink.delay_every_answer(Duration::ZERO);
    let server = herald::serve::start(opts).await.unwrap();
    let text = metrics_text(server.addr).await;
    assert_eq!(
        metric(
            &text,
            r#"herald_canary_status{name="podinfo",namespace="default"}"#
        ),
        2.0,
        "{text}"
    );
    // Every message reached the sink at least once, in order of first arrival.
    let received = sink.wait_for(3, WAIT).await;
    let mut first = Vec::new();
    for r in &received {
        let text = r.text();
        let m = ["m0", "m1", "m2"]
            .into_iter()
            .find(|m| text.contains(m))
            .unwrap();
        if !first.contains(&m) {
            first.push(m);
        }
    }
    let deadline = Instant::now() + WAIT;
    while first.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for r in sink.received() {
            let text = r.text();
            if let Some(m) = ["m0", "m1", "m2"].into_iter().find(|m| text.contains(m)) {
                if !first.contains(&m) {
                    first.push(m);
                }
            }
        }
    }
    assert_eq!(first, ["m0", "m1", "m2"]);
    server.stop().await.unwrap();
}
