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
