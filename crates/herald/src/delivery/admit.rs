//! Admission: an event's notifications are queued all together or not at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::job::{job_bytes, Ticket};
use super::lane::{run_queue, Lane, LaneState};
use super::{Dispatcher, Job};
use crate::metrics::Outcome;

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
impl Dispatcher {
    pub(super) fn admit(
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
    pub(super) fn lane_for(&self, key: &str, url: &str) -> Lane {
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
}
