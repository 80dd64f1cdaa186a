//! `telegram`: a Telegram bot posting to a chat.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// A Telegram bot (Bot API `sendMessage`): one HTML message per notification in a chat, a
/// channel or a forum topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tokenSecretRef)").message("set tokenSecretRef"))]
#[x_kube(validation = Rule::new("has(self.chatId)").message("set chatId"))]
pub struct TelegramReceiver {
    /// The Secret key holding the bot's token (`<bot id>:<secret>`, from @BotFather); the key
    /// defaults to `token`. The token is part of the request's URL, which is never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// The chat: its numeric ID (`-1001234567890`) or a public channel's `@username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// Posts in this topic of a forum supergroup (`message_thread_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_thread_id: Option<i64>,
    /// The Bot API base URL (a local Bot API server, a test). Defaults to
    /// `https://api.telegram.org`; messages go to `<apiUrl>/bot<token>/sendMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Telegram's Bot API.
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";

impl ReceiverSpec for TelegramReceiver {
    /// The API's base URL: not a credential (the token is).
    fn address(&self) -> AddressRef<'_> {
        AddressRef::Url(self.api_url.as_deref().unwrap_or(TELEGRAM_API_URL))
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        self.token_secret_ref.iter().collect()
    }
}
