//! Flagger's event-webhook payload: parsed strictly, serialised back byte-compatible.
//!
//! Flagger (`CanaryWebhookPayload`) sends
//! `{"name","namespace","phase","checksum","metadata":{"eventMessage","eventType","timestamp"}}`
//! where `metadata` is a Go `map[string]string` (so its keys arrive sorted) and `timestamp` is
//! unix milliseconds as a string.

use std::collections::BTreeMap;

use herald_api::{CanaryPhase, EventType};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::EventError;

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

    /// Parses the JSON body Flagger POSTs. Errors name the offending field; a key that
    /// appears twice in one object is refused (naming it), rather than the last one winning.
    pub fn from_json(body: &[u8]) -> Result<Self, EventError> {
        let value = unique::parse(body)?;
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

    /// The JSON Flagger would have sent: field order `name, namespace, phase, checksum,
    /// metadata` (as Go marshals its struct), metadata keys sorted (as Go marshals maps).
    ///
    /// Written directly, keys as literal text (see [`crate::payload::json`]): the bytes are
    /// those of `serde_json` over the [`Serialize`] impl below, which the tests check.
    pub fn to_json(&self) -> Vec<u8> {
        use crate::receivers::json::push_str;
        // Sized for a typical event, so the buffer is not grown a few bytes at a time.
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"name\":");
        push_str(&mut out, &self.name);
        out.extend_from_slice(b",\"namespace\":");
        push_str(&mut out, &self.namespace);
        out.extend_from_slice(b",\"phase\":");
        push_str(&mut out, &self.phase);
        if let Some(checksum) = &self.checksum {
            out.extend_from_slice(b",\"checksum\":");
            push_str(&mut out, checksum);
        }
        out.extend_from_slice(b",\"metadata\":{");
        for (i, (key, value)) in self.metadata.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, key);
            out.push(b':');
            push_str(&mut out, value);
        }
        out.push(b'}');
        for (key, value) in &self.extra {
            out.push(b',');
            push_str(&mut out, key);
            out.push(b':');
            serde_json::to_writer(&mut out, value).expect("a JSON value always serialises");
        }
        out.push(b'}');
        out
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

impl Serialize for FlaggerEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("namespace", &self.namespace)?;
        map.serialize_entry("phase", &self.phase)?;
        if let Some(checksum) = &self.checksum {
            map.serialize_entry("checksum", checksum)?;
        }
        map.serialize_entry("metadata", &self.metadata)?;
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
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

/// A DNS-1123 label (Kubernetes namespace names): at most 63 characters, lowercase letters,
/// digits and `-`, starting and ending with a letter or digit.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    const MAX: usize = 63;
    if name.len() > MAX {
        return Err(format!("{} characters, at most {MAX} allowed", name.len()));
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if let Some(&bad) = bytes.iter().find(|&&b| !(alnum(b) || b == b'-')) {
        return Err(format!(
            "{:?} is not allowed (lowercase letters, digits and '-' only)",
            char::from(bad)
        ));
    }
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return Err("must start and end with a lowercase letter or digit".to_owned());
    }
    Ok(())
}

/// A DNS-1123 subdomain (the names of Kubernetes objects, Canaries included): at most 253
/// characters, dot-separated DNS-1123 labels.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    const MAX: usize = 253;
    if name.len() > MAX {
        return Err(format!("{} characters, at most {MAX} allowed", name.len()));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Err("empty part between dots".to_owned());
        }
        // Each part follows the label rules; the 63-character limit applies to the whole.
        let bytes = part.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if let Some(&bad) = bytes.iter().find(|&&b| !(alnum(b) || b == b'-')) {
            return Err(format!(
                "{:?} is not allowed (lowercase letters, digits, '-' and '.' only)",
                char::from(bad)
            ));
        }
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(
                "each dot-separated part must start and end with a lowercase letter or digit"
                    .to_owned(),
            );
        }
    }
    Ok(())
}

/// JSON parsing that refuses duplicate keys (serde_json's `Value` keeps the last).
mod unique {
    use std::cell::RefCell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    use crate::EventError;

    pub(super) fn parse(body: &[u8]) -> Result<Value, EventError> {
        let duplicate = RefCell::new(None);
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = Seed {
            path: String::new(),
            duplicate: &duplicate,
        }
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
        parsed.map_err(|e| match duplicate.take() {
            Some(path) => EventError::field(path, "duplicate key"),
            None => EventError::Syntax {
                line: e.line(),
                column: e.column(),
                reason: crate::json_error_reason(&e),
            },
        })
    }

    struct Seed<'a> {
        path: String,
        duplicate: &'a RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            let mut index = 0usize;
            while let Some(item) = seq.next_element_seed(Seed {
                path: format!("{}[{index}]", self.path),
                duplicate: self.duplicate,
            })? {
                items.push(item);
                index += 1;
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if object.contains_key(&key) {
                    let message = format!("duplicate key {path:?}");
                    *self.duplicate.borrow_mut() = Some(path);
                    return Err(de::Error::custom(message));
                }
                let value = map.next_value_seed(Seed {
                    path,
                    duplicate: self.duplicate,
                })?;
                object.insert(key, value);
            }
            Ok(Value::Object(object))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event_json(name: &str, namespace: &str) -> String {
        serde_json::json!({
            "name": name, "namespace": namespace, "phase": "Progressing",
            "metadata": {"eventMessage": "m", "eventType": "Normal", "timestamp": "1"}
        })
        .to_string()
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        let field = |name: &str, ns: &str| {
            FlaggerEvent::from_json(event_json(name, ns).as_bytes())
                .err()
                .map(|e| e.field_path().unwrap_or("").to_owned())
        };
        assert_eq!(field("podinfo", "test"), None);
        assert_eq!(field("podinfo.v2-a", "team-1"), None);
        assert_eq!(field(&"a".repeat(253), &"b".repeat(63)), None);
        assert_eq!(field(&"a".repeat(254), "test").as_deref(), Some("name"));
        assert_eq!(field(&"a".repeat(60_000), "test").as_deref(), Some("name"));
        assert_eq!(field("PodInfo", "test").as_deref(), Some("name"));
        assert_eq!(field("pod..info", "test").as_deref(), Some("name"));
        assert_eq!(field("-pod", "test").as_deref(), Some("name"));
        assert_eq!(field("pod info", "test").as_deref(), Some("name"));
        assert_eq!(
            field("podinfo", &"b".repeat(64)).as_deref(),
            Some("namespace")
        );
        assert_eq!(field("podinfo", "a.b").as_deref(), Some("namespace"));
        assert_eq!(field("podinfo", "Test").as_deref(), Some("namespace"));
    }

    #[test]
    fn duplicate_keys_are_refused_by_name() {
        let body = br#"{"name":"a","name":"b","namespace":"n","phase":"Failed","metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
        let e = FlaggerEvent::from_json(body).unwrap_err();
        assert_eq!(e.field_path(), Some("name"));
        let body = br#"{"name":"a","namespace":"n","phase":"Failed","metadata":{"eventMessage":"m","eventType":"Normal","eventType":"Warning","timestamp":"1"}}"#;
        let e = FlaggerEvent::from_json(body).unwrap_err();
        assert_eq!(e.field_path(), Some("metadata.eventType"));
        assert!(e.to_string().contains("duplicate key"), "{e}");
        let body = br#"{"name":"a","namespace":"n","phase":"Failed","x":[{"k":1,"k":2}],"metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
        let e = FlaggerEvent::from_json(body).unwrap_err();
        assert_eq!(e.field_path(), Some("x[0].k"));
        // Same key in different objects is fine; values round-trip.
        let body = br#"{"name":"a","namespace":"n","phase":"Failed","x":{"name":1.5,"y":[null,true,-3]},"metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
        let event = FlaggerEvent::from_json(body).unwrap();
        assert_eq!(
            event.extra["x"],
            serde_json::json!({"name":1.5,"y":[null,true,-3]})
        );
        // Syntax errors still report their position.
        let e = FlaggerEvent::from_json(b"{\"name\": }").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    const FLAGGER: &str = r#"{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"6d8f9b5c7","metadata":{"eventMessage":"New revision detected! Scaling up podinfo.default","eventType":"Normal","timestamp":"1578607635167"}}"#;

    #[test]
    fn parses_flagger_payload_and_serialises_it_back_byte_for_byte() {
        let event = FlaggerEvent::from_json(FLAGGER.as_bytes()).unwrap();
        assert_eq!(event.name, "podinfo");
        assert_eq!(event.namespace, "default");
        assert_eq!(event.known_phase(), Some(CanaryPhase::Progressing));
        assert_eq!(event.checksum.as_deref(), Some("6d8f9b5c7"));
        assert_eq!(
            event.message(),
            "New revision detected! Scaling up podinfo.default"
        );
        assert_eq!(event.event_type(), EventType::Normal);
        assert_eq!(event.timestamp_ms(), 1_578_607_635_167);
        assert_eq!(String::from_utf8(event.to_json()).unwrap(), FLAGGER);
    }

    #[test]
    fn payload_without_checksum_and_with_extra_metadata_round_trips() {
        let body = r#"{"name":"podinfo","namespace":"test","phase":"Failed","metadata":{"cluster":"prod-eu","eventMessage":"Canary failed! Scaling down podinfo.test","eventType":"Warning","timestamp":"1"}}"#;
        let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
        assert_eq!(event.checksum, None);
        assert_eq!(event.metadata["cluster"], "prod-eu");
        assert_eq!(String::from_utf8(event.to_json()).unwrap(), body);
    }

    #[test]
    fn unknown_phase_is_kept() {
        let body = FLAGGER.replace("Progressing", "Paused");
        let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
        assert_eq!(event.phase, "Paused");
        assert_eq!(event.known_phase(), None);
        assert_eq!(String::from_utf8(event.to_json()).unwrap(), body);
    }

    #[test]
    fn unknown_top_level_fields_are_kept() {
        let body = FLAGGER.replace(r#""phase""#, r#""zeta":[1],"phase""#);
        let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
        assert_eq!(event.extra["zeta"], serde_json::json!([1]));
        assert!(String::from_utf8(event.to_json())
            .unwrap()
            .ends_with(r#"},"zeta":[1]}"#));
    }

    /// The event JSON written directly is byte for byte `serde_json` over `Serialize`.
    #[test]
    fn event_json_is_the_serde_json_serialisation() {
        let mut events = vec![
            FlaggerEvent::from_json(FLAGGER.as_bytes()).unwrap(),
            FlaggerEvent::new("p\u{e9}\"q\\", "ns\n\t", "", "", EventType::Warning, 0),
            FlaggerEvent::new(
                "a",
                "b",
                "Failed",
                "Rolling back \u{1}\u{1F680}",
                EventType::Normal,
                7,
            ),
        ];
        events[1].checksum = Some("c\"1".into());
        events[2]
            .metadata
            .insert("k\"ey\u{7f}".into(), "v\r".into());
        events[2].metadata.clear();
        events[0]
            .extra
            .insert("zeta".into(), serde_json::json!([1, "x\"", {"b": null}]));
        events[0].extra.insert("a\n".into(), serde_json::json!(1.5));
        events[1]
            .metadata
            .insert("k\"ey\u{7f}".into(), "v\r".into());
        for event in &events {
            assert_eq!(
                String::from_utf8(event.to_json()).unwrap(),
                serde_json::to_string(event).unwrap()
            );
        }
    }

    fn error_of(body: &str) -> String {
        FlaggerEvent::from_json(body.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_payloads_name_the_field() {
        assert_eq!(error_of(r#"{"namespace":"d"}"#), "name: missing field");
        assert_eq!(
            error_of(&FLAGGER.replace(r#""podinfo""#, "7")),
            "name: expected a string, found a number"
        );
        assert_eq!(
            error_of(&FLAGGER.replace(r#""Normal""#, r#""Info""#)),
            r#"metadata.eventType: expected "Normal" or "Warning", found "Info""#
        );
        assert_eq!(
            error_of(&FLAGGER.replace(r#""1578607635167""#, "1578607635167")),
            "metadata.timestamp: expected a string, found a number"
        );
        assert_eq!(
            error_of(&FLAGGER.replace(r#""1578607635167""#, r#""2020-01-09T22:07:15Z""#)),
            r#"metadata.timestamp: expected unix milliseconds as a string of digits, found "2020-01-09T22:07:15Z""#
        );
        assert_eq!(
            error_of(
                r#"{"name":"a","namespace":"b","phase":"Failed","metadata":{"eventType":"Normal","timestamp":"1"}}"#
            ),
            "metadata.eventMessage: missing field"
        );
        assert_eq!(
            error_of(r#"{"name":"a","namespace":"b","phase":"Failed"}"#),
            "metadata: missing field"
        );
        assert_eq!(error_of("[1]"), "expected a JSON object");
        assert_eq!(
            error_of(&FLAGGER.replace(r#""default""#, r#""""#)),
            "namespace: must not be empty"
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        assert_eq!(
            error_of("{\n\"name\": }"),
            "invalid JSON at line 2, column 9: expected value"
        );
    }

    #[test]
    fn severity_follows_what_flagger_alerts_on() {
        let ev = |phase: &str, msg: &str, t: EventType| {
            FlaggerEvent::new("p", "d", phase, msg, t, 1).severity()
        };
        assert_eq!(
            ev(
                "Progressing",
                "New revision detected! Scaling up p.d",
                EventType::Normal
            ),
            Severity::Info
        );
        // As Flagger really sends it: with the previous rollout's phase. Still progress.
        for previous in ["Succeeded", "Failed", "Initialized"] {
            assert_eq!(
                ev(
                    previous,
                    "New revision detected! Scaling up p.d",
                    EventType::Normal
                ),
                Severity::Info,
                "after {previous}"
            );
            let event = FlaggerEvent::new(
                "p",
                "d",
                previous,
                "New revision detected! Scaling up p.d",
                EventType::Normal,
                1,
            );
            assert_eq!(event.rollout_phase(), Some(CanaryPhase::Progressing));
            assert_eq!(event.phase, previous, "the phase Flagger sent is kept");
        }
        assert_eq!(
            ev(
                "Succeeded",
                "Promotion completed! Scaling down p.d",
                EventType::Normal
            ),
            Severity::Success
        );
        assert_eq!(
            ev(
                "Progressing",
                "Rolling back p.d failed checks threshold reached 5",
                EventType::Warning
            ),
            Severity::Error
        );
        assert_eq!(
            ev(
                "Failed",
                "Canary failed! Scaling down p.d",
                EventType::Warning
            ),
            Severity::Error
        );
        assert_eq!(
            ev(
                "Progressing",
                "Halt advancement no values found",
                EventType::Warning
            ),
            Severity::Warning
        );
        assert_eq!(
            ev(
                "WaitingPromotion",
                "Canary promotion is waiting for approval.",
                EventType::Normal
            ),
            Severity::Warning
        );
    }
}
