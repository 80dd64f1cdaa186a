//! One notification to send, and the accounting that gives each exactly one outcome.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::policy::CompiledReceiver;
use herald_core::receivers::{ReceiverKind, RequestSpec, ThreadRef};
use herald_core::{PolicyId, Redacted};
use tracing::warn;

use super::lane::LaneState;
use super::DeliveryObserver;
use crate::metrics::{Metrics, Outcome, ReceiverLabels};

/// Runs a callback once every notification of one event has reached an outcome, unless one
/// of them was dropped (then the event counts as not handled, and is retried after a restart).
/// Shared by the event's jobs: the last one to finish drops it.
pub struct EventCompletion {
    pub(super) dropped: AtomicBool,
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

    pub(super) fn may_send(&self) -> bool {
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
    /// The receiver's kind: the plan of requests, and how its service's answers read.
    pub kind: Arc<dyn ReceiverKind>,
    /// Method, headers, credentials; shared by every notification to the receiver.
    pub request: Arc<RequestSpec>,
    pub body: Bytes,
    /// Appended to `url` for this notification (see `ReceiverKind::path`).
    pub path: Option<String>,
    /// Set for receivers that thread rollouts.
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
    pub(super) committed: Option<crate::durable::Committed>,
    pub(super) ticket: Option<Ticket>,
}

impl Job {
    /// A notification with `body` for `receiver` of `policy`.
    pub fn new(
        policy: Arc<PolicyId>,
        receiver: &CompiledReceiver,
        body: Bytes,
        received_at: Instant,
    ) -> Self {
        Job {
            policy,
            receiver: Arc::from(receiver.name.as_str()),
            receiver_type: receiver.type_name,
            url: receiver.url.clone(),
            kind: receiver.kind.clone(),
            request: receiver.request.clone(),
            body,
            thread: None,
            path: None,
            received_at,
            completion: None,
            order_key: Arc::from(""),
            committed: None,
            ticket: None,
        }
    }

    /// Jobs of one queue are delivered in order: by URL, and within it by the kind's queue
    /// when it has one (receivers sharing a Web API URL).
    pub(super) fn queue_key(&self) -> std::borrow::Cow<'_, str> {
        match self.kind.queue() {
            Some(queue) => format!("{}\n{queue}", self.url.expose()).into(),
            None => self.url.expose().into(),
        }
    }

    pub(super) fn finish(&mut self, outcome: Outcome) {
        if let Some(mut ticket) = self.ticket.take() {
            ticket.resolve(outcome, self.received_at.elapsed());
        }
    }

    /// Marks the request as on the wire (or not): a job dropped meanwhile counts as unknown.
    pub(super) fn sending(&self, on: bool) {
        if let Some(ticket) = &self.ticket {
            ticket.sending.store(on, Ordering::Release);
        }
    }
}
/// Accounts for one queued job: queue depth while it lives, exactly one outcome at the end.
pub(super) struct Ticket {
    pub(super) metrics: Arc<Metrics>,
    pub(super) observer: Option<Arc<dyn DeliveryObserver>>,
    pub(super) completion: Option<Arc<EventCompletion>>,
    pub(super) receiver_type: &'static str,
    pub(super) policy: Arc<PolicyId>,
    pub(super) receiver: Arc<str>,
    pub(super) resolved: bool,
    /// What the job counts against `queue_bytes` (given back when the job ends).
    pub(super) bytes: usize,
    pub(super) queued_bytes: Arc<AtomicUsize>,
    pub(super) logs: Arc<DropLogs>,
    /// The destination's queue, which counts the job until it ends.
    pub(super) lane: Arc<LaneState>,
    /// A request of the job is on the wire.
    pub(super) sending: AtomicBool,
    /// Its place in the durable queue, removed when it reaches a final outcome.
    pub(super) durable: Option<crate::durable::DurableRef>,
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
/// Drop and failure log lines, at most one a second per receiver and reason, each with the
/// count held back since the previous one.
#[derive(Default)]
pub(super) struct DropLogs {
    limiter: Option<crate::telemetry::LogLimiter>,
}

impl DropLogs {
    pub(super) fn new() -> Self {
        DropLogs {
            limiter: Some(crate::telemetry::LogLimiter::per_second()),
        }
    }

    /// `Some(held back)` when a line for this receiver and reason may be logged now.
    pub(super) fn admit(&self, policy: &PolicyId, receiver: &str, reason: &str) -> Option<u64> {
        match &self.limiter {
            None => Some(0),
            Some(limiter) => limiter.admit(&format!("{reason}\n{policy}\n{receiver}")),
        }
    }
}
/// What a job holds in memory, roughly: its body, URL and headers, and the job itself.
pub(super) fn job_bytes(job: &Job) -> usize {
    const OVERHEAD: usize = 512;
    let request = &job.request;
    OVERHEAD
        + job.body.len()
        + job.url.expose().len()
        + request
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 32)
            .sum::<usize>()
        + request.bearer_token.as_ref().map_or(0, |token| {
            "Authorization".len() + 7 + token.expose().len() + 32
        })
        + request
            .signature
            .as_ref()
            .map_or(0, |signature| signature.header.len() + 71 + 32)
}
