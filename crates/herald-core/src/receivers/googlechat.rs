//! Google Chat incoming webhooks: one `cardsV2` card.

use std::any::Any;

use herald_api::GoogleChatReceiver;
use serde::Serialize;

use super::threads::{thread_action, with_field, ThreadAction};
use super::{
    chat_body, fit_body, limit, rgb, to_json, Compiled, KeepThread, Message, Plan, ReceiverKind,
    Render, Request, RequestSpec, ThreadParent, ThreadRef,
};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// A Google Chat incoming webhook. With threads, each message carries its rollout's thread
/// key: Chat threads by a key Herald chooses, so a new rollout gets a new key
/// (`<namespace>/<canary>/<event ms>`), kept like a Slack thread's parent.
#[derive(Debug)]
pub struct GoogleChat {
    /// Set with threads: `googlechat/<fingerprint of the URL>`.
    pub thread_scope: Option<String>,
}

impl ReceiverKind for GoogleChat {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        // The thread is added when the message is sent: it depends on the canary's current
        // thread.
        chat_body(render, Markup::Html, |message, _| google_chat(message))
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
            return Plan::post("message");
        };
        let action = thread_action(thread, current);
        let (key, keep) = match &action {
            ThreadAction::Start => (thread_key(thread), true),
            ThreadAction::Reply { parent, bind } => (parent.ts.clone(), *bind),
        };
        Plan {
            // Chat names threads by key alone: there is no channel to keep.
            keep: match keep {
                true => KeepThread::Parent(thread.parent_at(String::new(), key.clone())),
                false => KeepThread::Nothing,
            },
            request: Request {
                name: "message",
                url: None,
                body: Some(in_thread(body, &key)),
                method: None,
            },
            follow_up: None,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(crate) fn compile(
    spec: &GoogleChatReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    let url = cx.resolve_address(herald_api::ReceiverSpec::address(spec), path)?;
    let threads = spec.threads.unwrap_or(true);
    let (url, thread_scope) = match threads {
        true => {
            let url = with_reply_option(url);
            // Of the URL as sent: threads kept in the state are named by it.
            let scope = format!("googlechat/{}", super::http::fingerprint(url.expose()));
            (url, Some(scope))
        }
        false => (url, None),
    };
    Some(Compiled {
        type_name: "",
        kind: std::sync::Arc::new(GoogleChat { thread_scope }),
        url,
        request: RequestSpec::default(),
    })
}

/// A Google Chat webhook URL that replies in the thread a message names (by default Chat
/// starts a new thread and ignores the key). Left as it is if it already says.
fn with_reply_option(url: Redacted) -> Redacted {
    let address = url.expose();
    if address.contains("messageReplyOption=") {
        return url;
    }
    let (base, fragment) = match address.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (address, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut out =
        format!("{base}{separator}messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Redacted::new(out)
}

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
/// added when the message is sent ([`in_thread`]).
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

/// A Google Chat body put in the thread `key`.
pub fn in_thread(body: &[u8], key: &str) -> Vec<u8> {
    with_field(body, "thread", &serde_json::json!({ "threadKey": key }))
}

/// The key of a new Google Chat thread for this rollout: `<namespace>/<canary>/<event ms>`.
pub fn thread_key(thread: &ThreadRef) -> String {
    format!("{}/{}/{}", thread.namespace, thread.canary, thread.at_ms)
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
    fn a_body_is_put_in_its_thread() {
        assert_eq!(
            String::from_utf8(super::in_thread(br#"{"a":1}"#, "default/podinfo/9")).unwrap(),
            r#"{"a":1,"thread":{"threadKey":"default/podinfo/9"}}"#
        );
    }

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
