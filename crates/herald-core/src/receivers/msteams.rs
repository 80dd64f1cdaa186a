//! Microsoft Teams: Adaptive Cards for Workflows webhooks, MessageCards for legacy Office 365
//! connectors.

use std::any::Any;
use std::borrow::Cow;

use herald_api::{TeamsFormat, TeamsReceiver};

use super::json::{push_escaped, push_pairs, push_str};
use super::{
    buffer, chat_body, fit_body, limit, limit_cow, Compiled, Message, ReceiverKind, Render,
    RequestSpec,
};
use crate::escape::Markup;
use crate::event::Severity;
use crate::policy::Compiler;
use crate::template::TemplateError;

/// A Teams webhook, in the format resolved when the policy was compiled (explicit, or
/// detected from the URL's host).
#[derive(Debug)]
pub struct Teams {
    pub format: TeamsFormat,
}

impl ReceiverKind for Teams {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::Teams, |message, severity| {
            match self.format {
                TeamsFormat::MessageCard => teams_message_card_as(message, severity),
                TeamsFormat::AdaptiveCard => teams_adaptive_card_as(message, severity),
            }
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(crate) fn compile(spec: &TeamsReceiver, path: &str, cx: &mut Compiler<'_>) -> Option<Compiled> {
    let url = cx.resolve_address(herald_api::ReceiverSpec::address(spec), path)?;
    let format = spec
        .format
        .unwrap_or_else(|| TeamsFormat::detect(url.expose()));
    Some(Compiled {
        type_name: "",
        kind: std::sync::Arc::new(Teams { format }),
        url,
        request: RequestSpec::default(),
    })
}

/// Teams rejects payloads over about 28 KB; text beyond this many bytes is cut.
pub const TEAMS_TEXT_LIMIT: usize = 20_000;
/// The largest body Herald sends to Teams: the text is cut further when escaping makes the
/// body larger than this (a margin below Teams' ~28 KB).
pub const TEAMS_PAYLOAD_LIMIT: usize = 27_000;
/// Titles are one line: cut at this many bytes.
pub const TEAMS_TITLE_LIMIT: usize = 1_000;

/// A legacy Office 365 connector MessageCard in Flagger's layout. Text and title are cut so
/// the body stays under Teams' payload limit.
///
/// Written directly (see [`super::json`]); the bytes are those `serde_json` gives for the
/// structs in the tests' `reference` module, which the tests check.
pub fn teams_message_card(message: &Message<'_>) -> Vec<u8> {
    teams_message_card_as(message, message.event.severity())
}

/// [`teams_message_card`] with the event's severity already worked out.
pub(crate) fn teams_message_card_as(message: &Message<'_>, severity: Severity) -> Vec<u8> {
    let title = limit(message.title, TEAMS_TITLE_LIMIT);
    let theme_color: &[u8] = match severity {
        Severity::Info => b"0076D7",
        Severity::Success => b"2EB886",
        Severity::Warning => b"FFA500",
        Severity::Error => b"FF0000",
    };
    // Everything before the text, and everything after it, is the same for each cut of the
    // text that `fit_body` tries.
    let mut head = Vec::with_capacity(256 + 2 * title.len());
    head.extend_from_slice(
        b"{\"@type\":\"MessageCard\",\"@context\":\"http://schema.org/extensions\",\"themeColor\":\"",
    );
    head.extend_from_slice(theme_color);
    // The summary is the title and the start of the text, separated by a space.
    head.extend_from_slice(b"\",\"summary\":\"");
    push_escaped(&mut head, &title);
    head.push(b' ');
    push_escaped(&mut head, &limit(message.text, 200));
    head.extend_from_slice(b"\",\"sections\":[{\"activityTitle\":");
    let mut tail = Vec::with_capacity(
        192 + 2 * title.len() + message.event.phase.len() + message.cluster.len(),
    );
    tail.extend_from_slice(b",\"activitySubtitle\":");
    push_str(&mut tail, &title);
    tail.extend_from_slice(b",\"facts\":[");
    push_pairs(&mut tail, facts(message), "name", "");
    tail.extend_from_slice(b"]}]}");
    fit_body(
        TEAMS_PAYLOAD_LIMIT,
        message.text.len().min(TEAMS_TEXT_LIMIT),
        |text_limit| around(&head, &limit(message.text, text_limit), &tail, message),
    )
}

/// The facts, escaped and each cut like a title: the phase is the event's, of any length.
fn facts<'a>(
    message: &'a Message<'_>,
) -> impl Iterator<Item = (&'static str, Cow<'a, str>)> + Clone {
    message
        .facts_in(Markup::Teams)
        .map(|(name, value)| (name, limit_cow(value, TEAMS_TITLE_LIMIT)))
}

/// `head`, `text` as a JSON string, then `tail`.
fn around(head: &[u8], text: &str, tail: &[u8], message: &Message<'_>) -> Vec<u8> {
    let mut out = buffer(message);
    out.extend_from_slice(head);
    push_str(&mut out, text);
    out.extend_from_slice(tail);
    out
}

/// A Teams Workflows message: one Adaptive Card 1.4 (the highest version Teams renders).
/// Cards have no colour strip, so the title's colour carries the outcome. Text and title are
/// cut so the body stays under Teams' payload limit.
///
/// Written directly (see [`super::json`]); the bytes are those `serde_json` gives for the
/// structs in the tests' `reference` module, which the tests check.
pub fn teams_adaptive_card(message: &Message<'_>) -> Vec<u8> {
    teams_adaptive_card_as(message, message.event.severity())
}

/// [`teams_adaptive_card`] with the event's severity already worked out.
pub(crate) fn teams_adaptive_card_as(message: &Message<'_>, severity: Severity) -> Vec<u8> {
    let title = limit(message.title, TEAMS_TITLE_LIMIT);
    let color: &[u8] = match severity {
        Severity::Info => b"",
        Severity::Success => b",\"color\":\"good\"",
        Severity::Warning => b",\"color\":\"warning\"",
        Severity::Error => b",\"color\":\"attention\"",
    };
    let mut head = Vec::with_capacity(512 + 2 * title.len());
    head.extend_from_slice(
        b"{\"type\":\"message\",\"attachments\":[{\"contentType\":\"application/vnd.microsoft.card.adaptive\",\
          \"content\":{\"$schema\":\"http://adaptivecards.io/schemas/adaptive-card.json\",\
          \"type\":\"AdaptiveCard\",\"version\":\"1.4\",\"msteams\":{\"width\":\"Full\"},\
          \"body\":[{\"type\":\"TextBlock\",\"text\":",
    );
    push_str(&mut head, &title);
    head.extend_from_slice(b",\"weight\":\"Bolder\",\"size\":\"Medium\"");
    head.extend_from_slice(color);
    let mut tail = Vec::with_capacity(192 + message.event.phase.len() + message.cluster.len());
    tail.extend_from_slice(b",\"wrap\":true},{\"type\":\"FactSet\",\"facts\":[");
    push_pairs(&mut tail, facts(message), "title", "");
    tail.extend_from_slice(b"]}]}}]}");
    if message.text.is_empty() {
        // Flagger can send an empty message: the card then has no (empty) TextBlock for it.
        head.extend_from_slice(&tail);
        return head;
    }
    head.extend_from_slice(b",\"wrap\":true},{\"type\":\"TextBlock\",\"text\":");
    fit_body(
        TEAMS_PAYLOAD_LIMIT,
        message.text.len().min(TEAMS_TEXT_LIMIT),
        |text_limit| around(&head, &limit(message.text, text_limit), &tail, message),
    )
}

#[cfg(test)]
mod reference {
    //! The bodies as they were first built: `serde_json` over these structs.
    //! [`super::teams_message_card`] and [`super::teams_adaptive_card`] must give the same
    //! bytes.

    use serde::Serialize;

    use super::super::{fit_body, limit, Message};
    use super::{TEAMS_PAYLOAD_LIMIT, TEAMS_TEXT_LIMIT, TEAMS_TITLE_LIMIT};
    use crate::event::Severity;
    use std::borrow::Cow;

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
        value: Cow<'a, str>,
    }

    /// A legacy Office 365 connector MessageCard in Flagger's layout. Text and title are cut so
    /// the body stays under Teams' payload limit.
    pub fn teams_message_card(message: &Message<'_>) -> Vec<u8> {
        let title = limit(message.title, TEAMS_TITLE_LIMIT);
        let summary = format!("{title} {}", limit(message.text, 200));
        let facts: Vec<NameValue<'_>> = super::facts(message)
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
                                value: f.value.clone(),
                            })
                            .collect(),
                    }],
                };
                serde_json::to_vec(&card).unwrap()
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
        value: Cow<'a, str>,
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
        let facts = super::facts(message);
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
                                        .clone()
                                        .map(|(title, value)| TitleValue { title, value })
                                        .collect(),
                                },
                            ],
                        },
                    }],
                };
                let mut body = body;
                // No TextBlock for an empty text.
                if text.is_empty() {
                    body.attachments[0].content.body.remove(1);
                }
                serde_json::to_vec(&body).unwrap()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::messages;
    use super::super::test_support::{event, parse};
    use super::super::{Message, TRUNCATION_NOTE};
    use super::*;

    /// The bodies written directly are byte for byte the `serde_json` ones, for every
    /// severity and odd or long text (cut to fit).
    #[test]
    fn teams_bodies_are_the_serde_json_bodies() {
        messages(|message| {
            assert_eq!(
                String::from_utf8(teams_message_card(message)).unwrap(),
                String::from_utf8(reference::teams_message_card(message)).unwrap(),
                "{message:?}"
            );
            assert_eq!(
                String::from_utf8(teams_adaptive_card(message)).unwrap(),
                String::from_utf8(reference::teams_adaptive_card(message)).unwrap(),
                "{message:?}"
            );
        });
    }
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
    fn an_empty_text_has_no_text_block() {
        let ev = event("Progressing", "", herald_api::EventType::Normal);
        let message = Message {
            title: "podinfo.default",
            text: "",
            event: &ev,
            cluster: "",
        };
        let body = parse(teams_adaptive_card(&message));
        let blocks = body["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["TextBlock", "FactSet"]);
        assert_eq!(blocks[0]["text"], "podinfo.default");
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
