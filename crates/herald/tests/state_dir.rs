//! `--state-dir` at its limits: a disk that fills up (the event is refused with 503, its
//! `repeatInterval` not started, and Herald stores events again once there is room), and the
//! canaries table, which keeps no more canaries than `herald_canary_status` tracks.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn repeat_policy(url: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: team\n  namespace: default\nspec:\n  repeatInterval: 1h\n  receivers:\n    - name: hook\n      webhook:\n        url: {url}\n        body: '{{\"text\": {{{{json message}}}}}}'\n"
    )
}

/// `herald serve` with SIGXFSZ ignored (as a shell's `trap '' XFSZ` leaves it), so that a
/// file-size limit makes writes past it fail with EFBIG, as a full disk makes them fail with
/// ENOSPC. Returns the process, its address, its "durable queue recovered" log line and its
/// later log lines as they come.
fn start_herald(
    policies: &Path,
    state: &Path,
) -> (Child, SocketAddr, serde_json::Value, mpsc::Receiver<String>) {
    let mut child = Command::new("sh")
        .args(["-c", r#"trap '' XFSZ; exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_herald"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--policies")
        .arg(policies)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("herald: {line}");
            let _ = tx.send(line);
        }
    });
    let recovered = log_line(&lines, "durable queue recovered");
    let serving = log_line(&lines, "herald serving");
    let addr = serving["addr"].as_str().unwrap().parse().unwrap();
    (child, addr, recovered, lines)
}

/// The first log line with this message, as JSON.
fn log_line(lines: &mpsc::Receiver<String>, message: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line {message:?}"));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        if json["message"] == message {
            return json;
        }
    }
}

/// Sets the soft file-size limit (the hard one stays, so it can be raised again without
/// privileges).
fn prlimit_fsize(child: &Child, limit: &str) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &child.id().to_string(),
            &format!("--fsize={limit}:"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success());
}

/// A Flagger event with a 50 KB metadata value: one stored event takes a good share of a page
/// run, so the store's file has to grow after a few.
fn big_event(n: usize) -> String {
    json!({
        "name": "podinfo", "namespace": "default", "phase": "Progressing", "checksum": "r1",
        "metadata": {
            "eventMessage": format!("Halt podinfo.default advancement m{n}"),
            "eventType": "Normal", "timestamp": "1", "pad": "x".repeat(50_000)
        }
    })
    .to_string()
}

async fn post(addr: SocketAddr, body: &str) -> (u16, Option<String>, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/events"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_the_event_without_holding_back_its_retry() {
    let sink = Sink::start().await;
    // Notifications stay queued (stored) for a while: the store has to grow.
    sink.delay_every_answer(Duration::from_millis(500));
    let dir = PolicyDir::new(&[("p.yaml", &repeat_policy(&sink.url("/hook")))]);
    let state = tempfile::tempdir().unwrap();
    let (mut herald, addr, _, lines) = start_herald(&dir.path(), state.path());
    let file = state.path().join("queue.redb");
    // The disk is full at the file's size at start-up.
    prlimit_fsize(
        &herald,
        &std::fs::metadata(&file).unwrap().len().to_string(),
    );

    let mut accepted = Vec::new();
    let refused = loop {
        let n = accepted.len();
        assert!(n < 60, "the file never had to grow");
        match post(addr, &big_event(n)).await {
            (202, _, answer) => {
                assert_eq!(answer, json!({"deliveries": 1}));
                accepted.push(n);
            }
            (503, retry_after, answer) => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(
                    answer,
                    json!({"error": "the durable queue could not store the event; retry later"})
                );
                break n;
            }
            other => panic!("{other:?}"),
        }
    };
    // Room again: the retry of the refused event is stored and sent, not held back as a
    // repeat of a message that was never sent.
    prlimit_fsize(&herald, "unlimited");
    assert_eq!(
        post(addr, &big_event(refused)).await,
        (202, None, json!({"deliveries": 1})),
        "the retry is accepted and queued"
    );
    log_line(&lines, "durable queue opened again after a failed write");
    let messages = |received: Vec<Received>| -> Vec<String> {
        received
            .iter()
            .map(|r| r.json()["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let expected: Vec<String> = accepted
        .iter()
        .chain([&refused])
        .map(|n| format!("Halt podinfo.default advancement m{n}"))
        .collect();
    sink.wait_for(expected.len(), WAIT).await;
    let text = wait_for_metric(
        addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        expected.len() as f64,
        WAIT,
    )
    .await;
    assert_eq!(messages(sink.received()), expected, "each once, in order");
    assert_eq!(
        metric(&text, r#"herald_events_refused_total{reason="state"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "herald_repeats_held_total"), 0.0, "{text}");
    Command::new("kill")
        .args(["-TERM", &herald.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(herald.wait().unwrap().code(), Some(0));

    // What was delivered is gone from the store, the removals of the commits that the
    // reopening rolled back included: a restart sends nothing again.
    let (mut herald, _, recovered, _) = start_herald(&dir.path(), state.path());
    assert_eq!(
        (&recovered["events"], &recovered["notifications"]),
        (&json!(0), &json!(0)),
        "{recovered}"
    );
    Command::new("kill")
        .args(["-TERM", &herald.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(herald.wait().unwrap().code(), Some(0));
    assert_eq!(sink.received().len(), expected.len());
}

/// The canaries' phases kept for `herald_canary_status` across restarts: as many as the metric
/// tracks (10,000), the longest-finished making room for a newcomer, failed ones kept, and a
/// new failure taking the place of the oldest canary not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canaries_kept_are_bounded_as_herald_canary_status_is() {
    const LIMIT: usize = herald::metrics::MAX_TRACKED_CANARIES;
    // A policy for another namespace: the events queue nothing, only their phases count.
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("other", "http://127.0.0.1:9/"))]);
    let state = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.state_dir = Some(state.path().to_owned());
    let server = herald::serve::start(opts.clone()).await.unwrap();
    let addr = server.addr;
    let client = reqwest::Client::new();
    let report = move |name: String, phase: &'static str| {
        let client = client.clone();
        async move {
            let body = event(&name, "apps", phase, "Advance", "Normal", 1);
            let response = client
                .post(format!("http://{addr}/events"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202, "{name}");
        }
    };
    report("c0".into(), "Failed").await;
    for i in 1..=10 {
        report(format!("c{i}"), "Succeeded").await;
    }
    report("c11".into(), "Progressing").await;
    // The rest of the first 10,000, from sixteen connections.
    let rest: Vec<usize> = (12..LIMIT).collect();
    let senders: Vec<_> = rest
        .chunks(rest.len().div_ceil(16))
        .map(|chunk| {
            let (chunk, report) = (chunk.to_vec(), report.clone());
            tokio::spawn(async move {
                for i in chunk {
                    report(format!("c{i}"), "Progressing").await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    // Ten newcomers take the finished canaries' places; the eleventh finds none; a new
    // failure takes the place of the oldest canary still progressing.
    for i in 1..=11 {
        report(format!("n{i}"), "Progressing").await;
    }
    report("f1".into(), "Failed").await;
    server.stop().await.unwrap();

    let server = herald::serve::start(opts).await.unwrap();
    let text = metrics_text(server.addr).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("herald_canary_status{"))
        .collect();
    assert_eq!(series.len(), LIMIT, "restored series");
    let status = |name: &str| {
        let prefix = format!(r#"herald_canary_status{{name="{name}",namespace="apps"}} "#);
        series
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_owned())
    };
    assert_eq!(
        status("c0").as_deref(),
        Some("2"),
        "a failed canary is kept"
    );
    assert_eq!(status("f1").as_deref(), Some("2"));
    for i in 1..=10 {
        assert_eq!(status(&format!("c{i}")), None, "c{i} finished longest ago");
        assert_eq!(status(&format!("n{i}")).as_deref(), Some("0"));
    }
    assert_eq!(status("n11"), None, "no finished canary left to make room");
    assert_eq!(
        status("c11"),
        None,
        "the oldest progressing one made room for f1"
    );
    assert_eq!(status("c12").as_deref(), Some("0"));
    server.stop().await.unwrap();
    // On disk too: 10,000 canaries, not every name ever reported.
    let metrics = std::sync::Arc::new(herald::metrics::Metrics::new());
    let opened = herald::durable::Store::open(state.path(), metrics).unwrap();
    assert_eq!(opened.canaries.len(), LIMIT);
    assert!(!opened.canaries.iter().any(|(_, name, _)| name == "n11"));
    opened.store.close();
}
