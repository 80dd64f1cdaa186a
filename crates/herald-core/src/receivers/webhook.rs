//! `webhook`: any HTTP endpoint. The body is Flagger's event JSON, or a template that must
//! render JSON; the method, headers, bearer token and signature are the policy's.

use std::any::Any;
use std::sync::Arc;

use herald_api::WebhookReceiver;

use super::http::{is_header_name, is_header_value};
use super::{Compiled, ReceiverKind, Render, RequestSpec, Signature};
use crate::escape::Markup;
use crate::policy::json::{check_json, minify_json, DUPLICATE_KEY};
use crate::policy::Compiler;
use crate::template::{TemplateError, TemplateId};

/// A webhook.
#[derive(Debug)]
pub struct Webhook {
    /// A template rendering the whole body; `None` sends Flagger's event JSON.
    pub body: Option<TemplateId>,
}

impl ReceiverKind for Webhook {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        let Some(id) = self.body else {
            return Ok(render.event_json());
        };
        let body = render.template(id, Markup::Plain)?;
        check_json(&body).map_err(|e| {
            let reason = crate::json_error_reason(&e);
            TemplateError {
                line: None,
                column: None,
                reason: if reason.starts_with(DUPLICATE_KEY) {
                    format!(
                        "body template rendered an object with a {reason}: refused (a value inside a JSON string can add keys; insert values with {{{{json ...}}}})"
                    )
                } else {
                    format!("body template rendered invalid JSON: {reason}")
                },
            }
        })?;
        Ok(minify_json(&body).into_bytes())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Headers the HTTP client sets itself, or that would garble the request.
const MANAGED: [&str; 5] = [
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "te",
];

pub(crate) fn compile(
    webhook: &WebhookReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let body = match &webhook.body {
        Some(source) => Some(cx.json_template(source, &format!("{path}.body"))?),
        None => None,
    };
    let request = compile_request(webhook, path, cx)?;
    let url = cx.resolve_address(herald_api::ReceiverSpec::address(webhook), path)?;
    Some(Compiled {
        type_name: "",
        kind: Arc::new(Webhook { body }),
        url,
        request,
    })
}

/// A webhook's method, headers, bearer token and signing key.
fn compile_request(
    webhook: &WebhookReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<RequestSpec> {
    let before = cx.problem_count();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in &webhook.headers {
        let lower = name.to_ascii_lowercase();
        let conflict = if MANAGED.contains(&lower.as_str()) {
            Some(format!("{name:?} is set by Herald's HTTP client"))
        } else if seen.contains(&lower) {
            Some(format!(
                "{name:?} is given twice (header names ignore case)"
            ))
        } else if lower == "authorization" && webhook.bearer_token_secret_ref.is_some() {
            Some("Authorization is set by bearerTokenSecretRef".to_owned())
        } else {
            None
        };
        seen.push(lower);
        if let Some(conflict) = conflict {
            cx.invalid(&format!("{path}.headers.{name}"), conflict);
            continue;
        }
        if !is_header_name(name) {
            cx.invalid(
                &format!("{path}.headers"),
                format!("{name:?} is not a valid HTTP header name"),
            );
        } else if !is_header_value(value) {
            cx.invalid(
                &format!("{path}.headers.{name}"),
                "a header value must be one line of visible ASCII",
            );
        }
    }
    let bearer_token = webhook
        .bearer_token_secret_ref
        .as_ref()
        .and_then(|secret| cx.token_value(secret, &format!("{path}.bearerTokenSecretRef")));
    let signature = webhook
        .signature
        .as_ref()
        .and_then(|signature| compile_signature(webhook, signature, &seen, path, cx));
    if cx.problem_count() > before {
        return None;
    }
    Some(RequestSpec {
        method: webhook.method.unwrap_or_default(),
        headers: webhook
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        bearer_token,
        authorization: None,
        signature,
    })
}

/// The signature's header (one not sent otherwise) and its key.
fn compile_signature(
    webhook: &WebhookReceiver,
    signature: &herald_api::WebhookSignature,
    seen: &[String],
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Signature> {
    let header = signature.header.as_deref().unwrap_or("X-Signature");
    let lower = header.to_ascii_lowercase();
    let taken = seen.contains(&lower)
        || MANAGED.contains(&lower.as_str())
        || lower == "content-type"
        || (lower == "authorization" && webhook.bearer_token_secret_ref.is_some());
    if !is_header_name(header) || taken {
        let why = if taken {
            format!("{header:?} is already sent with another value")
        } else {
            format!("{header:?} is not a valid HTTP header name")
        };
        cx.invalid(&format!("{path}.signature.header"), why);
        return None;
    }
    let key = cx.secret_value(
        &signature.secret_ref,
        herald_api::DEFAULT_SIGNING_KEY,
        &format!("{path}.signature.secretRef"),
    )?;
    if key.expose().is_empty() {
        cx.invalid(
            &format!("{path}.signature.secretRef"),
            "the signing key is empty",
        );
        return None;
    }
    Some(Signature {
        header: header.to_owned(),
        key,
    })
}
