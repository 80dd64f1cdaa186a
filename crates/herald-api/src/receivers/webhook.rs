//! `webhook`: any HTTP endpoint, Flagger's event JSON or a body template.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// Any HTTP endpoint. The body is Flagger's event JSON unless `body` gives a template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct WebhookReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The HTTP method. Defaults to `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<HttpMethod>")]
    pub method: Option<HttpMethod>,
    /// Extra request headers. Their values are visible to anyone who can read the policy: put
    /// credentials in `bearerTokenSecretRef` or `signature`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The Secret key holding a token sent as `Authorization: Bearer <token>`; the key
    /// defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// Signs every body with HMAC-SHA256, so the receiver can check it came from Herald.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<WebhookSignature>,
    /// A handlebars template that must render a JSON document; use `{{json value}}` to
    /// insert a value as a JSON literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpMethod {
    #[default]
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// An HMAC-SHA256 signature of the exact request body: `<header>: sha256=<lower-case hex>`
/// (the convention of GitHub's and Flux's signed webhooks).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSignature {
    /// The Secret key holding the signing key; the key defaults to `signingKey`.
    pub secret_ref: SecretKeyRef,
    /// The header carrying the signature. Defaults to `X-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl ReceiverSpec for WebhookReceiver {
    fn address(&self) -> AddressRef<'_> {
        super::url_or_secret(&self.url, &self.secret_ref)
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let mut refs = super::address_secret(self.address());
        refs.extend(self.bearer_token_secret_ref.as_ref());
        refs.extend(self.signature.as_ref().map(|s| &s.secret_ref));
        refs
    }
}
