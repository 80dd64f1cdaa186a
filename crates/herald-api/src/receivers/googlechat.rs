//! `googlechat`: a Google Chat incoming webhook.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A Google Chat incoming webhook (`https://chat.googleapis.com/v1/spaces/...`): one card.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct GoogleChatReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// One thread per rollout (canary and revision): each message carries the rollout's
    /// `thread.threadKey` and is posted with
    /// `messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<bool>,
}

super::url_or_secret_spec!(GoogleChatReceiver);
