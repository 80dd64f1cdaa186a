//! PagerDuty over real HTTP: `herald serve` in process, and on 127.0.0.1 a stand-in for the
//! Events API v2 that checks each request as PagerDuty documents it (`POST /v2/enqueue`,
//! `Content-Type: application/json`, a 32-character `routing_key`, `event_action` trigger or
//! resolve, a `dedup_key` of at most 255 characters, a trigger's `payload` with `summary` of at
//! most 1,024 characters, `source` and a known `severity`) and answers as PagerDuty does:
//! `202` with `{"status":"success",...,"dedup_key":...}`, `400` with `invalid event`, `429`
//! when asked to. It keeps incidents as PagerDuty does: a trigger whose `dedup_key` has an open
//! incident adds to it instead of opening another; a resolve closes it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

#[derive(Default)]
struct PagerDuty {
    /// Every accepted request's exact bytes.
    received: Vec<String>,
    /// Incidents by dedup key: `true` while open. Each trigger on a closed (or new) key opens
    /// one more, counted in `opened`.
    incidents: BTreeMap<String, bool>,
    opened: usize,
    /// Answer this many requests `429` first.
    throttle: usize,
    /// Every accepted change event's exact bytes.
    changes: Vec<String>,
}

type Shared = Arc<Mutex<PagerDuty>>;

async fn start_pagerduty(throttle: usize) -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new(Mutex::new(PagerDuty {
        throttle,
        ..PagerDuty::default()
    }));
    let app = Router::new()
        .route("/v2/enqueue", post(enqueue))
        .route("/v2/change/enqueue", post(change))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

async fn enqueue(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut pd = shared.lock().unwrap();
    if pd.throttle > 0 {
        pd.throttle -= 1;
        let answer = json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly."});
        return (StatusCode::TOO_MANY_REQUESTS, axum::Json(answer)).into_response();
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let parsed = serde_json::from_str::<Value>(&body).ok().filter(|_| json);
    let problem = match &parsed {
        None => Some("Event object is invalid".to_owned()),
        Some(event) => event_problem(event),
    };
    if let Some(problem) = problem {
        let answer = json!({"status": "invalid event", "message": "Event object is invalid", "errors": [problem]});
        return (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response();
    }
    let event = parsed.unwrap();
    let key = event["dedup_key"].as_str().unwrap().to_owned();
    match event["event_action"].as_str().unwrap() {
        "trigger" => {
            if pd.incidents.get(&key) != Some(&true) {
                pd.opened += 1;
                pd.incidents.insert(key.clone(), true);
            }
        }
        _ => {
            if let Some(open) = pd.incidents.get_mut(&key) {
                *open = false;
            }
        }
    }
    pd.received.push(body);
    let answer = json!({"status": "success", "message": "Event processed", "dedup_key": key});
    (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
}

/// `POST /v2/change/enqueue`: a change event has a routing key and a `payload` with a
/// `summary` of at most 1,024 characters and a `source`; no `event_action` or `dedup_key`.
async fn change(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut pd = shared.lock().unwrap();
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count());
    let valid = serde_json::from_str::<Value>(&body).ok().filter(|event| {
        json && chars(&event["routing_key"]) == Some(32)
            && matches!(chars(&event["payload"]["summary"]), Some(1..=1024))
            && matches!(chars(&event["payload"]["source"]), Some(1..))
            && event.get("event_action").is_none()
            && event.get("dedup_key").is_none()
    });
    if valid.is_none() {
        let answer = json!({"status": "invalid event", "message": "Event object is invalid"});
        return (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response();
    }
    pd.changes.push(body);
    let answer = json!({"status": "success", "message": "Change event processed"});
    (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
}

/// What the Events API v2 refuses.
fn event_problem(event: &Value) -> Option<String> {
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count());
    if chars(&event["routing_key"]) != Some(32) {
        return Some("'routing_key' must be a 32 character integration key".into());
    }
    if !matches!(chars(&event["dedup_key"]), Some(1..=255)) {
        return Some("'dedup_key' must be a string of at most 255 characters".into());
    }
    match event["event_action"].as_str() {
        Some("resolve") => None,
        Some("trigger") => {
            let payload = &event["payload"];
            if !matches!(chars(&payload["summary"]), Some(1..=1024)) {
                return Some("'payload.summary' is required, at most 1024 characters".into());
            }
            if !matches!(chars(&payload["source"]), Some(1..)) {
                return Some("'payload.source' is required".into());
            }
            let severities = ["critical", "error", "warning", "info"];
            if !severities.contains(&payload["severity"].as_str().unwrap_or("")) {
                return Some("'payload.severity' is invalid".into());
            }
            None
        }
        _ => Some("'event_action' is invalid".into()),
    }
}

fn policies(addr: SocketAddr, routing_key: &str) -> PolicyDir {
    policies_with(addr, routing_key, "")
}

fn policies_with(addr: SocketAddr, routing_key: &str, extra: &str) -> PolicyDir {
    let policy = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pagerduty, namespace: default}}
stringData: {{routingKey: {routing_key}}}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: oncall, namespace: default}}
spec:
  receivers:
    - name: pager
      pagerduty:
        routingKeySecretRef: {{name: pagerduty}}
        apiUrl: "http://{addr}"
        source: prod-eu
{extra}"#
    );
    PolicyDir::new(&[("oncall.yaml", &policy)])
}

async fn send(server: SocketAddr, phase: &str, message: &str, at: u64, deliveries: u64) {
    let body = event("podinfo", "default", phase, message, "Warning", at);
    assert_eq!(
        post_event(server, "/events", &body).await,
        (202, json!({"deliveries": deliveries})),
        "{message}"
    );
}

const DELIVERED: &str = r#"herald_deliveries_total{receiver_type="pagerduty",outcome="delivered"}"#;
const ATTEMPTS: &str = r#"herald_delivery_attempts_total{receiver_type="pagerduty"}"#;

#[tokio::test]
async fn a_rollback_opens_one_incident_and_the_promotion_after_a_restart_resolves_it() {
    // The first request is throttled: PagerDuty's 429 is retried.
    let (addr, pd) = start_pagerduty(1).await;
    let dir = policies(addr, ROUTING_KEY);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let rollback = "Rolling back podinfo.default failed checks threshold reached 5";
    send(server.addr, "Progressing", rollback, 1_700_000_000_000, 1).await;
    wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    let failed = "Canary failed! Scaling down podinfo.default";
    send(server.addr, "Failed", failed, 1_700_000_060_000, 1).await;
    // Progress is none of PagerDuty's business: no notification at all.
    send(
        server.addr,
        "Progressing",
        "Advance podinfo.default canary weight 10",
        1_700_000_070_000,
        0,
    )
    .await;
    let text = wait_for_metric(server.addr, DELIVERED, 2.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 3.0, "one 429, retried once");
    {
        let pd = pd.lock().unwrap();
        assert_eq!(pd.opened, 1, "the second failure adds to the open incident");
        assert_eq!(pd.incidents.get("herald//default/podinfo"), Some(&true));
        assert_eq!(
            pd.received[0],
            format!(
                r#"{{"routing_key":"{ROUTING_KEY}","event_action":"trigger","dedup_key":"herald//default/podinfo","payload":{{"summary":"podinfo.default: {rollback}","source":"prod-eu","severity":"critical","timestamp":"2023-11-14T22:13:20Z","component":"podinfo","group":"default","class":"canary","custom_details":{{"phase":"Progressing","revision":"abc123","message":"{rollback}"}}}},"client":"Herald"}}"#
            )
        );
    }
    server.stop().await.unwrap();

    // A new Herald knows nothing of the incident, and needs not: the key is the canary's.
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    send(
        server.addr,
        "Succeeded",
        "Promotion completed! Scaling down podinfo.default",
        1_700_000_600_000,
        1,
    )
    .await;
    let text = wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 1.0);
    server.stop().await.unwrap();
    let pd = pd.lock().unwrap();
    assert_eq!(pd.received.len(), 3);
    assert_eq!(
        pd.received[2],
        format!(
            r#"{{"routing_key":"{ROUTING_KEY}","event_action":"resolve","dedup_key":"herald//default/podinfo"}}"#
        )
    );
    assert_eq!(
        pd.incidents.get("herald//default/podinfo"),
        Some(&false),
        "resolved"
    );
    assert_eq!(pd.opened, 1);
}

#[tokio::test]
async fn a_refused_event_is_not_retried_and_the_key_never_shows() {
    // PagerDuty refuses a routing key that is not an integration key: 400, not retried.
    let (addr, pd) = start_pagerduty(0).await;
    let dir = policies(addr, "not-an-integration-key");
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    send(
        server.addr,
        "Failed",
        "Canary failed! Scaling down podinfo.default",
        1_700_000_000_000,
        1,
    )
    .await;
    let failed = r#"herald_deliveries_total{receiver_type="pagerduty",outcome="failed"}"#;
    let text = wait_for_metric(server.addr, failed, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 1.0);
    assert!(!text.contains("not-an-integration-key"));
    assert!(pd.lock().unwrap().received.is_empty());
    server.stop().await.unwrap();

    // `herald render` shows the body PagerDuty gets, without the routing key.
    let event_file = dir.path().join("event.json");
    std::fs::write(
        &event_file,
        event(
            "podinfo",
            "default",
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
            "Normal",
            1_700_000_000_000,
        ),
    )
    .unwrap();
    let policy_file = dir.path().join("oncall.yaml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["render", "--policies"])
        .arg(&policy_file)
        .arg("--event")
        .arg(&event_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        stdout,
        "{\"policy\":\"default/oncall\",\"receiver\":\"pager\",\"type\":\"pagerduty\",\"body\":{\"event_action\":\"resolve\",\"dedup_key\":\"herald//default/podinfo\"}}\n"
    );
}

#[tokio::test]
async fn with_change_events_a_promotion_resolves_then_records_a_change() {
    let (addr, pd) = start_pagerduty(0).await;
    let dir = policies_with(addr, ROUTING_KEY, "        changeEvents: true\n");
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let rollback = "Rolling back podinfo.default failed checks threshold reached 5";
    send(server.addr, "Progressing", rollback, 1_700_000_000_000, 1).await;
    let promoted = "Promotion completed! Scaling down podinfo.default";
    send(server.addr, "Succeeded", promoted, 1_700_000_600_000, 1).await;
    let text = wait_for_metric(server.addr, DELIVERED, 2.0, WAIT).await;
    // The change event follows the resolve: one more attempt, the same notification.
    let deadline = std::time::Instant::now() + WAIT;
    while pd.lock().unwrap().changes.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no change event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await.unwrap();
    assert!(metric(&text, ATTEMPTS) >= 2.0);
    let pd = pd.lock().unwrap();
    assert_eq!(
        pd.received[1],
        format!(
            r#"{{"routing_key":"{ROUTING_KEY}","event_action":"resolve","dedup_key":"herald//default/podinfo"}}"#
        )
    );
    assert_eq!(pd.incidents.get("herald//default/podinfo"), Some(&false));
    assert_eq!(
        pd.changes,
        [format!(
            r#"{{"routing_key":"{ROUTING_KEY}","payload":{{"summary":"podinfo.default: {promoted}","timestamp":"2023-11-14T22:23:20Z","source":"prod-eu","custom_details":{{"phase":"Succeeded","revision":"abc123","message":"{promoted}"}}}}}}"#
        )]
    );
}
