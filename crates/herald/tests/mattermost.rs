//! Mattermost over real HTTP: `herald serve` in process, and on 127.0.0.1 a stand-in for a
//! Mattermost server's incoming webhooks that checks each request as Mattermost documents it
//! (`POST /hooks/<key>`, `Content-Type: application/json`, `text` or `attachments`, each
//! attachment with a `fallback` and a hex `color`, an emoji name without colons, at most
//! 16,383 characters of text) and answers as Mattermost does: `200` with `ok` in plain text,
//! `400` with its JSON error otherwise.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// What the stand-in received: the hook key and the body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

async fn start_mattermost() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/hooks/{key}", post(incoming_webhook))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

async fn incoming_webhook(
    State(received): State<Received>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let parsed = serde_json::from_slice::<Value>(&body).ok().filter(|_| json);
    let problem = match &parsed {
        None => Some("Unable to parse incoming data.".to_owned()),
        Some(post) => post_problem(post),
    };
    if let Some(problem) = problem {
        let error = json!({
            "id": "web.incoming_webhook.invalid.app_error",
            "message": problem,
            "detailed_error": "",
            "status_code": 400
        });
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    received.lock().unwrap().push((key, parsed.unwrap()));
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

/// What Mattermost refuses in an incoming-webhook post.
fn post_problem(post: &Value) -> Option<String> {
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let attachments = post.get("attachments").and_then(Value::as_array);
    if chars(&post["text"]) == 0 && attachments.is_none_or(|a| a.is_empty()) {
        return Some("Invalid text or attachments".into());
    }
    if let Some(emoji) = post.get("icon_emoji").and_then(Value::as_str) {
        if emoji.contains(':') {
            return Some(format!("icon_emoji {emoji:?} is not an emoji name"));
        }
    }
    for attachment in attachments.into_iter().flatten() {
        if chars(&attachment["fallback"]) == 0 {
            return Some("an attachment needs a fallback".into());
        }
        let color = attachment["color"].as_str().unwrap_or("");
        let hex = color.len() == 7
            && color.starts_with('#')
            && color[1..].chars().all(|c| c.is_ascii_hexdigit());
        if !hex {
            return Some(format!("color {color:?} is not a hex code"));
        }
        if chars(&attachment["text"]) > 16_383 {
            return Some("attachment text longer than 16383 characters".into());
        }
        for field in attachment["fields"].as_array().into_iter().flatten() {
            if !field["short"].is_boolean() || !field["title"].is_string() {
                return Some(format!("invalid field {field}"));
            }
        }
    }
    None
}

fn policy(addr: SocketAddr, emoji: &str) -> String {
    format!(
        r#"apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: chat, namespace: default}}
spec:
  receivers:
    - name: team
      mattermost:
        url: "http://{addr}/hooks/xyz-generatedkey"
        channel: deploys
        username: herald
        iconEmoji: "{emoji}"
"#
    )
}

#[tokio::test]
async fn mattermost_gets_its_own_body_and_its_ok_counts_as_delivered() {
    let (addr, received) = start_mattermost().await;
    let dir = PolicyDir::new(&[("chat.yaml", &policy(addr, "rocket"))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let long = "Rolling back podinfo.default failed checks threshold reached 5 ".repeat(300);
    for (phase, message, event_type) in [
        (
            "Failed",
            "Canary failed! Scaling down podinfo.default",
            "Warning",
        ),
        ("Progressing", long.as_str(), "Warning"),
    ] {
        let body = event(
            "podinfo",
            "default",
            phase,
            message,
            event_type,
            1_700_000_000_000,
        );
        assert_eq!(
            post_event(server.addr, "/events", &body).await,
            (202, json!({"deliveries": 1}))
        );
    }
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="mattermost",outcome="delivered"}"#,
        2.0,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="mattermost"}"#
        ),
        2.0,
        "Mattermost's `ok` is a success: nothing is sent twice"
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "xyz-generatedkey");
    assert_eq!(
        got[0].1,
        json!({
            "channel": "deploys",
            "username": "herald",
            "icon_emoji": "rocket",
            "attachments": [{
                "fallback": "podinfo.default Canary failed! Scaling down podinfo.default",
                "color": "#FF0000",
                "title": "podinfo.default",
                "text": "Canary failed! Scaling down podinfo.default",
                "fields": [{"short": true, "title": "Phase", "value": "Failed"}],
                "footer": "2023-11-14T22:13:20Z"
            }]
        })
    );
    // The long message arrives cut to Mattermost's limit, saying so.
    let cut = got[1].1["attachments"][0]["text"].as_str().unwrap();
    assert!(cut.ends_with("… (truncated by Herald)"), "{cut}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn check_refuses_what_mattermost_would_and_the_stand_in_refuses_slack_colours() {
    // Colons around the emoji: Mattermost wants the name alone, and `herald check` says so.
    let (addr, received) = start_mattermost().await;
    let dir = PolicyDir::new(&[("chat.yaml", &policy(addr, ":rocket:"))]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check", "--policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        format!("{stdout}{stderr}").contains(
            r#"spec.receivers[0].mattermost.iconEmoji: Mattermost takes the emoji's name without colons: "rocket""#
        ),
        "{stdout}{stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("xyz-generatedkey"));

    // The stand-in checks what Mattermost checks: Slack's named colours are refused.
    let client = reqwest::Client::new();
    let refused = client
        .post(format!("http://{addr}/hooks/k"))
        .header("content-type", "application/json")
        .body(r#"{"attachments":[{"fallback":"x","color":"good"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn event_text_cannot_mention_or_link_in_mattermost() {
    let (addr, received) = start_mattermost().await;
    let dir = PolicyDir::new(&[("chat.yaml", &policy(addr, "rocket"))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event(
        "podinfo",
        "default",
        "Progressing",
        "@channel @all [approve](http://evil.example) <b>*x*</b>",
        "Warning",
        1_700_000_000_000,
    );
    assert_eq!(
        post_event(server.addr, "/events", &body).await,
        (202, json!({"deliveries": 1}))
    );
    wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="mattermost",outcome="delivered"}"#,
        1.0,
        WAIT,
    )
    .await;
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got[0].1["attachments"][0]["text"],
        "@\u{200B}channel @\u{200B}all \\[approve\\]\\(http://evil.example\\) \\<b\\>\\*x\\*\\</b\\>"
    );
    server.stop().await.unwrap();
}
