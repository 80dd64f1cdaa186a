//! `slack`: an incoming webhook, or a bot token posting through Slack's Web API.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// Slack: an incoming webhook (`url` or `secretRef`), or a bot token (`tokenSecretRef`) that
/// posts with `chat.postMessage` to `channel` and threads each rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.secretRef), has(self.tokenSecretRef)].filter(k, k).size() == 1").message("set exactly one of url, secretRef, tokenSecretRef"))]
#[x_kube(validation = Rule::new("!has(self.tokenSecretRef) || has(self.channel)").message("a bot token (tokenSecretRef) needs a channel"))]
pub struct SlackReceiver {
    /// The incoming-webhook URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the incoming-webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The Secret key holding a bot token (`xoxb-...`, scope `chat:write`); the key defaults
    /// to `token`. Messages go through Slack's Web API, one thread per rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// With a bot token: the Web API base URL. Defaults to `https://slack.com/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// With a bot token: reply in one thread per rollout (canary and revision) and update the
    /// rollout's first message with the outcome. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<bool>,
    /// Channel: required with a bot token (a channel ID such as `C0123ABCD`, or `#name`);
    /// with a webhook only legacy webhooks honour it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// e.g. `:rocket:`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// Slack's Web API.
pub const SLACK_API_URL: &str = "https://slack.com/api";

impl ReceiverSpec for SlackReceiver {
    /// A bot token is a third address: with it set, the receiver has no URL to resolve.
    fn address(&self) -> AddressRef<'_> {
        super::url_or_secret(&self.url, &self.secret_ref)
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let mut refs = super::address_secret(self.address());
        refs.extend(self.token_secret_ref.as_ref());
        refs
    }
}
