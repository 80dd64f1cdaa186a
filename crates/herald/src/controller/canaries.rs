//! Canary events from the cluster, as pure functions: a Kubernetes Event Flagger recorded on
//! a Canary, or a Canary phase change no Event announced, becomes Herald's event model. The
//! notifier (`notifier.rs`) sends them; the watches (`watch.rs`) feed it.

use herald_api::flagger::Canary;
use herald_api::EventType;
use herald_core::{CanaryFacts, FlaggerEvent};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;

pub use super::notifier::{CanaryNotifier, Input};
use super::state::CanaryRef;
pub use super::watches::run;

/// What client-go's event recorder puts before a message once it aggregates similar Events
/// (10 with the same object, source, type and reason within 10 minutes; Flagger's reason is
/// always `Synced`). Herald matches, pairs and templates on Flagger's own message.
pub const AGGREGATED_PREFIX: &str = "(combined from similar events): ";

/// A Kubernetes Event about a Canary, reduced to what Herald needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEvent {
    pub canary: CanaryRef,
    /// `<Event uid>:<count>`: a repeated Event (Flagger aggregates identical messages) is new.
    pub key: String,
    pub time_ms: i64,
    /// Flagger's message, without client-go's aggregation prefix.
    pub message: String,
    pub event_type: EventType,
    /// How often the Event happened (client-go counts repeats and aggregated Events).
    pub count: i32,
}

/// The reporting controller of the Events Herald records.
pub const HERALD_REPORTER: &str = "herald";

/// Reads a core/v1 Event; `None` when it is not about a Flagger Canary.
pub fn observe_event(event: &Event) -> Option<ObservedEvent> {
    let involved = &event.involved_object;
    if involved.kind.as_deref() != Some("Canary") {
        return None;
    }
    // Herald's own Events on Canaries (gate decisions) were announced when they were made.
    if event.reporting_component.as_deref() == Some(HERALD_REPORTER) {
        return None;
    }
    if involved
        .api_version
        .as_deref()
        .is_some_and(|v| !v.starts_with("flagger.app/"))
    {
        return None;
    }
    let namespace = involved
        .namespace
        .clone()
        .or_else(|| event.metadata.namespace.clone())?;
    let name = involved.name.clone()?;
    let uid = event
        .metadata
        .uid
        .clone()
        .or_else(|| event.metadata.name.clone())?;
    let count = event
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(event.count)
        .unwrap_or(1);
    let time = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let message = event.message.as_deref().unwrap_or_default();
    let message = message.strip_prefix(AGGREGATED_PREFIX).unwrap_or(message);
    Some(ObservedEvent {
        canary: CanaryRef { namespace, name },
        key: format!("{uid}:{count}"),
        time_ms: time.as_millisecond(),
        message: message.to_owned(),
        count,
        event_type: if event.type_.as_deref() == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        },
    })
}

/// What the Canary object adds to an event: labels for matching, progress for templates.
pub fn canary_facts(canary: &Canary) -> CanaryFacts {
    let status = canary.status.clone().unwrap_or_default();
    CanaryFacts {
        labels: canary.labels().clone(),
        weight: status.canary_weight,
        failed_checks: status.failed_checks,
        iterations: status.iterations,
        revision: status.last_applied_spec,
    }
}

/// The event Flagger's webhook would have sent for this Kubernetes Event: the phase is the
/// Canary's current phase, the checksum its revision (`status.lastAppliedSpec`). The Event's
/// count is `{{metadata.count}}` in templates.
pub fn flagger_event(observed: &ObservedEvent, canary: Option<&Canary>) -> FlaggerEvent {
    let status = canary.and_then(|c| c.status.as_ref());
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let event = FlaggerEvent::new(
        &observed.canary.name,
        &observed.canary.namespace,
        phase,
        &observed.message,
        observed.event_type,
        u64::try_from(observed.time_ms).unwrap_or_default(),
    )
    .with_metadata("count", observed.count.to_string());
    match status.and_then(|s| s.last_applied_spec.clone()) {
        Some(revision) => event.with_checksum(revision),
        None => event,
    }
}

/// The terminal phase a Flagger message announces, if any.
pub fn announced_phase(message: &str) -> Option<&'static str> {
    if message.starts_with("Initialization done!") {
        Some("Initialized")
    } else if message.starts_with("Promotion completed!") {
        Some("Succeeded")
    } else if message.starts_with("Canary failed!") || message.starts_with("Rolling back") {
        Some("Failed")
    } else {
        None
    }
}

fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Initialized" | "Succeeded" | "Failed")
}

/// Records a phase seen on the Canary. Returns the phase to announce (after a grace period,
/// unless a Flagger Event announces it first) when the canary moved into a terminal phase.
/// The first phase Herald ever sees for a canary is only recorded: it is not a transition.
pub fn observe_phase(record: &mut super::state::CanaryRecord, phase: &str) -> Option<String> {
    let previous = record.phase.replace(phase.to_owned());
    match previous {
        None => None,
        Some(previous) if previous == phase => None,
        Some(_) if is_terminal(phase) => {
            (record.announced.as_deref() != Some(phase)).then(|| phase.to_owned())
        }
        Some(_) => {
            record.announced = None;
            None
        }
    }
}

/// The event Herald sends for a phase change no Flagger Event announced. Its message starts
/// like Flagger's own, so message patterns written for Flagger's messages match it. (It is
/// recorded as the canary's `announced` phase, not in the Event watermark.)
pub fn phase_change_event(canary: &Canary, phase: &str, now_ms: i64) -> FlaggerEvent {
    let target = format!(
        "{}.{}",
        canary.name_any(),
        canary.namespace().unwrap_or_default()
    );
    let (message, event_type) = match phase {
        "Initialized" => (
            format!("Initialization done! {target} (phase change seen by Herald)"),
            EventType::Normal,
        ),
        "Succeeded" => (
            format!("Promotion completed! {target} (phase change seen by Herald)"),
            EventType::Normal,
        ),
        _ => (
            format!("Canary failed! {target} (phase change seen by Herald)"),
            EventType::Warning,
        ),
    };
    let status = canary.status.clone().unwrap_or_default();
    let mut event = FlaggerEvent::new(
        canary.name_any(),
        canary.namespace().unwrap_or_default(),
        phase,
        message,
        event_type,
        u64::try_from(now_ms).unwrap_or_default(),
    );
    if let Some(revision) = status.last_applied_spec {
        event = event.with_checksum(revision);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::CanaryRecord;

    #[test]
    fn the_first_phase_seen_is_not_a_transition() {
        let mut record = CanaryRecord::default();
        assert_eq!(observe_phase(&mut record, "Succeeded"), None);
        assert_eq!(record.phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn terminal_transitions_are_announced_once() {
        let mut record = CanaryRecord {
            phase: Some("Progressing".into()),
            ..Default::default()
        };
        assert_eq!(observe_phase(&mut record, "Progressing"), None);
        assert_eq!(
            observe_phase(&mut record, "Failed").as_deref(),
            Some("Failed")
        );
        record.announced = Some("Failed".into());
        assert_eq!(observe_phase(&mut record, "Failed"), None, "no change");
        assert_eq!(observe_phase(&mut record, "Progressing"), None);
        assert_eq!(
            record.announced, None,
            "a new rollout resets the announcement"
        );
        record.announced = Some("Failed".into()); // Flagger's "Canary failed!" Event came first
        assert_eq!(observe_phase(&mut record, "Failed"), None);
        assert_eq!(observe_phase(&mut record, "Promoting"), None);
        assert_eq!(
            observe_phase(&mut record, "Succeeded").as_deref(),
            Some("Succeeded")
        );
    }

    #[test]
    fn flagger_messages_announce_their_phase() {
        assert_eq!(
            announced_phase("Initialization done! podinfo.test"),
            Some("Initialized")
        );
        assert_eq!(
            announced_phase("Promotion completed! Scaling down podinfo.test"),
            Some("Succeeded")
        );
        assert_eq!(
            announced_phase("Rolling back podinfo.test failed checks threshold reached 5"),
            Some("Failed")
        );
        assert_eq!(
            announced_phase("Canary failed! Scaling down podinfo.test"),
            Some("Failed")
        );
        assert_eq!(
            announced_phase("Advance podinfo.test canary weight 10"),
            None
        );
    }

    #[test]
    fn reads_a_flagger_event() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo.1", "namespace": "test", "uid": "u1"},
            "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "namespace": "test"},
            "message": "Halt advancement podinfo.test", "type": "Warning", "count": 4,
            "lastTimestamp": "2020-01-09T22:07:15Z"
        }))
        .unwrap();
        assert_eq!(
            observe_event(&event),
            Some(ObservedEvent {
                canary: CanaryRef {
                    namespace: "test".into(),
                    name: "podinfo".into()
                },
                key: "u1:4".into(),
                time_ms: 1_578_607_635_000,
                message: "Halt advancement podinfo.test".into(),
                event_type: EventType::Warning,
                count: 4,
            })
        );
        let mut other = event.clone();
        other.involved_object.api_version = Some("argoproj.io/v1alpha1".into());
        assert_eq!(observe_event(&other), None, "a Canary of another project");
        let mut own = event.clone();
        own.reporting_component = Some("herald".into());
        assert_eq!(
            observe_event(&own),
            None,
            "Herald's own Event (a gate decision)"
        );
    }

    #[test]
    fn an_aggregated_event_is_read_as_flaggers_own_message() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo.17", "namespace": "test", "uid": "u9"},
            "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "namespace": "test"},
            "message": "(combined from similar events): Rolling back podinfo.test failed checks threshold reached 5",
            "type": "Warning", "count": 12, "lastTimestamp": "2020-01-09T22:07:15Z"
        }))
        .unwrap();
        let observed = observe_event(&event).unwrap();
        assert_eq!(
            observed.message,
            "Rolling back podinfo.test failed checks threshold reached 5"
        );
        assert_eq!(announced_phase(&observed.message), Some("Failed"));
        let flagger = flagger_event(&observed, None);
        assert_eq!(flagger.message(), observed.message);
        assert_eq!(flagger.metadata["count"], "12");
    }
}
