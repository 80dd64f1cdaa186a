//! A Slack bot: `chat.postMessage` through the Web API with a bot token, one thread per
//! rollout, and `chat.update` to show the rollout's outcome on its first message.

use std::any::Any;
use std::sync::Arc;

use herald_api::{SecretKeyRef, SlackReceiver};

use super::super::threads::{thread_action, with_field, ThreadAction};
use super::super::{
    Answer, AskButtons, Compiled, KeepThread, Plan, Posted, ReceiverKind, Render, Request,
    RequestSpec, ThreadParent, ThreadRef,
};
use super::{slack_as, SlackOptions, ONE_ADDRESS};
use crate::escape::Markup;
use crate::gates::slack::{ask_blocks, mentions};
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// A Slack bot. The first message of a rollout starts its thread (the channel and `ts` Slack
/// answers are kept); later ones reply in it; the rollout's outcome also replaces the first
/// message, so the channel shows one message per rollout, coloured by how it ended. A failed
/// outcome is broadcast to the channel as well, because an edited message notifies nobody.
#[derive(Debug)]
pub struct SlackBot {
    pub options: SlackOptions,
    pub api: SlackApi,
    /// Set with threads: see [`SlackApi::thread_scope`].
    thread_scope: Option<String>,
}

impl ReceiverKind for SlackBot {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        super::super::chat_body(render, Markup::Slack, |message, severity| {
            slack_as(&self.options, message, severity)
        })
    }

    fn thread_scope(&self) -> Option<&str> {
        self.thread_scope.as_deref()
    }

    fn plan(
        &self,
        body: &[u8],
        thread: Option<&ThreadRef>,
        current: Option<&ThreadParent>,
    ) -> Plan {
        let Some(thread) = thread else {
            return Plan::post("chat.postMessage");
        };
        match thread_action(thread, current) {
            ThreadAction::Start => Plan {
                keep: KeepThread::Posted,
                ..Plan::post("chat.postMessage")
            },
            ThreadAction::Reply { parent, bind } => Plan {
                request: Request {
                    name: "chat.postMessage",
                    url: None,
                    body: Some(slack_reply(body, &parent.ts, thread.broadcast)),
                    method: None,
                },
                keep: match bind {
                    true => KeepThread::Parent(
                        thread.parent_at(parent.channel.clone(), parent.ts.clone()),
                    ),
                    false => KeepThread::Nothing,
                },
                follow_up: thread.outcome.then(|| Request {
                    name: "chat.update",
                    url: Some(Redacted::new(self.api.update_url.clone())),
                    body: Some(slack_update(body, &parent.channel, &parent.ts)),
                    method: None,
                }),
            },
        }
    }

    fn read_answer(&self, body: &[u8]) -> Answer {
        match slack_answer(body) {
            SlackAnswer::Posted { channel, ts } => Answer::Delivered {
                posted: Some(Posted { channel, ts }),
            },
            SlackAnswer::Unreadable => Answer::Unreadable,
            SlackAnswer::Error { code, retry } => {
                let detail = format!("Slack answered ok=false: {code}");
                match retry {
                    true => Answer::Retry { detail },
                    false => Answer::Refused { detail },
                }
            }
        }
    }

    fn reads_answer(&self) -> bool {
        true
    }

    fn content_type(&self) -> &'static str {
        // Slack's Web API warns about JSON without a charset.
        "application/json; charset=utf-8"
    }

    fn queue(&self) -> Option<&str> {
        // Bots share one API URL: their queue is per channel, so a rollout's replies follow
        // its first message.
        Some(&self.api.channel)
    }

    fn rate_limit_group(&self) -> Option<&str> {
        Some(&self.api.rate_limit_group)
    }

    fn ask_body(
        &self,
        render: &mut dyn Render,
        buttons: &AskButtons<'_>,
    ) -> Option<Result<Vec<u8>, TemplateError>> {
        Some(render.title_and_text(Markup::Slack).map(|(title, text)| {
            let approvers = mentions(
                &buttons.approvers.slack_users,
                &buttons.approvers.slack_user_groups,
            );
            let section = format!("*{title}*\n{text}");
            let mut body = serde_json::json!({
                "channel": self.api.channel,
                // What notifications and clients without blocks show.
                "text": format!("{title}: {text}"),
                "blocks": ask_blocks(&section, &approvers, &buttons.value, buttons.what),
            });
            for (key, value) in [
                ("username", &self.options.username),
                ("icon_emoji", &self.options.icon_emoji),
                ("icon_url", &self.options.icon_url),
            ] {
                if let Some(value) = value {
                    body[key] = serde_json::json!(value);
                }
            }
            serde_json::to_vec(&body).expect("a message serialises")
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A Slack bot: the token from its Secret, the Web API's URLs, the thread settings.
pub(super) fn compile(
    slack: &SlackReceiver,
    token: &SecretKeyRef,
    options: SlackOptions,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let mut valid = true;
    if slack.url.is_some() || slack.secret_ref.is_some() {
        cx.invalid(path, ONE_ADDRESS);
        valid = false;
    }
    let channel = slack.channel.clone().unwrap_or_default();
    if channel.is_empty() {
        cx.invalid(
            &format!("{path}.channel"),
            "a bot token (tokenSecretRef) needs a channel",
        );
        valid = false;
    }
    let problems = cx.problem_count();
    let api = cx
        .api_url(slack.api_url.as_deref(), herald_api::SLACK_API_URL, path)
        .to_owned();
    valid &= cx.problem_count() == problems;
    let token = cx.token_value(token, &format!("{path}.tokenSecretRef"))?;
    if !valid {
        return None;
    }
    let api_settings = SlackApi {
        update_url: format!("{api}/chat.update"),
        channel,
        threads: slack.threads.unwrap_or(true),
        rate_limit_group: super::super::http::fingerprint(&format!("{api}\n{}", token.expose())),
    };
    let bot = SlackBot {
        thread_scope: api_settings.threads.then(|| api_settings.thread_scope()),
        options,
        api: api_settings,
    };
    Some(Compiled {
        type_name: "",
        kind: Arc::new(bot),
        url: Redacted::new(format!("{api}/chat.postMessage")),
        request: RequestSpec {
            bearer_token: Some(token),
            ..RequestSpec::default()
        },
    })
}

/// The Web API settings of a Slack bot: `chat.postMessage` (the receiver's URL) and
/// `chat.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackApi {
    /// `<api>/chat.update`, used to show a rollout's outcome on its first message.
    pub update_url: String,
    /// The channel as configured: part of the thread key.
    pub channel: String,
    /// One thread per rollout.
    pub threads: bool,
    /// Identifies the token (a hash of it, never the token): Slack rate-limits per token,
    /// so a `429` pauses every channel this token posts to.
    pub rate_limit_group: String,
}

impl SlackApi {
    /// Whose threads: this token (by fingerprint) in this channel.
    pub fn thread_scope(&self) -> String {
        format!("slack/{}/{}", self.rate_limit_group, self.channel)
    }
}

/// A `chat.postMessage` body made a reply in the thread `parent_ts`: the same bytes with
/// `thread_ts` (and `reply_broadcast`) added at the end.
pub fn slack_reply(body: &[u8], parent_ts: &str, broadcast: bool) -> Vec<u8> {
    let reply = with_field(body, "thread_ts", &parent_ts.into());
    if broadcast {
        with_field(&reply, "reply_broadcast", &true.into())
    } else {
        reply
    }
}

/// A `chat.update` body that replaces the message `ts` in `channel` (the channel ID Slack
/// answered with) by the content of `body`: the rollout's first message then shows its
/// outcome. `chat.update` takes no username or icon, so only the content is kept.
pub fn slack_update(body: &[u8], channel: &str, ts: &str) -> Vec<u8> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).expect("Slack bodies are JSON objects");
    let mut update = serde_json::Map::new();
    update.insert("channel".into(), channel.into());
    update.insert("ts".into(), ts.into());
    for key in ["text", "attachments", "blocks"] {
        if let Some(value) = object.get(key) {
            update.insert(key.into(), value.clone());
        }
    }
    serde_json::to_vec(&update).expect("a JSON object serialises")
}

/// What Slack's Web API answered: `{"ok":true,"channel":"C…","ts":"…"}` or
/// `{"ok":false,"error":"…"}` (with HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackAnswer {
    Posted {
        channel: String,
        ts: String,
    },
    Error {
        code: String,
        retry: bool,
    },
    /// HTTP 2xx with a body that is not Slack's answer: the message may well be posted, so it
    /// is not sent again, but its `ts` is unknown.
    Unreadable,
}

/// Reads a Web API answer. Slack's error codes are short identifiers (`channel_not_found`),
/// safe to log; anything else is reported as `invalid_response`.
pub fn slack_answer(body: &[u8]) -> SlackAnswer {
    #[derive(serde::Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        ts: Option<String>,
    }
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return SlackAnswer::Unreadable;
    };
    if answer.ok {
        return match (answer.channel, answer.ts) {
            (Some(channel), Some(ts)) => SlackAnswer::Posted { channel, ts },
            _ => SlackAnswer::Unreadable,
        };
    }
    let code = answer
        .error
        .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_else(|| "unknown_error".into());
    // Slack's documented transient errors; everything else (bad token, unknown channel,
    // not in channel, invalid blocks) fails the same way on every attempt.
    let retry = matches!(
        code.as_str(),
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "team_added_to_org"
    );
    SlackAnswer::Error { code, retry }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn replies_and_updates() {
        let body = br#"{"channel":"C0123","username":"herald","attachments":[{"text":"x"}]}"#;
        // The body is kept byte for byte, the thread added at its end.
        assert_eq!(
            String::from_utf8(slack_reply(body, "1.5", false)).unwrap(),
            r#"{"channel":"C0123","username":"herald","attachments":[{"text":"x"}],"thread_ts":"1.5"}"#
        );
        assert_eq!(
            String::from_utf8(slack_reply(b"{}", "1.5", true)).unwrap(),
            r#"{"thread_ts":"1.5","reply_broadcast":true}"#
        );
        let broadcast: Value = serde_json::from_slice(&slack_reply(body, "1.5", true)).unwrap();
        assert_eq!(broadcast["reply_broadcast"], true);
        let update: Value = serde_json::from_slice(&slack_update(body, "C999", "1.5")).unwrap();
        assert_eq!(
            update,
            json!({"channel":"C999","ts":"1.5","attachments":[{"text":"x"}]})
        );
    }

    #[test]
    fn slack_answers() {
        assert_eq!(
            slack_answer(br#"{"ok":true,"channel":"C1","ts":"1.2","message":{}}"#),
            SlackAnswer::Posted {
                channel: "C1".into(),
                ts: "1.2".into()
            }
        );
        assert_eq!(
            slack_answer(br#"{"ok":false,"error":"channel_not_found"}"#),
            SlackAnswer::Error {
                code: "channel_not_found".into(),
                retry: false
            }
        );
        assert_eq!(
            slack_answer(br#"{"ok":false,"error":"internal_error"}"#),
            SlackAnswer::Error {
                code: "internal_error".into(),
                retry: true
            }
        );
        assert_eq!(slack_answer(b"<html>"), SlackAnswer::Unreadable);
        assert_eq!(slack_answer(br#"{"ok":true}"#), SlackAnswer::Unreadable);
        assert_eq!(
            slack_answer(br#"{"ok":false,"error":"https://evil/\nx"}"#),
            SlackAnswer::Error {
                code: "unknown_error".into(),
                retry: false
            }
        );
    }
}
