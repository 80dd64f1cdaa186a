//! Slack: incoming webhooks here, bots (the Web API) in [`bot`]. Both send the same body.

use std::any::Any;

use herald_api::SlackReceiver;

use super::json::{push_escaped, push_pairs, push_str, push_u64};
use super::{
    buffer, chat_body, compile_plain, limit_chars, Compiled, Message, ReceiverKind, Render,
};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::template::TemplateError;

pub mod bot;

pub use bot::{SlackAnswer, SlackApi, SlackBot};

/// `slack`: the settings that shape its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlackOptions {
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub icon_url: Option<String>,
}

/// A Slack incoming webhook.
#[derive(Debug)]
pub struct SlackWebhook {
    pub options: SlackOptions,
}

impl ReceiverKind for SlackWebhook {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::Slack, |message, severity| {
            slack_as(&self.options, message, severity)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A Slack receiver's address: an incoming webhook (inline or from a Secret) or a bot token.
const ONE_ADDRESS: &str = "set exactly one of url, secretRef, tokenSecretRef";

pub(crate) fn compile(spec: &SlackReceiver, path: &str, cx: &mut Compiler<'_>) -> Option<Compiled> {
    let options = SlackOptions {
        channel: spec.channel.clone(),
        username: spec.username.clone(),
        icon_emoji: spec.icon_emoji.clone(),
        icon_url: spec.icon_url.clone(),
    };
    if let Some(token) = &spec.token_secret_ref {
        return bot::compile(spec, token, options, path, cx);
    }
    for (set, option) in [
        (spec.api_url.is_some(), "apiUrl"),
        (spec.threads.is_some(), "threads"),
    ] {
        if set {
            cx.invalid(
                &format!("{path}.{option}"),
                "only applies to a bot token (tokenSecretRef); an incoming webhook cannot thread",
            );
        }
    }
    if matches!(
        herald_api::ReceiverSpec::address(spec),
        herald_api::AddressRef::Invalid
    ) {
        // Slack has a third address, the bot token: name it too.
        cx.invalid(path, ONE_ADDRESS);
        return None;
    }
    compile_plain(spec, path, cx, SlackWebhook { options })
}
use crate::event::Severity;

/// Slack truncates a message's text past 40,000 characters, silently; Herald cuts it there
/// itself, saying so, as it does for every other receiver's limits.
pub const SLACK_TEXT_LIMIT: usize = 40_000;

/// A Slack incoming-webhook body in Flagger's layout (one attachment, coloured by outcome),
/// plus a `fallback` for notifications and the event time.
///
/// Written directly (see [`super::json`]); the bytes are those `serde_json` gives for the
/// structs in the tests' `reference` module, which the tests check.
pub fn slack(options: &SlackOptions, message: &Message<'_>) -> Vec<u8> {
    slack_as(options, message, message.event.severity())
}

/// [`slack`] with the event's severity already worked out.
pub(crate) fn slack_as(
    options: &SlackOptions,
    message: &Message<'_>,
    severity: Severity,
) -> Vec<u8> {
    let text = limit_chars(message.text, SLACK_TEXT_LIMIT);
    let mut out = buffer(message);
    out.push(b'{');
    for (key, value) in [
        (&b"\"channel\":"[..], &options.channel),
        (b"\"username\":", &options.username),
        (b"\"icon_emoji\":", &options.icon_emoji),
        (b"\"icon_url\":", &options.icon_url),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(key);
            push_str(&mut out, value);
            out.push(b',');
        }
    }
    out.extend_from_slice(b"\"attachments\":[{\"color\":");
    out.extend_from_slice(match severity {
        Severity::Info => b"\"#0076D7\"",
        Severity::Success => b"\"good\"",
        Severity::Warning => b"\"warning\"",
        Severity::Error => b"\"danger\"",
    });
    // `fallback` is the title and the text separated by a space.
    out.extend_from_slice(b",\"fallback\":\"");
    push_escaped(&mut out, message.title);
    out.push(b' ');
    push_escaped(&mut out, &text);
    out.extend_from_slice(b"\",\"author_name\":");
    push_str(&mut out, message.title);
    out.extend_from_slice(b",\"text\":");
    push_str(&mut out, &text);
    out.extend_from_slice(b",\"mrkdwn_in\":[\"text\"],\"fields\":[");
    push_pairs(
        &mut out,
        message.facts_in(Markup::Slack),
        "title",
        ",\"short\":true",
    );
    out.extend_from_slice(b"],\"ts\":");
    push_u64(&mut out, message.event.timestamp_ms() / 1000);
    out.extend_from_slice(b"}]}");
    out
}

#[cfg(test)]
mod reference {
    //! The body as it was first built: `serde_json` over these structs. [`super::slack`]
    //! must give the same bytes.

    use serde::Serialize;

    use super::super::Message;
    use super::SlackOptions;
    use crate::escape::Markup;
    use crate::event::Severity;

    #[derive(Serialize)]
    struct SlackBody<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        username: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        icon_emoji: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        icon_url: Option<&'a str>,
        attachments: [SlackAttachment<'a>; 1],
    }

    #[derive(Serialize)]
    struct SlackAttachment<'a> {
        color: &'static str,
        fallback: String,
        author_name: &'a str,
        text: &'a str,
        mrkdwn_in: [&'static str; 1],
        fields: Vec<SlackField<'a>>,
        ts: u64,
    }

    #[derive(Serialize)]
    struct SlackField<'a> {
        title: &'static str,
        value: std::borrow::Cow<'a, str>,
        short: bool,
    }

    pub fn slack(options: &SlackOptions, message: &Message<'_>) -> Vec<u8> {
        let text = super::super::limit_chars(message.text, super::SLACK_TEXT_LIMIT);
        let body = SlackBody {
            channel: options.channel.as_deref(),
            username: options.username.as_deref(),
            icon_emoji: options.icon_emoji.as_deref(),
            icon_url: options.icon_url.as_deref(),
            attachments: [SlackAttachment {
                color: match message.event.severity() {
                    Severity::Info => "#0076D7",
                    Severity::Success => "good",
                    Severity::Warning => "warning",
                    Severity::Error => "danger",
                },
                fallback: format!("{} {text}", message.title),
                author_name: message.title,
                text: &text,
                mrkdwn_in: ["text"],
                fields: message
                    .facts_in(Markup::Slack)
                    .map(|(title, value)| SlackField {
                        title,
                        value,
                        short: true,
                    })
                    .collect(),
                ts: message.event.timestamp_ms() / 1000,
            }],
        };
        serde_json::to_vec(&body).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::messages;
    use super::super::test_support::{event, parse};
    use super::super::Message;
    use super::SlackOptions;
    use super::{reference, slack};
    use herald_api::EventType;
    use serde_json::json;

    /// The body written directly is byte for byte the `serde_json` one, for every option set
    /// and odd text.
    #[test]
    fn slack_body_is_the_serde_json_body() {
        let all = SlackOptions {
            channel: Some("#deploys".into()),
            username: Some("her\"ald".into()),
            icon_emoji: Some(":rocket:".into()),
            icon_url: Some("https://example.com/i.png".into()),
        };
        let some = SlackOptions {
            channel: None,
            username: Some("herald".into()),
            icon_emoji: None,
            icon_url: Some("u".into()),
        };
        for options in [SlackOptions::default(), all, some] {
            messages(|message| {
                assert_eq!(
                    String::from_utf8(slack(&options, message)).unwrap(),
                    String::from_utf8(reference::slack(&options, message)).unwrap(),
                    "{options:?} {message:?}"
                );
            });
        }
    }

    #[test]
    fn slack_body_is_flaggers_layout() {
        let ev = event(
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            EventType::Normal,
        );
        let options = SlackOptions {
            channel: Some("#deploys".into()),
            username: Some("herald".into()),
            icon_emoji: Some(":rocket:".into()),
            icon_url: None,
        };
        let msg = Message {
            title: "podinfo.default",
            text: ev.message(),
            event: &ev,
            cluster: "prod",
        };
        assert_eq!(
            parse(slack(&options, &msg)),
            json!({
                "channel": "#deploys", "username": "herald", "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": "#0076D7",
                    "fallback": "podinfo.default New revision detected! Scaling up podinfo.default",
                    "author_name": "podinfo.default",
                    "text": "New revision detected! Scaling up podinfo.default",
                    "mrkdwn_in": ["text"],
                    "fields": [
                        {"title": "Phase", "value": "Progressing", "short": true},
                        {"title": "Cluster", "value": "prod", "short": true}
                    ],
                    "ts": 1578607635
                }]
            })
        );
    }

    /// Slack cuts a text past 40,000 characters without saying so: Herald cuts it, saying so.
    #[test]
    fn a_text_past_slacks_limit_is_cut_with_the_note() {
        let ev = event("Failed", "x", EventType::Warning);
        let long = "é".repeat(45_015);
        let msg = Message {
            title: "podinfo.default",
            text: &long,
            event: &ev,
            cluster: "prod",
        };
        let body = parse(slack(&SlackOptions::default(), &msg));
        let text = body["attachments"][0]["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), super::SLACK_TEXT_LIMIT);
        assert!(text.ends_with(super::super::TRUNCATION_NOTE));
        assert_eq!(
            body["attachments"][0]["fallback"].as_str().unwrap(),
            format!("podinfo.default {text}")
        );
        let short = Message {
            text: "fits",
            ..msg
        };
        let body = parse(slack(&SlackOptions::default(), &short));
        assert_eq!(body["attachments"][0]["text"], "fits");
    }

    #[test]
    fn slack_colour_follows_outcome_and_unset_options_are_absent() {
        let failed = event(
            "Failed",
            "Canary failed! Scaling down podinfo.default",
            EventType::Warning,
        );
        let msg = Message {
            title: "t",
            text: "x",
            event: &failed,
            cluster: "",
        };
        let body = parse(slack(&SlackOptions::default(), &msg));
        assert_eq!(body["attachments"][0]["color"], "danger");
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["attachments"]
        );
        assert_eq!(
            body["attachments"][0]["fields"],
            json!([{"title": "Phase", "value": "Failed", "short": true}])
        );
        let ok = event(
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
            EventType::Normal,
        );
        let msg = Message {
            title: "t",
            text: "x",
            event: &ok,
            cluster: "",
        };
        assert_eq!(
            parse(slack(&SlackOptions::default(), &msg))["attachments"][0]["color"],
            "good"
        );
    }
}
