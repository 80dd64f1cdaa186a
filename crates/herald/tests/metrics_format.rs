//! `/metrics` as Prometheus' own tools read it: `promtool check metrics` (Debian's
//! `prometheus` package, installed by `.ci/run`) on the Prometheus text format Herald serves
//! when asked for it, and OpenMetrics otherwise.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// promtool, or `None` outside CI when it is not installed (CI always has it).
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing: .ci/run installs Debian's prometheus package"
        );
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        return None;
    }
    Some("promtool")
}

#[tokio::test]
async fn metrics_pass_promtool_in_the_prometheus_text_format() {
    let sink = Sink::start().await;
    let dir = PolicyDir::new(&[("policy.yaml", &webhook_policy("audit", &sink.url("/audit")))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event(
        "podinfo",
        "default",
        "Failed",
        "Canary failed! podinfo.default",
        "Warning",
        1,
    );
    assert_eq!(post_event(server.addr, "/events", &body).await.0, 202);
    sink.wait_for(1, Duration::from_secs(10)).await;
    wait_for_metric(
        server.addr,
        "herald_deliveries_total{receiver_type=\"webhook\",outcome=\"delivered\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;

    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", server.addr))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("# HELP herald_deliveries_total "), "{text}");
    assert!(!text.contains("# EOF"));
    // Prometheus 2.x asks for OpenMetrics first: it gets OpenMetrics.
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", server.addr))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(response.text().await.unwrap().ends_with("# EOF\n"));

    let Some(promtool) = promtool() else { return };
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
