//! The HTTP intake over real loopback sockets: the event token in both forms and the 401s,
//! open probes and metrics, validation answers, slow and idle connections, and the token kept
//! out of the logs of the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "tok3n-Zq8xW2vN5mK7pL4r";

fn token_file(dir: &PolicyDir) -> std::path::PathBuf {
    let path = dir.path().join("..").join(format!(
        "event-token-{}",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

async fn post(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn podinfo(message: &str) -> String {
    event("podinfo", "default", "Progressing", message, "Normal", 1)
}

#[tokio::test]
async fn event_token_in_either_form_is_required_and_probes_stay_open() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("team", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.http.event_token_file = Some(token_file(&dir));
    let server = herald::serve::start(opts).await.unwrap();
    let addr = server.addr;
    let bearer = format!("Bearer {TOKEN}");

    // Accepted: the header, and the path prefix on each event endpoint.
    assert_eq!(
        post(addr, "/events", Some(&bearer), &podinfo("a")).await.0,
        202
    );
    assert_eq!(
        post(addr, &format!("/t/{TOKEN}/events"), None, &podinfo("b"))
            .await
            .0,
        202
    );
    assert_eq!(
        post(
            addr,
            &format!("/t/{TOKEN}/events/default/team"),
            None,
            &podinfo("c")
        )
        .await
        .0,
        202
    );
    assert_eq!(
        post(
            addr,
            &format!("/t/{TOKEN}/cluster-events/nope"),
            None,
            &podinfo("d")
        )
        .await
        .0,
        404,
        "past the token, routing as usual"
    );

    // Refused: no token, a wrong one, a prefix of the right one, the wrong scheme.
    let wrong = "tok3n-Zq8xW2vN5mK7pL4X";
    let refusals = [
        ("/events".to_owned(), None),
        ("/events/default/team".to_owned(), None),
        ("/cluster-events/all".to_owned(), None),
        ("/events".to_owned(), Some(format!("Bearer {wrong}"))),
        (
            "/events".to_owned(),
            Some(format!("Bearer {}", &TOKEN[..10])),
        ),
        ("/events".to_owned(), Some(format!("Basic {TOKEN}"))),
        (format!("/t/{wrong}/events"), None),
        (format!("/t/{wrong}/events/default/team"), None),
        ("/t//events".to_owned(), None),
    ];
    for (path, auth) in &refusals {
        let (status, body) = post(addr, path, auth.as_deref(), &podinfo("x")).await;
        assert_eq!(status, 401, "{path} {auth:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    }

    // Open: probes and metrics, with and without a token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let text = wait_for_metric(
        addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        3.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"herald_events_unauthorized_total{reason="missing"}"#
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"herald_events_unauthorized_total{reason="invalid"}"#
        ),
        4.0
    );
    assert!(!text.contains(TOKEN));
    assert_eq!(sink.received_on("/hook").len(), 3);

    // Rotation: a new token in the file is in force within about a second; the old one stops.
    let path = dir.path().join("..").join(format!(
        "event-token-{}",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    let rotated = "rotated-Tq9yU3bM6nJ8kH5s";
    std::fs::write(&path, rotated).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = post(addr, &format!("/t/{rotated}/events"), None, &podinfo("r")).await;
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        post(addr, "/events", Some(&bearer), &podinfo("old"))
            .await
            .0,
        401
    );
    let _ = std::fs::remove_file(&path);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_get_precise_answers() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("team", &sink.url("/hook")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let addr = server.addr;

    let long = "a".repeat(60_000);
    for (name, namespace, field) in [
        (long.as_str(), "default", "name"),
        ("Pod_Info", "default", "name"),
        ("podinfo", "a.b", "namespace"),
        ("podinfo", &"n".repeat(64), "namespace"),
    ] {
        let body = event(name, namespace, "Failed", "m", "Warning", 1);
        let (status, answer) = post_event(addr, "/events", &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let duplicate = r#"{"name":"podinfo","namespace":"default","phase":"Failed","phase":"Succeeded","metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
    let (status, answer) = post_event(addr, "/events", duplicate).await;
    assert_eq!(status, 400);
    assert_eq!(answer["field"], "phase", "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("duplicate key"));

    for content_type in ["application/jsonfoo", "application/json-seq", "text/plain"] {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/events"))
            .header("content-type", content_type)
            .body(podinfo("m"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type}");
    }
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/events"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(podinfo("m"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    // Content-Length and Transfer-Encoding together: refused (request smuggling).
    let body = podinfo("smuggled");
    let raw = format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len(),
        body.len()
    );
    let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, raw.as_bytes()))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Content-Length"), "{answer}");
    server.stop().await.unwrap();
}

/// Sends `bytes`, then reads the answer until the server closes or 5 s pass.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn limited_options(dir: &PolicyDir) -> herald::serve::ServeOptions {
    let mut opts = options(dir.path());
    opts.http.limits.header_timeout = Duration::from_secs(2);
    opts.http.limits.max_connections = 32;
    opts.http.limits.shutdown_grace = Duration::from_secs(1);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_idle_connections_do_not_block_probes() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("team", &sink.url("/hook")))]);
    let server = herald::serve::start(limited_options(&dir)).await.unwrap();
    let addr = server.addr;

    // Slow loris: one header line every 5 s never finishes a head; the connection is closed
    // once the 2 s header timeout passes.
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        stream.write_all(b"POST /events HTTP/1.1\r\n").unwrap();
        let mut buf = [0u8; 1024];
        for i in 0..100 {
            match stream.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => return started.elapsed(), // an error answer, then the close
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
            if i % 50 == 49 && stream.write_all(b"X-Slow: 1\r\n").is_err() {
                return started.elapsed();
            }
        }
        Duration::MAX
    });

    let closed = slow.await.unwrap();
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(5),
        "the slow connection was closed after {closed:?}"
    );

    // Idle connections, more than the limit: the oldest are closed, probes still answer.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(addr).unwrap());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let response = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // An idle keep-alive connection is closed after the header timeout too.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = kept.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle keep-alive held for {:?}",
        started.elapsed()
    );

    // Shutdown is not held up by a half-sent request.
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(
        b"POST /events HTTP/1.1\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// The real binary with the token in a file, trace logging in JSON: the token appears in no
/// log line, whichever form was used, and every line has one `message` key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_the_logs() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("team", &sink.url("/hook")))]);
    let token = token_file(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--event-token-file")
        .arg(&token)
        .arg("--policies")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, logs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .expect("herald logs that it is serving");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(line);
        if json["message"] == "herald serving" {
            break json["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    let forged = "line one\n2030-01-01T00:00:00Z ERROR forged";
    let body = podinfo(forged);
    assert_eq!(
        post(addr, &format!("/t/{TOKEN}/events"), None, &body)
            .await
            .0,
        202
    );
    assert_eq!(
        post(addr, "/events", Some(&format!("Bearer {TOKEN}")), &body)
            .await
            .0,
        202
    );
    let wrong = format!("{TOKEN}x");
    assert_eq!(
        post(addr, &format!("/t/{wrong}/events"), None, &body)
            .await
            .0,
        401
    );
    assert_eq!(
        post(addr, "/events", Some(&format!("Bearer {wrong}")), &body)
            .await
            .0,
        401
    );
    wait_for_metric(
        addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        2.0,
        Duration::from_secs(10),
    )
    .await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    seen.extend(logs.try_iter());
    let all = seen.join("\n");
    assert!(
        !all.contains(&TOKEN[..12]),
        "the token leaked into the logs:\n{all}"
    );
    assert!(all.contains("event received"), "{all}");
    let mut received = 0;
    for line in &seen {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert_eq!(
            line.matches("\"message\":").count(),
            1,
            "one message key per line: {line}"
        );
        if object["message"] == "event received" {
            assert_eq!(object["event_message"], forged);
            received += 1;
        }
    }
    assert_eq!(received, 2);
    let _ = std::fs::remove_file(&token);
}

/// A reload that would leave no policies keeps the ones in effect; `herald check` fails on
/// zero policies.
#[tokio::test]
async fn a_reload_to_no_policies_keeps_the_last_good_set() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("p.yaml", &webhook_policy("team", &sink.url("/hook")))]);
    let mut opts = options(dir.path());
    opts.reload_interval = Duration::from_millis(50);
    let server = herald::serve::start(opts).await.unwrap();
    for (round, text) in ["", "# nothing here\n", "---\n"].iter().enumerate() {
        dir.write("p.yaml", text);
        wait_for_metric(
            server.addr,
            r#"herald_policy_reloads_total{result="failure"}"#,
            (round + 1) as f64,
            Duration::from_secs(10),
        )
        .await;
        let (status, body) = post_event(server.addr, "/events", &podinfo("still")).await;
        assert_eq!(
            (status, body["deliveries"].as_u64()),
            (202, Some(1)),
            "{body}"
        );
    }
    assert_eq!(
        metric(&metrics_text(server.addr).await, "herald_policies"),
        1.0
    );
    server.stop().await.unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("check")
        .arg("--policies")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error: no policies"), "{stdout}");
}
