//! Discord, Google Chat, Rocket.Chat and Teams Workflows receivers over real HTTP: `herald
//! serve` in process, and on 127.0.0.1 a stand-in for each service that checks each request
//! the way the service does (method, Content-Type, body shape and size limits) and answers as
//! it does: Discord `204 No Content`, Teams Workflows `202 Accepted`, Google Chat and
//! Rocket.Chat `200` with JSON.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// One request a fake service received, and what it answered.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    status: u16,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Stand-ins for the chat services, told apart by path as the real URLs are:
/// `/api/webhooks/…` Discord, `/v1/spaces/…` Google Chat, `/hooks/…` Rocket.Chat,
/// `/workflows/…` a Teams Workflows (Power Automate) trigger.
#[derive(Clone)]
struct Services {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Services {
    async fn start() -> Services {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(answer).with_state(got.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Services { addr, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got_on(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "got {} of {n} requests: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn answer(State(got): State<Arc<Mutex<Vec<Got>>>>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    let (status, response) = judge(
        &method,
        &path,
        query.as_deref(),
        content_type.as_deref(),
        &body,
    );
    got.lock().unwrap().push(Got {
        method,
        path,
        query,
        content_type,
        body,
        status: status.as_u16(),
    });
    response
}

/// What the service would answer.
fn judge(
    method: &str,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Response) {
    let reject = |status: StatusCode, why: String| (status, (status, why).into_response());
    if method != "POST" {
        return reject(StatusCode::METHOD_NOT_ALLOWED, "POST only".into());
    }
    if content_type.map(|t| t.split(';').next().unwrap_or_default().trim())
        != Some("application/json")
    {
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {content_type:?}"),
        );
    }
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return reject(StatusCode::BAD_REQUEST, "invalid JSON".into());
    };
    if path.starts_with("/api/webhooks/") {
        match discord_problems(&message) {
            None => (
                StatusCode::NO_CONTENT,
                StatusCode::NO_CONTENT.into_response(),
            ),
            Some(why) => reject(
                StatusCode::BAD_REQUEST,
                json!({"code": 50035, "message": "Invalid Form Body", "errors": why}).to_string(),
            ),
        }
    } else if path.starts_with("/v1/spaces/") {
        let keyed = query.is_some_and(|q| q.contains("key=") && q.contains("token="));
        if !keyed {
            reject(StatusCode::UNAUTHORIZED, "missing key/token".into())
        } else if body.len() > 32_000 {
            reject(
                StatusCode::BAD_REQUEST,
                format!("message too large: {} bytes", body.len()),
            )
        } else if message.get("text").is_none() && message.get("cardsV2").is_none() {
            reject(StatusCode::BAD_REQUEST, "empty message".into())
        } else {
            let reply = json!({"name": "spaces/AAA/messages/BBB"}).to_string();
            (
                StatusCode::OK,
                ([("content-type", "application/json")], reply).into_response(),
            )
        }
    } else if path.starts_with("/hooks/") {
        let attachments_ok = message
            .get("attachments")
            .is_none_or(|a| a.as_array().is_some());
        if (message.get("text").is_none() && message.get("attachments").is_none())
            || !attachments_ok
        {
            reject(
                StatusCode::BAD_REQUEST,
                json!({"success": false}).to_string(),
            )
        } else {
            let reply = json!({"success": true}).to_string();
            (
                StatusCode::OK,
                ([("content-type", "application/json")], reply).into_response(),
            )
        }
    } else if path.starts_with("/workflows/") {
        let card = &message["attachments"][0];
        if message["type"] == "message"
            && card["contentType"] == "application/vnd.microsoft.card.adaptive"
            && card["content"]["version"] == "1.4"
        {
            (StatusCode::ACCEPTED, StatusCode::ACCEPTED.into_response())
        } else {
            reject(StatusCode::BAD_REQUEST, "not an Adaptive Card 1.4".into())
        }
    } else {
        reject(StatusCode::NOT_FOUND, "no such hook".into())
    }
}

/// Discord's Execute Webhook checks: content or embeds; per embed title ≤ 256, description
/// ≤ 4096, ≤ 25 fields with a name ≤ 256 and a value ≤ 1024 (neither empty), 6000 in all.
fn discord_problems(message: &Value) -> Option<String> {
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let Some(embeds) = message["embeds"].as_array() else {
        return message
            .get("content")
            .is_none()
            .then(|| "Cannot send an empty message".to_owned());
    };
    if embeds.is_empty() || embeds.len() > 10 {
        return Some(format!("{} embeds", embeds.len()));
    }
    let mut total = 0;
    for embed in embeds {
        for (key, max) in [("title", 256), ("description", 4096)] {
            if let Some(v) = embed.get(key) {
                let n = chars(v);
                if n == 0 || n > max {
                    return Some(format!("{key}: {n} characters"));
                }
                total += n;
            }
        }
        let fields = embed["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            return Some(format!("{} fields", fields.len()));
        }
        for field in &fields {
            let (name, value) = (chars(&field["name"]), chars(&field["value"]));
            if name == 0 || name > 256 || value == 0 || value > 1024 {
                return Some(format!("field {field}"));
            }
            total += name + value;
        }
        if let Some(ts) = embed.get("timestamp") {
            if !ts
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
            {
                return Some(format!("timestamp {ts}"));
            }
        }
        if !embed["color"].is_u64() || embed["color"].as_u64() > Some(0xFFFFFF) {
            return Some(format!("color {}", embed["color"]));
        }
    }
    (total > 6000).then(|| format!("embeds total {total} characters"))
}

fn policies(services: &Services) -> String {
    format!(
        r##"
apiVersion: v1
kind: Secret
metadata: {{name: chat, namespace: default}}
stringData:
  discord: {discord}
  googlechat: "{googlechat}"
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: chat, namespace: default}}
spec:
  canaries: [podinfo]
  receivers:
    - name: discord
      discord: {{secretRef: {{name: chat, key: discord}}, username: herald, avatarUrl: "https://example.com/herald.png"}}
    - name: gchat
      googlechat: {{secretRef: {{name: chat, key: googlechat}}}}
    - name: rocket
      rocketchat: {{url: "{rocket}", channel: "#deploys", username: herald, iconEmoji: ":rocket:"}}
    - name: teams
      msteams: {{url: "{teams}"}}
"##,
        discord = services.url("/api/webhooks/123/discord-token"),
        googlechat = services.url("/v1/spaces/AAA/messages?key=k&token=t"),
        rocket = services.url("/hooks/abc/rocket-token"),
        teams = services.url("/workflows/abc/triggers/manual/paths/invoke"),
    )
}

#[tokio::test]
async fn chat_services_get_exact_bodies_and_their_answers_count_as_delivered() {
    let services = Services::start().await;
    let dir = PolicyDir::new(&[("chat.yaml", &policies(&services))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let promoted = event(
        "podinfo",
        "default",
        "Succeeded",
        "Promotion completed! Scaling down podinfo.default",
        "Normal",
        1_700_000_000_000,
    );
    let failed = event(
        "podinfo",
        "default",
        "Failed",
        "Canary failed! Scaling down podinfo.default",
        "Warning",
        1_700_000_060_000,
    );
    for body in [&promoted, &failed] {
        assert_eq!(
            post_event(server.addr, "/events", body).await,
            (202, json!({"deliveries": 4}))
        );
    }
    services.wait_for(8).await;
    let text = wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="googlechat",outcome="delivered"}"#,
        2.0,
        WAIT,
    )
    .await;
    for kind in ["discord", "googlechat", "rocketchat", "msteams"] {
        // Wait for each: deliveries finish independently.
        let text = wait_for_metric(
            server.addr,
            &format!(r#"herald_deliveries_total{{receiver_type="{kind}",outcome="delivered"}}"#),
            2.0,
            WAIT,
        )
        .await;
        assert_eq!(
            metric(
                &text,
                &format!(r#"herald_deliveries_total{{receiver_type="{kind}",outcome="failed"}}"#)
            ),
            0.0,
            "{kind}"
        );
        assert_eq!(
            metric(
                &text,
                &format!(r#"herald_delivery_attempts_total{{receiver_type="{kind}"}}"#)
            ),
            2.0,
            "{kind}: a 2xx answer is not retried"
        );
    }
    assert!(!text.contains("127.0.0.1"), "no URL in metrics");

    let discord = services.got_on("/api/webhooks/123/discord-token");
    let gchat = services.got_on("/v1/spaces/AAA/messages");
    let rocket = services.got_on("/hooks/abc/rocket-token");
    let teams = services.got_on("/workflows/abc/triggers/manual/paths/invoke");
    for (name, got, status) in [
        ("discord", &discord, 204),
        ("googlechat", &gchat, 200),
        ("rocketchat", &rocket, 200),
        ("teams", &teams, 202),
    ] {
        assert_eq!(got.len(), 2, "{name}");
        for g in got {
            assert_eq!(g.method, "POST", "{name}");
            assert_eq!(
                g.content_type.as_deref(),
                Some("application/json"),
                "{name}"
            );
            assert_eq!(
                g.status,
                status,
                "{name}: {}",
                String::from_utf8_lossy(&g.body)
            );
        }
    }
    // The webhook's own key and token stay; Herald asks Chat to reply in the named thread
    // (by default Chat starts a new thread and ignores the key).
    assert_eq!(
        gchat[0].query.as_deref(),
        Some("key=k&token=t&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
    );

    // In event order, exactly these bodies.
    assert_eq!(
        discord.iter().map(Got::json).collect::<Vec<_>>(),
        [
            json!({
                "username": "herald",
                "avatar_url": "https://example.com/herald.png",
                "embeds": [{
                    "title": "podinfo.default",
                    "description": "Promotion completed! Scaling down podinfo.default",
                    "color": 0x2EB886,
                    "fields": [{"name": "Phase", "value": "Succeeded", "inline": true}],
                    "timestamp": "2023-11-14T22:13:20Z"
                }],
                "allowed_mentions": {"parse": []}
            }),
            json!({
                "username": "herald",
                "avatar_url": "https://example.com/herald.png",
                "embeds": [{
                    "title": "podinfo.default",
                    "description": "Canary failed! Scaling down podinfo.default",
                    "color": 0xFF0000,
                    "fields": [{"name": "Phase", "value": "Failed", "inline": true}],
                    "timestamp": "2023-11-14T22:14:20Z"
                }],
                "allowed_mentions": {"parse": []}
            }),
        ]
    );
    assert_eq!(
        gchat[1].json(),
        json!({
            "fallbackText": "podinfo.default Canary failed! Scaling down podinfo.default",
            // The first event (at 1700000000000 ms) started the canary's thread.
            "thread": {"threadKey": "default/podinfo/1700000000000"},
            "cardsV2": [{
                "cardId": "herald",
                "card": {
                    "header": {"title": "podinfo.default"},
                    "sections": [{"widgets": [
                        {"textParagraph": {"text": "Canary failed! Scaling down podinfo.default"}},
                        {"decoratedText": {"topLabel": "Phase", "text": "<font color=\"#FF0000\">Failed</font>"}}
                    ]}]
                }
            }]
        })
    );
    assert_eq!(
        gchat[0].json()["cardsV2"][0]["card"]["sections"][0]["widgets"][1],
        json!({"decoratedText": {"topLabel": "Phase", "text": "<font color=\"#2EB886\">Succeeded</font>"}})
    );
    assert_eq!(
        rocket.iter().map(Got::json).collect::<Vec<_>>(),
        [
            json!({
                "channel": "#deploys",
                "alias": "herald",
                "emoji": ":rocket:",
                "text": "podinfo.default",
                "attachments": [{
                    "text": "Promotion completed! Scaling down podinfo.default",
                    "color": "#2EB886",
                    "fields": [{"title": "Phase", "value": "Succeeded", "short": true}],
                    "ts": "2023-11-14T22:13:20Z"
                }]
            }),
            json!({
                "channel": "#deploys",
                "alias": "herald",
                "emoji": ":rocket:",
                "text": "podinfo.default",
                "attachments": [{
                    "text": "Canary failed! Scaling down podinfo.default",
                    "color": "#FF0000",
                    "fields": [{"title": "Phase", "value": "Failed", "short": true}],
                    "ts": "2023-11-14T22:14:20Z"
                }]
            }),
        ]
    );
    // A Workflows URL (any host but Office 365's legacy connectors) gets an Adaptive Card.
    assert_eq!(
        teams[1].json(),
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": [
                        {"type": "TextBlock", "text": "podinfo.default", "weight": "Bolder", "size": "Medium", "color": "attention", "wrap": true},
                        {"type": "TextBlock", "text": "Canary failed! Scaling down podinfo.default", "wrap": true},
                        {"type": "FactSet", "facts": [{"title": "Phase", "value": "Failed"}]}
                    ]
                }
            }]
        })
    );
    server.stop().await.unwrap();
}

/// Messages far over Discord's and Google's limits are cut to fit, so the services accept
/// them (they answer 400 otherwise, see below).
#[tokio::test]
async fn long_messages_are_cut_to_what_the_services_accept() {
    let services = Services::start().await;
    let dir = PolicyDir::new(&[("chat.yaml", &policies(&services))]);
    let mut opts = options(dir.path());
    opts.files.cluster = "c".repeat(2_000);
    let server = herald::serve::start(opts).await.unwrap();
    let long = format!("Halt advancement {}", "é\"<".repeat(12_000));
    let body = event(
        "podinfo",
        "default",
        "Progressing",
        &long,
        "Warning",
        1_700_000_000_000,
    );
    assert_eq!(
        post_event(server.addr, "/events", &body).await,
        (202, json!({"deliveries": 4}))
    );
    services.wait_for(4).await;
    for kind in ["discord", "googlechat", "rocketchat", "msteams"] {
        wait_for_metric(
            server.addr,
            &format!(r#"herald_deliveries_total{{receiver_type="{kind}",outcome="delivered"}}"#),
            1.0,
            WAIT,
        )
        .await;
    }
    let discord = &services.got_on("/api/webhooks/123/discord-token")[0];
    assert_eq!(
        discord.status,
        204,
        "{}",
        String::from_utf8_lossy(&discord.body)
    );
    let embed = &discord.json()["embeds"][0];
    let description = embed["description"].as_str().unwrap();
    // Discord's markdown specials from the event are escaped (`<` as `\<`).
    assert!(description.starts_with("Halt advancement é\"\\<"));
    assert!(description.ends_with("… (truncated by Herald)"));
    let gchat = &services.got_on("/v1/spaces/AAA/messages")[0];
    assert_eq!(gchat.status, 200);
    assert!(gchat.body.len() <= 32_000, "{}", gchat.body.len());
    server.stop().await.unwrap();
}

/// The stand-ins do check: a generic webhook posting Flagger's event JSON to a Discord URL is
/// refused (no content, no embeds) and counted as failed without retries.
#[tokio::test]
async fn the_stand_ins_refuse_what_the_services_refuse() {
    let services = Services::start().await;
    let dir = PolicyDir::new(&[(
        "wrong.yaml",
        &webhook_policy("wrong", &services.url("/api/webhooks/123/discord-token")),
    )]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event("podinfo", "default", "Progressing", "x", "Normal", 1);
    post_event(server.addr, "/events", &body).await;
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
    assert_eq!(
        services.got_on("/api/webhooks/123/discord-token")[0].status,
        400
    );
    server.stop().await.unwrap();

    // And the Discord checks themselves.
    assert_eq!(
        discord_problems(&json!({"embeds": [{"title": "t", "color": 1}]})),
        None
    );
    for bad in [
        json!({"embeds": [{"title": "t".repeat(257), "color": 1}]}),
        json!({"embeds": [{"description": "", "color": 1}]}),
        json!({"embeds": [{"fields": [{"name": "Phase", "value": ""}], "color": 1}]}),
        json!({"embeds": [{"description": "d".repeat(4096), "fields": [{"name": "n", "value": "v".repeat(1024)}, {"name": "n", "value": "v".repeat(1024)}], "color": 1}]}),
        json!({"embeds": [{"title": "t", "color": "#FF0000"}]}),
    ] {
        assert!(discord_problems(&bad).is_some(), "{bad}");
    }
}

/// `herald check` names the receiver and field, and never prints the URL.
#[test]
fn check_reports_chat_receivers_by_field_path_without_urls() {
    let dir = PolicyDir::new(&[(
        "chat.yaml",
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: chat, namespace: default}\nspec:\n  receivers:\n    - name: two\n      discord: {url: 'https://discord.com/api/webhooks/1/SECRET-ONE'}\n      googlechat: {url: 'https://chat.googleapis.com/v1/spaces/A/messages?key=SECRET-TWO'}\n    - name: bad-url\n      rocketchat: {url: 'chat.example.com/hooks/SECRET-THREE'}\n",
    )]);
    let file = dir.path().join("chat.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("check")
        .arg("--policies")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let f = file.display();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("error: {f} (document 1) NotificationPolicy default/chat: spec.receivers[0]: {}", herald_api::exactly_one_kind_message()),
            format!("error: {f} (document 1) NotificationPolicy default/chat: spec.receivers[1].rocketchat.url: must be an http:// or https:// URL with a host"),
            "2 problem(s) found".to_owned(),
        ]
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    for secret in ["SECRET-ONE", "SECRET-TWO", "SECRET-THREE"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}"
        );
    }
}
