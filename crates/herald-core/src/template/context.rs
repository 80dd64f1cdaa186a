//! The handlebars context: the variables every template sees, filled once per event and
//! then per delivery, and the sample event templates are checked against when a policy loads.

use handlebars::Context;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

use crate::{CanaryFacts, FlaggerEvent};

/// The variables every template sees. `policy` and `receiver` are filled per delivery by
/// [`set_delivery`]; `canary` is null for events received over HTTP.
///
/// Built once per event on the hot path: the map is assembled directly (no `json!` and no
/// `Context::wraps`, which would serialise the finished value into a second copy).
pub fn event_context(event: &FlaggerEvent, cluster: &str, canary: Option<&CanaryFacts>) -> Context {
    let ms = event.timestamp_ms();
    let time = rfc3339(ms);
    let metadata: Map<String, Value> = event
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let string = |s: &str| Value::String(s.to_owned());
    let mut map = Map::new();
    map.insert("name".to_owned(), string(&event.name));
    map.insert("namespace".to_owned(), string(&event.namespace));
    let mut target = String::with_capacity(event.name.len() + 1 + event.namespace.len());
    target.push_str(&event.name);
    target.push('.');
    target.push_str(&event.namespace);
    map.insert("target".to_owned(), Value::String(target));
    map.insert("phase".to_owned(), string(&event.phase));
    map.insert("message".to_owned(), string(event.message()));
    map.insert("eventType".to_owned(), string(event.event_type().as_str()));
    map.insert("timestamp".to_owned(), Value::String(ms.to_string()));
    map.insert("time".to_owned(), Value::String(time));
    map.insert(
        "checksum".to_owned(),
        event.checksum.as_deref().map_or(Value::Null, string),
    );
    map.insert("severity".to_owned(), string(event.severity().as_str()));
    map.insert("cluster".to_owned(), string(cluster));
    map.insert("metadata".to_owned(), Value::Object(metadata));
    map.insert(
        "canary".to_owned(),
        serde_json::to_value(canary).expect("canary facts serialise"),
    );
    map.insert("policy".to_owned(), string(""));
    map.insert("receiver".to_owned(), string(""));
    Context::from(Value::Object(map))
}

/// The `time` variable: the event's timestamp in RFC 3339, empty when out of range.
pub(crate) fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Sets the `policy` and `receiver` variables in a context built by [`event_context`],
/// reusing the strings already there.
pub fn set_delivery(context: &mut Context, policy: &str, receiver: &str) {
    if let Value::Object(map) = context.data_mut() {
        set_string(map, "policy", policy);
        set_string(map, "receiver", receiver);
    }
}

fn set_string(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get_mut(key) {
        Some(Value::String(s)) => {
            s.clear();
            s.push_str(value);
        }
        _ => {
            map.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
}

/// The event used to check templates at load time, so a misspelt variable is reported when
/// the policy is applied rather than when the first rollout fails.
pub fn sample_event() -> FlaggerEvent {
    FlaggerEvent::new(
        "podinfo",
        "default",
        "Progressing",
        "New revision detected! Scaling up podinfo.default",
        herald_api::EventType::Normal,
        1_578_607_635_167,
    )
    .with_checksum("5d8f8f7b9c")
}

/// The canary facts used to check templates at load time.
pub fn sample_canary() -> CanaryFacts {
    CanaryFacts {
        labels: [("app".to_owned(), "podinfo".to_owned())].into(),
        weight: Some(10),
        failed_checks: Some(0),
        iterations: Some(1),
        revision: Some("5d8f8f7b9c".to_owned()),
    }
}
