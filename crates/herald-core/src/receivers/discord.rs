//! Discord channel webhooks (Execute Webhook): one native embed.

use std::any::Any;

use herald_api::DiscordReceiver;
use serde::Serialize;

use std::borrow::Cow;

use super::{
    chat_body, compile_plain, limit_chars, rgb, to_json, utf16_len, Compiled, Message,
    ReceiverKind, Render,
};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::template::TemplateError;

/// `discord`: the settings that shape its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscordOptions {
    pub username: Option<String>,
    pub avatar_url: Option<String>,
}

/// A Discord channel webhook.
#[derive(Debug)]
pub struct Discord {
    pub options: DiscordOptions,
}

impl ReceiverKind for Discord {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::Discord, |message, _| {
            discord(&self.options, message)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(crate) fn compile(
    spec: &DiscordReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    check_user(spec, path, cx);
    let options = DiscordOptions {
        username: spec.username.clone(),
        avatar_url: spec.avatar_url.clone(),
    };
    compile_plain(spec, path, cx, Discord { options })
}

/// The user name and avatar Discord accepts.
fn check_user(discord: &DiscordReceiver, path: &str, cx: &mut Compiler<'_>) {
    if let Some(username) = &discord.username {
        let lower = username.to_lowercase();
        let length = username.chars().count();
        let why = if length == 0 || length > 80 {
            Some(format!("must be 1 to 80 characters, not {length}"))
        } else if let Some(word) = ["discord", "clyde"].into_iter().find(|w| lower.contains(w)) {
            Some(format!("Discord refuses user names containing {word:?}"))
        } else if lower == "everyone" || lower == "here" {
            Some(format!("Discord refuses the user name {username:?}"))
        } else {
            None
        };
        if let Some(why) = why {
            cx.invalid(&format!("{path}.username"), why);
        }
    }
    if let Some(avatar) = &discord.avatar_url {
        if !crate::policy::is_http_url(avatar) {
            cx.invalid(
                &format!("{path}.avatarUrl"),
                "must be an http:// or https:// URL with a host",
            );
        }
    }
}

/// Discord's embed limits, in characters. Herald counts UTF-16 code units, which is never
/// less than the number of characters, so a cut body is always within them.
pub const DISCORD_TITLE_LIMIT: usize = 256;
pub const DISCORD_DESCRIPTION_LIMIT: usize = 4096;
pub const DISCORD_FIELD_LIMIT: usize = 1024;
/// Title, description, field names and values of all embeds together.
pub const DISCORD_EMBED_LIMIT: usize = 6000;

#[derive(Serialize)]
struct DiscordBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_url: Option<&'a str>,
    embeds: [Embed<'a>; 1],
    /// Nothing in the message pings anyone: `@everyone`, `@here`, `<@id>` and `<@&role>`
    /// are shown as text, whatever the event or a template says.
    allowed_mentions: AllowedMentions,
}

#[derive(Serialize)]
struct AllowedMentions {
    parse: [&'static str; 0],
}

#[derive(Serialize)]
struct Embed<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    title: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    color: u32,
    fields: Vec<EmbedField<'a>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    timestamp: String,
}

#[derive(Serialize)]
struct EmbedField<'a> {
    name: &'static str,
    value: &'a str,
    inline: bool,
}

/// A Discord Execute Webhook body: one embed with the title, the text as its description, a
/// colour by outcome, the facts as inline fields and the event time. Every part is cut to
/// Discord's limits (the description last, to what the embed's total leaves). Empty parts are
/// left out: Discord rejects empty titles, descriptions and field values.
pub fn discord(options: &DiscordOptions, message: &Message<'_>) -> Vec<u8> {
    let title = limit_chars(message.title, DISCORD_TITLE_LIMIT);
    let facts: Vec<(&'static str, Cow<'_, str>)> = message
        .facts_in(Markup::Discord)
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| {
            let value = if utf16_len(&value) > DISCORD_FIELD_LIMIT {
                Cow::Owned(limit_chars(&value, DISCORD_FIELD_LIMIT).into_owned())
            } else {
                value
            };
            (name, value)
        })
        .collect();
    let used = utf16_len(&title)
        + facts
            .iter()
            .map(|(name, value)| utf16_len(name) + utf16_len(value))
            .sum::<usize>();
    let description = limit_chars(
        message.text,
        DISCORD_DESCRIPTION_LIMIT.min(DISCORD_EMBED_LIMIT.saturating_sub(used)),
    );
    let body = DiscordBody {
        username: options.username.as_deref(),
        avatar_url: options.avatar_url.as_deref(),
        embeds: [Embed {
            title: &title,
            description: &description,
            color: rgb(message.event.severity()),
            fields: facts
                .iter()
                .map(|(name, value)| EmbedField {
                    name,
                    value,
                    inline: true,
                })
                .collect(),
            timestamp: message.time(),
        }],
        allowed_mentions: AllowedMentions { parse: [] },
    };
    to_json(&body, message)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{event, parse};
    use super::super::{Message, TRUNCATION_NOTE};
    use super::DiscordOptions;
    use super::*;
    use herald_api::EventType;
    use serde_json::json;

    #[test]
    fn embed_with_facts_colour_and_time() {
        let ev = event(
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            EventType::Normal,
        );
        let options = DiscordOptions {
            username: Some("herald".into()),
            avatar_url: Some("https://example.com/herald.png".into()),
        };
        let msg = Message {
            title: "[prod] podinfo.default",
            text: ev.message(),
            event: &ev,
            cluster: "prod",
        };
        assert_eq!(
            parse(discord(&options, &msg)),
            json!({
                "username": "herald",
                "avatar_url": "https://example.com/herald.png",
                "embeds": [{
                    "title": "[prod] podinfo.default",
                    "description": "New revision detected! Scaling up podinfo.default",
                    "color": 30423,
                    "fields": [
                        {"name": "Phase", "value": "Progressing", "inline": true},
                        {"name": "Cluster", "value": "prod", "inline": true}
                    ],
                    "timestamp": "2020-01-09T22:07:15.167Z"
                }],
                "allowed_mentions": {"parse": []}
            })
        );
    }

    #[test]
    fn colour_follows_outcome_and_unset_options_are_absent() {
        let cases = [
            (
                "Failed",
                "Canary failed! Scaling down podinfo.default",
                EventType::Warning,
                0xFF0000,
            ),
            (
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                EventType::Normal,
                0x2EB886,
            ),
            (
                "Progressing",
                "Halt advancement podinfo.default waiting for approval",
                EventType::Normal,
                0xFFA500,
            ),
        ];
        for (phase, text, event_type, colour) in cases {
            let ev = event(phase, text, event_type);
            let msg = Message {
                title: "podinfo.default",
                text,
                event: &ev,
                cluster: "",
            };
            assert_eq!(
                parse(discord(&DiscordOptions::default(), &msg)),
                json!({
                    "embeds": [{
                        "title": "podinfo.default",
                        "description": text,
                        "color": colour,
                        "fields": [{"name": "Phase", "value": phase, "inline": true}],
                        "timestamp": "2020-01-09T22:07:15.167Z"
                    }],
                    "allowed_mentions": {"parse": []}
                }),
                "{phase}"
            );
        }
    }

    #[test]
    fn empty_parts_are_left_out() {
        // No phase, and a timestamp no calendar holds.
        let ev =
            crate::FlaggerEvent::new("podinfo", "default", "", "x", EventType::Normal, u64::MAX);
        let msg = Message {
            title: "",
            text: "",
            event: &ev,
            cluster: "prod",
        };
        assert_eq!(
            parse(discord(&DiscordOptions::default(), &msg)),
            json!({
                "embeds": [{
                    "color": 30423,
                    "fields": [{"name": "Cluster", "value": "prod", "inline": true}]
                }],
                "allowed_mentions": {"parse": []}
            })
        );
    }

    #[test]
    fn every_part_is_cut_to_discords_limits() {
        // A phase from a newer Flagger can be any text.
        let ev = event(&"p".repeat(2000), "x", EventType::Normal);
        let title = "t".repeat(300);
        let text = "é".repeat(5000);
        let cluster = "c".repeat(2000);
        let msg = Message {
            title: &title,
            text: &text,
            event: &ev,
            cluster: &cluster,
        };
        let body = parse(discord(&DiscordOptions::default(), &msg));
        let embed = &body["embeds"][0];
        let part = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        let title = part(&embed["title"]);
        let description = part(&embed["description"]);
        let phase = part(&embed["fields"][0]["value"]);
        let cluster = part(&embed["fields"][1]["value"]);
        assert_eq!(title.chars().count(), DISCORD_TITLE_LIMIT);
        assert!(title.ends_with(TRUNCATION_NOTE));
        for value in [&phase, &cluster] {
            assert_eq!(value.chars().count(), DISCORD_FIELD_LIMIT);
            assert!(value.ends_with(TRUNCATION_NOTE));
        }
        // What is left of the 6000 for the description, under its own 4096.
        let others = DISCORD_TITLE_LIMIT
            + "Phase".len()
            + DISCORD_FIELD_LIMIT
            + "Cluster".len()
            + DISCORD_FIELD_LIMIT;
        assert!(DISCORD_EMBED_LIMIT - others < DISCORD_DESCRIPTION_LIMIT);
        assert_eq!(description.chars().count(), DISCORD_EMBED_LIMIT - others);
        assert!(description.ends_with(TRUNCATION_NOTE));
        assert!(description.starts_with("éé"));

        // A short title and no cluster leave the description its own limit.
        let ev = event("Progressing", "x", EventType::Normal);
        let msg = Message {
            title: "t",
            text: &text,
            event: &ev,
            cluster: "",
        };
        let body = parse(discord(&DiscordOptions::default(), &msg));
        let description = part(&body["embeds"][0]["description"]);
        assert_eq!(description.chars().count(), DISCORD_DESCRIPTION_LIMIT);
    }
}
