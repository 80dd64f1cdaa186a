//! Alertmanager's API v2: a canary's failure posts a firing alert (`POST /api/v2/alerts`, a
//! JSON array of one alert), its next success posts the same alert with `endsAt`, which
//! resolves it. Alertmanager names an alert by its labels, and Herald's labels are the
//! canary's (`alertname`, `canary`, `namespace`, `cluster`, `severity` and the receiver's
//! own), never the message: every failure of a rollout posts the one alert again, keeping it
//! firing against Alertmanager's `resolve_timeout`, and a restart of Herald in between still
//! resolves it (the labels are computed, not remembered).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use herald_api::AlertmanagerReceiver;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::lifecycle::{transition, Transition};
use super::{Compiled, KeepOpen, ReceiverKind, Render, RequestSpec};
use crate::escape::Markup;
use crate::event::FlaggerEvent;
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// The `alertname` label unless the receiver sets one.
pub const DEFAULT_ALERTNAME: &str = "FlaggerCanaryFailed";
/// The `severity` label unless the receiver sets one.
pub const DEFAULT_SEVERITY: &str = "critical";
/// The labels Herald sets itself; a receiver's `labels` may not set them.
pub const OWN_LABELS: [&str; 5] = ["alertname", "canary", "namespace", "cluster", "severity"];

/// How often a failed canary's alert is posted again unless the receiver says
/// (`resendInterval`): Prometheus' `--rules.alert.resend-delay`.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// An Alertmanager.
#[derive(Debug)]
pub struct Alertmanager {
    pub resend_interval: Duration,
    pub alertname: String,
    pub severity: String,
    /// The receiver's own labels, sorted by name.
    pub labels: Vec<(String, String)>,
    pub generator_url: Option<String>,
}

impl ReceiverKind for Alertmanager {
    fn wants(&self, event: &FlaggerEvent) -> bool {
        transition(event).is_some()
    }

    /// A firing alert is posted again until the canary's success resolves it: Alertmanager
    /// ends an alert `resolve_timeout` after it last heard of it, and Flagger says nothing
    /// more about a canary that stays failed.
    fn keeps_open(&self, event: &FlaggerEvent) -> KeepOpen {
        match transition(event) {
            Some(Transition::Open) => KeepOpen::Repeat(self.resend_interval),
            Some(Transition::Resolve) => KeepOpen::Close,
            None => KeepOpen::Leave,
        }
    }

    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        let (title, text) = render.title_and_text(Markup::Plain)?;
        let event = render.event();
        let cluster = render.cluster();
        let time = crate::template::rfc3339(event.timestamp_ms());
        let mut labels = vec![
            ("alertname", self.alertname.as_str()),
            ("canary", event.name.as_str()),
            ("namespace", event.namespace.as_str()),
        ];
        if !cluster.is_empty() {
            labels.push(("cluster", cluster));
        }
        labels.push(("severity", &self.severity));
        labels.extend(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let summary = match (title.is_empty(), text.is_empty()) {
            (false, false) => format!("{title}: {text}"),
            (true, _) => text.clone(),
            (false, true) => title,
        };
        let resolve = transition(event) == Some(Transition::Resolve);
        let alert = Alert {
            labels: Pairs(labels),
            annotations: Pairs(vec![("summary", &summary), ("description", &text)]),
            starts_at: &time,
            // A firing alert has no end: Alertmanager gives it `resolve_timeout`.
            ends_at: resolve.then_some(time.as_str()),
            generator_url: self.generator_url.as_deref(),
        };
        Ok(serde_json::to_vec(&[alert]).expect("an alert serialises"))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Alert<'a> {
    labels: Pairs<'a>,
    annotations: Pairs<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    starts_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<&'a str>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

/// A JSON object in the order given.
struct Pairs<'a>(Vec<(&'a str, &'a str)>);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

pub(crate) fn compile(
    spec: &AlertmanagerReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    use herald_api::ReceiverSpec;
    let before = cx.problem_count();
    for (field, value) in [("alertname", &spec.alertname), ("severity", &spec.severity)] {
        if value.as_deref() == Some("") {
            cx.invalid(&format!("{path}.{field}"), "must not be empty");
        }
    }
    for (name, value) in &spec.labels {
        let field = format!("{path}.labels.{name}");
        if !is_label_name(name) {
            cx.invalid(
                &field,
                "a label name is letters, digits and '_', not starting with a digit or '__'",
            );
        } else if OWN_LABELS.contains(&name.as_str()) {
            cx.invalid(
                &field,
                "set by Herald (alertname and severity have settings of their own)",
            );
        } else if value.is_empty() {
            cx.invalid(&field, "must not be empty");
        }
    }
    if let Some(url) = &spec.generator_url {
        if !crate::policy::is_http_url(url) {
            cx.invalid(
                &format!("{path}.generatorUrl"),
                "must be an http:// or https:// URL with a host",
            );
        }
    }
    let resend_interval = match spec
        .resend_interval
        .as_deref()
        .map(crate::repeats::parse_interval)
    {
        None => Some(DEFAULT_RESEND_INTERVAL),
        Some(Ok(ms)) if ms >= 1_000 => Some(Duration::from_millis(ms)),
        Some(Ok(_)) => {
            cx.invalid(&format!("{path}.resendInterval"), "must be at least 1s");
            None
        }
        Some(Err(e)) => {
            cx.invalid(&format!("{path}.resendInterval"), &e);
            None
        }
    };
    let mut request = RequestSpec::default();
    match (&spec.basic_auth, &spec.bearer_token_secret_ref) {
        (Some(_), Some(_)) => {
            cx.invalid(path, "set at most one of basicAuth, bearerTokenSecretRef")
        }
        (Some(auth), None) => {
            if auth.username.is_empty() || auth.username.contains(':') {
                cx.invalid(
                    &format!("{path}.basicAuth.username"),
                    "must be a non-empty name without ':'",
                );
            }
            let field = format!("{path}.basicAuth.passwordSecretRef");
            let password = cx.secret_value(
                &auth.password_secret_ref,
                herald_api::DEFAULT_ALERTMANAGER_PASSWORD_KEY,
                &field,
            );
            request.authorization = password.map(|password| {
                let pair = format!("{}:{}", auth.username, password.expose());
                Redacted::new(format!("Basic {}", base64(pair.as_bytes())))
            });
        }
        (None, Some(secret)) => {
            let field = format!("{path}.bearerTokenSecretRef");
            request.bearer_token = cx.token_value(secret, &field);
        }
        (None, None) => {}
    }
    let base = cx.resolve_address(spec.address(), path);
    if cx.problem_count() > before {
        return None;
    }
    let url = format!("{}/api/v2/alerts", base?.expose().trim_end_matches('/'));
    let kind = Alertmanager {
        resend_interval: resend_interval?,
        alertname: spec
            .alertname
            .clone()
            .unwrap_or_else(|| DEFAULT_ALERTNAME.to_owned()),
        severity: spec
            .severity
            .clone()
            .unwrap_or_else(|| DEFAULT_SEVERITY.to_owned()),
        labels: spec.labels.clone().into_iter().collect(),
        generator_url: spec.generator_url.clone(),
    };
    Some(Compiled {
        type_name: "",
        kind: Arc::new(kind),
        url: Redacted::new(url),
        request,
    })
}

/// Standard base64 with padding (RFC 4648), for a basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "alertmanager_tests.rs"]
mod tests;
