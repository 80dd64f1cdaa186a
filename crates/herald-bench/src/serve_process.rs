//! `herald serve` as its own process: the time from spawn to ready, and its memory idle,
//! after a burst of events, and with 10,000 policies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_core::bench_fixtures as fixtures;

use crate::args::Args;
use crate::load::{client, closed_loop, fixed_rate};
use crate::process_stats::{mib, proc_status_kib};
use crate::sink::Sink;
use crate::PHASE_TIMEOUT;

pub(crate) struct ServeReport {
    pub(crate) ready_ms: Vec<f64>,
    pub(crate) idle_rss_mib: f64,
    pub(crate) loaded_rss_mib: f64,
    pub(crate) loaded_hwm_mib: f64,
    pub(crate) loaded_events: usize,
    /// The same process at `--rate` events/s for `--rate-seconds`, after the burst: POST to
    /// delivered, p50 / p99 / max in µs (the runtime `herald serve` builds, not the bench's).
    pub(crate) rate_us: [f64; 3],
    pub(crate) big_policies: usize,
    pub(crate) big_ready_ms: Vec<f64>,
    pub(crate) big_rss_mib: f64,
    pub(crate) big_hwm_mib: f64,
}

fn herald_binary(args: &Args) -> PathBuf {
    if let Some(bin) = &args.herald_bin {
        return bin.clone();
    }
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.with_file_name("herald");
    if !bin.exists() {
        println!("building the herald binary (cargo build --release -p herald)...");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "herald", "--bin", "herald"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build failed");
    }
    assert!(bin.exists(), "no herald binary at {}", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status code of `GET /readyz`, if the server answers.
fn probe(port: u16) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

/// A running `herald serve`, ended (SIGTERM, then SIGKILL) when dropped.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signals the child this program spawned, by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `herald serve` and returns it with the time from spawn to `/readyz` answering 200.
fn spawn_ready(bin: &Path, policies: &Path) -> (Served, Duration) {
    let port = free_port();
    let start = Instant::now();
    let child = Command::new(bin)
        .arg("serve")
        .arg("--policies")
        .arg(policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--reload-interval", "1h", "--queue-capacity", "100000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herald serve");
    let mut served = Served { child, port };
    loop {
        if probe(port) == Some(200) {
            return (served, start.elapsed());
        }
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("herald serve exited early: {status}");
        }
        assert!(
            start.elapsed() < PHASE_TIMEOUT,
            "herald serve not ready in {PHASE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub(crate) fn measure_serve(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    sink: &Sink,
) -> ServeReport {
    let bin = herald_binary(args);
    let dir = tempfile::tempdir().expect("temporary directory");
    let small = dir.path().join("small.yaml");
    std::fs::write(
        &small,
        format!(
            "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: bench\n  namespace: {}\nspec:\n  receivers:\n    - name: sink\n      webhook:\n        url: {}\n",
            fixtures::EVENT_NAMESPACE,
            sink.url("/serve")
        ),
    )
    .expect("write the policies");
    const BIG: usize = 10_000;
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, fixtures::policies_yaml(BIG, &sink.url("/big"))).expect("write");

    // Readiness: spawn to /readyz 200, five times.
    let mut ready_ms = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let (served, ready) = spawn_ready(&bin, &small);
        ready_ms.push(ready.as_secs_f64() * 1e3);
        last = Some(served);
    }
    let served = last.expect("served");
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_mib = mib(proc_status_kib(&served.pid(), "VmRSS"));

    // The same process after a burst of events.
    let loaded_events = args.events.min(10_000);
    let url = format!("http://127.0.0.1:{}/events", served.port);
    // One client for both phases, as the in-process run does: its connections stay alive.
    let client = client(args.concurrency);
    let phase = runtime.block_on(closed_loop(
        &client,
        sink,
        &url,
        loaded_events,
        args.concurrency,
        0,
        1,
    ));
    println!(
        "herald serve (own process): {} events, {:.0} ev/s end to end, p50 {:.0} us, p99 {:.0} us",
        phase.events,
        phase.rate(),
        phase.p50_us,
        phase.p99_us
    );
    std::thread::sleep(Duration::from_millis(500));
    // Read before the fixed-rate phase, so they stay the RSS after the burst alone.
    let loaded_rss_mib = mib(proc_status_kib(&served.pid(), "VmRSS"));
    let loaded_hwm_mib = mib(proc_status_kib(&served.pid(), "VmHWM"));
    let offset = loaded_events as u64;
    let rate = runtime.block_on(fixed_rate(
        &client,
        sink,
        &url,
        args.rate,
        args.rate_seconds,
        offset,
        1,
    ));
    println!(
        "herald serve (own process), fixed rate {}/s: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        args.rate, rate.p50_us, rate.p99_us, rate.max_us
    );
    drop(served);

    // 10,000 policies.
    let mut big_ready_ms = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let (served, ready) = spawn_ready(&bin, &big);
        big_ready_ms.push(ready.as_secs_f64() * 1e3);
        last = Some(served);
    }
    let served = last.expect("served");
    std::thread::sleep(Duration::from_secs(1));
    let big_rss_mib = mib(proc_status_kib(&served.pid(), "VmRSS"));
    let big_hwm_mib = mib(proc_status_kib(&served.pid(), "VmHWM"));
    drop(served);

    ServeReport {
        ready_ms,
        idle_rss_mib,
        loaded_rss_mib,
        loaded_hwm_mib,
        loaded_events,
        rate_us: [rate.p50_us, rate.p99_us, rate.max_us],
        big_policies: BIG,
        big_ready_ms,
        big_rss_mib,
        big_hwm_mib,
    }
}
