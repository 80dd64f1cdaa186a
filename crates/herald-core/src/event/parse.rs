//! Reading Flagger's body strictly: every field is checked for its type and presence, and an
//! error names the culprit by its JSON path, so a misconfigured webhook is answered with what
//! to fix rather than a bare 400.

use std::collections::BTreeMap;

use herald_api::{CanaryPhase, EventType};
use serde_json::{Map, Value};

use super::{
    check_dns_label, check_dns_subdomain, typed, EventError, FlaggerEvent, MESSAGE_KEY,
    TIMESTAMP_KEY, TYPE_KEY,
};

impl FlaggerEvent {
    /// Parses the JSON body Flagger POSTs. Errors name the offending field; a key that
    /// appears twice in one object is refused (naming it), rather than the last one winning.
    pub fn from_json(body: &[u8]) -> Result<Self, EventError> {
        match typed::parse(body)? {
            Some(parts) => parts.check(),
            None => Err(not_an_object()),
        }
    }

    pub fn from_value(value: Value) -> Result<Self, EventError> {
        let Value::Object(obj) = value else {
            return Err(not_an_object());
        };
        Parts::from_object(obj).check()
    }
}

fn not_an_object() -> EventError {
    EventError::field("", "expected a JSON object")
}

/// A value where a string is wanted: the string, or the kind of what was found
/// (`"a number"`, `"null"`...), for the error.
pub(super) enum Raw {
    Str(String),
    Other(&'static str),
}

impl Raw {
    fn of(value: Value) -> Raw {
        match value {
            Value::String(s) => Raw::Str(s),
            other => Raw::Other(kind(&other)),
        }
    }
}

/// `metadata`: its string values, and the first key (in key order) whose value is not a
/// string; or the kind of what was found instead of an object.
pub(super) enum RawMeta {
    Object {
        strings: BTreeMap<String, String>,
        first_other: Option<(String, &'static str)>,
    },
    Other(&'static str),
}

/// A body's fields as read, before they are checked: what both readings (`typed` from the
/// bytes, [`Parts::from_object`] from a `Value`) produce, so both are checked by the same
/// code, in the same order.
#[derive(Default)]
pub(super) struct Parts {
    pub(super) name: Option<Raw>,
    pub(super) namespace: Option<Raw>,
    pub(super) phase: Option<Raw>,
    pub(super) checksum: Option<Raw>,
    pub(super) metadata: Option<RawMeta>,
    pub(super) extra: BTreeMap<String, Value>,
}

impl Parts {
    fn from_object(mut obj: Map<String, Value>) -> Parts {
        let mut take = |field: &str| obj.remove(field).map(Raw::of);
        let (name, namespace, phase, checksum) = (
            take("name"),
            take("namespace"),
            take("phase"),
            take("checksum"),
        );
        let metadata = obj.remove("metadata").map(|value| match value {
            Value::Object(m) => {
                let mut strings = BTreeMap::new();
                let mut first_other = None;
                // In key order (serde_json's map is sorted): the first non-string is named.
                for (key, value) in m {
                    match value {
                        Value::String(s) => {
                            strings.insert(key, s);
                        }
                        other => {
                            first_other.get_or_insert((key, kind(&other)));
                        }
                    }
                }
                RawMeta::Object {
                    strings,
                    first_other,
                }
            }
            other => RawMeta::Other(kind(&other)),
        });
        Parts {
            name,
            namespace,
            phase,
            checksum,
            metadata,
            extra: obj.into_iter().collect(),
        }
    }

    /// The event, or the first thing wrong with it, in a fixed order of fields.
    pub(super) fn check(self) -> Result<FlaggerEvent, EventError> {
        let name = required(self.name, "name")?;
        let namespace = required(self.namespace, "namespace")?;
        let phase = required(self.phase, "phase")?;
        let checksum = match self.checksum {
            None | Some(Raw::Other("null")) => None,
            Some(Raw::Str(s)) => Some(s),
            Some(Raw::Other(found)) => {
                return Err(EventError::field("checksum", expected_string(found)))
            }
        };
        let meta = match self.metadata {
            Some(RawMeta::Object {
                first_other: Some((key, found)),
                ..
            }) => {
                return Err(EventError::field(
                    format!("metadata.{key}"),
                    expected_string(found),
                ))
            }
            Some(RawMeta::Object { strings, .. }) => strings,
            Some(RawMeta::Other(found)) => {
                return Err(EventError::field(
                    "metadata",
                    format!("expected an object, found {found}"),
                ))
            }
            None => return Err(EventError::field("metadata", "missing field")),
        };
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
            extra: self.extra,
            event_type,
            timestamp_ms,
        })
    }
}

fn required(raw: Option<Raw>, field: &'static str) -> Result<String, EventError> {
    match raw {
        Some(Raw::Str(s)) => Ok(s),
        Some(Raw::Other(found)) => Err(EventError::field(field, expected_string(found))),
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

fn expected_string(found: &str) -> String {
    format!("expected a string, found {found}")
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
