//! Why an event body is refused, in words its sender can act on.

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
