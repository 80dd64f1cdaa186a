//! The one path from an event to queued notifications, for the HTTP intake and the
//! controller alike: match → render → hold repeats (`repeatInterval`) → enqueue (all or
//! none, and into the durable queue when there is one).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_core::repeats::{repeat_key, RepeatFilter};
use herald_core::{MatchInput, PolicySet};
use tracing::{debug, warn};

use crate::api::AppState;
use crate::delivery::{Admitted, EventCompletion, Job, Refusal};
use crate::durable::{EventRecord, StoredJob, StoredPolicy};
use crate::metrics::Metrics;

/// When repeated messages may next be sent, on a clock started with Herald.
pub struct Repeats {
    pub(crate) filter: std::sync::Mutex<RepeatFilter>,
    started: Instant,
}

impl Default for Repeats {
    fn default() -> Self {
        Repeats {
            filter: Default::default(),
            started: Instant::now(),
        }
    }
}

impl Repeats {
    /// Milliseconds since Herald started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Takes back the marks of repeats that were not sent after all.
    fn unmark(&self, sent: &[(u64, u64)], at_ms: u64) {
        let mut filter = self.filter.lock().expect("repeat filter lock poisoned");
        for (key, interval) in sent {
            filter.unmark(*key, *interval, at_ms);
        }
    }
}

/// A rendered notification, its `repeatInterval` key and interval, and what the durable
/// queue keeps of it.
pub type BuiltJob = (Job, Option<(u64, u64)>, StoredJob);

/// Renders every delivery for the event, with its `repeatInterval` key and what the durable
/// queue keeps of it.
pub fn build_jobs(
    policies: &PolicySet,
    input: &MatchInput<'_>,
    only: Option<u32>,
    received_at: Instant,
    completion: Option<Arc<EventCompletion>>,
    metrics: &Metrics,
) -> Vec<BuiltJob> {
    let mut jobs = Vec::new();
    // The canary orders its notifications to each receiver; made once, shared by its jobs.
    let mut order_key: Option<Arc<str>> = None;
    for result in policies.notifications(input, only) {
        match result {
            Ok(delivery) => {
                let policy = policies.policy(delivery.policy);
                let receiver = &policy.receivers[delivery.receiver as usize];
                let mut job = Job::new(
                    Arc::new(policy.id.clone()),
                    receiver,
                    Bytes::from(delivery.body),
                    received_at,
                );
                job.thread = delivery.thread;
                job.path = delivery.path;
                job.completion = completion.clone();
                job.order_key = order_key
                    .get_or_insert_with(|| {
                        format!("{}/{}", input.event.namespace, input.event.name).into()
                    })
                    .clone();
                let repeat = policy.repeat_interval_ms.map(|interval| {
                    (
                        repeat_key(&policy.id, &receiver.name, input.event),
                        interval,
                    )
                });
                let stored = StoredJob {
                    policy: StoredPolicy::from(&policy.id),
                    receiver: receiver.name.clone(),
                };
                jobs.push((job, repeat, stored));
            }
            Err(failure) => {
                metrics.render_failures.inc();
                let policy = policies.policy(failure.policy);
                warn!(
                    policy = %policy.id,
                    receiver = %policy.receivers[failure.receiver as usize].name,
                    error = %failure.error,
                    "template failed for this event; notification not sent"
                );
            }
        }
    }
    jobs
}

/// Renders and queues every delivery for the event, all or none: `Err` when one of them
/// cannot be queued (nothing is queued then, and `completion` is abandoned). Each job
/// carries `completion`, so its owner learns when all of them have an outcome. With `raw`
/// (the event as received) and a durable queue, the event is stored too.
pub fn dispatch(
    state: &AppState,
    policies: &PolicySet,
    input: &MatchInput<'_>,
    only: Option<u32>,
    received_at: Instant,
    completion: Option<Arc<EventCompletion>>,
    raw: Option<&[u8]>,
) -> Result<Admitted, Refusal> {
    let built = build_jobs(
        policies,
        input,
        only,
        received_at,
        completion.clone(),
        &state.metrics,
    );
    // Held while queueing (queueing does not block), so two reports of one message
    // arriving together cannot both pass.
    let mut filter = state
        .repeats
        .filter
        .lock()
        .expect("repeat filter lock poisoned");
    let now_ms = state.repeats.now_ms();
    let mut jobs = Vec::with_capacity(built.len());
    let mut stored = Vec::with_capacity(built.len());
    let mut sent = Vec::new();
    for (job, repeat, kept) in built {
        if let Some((key, interval)) = repeat {
            if filter.is_held(key, now_ms) {
                state.metrics.repeats_held.inc();
                debug!(
                    policy = %job.policy, receiver = %job.receiver,
                    "repeated message held back (repeatInterval)"
                );
                continue;
            }
            sent.push((key, interval));
        }
        jobs.push(job);
        stored.push(kept);
    }
    let store = match (&state.store, raw) {
        (Some(store), Some(raw)) if !jobs.is_empty() => Some((
            store,
            EventRecord {
                event: String::from_utf8_lossy(raw).into_owned(),
                only: only.map(|index| StoredPolicy::from(&policies.policy(index).id)),
                jobs: stored,
            },
        )),
        _ => None,
    };
    let repeats = crate::reposts::repeats_of(input.event, &jobs);
    let mut open = state.open.lock();
    let mut admitted = state.dispatcher.enqueue_all(jobs, store);
    match &mut admitted {
        Ok(admitted) => {
            open.observe(input.event, policies, repeats, state.open.is_active());
            for (key, interval) in &sent {
                filter.mark_sent(*key, *interval, now_ms);
            }
            // Held from now (a report arriving meanwhile is a repeat), but only sent once the
            // event is stored: if it is refused (503), the sender's retry must not be held.
            match admitted.committed.take() {
                Some(gate) if !sent.is_empty() => {
                    let repeats = state.repeats.clone();
                    admitted.committed = Some(crate::durable::after_failure(gate, move || {
                        repeats.unmark(&sent, now_ms)
                    }));
                }
                gate => admitted.committed = gate,
            }
        }
        Err(_) => {
            if let Some(completion) = &completion {
                completion.abandon();
            }
        }
    }
    admitted
}
