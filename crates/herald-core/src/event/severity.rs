//! How an event reads to a person (progress, success, attention, failure), from what Flagger
//! writes: it picks each receiver's colours and the `severity` template variable.

use herald_api::{CanaryPhase, EventType};

use super::FlaggerEvent;

/// How an event reads to a person: decides colours and the `severity` template variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Progress: initialisation, new revision, weight advanced.
    Info,
    /// The canary was promoted.
    Success,
    /// Needs attention but has not failed: halted advancement, waiting for approval.
    Warning,
    /// The rollout failed or is rolling back.
    Error,
}

impl Severity {
    pub fn of(event: &FlaggerEvent) -> Severity {
        let message = event.message();
        let phase = event.rollout_phase();
        if phase == Some(CanaryPhase::Failed)
            || message.starts_with("Rolling back")
            || message.starts_with("Canary failed")
            || message.contains("Progress deadline exceeded")
            || message.starts_with("Promotion failed")
        {
            Severity::Error
        } else if phase == Some(CanaryPhase::Succeeded)
            || message.starts_with("Promotion completed")
        {
            Severity::Success
        } else if event.event_type == EventType::Warning || message.contains("waiting for approval")
        {
            Severity::Warning
        } else {
            Severity::Info
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Success => "success",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}
