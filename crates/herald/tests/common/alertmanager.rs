//! A real Alertmanager (Debian's `prometheus-alertmanager`; CI installs it) on 127.0.0.1
//! with a free port, a temporary storage path and a config whose one receiver sends nowhere;
//! what it holds is read back from its own `GET /api/v2/alerts`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(20);
pub const BINARY: &str = "prometheus-alertmanager";
pub const CONFIG: &str = "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n";

/// A running Alertmanager, killed when dropped.
pub struct Alertmanager {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn installed() -> bool {
    Command::new(BINARY)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts Alertmanager with `config` (and `web_config`, when given, as its
/// `--web.config.file`) and waits until it is ready.
pub async fn start_alertmanager(config: &str, web_config: Option<&str>) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut command = Command::new(BINARY);
    command
        .arg(format!(
            "--config.file={}",
            dir.path().join("alertmanager.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        // No gossip: one instance, no second port.
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(web) = web_config {
        let path = dir.path().join("web.yml");
        std::fs::write(&path, web).unwrap();
        command.arg(format!("--web.config.file={}", path.display()));
    }
    let child = command.spawn().unwrap();
    let am = Alertmanager {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = reqwest::get(format!("http://{addr}/-/ready")).await;
        // Ready, or up and asking for credentials.
        if ready.is_ok_and(|r| r.status().is_success() || r.status() == 401) {
            return am;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not start on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alertmanager's active alerts, as its API lists them.
pub async fn active_alerts(am: &Alertmanager, auth: Option<(&str, &str)>) -> Vec<Value> {
    let mut request = reqwest::Client::new().get(format!("http://{}/api/v2/alerts", am.addr));
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let alerts: Value = response.json().await.unwrap();
    alerts.as_array().unwrap().clone()
}

/// Active alerts, waiting up to `WAIT` for there to be `n`.
pub async fn wait_for_alerts(am: &Alertmanager, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let alerts = active_alerts(am, None).await;
        if alerts.len() == n {
            return alerts;
        }
        assert!(Instant::now() < deadline, "not {n} alerts: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
