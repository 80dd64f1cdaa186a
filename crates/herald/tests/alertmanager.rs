//! Alertmanager for real: `prometheus-alertmanager` (Debian's package; CI installs it) on
//! 127.0.0.1 with a free port, a temporary storage path and a config whose one receiver
//! sends nowhere, and `herald serve` in process posting Flagger's events to it. What
//! Alertmanager holds is read back from its own `GET /api/v2/alerts`: the alert fires with the
//! canary's labels after a rollback, stays one alert when the failure is reported again, and
//! is resolved (no longer listed) by the promotion, even with Herald restarted in between;
//! and a canary that stays failed keeps its alert firing past Alertmanager's
//! `resolve_timeout`, across a `kill -9` of Herald, until the promotion.
//! Where the binary is missing (a developer's machine without the package) the test says so
//! and passes.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::alertmanager::*;
use common::*;
use serde_json::{json, Value};

fn policy(addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: oncall, namespace: test}}
spec:
  receivers:
    - name: am
      alertmanager:
        url: "http://{addr}"
        labels: {{team: payments}}
{extra}"#
    )
}

async fn send(server: SocketAddr, phase: &str, message: &str, at: u64, deliveries: u64) {
    let body = event("podinfo", "test", phase, message, "Warning", at);
    assert_eq!(
        post_event(server, "/events", &body).await,
        (202, json!({"deliveries": deliveries})),
        "{message}"
    );
}

const DELIVERED: &str =
    r#"herald_deliveries_total{receiver_type="alertmanager",outcome="delivered"}"#;
const ROLLBACK: &str = "Rolling back podinfo.test failed checks threshold reached 5";
const PROMOTED: &str = "Promotion completed! Scaling down podinfo.test";

fn options_in(dir: &Path) -> herald::serve::ServeOptions {
    let mut options = options(dir.to_path_buf());
    options.files.namespace = "test".to_owned();
    options
}

#[tokio::test]
async fn a_rollback_fires_and_the_promotion_after_a_restart_resolves_it() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    let am = start_alertmanager(CONFIG, None).await;
    let dir = PolicyDir::new(&[("oncall.yaml", &policy(am.addr, ""))]);
    let server = herald::serve::start(options_in(&dir.path())).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    send(server.addr, "Progressing", ROLLBACK, now - 60_000, 1).await;
    wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    let alerts = active_alerts(&am, None).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "FlaggerCanaryFailed", "canary": "podinfo", "namespace": "test", "severity": "critical", "team": "payments"})
    );
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(
        alert["annotations"],
        json!({"summary": format!("podinfo.test: {ROLLBACK}"), "description": ROLLBACK})
    );
    assert_eq!(alert["receivers"], json!([{"name": "nowhere"}]));
    let started = alert["startsAt"].as_str().unwrap().to_owned();
    let first_end = alert["endsAt"].as_str().unwrap().to_owned();

    // Flagger reports the failure again: the same alert, kept firing for longer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let failed = "Canary failed! Scaling down podinfo.test";
    send(server.addr, "Failed", failed, now - 30_000, 1).await;
    wait_for_metric(server.addr, DELIVERED, 2.0, WAIT).await;
    let alerts = active_alerts(&am, None).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["startsAt"], started, "the first failure's start");
    assert_eq!(alerts[0]["annotations"]["description"], failed);
    assert!(alerts[0]["endsAt"].as_str().unwrap() > first_end.as_str());
    // Progress is none of Alertmanager's business: nothing is sent.
    send(
        server.addr,
        "Progressing",
        "Advance podinfo.test canary weight 10",
        now - 20_000,
        0,
    )
    .await;
    server.stop().await.unwrap();

    // A new Herald knows nothing of the alert, and needs not: its labels are the canary's.
    let server = herald::serve::start(options_in(&dir.path())).await.unwrap();
    send(server.addr, "Succeeded", PROMOTED, now - 1_000, 1).await;
    wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    server.stop().await.unwrap();
    let alerts = active_alerts(&am, None).await;
    assert_eq!(alerts, Vec::<Value>::new(), "resolved: no longer listed");
}

/// `herald`'s password `h3rald-pass`, bcrypt-hashed as Alertmanager's `--web.config.file` takes
/// it (libxcrypt's `$2b$`, cost 4: a test).
const WEB_CONFIG: &str =
    "basic_auth_users:\n  herald: $2b$04$7uRClUPd32QhPoptrYBfAe9fmdHz251pKUHi7zgqP7iK49rW.q4Hu\n";

#[tokio::test]
async fn basic_auth_from_a_secret_is_what_alertmanager_checks() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    let am = start_alertmanager(CONFIG, Some(WEB_CONFIG)).await;
    let secret = |password: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: am, namespace: test}}\nstringData: {{password: {password}}}\n---\n")
    };
    let auth = "        basicAuth: {username: herald, passwordSecretRef: {name: am}}\n";
    // A wrong password: Alertmanager answers 401, which is not retried.
    let wrong = secret("not-h3rald-pass") + &policy(am.addr, auth);
    let dir = PolicyDir::new(&[("oncall.yaml", &wrong)]);
    let server = herald::serve::start(options_in(&dir.path())).await.unwrap();
    send(server.addr, "Failed", ROLLBACK, 1_700_000_000_000, 1).await;
    let failed = r#"herald_deliveries_total{receiver_type="alertmanager",outcome="failed"}"#;
    let text = wait_for_metric(server.addr, failed, 1.0, WAIT).await;
    assert!(!text.contains("not-h3rald-pass"));
    server.stop().await.unwrap();
    let credentials = Some(("herald", "h3rald-pass"));
    assert_eq!(active_alerts(&am, credentials).await, Vec::<Value>::new());

    let right = secret("h3rald-pass") + &policy(am.addr, auth);
    dir.write("oncall.yaml", &right);
    let server = herald::serve::start(options_in(&dir.path())).await.unwrap();
    send(server.addr, "Failed", ROLLBACK, 1_700_000_000_000, 1).await;
    wait_for_metric(server.addr, DELIVERED, 1.0, WAIT).await;
    server.stop().await.unwrap();
    let alerts = active_alerts(&am, credentials).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["canary"], "podinfo");
    assert_eq!(alerts[0]["startsAt"], "2023-11-14T22:13:20.000Z");
}

fn kill_9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}

const REPOSTS: &str = "herald_reposts_total";
const OPEN: &str = "herald_reposts_open";

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_canary_that_stays_failed_stays_firing_past_resolve_timeout_and_a_kill_9() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    // Alertmanager ends an alert 2 s after it last heard of it; Herald posts it every second.
    let resolve_timeout = Duration::from_secs(2);
    let am = start_alertmanager(&format!("global:\n  resolve_timeout: 2s\n{CONFIG}"), None).await;
    let dir = PolicyDir::new(&[(
        "oncall.yaml",
        &policy(am.addr, "        resendInterval: 1s\n"),
    )]);
    let state = tempfile::tempdir().unwrap();
    let args = |dir: &PolicyDir| {
        let mut args: Vec<std::ffi::OsString> = ["serve", "--listen", "127.0.0.1:0"]
            .into_iter()
            .map(Into::into)
            .collect();
        args.extend(["--policies".into(), dir.path().into_os_string()]);
        args.extend(["--state-dir".into(), state.path().as_os_str().to_owned()]);
        args
    };
    let (mut herald, addr) = spawn_herald(args(&dir));
    let failed = "Canary failed! Scaling down podinfo.test";
    let body = event("podinfo", "test", "Failed", failed, "Warning", unix_ms());
    assert_eq!(
        post_event(addr, "/events", &body).await,
        (202, json!({"deliveries": 1}))
    );
    let fired = wait_for_alerts(&am, 1).await;
    let started = fired[0]["startsAt"].clone();

    // Flagger says nothing more. Twice resolve_timeout later the alert still fires, because
    // Herald posted it again.
    tokio::time::sleep(2 * resolve_timeout).await;
    let alerts = active_alerts(&am, None).await;
    assert_eq!(alerts.len(), 1, "still firing: {alerts:?}");
    assert_eq!(alerts[0]["status"]["state"], "active");
    assert_eq!(
        alerts[0]["startsAt"], started,
        "one alert since the failure"
    );
    assert_eq!(alerts[0]["annotations"]["description"], failed);
    let text = metrics_text(addr).await;
    let reposts = metric(&text, REPOSTS);
    assert!(reposts >= 2.0, "posted again every second: {reposts}");
    assert_eq!(metric(&text, OPEN), 1.0, "one notification kept open");

    // Killed: the new process reads what it was repeating from the state directory.
    kill_9(&mut herald);
    let (mut herald, addr) = spawn_herald(args(&dir));
    tokio::time::sleep(2 * resolve_timeout).await;
    let alerts = active_alerts(&am, None).await;
    assert_eq!(alerts.len(), 1, "still firing after the kill: {alerts:?}");
    assert_eq!(alerts[0]["startsAt"], started);
    let text = metrics_text(addr).await;
    assert!(metric(&text, REPOSTS) >= 2.0);
    assert_eq!(metric(&text, OPEN), 1.0, "still open after the kill");

    // The promotion resolves it, and nothing fires it again.
    let body = event(
        "podinfo",
        "test",
        "Succeeded",
        PROMOTED,
        "Normal",
        unix_ms(),
    );
    assert_eq!(
        post_event(addr, "/events", &body).await,
        (202, json!({"deliveries": 1}))
    );
    wait_for_alerts(&am, 0).await;
    let after = metric(&metrics_text(addr).await, REPOSTS);
    tokio::time::sleep(2 * resolve_timeout).await;
    assert_eq!(active_alerts(&am, None).await, Vec::<Value>::new());
    assert_eq!(
        metric(&metrics_text(addr).await, REPOSTS),
        after,
        "no repeats after the close"
    );
    assert_eq!(metric(&metrics_text(addr).await, OPEN), 0.0, "none open");
    let open: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("open.json")).unwrap()).unwrap();
    assert_eq!(open, json!({"open": []}));
    kill_9(&mut herald);
}

const FAILED: &str = "Canary failed! Scaling down podinfo.test";

/// Alertmanager ending alerts 2 s after it last heard of them; a policy whose receiver posts
/// them every second, with `spec_extra` lines after the receiver; Herald reading its policies
/// again every 200 ms; and the canary's failure, fired.
async fn firing(spec_extra: &str) -> (Alertmanager, PolicyDir, herald::serve::Running) {
    let am = start_alertmanager(&format!("global:\n  resolve_timeout: 2s\n{CONFIG}"), None).await;
    let text = policy(am.addr, "        resendInterval: 1s\n") + spec_extra;
    let dir = PolicyDir::new(&[("oncall.yaml", &text)]);
    let mut options = options_in(&dir.path());
    options.reload_interval = Duration::from_millis(200);
    let server = herald::serve::start(options).await.unwrap();
    let body = event("podinfo", "test", "Failed", FAILED, "Warning", unix_ms());
    assert_eq!(post_event(server.addr, "/events", &body).await.0, 202);
    wait_for_alerts(&am, 1).await;
    (am, dir, server)
}

#[tokio::test]
async fn a_success_the_policy_does_not_match_still_ends_the_repeats() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    // An on-call policy for warnings only: the promotion (Normal) is not sent to it.
    let (am, _dir, server) = firing("  eventTypes: [Warning]\n").await;
    wait_for_metric(server.addr, REPOSTS, 2.0, WAIT).await;
    let body = event(
        "podinfo",
        "test",
        "Succeeded",
        PROMOTED,
        "Normal",
        unix_ms(),
    );
    assert_eq!(
        post_event(server.addr, "/events", &body).await,
        (202, json!({"deliveries": 0}))
    );
    // No resolve was sent, so the alert lapses by itself: it is not posted again.
    let after = metric(&metrics_text(server.addr).await, REPOSTS);
    wait_for_alerts(&am, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(metric(&metrics_text(server.addr).await, REPOSTS), after);
    assert_eq!(active_alerts(&am, None).await, Vec::<Value>::new());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_repeat_is_rendered_with_the_receiver_as_it_is_now() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    let (am, dir, server) = firing("").await;
    assert_eq!(
        active_alerts(&am, None).await[0]["labels"]["team"],
        "payments"
    );
    // The team is renamed: the repeats carry the new label, the old alert lapses.
    let edited =
        policy(am.addr, "        resendInterval: 1s\n").replace("team: payments", "team: checkout");
    dir.write("oncall.yaml", &edited);
    let deadline = Instant::now() + WAIT;
    loop {
        let alerts = active_alerts(&am, None).await;
        if alerts.len() == 1 && alerts[0]["labels"]["team"] == "checkout" {
            assert_eq!(alerts[0]["annotations"]["description"], FAILED);
            break;
        }
        assert!(Instant::now() < deadline, "{alerts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_suspended_policy_repeats_nothing_and_its_resumption_repeats_again() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    let (am, dir, server) = firing("").await;
    let resendable = policy(am.addr, "        resendInterval: 1s\n");
    dir.write("oncall.yaml", &(resendable.clone() + "  suspend: true\n"));
    // Suspended: nothing is posted, and the alert lapses.
    wait_for_alerts(&am, 0).await;
    let held = metric(&metrics_text(server.addr).await, REPOSTS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&metrics_text(server.addr).await, REPOSTS), held);
    // Resumed while the canary is still failed: it fires again.
    dir.write("oncall.yaml", &resendable);
    let alerts = wait_for_alerts(&am, 1).await;
    assert_eq!(alerts[0]["annotations"]["description"], FAILED);
    server.stop().await.unwrap();
}
