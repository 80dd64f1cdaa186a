//! Telegram over real HTTP: `herald serve` in process, and on 127.0.0.1 a stand-in for the
//! Bot API that checks each request as Telegram documents `sendMessage` (`POST
//! /bot<token>/sendMessage`, the token a known bot's, `Content-Type: application/json`,
//! `chat_id` a number or `@username`, `text` of 1 to 4,096 characters after its HTML entities
//! are parsed, `parse_mode: "HTML"` whose text holds only the tags and entities Telegram
//! parses) and answers as Telegram does: `200 {"ok":true,"result":{...}}`, `401
//! Unauthorized` for another token, `400` for a text it cannot parse, and `429` with
//! `parameters.retry_after` (and no `Retry-After` header) when asked to.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

#[derive(Default)]
struct Bot {
    /// Every accepted message's exact bytes, and when it came.
    received: Vec<(String, Instant)>,
    /// When each `429` was answered.
    throttled_at: Vec<Instant>,
    /// Answer this many requests `429` first.
    throttle: usize,
}

type Shared = Arc<Mutex<Bot>>;

async fn start_telegram(throttle: usize) -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new(Mutex::new(Bot {
        throttle,
        ..Bot::default()
    }));
    let app = Router::new()
        .route("/{bot}/sendMessage", post(send_message))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

fn error(status: StatusCode, description: &str) -> Response {
    let answer = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    (status, axum::Json(answer)).into_response()
}

async fn send_message(
    State(shared): State<Shared>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut tg = shared.lock().unwrap();
    if bot.strip_prefix("bot") != Some(TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if tg.throttle > 0 {
        tg.throttle -= 1;
        tg.throttled_at.push(Instant::now());
        let answer = json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}});
        return (StatusCode::TOO_MANY_REQUESTS, axum::Json(answer)).into_response();
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let Some(message) = serde_json::from_str::<Value>(&body).ok().filter(|_| json) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
        );
    };
    if let Some(problem) = message_problem(&message) {
        return error(StatusCode::BAD_REQUEST, &problem);
    }
    tg.received.push((body, Instant::now()));
    let answer = json!({"ok": true, "result": {"message_id": tg.received.len(), "chat": {"id": message["chat_id"]}, "date": 1_700_000_000, "text": "..."}});
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// What `sendMessage` refuses.
fn message_problem(message: &Value) -> Option<String> {
    let chat = &message["chat_id"];
    if !(chat.is_i64() || chat.as_str().is_some_and(|s| s.starts_with('@'))) {
        return Some("Bad Request: chat not found".into());
    }
    if message["parse_mode"] != "HTML" {
        return Some("Bad Request: unsupported parse_mode".into());
    }
    let text = message["text"].as_str().unwrap_or("");
    let Some(parsed) = parse_html(text) else {
        return Some("Bad Request: can't parse entities".into());
    };
    match parsed.chars().map(char::len_utf16).sum::<usize>() {
        0 => Some("Bad Request: message text is empty".into()),
        1..=4096 => None,
        _ => Some("Bad Request: message is too long".into()),
    }
}

/// The text Telegram shows for `html`, or `None` (a refusal) when Herald sent a tag or an
/// entity Telegram does not parse. Only the tags Herald writes (`<b>`) are taken.
fn parse_html(html: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let known = ["<b>", "</b>", "&lt;", "&gt;", "&amp;", "&quot;"];
        let token = known.iter().find(|t| rest.starts_with(**t))?;
        out.push_str(match *token {
            "&lt;" => "<",
            "&gt;" => ">",
            "&amp;" => "&",
            "&quot;" => "\"",
            _ => "",
        });
        rest = &rest[token.len()..];
    }
    out.push_str(rest);
    Some(out)
}

fn policies(addr: SocketAddr, token: &str, chat: &str) -> PolicyDir {
    let policy = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: telegram, namespace: default}}
stringData: {{token: "{token}"}}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: chat, namespace: default}}
spec:
  receivers:
    - name: releases
      telegram:
        tokenSecretRef: {{name: telegram}}
        chatId: "{chat}"
        apiUrl: "http://{addr}"
"#
    );
    PolicyDir::new(&[("chat.yaml", &policy)])
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

const DELIVERED: &str = r#"herald_deliveries_total{receiver_type="telegram",outcome="delivered"}"#;
const FAILED: &str = r#"herald_deliveries_total{receiver_type="telegram",outcome="failed"}"#;
const ATTEMPTS: &str = r#"herald_delivery_attempts_total{receiver_type="telegram"}"#;

#[tokio::test]
async fn messages_are_html_with_values_escaped_and_a_429_waits_retry_after() {
    let (addr, tg) = start_telegram(1).await;
    let dir = policies(addr, TOKEN, "-1001234567890");
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let message = "Rolling back podinfo.default: <b>5</b> failed checks & \"@here\"";
    send(server.addr, message).await;
    let text = wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 2.0, "one 429, retried once");
    assert!(!text.contains(TOKEN.split(':').nth(1).unwrap()));
    {
        let tg = tg.lock().unwrap();
        assert_eq!(
            tg.received[0].0,
            r#"{"chat_id":-1001234567890,"text":"<b>podinfo.default</b>\nRolling back podinfo.default: &lt;b&gt;5&lt;/b&gt; failed checks &amp; &quot;@here&quot;\n\n<b>Phase:</b> Progressing","parse_mode":"HTML"}"#
        );
        // Telegram's `retry_after` (1 s) was waited, not the 10 to 50 ms backoff.
        let waited = tg.received[0].1 - tg.throttled_at[0];
        assert!(waited >= Duration::from_millis(950), "{waited:?}");
    }

    // A long message is cut to Telegram's 4,096, where the stand-in still parses it.
    let long = format!("Canary failed! {}", "<&>".repeat(3_000));
    send(server.addr, &long).await;
    wait_for_metric(server.addr, DELIVERED, 2.0, WAIT).await;
    server.stop().await.unwrap();
    let tg = tg.lock().unwrap();
    let body: Value = serde_json::from_str(&tg.received[1].0).unwrap();
    let shown = parse_html(body["text"].as_str().unwrap()).unwrap();
    assert!(
        shown.ends_with("… (truncated by Herald)\n\nPhase: Progressing"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_refused_message_is_not_retried_and_the_token_never_shows() {
    let (addr, tg) = start_telegram(0).await;
    // A token of another bot: 401, not retried.
    let other = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDother";
    let dir = policies(addr, other, "@releases");
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    send(server.addr, "Canary failed! Scaling down podinfo.default").await;
    let text = wait_for_metric(server.addr, FAILED, 1.0, WAIT).await;
    assert_eq!(metric(&text, ATTEMPTS), 1.0);
    assert!(!text.contains("DALDother"));
    assert!(tg.lock().unwrap().received.is_empty());
    server.stop().await.unwrap();

    // `herald render` shows the body, never the URL that holds the token.
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
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["render", "--policies"])
        .arg(dir.path().join("chat.yaml"))
        .arg("--event")
        .arg(&event_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("DALDother") && !stderr.contains("DALDother"));
    assert_eq!(
        stdout,
        "{\"policy\":\"default/chat\",\"receiver\":\"releases\",\"type\":\"telegram\",\"body\":{\"chat_id\":\"@releases\",\"text\":\"<b>podinfo.default</b>\\nPromotion completed! Scaling down podinfo.default\\n\\n<b>Phase:</b> Succeeded\",\"parse_mode\":\"HTML\"}}\n"
    );
}
