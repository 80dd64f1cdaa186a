//! End-to-end benchmark of Herald, all on loopback:
//!
//! ```text
//! load generator --POST /events--> Herald (in process) --webhook--> sink
//! load generator --POST----------------------------------------->  sink   (baseline)
//! ```
//!
//! The real server (`herald::serve::start`) loads a policy file whose webhook receiver points
//! at a sink on 127.0.0.1 that timestamps every arrival. Events carry a sequence number, so
//! each one's latency is measured from just before it is POSTed to the moment the sink has
//! its notification. The baseline POSTs the same bodies with the same concurrency straight to
//! the sink: the cost of the HTTP hop alone. Then `herald serve` itself is spawned to time
//! its readiness and read its memory.
//!
//! `cargo run --release -p herald-bench -- --events 20000 --concurrency 32 [--rate 1000]`
//!
//! Every loop is bounded in count and time; the program exits by itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use herald::delivery::DeliveryConfig;
use herald::policy_files::PolicyFiles;
use herald::serve::ServeOptions;
use herald_core::bench_fixtures as fixtures;

/// How long any one phase may take before the benchmark gives up on it.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    about = "End-to-end benchmark of Herald on loopback"
)]
struct Args {
    /// Events per throughput round.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Requests in flight at once (each on its own keep-alive connection).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events per second in the fixed-rate latency run.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Length of the fixed-rate run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    rate_seconds: f64,
    /// Throughput rounds (Herald and baseline alternate; the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Non-matching policies loaded next to the one that matches (see the fixtures).
    #[arg(long, default_value_t = 0)]
    extra_policies: usize,
    /// Receiver URLs the events are spread over (one policy and webhook URL per canary).
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Canaries the events are spread over, all to the one receiver URL (with
    /// `--receivers 1`). Herald sends one canary's notifications one at a time, in order,
    /// and different canaries' concurrently (up to `--max-in-flight` per URL).
    #[arg(long, default_value_t = 1)]
    canaries: usize,
    /// Herald's requests in flight per receiver URL.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// Per-receiver queue capacity of the in-process Herald (default: enough for a round,
    /// so that a burst is measured without drops).
    #[arg(long)]
    queue_capacity: Option<usize>,
    /// Format Herald's info logs (to nowhere), as `herald serve` does; off by default.
    #[arg(long)]
    logs: bool,
    /// Skip the `herald serve` readiness and memory measurements.
    #[arg(long)]
    skip_serve: bool,
    /// The `herald` binary (default: next to this one, built if missing).
    #[arg(long)]
    herald_bin: Option<PathBuf>,
    /// Only compare the durable queue (`--state-dir`) on and off: two in-process Heralds,
    /// rounds alternating, then exit.
    #[arg(long)]
    durable: bool,
}

fn main() {
    let args = Args::parse();
    assert!(args.events > 0 && args.concurrency > 0 && args.rounds > 0);
    if args.logs {
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "herald-bench: {} CPUs, load average {}, {} events x {} rounds, concurrency {}, fixed rate {}/s for {} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        args.events,
        args.rounds,
        args.concurrency,
        args.rate,
        args.rate_seconds
    );
    if args.durable {
        runtime.block_on(compare_durable(&args));
        return;
    }
    let report = runtime.block_on(run(&args));
    let serve = if args.skip_serve {
        None
    } else {
        // The sink keeps running on the runtime for the subprocess' deliveries.
        let sink = runtime.block_on(Sink::start());
        Some(measure_serve(&args, &runtime, &sink))
    };
    report.print(serve.as_ref());
}

// ---------------------------------------------------------------------------------------
// The sink: a loopback HTTP server that timestamps arrivals by sequence number.

/// Send and arrival times of one phase's events, indexed by `seq - offset`.
struct Recorder {
    base: Instant,
    offset: u64,
    sent: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    count: AtomicUsize,
    stray: AtomicUsize,
}

impl Recorder {
    fn new(base: Instant, offset: u64, n: usize) -> Recorder {
        Recorder {
            base,
            offset,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            arrived: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            stray: AtomicUsize::new(0),
        }
    }

    /// Nanoseconds since `base`, plus one (0 means "not yet").
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    fn mark_sent(&self, i: usize) {
        self.sent[i].store(self.now(), Ordering::Relaxed);
    }

    fn mark_arrived(&self, seq: u64, at: u64) {
        let slot = seq
            .checked_sub(self.offset)
            .and_then(|i| self.arrived.get(i as usize));
        match slot {
            Some(slot) if slot.swap(at, Ordering::Relaxed) == 0 => {
                self.count.fetch_add(1, Ordering::Release);
            }
            _ => {
                self.stray.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn wait_all(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::Acquire) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        true
    }

    /// Latencies in microseconds (sorted), first send and last arrival.
    fn latencies(&self) -> (Vec<f64>, u64, u64) {
        let mut latencies = Vec::with_capacity(self.sent.len());
        let (mut first, mut last) = (u64::MAX, 0);
        for (sent, arrived) in self.sent.iter().zip(&self.arrived) {
            let (s, a) = (
                sent.load(Ordering::Relaxed),
                arrived.load(Ordering::Relaxed),
            );
            if s != 0 {
                first = first.min(s);
            }
            if s != 0 && a != 0 {
                last = last.max(a);
                latencies.push(a.saturating_sub(s) as f64 / 1_000.0);
            }
        }
        latencies.sort_by(f64::total_cmp);
        (latencies, first, last)
    }
}

#[derive(Clone)]
struct Sink {
    addr: SocketAddr,
    recorder: Arc<ArcSwap<Recorder>>,
    /// TCP connections accepted so far (keep-alive working means few).
    connections: Arc<AtomicUsize>,
}

impl Sink {
    async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(ArcSwap::from_pointee(Recorder::new(Instant::now(), 0, 0)));
        let app = Router::new()
            .fallback(sink_handler)
            .with_state(recorder.clone());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let listener = listener.tap_io(move |tcp| {
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink {
            addr,
            recorder,
            connections,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn record_into(&self, recorder: Arc<Recorder>) {
        self.recorder.store(recorder);
    }
}

async fn sink_handler(State(recorder): State<Arc<ArcSwap<Recorder>>>, body: Bytes) -> StatusCode {
    let recorder = recorder.load();
    let at = recorder.now();
    match seq_of(&body) {
        Some(seq) => recorder.mark_arrived(seq, at),
        None => {
            recorder.stray.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

/// The sequence number in `"checksum":"seq-N"`.
fn seq_of(body: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"checksum\":\"seq-";
    let start = body.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = body[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&body[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// Load generation.

fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// One measured phase.
#[derive(Clone, Debug, Default)]
struct Phase {
    events: usize,
    delivered: usize,
    /// From the first POST to the last arrival at the sink.
    wall: Duration,
    /// From the first POST to the last POST answered.
    posted: Duration,
    cpu: Duration,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    failed_posts: usize,
    /// New TCP connections the sink accepted during the phase.
    connections: usize,
    /// Context switches of the process during the phase.
    switches: u64,
    /// Arrivals per second after the last POST was answered (Herald still delivering).
    tail_rate: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64()
    }

    fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events as f64
    }

    fn switches_per_event(&self) -> f64 {
        self.switches as f64 / self.events as f64
    }
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> bool {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(response) => {
            let ok = response.status().is_success();
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// Event `seq`: for canary `team-payments-api`, or spread over `canaries` canaries.
fn event_body(seq: u64, canaries: usize) -> String {
    if canaries <= 1 {
        fixtures::event_json(seq)
    } else {
        fixtures::event_json_for(&format!("team-{}-api", seq % canaries as u64), seq)
    }
}

/// `n` events, `concurrency` at a time, as fast as they are answered.
async fn closed_loop(
    client: &reqwest::Client,
    sink: &Sink,
    url: &str,
    n: usize,
    concurrency: usize,
    offset: u64,
    canaries: usize,
) -> Phase {
    let recorder = Arc::new(Recorder::new(Instant::now(), offset, n));
    sink.record_into(recorder.clone());
    let cpu_before = cpu_time();
    let connections = sink.connections.load(Ordering::Relaxed);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (client, url, recorder, next, failed) = (
            client.clone(),
            url.to_owned(),
            recorder.clone(),
            next.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = event_body(offset + i as u64, canaries);
                recorder.mark_sent(i);
                if !post(&client, &url, body).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let posted = recorder.now();
    recorder.wait_all(n, PHASE_TIMEOUT).await;
    let mut phase = finish(
        &recorder,
        n,
        cpu_before,
        posted,
        failed.load(Ordering::Relaxed),
    );
    phase.connections = sink.connections.load(Ordering::Relaxed) - connections;
    phase
}

/// `rate` events per second for `seconds`, each POSTed at its scheduled time whatever
/// happened to the earlier ones (an open loop, as Flagger would send them).
async fn fixed_rate(
    client: &reqwest::Client,
    sink: &Sink,
    url: &str,
    rate: f64,
    seconds: f64,
    offset: u64,
    canaries: usize,
) -> Phase {
    let n = (rate * seconds).round().max(1.0) as usize;
    let recorder = Arc::new(Recorder::new(Instant::now(), offset, n));
    sink.record_into(recorder.clone());
    let cpu_before = cpu_time();
    let connections = sink.connections.load(Ordering::Relaxed);
    let failed = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (client, url, recorder, failed) = (
            client.clone(),
            url.to_owned(),
            recorder.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            let body = event_body(offset + i as u64, canaries);
            recorder.mark_sent(i);
            if !post(&client, &url, body).await {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let posted = recorder.now();
    recorder.wait_all(n, PHASE_TIMEOUT).await;
    let mut phase = finish(
        &recorder,
        n,
        cpu_before,
        posted,
        failed.load(Ordering::Relaxed),
    );
    phase.connections = sink.connections.load(Ordering::Relaxed) - connections;
    phase
}

fn finish(
    recorder: &Recorder,
    n: usize,
    (cpu_before, switches_before): (Duration, u64),
    posted: u64,
    failed: usize,
) -> Phase {
    let (cpu_after, switches_after) = cpu_time();
    let cpu = cpu_after.saturating_sub(cpu_before);
    let (latencies, first, last) = recorder.latencies();
    let tail = recorder
        .arrived
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) > posted)
        .count();
    let tail_rate = if last > posted && tail > 100 {
        tail as f64 / ((last - posted) as f64 / 1e9)
    } else {
        f64::NAN
    };
    let pct = |p: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
        }
    };
    Phase {
        events: n,
        delivered: latencies.len(),
        wall: Duration::from_nanos(last.saturating_sub(first).max(1)),
        posted: Duration::from_nanos(posted.saturating_sub(first)),
        cpu,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: latencies.last().copied().unwrap_or(f64::NAN),
        failed_posts: failed,
        connections: 0,
        switches: switches_after.saturating_sub(switches_before),
        tail_rate,
    }
}

// ---------------------------------------------------------------------------------------
// Process measurements.

/// CPU time (user + system) and context switches (voluntary + involuntary) of the whole
/// process so far.
fn cpu_time() -> (Duration, u64) {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        (usage.ru_nvcsw + usage.ru_nivcsw) as u64,
    )
}

/// A `Vm*` line of /proc/PID/status, in KiB.
fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The in-process run.

struct Report {
    args_line: String,
    rate: f64,
    herald: Vec<Phase>,
    baseline: Vec<Phase>,
    herald_rate: Phase,
    baseline_rate: Phase,
    peak_rss_mib: f64,
    rss_mib: f64,
}

/// Throughput with the durable queue on and off, in alternating rounds of the same run.
async fn compare_durable(args: &Args) {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let yaml = format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: bench\n  namespace: {}\nspec:\n  canaries: [\"team-*\"]\n  receivers:\n    - name: sink\n      webhook:\n        url: {}\n",
        fixtures::EVENT_NAMESPACE,
        sink.url("/hook")
    );
    std::fs::write(dir.path().join("policies.yaml"), yaml).expect("write the policies");
    let state = tempfile::tempdir_in(std::env::current_dir().unwrap_or(std::env::temp_dir()))
        .expect("state directory");
    let start = |state_dir: Option<PathBuf>| {
        herald::serve::start(ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            files: PolicyFiles {
                paths: vec![dir.path().to_owned()],
                cluster: "bench".to_owned(),
                namespace: "default".to_owned(),
            },
            delivery: DeliveryConfig {
                queue_capacity: args.queue_capacity.unwrap_or(args.events.max(1_000)),
                max_in_flight: args.max_in_flight,
                ..DeliveryConfig::default()
            },
            body_limit: herald::server::DEFAULT_BODY_LIMIT,
            http: Default::default(),
            state_file: None,
            state_dir,
            drain_timeout: Duration::from_secs(10),
            reload_interval: Duration::from_secs(3600),
        })
    };
    let memory = start(None).await.expect("Herald starts");
    let durable = start(Some(state.path().to_owned()))
        .await
        .expect("Herald starts with a state dir");
    let urls = [
        format!("http://{}/events", memory.addr),
        format!("http://{}/events", durable.addr),
    ];
    let client = client(args.concurrency);
    let mut offset = 0u64;
    let warm = args.events.min(2_000);
    for url in &urls {
        closed_loop(
            &client,
            &sink,
            url,
            warm,
            args.concurrency,
            offset,
            args.canaries,
        )
        .await;
        offset += warm as u64;
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let m = closed_loop(
            &client,
            &sink,
            &urls[0],
            args.events,
            args.concurrency,
            offset,
            args.canaries,
        )
        .await;
        offset += args.events as u64;
        let d = closed_loop(
            &client,
            &sink,
            &urls[1],
            args.events,
            args.concurrency,
            offset,
            args.canaries,
        )
        .await;
        offset += args.events as u64;
        println!(
            "round {round}: in memory {:>6.0} ev/s (p50 {:.0} us, cpu {:.1} us/ev)   --state-dir {:>6.0} ev/s (p50 {:.0} us, cpu {:.1} us/ev)   ratio {:.2}",
            m.rate(), m.p50_us, m.cpu_us_per_event(), d.rate(), d.p50_us, d.cpu_us_per_event(), d.rate() / m.rate()
        );
        off.push(m);
        on.push(d);
    }
    let text = durable.state.metrics.encode();
    let commits = metric(&text, "herald_state_commits_total");
    let batches = metric(&text, "herald_state_commit_events_count");
    let stored = metric(&text, "herald_state_commit_events_sum");
    let rate = |phases: &[Phase]| median(&phases.iter().map(Phase::rate).collect::<Vec<_>>());
    let cpu = |phases: &[Phase]| {
        median(
            &phases
                .iter()
                .map(Phase::cpu_us_per_event)
                .collect::<Vec<_>>(),
        )
    };
    let p50 = |phases: &[Phase]| median(&phases.iter().map(|p| p.p50_us).collect::<Vec<_>>());
    let (r_off, r_on) = (rate(&off), rate(&on));
    println!();
    println!("| | in memory | --state-dir | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| throughput (events/s, median) | {r_off:.0} | {r_on:.0} | {:.2} |",
        r_on / r_off
    );
    println!(
        "| CPU per event (us, median) | {:.1} | {:.1} | {:.2} |",
        cpu(&off),
        cpu(&on),
        cpu(&on) / cpu(&off)
    );
    println!(
        "| p50 latency POST to sink (us) | {:.0} | {:.0} | {:.2} |",
        p50(&off),
        p50(&on),
        p50(&on) / p50(&off)
    );
    println!(
        "| wall time per event (us) | {:.1} | {:.1} | +{:.1} |",
        1e6 / r_off,
        1e6 / r_on,
        1e6 / r_on - 1e6 / r_off
    );
    println!(
        "\ndurable queue: {stored:.0} events stored in {batches:.0} durable commits ({:.1} events per fsync, group commit); {commits:.0} transactions in all, removals included",
        stored / batches.max(1.0)
    );
    let _ = memory.stop().await;
    let _ = durable.stop().await;
}

async fn run(args: &Args) -> Report {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut yaml = if args.receivers <= 1 {
        format!(
            "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: bench\n  namespace: {}\nspec:\n  canaries: [\"team-*\"]\n  receivers:\n    - name: sink\n      webhook:\n        url: {}\n",
            fixtures::EVENT_NAMESPACE,
            sink.url("/hook")
        )
    } else {
        (0..args.receivers)
            .map(|k| {
                format!(
                    "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: bench-{k}\n  namespace: {}\nspec:\n  canaries: [team-{k}-api]\n  receivers:\n    - name: sink\n      webhook:\n        url: {}\n",
                    fixtures::EVENT_NAMESPACE,
                    sink.url(&format!("/hook/{k}"))
                )
            })
            .collect()
    };
    if args.extra_policies > 0 {
        yaml.push_str(&fixtures::decoy_policies(
            args.extra_policies,
            &sink.url("/decoy"),
        ));
    }
    std::fs::write(dir.path().join("policies.yaml"), yaml).expect("write the policies");
    let queue_capacity = args.queue_capacity.unwrap_or(args.events.max(1_000));
    let herald = herald::serve::start(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: PolicyFiles {
            paths: vec![dir.path().to_owned()],
            cluster: "bench".to_owned(),
            namespace: "default".to_owned(),
        },
        delivery: DeliveryConfig {
            queue_capacity,
            max_in_flight: args.max_in_flight,
            ..DeliveryConfig::default()
        },
        body_limit: herald::server::DEFAULT_BODY_LIMIT,
        http: Default::default(),
        state_file: None,
        state_dir: None,
        drain_timeout: Duration::from_secs(10),
        reload_interval: Duration::from_secs(3600),
    })
    .await
    .expect("Herald starts");
    let herald_url = format!("http://{}/events", herald.addr);
    // Each receiver URL has its own canary; else `--canaries` spreads events over one URL.
    let canaries = if args.receivers > 1 {
        args.receivers
    } else {
        args.canaries
    };
    let sink_url = sink.url("/hook");
    let client = client(args.concurrency);
    let mut offset = 0u64;
    let mut next_offset = |n: usize| {
        let o = offset;
        offset += n as u64;
        o
    };

    // Warm-up: connections, allocator, caches.
    let warm = args.events.min(2_000);
    closed_loop(
        &client,
        &sink,
        &herald_url,
        warm,
        args.concurrency,
        next_offset(warm),
        canaries,
    )
    .await;
    closed_loop(
        &client,
        &sink,
        &sink_url,
        warm,
        args.concurrency,
        next_offset(warm),
        canaries,
    )
    .await;

    let mut herald_phases = Vec::new();
    let mut baseline_phases = Vec::new();
    for round in 1..=args.rounds {
        let h = closed_loop(
            &client,
            &sink,
            &herald_url,
            args.events,
            args.concurrency,
            next_offset(args.events),
            canaries,
        )
        .await;
        let b = closed_loop(
            &client,
            &sink,
            &sink_url,
            args.events,
            args.concurrency,
            next_offset(args.events),
            canaries,
        )
        .await;
        println!(
            "round {round}: herald {:>6.0} ev/s (accepted in {:.2} s, p50 {:.0} us, p99 {:.0} us, cpu {:.1} us/ev, {:.1} cs/ev, {} sink conns, {:.0} ev/s after the last POST)   baseline {:>6.0} ev/s (p50 {:.0} us, p99 {:.0} us, cpu {:.1} us/ev, {:.1} cs/ev)   ratio {:.2}",
            h.rate(),
            h.posted.as_secs_f64(),
            h.p50_us,
            h.p99_us,
            h.cpu_us_per_event(),
            h.switches_per_event(),
            h.connections,
            h.tail_rate,
            b.rate(),
            b.p50_us,
            b.p99_us,
            b.cpu_us_per_event(),
            b.switches_per_event(),
            h.rate() / b.rate()
        );
        herald_phases.push(h);
        baseline_phases.push(b);
    }

    let rate_events = (args.rate * args.rate_seconds).round() as usize;
    let herald_rate = fixed_rate(
        &client,
        &sink,
        &herald_url,
        args.rate,
        args.rate_seconds,
        next_offset(rate_events),
        canaries,
    )
    .await;
    let baseline_rate = fixed_rate(
        &client,
        &sink,
        &sink_url,
        args.rate,
        args.rate_seconds,
        next_offset(rate_events),
        canaries,
    )
    .await;
    println!(
        "fixed rate {}/s: herald p50 {:.0} us p99 {:.0} us max {:.0} us; baseline p50 {:.0} us p99 {:.0} us max {:.0} us",
        args.rate,
        herald_rate.p50_us,
        herald_rate.p99_us,
        herald_rate.max_us,
        baseline_rate.p50_us,
        baseline_rate.p99_us,
        baseline_rate.max_us
    );

    let metrics = herald.state.metrics.encode();
    let dropped = metric(
        &metrics,
        "herald_deliveries_total{receiver_type=\"webhook\",outcome=\"dropped\"}",
    );
    let failed = metric(
        &metrics,
        "herald_deliveries_total{receiver_type=\"webhook\",outcome=\"failed\"}",
    );
    if dropped > 0.0 || failed > 0.0 {
        println!("WARNING: Herald dropped {dropped} and failed {failed} notifications");
    }
    let report = herald.stop().await.expect("Herald stops");
    assert!(report.complete, "Herald drained");
    Report {
        rate: args.rate,
        args_line: format!(
            "--events {} --concurrency {} --rate {} --receivers {} --canaries {} --max-in-flight {} (rounds {}, extra policies {}, queue capacity {}, logs {})",
            args.events,
            args.concurrency,
            args.rate,
            args.receivers,
            args.canaries,
            args.max_in_flight,
            args.rounds,
            args.extra_policies,
            queue_capacity,
            if args.logs { "on" } else { "off" }
        ),
        herald: herald_phases,
        baseline: baseline_phases,
        herald_rate,
        baseline_rate,
        peak_rss_mib: mib(proc_status_kib("self", "VmHWM")),
        rss_mib: mib(proc_status_kib("self", "VmRSS")),
    }
}

fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// `herald serve` as its own process.

struct ServeReport {
    ready_ms: Vec<f64>,
    idle_rss_mib: f64,
    loaded_rss_mib: f64,
    loaded_hwm_mib: f64,
    loaded_events: usize,
    big_policies: usize,
    big_ready_ms: Vec<f64>,
    big_rss_mib: f64,
    big_hwm_mib: f64,
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

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn measure_serve(args: &Args, runtime: &tokio::runtime::Runtime, sink: &Sink) -> ServeReport {
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
    let phase = runtime.block_on(async {
        let client = client(args.concurrency);
        closed_loop(&client, sink, &url, loaded_events, args.concurrency, 0, 1).await
    });
    println!(
        "herald serve (own process): {} events, {:.0} ev/s end to end, p50 {:.0} us, p99 {:.0} us",
        phase.events,
        phase.rate(),
        phase.p50_us,
        phase.p99_us
    );
    std::thread::sleep(Duration::from_millis(500));
    let loaded_rss_mib = mib(proc_status_kib(&served.pid(), "VmRSS"));
    let loaded_hwm_mib = mib(proc_status_kib(&served.pid(), "VmHWM"));
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
        big_policies: BIG,
        big_ready_ms,
        big_rss_mib,
        big_hwm_mib,
    }
}

// ---------------------------------------------------------------------------------------
// The report.

impl Report {
    fn print(&self, serve: Option<&ServeReport>) {
        let med = |phases: &[Phase], f: fn(&Phase) -> f64| {
            median(&phases.iter().map(f).collect::<Vec<_>>())
        };
        let h_rate = med(&self.herald, Phase::rate);
        let b_rate = med(&self.baseline, Phase::rate);
        let ok = |met: bool| if met { "met" } else { "NOT met" };
        println!();
        println!("## herald-bench {}", self.args_line);
        println!();
        println!("| measurement | Herald | baseline (raw POST) |");
        println!("|---|---|---|");
        println!(
            "| throughput, events/s (median of {} rounds) | {:.0} | {:.0} |",
            self.herald.len(),
            h_rate,
            b_rate
        );
        println!(
            "| latency p50 / p99 / max, us (burst) | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |",
            med(&self.herald, |p| p.p50_us),
            med(&self.herald, |p| p.p99_us),
            med(&self.herald, |p| p.max_us),
            med(&self.baseline, |p| p.p50_us),
            med(&self.baseline, |p| p.p99_us),
            med(&self.baseline, |p| p.max_us),
        );
        println!(
            "| latency p50 / p99 / max, us (fixed {:.0} events/s) | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |",
            self.rate,
            self.herald_rate.p50_us,
            self.herald_rate.p99_us,
            self.herald_rate.max_us,
            self.baseline_rate.p50_us,
            self.baseline_rate.p99_us,
            self.baseline_rate.max_us,
        );
        println!(
            "| CPU time per event, us (whole process: load generator + Herald + sink) | {:.1} | {:.1} |",
            med(&self.herald, Phase::cpu_us_per_event),
            med(&self.baseline, Phase::cpu_us_per_event),
        );
        let lost: usize = self
            .herald
            .iter()
            .chain(&self.baseline)
            .chain([&self.herald_rate, &self.baseline_rate])
            .map(|p| p.events - p.delivered + p.failed_posts)
            .sum();
        println!(
            "| process RSS now / peak (VmHWM), MiB | {:.1} / {:.1} | |",
            self.rss_mib, self.peak_rss_mib
        );
        println!();
        println!(
            "Herald / baseline throughput: {:.2} (target >= 0.8: {})",
            h_rate / b_rate,
            ok(h_rate / b_rate >= 0.8)
        );
        println!(
            "p99 at {:.0} events/s: {:.2} ms (target <= 5 ms: {})",
            self.rate,
            self.herald_rate.p99_us / 1e3,
            ok(self.herald_rate.p99_us <= 5_000.0)
        );
        if lost > 0 {
            println!("WARNING: {lost} events were not delivered or not accepted");
        }
        if let Some(s) = serve {
            println!();
            println!("| herald serve (own process) | value |");
            println!("|---|---|");
            println!(
                "| ready (spawn to /readyz 200), 1 policy: median / min / max of {} | {:.1} / {:.1} / {:.1} ms |",
                s.ready_ms.len(),
                median(&s.ready_ms),
                s.ready_ms.iter().copied().fold(f64::INFINITY, f64::min),
                s.ready_ms.iter().copied().fold(0.0, f64::max)
            );
            println!("| idle RSS, 1 policy | {:.1} MiB |", s.idle_rss_mib);
            println!(
                "| RSS after {} events / peak | {:.1} / {:.1} MiB |",
                s.loaded_events, s.loaded_rss_mib, s.loaded_hwm_mib
            );
            println!(
                "| ready with {} policies: median of {} | {:.0} ms |",
                s.big_policies,
                s.big_ready_ms.len(),
                median(&s.big_ready_ms)
            );
            println!(
                "| RSS with {} policies / peak while loading | {:.1} / {:.1} MiB |",
                s.big_policies, s.big_rss_mib, s.big_hwm_mib
            );
            println!();
            println!(
                "ready <= 100 ms: {}; idle RSS <= 20 MiB: {}; RSS at {} policies <= 100 MiB: {}",
                ok(median(&s.ready_ms) <= 100.0),
                ok(s.idle_rss_mib <= 20.0),
                s.big_policies,
                ok(s.big_rss_mib <= 100.0)
            );
        }
    }
}
