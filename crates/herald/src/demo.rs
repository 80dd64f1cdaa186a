//! `herald demo`: the real server, a local capture endpoint standing in for Slack, Teams,
//! Discord, Google Chat, Rocket.Chat and a webhook, and the example rollouts played through
//! real HTTP. Prints what each receiver got.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::commands::read_events;
use crate::delivery::DeliveryConfig;
use crate::policy_files::PolicyFiles;
use crate::serve::{self, ServeOptions};
use crate::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/example_policies.rs"));
const ROLLOUT: &str = include_str!("../../../examples/events/rollout.jsonl");
const ROLLBACK: &str = include_str!("../../../examples/events/rollback.jsonl");
const PAYMENTS: &str = include_str!("../../../examples/events/payments-rollback.jsonl");

type Captured = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Records every request; answers like the real services (Teams Workflows: 202, Discord: 204,
/// Slack's Web API: `ok` with the posted message's channel and `ts`).
async fn capture(State(captured): State<Captured>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let request_line = format!("{} {path}", request.method());
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let count = {
        let mut captured = captured.lock().expect("capture lock");
        captured.push((request_line, body.to_vec()));
        captured.len()
    };
    if path.starts_with("/teams/oncall") {
        StatusCode::ACCEPTED.into_response()
    } else if path.starts_with("/discord/") {
        StatusCode::NO_CONTENT.into_response()
    } else if path.starts_with("/slack-api/") {
        axum::Json(serde_json::json!({
            "ok": true, "channel": "C0123ABCD", "ts": format!("1764079200.{count:06}")
        }))
        .into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

pub async fn run(capture_port: u16, policies: Vec<PathBuf>) -> Result<ExitCode> {
    let captured: Captured = Arc::default();
    let capture_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, capture_port));
    let listener = tokio::net::TcpListener::bind(capture_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: capture_addr.to_string(),
            source,
        })?;
    let app = Router::new().fallback(capture).with_state(captured.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let policy_paths = if policies.is_empty() {
        vec![write_examples()?]
    } else {
        policies
    };
    let running = serve::start(ServeOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        files: PolicyFiles {
            paths: policy_paths,
            cluster: "demo".to_owned(),
            namespace: "default".to_owned(),
        },
        delivery: DeliveryConfig {
            max_attempts: 3,
            timeout: Duration::from_secs(5),
            ..DeliveryConfig::default()
        },
        body_limit: crate::api::DEFAULT_BODY_LIMIT,
        http: Default::default(),
        state_file: None,
        state_dir: None,
        drain_timeout: Duration::from_secs(15),
        reload_interval: Duration::from_secs(3600),
        gates: Default::default(),
    })
    .await?;
    println!(
        "Herald is serving on http://{} with the example policies (cluster \"demo\").",
        running.addr
    );
    println!("A capture server on http://{capture_addr} stands in for Slack (webhooks and the Web API), Teams, Discord, Google Chat, Rocket.Chat and two webhooks.\n");

    let client = reqwest::Client::new();
    let events_url = format!("http://{}/events", running.addr);
    for (title, text) in [
        ("A successful rollout", ROLLOUT),
        ("A rollout that fails and rolls back", ROLLBACK),
        (
            "Another team's rollout fails: one Slack thread (bot), a signed tracker, on-call",
            PAYMENTS,
        ),
    ] {
        println!("== {title}: Flagger POSTs each event to {events_url}");
        for event in read_events(title, text)? {
            let answer = client
                .post(&events_url)
                .header("content-type", "application/json")
                .body(event.to_json())
                .send()
                .await
                .map_err(|e| Error::Demo(format!("posting an event failed: {e}")))?;
            let status = answer.status().as_u16();
            let reply = answer.text().await.unwrap_or_default();
            println!(
                "  {:<11} {:<90} -> {status} {reply}",
                event.phase,
                event.message()
            );
        }
        println!();
    }
    running.stop().await?;

    let captured = captured.lock().expect("capture lock").clone();
    let mut paths: Vec<&String> = captured.iter().map(|(path, _)| path).collect();
    paths.sort();
    paths.dedup();
    println!(
        "== What each receiver got ({} notifications)",
        captured.len()
    );
    for path in paths {
        let bodies: Vec<&Vec<u8>> = captured
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body)
            .collect();
        println!("\n-- {path}: {} message(s)", bodies.len());
        for body in bodies {
            // On one line each, for reading; receivers got the bytes as rendered.
            println!(
                "   {}",
                String::from_utf8_lossy(body)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    println!("\nTry your own policy: herald render --policies examples/policies --event examples/events/new-revision.json");
    Ok(ExitCode::SUCCESS)
}

/// Writes the built-in example policies to a fresh temporary directory.
fn write_examples() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("herald-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Read {
        path: dir.clone(),
        source,
    })?;
    for (name, text) in EXAMPLE_POLICIES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Read { path, source })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    /// The demo plays every example policy file, so the README's promise holds.
    #[test]
    fn demo_embeds_every_example_policy() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = super::EXAMPLE_POLICIES
            .iter()
            .map(|(name, text)| {
                let path = dir.join(name);
                assert_eq!(
                    std::fs::read_to_string(&path).unwrap(),
                    *text,
                    "{}",
                    path.display()
                );
                (*name).to_owned()
            })
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}
