//! `discord`: a Discord channel webhook.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A Discord channel webhook (`https://discord.com/api/webhooks/...`): one embed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct DiscordReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Overrides the webhook's default user name (1 to 80 characters; Discord refuses names
    /// containing "discord" or "clyde").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub username: Option<String>,
    /// Overrides the webhook's default avatar (an image URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

super::url_or_secret_spec!(DiscordReceiver);
