//! Reminders and escalations: a gate that has waited a policy's `remindAfter` is asked again
//! in its thread, and after `escalateAfter` the policy's `escalateTo` receivers are asked.
//! Each happens once per revision and gate (marked in its record, so replicas do not both
//! send it), and only for a canary's newest revision: an older one was superseded, not
//! forgotten.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_api::{ApprovalSpec, GateType};
use herald_core::gates::{last_asked, waiting, RevisionKey};
use tokio::sync::watch;
use tracing::warn;

use super::announce::{asks, AskReason};
use super::now_ms;
use crate::api::AppState;

/// Checks every `every` until `stop` says so.
pub async fn run_reminders(state: AppState, mut stop: watch::Receiver<bool>, every: Duration) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            // The watch's guard is dropped here, before anything awaits.
            _ = stop.wait_for(|stop| *stop) => true,
        };
        if stopping {
            return;
        }
        remind_once(&state).await;
    }
}

fn newest_per_canary(
    records: Vec<(RevisionKey, ApprovalSpec)>,
) -> Vec<(RevisionKey, ApprovalSpec)> {
    let mut newest: BTreeMap<(String, String), (String, RevisionKey, ApprovalSpec)> =
        BTreeMap::new();
    for (key, record) in records {
        let at = last_asked(&record).to_owned();
        let slot = (key.namespace.clone(), key.canary.clone());
        if newest.get(&slot).is_none_or(|(known, _, _)| at > *known) {
            newest.insert(slot, (at, key, record));
        }
    }
    newest
        .into_values()
        .map(|(_, key, record)| (key, record))
        .collect()
}

#[derive(Clone, Copy)]
enum Step {
    Remind,
    Escalate,
}

/// Sends the reminders and escalations that are due.
pub async fn remind_once(state: &AppState) {
    let now = now_ms();
    let policies = state.policies.load_full();
    for (key, record) in newest_per_canary(state.gates.store.all()) {
        let due: Vec<(GateType, i64, bool, bool)> = waiting(&record, now)
            .into_iter()
            .map(|(asked, waited)| (asked.gate, waited, asked.reminded, asked.escalated))
            .collect();
        for (gate, waited, reminded, escalated) in due {
            let matched = super::answering(&policies, &key, "Progressing", gate);
            let after = |index: &u32, step: Step| {
                let gates = policies.policy(*index).gates.as_deref()?;
                match step {
                    Step::Remind => gates.remind_after_ms,
                    Step::Escalate => gates.escalate_after_ms,
                }
            };
            for (step, done) in [(Step::Remind, reminded), (Step::Escalate, escalated)] {
                let due: Vec<u32> = matched
                    .iter()
                    .filter(|i| after(i, step).is_some_and(|ms| waited >= ms as i64))
                    .copied()
                    .collect();
                if done || due.is_empty() {
                    continue;
                }
                let marked = state
                    .gates
                    .store
                    .update(
                        &key,
                        Box::new(move |record| {
                            let Some(asked) = record.asked.iter_mut().find(|a| a.gate == gate)
                            else {
                                return false;
                            };
                            let flag = match step {
                                Step::Remind => &mut asked.reminded,
                                Step::Escalate => &mut asked.escalated,
                            };
                            !std::mem::replace(flag, true)
                        }),
                    )
                    .await;
                let waited = Duration::from_millis(waited.max(0) as u64);
                let reason = match step {
                    Step::Remind => AskReason::Reminder(waited),
                    Step::Escalate => AskReason::Escalation(waited),
                };
                match marked {
                    Ok(Some(_)) => asks(state, &policies, &key, "Progressing", gate, &due, reason),
                    Ok(None) => {}
                    Err(e) => warn!(canary = %key.canary, namespace = %key.namespace, error = %e,
                        "cannot record a gate reminder; trying again later"),
                }
            }
        }
    }
}
