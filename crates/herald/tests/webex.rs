//! Webex over real HTTP: `herald serve` in process, and on 127.0.0.1 a stand-in for `POST
//! /v1/messages` that checks each request as Webex documents it (`Authorization: Bearer
//! <token>`, else `401`; `Content-Type: application/json`; a `roomId`; `markdown` or `text` of
//! at most 7,439 bytes, else `400`) and answers as Webex does: `200` with the message, `429`
//! with `Retry-After` when asked to.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "ZDI3MGEyYzQtNmFlNS00NDNhLWFlNzAtZGVjNjE0MGU1OGZmZWNmZDEwN2ItYTU3";
const ROOM: &str = "Y2lzY29zcGFyazovL3VzL1JPT00vYmJjZWIxYWQtNDNmMS0zYjU4LTkxNDctZjE0YmIwYzRkMTU0";

#[derive(Default)]
struct Webex {
    received: Vec<(String, Instant)>,
    throttled_at: Vec<Instant>,
    throttle: usize,
}

type Shared = Arc<Mutex<Webex>>;

async fn start_webex(throttle: usize) -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new(Mutex::new(Webex {
        throttle,
        ..Webex::default()
    }));
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

fn error(status: StatusCode, message: &str) -> Response {
    let answer =
        json!({"message": message, "errors": [{"description": message}], "trackingId": "ROUTER_0"});
    (status, axum::Json(answer)).into_response()
}

async fn messages(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut wx = shared.lock().unwrap();
    let bearer = format!("Bearer {TOKEN}");
    if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(bearer.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "The request requires a valid access token set in the Authorization request header.",
        );
    }
    if wx.throttle > 0 {
        wx.throttle -= 1;
        wx.throttled_at.push(Instant::now());
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().unwrap());
        return response;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let Some(message) = serde_json::from_str::<Value>(&body).ok().filter(|_| json) else {
        return error(StatusCode::BAD_REQUEST, "Unable to parse the request body");
    };
    if message["roomId"].as_str().is_none_or(str::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            "roomId, toPersonId or toPersonEmail is required",
        );
    }
    let text = message["markdown"].as_str().or(message["text"].as_str());
    match text.map(str::len) {
        None | Some(0) => {
            return error(
                StatusCode::BAD_REQUEST,
                "text, markdown or files is required",
            )
        }
        Some(n) if n > 7_439 => {
            return error(StatusCode::BAD_REQUEST, "Message length limit exceeded")
        }
        Some(_) => {}
    }
    wx.received.push((body, Instant::now()));
    let answer = json!({"id": format!("message-{}", wx.received.len()), "roomId": message["roomId"], "roomType": "group", "markdown": message["markdown"], "personEmail": "herald@webex.bot", "created": "2023-11-14T22:13:20.000Z"});
    (StatusCode::OK, axum::Json(answer)).into_response()
}

fn policies(addr: SocketAddr, token: &str) -> PolicyDir {
    let policy = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: webex, namespace: default}}
stringData: {{token: "{token}"}}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: room, namespace: default}}
spec:
  receivers:
    - name: deploys
      webex:
        tokenSecretRef: {{name: webex}}
        roomId: {ROOM}
        apiUrl: "http://{addr}"
"#
    );
    PolicyDir::new(&[("room.yaml", &policy)])
}

async fn send(server: SocketAddr, message: &str) {
    let body = event(
        "podinfo",
        "default",
        "Progressing",
        message,
        "Warning",
        1_700_000_000_000,
    );
    assert_eq!(
        post_event(server, "/events", &body).await,
        (202, json!({"deliveries": 1})),
    );
}

const DELIVERED: &str = r#"herald_deliveries_total{receiver_type="webex",outcome="delivered"}"#;
const FAILED: &str = r#"herald_deliveries_total{receiver_type="webex",outcome="failed"}"#;
const ATTEMPTS: &str = r#"herald_delivery_attempts_total{receiver_type="webex"}"#;

#[tokio::test]
async fn markdown_with_values_escaped_cut_to_the_limit_and_a_429_waits() {
    let (addr, wx) = start_webex(1).await;
    let dir = policies(addr, TOKEN);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    send(
        server.addr,
        "Rolling back podinfo.default <@all> **5** failed",
    )
    .await;
    let text = wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 2.0, "one 429, retried once");
    {
        let wx = wx.lock().unwrap();
        assert_eq!(
            wx.received[0].0,
            format!(
                r#"{{"roomId":"{ROOM}","markdown":"**podinfo.default**\n\nRolling back podinfo.default \\<@all\\> \\*\\*5\\*\\* failed\n\n**Phase:** Progressing"}}"#
            )
        );
        let waited = wx.received[0].1 - wx.throttled_at[0];
        assert!(
            waited >= Duration::from_millis(950),
            "Retry-After: {waited:?}"
        );
    }
    // Over Webex's 7,439 bytes: cut, saying so, and accepted.
    let long = format!("Canary failed! {}", "é".repeat(5_000));
    send(server.addr, &long).await;
    wait_for_metric(server.addr, DELIVERED, 2.0, WAIT).await;
    server.stop().await.unwrap();
    let wx = wx.lock().unwrap();
    let body: Value = serde_json::from_str(&wx.received[1].0).unwrap();
    let markdown = body["markdown"].as_str().unwrap();
    assert!(
        markdown.len() <= 7_439 && markdown.len() > 7_400,
        "{}",
        markdown.len()
    );
    assert!(markdown.ends_with("… (truncated by Herald)\n\n**Phase:** Progressing"));
}

#[tokio::test]
async fn a_wrong_token_is_refused_not_retried_and_never_shown() {
    let (addr, wx) = start_webex(0).await;
    let dir = policies(addr, "not-the-bots-token");
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    send(server.addr, "Canary failed! Scaling down podinfo.default").await;
    let text = wait_for_metric(server.addr, FAILED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 1.0);
    assert!(!text.contains("not-the-bots-token"));
    assert!(wx.lock().unwrap().received.is_empty());
    server.stop().await.unwrap();
}
