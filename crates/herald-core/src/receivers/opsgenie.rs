//! Opsgenie's Alert API v2: a canary's failure creates an alert (`POST /v2/alerts`), its next
//! success closes it (`POST /v2/alerts/<alias>/close?identifierType=alias`), both by one
//! `alias` per canary and cluster ([`alias`]). Opsgenie adds a create whose alias has an
//! open alert to that alert (its count), so repeated failures of a rollout stay one alert, and
//! the alias is computed, not remembered: a restart of Herald in between still closes it.

use std::any::Any;
use std::sync::Arc;

use herald_api::{OpsgeniePriority, OpsgenieReceiver, OpsgenieRegion};
use serde::Serialize;

use super::lifecycle::{transition, Transition};
use super::{limit_chars, Compiled, ReceiverKind, Render, RequestSpec};
use crate::escape::Markup;
use crate::event::FlaggerEvent;
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// Opsgenie cuts `message` at this many characters; Herald cuts it first, saying so.
pub const MESSAGE_LIMIT: usize = 130;
/// Opsgenie's limit for `description`.
pub const DESCRIPTION_LIMIT: usize = 15_000;

/// An Opsgenie API integration.
#[derive(Debug)]
pub struct Opsgenie {
    pub priority: OpsgeniePriority,
    pub tags: Vec<String>,
}

impl ReceiverKind for Opsgenie {
    fn wants(&self, event: &FlaggerEvent) -> bool {
        transition(event).is_some()
    }

    /// A success closes the canary's alert at its own URL.
    fn path(&self, event: &FlaggerEvent, cluster: &str) -> Option<String> {
        (transition(event) == Some(Transition::Resolve)).then(|| {
            format!(
                "/{}/close?identifierType=alias",
                percent_encode(&alias(event, cluster))
            )
        })
    }

    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        let (title, text) = render.title_and_text(Markup::Plain)?;
        let event = render.event();
        let cluster = render.cluster();
        let canary = render.canary();
        if transition(event) == Some(Transition::Resolve) {
            let close = Close {
                source: "herald",
                user: "herald",
                note: &limit_chars(&text, 25_000),
            };
            return Ok(serde_json::to_vec(&close).expect("a close serialises"));
        }
        let mut tags = vec!["herald", event.namespace.as_str()];
        if !cluster.is_empty() {
            tags.push(cluster);
        }
        tags.extend(self.tags.iter().map(String::as_str));
        let message = if title.is_empty() { &text } else { &title };
        let entity = format!("{}.{}", event.name, event.namespace);
        let create = Create {
            message: &limit_chars(message, MESSAGE_LIMIT),
            alias: &alias(event, cluster),
            description: &limit_chars(&text, DESCRIPTION_LIMIT),
            tags,
            details: Details {
                canary: &event.name,
                namespace: &event.namespace,
                phase: &event.phase,
                revision: super::threads::rollout_revision(event, canary),
                weight: canary.and_then(|c| c.weight).map(|w| w.to_string()),
                failed_checks: canary.and_then(|c| c.failed_checks).map(|n| n.to_string()),
                cluster: (!cluster.is_empty()).then_some(cluster),
            },
            entity: &entity,
            source: "herald",
            priority: self.priority.as_str(),
        };
        Ok(serde_json::to_vec(&create).expect("a create serialises"))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `herald:<cluster>:<namespace>:<canary>`: the canary's alert in its cluster, computed
/// rather than remembered (see [`super::lifecycle::canary_key`]). Separated by `:`, which
/// no namespace or canary name holds, rather than `/`: the alias is also a path segment of
/// the close, and web servers commonly refuse an encoded slash (`%2F`) in a path (Tomcat's
/// default) or decode it into two segments; `:` is a plain path character.
pub fn alias(event: &FlaggerEvent, cluster: &str) -> String {
    format!("herald:{cluster}:{}:{}", event.namespace, event.name)
}

/// `text` as one path segment: bytes other than URL-unreserved characters and `:` are
/// percent-encoded (a cluster name may hold anything).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
struct Create<'a> {
    message: &'a str,
    alias: &'a str,
    description: &'a str,
    tags: Vec<&'a str>,
    details: Details<'a>,
    entity: &'a str,
    source: &'static str,
    priority: &'static str,
}

#[derive(Serialize)]
struct Details<'a> {
    canary: &'a str,
    namespace: &'a str,
    phase: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    /// The canary's traffic weight and failed checks, when Herald watches the Canary
    /// (strings: Opsgenie's details are a map of strings).
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<String>,
    #[serde(rename = "failedChecks", skip_serializing_if = "Option::is_none")]
    failed_checks: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
}

#[derive(Serialize)]
struct Close<'a> {
    source: &'static str,
    user: &'static str,
    note: &'a str,
}

pub(crate) fn compile(
    spec: &OpsgenieReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let before = cx.problem_count();
    if spec.api_url.is_some() && spec.region.is_some() {
        cx.invalid(path, "set at most one of apiUrl, region");
    }
    let region = spec.region.unwrap_or(OpsgenieRegion::Us);
    let api = cx.api_url(spec.api_url.as_deref(), region.api_url(), path);
    for (i, tag) in spec.tags.iter().enumerate() {
        if tag.is_empty() || tag.chars().count() > 50 {
            cx.invalid(&format!("{path}.tags[{i}]"), "a tag has 1 to 50 characters");
        }
    }
    let field = format!("{path}.apiKeySecretRef");
    let key = match &spec.api_key_secret_ref {
        None => {
            cx.invalid(
                &field,
                "required: the Secret key holding the API integration's key",
            );
            None
        }
        Some(secret) => cx
            .secret_value(secret, herald_api::DEFAULT_OPSGENIE_KEY, &field)
            .filter(|key| {
                // Never echo the value: it is a credential.
                let ok =
                    !key.expose().is_empty() && key.expose().bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    cx.invalid(&field, "the API key must be one word of visible ASCII");
                }
                ok
            }),
    };
    if cx.problem_count() > before {
        return None;
    }
    let key = key?;
    Some(Compiled {
        type_name: "",
        kind: Arc::new(Opsgenie {
            priority: spec.priority.unwrap_or(OpsgeniePriority::P1),
            tags: spec.tags.clone(),
        }),
        url: Redacted::new(format!("{api}/v2/alerts")),
        request: RequestSpec {
            authorization: Some(Redacted::new(format!("GenieKey {}", key.expose()))),
            ..RequestSpec::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_sources, MatchInput};
    use herald_api::EventType;
    use serde_json::{json, Value};

    const POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: og, namespace: default}
stringData: {apiKey: eb243592-faa2-4ba2-a551q-1afdf565c889}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: oncall, namespace: default}
spec:
  receivers:
    - name: genie
      opsgenie: {apiKeySecretRef: {name: og}, region: eu, priority: P2, tags: [payments]}
"#;

    #[test]
    fn a_failure_creates_and_a_success_closes_by_alias() {
        let mut loaded = load_sources([("p.yaml", POLICY)]);
        let set = loaded.build("prod-eu", "default");
        assert_eq!(set.problems().len(), 0, "{:?}", set.problems());
        let receiver = set.receiver(0, 0);
        assert_eq!(
            receiver.url.expose(),
            "https://api.eu.opsgenie.com/v2/alerts"
        );
        let headers = receiver.request.headers_for(b"");
        assert_eq!(
            headers[0].value.expose(),
            "GenieKey eb243592-faa2-4ba2-a551q-1afdf565c889"
        );
        assert!(headers[0].sensitive);
        let ev = |phase: &str, message: &str| {
            FlaggerEvent::new(
                "podinfo",
                "default",
                phase,
                message,
                EventType::Warning,
                1_578_607_635_167,
            )
        };
        let long = format!("Canary failed! {}", "x".repeat(200));
        let failed = ev("Failed", &long);
        let got = set.notifications(&MatchInput::event(&failed), None);
        let n = got[0].as_ref().unwrap();
        assert_eq!(n.path, None);
        let body: Value = serde_json::from_slice(&n.body).unwrap();
        assert_eq!(
            body["message"].as_str().unwrap(),
            "[prod-eu] podinfo.default"
        );
        assert_eq!(body["alias"], "herald:prod-eu:default:podinfo");
        assert_eq!(body["description"].as_str().unwrap(), long);
        assert_eq!(body["priority"], "P2");
        assert_eq!(
            body["tags"],
            json!(["herald", "default", "prod-eu", "payments"])
        );
        assert_eq!(body["entity"], "podinfo.default");
        let done = ev(
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
        );
        let got = set.notifications(&MatchInput::event(&done), None);
        let n = got[0].as_ref().unwrap();
        assert_eq!(
            n.path.as_deref(),
            Some("/herald:prod-eu:default:podinfo/close?identifierType=alias")
        );
        assert_eq!(
            String::from_utf8(n.body.clone()).unwrap(),
            r#"{"source":"herald","user":"herald","note":"Promotion completed! Scaling down podinfo.default"}"#
        );
        let progress = ev("Progressing", "Advance podinfo.default canary weight 10");
        assert!(set
            .notifications(&MatchInput::event(&progress), None)
            .is_empty());
        // A watched Canary adds its weight, failed checks and revision, as strings.
        let body = super::super::test_support::watched_body(
            &set,
            &failed,
            &super::super::test_support::failed_canary(),
        );
        assert_eq!(
            body["details"],
            json!({"canary": "podinfo", "namespace": "default", "phase": "Failed", "revision": "7c4d1a2f", "weight": "0", "failedChecks": "5", "cluster": "prod-eu"})
        );
    }

    #[test]
    fn the_message_is_cut_to_130_characters() {
        let long = "é".repeat(300);
        let cut = limit_chars(&long, MESSAGE_LIMIT);
        assert_eq!(cut.chars().count(), MESSAGE_LIMIT);
    }
}
