//! Telegram's Bot API: `POST <apiUrl>/bot<token>/sendMessage` with `{chat_id, text,
//! parse_mode: "HTML", message_thread_id?}`. The token is in the URL's path, so the URL is a
//! credential like a webhook's (never logged, never shown by `herald render`). Telegram
//! answers `{"ok":true,"result":{...}}`; `"ok":false` is a refusal, and a `429` says how long
//! to wait in `parameters.retry_after` (no `Retry-After` header).

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use herald_api::TelegramReceiver;
use serde::{Deserialize, Serialize};

use super::{chat_body, limit_chars, utf16_len, Answer, Compiled, Message, ReceiverKind, Render};
use super::{RequestSpec, TRUNCATION_NOTE};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// Telegram refuses a message longer than this (counted after its HTML is parsed; Herald
/// counts the HTML, which is never shorter).
pub const TEXT_LIMIT: usize = 4_096;
/// The title is cut to this many characters.
const TITLE_LIMIT: usize = 256;

/// A Telegram bot and the chat it posts to.
#[derive(Debug)]
pub struct Telegram {
    /// A number when it is one (a chat ID), else a `@username`.
    pub chat_id: ChatId,
    pub message_thread_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Username(String),
}

impl ReceiverKind for Telegram {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::Html, |message, _| {
            let body = Body {
                chat_id: &self.chat_id,
                message_thread_id: self.message_thread_id,
                text: &html(message),
                parse_mode: "HTML",
            };
            serde_json::to_vec(&body).expect("a message serialises")
        })
    }

    fn reads_answer(&self) -> bool {
        true
    }

    fn read_answer(&self, body: &[u8]) -> Answer {
        match serde_json::from_slice::<Reply>(body) {
            Ok(Reply { ok: true, .. }) => Answer::Delivered { posted: None },
            Ok(Reply { description, .. }) => Answer::Refused {
                detail: description.unwrap_or_else(|| "\"ok\":false".to_owned()),
            },
            Err(_) => Answer::Unreadable,
        }
    }

    fn retry_after(&self, body: &[u8]) -> Option<Duration> {
        let reply: Reply = serde_json::from_slice(body).ok()?;
        reply.parameters?.retry_after.map(Duration::from_secs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Serialize)]
struct Body<'a> {
    chat_id: &'a ChatId,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_thread_id: Option<i64>,
    text: &'a str,
    parse_mode: &'static str,
}

#[derive(Deserialize)]
struct Reply {
    ok: bool,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

/// The message as Telegram's HTML: the title in bold, the text, then the facts. Values are
/// escaped already ([`Markup::Html`]); the text is cut so the whole fits [`TEXT_LIMIT`].
pub fn html(message: &Message<'_>) -> String {
    let title = cut_html(message.title, TITLE_LIMIT);
    let mut head = String::new();
    if !title.is_empty() {
        head = format!("<b>{title}</b>\n");
    }
    let mut facts = String::new();
    for (name, value) in message.facts_in(Markup::Html) {
        facts.push_str(&format!("\n<b>{name}:</b> {value}"));
    }
    let text = message.text;
    let sep = if text.is_empty() { "" } else { "\n" };
    let budget = TEXT_LIMIT.saturating_sub(utf16_len(&head) + utf16_len(&facts) + sep.len());
    let text = cut_html(text, budget);
    format!("{head}{text}{sep}{facts}")
}

/// `text` cut to `max` UTF-16 units, saying so, never inside an entity (`&amp;`) or a tag
/// (which Telegram would refuse to parse).
fn cut_html(text: &str, max: usize) -> Cow<'_, str> {
    let cut = limit_chars(text, max);
    let Cow::Owned(cut) = cut else { return cut };
    let kept = &cut[..cut.len() - TRUNCATION_NOTE.len()];
    let open_entity = kept.rfind('&').filter(|&i| !kept[i..].contains(';'));
    let open_tag = kept.rfind('<').filter(|&i| !kept[i..].contains('>'));
    let end = open_entity
        .into_iter()
        .chain(open_tag)
        .min()
        .unwrap_or(kept.len());
    Cow::Owned(format!("{}{TRUNCATION_NOTE}", &kept[..end]))
}

/// A bot token as @BotFather gives it: the bot's ID, a colon, and letters, digits, `-`, `_`.
fn is_bot_token(token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else {
        return false;
    };
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn compile(
    spec: &TelegramReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let before = cx.problem_count();
    let api = cx.api_url(spec.api_url.as_deref(), herald_api::TELEGRAM_API_URL, path);
    let chat_id = match spec.chat_id.as_deref() {
        None => {
            cx.invalid(
                &format!("{path}.chatId"),
                "required: the chat's ID or @username",
            );
            None
        }
        Some(id) => match id.parse::<i64>() {
            Ok(n) => Some(ChatId::Id(n)),
            Err(_) if id.len() > 1 && id.starts_with('@') => Some(ChatId::Username(id.to_owned())),
            Err(_) => {
                cx.invalid(
                    &format!("{path}.chatId"),
                    "a chat ID is a number (-1001234567890) or a channel's @username",
                );
                None
            }
        },
    };
    let field = format!("{path}.tokenSecretRef");
    let token = match &spec.token_secret_ref {
        None => {
            cx.invalid(&field, "required: the Secret key holding the bot's token");
            None
        }
        Some(secret) => cx
            .secret_value(secret, herald_api::DEFAULT_TOKEN_KEY, &field)
            .filter(|token| {
                // Never echo the value: it is a credential.
                let ok = is_bot_token(token.expose());
                if !ok {
                    cx.invalid(
                        &field,
                        "a bot token is the bot's ID, ':' and letters, digits, '-' or '_'",
                    );
                }
                ok
            }),
    };
    if cx.problem_count() > before {
        return None;
    }
    let kind = Telegram {
        chat_id: chat_id?,
        message_thread_id: spec.message_thread_id,
    };
    Some(Compiled {
        type_name: "",
        kind: Arc::new(kind),
        url: Redacted::new(format!("{api}/bot{}/sendMessage", token?.expose())),
        request: RequestSpec::default(),
    })
}

#[cfg(test)]
#[path = "telegram_tests.rs"]
mod tests;
