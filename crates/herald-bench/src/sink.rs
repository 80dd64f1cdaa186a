//! The sink: a loopback HTTP server that timestamps arrivals by sequence number, so each
//! event's latency is measured from just before its POST to the moment its notification
//! arrives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;

/// Send and arrival times of one phase's events, indexed by `seq - offset`.
pub(crate) struct Recorder {
    base: Instant,
    offset: u64,
    sent: Vec<AtomicU64>,
    pub(crate) arrived: Vec<AtomicU64>,
    count: AtomicUsize,
    pub(crate) stray: AtomicUsize,
}

impl Recorder {
    pub(crate) fn new(base: Instant, offset: u64, n: usize) -> Recorder {
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
    pub(crate) fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    pub(crate) fn mark_sent(&self, i: usize) {
        self.sent[i].store(self.now(), Ordering::Relaxed);
    }

    pub(crate) fn mark_arrived(&self, seq: u64, at: u64) {
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

    pub(crate) async fn wait_all(&self, n: usize, timeout: Duration) -> bool {
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
    pub(crate) fn latencies(&self) -> (Vec<f64>, u64, u64) {
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
pub(crate) struct Sink {
    addr: SocketAddr,
    recorder: Arc<ArcSwap<Recorder>>,
    /// TCP connections accepted so far (keep-alive working means few).
    pub(crate) connections: Arc<AtomicUsize>,
}

impl Sink {
    pub(crate) async fn start() -> Sink {
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn record_into(&self, recorder: Arc<Recorder>) {
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
