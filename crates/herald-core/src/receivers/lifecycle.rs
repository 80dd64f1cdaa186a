//! Where an event stands in a canary's lifecycle, for the kinds that open something on a
//! failure and close it on the next success (PagerDuty incidents, Opsgenie and Alertmanager
//! alerts), and the key that names that something.

use herald_api::CanaryPhase;

use crate::event::FlaggerEvent;

/// What an event does to a canary's incident (or alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The rollout failed or is rolling back: open one (or keep the open one).
    Open,
    /// The canary succeeded: close the open one, if any.
    Resolve,
}

/// The transition an event makes, `None` for the events in between (progress, weights,
/// approvals), which such kinds leave alone.
///
/// Failure: "Rolling back ...", "Canary failed! ...", "Progress deadline exceeded ...", or
/// phase `Failed`. Success: "Promotion completed! ..." or phase `Succeeded`. The phase is the
/// rollout's ([`FlaggerEvent::rollout_phase`]): "New revision detected!" carries the previous
/// rollout's phase, and must not resolve or open anything.
pub fn transition(event: &FlaggerEvent) -> Option<Transition> {
    let message = event.message();
    let phase = event.rollout_phase();
    if phase == Some(CanaryPhase::Failed)
        || [
            "Rolling back",
            "Canary failed!",
            "Progress deadline exceeded",
        ]
        .iter()
        .any(|start| message.starts_with(start))
    {
        Some(Transition::Open)
    } else if phase == Some(CanaryPhase::Succeeded) || message.starts_with("Promotion completed!") {
        Some(Transition::Resolve)
    } else {
        None
    }
}

/// `herald/<cluster>/<namespace>/<canary>`: names a canary's incident. Deterministic (no
/// UID, no revision, no message), so the failure that opens it and the success that resolves
/// it agree even across a restart of Herald, and two clusters' canaries of the same name do
/// not share one. Namespaces and canary names hold no `/`, so the key is unambiguous.
pub fn canary_key(event: &FlaggerEvent, cluster: &str) -> String {
    format!("herald/{cluster}/{}/{}", event.namespace, event.name)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::event;
    use super::*;
    use herald_api::EventType;

    #[test]
    fn failures_open_successes_resolve_and_the_rest_is_left_alone() {
        let cases = [
            (
                "Progressing",
                "Rolling back podinfo.default failed checks threshold reached 5",
                Some(Transition::Open),
            ),
            (
                "Failed",
                "Canary failed! Scaling down podinfo.default",
                Some(Transition::Open),
            ),
            (
                "Progressing",
                "Progress deadline exceeded canary deployment podinfo.default",
                Some(Transition::Open),
            ),
            (
                "Failed",
                "Halt advancement podinfo.default",
                Some(Transition::Open),
            ),
            (
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                Some(Transition::Resolve),
            ),
            (
                "Progressing",
                "Promotion completed! Scaling down podinfo.default",
                Some(Transition::Resolve),
            ),
            (
                "Succeeded",
                "Copying podinfo.default template spec",
                Some(Transition::Resolve),
            ),
            // Carries the previous rollout's phase: a new rollout, not an outcome.
            (
                "Failed",
                "New revision detected! Scaling up podinfo.default",
                None,
            ),
            (
                "Succeeded",
                "New revision detected! Scaling up podinfo.default",
                None,
            ),
            (
                "Progressing",
                "Advance podinfo.default canary weight 20",
                None,
            ),
            (
                "Waiting",
                "Halt podinfo.default advancement waiting for approval",
                None,
            ),
        ];
        for (phase, message, expected) in cases {
            let ev = event(phase, message, EventType::Normal);
            assert_eq!(transition(&ev), expected, "{phase}: {message}");
        }
    }

    #[test]
    fn the_key_names_the_canary_in_its_cluster() {
        let ev = event("Failed", "Canary failed!", EventType::Warning);
        assert_eq!(
            canary_key(&ev, "prod-eu"),
            format!("herald/prod-eu/{}/{}", ev.namespace, ev.name)
        );
        assert_eq!(
            canary_key(&ev, ""),
            format!("herald//{}/{}", ev.namespace, ev.name)
        );
    }
}
