//! A policy's status: `Ready` from its problems (or `Suspended`), and per receiver the last
//! delivery's time and outcome with a count of failures, fed by the delivery engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_api::{PolicyStatus, ReceiverStatus};
use herald_core::{PolicyId, PolicyObject, Problem};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::delivery::DeliveryObserver;
use crate::metrics::Outcome;

/// Longest `Ready` condition message; the API server allows 32 KiB, people read far less.
const MAX_MESSAGE: usize = 1024;

/// Per-receiver delivery results, for the policies' status.
#[derive(Default)]
pub struct ReceiverStats {
    entries: Mutex<HashMap<(PolicyId, String), ReceiverStatus>>,
}

impl ReceiverStats {
    /// Starts from what an earlier Herald wrote in the status, so counts survive restarts.
    pub fn seed(&self, id: &PolicyId, status: Option<&PolicyStatus>) {
        let mut entries = self.entries.lock().expect("stats lock");
        for receiver in status.map(|s| s.receivers.as_slice()).unwrap_or_default() {
            entries
                .entry((id.clone(), receiver.name.clone()))
                .or_insert_with(|| receiver.clone());
        }
    }

    pub fn get(&self, id: &PolicyId, receiver: &str) -> ReceiverStatus {
        let entries = self.entries.lock().expect("stats lock");
        entries
            .get(&(id.clone(), receiver.to_owned()))
            .cloned()
            .unwrap_or_else(|| ReceiverStatus {
                name: receiver.to_owned(),
                ..ReceiverStatus::default()
            })
    }

    pub fn record(&self, id: &PolicyId, receiver: &str, outcome: Outcome, at: &str) {
        let mut entries = self.entries.lock().expect("stats lock");
        let entry = entries
            .entry((id.clone(), receiver.to_owned()))
            .or_insert_with(|| ReceiverStatus {
                name: receiver.to_owned(),
                ..ReceiverStatus::default()
            });
        entry.last_delivery_time = Some(at.to_owned());
        entry.last_outcome = Some(
            match outcome {
                Outcome::Delivered => "Delivered",
                Outcome::Failed => "Failed",
                Outcome::Dropped => "Dropped",
                Outcome::Deferred => "Deferred",
                Outcome::Timeout => "Timeout",
                Outcome::Unknown => "Unknown",
            }
            .to_owned(),
        );
        // A deferred notification is sent by the next process: not a failure.
        if !matches!(outcome, Outcome::Delivered | Outcome::Deferred) {
            entry.failures += 1;
        }
    }
}

/// The status a policy should have: `Ready` from its problems, receivers from the stats.
/// `previous` keeps `lastTransitionTime` when `Ready` does not change.
pub fn desired_status(
    object: &PolicyObject,
    problems: &[Problem],
    stats: &ReceiverStats,
    previous: Option<&PolicyStatus>,
    now: &Time,
) -> PolicyStatus {
    let id = object.id();
    let rules = object.rules();
    let (status, reason, message) = if !problems.is_empty() {
        let reason = problems
            .iter()
            .map(|p| p.reason)
            .min()
            .expect("not empty")
            .as_str();
        let mut message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE - 1;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ("False", reason, message)
    } else if rules.suspend {
        (
            "False",
            "Suspended",
            "spec.suspend is true: no notifications are sent".to_owned(),
        )
    } else {
        (
            "True",
            "Ready",
            format!("{} receiver(s) ready", rules.receivers.len()),
        )
    };
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    PolicyStatus {
        observed_generation: object.generation(),
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: object.generation(),
        }],
        receiver_kinds: rules.receiver_kinds(),
        receivers: rules
            .receivers
            .iter()
            .map(|r| stats.get(&id, &r.name))
            .collect(),
    }
}

/// Feeds delivery outcomes into the receiver stats and, for failures, a Kubernetes Event on
/// the policy; asks for a status refresh.
pub struct StatusObserver {
    pub stats: Arc<ReceiverStats>,
    pub refresh: tokio::sync::mpsc::UnboundedSender<()>,
    pub failures: tokio::sync::mpsc::UnboundedSender<(PolicyId, String, Outcome)>,
}

impl DeliveryObserver for StatusObserver {
    fn finished(&self, policy: &PolicyId, receiver: &str, outcome: Outcome) {
        self.stats.record(
            policy,
            receiver,
            outcome,
            &jiff::Timestamp::now().to_string(),
        );
        let _ = self.refresh.send(());
        if outcome != Outcome::Delivered {
            let _ = self
                .failures
                .send((policy.clone(), receiver.to_owned(), outcome));
        }
    }
}
