//! Opsgenie over real HTTP: `herald serve` in process, and on 127.0.0.1 a stand-in for the
//! Alert API v2 that checks requests as Opsgenie documents them (`Authorization: GenieKey
//! <key>`, else `401`; `POST /v2/alerts` with a `message` of at most 130 characters, an
//! `alias` of at most 512, a priority `P1`..`P5`; `POST /v2/alerts/<alias>/close` with
//! `identifierType=alias`, and no encoded slash in the path, which servlet containers refuse
//! by default) and answers as Opsgenie does: `202` with a `requestId`, `429` when
//! asked to. It keeps alerts as Opsgenie does: a create whose alias has an open alert adds to
//! its count instead of opening another; a close closes it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "eb243592-faa2-4ba2-a551-1afdf565c889";

#[derive(Default)]
struct Opsgenie {
    /// Each accepted request: its path and exact body.
    received: Vec<(String, String)>,
    /// Alerts by alias: (open, count).
    alerts: BTreeMap<String, (bool, u32)>,
    created: usize,
    throttle: usize,
}

type Shared = Arc<Mutex<Opsgenie>>;

async fn start_opsgenie(throttle: usize) -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new(Mutex::new(Opsgenie {
        throttle,
        ..Opsgenie::default()
    }));
    let app = Router::new()
        .route("/v2/alerts", post(create))
        .route("/v2/alerts/{alias}/close", post(close))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

fn accepted() -> Response {
    let answer = json!({"result": "Request will be processed", "took": 0.002, "requestId": "43a29c5c-3dbf-4fa4-9c26-f4f71023e120"});
    (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
}

/// What every request must carry; the answer when it does not.
fn refuse(og: &mut Opsgenie, headers: &HeaderMap, body: &str) -> Option<Response> {
    if og.throttle > 0 {
        og.throttle -= 1;
        let answer =
            json!({"message": "You are making too many requests!", "took": 0.0, "requestId": "r"});
        return Some((StatusCode::TOO_MANY_REQUESTS, axum::Json(answer)).into_response());
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("GenieKey {KEY}")) {
        let answer = json!({"message": "Could not authenticate", "took": 0.0, "requestId": "r"});
        return Some((StatusCode::UNAUTHORIZED, axum::Json(answer)).into_response());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json || serde_json::from_str::<Value>(body).is_err() {
        let answer = json!({"message": "Unsupported Media Type", "took": 0.0, "requestId": "r"});
        return Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, axum::Json(answer)).into_response());
    }
    None
}

fn invalid(problem: &str) -> Response {
    let answer = json!({"message": "Request body is not processable. Please check the errors.", "errors": {"field": problem}, "took": 0.0, "requestId": "r"});
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(answer)).into_response()
}

async fn create(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut og = shared.lock().unwrap();
    if let Some(refused) = refuse(&mut og, &headers, &body) {
        return refused;
    }
    let alert: Value = serde_json::from_str(&body).unwrap();
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count());
    if !matches!(chars(&alert["message"]), Some(1..=130)) {
        return invalid("message must be 1 to 130 characters");
    }
    if !matches!(chars(&alert["alias"]), Some(1..=512)) {
        return invalid("alias must be at most 512 characters");
    }
    if !["P1", "P2", "P3", "P4", "P5"].contains(&alert["priority"].as_str().unwrap_or("P3")) {
        return invalid("priority must be P1..P5");
    }
    let alias = alert["alias"].as_str().unwrap().to_owned();
    let entry = og.alerts.entry(alias).or_insert((false, 0));
    let opened = !entry.0;
    *entry = (true, if opened { 1 } else { entry.1 + 1 });
    if opened {
        og.created += 1;
    }
    og.received.push(("/v2/alerts".into(), body));
    accepted()
}

async fn close(
    State(shared): State<Shared>,
    Path(alias): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut og = shared.lock().unwrap();
    if let Some(refused) = refuse(&mut og, &headers, &body) {
        return refused;
    }
    // As a servlet container refuses it by default (Tomcat's ALLOW_ENCODED_SLASH=false).
    if uri.path().to_ascii_lowercase().contains("%2f") {
        return invalid("an encoded slash in the path");
    }
    if query.get("identifierType").map(String::as_str) != Some("alias") {
        return invalid("identifierType must be alias for an alias");
    }
    if let Some(alert) = og.alerts.get_mut(&alias) {
        alert.0 = false;
    }
    og.received
        .push((format!("/v2/alerts/{alias}/close"), body));
    accepted()
}

fn policies(addr: SocketAddr) -> PolicyDir {
    let policy = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: opsgenie, namespace: default}}
stringData: {{apiKey: {KEY}}}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: oncall, namespace: default}}
spec:
  receivers:
    - name: genie
      opsgenie:
        apiKeySecretRef: {{name: opsgenie}}
        apiUrl: "http://{addr}"
        tags: [payments]
"#
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

const DELIVERED: &str = r#"herald_deliveries_total{receiver_type="opsgenie",outcome="delivered"}"#;
const ATTEMPTS: &str = r#"herald_delivery_attempts_total{receiver_type="opsgenie"}"#;

#[tokio::test]
async fn a_rollback_opens_one_alert_and_the_promotion_after_a_restart_closes_it() {
    let (addr, og) = start_opsgenie(1).await;
    let dir = policies(addr);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let rollback = "Rolling back podinfo.default failed checks threshold reached 5";
    send(server.addr, "Progressing", rollback, 1_700_000_000_000, 1).await;
    wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    send(
        server.addr,
        "Failed",
        "Canary failed! Scaling down podinfo.default",
        1_700_000_060_000,
        1,
    )
    .await;
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
    assert!(!text.contains(KEY));
    server.stop().await.unwrap();
    {
        let og = og.lock().unwrap();
        assert_eq!(og.created, 1, "the second failure adds to the open alert");
        assert_eq!(og.alerts.get("herald::default:podinfo"), Some(&(true, 2)));
        assert_eq!(
            og.received[0],
            (
                "/v2/alerts".to_owned(),
                format!(
                    r#"{{"message":"podinfo.default","alias":"herald::default:podinfo","description":"{rollback}","tags":["herald","default","payments"],"details":{{"canary":"podinfo","namespace":"default","phase":"Progressing","revision":"abc123"}},"entity":"podinfo.default","source":"herald","priority":"P1"}}"#
                )
            )
        );
    }

    // A new Herald closes the alert by the canary's alias, remembering nothing.
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
    let og = og.lock().unwrap();
    assert_eq!(
        og.received[2],
        (
            "/v2/alerts/herald::default:podinfo/close".to_owned(),
            r#"{"source":"herald","user":"herald","note":"Promotion completed! Scaling down podinfo.default"}"#.to_owned()
        )
    );
    assert_eq!(
        og.alerts.get("herald::default:podinfo"),
        Some(&(false, 2)),
        "closed"
    );
    assert_eq!(og.created, 1);
}
