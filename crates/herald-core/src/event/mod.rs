//! Flagger's event-webhook payload: parsed strictly, serialised back byte-compatible.
//!
//! Flagger (`CanaryWebhookPayload`) sends
//! `{"name","namespace","phase","checksum","metadata":{"eventMessage","eventType","timestamp"}}`
//! where `metadata` is a Go `map[string]string` (so its keys arrive sorted) and `timestamp` is
//! unix milliseconds as a string.
//!
//! - `parse`: the strict reading of Flagger's body (errors name the field);
//! - `typed`: the reading of the body straight into its fields, under `parse`;
//! - `unique_keys`: the JSON reading under that, which refuses a key written twice;
//! - `serialise`: the body written back as Go would marshal it;
//! - `severity`: how an event reads to a person;
//! - `names`: the Kubernetes name rules an event's canary and namespace must follow;
//! - `error`: [`EventError`].

use std::collections::BTreeMap;

use herald_api::{CanaryPhase, EventType};
use serde_json::Value;

mod error;
mod names;
mod parse;
mod serialise;
mod severity;
#[cfg(test)]
mod tests;
mod typed;
#[cfg(test)]
mod typed_tests;
mod unique_keys;

pub(crate) use error::json_error_reason;
pub use error::EventError;
pub use names::{check_dns_label, check_dns_subdomain};
pub use severity::Severity;

pub const MESSAGE_KEY: &str = "eventMessage";
pub const TYPE_KEY: &str = "eventType";
pub const TIMESTAMP_KEY: &str = "timestamp";

/// One canary event, as Flagger's event webhook sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlaggerEvent {
    pub name: String,
    pub namespace: String,
    /// The phase as Flagger wrote it; phases newer than Herald are kept, see [`Self::known_phase`].
    pub phase: String,
    /// Hash of the canary's tracked configs and spec: identifies a revision. Older Flagger
    /// versions do not send it.
    pub checksum: Option<String>,
    /// Every metadata key, `eventMessage`, `eventType` and `timestamp` included (validated
    /// present on parse).
    pub metadata: BTreeMap<String, String>,
    /// Top-level fields Herald does not know, kept so that re-serialising loses nothing.
    pub extra: BTreeMap<String, Value>,
    event_type: EventType,
    timestamp_ms: u64,
    known_phase: Option<CanaryPhase>,
}

impl FlaggerEvent {
    /// Builds an event from its parts (the controller's path: Kubernetes Events and Canary
    /// status changes).
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        phase: impl Into<String>,
        message: impl Into<String>,
        event_type: EventType,
        timestamp_ms: u64,
    ) -> Self {
        let phase = phase.into();
        let mut metadata = BTreeMap::new();
        metadata.insert(MESSAGE_KEY.to_owned(), message.into());
        metadata.insert(TYPE_KEY.to_owned(), event_type.as_str().to_owned());
        metadata.insert(TIMESTAMP_KEY.to_owned(), timestamp_ms.to_string());
        FlaggerEvent {
            name: name.into(),
            namespace: namespace.into(),
            known_phase: CanaryPhase::parse(&phase),
            phase,
            checksum: None,
            metadata,
            extra: BTreeMap::new(),
            event_type,
            timestamp_ms,
        }
    }

    pub fn with_checksum(mut self, checksum: impl Into<String>) -> Self {
        self.checksum = Some(checksum.into());
        self
    }

    /// Adds a metadata entry (`{{metadata.<key>}}` in templates), such as the count of a
    /// watched Kubernetes Event.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn message(&self) -> &str {
        self.metadata
            .get(MESSAGE_KEY)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The phase if it is one Herald knows; `None` for a phase from a newer Flagger.
    pub fn known_phase(&self) -> Option<CanaryPhase> {
        self.known_phase
    }

    /// The phase of the rollout the event belongs to, which policies' `phases`, severities
    /// and the canary-status metric go by. Flagger records "New revision detected!" before
    /// it moves the canary to `Progressing`, so that message carries the previous rollout's
    /// phase (`Succeeded`, `Failed`, `Initialized`): it starts a new rollout, and counts as
    /// `Progressing`, not as a second promotion or failure. Otherwise the known phase.
    pub fn rollout_phase(&self) -> Option<CanaryPhase> {
        if self.message().starts_with("New revision detected!") {
            Some(CanaryPhase::Progressing)
        } else {
            self.known_phase
        }
    }

    /// How the event reads to a person, from its phase, type and message; drives colours.
    pub fn severity(&self) -> Severity {
        Severity::of(self)
    }
}

/// What Herald knows of an event's Canary when it watches the cluster: labels for
/// `matchLabels`, progress for templates (`{{canary.weight}}`). Events received over HTTP
/// have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryFacts {
    pub labels: BTreeMap<String, String>,
    pub weight: Option<i64>,
    pub failed_checks: Option<i64>,
    pub iterations: Option<i64>,
    /// `status.lastAppliedSpec`: identifies the revision being rolled out.
    pub revision: Option<String>,
}
