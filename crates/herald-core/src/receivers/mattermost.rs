//! Mattermost incoming webhooks. Mattermost takes Slack's webhook fields, with these
//! differences: an attachment's `color` must be a hex code, its `text` is Markdown (there is
//! no `mrkdwn_in`), `icon_emoji` is an emoji name without colons, the event time goes in the
//! `footer` (Mattermost shows no `ts`), and a post holds at most 16,383 characters.

use std::any::Any;
use std::borrow::Cow;

use herald_api::MattermostReceiver;
use serde::Serialize;

use super::{
    chat_body, compile_plain, limit_chars, rgb, to_json, Compiled, Message, ReceiverKind, Render,
};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::template::TemplateError;

/// Mattermost refuses (or splits) posts longer than this many characters (its default
/// `MaxPostSize`); the attachment's text is cut to it.
pub const MATTERMOST_TEXT_LIMIT: usize = 16_383;
/// The title, the fallback and each fact are cut to this many characters.
const PART_LIMIT: usize = 1_000;

/// `mattermost`: the settings that shape its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MattermostOptions {
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub icon_url: Option<String>,
}

/// A Mattermost incoming webhook.
#[derive(Debug)]
pub struct Mattermost {
    pub options: MattermostOptions,
}

impl ReceiverKind for Mattermost {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::MarkdownWithMentions, |message, _| {
            mattermost(&self.options, message)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(crate) fn compile(
    spec: &MattermostReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    if let Some(url) = &spec.icon_url {
        if !crate::policy::is_http_url(url) {
            cx.invalid(
                &format!("{path}.iconUrl"),
                "must be an http:// or https:// URL with a host",
            );
        }
    }
    if let Some(emoji) = &spec.icon_emoji {
        if emoji.starts_with(':') || emoji.ends_with(':') {
            cx.invalid(
                &format!("{path}.iconEmoji"),
                format!(
                    "Mattermost takes the emoji's name without colons: {:?}",
                    emoji.trim_matches(':')
                ),
            );
        }
    }
    let options = MattermostOptions {
        channel: spec.channel.clone(),
        username: spec.username.clone(),
        icon_emoji: spec.icon_emoji.clone(),
        icon_url: spec.icon_url.clone(),
    };
    compile_plain(spec, path, cx, Mattermost { options })
}

#[derive(Serialize)]
struct MattermostBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_url: Option<&'a str>,
    attachments: [Attachment<'a>; 1],
}

#[derive(Serialize)]
struct Attachment<'a> {
    /// Required by Mattermost: what notifications show.
    fallback: Cow<'a, str>,
    color: String,
    title: Cow<'a, str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    text: &'a str,
    fields: Vec<Field<'a>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    footer: String,
}

#[derive(Serialize)]
struct Field<'a> {
    short: bool,
    title: &'static str,
    value: Cow<'a, str>,
}

/// A Mattermost incoming-webhook body: one attachment with the title, the text, a colour
/// bar by outcome, the facts as short fields and the event time as its footer.
pub fn mattermost(options: &MattermostOptions, message: &Message<'_>) -> Vec<u8> {
    let text = limit_chars(message.text, MATTERMOST_TEXT_LIMIT);
    let fallback = format!("{} {}", message.title, message.text);
    let body = MattermostBody {
        channel: options.channel.as_deref(),
        username: options.username.as_deref(),
        icon_emoji: options.icon_emoji.as_deref(),
        icon_url: options.icon_url.as_deref(),
        attachments: [Attachment {
            fallback: Cow::Owned(limit_chars(&fallback, PART_LIMIT).into_owned()),
            color: format!("#{:06X}", rgb(message.event.severity())),
            title: limit_chars(message.title, PART_LIMIT),
            text: &text,
            fields: message
                .facts_in(Markup::MarkdownWithMentions)
                .map(|(title, value)| Field {
                    short: true,
                    title,
                    value: match limit_chars(&value, PART_LIMIT) {
                        Cow::Borrowed(_) => value,
                        Cow::Owned(cut) => Cow::Owned(cut),
                    },
                })
                .collect(),
            footer: message.time(),
        }],
    };
    to_json(&body, message)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{event, parse};
    use super::super::{utf16_len, Message, TRUNCATION_NOTE};
    use super::*;
    use herald_api::EventType;
    use serde_json::json;

    #[test]
    fn a_failed_rollout() {
        let ev = event(
            "Failed",
            "Canary failed! Scaling down podinfo.default",
            EventType::Warning,
        );
        let message = Message {
            title: "podinfo.default",
            text: "Canary failed! Scaling down podinfo.default",
            event: &ev,
            cluster: "prod-eu",
        };
        let options = MattermostOptions {
            channel: Some("deploys".into()),
            icon_emoji: Some("rocket".into()),
            ..MattermostOptions::default()
        };
        assert_eq!(
            parse(mattermost(&options, &message)),
            json!({
                "channel": "deploys",
                "icon_emoji": "rocket",
                "attachments": [{
                    "fallback": "podinfo.default Canary failed! Scaling down podinfo.default",
                    "color": "#FF0000",
                    "title": "podinfo.default",
                    "text": "Canary failed! Scaling down podinfo.default",
                    "fields": [
                        {"short": true, "title": "Phase", "value": "Failed"},
                        {"short": true, "title": "Cluster", "value": "prod-eu"}
                    ],
                    "footer": "2020-01-09T22:07:15.167Z"
                }]
            })
        );
    }

    #[test]
    fn long_texts_are_cut_to_the_post_limit() {
        let ev = event("Progressing", "x", EventType::Normal);
        let long = "é".repeat(MATTERMOST_TEXT_LIMIT + 10);
        let message = Message {
            title: &long,
            text: &long,
            event: &ev,
            cluster: "",
        };
        let body = parse(mattermost(&MattermostOptions::default(), &message));
        let attachment = &body["attachments"][0];
        let text = attachment["text"].as_str().unwrap();
        assert_eq!(utf16_len(text), MATTERMOST_TEXT_LIMIT);
        assert!(text.ends_with(TRUNCATION_NOTE));
        assert!(utf16_len(attachment["title"].as_str().unwrap()) <= PART_LIMIT);
        assert!(utf16_len(attachment["fallback"].as_str().unwrap()) <= PART_LIMIT);
        // An empty text is left out; the title carries the message.
        let message = Message {
            text: "",
            ..message
        };
        let body = parse(mattermost(&MattermostOptions::default(), &message));
        assert_eq!(body["attachments"][0].get("text"), None);
    }
}
