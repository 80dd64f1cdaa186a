//! Load generation: events POSTed in a closed loop (as fast as they are answered) or an open
//! one (at a fixed rate, as Flagger sends them), each phase measured into a [`Phase`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::bench_fixtures as fixtures;

use crate::process_stats::cpu_time;
use crate::sink::{Recorder, Sink};
use crate::PHASE_TIMEOUT;

pub(crate) fn client(concurrency: usize) -> reqwest::Client {
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
pub(crate) struct Phase {
    pub(crate) events: usize,
    pub(crate) delivered: usize,
    /// From the first POST to the last arrival at the sink.
    pub(crate) wall: Duration,
    /// From the first POST to the last POST answered.
    pub(crate) posted: Duration,
    pub(crate) cpu: Duration,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    pub(crate) failed_posts: usize,
    /// New TCP connections the sink accepted during the phase.
    pub(crate) connections: usize,
    /// Context switches of the process during the phase.
    pub(crate) switches: u64,
    /// Arrivals per second after the last POST was answered (Herald still delivering).
    pub(crate) tail_rate: f64,
}

impl Phase {
    pub(crate) fn rate(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64()
    }

    pub(crate) fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events as f64
    }

    pub(crate) fn switches_per_event(&self) -> f64 {
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
pub(crate) async fn closed_loop(
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
pub(crate) async fn fixed_rate(
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
