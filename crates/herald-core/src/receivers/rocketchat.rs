//! Rocket.Chat incoming webhook integrations.

use std::any::Any;

use herald_api::RocketChatReceiver;
use serde::Serialize;

use super::{
    chat_body, compile_plain, limit_chars, rgb, to_json, Compiled, Message, ReceiverKind, Render,
};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::template::TemplateError;

/// `rocketchat`: the settings that shape its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RocketChatOptions {
    pub channel: Option<String>,
    /// Sent as `alias`.
    pub username: Option<String>,
    /// Sent as `emoji`.
    pub icon_emoji: Option<String>,
    /// Sent as `avatar`.
    pub icon_url: Option<String>,
}

/// A Rocket.Chat incoming webhook.
#[derive(Debug)]
pub struct RocketChat {
    pub options: RocketChatOptions,
}

impl ReceiverKind for RocketChat {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::RocketChat, |message, _| {
            rocket_chat(&self.options, message)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(crate) fn compile(
    spec: &RocketChatReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let options = RocketChatOptions {
        channel: spec.channel.clone(),
        username: spec.username.clone(),
        icon_emoji: spec.icon_emoji.clone(),
        icon_url: spec.icon_url.clone(),
    };
    compile_plain(spec, path, cx, RocketChat { options })
}

/// Rocket.Chat refuses a message text longer than its `Message_MaxAllowedSize` setting
/// (5000 characters by default); the title, sent as the message text, is cut to it.
pub const ROCKET_CHAT_TEXT_LIMIT: usize = 5_000;

#[derive(Serialize)]
struct RocketChatBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar: Option<&'a str>,
    text: &'a str,
    attachments: [Attachment<'a>; 1],
}

#[derive(Serialize)]
struct Attachment<'a> {
    text: &'a str,
    color: String,
    fields: Vec<Field<'a>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    ts: String,
}

#[derive(Serialize)]
struct Field<'a> {
    title: &'static str,
    value: std::borrow::Cow<'a, str>,
    short: bool,
}

/// A Rocket.Chat incoming-webhook body: the title as the message text, one attachment with
/// the text, a colour bar by outcome, the facts as short fields and the event time.
/// `channel`, `alias`, `emoji` and `avatar` when set (Rocket.Chat shows `avatar` over
/// `emoji` when both are).
pub fn rocket_chat(options: &RocketChatOptions, message: &Message<'_>) -> Vec<u8> {
    let title = limit_chars(message.title, ROCKET_CHAT_TEXT_LIMIT);
    let body = RocketChatBody {
        channel: options.channel.as_deref(),
        alias: options.username.as_deref(),
        emoji: options.icon_emoji.as_deref(),
        avatar: options.icon_url.as_deref(),
        text: &title,
        attachments: [Attachment {
            text: message.text,
            color: format!("#{:06X}", rgb(message.event.severity())),
            fields: message
                .facts_in(Markup::RocketChat)
                .map(|(title, value)| Field {
                    title,
                    value,
                    short: true,
                })
                .collect(),
            ts: message.time(),
        }],
    };
    to_json(&body, message)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{event, parse};
    use super::super::{Message, TRUNCATION_NOTE};
    use super::RocketChatOptions;
    use super::*;
    use herald_api::EventType;
    use serde_json::json;

    #[test]
    fn body_with_overrides_attachment_and_time() {
        let ev = event(
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
            EventType::Normal,
        );
        let options = RocketChatOptions {
            channel: Some("#deploys".into()),
            username: Some("herald".into()),
            icon_emoji: Some(":rocket:".into()),
            icon_url: Some("https://example.com/herald.png".into()),
        };
        let msg = Message {
            title: "[prod] podinfo.default",
            text: ev.message(),
            event: &ev,
            cluster: "prod",
        };
        assert_eq!(
            parse(rocket_chat(&options, &msg)),
            json!({
                "channel": "#deploys",
                "alias": "herald",
                "emoji": ":rocket:",
                "avatar": "https://example.com/herald.png",
                "text": "[prod] podinfo.default",
                "attachments": [{
                    "text": "Promotion completed! Scaling down podinfo.default",
                    "color": "#2EB886",
                    "fields": [
                        {"title": "Phase", "value": "Succeeded", "short": true},
                        {"title": "Cluster", "value": "prod", "short": true}
                    ],
                    "ts": "2020-01-09T22:07:15.167Z"
                }]
            })
        );
    }

    #[test]
    fn colour_follows_outcome_and_unset_options_are_absent() {
        for (phase, text, event_type, colour) in [
            (
                "Failed",
                "Rolling back podinfo.default failed checks threshold reached 5",
                EventType::Warning,
                "#FF0000",
            ),
            (
                "Progressing",
                "New revision detected! Scaling up podinfo.default",
                EventType::Normal,
                "#0076D7",
            ),
            (
                "Progressing",
                "Halt advancement no values found for istio metric request-success-rate",
                EventType::Warning,
                "#FFA500",
            ),
        ] {
            let ev = event(phase, text, event_type);
            let msg = Message {
                title: "podinfo.default",
                text,
                event: &ev,
                cluster: "",
            };
            assert_eq!(
                parse(rocket_chat(&RocketChatOptions::default(), &msg)),
                json!({
                    "text": "podinfo.default",
                    "attachments": [{
                        "text": text,
                        "color": colour,
                        "fields": [{"title": "Phase", "value": phase, "short": true}],
                        "ts": "2020-01-09T22:07:15.167Z"
                    }]
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn long_title_is_cut_to_the_message_limit() {
        let ev = event("Progressing", "x", EventType::Normal);
        let title = "t".repeat(6_000);
        let msg = Message {
            title: &title,
            text: "x",
            event: &ev,
            cluster: "",
        };
        let body = parse(rocket_chat(&RocketChatOptions::default(), &msg));
        let text = body["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), ROCKET_CHAT_TEXT_LIMIT);
        assert!(text.ends_with(TRUNCATION_NOTE));
    }
}
