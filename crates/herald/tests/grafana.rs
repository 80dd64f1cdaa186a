//! Grafana over real HTTP: `herald serve` in process, and on 127.0.0.1 a stand-in for `POST
//! /api/annotations` that checks each request as Grafana documents it (`Authorization: Bearer
//! <service account token>`, else `401`; `Content-Type: application/json`; `time` in epoch
//! milliseconds; `tags` an array of strings; a `text`; `panelId` only with `dashboardUID`) and
//! answers as Grafana does: `200 {"message":"Annotation added","id":N}`, `429` with
//! `Retry-After` when asked to.

mod common;

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
const TOKEN: &str = "glsa_7ZK9s1w2Q3e4R5t6Y7u8I9o0P_1a2b3c4d";

#[derive(Default)]
struct Grafana {
    received: Vec<String>,
    throttle: usize,
}

type Shared = Arc<Mutex<Grafana>>;

async fn start_grafana(throttle: usize) -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new(Mutex::new(Grafana {
        throttle,
        ..Grafana::default()
    }));
    let app = Router::new()
        .route("/api/annotations", post(annotations))
        .route(
            "/api/annotations/{id}",
            axum::routing::patch(patch_annotation),
        )
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

async fn annotations(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut gf = shared.lock().unwrap();
    let bearer = format!("Bearer {TOKEN}");
    if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(bearer.as_bytes()) {
        return answer(StatusCode::UNAUTHORIZED, "invalid API key");
    }
    if gf.throttle > 0 {
        gf.throttle -= 1;
        let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "0".parse().unwrap());
        return response;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let Some(annotation) = serde_json::from_str::<Value>(&body).ok().filter(|_| json) else {
        return answer(StatusCode::BAD_REQUEST, "bad request data");
    };
    let valid = annotation["time"]
        .as_u64()
        .is_some_and(|t| t > 1_000_000_000_000)
        && annotation["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().all(Value::is_string))
        && annotation["text"].as_str().is_some_and(|t| !t.is_empty())
        && (annotation.get("panelId").is_none() || annotation["dashboardUID"].is_string());
    if !valid {
        return answer(StatusCode::BAD_REQUEST, "bad request data");
    }
    gf.received.push(body);
    let id = gf.received.len();
    (
        StatusCode::OK,
        axum::Json(json!({"message": "Annotation added", "id": id})),
    )
        .into_response()
}

/// `PATCH /api/annotations/<id>`, as Grafana takes it: the annotation must exist, `timeEnd`
/// in epoch milliseconds and not before its `time`. Recorded as `PATCH <id> <body>`.
async fn patch_annotation(
    State(shared): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<usize>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut gf = shared.lock().unwrap();
    let bearer = format!("Bearer {TOKEN}");
    if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(bearer.as_bytes()) {
        return answer(StatusCode::UNAUTHORIZED, "invalid API key");
    }
    let Some(original) = id.checked_sub(1).and_then(|i| gf.received.get(i)) else {
        return answer(StatusCode::NOT_FOUND, "Annotation not found");
    };
    let start = serde_json::from_str::<Value>(original).unwrap()["time"].as_u64();
    let patch: Value = serde_json::from_str(&body).unwrap_or_default();
    if patch["timeEnd"]
        .as_u64()
        .is_none_or(|end| Some(end) < start)
    {
        return answer(StatusCode::BAD_REQUEST, "bad request data");
    }
    gf.received.push(format!("PATCH {id} {body}"));
    answer(StatusCode::OK, "Annotation patched")
}

fn policies(addr: SocketAddr, token: &str) -> PolicyDir {
    let policy = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: grafana, namespace: default}}
stringData: {{token: "{token}"}}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: dash, namespace: default}}
spec:
  receivers:
    - name: rollouts
      grafana:
        url: "http://{addr}"
        tokenSecretRef: {{name: grafana}}
        dashboardUid: canaries
        tags: [payments]
"#
    );
    PolicyDir::new(&[("dash.yaml", &policy)])
}

const DELIVERED: &str = r#"herald_deliveries_total{receiver_type="grafana",outcome="delivered"}"#;
const FAILED: &str = r#"herald_deliveries_total{receiver_type="grafana",outcome="failed"}"#;
const ATTEMPTS: &str = r#"herald_delivery_attempts_total{receiver_type="grafana"}"#;

#[tokio::test]
async fn each_event_is_an_annotation_tagged_with_its_canary() {
    let (addr, gf) = start_grafana(1).await;
    let dir = policies(addr, TOKEN);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let message = "Promotion completed! Scaling down podinfo.default <img src=x>";
    let body = event(
        "podinfo",
        "default",
        "Succeeded",
        message,
        "Normal",
        1_700_000_000_000,
    );
    assert_eq!(
        post_event(server.addr, "/events", &body).await,
        (202, json!({"deliveries": 1}))
    );
    let text = wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 2.0, "one 429, retried once");
    server.stop().await.unwrap();
    assert_eq!(
        gf.lock().unwrap().received,
        [
            r#"{"dashboardUID":"canaries","time":1700000000000,"tags":["flagger","podinfo","default","Succeeded","payments"],"text":"podinfo.default: Promotion completed! Scaling down podinfo.default &lt;img src=x&gt;"}"#
        ]
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_not_retried_and_never_shown() {
    let (addr, gf) = start_grafana(0).await;
    let dir = policies(addr, "glsa_not_the_token");
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event(
        "podinfo",
        "default",
        "Failed",
        "Canary failed!",
        "Warning",
        1_700_000_000_000,
    );
    post_event(server.addr, "/events", &body).await;
    let text = wait_for_metric(server.addr, FAILED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 1.0);
    assert!(!text.contains("glsa_not_the_token"));
    assert!(gf.lock().unwrap().received.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_rollout_is_one_region_from_its_new_revision_to_its_outcome_across_a_restart() {
    let (addr, gf) = start_grafana(0).await;
    let dir = policies(addr, TOKEN);
    let state = tempfile::tempdir().unwrap();
    let start = || {
        let mut opts = options(dir.path());
        opts.state_dir = Some(state.path().to_owned());
        herald::serve::start(opts)
    };
    let at = 1_700_000_000_000;
    let server = start().await.unwrap();
    for (phase, message, n) in [
        (
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            0,
        ),
        ("Progressing", "Advance podinfo.default canary weight 10", 1),
    ] {
        let body = event(
            "podinfo",
            "default",
            phase,
            message,
            "Normal",
            at + n * 60_000,
        );
        assert_eq!(post_event(server.addr, "/events", &body).await.0, 202);
    }
    wait_for_metric(server.addr, DELIVERED, 2.0, WAIT).await;
    server.stop().await.unwrap();
    // The region's id is kept in the state directory: the restarted Herald ends it.
    let server = start().await.unwrap();
    let done = event(
        "podinfo",
        "default",
        "Succeeded",
        "Promotion completed! Scaling down podinfo.default",
        "Normal",
        at + 600_000,
    );
    assert_eq!(post_event(server.addr, "/events", &done).await.0, 202);
    wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    server.stop().await.unwrap();
    assert_eq!(
        gf.lock().unwrap().received,
        [
            r#"{"dashboardUID":"canaries","time":1700000000000,"tags":["flagger","podinfo","default","Progressing","payments"],"text":"podinfo.default: New revision detected! Scaling up podinfo.default"}"#,
            r#"{"dashboardUID":"canaries","time":1700000060000,"tags":["flagger","podinfo","default","Progressing","payments"],"text":"podinfo.default: Advance podinfo.default canary weight 10"}"#,
            r#"PATCH 1 {"timeEnd":1700000600000,"text":"podinfo.default: Promotion completed! Scaling down podinfo.default","tags":["flagger","podinfo","default","Succeeded","payments"]}"#,
        ]
    );
}
