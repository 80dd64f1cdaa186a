//! `rocketchat`: a Rocket.Chat incoming webhook integration.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A Rocket.Chat incoming webhook integration (`https://<server>/hooks/...`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct RocketChatReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Channel override, e.g. `#deploys` or `@user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Shown as the sender's name (sent as `alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The sender's avatar as an emoji, e.g. `:rocket:` (sent as `emoji`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_emoji: Option<String>,
    /// The sender's avatar as an image URL (sent as `avatar`; wins over `iconEmoji`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

super::url_or_secret_spec!(RocketChatReceiver);
