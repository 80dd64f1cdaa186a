//! `alertmanager`: Prometheus Alertmanager's API v2, one alert per failed canary.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// Alertmanager (API v2, `POST <url>/api/v2/alerts`): a failure ("Rolling back", "Canary
/// failed!", "Progress deadline exceeded", phase `Failed`) posts a firing alert labelled with
/// the canary, its namespace and cluster; every further failure posts it again, which keeps it
/// firing (Alertmanager resolves an alert not posted again within its `resolve_timeout`). The
/// canary's next success ("Promotion completed!", phase `Succeeded`) posts it with `endsAt`,
/// which resolves it. Other events send nothing. While the canary stays failed, Herald posts
/// its alert again every `resendInterval`, as Prometheus does, so Alertmanager does not
/// resolve it when Flagger goes quiet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
#[x_kube(validation = Rule::new("!has(self.basicAuth) || !has(self.bearerTokenSecretRef)").message("set at most one of basicAuth, bearerTokenSecretRef"))]
pub struct AlertmanagerReceiver {
    /// Alertmanager's base URL (e.g. `http://alertmanager.monitoring:9093`); alerts go to
    /// `<url>/api/v2/alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The `alertname` label. Defaults to `FlaggerCanaryFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// The `severity` label. Defaults to `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// More labels on every alert (e.g. `team: payments`), for Alertmanager's routes. Herald
    /// sets `alertname`, `canary`, `namespace`, `cluster` and `severity` itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The alert's `generatorURL` (a dashboard, Flagger's canary page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
    /// How often a failed canary's alert is posted again while it stays failed (e.g. `30s`,
    /// `1m`). Defaults to `1m`, Prometheus' `--rules.alert.resend-delay`; keep it well under
    /// Alertmanager's `resolve_timeout` (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_interval: Option<String>,
    /// HTTP basic authentication (an Alertmanager `--web.config.file`, a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<AlertmanagerBasicAuth>,
    /// The Secret key holding a token sent as `Authorization: Bearer <token>`; the key
    /// defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
}

/// HTTP basic authentication: a user name and the Secret key holding the password.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerBasicAuth {
    #[schemars(length(min = 1))]
    pub username: String,
    /// The key defaults to `password`.
    pub password_secret_ref: SecretKeyRef,
}

/// The Secret key a basic-auth password is read from when `passwordSecretRef.key` is unset.
pub const DEFAULT_PASSWORD_KEY: &str = "password";

impl ReceiverSpec for AlertmanagerReceiver {
    fn address(&self) -> AddressRef<'_> {
        super::url_or_secret(&self.url, &self.secret_ref)
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let mut refs = super::address_secret(self.address());
        refs.extend(self.basic_auth.iter().map(|auth| &auth.password_secret_ref));
        refs.extend(self.bearer_token_secret_ref.as_ref());
        refs
    }
}
