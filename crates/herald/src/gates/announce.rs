//! What the receivers are told about gates: asks (the first time a gate waits, reminders,
//! escalations) and decisions, each rendered through the policy's receivers like any event
//! of the canary, so Slack bots post them in the rollout's thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_api::{Decision, EventType, GateType, Verdict};
use herald_core::gates::RevisionKey;
use herald_core::policy::Ask;
use herald_core::{FlaggerEvent, MatchInput, Notification, PolicySet, RenderFailure};
use tracing::warn;

use super::{capitalised, now_ms};
use crate::api::AppState;
use crate::delivery::Job;

/// Why an ask is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskReason {
    /// The gate was asked for the first time for this revision.
    First,
    /// It has waited this long: the asked receivers are reminded.
    Reminder(Duration),
    /// It has waited this long: the escalation receivers are asked.
    Escalation(Duration),
}

/// The ask's message, without links.
pub fn ask_message(key: &RevisionKey, gate: GateType, reason: AskReason) -> String {
    let what = gate.waiting();
    let waited = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    match reason {
        AskReason::First => format!("{} of {key} waits for approval.", capitalised(what)),
        AskReason::Reminder(d) => {
            format!(
                "Reminder: the {what} of {key} has waited {} for approval.",
                waited(d)
            )
        }
        AskReason::Escalation(d) => format!(
            "Escalated: the {what} of {key} has waited {} for approval.",
            waited(d)
        ),
    }
}

/// Sends the ask for `gate` of `key` through each of `matched` (policies answering it).
pub fn asks(
    state: &AppState,
    policies: &PolicySet,
    key: &RevisionKey,
    phase: &str,
    gate: GateType,
    matched: &[u32],
    reason: AskReason,
) {
    let message = ask_message(key, gate, reason);
    let event = FlaggerEvent::new(
        &key.canary,
        &key.namespace,
        phase,
        message.clone(),
        EventType::Warning,
        now_ms() as u64,
    )
    .with_checksum(&key.revision);
    let received_at = Instant::now();
    for &index in matched {
        let policy = policies.policy(index);
        let Some(gates) = &policy.gates else { continue };
        let receivers = match reason {
            AskReason::Escalation(_) => &gates.escalate_to,
            _ => &gates.ask,
        };
        let links = gates.takes_links().then(|| {
            let approve = state.gates.link(key, gate, Verdict::Approve, &policy.id);
            let rollback = state.gates.link(key, gate, Verdict::Rollback, &policy.id);
            approve.zip(rollback)
        });
        let how = match links.flatten() {
            Some((approve, rollback)) => format!("\nApprove: {approve}\nRoll back: {rollback}"),
            None => format!(
                "\nDecide with: herald gate approve {kube}{ns}/{canary} (or: herald gate rollback {kube}{ns}/{canary})",
                // In a cluster terminals decide through the Approvals.
                kube = if state.gates.decisions_over_http { "" } else { "--kube " },
                ns = key.namespace,
                canary = key.canary
            ),
        };
        let mut with_links = event.clone();
        with_links.metadata.insert(
            herald_core::event::MESSAGE_KEY.to_owned(),
            format!("{message}{how}"),
        );
        let ask = Ask {
            event: &event,
            with_links: &with_links,
            gate,
            buttons: state.gates.slack_signing_secret.is_some(),
        };
        let notifications = policies.ask_notifications(index, receivers, &ask, None);
        enqueue(state, policies, notifications, key, received_at);
    }
}

/// Announces a decision to every policy answering the canary's gates, in the rollout's
/// thread where there is one.
pub fn decision(state: &AppState, key: &RevisionKey, decision: &Decision) {
    let policies = state.policies.load_full();
    let (event_type, phase) = match decision.verdict {
        Verdict::Approve => (EventType::Normal, "Progressing"),
        Verdict::Rollback => (EventType::Warning, "Progressing"),
    };
    let event = FlaggerEvent::new(
        &key.canary,
        &key.namespace,
        phase,
        super::sentence(key, decision),
        event_type,
        now_ms() as u64,
    )
    .with_checksum(&key.revision);
    let input = MatchInput::event(&event);
    let received_at = Instant::now();
    let mut seen = Vec::new();
    for gate in GateType::ALL {
        for index in policies.gate_policies(&input, gate) {
            if seen.contains(&index) {
                continue;
            }
            seen.push(index);
            let Some(gates) = &policies.policy(index).gates else {
                continue;
            };
            let notifications = policies.receiver_notifications(index, &gates.ask, &input);
            enqueue(state, &policies, notifications, key, received_at);
        }
    }
}

fn enqueue(
    state: &AppState,
    policies: &PolicySet,
    notifications: Vec<Result<Notification, RenderFailure>>,
    key: &RevisionKey,
    received_at: Instant,
) {
    let order_key: Arc<str> = format!("{}/{}", key.namespace, key.canary).into();
    let mut jobs = Vec::with_capacity(notifications.len());
    for notification in notifications {
        match notification {
            Ok(n) => {
                let policy = policies.policy(n.policy);
                let receiver = &policy.receivers[n.receiver as usize];
                let mut job = Job::new(
                    Arc::new(policy.id.clone()),
                    receiver,
                    Bytes::from(n.body),
                    received_at,
                );
                job.thread = n.thread;
                job.order_key = order_key.clone();
                jobs.push(job);
            }
            Err(failure) => {
                state.metrics.render_failures.inc();
                let policy = policies.policy(failure.policy);
                warn!(
                    policy = %policy.id,
                    receiver = %policy.receivers[failure.receiver as usize].name,
                    error = %failure.error,
                    "template failed for a gate message; not sent"
                );
            }
        }
    }
    if jobs.is_empty() {
        return;
    }
    if let Err(refusal) = state.dispatcher.enqueue_all(jobs, None) {
        warn!(
            canary = %key.canary, namespace = %key.namespace, reason = refusal.as_str(),
            "gate message not queued; a reminder or the next decision will say it again"
        );
    }
}
