//! A local stand-in for Slack's Web API on 127.0.0.1 that answers like Slack: HTTP 200 with
//! `ok`, `channel` and `ts`, or `ok:false` with an error code; `429` with `Retry-After` when
//! told to rate-limit.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bot token the stand-in accepts.
pub const TOKEN: &str = "xoxb-test-token";
/// The channel ID it answers with.
pub const CHANNEL_ID: &str = "C0123ABCD";
const WAIT: Duration = Duration::from_secs(20);

/// One Web API call the stand-in received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct SlackState {
    calls: Vec<Call>,
    next_ts: u64,
    /// This many next calls are rate-limited (429, `Retry-After: 1`), as Slack does per token.
    rate_limited: u32,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<SlackState>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(SlackState::default()));
        let app = Router::new()
            .route("/api/{method}", post(web_api))
            .route("/api/usergroups.users.list", axum::routing::get(user_group))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSlack { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn rate_limit_next(&self, calls: u32) {
        self.state.lock().unwrap().rate_limited = calls;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Call> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let calls = self.calls();
            if calls.len() >= n {
                return calls;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "got {} of {n} calls: {calls:#?}",
                calls.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The one user group the stand-in knows, and its member.
pub const USER_GROUP: &str = "S0GATEKEEP";
pub const GROUP_MEMBER: &str = "U3CAROL";

/// `usergroups.users.list`, as Slack answers it (a GET with the bot token).
async fn user_group(
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    match query.get("usergroup").map(String::as_str) {
        Some(USER_GROUP) => Json(json!({"ok": true, "users": [GROUP_MEMBER]})),
        _ => Json(json!({"ok": false, "error": "no_such_subteam"})),
    }
}

/// Answers as Slack does: the token and channel are checked, `ts` identifies a message,
/// `chat.update` needs the channel ID and the `ts` of a message it posted.
async fn web_api(
    State(state): State<Arc<Mutex<SlackState>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut state = state.lock().unwrap();
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    state.calls.push(Call {
        method: method.clone(),
        body: parsed.clone(),
        at: std::time::Instant::now(),
    });
    if state.rate_limited > 0 {
        state.rate_limited -= 1;
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    answer(&mut state, &method, &headers, &parsed).into_response()
}

fn answer(
    state: &mut SlackState,
    method: &str,
    headers: &HeaderMap,
    parsed: &Value,
) -> Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("authorization") != format!("Bearer {TOKEN}") {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    if header("content-type") != "application/json; charset=utf-8" {
        return Json(json!({"ok": false, "error": "invalid_arguments"}));
    }
    let channel = parsed["channel"].as_str().unwrap_or_default();
    match method {
        "chat.postMessage" => {
            if channel != "#deploys" && channel != "#alerts" {
                return Json(json!({"ok": false, "error": "channel_not_found"}));
            }
            state.next_ts += 1;
            let ts = format!("1700000000.{:06}", state.next_ts);
            Json(json!({"ok": true, "channel": CHANNEL_ID, "ts": ts, "message": {}}))
        }
        "chat.update" => {
            let ts = parsed["ts"].as_str().unwrap_or_default();
            let known = state
                .calls
                .iter()
                .filter(|c| c.method == "chat.postMessage")
                .count() as u64;
            let ts_known = (1..=known).any(|n| ts == format!("1700000000.{n:06}"));
            if channel != CHANNEL_ID || !ts_known {
                return Json(json!({"ok": false, "error": "message_not_found"}));
            }
            Json(json!({"ok": true, "channel": CHANNEL_ID, "ts": ts}))
        }
        _ => Json(json!({"ok": false, "error": "unknown_method"})),
    }
}
