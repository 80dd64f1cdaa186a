//! The outcome Herald counts for a receiver slower than `--delivery-timeout`: each attempt
//! reached the receiver (which processed it and answered too late), so the last one timing out
//! is `outcome="timeout"`, not `failed`; one that timed out and then got a `500` is `failed`,
//! and one answered in time on a retry is `delivered`, the earlier attempts being duplicates.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::*;

/// How a receiver answers one request: after a delay, with a status.
type Answer = (Duration, u16);

#[derive(Default)]
struct Receivers {
    /// Per path, the bodies in arrival order (recorded on arrival: the receiver has the
    /// message even when Herald stops waiting for the answer).
    seen: Mutex<HashMap<String, Vec<String>>>,
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
}

async fn receive(State(receivers): State<Arc<Receivers>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    receivers
        .seen
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push(String::from_utf8(body.to_vec()).unwrap());
    let (delay, status) = receivers
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or((Duration::ZERO, 200));
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap().into_response()
}

fn policy(name: &str, url: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  receivers:\n    - name: hook\n      webhook:\n        url: {url}\n        body: '{{\"text\": {{{{json message}}}}}}'\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_is_counted_timeout_not_failed() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let slow = (Duration::from_millis(600), 200);
    let receivers = Arc::new(Receivers::default());
    receivers.script.lock().unwrap().extend([
        ("/slow".to_owned(), VecDeque::from([slow, slow, slow])),
        (
            "/late-error".to_owned(),
            VecDeque::from([slow, slow, (Duration::ZERO, 500)]),
        ),
        (
            "/catches-up".to_owned(),
            VecDeque::from([slow, slow, (Duration::ZERO, 200)]),
        ),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .fallback(receive)
        .with_state(receivers.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let policies = ["slow", "late-error", "catches-up"]
        .map(|name| policy(name, &format!("{base}/{name}")))
        .join("---\n");
    let dir = PolicyDir::new(&[("p.yaml", &policies)]);
    let mut opts = options(dir.path());
    opts.delivery.timeout = TIMEOUT;
    opts.delivery.max_attempts = 3;
    let server = herald::serve::start(opts).await.unwrap();

    let body = event(
        "podinfo",
        "default",
        "Progressing",
        "Advance podinfo.default canary weight 10",
        "Normal",
        1,
    );
    assert_eq!(post_event(server.addr, "/events", &body).await.0, 202);
    let text = wait_for_metric(
        server.addr,
        r#"herald_delivery_duration_seconds_count{receiver_type="webhook"}"#,
        3.0,
        WAIT,
    )
    .await;

    // Every attempt reached its receiver, byte for byte the same message.
    let sent = r#"{"text":"Advance podinfo.default canary weight 10"}"#;
    let seen = receivers.seen.lock().unwrap().clone();
    for path in ["/slow", "/late-error", "/catches-up"] {
        assert_eq!(seen[path], [sent, sent, sent], "{path}");
    }
    let outcome = |outcome: &str| {
        metric(
            &text,
            &format!(r#"herald_deliveries_total{{receiver_type="webhook",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(
        outcome("timeout"),
        1.0,
        "/slow: the last attempt timed out\n{text}"
    );
    assert_eq!(
        outcome("failed"),
        1.0,
        "/late-error: the last attempt got a 500\n{text}"
    );
    assert_eq!(
        outcome("delivered"),
        1.0,
        "/catches-up: answered in time on the third\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_delivery_attempts_total{receiver_type="webhook"}"#
        ),
        9.0,
        "{text}"
    );
    server.stop().await.unwrap();
}

const WAIT: Duration = Duration::from_secs(20);
