//! Google Chat incoming webhooks: one `cardsV2` card.

use serde::Serialize;

use super::{fit_body, limit, rgb, to_json, Message};

/// Google Chat rejects messages (text and cards together) over this many bytes.
pub const GOOGLE_CHAT_MESSAGE_LIMIT: usize = 32_000;
/// Room left for the `"thread":{"threadKey":"<namespace>/<canary>/<ms>"}` added when the
/// message is sent (a namespace is at most 63 bytes, a canary name 253).
pub const GOOGLE_CHAT_THREAD_ALLOWANCE: usize = 400;
/// The title, each fact and the notification text are cut to this many bytes; the card's
/// text gets what the message limit leaves.
const PART_LIMIT: usize = 1_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatMessage<'a> {
    fallback_text: &'a str,
    cards_v2: [CardWithId<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CardWithId<'a> {
    card_id: &'static str,
    card: Card<'a>,
}

#[derive(Serialize)]
struct Card<'a> {
    header: CardHeader<'a>,
    sections: [Section<'a>; 1],
}

#[derive(Serialize)]
struct CardHeader<'a> {
    title: &'a str,
}

#[derive(Serialize)]
struct Section<'a> {
    widgets: Vec<Widget<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Widget<'a> {
    TextParagraph {
        text: &'a str,
    },
    DecoratedText {
        #[serde(rename = "topLabel")]
        top_label: &'static str,
        text: &'a str,
    },
}

/// A Google Chat message: one card whose header is the title, a paragraph with the text and
/// one labelled line per fact (the phase coloured by outcome: cards have no colour strip),
/// plus `fallbackText`, the plain text Chat shows where the card cannot be (notifications).
/// The text is card text, so Chat's card HTML subset (`<b>`, `<a href>`, ...) applies to it.
/// Cut to Google's 32,000-byte message limit, leaving room for the rollout's thread, which is
/// added when the message is sent (`request::google_chat_in_thread`).
pub fn google_chat(message: &Message<'_>) -> Vec<u8> {
    let title = limit(message.title, PART_LIMIT);
    let fallback = format!("{} {}", message.title, message.text);
    let fallback = limit(&fallback, PART_LIMIT);
    let colour = rgb(message.event.severity());
    // The facts come from the event and the cluster's name: escaped for the card's HTML.
    let facts: Vec<(&'static str, String)> = message
        .facts()
        .map(|(name, value)| {
            let value = escape_html(&limit(value, PART_LIMIT)).into_owned();
            let value = if name == "Phase" {
                format!("<font color=\"#{colour:06X}\">{value}</font>")
            } else {
                value
            };
            (name, value)
        })
        .collect();
    let build = |text_limit: usize| {
        let text = limit(message.text, text_limit);
        let mut widgets = vec![Widget::TextParagraph { text: &text }];
        widgets.extend(facts.iter().map(|(name, value)| Widget::DecoratedText {
            top_label: name,
            text: value,
        }));
        let body = ChatMessage {
            fallback_text: &fallback,
            cards_v2: [CardWithId {
                card_id: "herald",
                card: Card {
                    header: CardHeader { title: &title },
                    sections: [Section { widgets }],
                },
            }],
        };
        to_json(&body, message)
    };
    fit_body(
        GOOGLE_CHAT_MESSAGE_LIMIT - GOOGLE_CHAT_THREAD_ALLOWANCE,
        message.text.len().min(GOOGLE_CHAT_MESSAGE_LIMIT),
        build,
    )
}

/// Escapes text for Google Chat's card HTML.
fn escape_html(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{event, parse};
    use super::super::{Message, TRUNCATION_NOTE};
    use super::*;
    use herald_api::EventType;
    use serde_json::json;

    #[test]
    fn card_with_header_text_facts_and_fallback() {
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
            parse(google_chat(&msg)),
            json!({
                "fallbackText": "[prod] podinfo.default Canary failed! Scaling down podinfo.default",
                "cardsV2": [{
                    "cardId": "herald",
                    "card": {
                        "header": {"title": "[prod] podinfo.default"},
                        "sections": [{
                            "widgets": [
                                {"textParagraph": {"text": "Canary failed! Scaling down podinfo.default"}},
                                {"decoratedText": {"topLabel": "Phase", "text": "<font color=\"#FF0000\">Failed</font>"}},
                                {"decoratedText": {"topLabel": "Cluster", "text": "prod"}}
                            ]
                        }]
                    }
                }]
            })
        );
    }

    #[test]
    fn phase_colour_follows_outcome_and_is_escaped() {
        for (phase, text, event_type, font) in [
            (
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                EventType::Normal,
                "<font color=\"#2EB886\">Succeeded</font>",
            ),
            (
                "Progressing",
                "Advance podinfo.default canary weight 10",
                EventType::Normal,
                "<font color=\"#0076D7\">Progressing</font>",
            ),
            (
                "<b>&\"",
                "Halt advancement podinfo.default waiting for approval",
                EventType::Normal,
                "<font color=\"#FFA500\">&lt;b&gt;&amp;&quot;</font>",
            ),
        ] {
            let ev = event(phase, text, event_type);
            let msg = Message {
                title: "podinfo.default",
                text,
                event: &ev,
                cluster: "",
            };
            let body = parse(google_chat(&msg));
            assert_eq!(
                body["cardsV2"][0]["card"]["sections"][0]["widgets"],
                json!([
                    {"textParagraph": {"text": text}},
                    {"decoratedText": {"topLabel": "Phase", "text": font}}
                ]),
                "{phase}"
            );
        }
    }

    #[test]
    fn message_is_cut_to_googles_limit() {
        let ev = event("Progressing", "x", EventType::Normal);
        // Quotes double in JSON: a text that fits in bytes can overflow once encoded.
        for long in [
            "é".repeat(40_000),
            "\"".repeat(30_000),
            "\u{1}".repeat(20_000),
        ] {
            let title = "t".repeat(5_000);
            let msg = Message {
                title: &title,
                text: &long,
                event: &ev,
                cluster: "",
            };
            let bytes = google_chat(&msg);
            assert!(
                bytes.len() <= GOOGLE_CHAT_MESSAGE_LIMIT - GOOGLE_CHAT_THREAD_ALLOWANCE,
                "{}",
                bytes.len()
            );
            // Only what had to go was cut.
            assert!(
                bytes.len() > GOOGLE_CHAT_MESSAGE_LIMIT - GOOGLE_CHAT_THREAD_ALLOWANCE - 100,
                "{}",
                bytes.len()
            );
            let body = parse(bytes);
            let card = &body["cardsV2"][0]["card"];
            let text = card["sections"][0]["widgets"][0]["textParagraph"]["text"]
                .as_str()
                .unwrap();
            assert!(text.ends_with(TRUNCATION_NOTE));
            assert!(long.starts_with(text.strip_suffix(TRUNCATION_NOTE).unwrap()));
            let title = card["header"]["title"].as_str().unwrap();
            assert_eq!(title.len(), PART_LIMIT);
            assert!(title.ends_with(TRUNCATION_NOTE));
            let fallback = body["fallbackText"].as_str().unwrap();
            assert!(fallback.len() <= PART_LIMIT && fallback.ends_with(TRUNCATION_NOTE));
        }
    }
}
