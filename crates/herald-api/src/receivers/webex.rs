//! `webex`: a Webex bot posting to a room.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// Webex (`POST /v1/messages`): one Markdown message per notification in a room, posted by a
/// bot (or an integration) with its access token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tokenSecretRef)").message("set tokenSecretRef"))]
#[x_kube(validation = Rule::new("has(self.roomId)").message("set roomId"))]
pub struct WebexReceiver {
    /// The Secret key holding the bot's access token (sent as `Authorization: Bearer
    /// <token>`); the key defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// The room's ID (`Y2lzY29zcGFyazovL3VzL1JPT00v...`); the bot must be a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// The API base URL (a proxy, a test). Defaults to `https://webexapis.com`; messages go to
    /// `<apiUrl>/v1/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Webex's API.
pub const WEBEX_API_URL: &str = "https://webexapis.com";

impl ReceiverSpec for WebexReceiver {
    /// The API's base URL: not a credential (the token is).
    fn address(&self) -> AddressRef<'_> {
        AddressRef::Url(self.api_url.as_deref().unwrap_or(WEBEX_API_URL))
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        self.token_secret_ref.iter().collect()
    }
}
