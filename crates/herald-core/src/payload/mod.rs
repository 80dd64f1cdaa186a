//! The exact JSON bodies each receiver kind gets. Pure: a title, a text and an event in,
//! bytes out. One module per provider; what they share (the message, its facts, the size
//! limits' truncation) is here.

use std::borrow::Cow;

use herald_api::TeamsFormat;
use serde::Serialize;

use crate::escape::Markup;
use crate::event::{FlaggerEvent, Severity};
use crate::template::TemplateId;

mod discord;
mod googlechat;
pub(crate) mod json;
mod rocketchat;
mod slack;
mod teams;

pub use discord::{
    discord, DISCORD_DESCRIPTION_LIMIT, DISCORD_EMBED_LIMIT, DISCORD_FIELD_LIMIT,
    DISCORD_TITLE_LIMIT,
};
pub use googlechat::{google_chat, GOOGLE_CHAT_MESSAGE_LIMIT, GOOGLE_CHAT_THREAD_ALLOWANCE};
pub use rocketchat::{rocket_chat, ROCKET_CHAT_TEXT_LIMIT};
pub use slack::slack;
pub(crate) use slack::slack_as;
pub use teams::{
    teams_adaptive_card, teams_message_card, TEAMS_PAYLOAD_LIMIT, TEAMS_TEXT_LIMIT,
    TEAMS_TITLE_LIMIT,
};
pub(crate) use teams::{teams_adaptive_card_as, teams_message_card_as};

/// Appended where Herald cut a text to fit a receiver's limit.
pub const TRUNCATION_NOTE: &str = "… (truncated by Herald)";

/// What kind of endpoint a receiver is, with the options that shape its body.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Slack(SlackOptions),
    /// The format as resolved when the policy was compiled (explicit, or detected from the
    /// URL's host).
    Teams(TeamsFormat),
    Webhook(WebhookOptions),
    Discord(DiscordOptions),
    /// `threads`: one thread per rollout.
    GoogleChat {
        threads: bool,
    },
    RocketChat(RocketChatOptions),
}

impl ReceiverKind {
    /// The `type` in `herald render` output and the `receiver_type` metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            ReceiverKind::Slack(_) => "slack",
            ReceiverKind::Teams(_) => "msteams",
            ReceiverKind::Webhook(_) => "webhook",
            ReceiverKind::Discord(_) => "discord",
            ReceiverKind::GoogleChat { .. } => "googlechat",
            ReceiverKind::RocketChat(_) => "rocketchat",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlackOptions {
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub icon_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookOptions {
    /// A template rendering the whole body; `None` sends Flagger's event JSON.
    pub body: Option<TemplateId>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscordOptions {
    pub username: Option<String>,
    pub avatar_url: Option<String>,
}

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

/// The rendered parts of one notification.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub event: &'a FlaggerEvent,
    pub cluster: &'a str,
}

impl Message<'_> {
    /// The facts every chat body shows: the phase, and the cluster when it has a name.
    /// An iterator rather than a `Vec`: one allocation less per notification.
    fn facts(&self) -> impl Iterator<Item = (&'static str, &str)> + Clone {
        let cluster = (!self.cluster.is_empty()).then_some(("Cluster", self.cluster));
        std::iter::once(("Phase", self.event.phase.as_str())).chain(cluster)
    }

    /// [`Self::facts`] with each value escaped for `markup`: they come from the event and
    /// the cluster's name, not from the policy's templates.
    fn facts_in(
        &self,
        markup: Markup,
    ) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> + Clone {
        self.facts()
            .map(move |(name, value)| (name, markup.escape(value)))
    }

    /// The event time in RFC 3339 (empty when the timestamp is out of range).
    fn time(&self) -> String {
        crate::template::rfc3339(self.event.timestamp_ms())
    }
}

/// The outcome as an RGB colour, for receivers that take any colour (the MessageCard
/// palette).
fn rgb(severity: Severity) -> u32 {
    match severity {
        Severity::Info => 0x0076D7,
        Severity::Success => 0x2EB886,
        Severity::Warning => 0xFFA500,
        Severity::Error => 0xFF0000,
    }
}

/// Serialises a body into a buffer sized for it up front.
fn to_json(body: &impl Serialize, message: &Message<'_>) -> Vec<u8> {
    let mut out = buffer(message);
    serde_json::to_writer(&mut out, body).expect("a payload always serialises");
    out
}

/// A buffer for a body, sized up front so it is not grown while written.
fn buffer(message: &Message<'_>) -> Vec<u8> {
    Vec::with_capacity(512 + 2 * (message.title.len() + message.text.len()))
}

/// [`limit`] for a text that may already be owned (escaped).
fn limit_cow(text: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text;
    }
    Cow::Owned(limit(&text, max).into_owned())
}

/// Cuts `text` to at most `max` bytes, on a character boundary, saying so.
fn limit(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(TRUNCATION_NOTE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATION_NOTE}", &text[..end]))
}

/// The body `build(n)` makes with the text cut to `n` bytes, for the largest `n` (at most
/// `text_len`) whose body is at most `max_body` bytes. JSON escaping can make one byte of
/// text up to six bytes of body, so the cut is found by bisection (only for texts near the
/// limit; otherwise the first build is the answer).
fn fit_body(max_body: usize, text_len: usize, build: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let whole = build(text_len);
    if whole.len() <= max_body {
        return whole;
    }
    let (mut fits, mut too_long) = (0, text_len);
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if build(mid).len() <= max_body {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    build(fits)
}

/// The length of `text` in UTF-16 code units: what JavaScript's `length` counts, and never
/// less than the number of characters (code points).
fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Cuts `text` to at most `max` UTF-16 code units (so also at most `max` characters), on a
/// character boundary, saying so. For services whose limits count characters.
fn limit_chars(text: &str, max: usize) -> Cow<'_, str> {
    if utf16_len(text) <= max {
        return Cow::Borrowed(text);
    }
    let budget = max.saturating_sub(utf16_len(TRUNCATION_NOTE));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        if used + c.len_utf16() > budget {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    Cow::Owned(format!("{}{TRUNCATION_NOTE}", &text[..end]))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Message;
    use crate::event::FlaggerEvent;
    use herald_api::EventType;
    use serde_json::Value;

    /// An event at 2020-01-09T22:07:15.167Z.
    pub fn event(phase: &str, message: &str, event_type: EventType) -> FlaggerEvent {
        FlaggerEvent::new(
            "podinfo",
            "default",
            phase,
            message,
            event_type,
            1_578_607_635_167,
        )
    }

    pub fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Calls `check` with messages covering every severity, with and without a cluster, and
    /// titles and texts with characters JSON escapes, non-ASCII, empty and long ones: for
    /// comparing bodies written directly with their `serde_json` serialisation.
    pub fn messages(mut check: impl FnMut(&Message<'_>)) {
        let events = [
            event(
                "Progressing",
                "New revision detected! Scaling up podinfo.default",
                EventType::Normal,
            ),
            event(
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                EventType::Normal,
            ),
            event(
                "Progressing",
                "Halt advancement no values found",
                EventType::Warning,
            ),
            event(
                "Failed",
                "Canary failed! Scaling down podinfo.default",
                EventType::Warning,
            ),
            FlaggerEvent::new(
                "p\u{e9}-\"q\"",
                "ns\n",
                "Phase\t\u{1}",
                "",
                EventType::Normal,
                0,
            ),
            FlaggerEvent::new("a", "b", "", "x", EventType::Normal, u64::MAX),
        ];
        let long = format!("{}\"\n\u{1F680}", "long text ".repeat(3_000));
        let quoted = "\"\n\\".repeat(12_000);
        let texts = [
            "",
            "New revision detected! Scaling up podinfo.default",
            "Rolling back \u{1F680} <b>\\ \"quoted\"\r\n\ttab \u{0}\u{1f}\u{7f} \u{2028}",
            &long,
            &quoted,
        ];
        let titles = ["", "[prod-eu] podinfo.default", "T\u{e9}\"t\\le\n", &long];
        for event in &events {
            for cluster in ["", "prod-eu", "c\"l"] {
                for title in titles {
                    for text in texts {
                        check(&Message {
                            title,
                            text,
                            event,
                            cluster,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_cuts_bytes_on_a_char_boundary() {
        assert_eq!(limit("short", 10), "short");
        let long = "é".repeat(100);
        let cut = limit(&long, 50);
        assert!(cut.len() <= 50, "{}", cut.len());
        assert!(cut.ends_with(TRUNCATION_NOTE));
        assert_eq!(cut, format!("{}{TRUNCATION_NOTE}", "é".repeat(12)));
    }

    #[test]
    fn limit_chars_counts_utf16_units() {
        assert_eq!(limit_chars("abc", 3), "abc");
        // 30 characters of 2 bytes each fit a limit of 30 characters.
        let accented = "é".repeat(30);
        assert_eq!(limit_chars(&accented, 30), accented);
        let long = "a".repeat(40);
        let cut = limit_chars(&long, 30);
        assert_eq!(cut, format!("{}{TRUNCATION_NOTE}", "a".repeat(7)));
        assert_eq!(utf16_len(&cut), 30);
        // An emoji is two UTF-16 units: never split, never over the limit.
        let long = "😀".repeat(40);
        let cut = limit_chars(&long, 30);
        assert_eq!(cut, format!("{}{TRUNCATION_NOTE}", "😀".repeat(3)));
        assert!(utf16_len(&cut) <= 30);
    }

    #[test]
    fn type_names_are_the_metric_labels() {
        let kinds = [
            ReceiverKind::Slack(SlackOptions::default()),
            ReceiverKind::Teams(TeamsFormat::AdaptiveCard),
            ReceiverKind::Webhook(WebhookOptions::default()),
            ReceiverKind::Discord(DiscordOptions::default()),
            ReceiverKind::GoogleChat { threads: true },
            ReceiverKind::RocketChat(RocketChatOptions::default()),
        ];
        assert_eq!(
            kinds
                .iter()
                .map(ReceiverKind::type_name)
                .collect::<Vec<_>>(),
            [
                "slack",
                "msteams",
                "webhook",
                "discord",
                "googlechat",
                "rocketchat"
            ]
        );
    }
}
