//! One destination's queue and its worker: each canary's notifications in order, different
//! canaries' concurrently up to `max_in_flight`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::send::send_job;
use super::{Inner, Job};

/// The enqueueing side of one destination's queue.
#[derive(Clone)]
pub(super) struct Lane {
    pub(super) sender: mpsc::UnboundedSender<Job>,
    pub(super) state: Arc<LaneState>,
}

/// What the worker and the enqueuers of one destination share.
pub(super) struct LaneState {
    /// The queue key; also the destination's rate-limit group unless the job names one.
    pub(super) key: String,
    /// The destination URL, parsed once (`None` if it does not parse: then each request
    /// reports the error).
    pub(super) url: Option<reqwest::Url>,
    /// Jobs queued or being sent (retries included); bounded by `queue_capacity`.
    pub(super) waiting: AtomicUsize,
    /// Requests on the wire at once (`max_in_flight`); a job waiting out its backoff gives
    /// its slot back.
    pub(super) slots: tokio::sync::Semaphore,
    /// When the last request went out, for `min_interval`. Requests waiting for their turn
    /// queue on this lock (first come, first served).
    pub(super) last_sent: tokio::sync::Mutex<Option<Instant>>,
}
impl Inner {
    /// When the rate-limit group may send again, if it is paused.
    pub(super) fn paused_until(&self, group: &str) -> Option<Instant> {
        let until = self.paused.lock().expect("pause lock").get(group).copied();
        until.filter(|t| *t > Instant::now())
    }

    /// Waits until a request to `lane` may go out: the group is not paused by a `429`, and
    /// `min_interval` has passed since the destination's previous request (which this one
    /// then becomes).
    pub(super) async fn wait_to_send(&self, lane: &LaneState, group: &str) {
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
/// Delivers one destination's jobs: each canary's in order, one at a time. Requests on the
/// wire are bounded by the lane's slots (`max_in_flight`); a job waiting out its backoff
/// holds none, and its canary's later jobs wait behind it here.
pub(super) async fn run_queue(
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
