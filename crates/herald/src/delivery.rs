//! The delivery engine: one queue and worker per destination URL. A canary's notifications
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use herald_api::HttpMethod;
use herald_core::request::{
    thread_action, Header, SlackAnswer, ThreadAction, ThreadParent, ThreadRef,
};
use herald_core::{PolicyId, Redacted};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::metrics::{Metrics, Outcome, ReceiverLabels};

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

/// Runs a callback once every notification of one event has reached an outcome, unless one
/// of them was dropped (then the event counts as not handled, and is retried after a restart).
/// Shared by the event's jobs: the last one to finish drops it.
pub struct EventCompletion {
    dropped: AtomicBool,
    on_complete: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Asked before every request of the event: false stops its notifications (counted as
    /// dropped). The controller's lease: a replica that may have lost it must not send.
    may_send: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl EventCompletion {
    /// The event's notifications were not all queued: it does not count as handled.
    pub fn abandon(&self) {
        self.dropped.store(true, Ordering::Release);
    }

    pub fn new(on_complete: impl FnOnce() + Send + 'static) -> Arc<Self> {
        Arc::new(EventCompletion {
            dropped: AtomicBool::new(false),
            on_complete: std::sync::Mutex::new(Some(Box::new(on_complete))),
            may_send: None,
        })
    }

    /// Like [`new`](Self::new), for an event whose notifications may go out only while
    /// `may_send` says so.
    pub fn fenced(
        may_send: impl Fn() -> bool + Send + Sync + 'static,
        on_complete: impl FnOnce() + Send + 'static,
    ) -> Arc<Self> {
        Arc::new(EventCompletion {
            dropped: AtomicBool::new(false),
            on_complete: std::sync::Mutex::new(Some(Box::new(on_complete))),
            may_send: Some(Box::new(may_send)),
        })
    }

    fn may_send(&self) -> bool {
        self.may_send.as_ref().is_none_or(|check| check())
    }
}

impl Drop for EventCompletion {
    fn drop(&mut self) {
        if !self.dropped.load(Ordering::Acquire) {
            if let Some(callback) = self.on_complete.lock().ok().and_then(|mut c| c.take()) {
                callback();
            }
        }
    }
}

/// One notification to send.
pub struct Job {
    pub policy: Arc<PolicyId>,
    pub receiver: Arc<str>,
    pub receiver_type: &'static str,
    pub url: Redacted,
    pub method: HttpMethod,
    /// Extra headers: the policy's, a bearer token, the body's signature.
    pub headers: Vec<Header>,
    pub body: Bytes,
    /// Set for Slack bots: the Web API's answer decides the outcome.
    pub slack: Option<SlackJob>,
    /// Set for receivers that thread rollouts (Slack bots, Google Chat).
    pub thread: Option<ThreadRef>,
    /// When Herald received the event; delivery latency is measured from here.
    pub received_at: Instant,
    /// Shared with the other notifications of the same event.
    pub completion: Option<Arc<EventCompletion>>,
    /// Jobs with the same key (the canary, `namespace/name`) and destination are sent one
    /// at a time, in order; jobs with different keys may be sent concurrently.
    pub order_key: Arc<str>,
    /// Set when the job is stored in the durable queue: it is sent only once its event is
    /// on disk (`false`: it could not be stored, and is cancelled).
    committed: Option<crate::durable::Committed>,
    ticket: Option<Ticket>,
}

impl Job {
    pub fn new(
        policy: Arc<PolicyId>,
        receiver: Arc<str>,
        receiver_type: &'static str,
        url: Redacted,
        headers: Vec<Header>,
        body: Bytes,
        received_at: Instant,
    ) -> Self {
        Job {
            policy,
            receiver,
            receiver_type,
            url,
            method: HttpMethod::Post,
            headers,
            body,
            slack: None,
            thread: None,
            received_at,
            completion: None,
            order_key: Arc::from(""),
            committed: None,
            ticket: None,
        }
    }

    /// Jobs of one queue are delivered in order. Slack bots share one API URL, so their
    /// queue is per channel: a rollout's replies then follow its first message.
    fn queue_key(&self) -> std::borrow::Cow<'_, str> {
        match &self.slack {
            Some(slack) => format!("{}\n{}", self.url.expose(), slack.channel).into(),
            None => self.url.expose().into(),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(mut ticket) = self.ticket.take() {
            ticket.resolve(outcome, self.received_at.elapsed());
        }
    }

    /// Marks the request as on the wire (or not): a job dropped meanwhile counts as unknown.
    fn sending(&self, on: bool) {
        if let Some(ticket) = &self.ticket {
            ticket.sending.store(on, Ordering::Release);
        }
    }
}

/// A Slack Web API message.
#[derive(Clone, Debug)]
pub struct SlackJob {
    /// The configured channel (the queue is per channel).
    pub channel: String,
    /// `<api>/chat.update`.
    pub update_url: String,
    /// The token's rate-limit group (see `SlackApi::rate_limit_group`).
    pub rate_limit_group: String,
}

/// Where receivers that thread rollouts keep each canary's current thread, so replies find
/// it, also after a restart when the store persists.
pub trait ThreadStore: Send + Sync {
    fn parent(&self, thread: &ThreadRef) -> Option<ThreadParent>;
    fn remember(&self, thread: &ThreadRef, parent: ThreadParent);
}

/// Threads in memory, the most recently started [`MemoryThreads::CAPACITY`]; written to a
/// JSON file on every change when given one (`herald serve --state-file`).
pub struct MemoryThreads {
    entries: std::sync::Mutex<Remembered>,
    file: Option<std::path::PathBuf>,
}

/// Threads by key, each with its insertion number (the oldest is forgotten first), and the
/// last number given.
type Remembered = (u64, HashMap<String, (u64, ThreadParent)>);

/// The state file: threads oldest first.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedThreads {
    threads: Vec<(String, ThreadParent)>,
}

impl MemoryThreads {
    pub const CAPACITY: usize = 10_000;

    pub fn new() -> Self {
        MemoryThreads {
            entries: Default::default(),
            file: None,
        }
    }

    /// Loads the file if it exists. It is a cache: a file that cannot be read or parsed is
    /// logged, moved aside (`.bad`) and Herald starts with no threads rather than not at all.
    pub fn persisted(path: std::path::PathBuf) -> Self {
        let saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<SavedThreads>(&bytes) {
                Ok(saved) => saved.threads,
                Err(e) => {
                    let aside = path.with_extension("bad");
                    warn!(path = %path.display(), error = %e, moved_to = %aside.display(),
                        "the thread state file is unreadable; starting without threads");
                    let _ = std::fs::rename(&path, &aside);
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn!(path = %path.display(), error = %e,
                    "cannot read the thread state file; starting without threads");
                Vec::new()
            }
        };
        let map: HashMap<String, (u64, ThreadParent)> = saved
            .into_iter()
            .enumerate()
            .map(|(i, (key, parent))| (key, (i as u64, parent)))
            .collect();
        MemoryThreads {
            entries: std::sync::Mutex::new((map.len() as u64, map)),
            file: Some(path),
        }
    }

    /// Writes the file: a temporary file, flushed to disk, then renamed over the old one, so
    /// a crash leaves the old file or the new one, never half of one.
    fn save(path: &std::path::Path, map: &HashMap<String, (u64, ThreadParent)>) {
        let mut threads: Vec<(&String, &(u64, ThreadParent))> = map.iter().collect();
        threads.sort_by_key(|(_, (n, _))| *n);
        let saved = SavedThreads {
            threads: threads
                .into_iter()
                .map(|(key, (_, parent))| (key.clone(), parent.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&saved).expect("threads serialise");
        let temporary = path.with_extension("tmp");
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "could not save the thread state");
        }
    }
}

impl Default for MemoryThreads {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadStore for MemoryThreads {
    fn parent(&self, thread: &ThreadRef) -> Option<ThreadParent> {
        let entries = self.entries.lock().expect("thread lock poisoned");
        entries.1.get(&thread.key()).map(|(_, p)| p.clone())
    }

    fn remember(&self, thread: &ThreadRef, parent: ThreadParent) {
        let mut entries = self.entries.lock().expect("thread lock poisoned");
        let (counter, map) = &mut *entries;
        *counter += 1;
        map.insert(thread.key(), (*counter, parent));
        if map.len() > Self::CAPACITY {
            let oldest = map
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| k.clone())
                .expect("not empty");
            map.remove(&oldest);
        }
        if let Some(path) = &self.file {
            // A new thread starts once per rollout: rare enough to write the file each time.
            Self::save(path, map);
        }
    }
}

/// Accounts for one queued job: queue depth while it lives, exactly one outcome at the end.
struct Ticket {
    metrics: Arc<Metrics>,
    observer: Option<Arc<dyn DeliveryObserver>>,
    completion: Option<Arc<EventCompletion>>,
    receiver_type: &'static str,
    policy: Arc<PolicyId>,
    receiver: Arc<str>,
    resolved: bool,
    /// What the job counts against `queue_bytes` (given back when the job ends).
    bytes: usize,
    queued_bytes: Arc<AtomicUsize>,
    logs: Arc<DropLogs>,
    /// The destination's queue, which counts the job until it ends.
    lane: Arc<LaneState>,
    /// A request of the job is on the wire.
    sending: AtomicBool,
    /// Its place in the durable queue, removed when it reaches a final outcome.
    durable: Option<crate::durable::DurableRef>,
}

impl Ticket {
    fn resolve(&mut self, outcome: Outcome, elapsed: Duration) {
        self.resolved = true;
        if matches!(
            outcome,
            Outcome::Delivered | Outcome::Failed | Outcome::Timeout
        ) {
            if let Some(durable) = &self.durable {
                durable.done();
            }
        }
        self.report(outcome);
        self.metrics
            .delivery_duration
            .get_or_create(&ReceiverLabels {
                receiver_type: self.receiver_type,
            })
            .observe(elapsed.as_secs_f64());
    }
}

impl Ticket {
    fn report(&self, outcome: Outcome) {
        self.metrics.count_delivery(self.receiver_type, outcome);
        if matches!(
            outcome,
            Outcome::Dropped | Outcome::Unknown | Outcome::Deferred
        ) {
            if let Some(completion) = &self.completion {
                completion.dropped.store(true, Ordering::Release);
            }
        }
        if let Some(observer) = &self.observer {
            observer.finished(&self.policy, &self.receiver, outcome);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.metrics.queue_depth.dec();
        self.queued_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.lane.waiting.fetch_sub(1, Ordering::AcqRel);
        if !self.resolved {
            let (outcome, reason, message) = if self.sending.load(Ordering::Acquire) {
                (
                    Outcome::Unknown,
                    "unknown",
                    "notification in flight when Herald stopped: the receiver may have got it",
                )
            } else if self.durable.is_some() {
                (
                    Outcome::Deferred,
                    "deferred",
                    "notification not sent before Herald stopped: kept in the state dir, sent after the restart",
                )
            } else {
                (
                    Outcome::Dropped,
                    "stopped",
                    "notification dropped: Herald stopped before delivering it",
                )
            };
            self.report(outcome);
            if let Some(suppressed) = self.logs.admit(&self.policy, &self.receiver, reason) {
                warn!(policy = %self.policy, receiver = %self.receiver, suppressed, "{message}");
            }
        }
    }
}

/// Why an event's notifications were not queued (the `reason` of `herald_events_refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A receiver's queue has no room for them (`queue_capacity`).
    QueueFull,
    /// `queue_bytes` would be exceeded.
    QueueBytes,
    /// Herald is shutting down.
    Shutdown,
    /// The durable queue could not store the event.
    State,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::QueueBytes => "queue_bytes",
            Refusal::Shutdown => "shutdown",
            Refusal::State => "state",
        }
    }
}

/// An event's notifications, all queued.
pub struct Admitted {
    pub queued: usize,
    /// With a durable queue: resolves once the event is on disk (answer `202` only then).
    pub committed: Option<crate::durable::Committed>,
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

/// Drop and failure log lines, at most one a second per receiver and reason, each with the
/// count held back since the previous one.
#[derive(Default)]
pub struct DropLogs {
    limiter: Option<crate::telemetry::LogLimiter>,
}

impl DropLogs {
    fn new() -> Self {
        DropLogs {
            limiter: Some(crate::telemetry::LogLimiter::per_second()),
        }
    }

    /// `Some(held back)` when a line for this receiver and reason may be logged now.
    fn admit(&self, policy: &PolicyId, receiver: &str, reason: &str) -> Option<u64> {
        match &self.limiter {
            None => Some(0),
            Some(limiter) => limiter.admit(&format!("{reason}\n{policy}\n{receiver}")),
        }
    }
}

/// What a job holds in memory, roughly: its body, URL and headers, and the job itself.
fn job_bytes(job: &Job) -> usize {
    const OVERHEAD: usize = 512;
    OVERHEAD
        + job.body.len()
        + job.url.expose().len()
        + job
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.expose().len() + 32)
            .sum::<usize>()
}

/// The enqueueing side of one destination's queue.
#[derive(Clone)]
struct Lane {
    sender: mpsc::UnboundedSender<Job>,
    state: Arc<LaneState>,
}

/// What the worker and the enqueuers of one destination share.
struct LaneState {
    /// The queue key; also the destination's rate-limit group unless the job names one.
    key: String,
    /// The destination URL, parsed once (`None` if it does not parse: then each request
    /// reports the error).
    url: Option<reqwest::Url>,
    /// Jobs queued or being sent (retries included); bounded by `queue_capacity`.
    waiting: AtomicUsize,
    /// Requests on the wire at once (`max_in_flight`); a job waiting out its backoff gives
    /// its slot back.
    slots: tokio::sync::Semaphore,
    /// When the last request went out, for `min_interval`. Requests waiting for their turn
    /// queue on this lock (first come, first served).
    last_sent: tokio::sync::Mutex<Option<Instant>>,
}

impl Inner {
    /// When the rate-limit group may send again, if it is paused.
    fn paused_until(&self, group: &str) -> Option<Instant> {
        let until = self.paused.lock().expect("pause lock").get(group).copied();
        until.filter(|t| *t > Instant::now())
    }

    /// Waits until a request to `lane` may go out: the group is not paused by a `429`, and
    /// `min_interval` has passed since the destination's previous request (which this one
    /// then becomes).
    async fn wait_to_send(&self, lane: &LaneState, group: &str) {
        loop {
            // Another request of the group may extend the pause while this one waits.
            while let Some(until) = self.paused_until(group) {
                tokio::time::sleep_until(until.into()).await;
            }
            if self.config.min_interval.is_zero() {
                return;
            }
            let mut last = lane.last_sent.lock().await;
            if let Some(previous) = *last {
                tokio::time::sleep_until((previous + self.config.min_interval).into()).await;
            }
            // A 429 may have come back while this request waited for its turn.
            if self.paused_until(group).is_none() {
                *last = Some(Instant::now());
                return;
            }
        }
    }
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

    fn admit(
        &self,
        mut jobs: Vec<Job>,
        store: Option<(&crate::durable::Store, crate::durable::EventRecord)>,
        recovered: Option<Vec<crate::durable::DurableRef>>,
    ) -> Result<Admitted, Refusal> {
        let inner = &self.inner;
        if jobs.is_empty() {
            return Ok(Admitted {
                queued: 0,
                committed: None,
            });
        }
        let force = recovered.is_some();
        let _admission = inner.admission.lock().expect("admission lock poisoned");
        if inner.closed.load(Ordering::Acquire) {
            return Err(Refusal::Shutdown);
        }
        let sizes: Vec<usize> = jobs.iter().map(job_bytes).collect();
        let total: usize = sizes.iter().sum();
        if !force
            && inner
                .queued_bytes
                .load(Ordering::Acquire)
                .saturating_add(total)
                > inner.config.queue_bytes
        {
            return Err(Refusal::QueueBytes);
        }
        let lanes: Vec<Lane> = jobs
            .iter()
            .map(|job| self.lane_for(&job.queue_key(), job.url.expose()))
            .collect();
        if !force {
            let mut wanted: HashMap<&str, usize> = HashMap::new();
            for lane in &lanes {
                *wanted.entry(lane.state.key.as_str()).or_default() += 1;
            }
            for lane in &lanes {
                let more = wanted[lane.state.key.as_str()];
                if lane.state.waiting.load(Ordering::Acquire) + more > inner.config.queue_capacity {
                    return Err(Refusal::QueueFull);
                }
            }
        }
        // Everything fits: from here on, every job is queued.
        let (mut refs, committed) = match (store, recovered) {
            (_, Some(refs)) => (refs.into_iter().map(Some).collect::<Vec<_>>(), None),
            (Some((store, record)), None) => {
                let (event, committed) = store.append(&record);
                let refs = (0..jobs.len() as u32)
                    .map(|idx| {
                        Some(crate::durable::DurableRef {
                            event: event.clone(),
                            idx,
                        })
                    })
                    .collect();
                (refs, Some(committed))
            }
            (None, None) => ((0..jobs.len()).map(|_| None).collect(), None),
        };
        let queued = jobs.len();
        for (((mut job, bytes), lane), durable) in
            jobs.drain(..).zip(sizes).zip(lanes).zip(refs.drain(..))
        {
            inner.metrics.queue_depth.inc();
            inner.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
            lane.state.waiting.fetch_add(1, Ordering::AcqRel);
            job.committed = committed.clone();
            job.ticket = Some(Ticket {
                metrics: inner.metrics.clone(),
                observer: inner.observer.clone(),
                completion: job.completion.clone(),
                receiver_type: job.receiver_type,
                policy: job.policy.clone(),
                receiver: job.receiver.clone(),
                resolved: false,
                bytes,
                queued_bytes: inner.queued_bytes.clone(),
                logs: inner.logs.clone(),
                lane: lane.state.clone(),
                sending: AtomicBool::new(false),
                durable,
            });
            if let Err(mpsc::error::SendError(mut job)) = lane.sender.send(job) {
                // The worker is gone (shutting down): counted like a shutdown drop.
                job.finish(Outcome::Dropped);
            }
        }
        Ok(Admitted { queued, committed })
    }

    /// The queue for `key` (a URL, or for Slack bots the API URL and channel on two lines),
    /// whose jobs all go to `url`.
    fn lane_for(&self, key: &str, url: &str) -> Lane {
        if let Some(lane) = self
            .inner
            .queues
            .read()
            .expect("queue lock poisoned")
            .get(key)
        {
            return lane.clone();
        }
        let mut queues = self.inner.queues.write().expect("queue lock poisoned");
        queues
            .entry(key.to_owned())
            .or_insert_with(|| {
                // Capacity is enforced by `waiting`, which also counts the jobs the worker
                // holds back behind their canary's request in flight.
                let (sender, receiver) = mpsc::unbounded_channel();
                let state = Arc::new(LaneState {
                    key: key.to_owned(),
                    // Every job of this queue goes to this URL: parse it once, not per request.
                    url: reqwest::Url::parse(url).ok(),
                    waiting: AtomicUsize::new(0),
                    slots: tokio::sync::Semaphore::new(self.inner.config.max_in_flight.max(1)),
                    last_sent: tokio::sync::Mutex::new(None),
                });
                self.inner
                    .workers
                    .lock()
                    .expect("worker lock poisoned")
                    .spawn(run_queue(self.inner.clone(), receiver, state.clone()));
                Lane { sender, state }
            })
            .clone()
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

/// Delivers one destination's jobs: each canary's in order, one at a time. Requests on the
/// wire are bounded by the lane's slots (`max_in_flight`); a job waiting out its backoff
/// holds none, and its canary's later jobs wait behind it here.
async fn run_queue(
    inner: Arc<Inner>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    lane: Arc<LaneState>,
) {
    let mut in_flight = FuturesUnordered::new();
    // Canaries with a job being delivered, each with the jobs queued behind it.
    let mut busy: HashMap<Arc<str>, VecDeque<Job>> = HashMap::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((mut job, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                // Names the type: the stream's item type is only inferred further down.
                let job: &mut Job = &mut job;
                match outcome {
                    Some(outcome) => job.finish(outcome),
                    None => {
                        // Not stored: the event was refused, so are its notifications.
                        if let Some(ticket) = &mut job.ticket {
                            ticket.resolved = true;
                        }
                    }
                }
                match busy.get_mut(&job.order_key).and_then(VecDeque::pop_front) {
                    Some(next) => in_flight.push(send_job(inner.clone(), lane.clone(), next)),
                    None => {
                        busy.remove(&job.order_key);
                    }
                }
            }
            received = queue.recv(), if open => match received {
                None => open = false,
                Some(job) => match busy.get_mut(&job.order_key) {
                    Some(behind) => behind.push_back(job),
                    None => {
                        busy.insert(job.order_key.clone(), VecDeque::new());
                        in_flight.push(send_job(inner.clone(), lane.clone(), job));
                    }
                },
            },
            else => break,
        }
    }
}

/// Sends one job (with its retries) and hands it back with its outcome; `None` when it was
/// not stored in the durable queue (its event was refused).
async fn send_job(inner: Arc<Inner>, lane: Arc<LaneState>, job: Job) -> (Job, Option<Outcome>) {
    if let Some(committed) = job.committed.clone() {
        if !crate::durable::committed(committed).await {
            return (job, None);
        }
    }
    let target = Target {
        lane: &lane,
        parsed: lane.url.as_ref(),
        raw: &job.url,
    };
    let outcome = match (&job.slack, &job.thread) {
        (Some(slack), _) => deliver_slack(&inner, &job, slack, target).await,
        (None, Some(thread)) => deliver_google_chat(&inner, &job, thread, target).await,
        (None, None) => deliver(&inner, &job, target, &job.body, "message").await.0,
    };
    (job, Some(outcome))
}

/// Where a request goes: the queue's parsed URL when there is one, and the destination's
/// shared pacing.
#[derive(Clone, Copy)]
struct Target<'a> {
    lane: &'a LaneState,
    parsed: Option<&'a reqwest::Url>,
    raw: &'a Redacted,
}

/// A Slack bot message. The first of a rollout starts its thread (its channel and `ts` are
/// kept); later ones reply in it; the rollout's outcome also replaces the first message, so
/// the channel shows one message per rollout, coloured by how it ended. A failed outcome is
/// broadcast to the channel as well, because an edited message notifies nobody.
async fn deliver_slack(inner: &Inner, job: &Job, slack: &SlackJob, target: Target<'_>) -> Outcome {
    let Some(thread) = &job.thread else {
        return deliver(inner, job, target, &job.body, "chat.postMessage")
            .await
            .0;
    };
    let current = inner.threads.parent(thread);
    let action = thread_action(thread, current.as_ref());
    let body = match &action {
        ThreadAction::Start => job.body.clone(),
        ThreadAction::Reply { parent, .. } => Bytes::from(herald_core::request::slack_reply(
            &job.body,
            &parent.ts,
            thread.broadcast,
        )),
    };
    let (outcome, posted) = deliver(inner, job, target, &body, "chat.postMessage").await;
    if outcome != Outcome::Delivered {
        return outcome;
    }
    match action {
        ThreadAction::Start => match posted {
            Some(posted) => inner
                .threads
                .remember(thread, thread.parent_at(posted.channel, posted.ts)),
            None => warn!(
                policy = %job.policy, receiver = %job.receiver,
                "Slack's answer did not name the message: the rollout's later messages will not be threaded under it"
            ),
        },
        ThreadAction::Reply { parent, bind } => {
            if bind {
                inner.threads.remember(
                    thread,
                    thread.parent_at(parent.channel.clone(), parent.ts.clone()),
                );
            }
            if thread.outcome {
                update_first_message(inner, job, slack, parent, target.lane).await;
            }
        }
    }
    outcome
}

/// Replaces a rollout's first Slack message by the message carrying its outcome.
async fn update_first_message(
    inner: &Inner,
    job: &Job,
    slack: &SlackJob,
    parent: &ThreadParent,
    lane: &LaneState,
) {
    let update = Bytes::from(herald_core::request::slack_update(
        &job.body,
        &parent.channel,
        &parent.ts,
    ));
    let update_url = Redacted::new(slack.update_url.clone());
    let target = Target {
        lane,
        parsed: None,
        raw: &update_url,
    };
    let (updated, _) = deliver(inner, job, target, &update, "chat.update").await;
    if updated != Outcome::Delivered {
        // The reply carrying the outcome was delivered: the notification counts as
        // delivered; only the first message still shows the rollout in progress.
        warn!(
            policy = %job.policy, receiver = %job.receiver,
            "the rollout's first Slack message was not updated with its outcome"
        );
    }
}

/// A Google Chat message in its rollout's thread: Chat threads by a key Herald chooses, so a
/// new rollout gets a new key (`<namespace>/<canary>/<event ms>`), kept like a Slack parent.
async fn deliver_google_chat(
    inner: &Inner,
    job: &Job,
    thread: &ThreadRef,
    target: Target<'_>,
) -> Outcome {
    let current = inner.threads.parent(thread);
    let action = thread_action(thread, current.as_ref());
    let key = match &action {
        ThreadAction::Start => herald_core::request::google_chat_thread_key(thread),
        ThreadAction::Reply { parent, .. } => parent.ts.clone(),
    };
    let body = Bytes::from(herald_core::request::google_chat_in_thread(&job.body, &key));
    let (outcome, _) = deliver(inner, job, target, &body, "message").await;
    let remember = match &action {
        ThreadAction::Start => true,
        ThreadAction::Reply { bind, .. } => *bind,
    };
    if outcome == Outcome::Delivered && remember {
        // Chat names threads by key alone: there is no channel to keep.
        inner
            .threads
            .remember(thread, thread.parent_at(String::new(), key));
    }
    outcome
}

/// A message Slack posted: the channel ID and timestamp that identify it.
struct Posted {
    channel: String,
    ts: String,
}

/// Why an attempt failed, and whether to try again.
enum AttemptError {
    Retry {
        detail: String,
        retry_after: Option<Duration>,
        /// The request was sent and no answer came in time.
        timed_out: bool,
    },
    Permanent {
        detail: String,
    },
}

/// Sends `body` with retries. For Slack bots, also returns the message Slack posted.
async fn deliver(
    inner: &Inner,
    job: &Job,
    target: Target<'_>,
    body: &Bytes,
    request: &'static str,
) -> (Outcome, Option<Posted>) {
    let config = &inner.config;
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_jitter()
        .without_max_times()
        .build();
    let labels = ReceiverLabels {
        receiver_type: job.receiver_type,
    };
    // A `429` pauses the whole group: every channel of a Slack token, else the destination
    // (whose other canaries' requests may be in flight).
    let group = match &job.slack {
        Some(slack) => slack.rate_limit_group.as_str(),
        None => target.lane.key.as_str(),
    };
    for attempt in 1..=config.max_attempts {
        // One of the destination's request slots, for this attempt only.
        let _slot = target
            .lane
            .slots
            .acquire()
            .await
            .expect("slots are never closed");
        inner.wait_to_send(target.lane, group).await;
        if !job.completion.as_ref().is_none_or(|c| c.may_send()) {
            warn!(
                policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                request, attempt, "notification not sent: this replica's lease may have expired; the new leader sends it"
            );
            return (Outcome::Dropped, None);
        }
        inner.metrics.delivery_attempts.get_or_create(&labels).inc();
        job.sending(true);
        let attempted = attempt_once(inner, job, target, body).await;
        job.sending(false);
        match attempted {
            Ok((status, posted)) => {
                info!(
                    policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                    request, attempt, status = status.as_u16(), "notification delivered"
                );
                return (Outcome::Delivered, posted);
            }
            Err(AttemptError::Permanent { detail }) => {
                if let Some(suppressed) = inner.logs.admit(&job.policy, &job.receiver, "failed") {
                    error!(
                        policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                        request, attempt, error = %detail, suppressed, "notification failed; not retrying"
                    );
                }
                return (Outcome::Failed, None);
            }
            Err(AttemptError::Retry {
                detail,
                retry_after,
                timed_out,
            }) => {
                if attempt == config.max_attempts {
                    if let Some(suppressed) = inner.logs.admit(&job.policy, &job.receiver, "failed")
                    {
                        error!(
                            policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                            request, attempt, error = %detail, suppressed, timed_out,
                            "{}", if timed_out {
                                "notification timed out on the last attempt: the receiver may have it"
                            } else {
                                "notification failed after the last attempt"
                            }
                        );
                    }
                    // A request that timed out once sent may have reached the receiver.
                    let outcome = if timed_out {
                        Outcome::Timeout
                    } else {
                        Outcome::Failed
                    };
                    return (outcome, None);
                }
                let delay = match retry_after {
                    Some(asked) => asked.min(config.max_retry_after),
                    None => backoff.next().unwrap_or(config.max_backoff),
                };
                if retry_after.is_some() {
                    let until = Instant::now() + delay;
                    let mut paused = inner.paused.lock().expect("pause lock");
                    let entry = paused.entry(group.to_owned()).or_insert(until);
                    *entry = (*entry).max(until);
                }
                if let Some(suppressed) = inner.logs.admit(&job.policy, &job.receiver, "retry") {
                    warn!(
                        policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                        request, attempt, error = %detail, retry_in = ?delay, suppressed,
                        "notification attempt failed; retrying"
                    );
                }
                drop(_slot);
                tokio::time::sleep(delay).await;
            }
        }
    }
    (Outcome::Failed, None)
}

async fn attempt_once(
    inner: &Inner,
    job: &Job,
    target: Target<'_>,
    body: &Bytes,
) -> Result<(StatusCode, Option<Posted>), AttemptError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if job.slack.is_some() {
            // Slack's Web API warns about JSON without a charset.
            "application/json; charset=utf-8"
        } else {
            "application/json"
        }),
    );
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))),
    );
    for header in &job.headers {
        match (
            HeaderName::try_from(header.name.as_str()),
            HeaderValue::try_from(header.value.expose()),
        ) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(header.sensitive);
                headers.insert(name, value);
            }
            _ => {
                // Headers are validated when the policy loads; this guards the request.
                return Err(AttemptError::Permanent {
                    detail: format!("invalid header {:?}", header.name),
                });
            }
        }
    }
    let method = match job.method {
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
    };
    let request = match target.parsed {
        Some(url) => inner.client.request(method, url.clone()),
        None => inner.client.request(method, target.raw.expose()),
    };
    let response = request
        .headers(headers)
        .body(body.clone())
        .send()
        .await
        .map_err(|e| AttemptError::Retry {
            detail: describe(&e),
            retry_after: None,
            timed_out: e.is_timeout() && !e.is_connect(),
        })?;
    let status = response.status();
    if status.is_success() {
        if job.slack.is_none() {
            return Ok((status, None));
        }
        let answer = response.bytes().await.unwrap_or_default();
        return match herald_core::request::slack_answer(&answer) {
            SlackAnswer::Posted { channel, ts } => Ok((status, Some(Posted { channel, ts }))),
            SlackAnswer::Unreadable => {
                warn!(
                    policy = %job.policy, receiver = %job.receiver,
                    status = status.as_u16(), "Slack answered success with an unreadable body; not sending again"
                );
                Ok((status, None))
            }
            SlackAnswer::Error { code, retry } => {
                let detail = format!("Slack answered ok=false: {code}");
                if retry {
                    Err(AttemptError::Retry {
                        detail,
                        retry_after: None,
                        timed_out: false,
                    })
                } else {
                    Err(AttemptError::Permanent { detail })
                }
            }
        };
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(parse_retry_after);
    let snippet = snippet(&response.bytes().await.unwrap_or_default());
    let detail = format!("HTTP {}: {snippet}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(AttemptError::Retry {
            detail,
            retry_after,
            timed_out: false,
        })
    } else {
        debug!(
            status = status.as_u16(),
            "receiver rejected the notification"
        );
        Err(AttemptError::Permanent { detail })
    }
}

/// `Retry-After` as seconds (Discord sends fractions, e.g. `0.35`) or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of a response body, on one line, for logs, with anything that looks like a
/// credential redacted (see [`redact`]): a receiver or proxy may echo the request.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut line = redact(&line);
    if body.len() > MAX {
        line.push('…');
    }
    line
}

/// `text` with every word that may be a credential replaced by `[redacted]`: URLs and paths
/// (webhook URLs carry their token), query strings and `key=value` pairs, Slack tokens
/// (`xox.-`), the word after `Bearer`, `Basic` or `token`, and long runs of letters and
/// digits (API keys, signatures). What remains is the receiver's own wording.
pub fn redact(text: &str) -> String {
    const REDACTED: &str = "[redacted]";
    let mut out = String::with_capacity(text.len());
    let mut redact_next = false;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| "\"'`,;()[]{}<>".contains(c));
        let lower = bare.to_ascii_lowercase();
        let secret = redact_next
            || bare.contains("://")
            || (bare.starts_with('/') && bare.len() > 1)
            || bare.contains('?')
            || bare.contains('=')
            || bare.contains('@')
            || lower.starts_with("xox")
            || lower.contains("hooks.")
            || looks_like_key(bare);
        redact_next = matches!(
            lower.trim_end_matches(':'),
            "bearer" | "basic" | "token" | "authorization" | "apikey" | "api-key" | "secret"
        );
        if secret && !bare.is_empty() {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
    }
    out
}

/// 16 or more characters of letters, digits, `-` and `_`, with both letters and digits.
fn looks_like_key(word: &str) -> bool {
    word.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .any(|run| {
            run.len() >= 16
                && run.chars().any(|c| c.is_ascii_digit())
                && run.chars().any(|c| c.is_ascii_alphabetic())
        })
}

/// A transport error without its URL (reqwest puts the full URL, credentials included, in
/// its messages).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.contains("://") && !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_redacted() {
        let echoed = "invalid_payload: POST /services/T000/B000/XXXXsecret HTTP/1.1 Authorization: Bearer abc.def token=xoxb-1111-2222-abcdefABCDEF url https://hooks.slack.com/services/T/B/C?x=1 key 0123456789abcdefABCD";
        let redacted = redact(echoed);
        for secret in [
            "/services",
            "abc.def",
            "xoxb",
            "hooks.slack",
            "0123456789abcdef",
        ] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(
            redacted.starts_with("invalid_payload: POST [redacted] HTTP/1.1"),
            "{redacted}"
        );
        assert_eq!(redact("channel_not_found"), "channel_not_found");
        assert_eq!(
            redact("Bad Request: missing text"),
            "Bad Request: missing text"
        );
        assert_eq!(snippet(b"{\"error\":\"nope\"}"), "{\"error\":\"nope\"}");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let parsed = parse_retry_after(&HeaderValue::from_str(&soon).unwrap()).unwrap();
        assert!(
            parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("0.35")),
            Some(Duration::from_millis(350))
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("-1.5")), None);
    }

    #[test]
    fn snippets_are_one_bounded_line() {
        assert_eq!(snippet(b"no_service\n"), "no_service ");
        let long = vec![b'x'; 500];
        assert_eq!(snippet(&long).chars().count(), 201);
    }
}
