//! The controller's durable queue for events received over HTTP (`--state-dir`), with the
//! real binary against a real kube-apiserver (v1.20; `tests/e2e/run.sh` runs it with
//! `--ignored`): Herald killed with `kill -9` while every notification of the events it
//! answered 202 is still queued (the receiver answers 500 until then), and restarted on the
//! same directory. Every event answered 202 is delivered exactly once, in order per canary,
//! and a stored webhook report is paired with its Kubernetes Event re-listed after the restart:
//! the action is sent once, not once per source.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use herald_api::NotificationPolicy;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

const CANARIES: usize = 5;
const EVENTS: usize = 300;

/// Starts `herald controller` (one replica, no lease) and waits for its address.
fn start_herald(herald_ns: &str, state: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--log-format",
            "json",
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--namespace",
            herald_ns,
            "--identity",
            "e2e-durable",
            "--max-attempts",
            "1000",
            "--min-backoff",
            "10ms",
            "--max-backoff",
            "100ms",
            "--drain-timeout",
            "2s",
        ])
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                if json["message"] == "herald controller started" {
                    let _ = tx.send(json["addr"].as_str().unwrap().to_owned());
                }
            }
            eprintln!("herald: {line}");
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("herald logs that it started")
        .parse()
        .unwrap();
    (child, addr)
}

/// `<<canary:n>>` in a message the sink got.
fn marker(text: &str) -> Option<(String, usize)> {
    let start = text.find("<<")? + 2;
    let end = start + text[start..].find(">>")?;
    let (canary, n) = text[start..end].split_once(':')?;
    Some((canary.to_owned(), n.parse().ok()?))
}

fn message(ns: &str, n: usize) -> (String, String) {
    let canary = format!("c{}", n % CANARIES);
    let text = format!("<<{canary}:{n}>> Advance {canary}.{ns} canary weight {n}");
    (canary, text)
}

/// POSTs event `n` until it is answered 202 (503s, while Herald starts, wait a little).
async fn post_until_accepted(addr: SocketAddr, ns: &str, n: usize) {
    let (canary, text) = message(ns, n);
    let body = event(&canary, ns, "Progressing", &text, "Normal", n as u64);
    let deadline = Instant::now() + WAIT;
    loop {
        match post_event(addr, "/events", &body).await {
            (202, answer) => {
                assert_eq!(answer, json!({"deliveries": 1}), "event {n}");
                return;
            }
            (503, _) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("event {n}: {other:?}"),
        }
        assert!(Instant::now() < deadline, "event {n} never accepted");
    }
}

async fn create_canaries(client: &Client, ns: &str) {
    for i in 0..CANARIES {
        create_canary(client, ns, &format!("c{i}")).await;
        set_phase(client, ns, &format!("c{i}"), "Progressing").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn kill_9_loses_no_event_answered_202_and_the_stored_report_still_pairs() {
    let started = Instant::now();
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald-durable").await;
    let ns = namespace(&client, "durable").await;
    let sink = Sink::start().await;
    let policy: NotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "team", "namespace": ns},
        "spec": {"receivers": [{"name": "hook", "webhook": {
            "url": sink.url("/hook"), "body": "{\"text\": {{json message}}}"
        }}]}
    }))
    .unwrap();
    Api::<NotificationPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    create_canaries(&client, &ns).await;
    let state = tempfile::tempdir().unwrap();

    // The receiver fails every request: every notification stays queued, retrying.
    sink.fail_randomly(1.0);
    let (mut first, addr) = start_herald(&herald_ns, state.path());
    for n in 0..EVENTS / 2 {
        post_until_accepted(addr, &ns, n).await;
    }
    // Flagger reports event 10 as a Kubernetes Event too. The webhook report came first:
    // the Event is paired with it (not sent), and is handled once that report is delivered.
    let (paired_canary, paired_text) = message(&ns, 10);
    flagger_event(
        &client,
        &ns,
        &paired_canary,
        "c0.paired",
        &paired_text,
        "Normal",
    )
    .await;
    wait_for_metric(
        addr,
        r#"herald_events_duplicate_total{source="watch"}"#,
        1.0,
        WAIT,
    )
    .await;
    assert!(
        sink.received().iter().all(|r| r.status == 500),
        "nothing delivered before the kill"
    );
    let status = Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    first.wait().unwrap();

    sink.fail_randomly(0.0);
    let (mut second, addr) = start_herald(&herald_ns, state.path());
    for n in EVENTS / 2..EVENTS {
        post_until_accepted(addr, &ns, n).await;
    }
    let delivered = || -> Vec<(String, usize)> {
        sink.received()
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| marker(r.json()["text"].as_str()?))
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while delivered().len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} events delivered",
            delivered().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late duplicates (the re-listed Event sent as well) would come now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = delivered();
    let mut by_canary: HashMap<String, Vec<usize>> = HashMap::new();
    for (canary, n) in &got {
        by_canary.entry(canary.clone()).or_default().push(*n);
    }
    for (canary, arrivals) in &by_canary {
        let expected: Vec<usize> = (0..EVENTS)
            .filter(|n| format!("c{}", n % CANARIES) == *canary)
            .collect();
        assert_eq!(
            arrivals, &expected,
            "canary {canary}: each event once, in event order"
        );
    }
    assert_eq!(got.len(), EVENTS, "each event once: {got:?}");

    let text = metrics_text(addr).await;
    assert_eq!(
        metric(&text, r#"herald_events_duplicate_total{source="watch"}"#),
        1.0,
        "the re-listed Event was paired with the stored report:\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#
        ),
        EVENTS as f64,
        "the restarted process delivered every event, the stored ones included:\n{text}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(second.wait().unwrap().code(), Some(0));
    eprintln!(
        "kill -9 of the controller: {EVENTS} events, each delivered once, in {:?}",
        started.elapsed()
    );
}
