//! Reading Flagger's body strictly: every field is checked for its type and presence, and an
//! error names the culprit by its JSON path, so a misconfigured webhook is answered with what
//! to fix rather than a bare 400.

use std::collections::BTreeMap;

use herald_api::{CanaryPhase, EventType};
use serde_json::{Map, Value};

use super::{
    check_dns_label, check_dns_subdomain, unique_keys, EventError, FlaggerEvent, MESSAGE_KEY,
    TIMESTAMP_KEY, TYPE_KEY,
};

impl FlaggerEvent {
    /// Parses the JSON body Flagger POSTs. Errors name the offending field; a key that
    /// appears twice in one object is refused (naming it), rather than the last one winning.
    pub fn from_json(body: &[u8]) -> Result<Self, EventError> {
        let value = unique_keys::parse(body)?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, EventError> {
        let Value::Object(mut obj) = value else {
            return Err(EventError::field("", "expected a JSON object"));
        };
        let name = take_string(&mut obj, "name")?;
        let namespace = take_string(&mut obj, "namespace")?;
        let phase = take_string(&mut obj, "phase")?;
        let checksum = match obj.remove("checksum") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => return Err(EventError::field("checksum", expected_string(&other))),
        };
        let metadata = match obj.remove("metadata") {
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(EventError::field(
                    "metadata",
                    format!("expected an object, found {}", kind(&other)),
                ))
            }
            None => return Err(EventError::field("metadata", "missing field")),
        };
        let mut meta = BTreeMap::new();
        for (key, value) in metadata {
            match value {
                Value::String(s) => {
                    meta.insert(key, s);
                }
                other => {
                    return Err(EventError::field(
                        format!("metadata.{key}"),
                        expected_string(&other),
                    ))
                }
            }
        }
        let message_present = meta.contains_key(MESSAGE_KEY);
        if !message_present {
            return Err(EventError::field("metadata.eventMessage", "missing field"));
        }
        let event_type = match meta.get(TYPE_KEY).map(String::as_str) {
            Some("Normal") => EventType::Normal,
            Some("Warning") => EventType::Warning,
            Some(other) => {
                return Err(EventError::field(
                    "metadata.eventType",
                    format!("expected \"Normal\" or \"Warning\", found {other:?}"),
                ))
            }
            None => return Err(EventError::field("metadata.eventType", "missing field")),
        };
        let timestamp_ms = match meta.get(TIMESTAMP_KEY) {
            Some(ts) => parse_timestamp(ts)?,
            None => return Err(EventError::field("metadata.timestamp", "missing field")),
        };
        if name.is_empty() {
            return Err(EventError::field("name", "must not be empty"));
        }
        if namespace.is_empty() {
            return Err(EventError::field("namespace", "must not be empty"));
        }
        if let Err(reason) = check_dns_subdomain(&name) {
            return Err(EventError::field(
                "name",
                format!("not a Kubernetes object name: {reason}"),
            ));
        }
        if let Err(reason) = check_dns_label(&namespace) {
            return Err(EventError::field(
                "namespace",
                format!("not a Kubernetes namespace name: {reason}"),
            ));
        }
        Ok(FlaggerEvent {
            name,
            namespace,
            known_phase: CanaryPhase::parse(&phase),
            phase,
            checksum,
            metadata: meta,
            extra: obj.into_iter().collect(),
            event_type,
            timestamp_ms,
        })
    }
}

fn take_string(obj: &mut Map<String, Value>, field: &'static str) -> Result<String, EventError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(EventError::field(field, expected_string(&other))),
        None => Err(EventError::field(field, "missing field")),
    }
}

fn parse_timestamp(ts: &str) -> Result<u64, EventError> {
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EventError::field(
            "metadata.timestamp",
            format!("expected unix milliseconds as a string of digits, found {ts:?}"),
        ));
    }
    ts.parse()
        .map_err(|_| EventError::field("metadata.timestamp", format!("{ts:?} is out of range")))
}

fn expected_string(found: &Value) -> String {
    format!("expected a string, found {}", kind(found))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
