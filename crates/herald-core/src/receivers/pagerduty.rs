//! PagerDuty's Events API v2: a canary's failure triggers an incident, its next success
//! resolves it, both under one `dedup_key` per canary and cluster
//! ([`lifecycle::canary_key`](super::lifecycle::canary_key)). PagerDuty's own dedup keeps
//! repeated failures of a rollout in the one open incident, and a restart of Herald between
//! the two loses nothing: the key is computed again, not remembered.
//!
//! The routing key authenticates the event and so is part of the body; it is added when the
//! request is made ([`ReceiverKind::plan`]), so the rendered body (`herald render`, logs)
//! never holds it.

use std::any::Any;
use std::sync::Arc;

use herald_api::{PagerDutyReceiver, PagerDutySeverity};
use serde::Serialize;

use super::json::push_str;
use super::lifecycle::{canary_key, transition, Transition};
use super::{limit_chars, Compiled, KeepThread, Plan, ReceiverKind, Render, Request, RequestSpec};
use super::{ThreadParent, ThreadRef};
use crate::escape::Markup;
use crate::event::{FlaggerEvent, Severity};
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// PagerDuty refuses a `payload.summary` longer than this many characters.
pub const SUMMARY_LIMIT: usize = 1_024;

/// A PagerDuty Events API v2 integration.
#[derive(Debug)]
pub struct PagerDuty {
    routing_key: Redacted,
    /// `payload.source`; `None`: the cluster's name, else `herald`.
    pub source: Option<String>,
    /// PagerDuty's severity for Herald's `error` and `warning` (anything else is `info`).
    pub error: PagerDutySeverity,
    pub warning: PagerDutySeverity,
    /// Receivers share PagerDuty's URL: each routing key is its own queue and rate-limit
    /// group (a fingerprint, never the key).
    queue: String,
    /// Where a promotion's change event goes, when `changeEvents` is on.
    change_url: Option<Redacted>,
}

impl ReceiverKind for PagerDuty {
    fn wants(&self, event: &FlaggerEvent) -> bool {
        transition(event).is_some()
    }

    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        let key = canary_key(render.event(), render.cluster());
        let resolve = transition(render.event()) == Some(Transition::Resolve);
        let promoted = render.event().message().starts_with("Promotion completed!");
        if resolve && !(promoted && self.change_url.is_some()) {
            // A resolve carries no payload: PagerDuty would ignore it.
            return Ok(serde_json::to_vec(&Resolve {
                event_action: "resolve",
                dedup_key: &key,
                change: None,
            })
            .expect("a resolve serialises"));
        }
        let (title, text) = render.title_and_text(Markup::Plain)?;
        let severity = match render.severity() {
            Severity::Error => self.error,
            Severity::Warning => self.warning,
            Severity::Info | Severity::Success => PagerDutySeverity::Info,
        };
        let event = render.event();
        let cluster = render.cluster();
        let summary = match (title.is_empty(), text.is_empty()) {
            (false, false) => format!("{title}: {text}"),
            (true, _) => text,
            (false, true) => title,
        };
        let source = match &self.source {
            Some(source) => source.as_str(),
            None if !cluster.is_empty() => cluster,
            None => "herald",
        };
        let canary = render.canary();
        let details = Details {
            phase: &event.phase,
            revision: super::threads::rollout_revision(event, canary),
            weight: canary.and_then(|c| c.weight),
            failed_checks: canary.and_then(|c| c.failed_checks),
            cluster: (!cluster.is_empty()).then_some(cluster),
            message: event.message(),
        };
        if resolve {
            // The resolve, and the promotion's change event that [`Self::plan`] sends after it.
            let change = Change {
                summary: &limit_chars(&summary, SUMMARY_LIMIT),
                timestamp: crate::template::rfc3339(event.timestamp_ms()),
                source,
                custom_details: details,
            };
            return Ok(serde_json::to_vec(&Resolve {
                event_action: "resolve",
                dedup_key: &key,
                change: Some(change),
            })
            .expect("a resolve serialises"));
        }
        let body = Trigger {
            event_action: "trigger",
            dedup_key: &key,
            payload: Payload {
                summary: &limit_chars(&summary, SUMMARY_LIMIT),
                source,
                severity: severity.as_str(),
                timestamp: crate::template::rfc3339(event.timestamp_ms()),
                component: &event.name,
                group: &event.namespace,
                class: "canary",
                custom_details: details,
            },
            client: "Herald",
        };
        Ok(serde_json::to_vec(&body).expect("a trigger serialises"))
    }

    /// The body with `routing_key` put first: the rendered body never holds the key. A
    /// resolve that carries a promotion's `change` is sent without it, and the change event
    /// follows it to its own URL.
    fn plan(&self, body: &[u8], _: Option<&ThreadRef>, _: Option<&ThreadParent>) -> Plan {
        let key = self.routing_key.expose();
        let split = (self.change_url.clone())
            .zip(serde_json::from_slice::<WithChange<'_>>(body).ok())
            .and_then(|(url, parsed)| parsed.change.map(|change| (url, parsed.dedup_key, change)));
        let Some((url, dedup_key, change)) = split else {
            return Plan {
                request: Request {
                    name: "enqueue",
                    url: None,
                    body: Some(with_routing_key(body, key)),
                    method: None,
                },
                keep: KeepThread::Nothing,
                follow_up: None,
            };
        };
        let resolve = serde_json::to_vec(&Resolve {
            event_action: "resolve",
            dedup_key: &dedup_key,
            change: None,
        })
        .expect("a resolve serialises");
        let mut event = Vec::with_capacity(change.get().len() + key.len() + 32);
        event.extend_from_slice(b"{\"payload\":");
        event.extend_from_slice(change.get().as_bytes());
        event.push(b'}');
        Plan {
            request: Request {
                name: "enqueue",
                url: None,
                body: Some(with_routing_key(&resolve, key)),
                method: None,
            },
            keep: KeepThread::Nothing,
            follow_up: Some(Request {
                name: "change",
                url: Some(url),
                body: Some(with_routing_key(&event, key)),
                method: None,
            }),
        }
    }

    fn queue(&self) -> Option<&str> {
        Some(&self.queue)
    }

    fn rate_limit_group(&self) -> Option<&str> {
        Some(&self.queue)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `{"routing_key":"<key>",` and the rest of the rendered object.
fn with_routing_key(body: &[u8], key: &str) -> Vec<u8> {
    let rest = body.strip_prefix(b"{").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + key.len() + 20);
    out.extend_from_slice(b"{\"routing_key\":");
    push_str(&mut out, key);
    out.push(b',');
    out.extend_from_slice(rest);
    out
}

#[derive(Serialize)]
struct Resolve<'a> {
    event_action: &'static str,
    dedup_key: &'a str,
    /// Only in the rendered body: the change event's payload, sent on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<Change<'a>>,
}

/// A change event's `payload`.
#[derive(Serialize)]
struct Change<'a> {
    summary: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    timestamp: String,
    source: &'a str,
    custom_details: Details<'a>,
}

/// A rendered resolve, read back by [`PagerDuty::plan`].
#[derive(serde::Deserialize)]
struct WithChange<'a> {
    dedup_key: String,
    #[serde(borrow)]
    change: Option<&'a serde_json::value::RawValue>,
}

#[derive(Serialize)]
struct Trigger<'a> {
    event_action: &'static str,
    dedup_key: &'a str,
    payload: Payload<'a>,
    client: &'static str,
}

#[derive(Serialize)]
struct Payload<'a> {
    summary: &'a str,
    source: &'a str,
    severity: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    timestamp: String,
    component: &'a str,
    group: &'a str,
    class: &'static str,
    custom_details: Details<'a>,
}

#[derive(Serialize)]
struct Details<'a> {
    phase: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    /// The canary's traffic weight and failed checks, when Herald watches the Canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_checks: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    message: &'a str,
}

pub(crate) fn compile(
    spec: &PagerDutyReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let before = cx.problem_count();
    let api = cx.api_url(spec.api_url.as_deref(), herald_api::PAGERDUTY_API_URL, path);
    if spec.source.as_deref() == Some("") {
        cx.invalid(&format!("{path}.source"), "must not be empty");
    }
    let field = format!("{path}.routingKeySecretRef");
    let routing_key = match &spec.routing_key_secret_ref {
        None => {
            cx.invalid(
                &field,
                "required: the Secret key holding the integration's routing key",
            );
            None
        }
        Some(secret) => cx
            .secret_value(secret, herald_api::DEFAULT_ROUTING_KEY, &field)
            .filter(|key| {
                // Never echo the value: it is a credential.
                let ok =
                    !key.expose().is_empty() && key.expose().bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    cx.invalid(&field, "the routing key must be one word of visible ASCII");
                }
                ok
            }),
    };
    if cx.problem_count() > before {
        return None;
    }
    let routing_key = routing_key?;
    let severities = spec.severity.clone().unwrap_or_default();
    let kind = PagerDuty {
        queue: super::http::fingerprint(routing_key.expose()),
        routing_key,
        source: spec.source.clone(),
        error: severities.error.unwrap_or(PagerDutySeverity::Critical),
        warning: severities.warning.unwrap_or(PagerDutySeverity::Warning),
        change_url: (spec.change_events == Some(true))
            .then(|| Redacted::new(format!("{api}/v2/change/enqueue"))),
    };
    Some(Compiled {
        type_name: "",
        kind: Arc::new(kind),
        url: Redacted::new(format!("{api}/v2/enqueue")),
        request: RequestSpec::default(),
    })
}

#[cfg(test)]
#[path = "pagerduty_tests.rs"]
mod tests;
