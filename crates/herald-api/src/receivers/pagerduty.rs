//! `pagerduty`: PagerDuty's Events API v2, one incident per failed canary.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// PagerDuty (Events API v2): a failure ("Rolling back", "Canary failed!", "Progress deadline
/// exceeded", phase `Failed`) triggers an incident keyed by the canary and its cluster; the
/// canary's next success ("Promotion completed!", phase `Succeeded`) resolves it. Other events
/// send nothing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.routingKeySecretRef)").message("set routingKeySecretRef"))]
pub struct PagerDutyReceiver {
    /// The Secret key holding the integration's routing key (an Events API v2 integration of
    /// a service); the key defaults to `routingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_secret_ref: Option<SecretKeyRef>,
    /// The Events API base URL (a proxy, a test). Defaults to `https://events.pagerduty.com`;
    /// events go to `<apiUrl>/v2/enqueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// `payload.source`: where the problem is. Defaults to the cluster's name, else `herald`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The incident's severity for each of Herald's severities. Failures are `error` in
    /// Herald, which maps to `critical` unless set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<PagerDutySeverities>,
    /// Also sends a change event (`POST <apiUrl>/v2/change/enqueue`) for each promotion
    /// ("Promotion completed!"), which PagerDuty shows on the service's timeline next to its
    /// incidents. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_events: Option<bool>,
}

/// PagerDuty's severity for each of Herald's.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PagerDutySeverities {
    /// Defaults to `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<PagerDutySeverity>")]
    pub error: Option<PagerDutySeverity>,
    /// Defaults to `warning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<PagerDutySeverity>")]
    pub warning: Option<PagerDutySeverity>,
}

/// PagerDuty's `payload.severity`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    Critical,
    Error,
    Warning,
    Info,
}

impl PagerDutySeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            PagerDutySeverity::Critical => "critical",
            PagerDutySeverity::Error => "error",
            PagerDutySeverity::Warning => "warning",
            PagerDutySeverity::Info => "info",
        }
    }
}

/// PagerDuty's Events API.
pub const PAGERDUTY_API_URL: &str = "https://events.pagerduty.com";
/// The Secret key a routing key is read from when `routingKeySecretRef.key` is unset.
pub const DEFAULT_ROUTING_KEY: &str = "routingKey";

impl ReceiverSpec for PagerDutyReceiver {
    /// The API's base URL: not a credential (the routing key is).
    fn address(&self) -> AddressRef<'_> {
        AddressRef::Url(self.api_url.as_deref().unwrap_or(PAGERDUTY_API_URL))
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        self.routing_key_secret_ref.iter().collect()
    }
}
