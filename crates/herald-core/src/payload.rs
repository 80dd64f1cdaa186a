//! The exact JSON bodies each receiver kind gets. Pure: a title, a text and an event in,
//! bytes out.

use herald_api::TeamsFormat;
use serde::Serialize;

use crate::event::{FlaggerEvent, Severity};
use crate::template::TemplateId;

/// Teams rejects payloads over about 28 KB; text beyond this many bytes is cut.
pub const TEAMS_TEXT_LIMIT: usize = 20_000;
const TRUNCATION_NOTE: &str = "… (truncated by Herald)";

/// What kind of endpoint a receiver is, with the options that shape its body.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Slack(SlackOptions),
    Teams(TeamsFormat),
    Webhook(WebhookOptions),
}

impl ReceiverKind {
    /// The `type` in `herald render` output and the `receiver_type` metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            ReceiverKind::Slack(_) => "slack",
            ReceiverKind::Teams(_) => "msteams",
            ReceiverKind::Webhook(_) => "webhook",
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

/// The rendered parts of one notification.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub event: &'a FlaggerEvent,
    pub cluster: &'a str,
}

impl Message<'_> {
    fn facts(&self) -> Vec<(&'static str, &str)> {
        let mut facts = vec![("Phase", self.event.phase.as_str())];
        if !self.cluster.is_empty() {
            facts.push(("Cluster", self.cluster));
        }
        facts
    }
}

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
    value: &'a str,
    short: bool,
}

/// A Slack incoming-webhook body in Flagger's layout (one attachment, coloured by outcome),
/// plus a `fallback` for notifications and the event time.
pub fn slack(options: &SlackOptions, message: &Message<'_>) -> Vec<u8> {
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
            fallback: format!("{} {}", message.title, message.text),
            author_name: message.title,
            text: message.text,
            mrkdwn_in: ["text"],
            fields: message
                .facts()
                .into_iter()
                .map(|(title, value)| SlackField {
                    title,
                    value,
                    short: true,
                })
                .collect(),
            ts: message.event.timestamp_ms() / 1000,
        }],
    };
    to_json(&body, message)
}

#[derive(Serialize)]
struct MessageCard<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@context")]
    context: &'static str,
    #[serde(rename = "themeColor")]
    theme_color: &'static str,
    summary: String,
    sections: [MessageCardSection<'a>; 1],
}

#[derive(Serialize)]
struct MessageCardSection<'a> {
    #[serde(rename = "activityTitle")]
    activity_title: &'a str,
    #[serde(rename = "activitySubtitle")]
    activity_subtitle: &'a str,
    facts: Vec<NameValue<'a>>,
}

#[derive(Serialize)]
struct NameValue<'a> {
    name: &'static str,
    value: &'a str,
}

/// A legacy Office 365 connector MessageCard in Flagger's layout.
pub fn teams_message_card(message: &Message<'_>) -> Vec<u8> {
    let text = limit(message.text, TEAMS_TEXT_LIMIT);
    let card = MessageCard {
        kind: "MessageCard",
        context: "http://schema.org/extensions",
        theme_color: match message.event.severity() {
            Severity::Info => "0076D7",
            Severity::Success => "2EB886",
            Severity::Warning => "FFA500",
            Severity::Error => "FF0000",
        },
        summary: format!("{} {}", message.title, limit(message.text, 200)),
        sections: [MessageCardSection {
            activity_title: &text,
            activity_subtitle: message.title,
            facts: message
                .facts()
                .into_iter()
                .map(|(name, value)| NameValue { name, value })
                .collect(),
        }],
    };
    to_json(&card, message)
}

#[derive(Serialize)]
struct TeamsMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    attachments: [AdaptiveAttachment<'a>; 1],
}

#[derive(Serialize)]
struct AdaptiveAttachment<'a> {
    #[serde(rename = "contentType")]
    content_type: &'static str,
    content: AdaptiveCard<'a>,
}

#[derive(Serialize)]
struct AdaptiveCard<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    msteams: AdaptiveWidth,
    body: Vec<AdaptiveElement<'a>>,
}

#[derive(Serialize)]
struct AdaptiveWidth {
    width: &'static str,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum AdaptiveElement<'a> {
    TextBlock {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        weight: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        color: Option<&'static str>,
        wrap: bool,
    },
    FactSet {
        facts: Vec<TitleValue<'a>>,
    },
}

#[derive(Serialize)]
struct TitleValue<'a> {
    title: &'static str,
    value: &'a str,
}

/// A Teams Workflows message: one Adaptive Card 1.4 (the highest version Teams renders).
/// Cards have no colour strip, so the title's colour carries the outcome.
pub fn teams_adaptive_card(message: &Message<'_>) -> Vec<u8> {
    let text = limit(message.text, TEAMS_TEXT_LIMIT);
    let color = match message.event.severity() {
        Severity::Info => None,
        Severity::Success => Some("good"),
        Severity::Warning => Some("warning"),
        Severity::Error => Some("attention"),
    };
    let body = TeamsMessage {
        kind: "message",
        attachments: [AdaptiveAttachment {
            content_type: "application/vnd.microsoft.card.adaptive",
            content: AdaptiveCard {
                schema: "http://adaptivecards.io/schemas/adaptive-card.json",
                kind: "AdaptiveCard",
                version: "1.4",
                msteams: AdaptiveWidth { width: "Full" },
                body: vec![
                    AdaptiveElement::TextBlock {
                        text: message.title,
                        weight: Some("Bolder"),
                        size: Some("Medium"),
                        color,
                        wrap: true,
                    },
                    AdaptiveElement::TextBlock {
                        text: &text,
                        weight: None,
                        size: None,
                        color: None,
                        wrap: true,
                    },
                    AdaptiveElement::FactSet {
                        facts: message
                            .facts()
                            .into_iter()
                            .map(|(title, value)| TitleValue { title, value })
                            .collect(),
                    },
                ],
            },
        }],
    };
    to_json(&body, message)
}

/// Serialises a body into a buffer sized for it up front.
fn to_json(body: &impl Serialize, message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + 2 * (message.title.len() + message.text.len()));
    serde_json::to_writer(&mut out, body).expect("a payload always serialises");
    out
}

/// Cuts `text` to at most `max` bytes, on a character boundary, saying so.
fn limit(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(TRUNCATION_NOTE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{TRUNCATION_NOTE}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_api::EventType;
    use serde_json::{json, Value};

    fn event(phase: &str, message: &str, event_type: EventType) -> FlaggerEvent {
        FlaggerEvent::new(
            "podinfo",
            "default",
            phase,
            message,
            event_type,
            1_578_607_635_167,
        )
    }

    fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
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

    #[test]
    fn teams_message_card() {
        let ev = event(
            "Failed",
            "Rolling back podinfo.default failed checks threshold reached 5",
            EventType::Warning,
        );
        let msg = Message {
            title: "podinfo.default",
            text: ev.message(),
            event: &ev,
            cluster: "",
        };
        assert_eq!(
            parse(super::teams_message_card(&msg)),
            json!({
                "@type": "MessageCard",
                "@context": "http://schema.org/extensions",
                "themeColor": "FF0000",
                "summary": "podinfo.default Rolling back podinfo.default failed checks threshold reached 5",
                "sections": [{
                    "activityTitle": "Rolling back podinfo.default failed checks threshold reached 5",
                    "activitySubtitle": "podinfo.default",
                    "facts": [{"name": "Phase", "value": "Failed"}]
                }]
            })
        );
    }

    #[test]
    fn teams_adaptive_card() {
        let ev = event(
            "Failed",
            "Canary failed! Scaling down podinfo.default",
            EventType::Warning,
        );
        let msg = Message {
            title: "[prod] podinfo.default",
            text: ev.message(),
            event: &ev,
            cluster: "prod",
        };
        assert_eq!(
            parse(super::teams_adaptive_card(&msg)),
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "msteams": {"width": "Full"},
                        "body": [
                            {"type": "TextBlock", "text": "[prod] podinfo.default", "weight": "Bolder", "size": "Medium", "color": "attention", "wrap": true},
                            {"type": "TextBlock", "text": "Canary failed! Scaling down podinfo.default", "wrap": true},
                            {"type": "FactSet", "facts": [{"title": "Phase", "value": "Failed"}, {"title": "Cluster", "value": "prod"}]}
                        ]
                    }
                }]
            })
        );
    }

    #[test]
    fn teams_text_is_cut_below_the_payload_limit() {
        let ev = event("Progressing", "x", EventType::Normal);
        let long = "é".repeat(30_000);
        let msg = Message {
            title: "t",
            text: &long,
            event: &ev,
            cluster: "",
        };
        let body = super::teams_adaptive_card(&msg);
        assert!(body.len() < 28_000, "{}", body.len());
        let text = parse(body)["attachments"][0]["content"]["body"][1]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            text.len() <= TEAMS_TEXT_LIMIT && text.len() > TEAMS_TEXT_LIMIT - 30,
            "{}",
            text.len()
        );
        assert!(text.ends_with(TRUNCATION_NOTE));
    }
}
