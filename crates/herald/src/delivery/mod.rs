//! The delivery engine: one queue and worker per destination URL. It knows no receiver
//! kind: it runs each notification's plan of requests (`ReceiverKind::plan`) and reads the
//! answers through the kind (`ReceiverKind::read_answer`). A canary's notifications
//! to one destination are sent one at a time, in event order (a rollout reads top to bottom,
//! and its thread exists before its replies); different canaries' notifications to the same
//! destination go out concurrently, up to a limit, so one slow or retrying rollout does not
//! hold up the others. Retries with exponential backoff and jitter, `Retry-After` honoured
//! (pausing the whole destination), bounded attempts and queues.
//!
//! An event's notifications are admitted together or not at all ([`Dispatcher::enqueue_all`]):
//! when one of them finds its queue full (`queue_capacity`, or `queue_bytes` for all queues),
//! none is queued and the intake answers `503` with `Retry-After`, so a `202` is a promise.
//!
//! Every queued notification ends in exactly one counted outcome: delivered, failed, timeout
//! (the last attempt timed out after the request was sent), unknown (in flight at the
//! shutdown deadline), deferred (kept in `--state-dir` at the shutdown deadline) or dropped
//! (still queued at the shutdown deadline without a state dir). A `Job` that is dropped
//! without an outcome counts itself, so nothing is lost silently.
//!
//! A job waiting out its retry backoff holds none of the destination's `max_in_flight`
//! request slots; its canary stays busy, so the canary's later notifications wait behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use herald_core::PolicyId;
use tokio::task::JoinSet;
use tracing::warn;

use crate::metrics::{Metrics, Outcome};

mod admit;
mod job;
mod lane;
pub(crate) mod redact;
mod send;
mod threads;

pub use admit::{Admitted, Refusal};
use job::DropLogs;
pub use job::{EventCompletion, Job};
use lane::Lane;
pub use redact::redact;
pub use threads::{MemoryThreads, ThreadStore};

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    /// Timeout of one HTTP attempt.
    pub timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` Herald waits; longer requests are shortened to this.
    pub max_retry_after: Duration,
    /// Notifications per destination, queued or being delivered (retries included), before
    /// new events are refused.
    pub queue_capacity: usize,
    /// Bytes of notifications queued or being delivered, all destinations together, before
    /// new events are refused: bounds memory whatever the bodies' sizes.
    pub queue_bytes: usize,
    /// Requests in flight at once per destination, each for a different canary.
    pub max_in_flight: usize,
    /// Minimum time between two requests to one destination (Slack allows about one
    /// message per second per webhook). Zero disables it.
    pub min_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 5,
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            queue_capacity: 1000,
            queue_bytes: 64 << 20,
            max_in_flight: 8,
            min_interval: Duration::ZERO,
        }
    }
}
/// Told the final outcome of every notification (the controller keeps per-receiver status
/// and records Kubernetes Events from it).
pub trait DeliveryObserver: Send + Sync {
    fn finished(&self, policy: &PolicyId, receiver: &str, outcome: Outcome);
}
/// Queues notifications and delivers them in the background.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    config: DeliveryConfig,
    metrics: Arc<Metrics>,
    observer: Option<Arc<dyn DeliveryObserver>>,
    threads: Arc<dyn ThreadStore>,
    /// Until when each rate-limit group (a Slack token, else a destination URL) must not
    /// send: set by a `429` with `Retry-After`, honoured by every request of the group.
    paused: std::sync::Mutex<HashMap<String, Instant>>,
    queues: RwLock<HashMap<String, Lane>>,
    workers: std::sync::Mutex<JoinSet<()>>,
    closed: AtomicBool,
    /// Bytes held by jobs queued or being delivered (bounded by `queue_bytes`).
    queued_bytes: Arc<AtomicUsize>,
    logs: Arc<DropLogs>,
    /// Held while an event's notifications are checked against the limits and queued, so
    /// the check holds when they are queued (workers only ever free room meanwhile).
    admission: std::sync::Mutex<()>,
}
/// What a shutdown drain achieved.
#[derive(Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// True when every queued notification reached an outcome before the deadline.
    pub complete: bool,
}
impl Dispatcher {
    pub fn new(config: DeliveryConfig, metrics: Arc<Metrics>) -> Self {
        Self::with_observer(config, metrics, None)
    }

    pub fn with_observer(
        config: DeliveryConfig,
        metrics: Arc<Metrics>,
        observer: Option<Arc<dyn DeliveryObserver>>,
    ) -> Self {
        Self::with_parts(config, metrics, observer, Arc::new(MemoryThreads::new()))
    }

    pub fn with_parts(
        config: DeliveryConfig,
        metrics: Arc<Metrics>,
        observer: Option<Arc<dyn DeliveryObserver>>,
        threads: Arc<dyn ThreadStore>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // Receivers' redirects are not followed: a webhook that moved must be reconfigured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client configuration is valid");
        Dispatcher {
            inner: Arc::new(Inner {
                client,
                config,
                metrics,
                observer,
                threads,
                paused: Default::default(),
                queues: RwLock::new(HashMap::new()),
                workers: std::sync::Mutex::new(JoinSet::new()),
                closed: AtomicBool::new(false),
                queued_bytes: Default::default(),
                logs: Arc::new(DropLogs::new()),
                admission: std::sync::Mutex::new(()),
            }),
        }
    }

    /// Queues a job behind the earlier ones for the same URL (and canary). Returns false
    /// when its queue is full or Herald is shutting down (nothing is queued then).
    pub fn enqueue(&self, job: Job) -> bool {
        self.enqueue_all(vec![job], None).is_ok()
    }

    /// Queues all of an event's jobs, or none of them when one does not fit (its
    /// destination's `queue_capacity`, or `queue_bytes` for all of them together). With a
    /// store, the event is written to the durable queue too, and its jobs are sent only once
    /// it is on disk (see [`Admitted::committed`]).
    pub fn enqueue_all(
        &self,
        jobs: Vec<Job>,
        store: Option<(&crate::durable::Store, crate::durable::EventRecord)>,
    ) -> Result<Admitted, Refusal> {
        self.admit(jobs, store, None)
    }

    /// Queues jobs recovered from the durable queue at start-up, whatever the limits (they
    /// were accepted before).
    pub fn enqueue_recovered(&self, jobs: Vec<(Job, crate::durable::DurableRef)>) -> usize {
        let (jobs, refs): (Vec<Job>, Vec<_>) = jobs.into_iter().unzip();
        self.admit(jobs, None, Some(refs))
            .map(|a| a.queued)
            .unwrap_or(0)
    }
    /// Waits while some receiver's queue is more than three quarters full, so that the
    /// controller's replays and bursts go at the receivers' pace instead of overflowing
    /// their queues.
    pub async fn wait_for_room(&self) {
        let limit = (self.inner.config.queue_capacity.saturating_mul(3) / 4).max(1);
        loop {
            let fullest = {
                let queues = self.inner.queues.read().expect("queue lock poisoned");
                queues
                    .values()
                    .map(|lane| lane.state.waiting.load(Ordering::Acquire))
                    .max()
                    .unwrap_or(0)
            };
            if fullest < limit || self.inner.closed.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting jobs and waits up to `deadline` for the queued ones. Jobs still
    /// queued at the deadline are counted and logged as dropped.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        self.inner.closed.store(true, Ordering::Release);
        // Dropping the senders lets each worker stop once its queue is empty.
        self.inner
            .queues
            .write()
            .expect("queue lock poisoned")
            .clear();
        let mut workers =
            std::mem::take(&mut *self.inner.workers.lock().expect("worker lock poisoned"));
        let finished = tokio::time::timeout(deadline, async {
            while workers.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !finished {
            warn!(deadline = ?deadline, "shutdown deadline passed with notifications still queued: those in flight count as unknown, the others as deferred (kept in --state-dir) or dropped");
            workers.shutdown().await;
        }
        DrainReport { complete: finished }
    }
}
