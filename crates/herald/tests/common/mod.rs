//! Test fixtures: local HTTP sinks on 127.0.0.1 that record what they receive and answer
//! from a script, policy files in a temporary directory, and metric lookups.
#![allow(dead_code)]

pub mod alertmanager;
pub mod cluster;
pub mod mock;
pub mod slack;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use herald::delivery::DeliveryConfig;
use herald::policy_files::PolicyFiles;
use herald::serve::ServeOptions;

/// One request a sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The status the sink answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("sink got JSON")
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// How the sink answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    RetryAfter(u16, &'static str),
    /// Answer 200 after a delay.
    Slow(Duration),
}

#[derive(Default)]
struct SinkState {
    received: Vec<Received>,
    scripts: HashMap<String, VecDeque<Reply>>,
    /// Probability (0..1) that a request without a script gets a 500.
    failure_rate: f64,
    default_delay: Duration,
    /// Requests whose body contains the text are answered after the delay.
    delays_by_body: Vec<(String, Duration)>,
}

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener).await
    }

    /// A sink on a given loopback address (to start listening where connections were refused).
    pub async fn start_on(addr: SocketAddr) -> Sink {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Sink {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(SinkState::default()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers for the next requests to `path`, in order; afterwards 200.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    pub fn fail_randomly(&self, rate: f64) {
        self.state.lock().unwrap().failure_rate = rate;
    }

    pub fn delay_every_answer(&self, delay: Duration) {
        self.state.lock().unwrap().default_delay = delay;
    }

    /// Answers requests whose body contains `needle` only after `delay`.
    pub fn delay_when_body_contains(&self, needle: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .delays_by_body
            .push((needle.to_owned(), delay));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until at least `n` requests arrived in all (panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "sink got {} of {n} requests in {within:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn handle(State(state): State<Arc<Mutex<SinkState>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let at = Instant::now();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    let (reply, mut delay) = {
        let mut s = state.lock().unwrap();
        let scripted = s.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        let reply = scripted.unwrap_or_else(|| {
            if s.failure_rate > 0.0 && rand::random::<f64>() < s.failure_rate {
                Reply::Status(500)
            } else {
                Reply::Status(200)
            }
        });
        let by_body = s
            .delays_by_body
            .iter()
            .filter(|(needle, _)| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .map(|(_, delay)| *delay)
            .max();
        (reply, by_body.unwrap_or(Duration::ZERO))
    };
    delay = delay.max(state.lock().unwrap().default_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, response) = match reply {
        Reply::Status(code) => (
            code,
            (StatusCode::from_u16(code).unwrap(), "ok").into_response(),
        ),
        Reply::RetryAfter(code, after) => (
            code,
            (
                StatusCode::from_u16(code).unwrap(),
                [("retry-after", after)],
                "slow down",
            )
                .into_response(),
        ),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            (200, (StatusCode::OK, "ok").into_response())
        }
    };
    state.lock().unwrap().received.push(Received {
        path,
        headers,
        body,
        at,
        status,
    });
    response
}

/// A policy directory in a temporary folder.
pub struct PolicyDir {
    pub dir: tempfile::TempDir,
}

impl PolicyDir {
    pub fn new(files: &[(&str, &str)]) -> PolicyDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        PolicyDir { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
}

/// Server options for tests: an ephemeral loopback port, fast retries.
pub fn options(policies: PathBuf) -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: PolicyFiles {
            paths: vec![policies],
            cluster: String::new(),
            namespace: "default".to_owned(),
        },
        state_file: None,
        state_dir: None,
        delivery: DeliveryConfig {
            max_attempts: 4,
            timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..DeliveryConfig::default()
        },
        body_limit: herald::api::DEFAULT_BODY_LIMIT,
        http: Default::default(),
        drain_timeout: Duration::from_secs(10),
        reload_interval: Duration::from_secs(3600),
        gates: Default::default(),
    }
}

/// A Flagger event-webhook body, byte for byte as Flagger marshals it (field order of its Go
/// struct, metadata keys sorted).
pub fn event(
    name: &str,
    namespace: &str,
    phase: &str,
    message: &str,
    event_type: &str,
    timestamp: u64,
) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap();
    format!(
        r#"{{"name":{},"namespace":{},"phase":{},"checksum":"abc123","metadata":{{"eventMessage":{},"eventType":{},"timestamp":"{timestamp}"}}}}"#,
        s(name),
        s(namespace),
        s(phase),
        s(message),
        s(event_type)
    )
}

pub async fn post_event(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

pub async fn metrics_text(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample, e.g. `herald_deliveries_total{receiver_type="slack",outcome="delivered"}`;
/// 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Waits until `sample` reaches `value` (deliveries finish after the sink answered).
pub async fn wait_for_metric(
    addr: SocketAddr,
    sample: &str,
    value: f64,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics_text(addr).await;
        if metric(&text, sample) >= value {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} did not reach {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A NotificationPolicy in `default` sending every event to one webhook URL.
pub fn webhook_policy(name: &str, url: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  receivers:\n    - name: hook\n      webhook:\n        url: {url}\n"
    )
}

/// Starts the `herald` binary (`--log-format json`, then `args`, e.g. `serve --listen
/// 127.0.0.1:0 ...`) and waits for the address it logs as serving.
pub fn spawn_herald<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--log-format", "json"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Read to the end, so the process never blocks on a full pipe.
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    if json["message"] == "herald serving" {
                        let _ = tx.send(json["addr"].as_str().unwrap().to_owned());
                        sent = true;
                    }
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("herald logs that it is serving")
        .parse()
        .unwrap();
    (child, addr)
}
