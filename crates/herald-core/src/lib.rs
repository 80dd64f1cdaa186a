//! Herald's pure core: the event model, policy validation and matching, templating and
//! payload building. No I/O: everything here is a function of its inputs, so it is
//! unit-tested and benchmarked without a network or a cluster.

pub mod dedup;
pub mod escape;
pub mod event;
mod labels;
pub mod loader;
pub mod policy;
pub mod receivers;
pub mod repeats;
pub mod secret;
pub mod template;
mod unclosed_block;

pub use escape::Markup;
pub use event::{CanaryFacts, FlaggerEvent, Severity};
pub use loader::{load_documents, load_sources, Document, LoadProblem, Loaded, Origin};
pub use policy::{
    MatchInput, Notification, PolicyId, PolicyObject, PolicySet, PolicySetBuilder, Problem, Reason,
    RenderFailure,
};
pub use receivers::ReceiverKind;
pub use secret::{Redacted, SecretError, SecretSource, SecretStore};

/// A Flagger event body that cannot be accepted. `field` is the JSON path of the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("invalid JSON at line {line}, column {column}: {reason}")]
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{}", if field.is_empty() { reason.clone() } else { format!("{field}: {reason}") })]
    Field { field: String, reason: String },
}

impl EventError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        EventError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The JSON path of the offending field, if the error is about one.
    pub fn field_path(&self) -> Option<&str> {
        match self {
            EventError::Field { field, .. } if !field.is_empty() => Some(field),
            _ => None,
        }
    }
}

/// serde_json's message without its " at line L column C" suffix (callers report the
/// position themselves).
pub(crate) fn json_error_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    full.rfind(" at line ")
        .map_or(full.clone(), |i| full[..i].to_owned())
}
