//! Microsoft Teams: Adaptive Cards for Workflows webhooks, MessageCards for legacy Office 365
//! connectors.

use serde::Serialize;

use super::{fit_body, limit, to_json, Message};
use crate::event::Severity;

/// Teams rejects payloads over about 28 KB; text beyond this many bytes is cut.
pub const TEAMS_TEXT_LIMIT: usize = 20_000;
/// The largest body Herald sends to Teams: the text is cut further when escaping makes the
/// body larger than this (a margin below Teams' ~28 KB).
pub const TEAMS_PAYLOAD_LIMIT: usize = 27_000;
/// Titles are one line: cut at this many bytes.
pub const TEAMS_TITLE_LIMIT: usize = 1_000;

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

/// A legacy Office 365 connector MessageCard in Flagger's layout. Text and title are cut so
/// the body stays under Teams' payload limit.
pub fn teams_message_card(message: &Message<'_>) -> Vec<u8> {
    let title = limit(message.title, TEAMS_TITLE_LIMIT);
    let summary = format!("{title} {}", limit(message.text, 200));
    let facts: Vec<NameValue<'_>> = message
        .facts()
        .into_iter()
        .map(|(name, value)| NameValue { name, value })
        .collect();
    let theme_color = match message.event.severity() {
        Severity::Info => "0076D7",
        Severity::Success => "2EB886",
        Severity::Warning => "FFA500",
        Severity::Error => "FF0000",
    };
    fit_body(
        TEAMS_PAYLOAD_LIMIT,
        message.text.len().min(TEAMS_TEXT_LIMIT),
        |text_limit| {
            let text = limit(message.text, text_limit);
            let card = MessageCard {
                kind: "MessageCard",
                context: "http://schema.org/extensions",
                theme_color,
                summary: summary.clone(),
                sections: [MessageCardSection {
                    activity_title: &text,
                    activity_subtitle: &title,
                    facts: facts
                        .iter()
                        .map(|f| NameValue {
                            name: f.name,
                            value: f.value,
                        })
                        .collect(),
                }],
            };
            to_json(&card, message)
        },
    )
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
/// Cards have no colour strip, so the title's colour carries the outcome. Text and title are
/// cut so the body stays under Teams' payload limit.
pub fn teams_adaptive_card(message: &Message<'_>) -> Vec<u8> {
    let title = limit(message.title, TEAMS_TITLE_LIMIT);
    let color = match message.event.severity() {
        Severity::Info => None,
        Severity::Success => Some("good"),
        Severity::Warning => Some("warning"),
        Severity::Error => Some("attention"),
    };
    let facts = message.facts();
    fit_body(
        TEAMS_PAYLOAD_LIMIT,
        message.text.len().min(TEAMS_TEXT_LIMIT),
        |text_limit| {
            let text = limit(message.text, text_limit);
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
                                text: &title,
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
                                facts: facts
                                    .iter()
                                    .map(|(title, value)| TitleValue { title, value })
                                    .collect(),
                            },
                        ],
                    },
                }],
            };
            to_json(&body, message)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{event, parse};
    use super::super::{Message, TRUNCATION_NOTE};
    use super::*;
    use herald_api::EventType;
    use serde_json::json;

    #[test]
    fn message_card() {
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
            parse(teams_message_card(&msg)),
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
    fn adaptive_card() {
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
            parse(teams_adaptive_card(&msg)),
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
        let body = teams_adaptive_card(&msg);
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

    /// Quotes and line breaks double in JSON: the text is cut further so the body still fits,
    /// and a long title is cut too; both say so.
    #[test]
    fn escaped_text_and_long_titles_still_fit() {
        let ev = event("Failed", "x", EventType::Warning);
        let quoted = "\"\n".repeat(15_000);
        let title = "t".repeat(5_000);
        let msg = Message {
            title: &title,
            text: &quoted,
            event: &ev,
            cluster: "prod",
        };
        // The MessageCard also repeats both, cut, in its summary.
        for (body, notes) in [
            (teams_adaptive_card(&msg), 2),
            (teams_message_card(&msg), 4),
        ] {
            assert!(
                body.len() <= TEAMS_PAYLOAD_LIMIT && body.len() > TEAMS_PAYLOAD_LIMIT - 100,
                "{}",
                body.len()
            );
            let text = String::from_utf8(body).unwrap();
            assert_eq!(
                text.matches(TRUNCATION_NOTE).count(),
                notes,
                "title and text"
            );
        }
    }
}
