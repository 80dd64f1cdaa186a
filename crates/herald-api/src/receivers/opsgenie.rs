//! `opsgenie`: Opsgenie's Alert API v2, one alert per failed canary.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// Opsgenie (Alert API v2): a failure ("Rolling back", "Canary failed!", "Progress deadline
/// exceeded", phase `Failed`) creates an alert whose `alias` names the canary in its cluster
/// (Opsgenie adds repeats to the open alert); the canary's next success ("Promotion
/// completed!", phase `Succeeded`) closes it by that alias. Other events send nothing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.apiKeySecretRef)").message("set apiKeySecretRef"))]
#[x_kube(validation = Rule::new("!has(self.apiUrl) || !has(self.region)").message("set at most one of apiUrl, region"))]
pub struct OpsgenieReceiver {
    /// The Secret key holding an API integration's key (sent as `Authorization: GenieKey
    /// <key>`); the key defaults to `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Opsgenie's region: `us` (`https://api.opsgenie.com`, the default) or `eu`
    /// (`https://api.eu.opsgenie.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<OpsgenieRegion>")]
    pub region: Option<OpsgenieRegion>,
    /// Another API base URL (a proxy, a test) instead of the region's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The alert's priority for Herald's `error` (failures). Defaults to `P1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<OpsgeniePriority>")]
    pub priority: Option<OpsgeniePriority>,
    /// Tags added to every alert (besides `herald`, the canary's namespace and cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OpsgenieRegion {
    Us,
    Eu,
}

impl OpsgenieRegion {
    pub fn api_url(self) -> &'static str {
        match self {
            OpsgenieRegion::Us => "https://api.opsgenie.com",
            OpsgenieRegion::Eu => "https://api.eu.opsgenie.com",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsgeniePriority {
    P1,
    P2,
    P3,
    P4,
    P5,
}

impl OpsgeniePriority {
    pub fn as_str(self) -> &'static str {
        match self {
            OpsgeniePriority::P1 => "P1",
            OpsgeniePriority::P2 => "P2",
            OpsgeniePriority::P3 => "P3",
            OpsgeniePriority::P4 => "P4",
            OpsgeniePriority::P5 => "P5",
        }
    }
}

/// The Secret key an Opsgenie API key is read from when `apiKeySecretRef.key` is unset.
pub const DEFAULT_API_KEY: &str = "apiKey";

impl ReceiverSpec for OpsgenieReceiver {
    /// The API's base URL: not a credential (the API key is).
    fn address(&self) -> AddressRef<'_> {
        match (&self.api_url, self.region) {
            (Some(url), _) => AddressRef::Url(url),
            (None, region) => AddressRef::Url(region.unwrap_or(OpsgenieRegion::Us).api_url()),
        }
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        self.api_key_secret_ref.iter().collect()
    }
}
