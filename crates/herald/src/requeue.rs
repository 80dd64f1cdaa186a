//! What the durable queue (`--state-dir`) still owed at start-up, queued again: each stored
//! event is rendered again from the event as received and the policies in force now, and
//! only its notifications not yet finished are queued, in event order (so per canary), before
//! any new event is accepted. `herald serve` does it before it listens; the controller once
//! its policies are loaded.

use std::collections::HashMap;

use herald_core::{FlaggerEvent, MatchInput};
use tracing::{info, warn};

use crate::api::{Admission, AppState};
use crate::delivery::Job;
use crate::durable::{DurableEvent, DurableRef, Recovered, Store, StoredJob};
use crate::pipeline::build_jobs;

/// What [`requeue`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Stored events with notifications queued again.
    pub events: usize,
    pub notifications: usize,
    /// Notifications that cannot be sent again (the event is unreadable, or its policy or
    /// receiver is gone): logged and removed from the store.
    pub forgotten: usize,
}

/// Queues again what `events` still owe. `admit` is asked about each event that was POSTed
/// to `/events` (not to one policy), as the intake asks about a new one: the controller pairs
/// it with the same action's Kubernetes Event there, so a recovered report and the Event
/// re-listed after the restart are sent once between them.
pub fn requeue(
    state: &AppState,
    store: &Store,
    events: Vec<Recovered>,
    mut admit: impl FnMut(&FlaggerEvent) -> Admission,
) -> Requeued {
    let policies = state.policies.load_full();
    let mut done = Requeued::default();
    for recovered in events {
        let record = &recovered.record;
        let durable = DurableEvent::new(store, recovered.seq, recovered.pending.len() as u32);
        let forget = |done: &mut Requeued| {
            for idx in &recovered.pending {
                DurableRef {
                    event: durable.clone(),
                    idx: *idx,
                }
                .done();
            }
            done.forgotten += recovered.pending.len();
        };
        let parsed = FlaggerEvent::from_json(record.event.as_bytes());
        let only = record.only.as_ref().map(|p| policies.find(&p.id()));
        let (event, only) = match (parsed, only) {
            (Ok(event), None) => (event, None),
            (Ok(event), Some(Some(index))) => (event, Some(index)),
            (parsed, _) => {
                warn!(
                    seq = recovered.seq, error = ?parsed.err().map(|e| e.to_string()),
                    "a stored event cannot be sent again (unreadable, or its policy is gone); forgetting it"
                );
                forget(&mut done);
                continue;
            }
        };
        let completion = match only {
            Some(_) => None,
            None => match admit(&event) {
                Admission::Send(completion) => completion,
                Admission::Duplicate => {
                    info!(
                        seq = recovered.seq, canary = %event.name, namespace = %event.namespace,
                        "a stored event was already sent from its Kubernetes Event; forgetting it"
                    );
                    forget(&mut done);
                    continue;
                }
            },
        };
        let mut built: HashMap<StoredJob, Job> = build_jobs(
            &policies,
            &MatchInput::event(&event),
            only,
            std::time::Instant::now(),
            completion,
            &state.metrics,
        )
        .into_iter()
        .map(|(job, _, stored)| (stored, job))
        .collect();
        let mut jobs = Vec::new();
        for idx in &recovered.pending {
            let reference = DurableRef {
                event: durable.clone(),
                idx: *idx,
            };
            let job = record
                .jobs
                .get(*idx as usize)
                .and_then(|stored| built.remove(stored));
            match job {
                Some(job) => jobs.push((job, reference)),
                None => {
                    warn!(
                        seq = recovered.seq, canary = %event.name, namespace = %event.namespace,
                        "a stored notification's policy or receiver no longer matches the event; forgetting it"
                    );
                    done.forgotten += 1;
                    reference.done();
                }
            }
        }
        done.events += 1;
        // As the pipeline does: a recovered failure starts its repeat, a success closes one.
        let repeats = crate::reposts::repeats_of(&event, jobs.iter().map(|(job, _)| job));
        let mut open = state.open.lock();
        done.notifications += state.dispatcher.enqueue_recovered(jobs);
        open.observe(&event, &policies, repeats, state.open.is_active());
        drop(open);
    }
    done
}
