//! Webex's messages API: `POST <apiUrl>/v1/messages` with `{roomId, markdown}` and
//! `Authorization: Bearer <token>`. A message holds about 7,439 bytes; the text is cut to fit,
//! saying so.

use std::any::Any;
use std::sync::Arc;

use herald_api::WebexReceiver;
use serde::Serialize;

use super::TRUNCATION_NOTE;
use super::{chat_body, limit, Compiled, Message, ReceiverKind, Render, RequestSpec};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// Webex refuses a message longer than this many bytes.
pub const MESSAGE_LIMIT: usize = 7_439;
/// The title is cut to this many bytes.
const TITLE_LIMIT: usize = 512;

/// A Webex room, posted to by a bot.
#[derive(Debug)]
pub struct Webex {
    pub room_id: String,
    /// Receivers share Webex's URL: each token is its own queue and rate-limit group (a
    /// fingerprint, never the token).
    queue: String,
}

impl ReceiverKind for Webex {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::Teams, |message, _| {
            let body = Body {
                room_id: &self.room_id,
                markdown: &markdown(message),
            };
            serde_json::to_vec(&body).expect("a message serialises")
        })
    }

    fn queue(&self) -> Option<&str> {
        Some(&self.queue)
    }

    fn rate_limit_group(&self) -> Option<&str> {
        Some(&self.queue)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    room_id: &'a str,
    markdown: &'a str,
}

/// The message as Webex Markdown: the title in bold, the text, then the facts (values
/// escaped already, [`Markup::Teams`]'s backslashes); the text is cut so the whole fits
/// [`MESSAGE_LIMIT`].
pub fn markdown(message: &Message<'_>) -> String {
    let title = cut(message.title, TITLE_LIMIT);
    let head = if title.is_empty() {
        String::new()
    } else {
        format!("**{title}**\n\n")
    };
    let mut facts = String::new();
    for (name, value) in message.facts_in(Markup::Teams) {
        facts.push_str(&format!("\n**{name}:** {value}  "));
    }
    let facts = facts.trim_end_matches(' ');
    let sep = if message.text.is_empty() { "" } else { "\n" };
    let budget = MESSAGE_LIMIT.saturating_sub(head.len() + facts.len() + sep.len());
    let text = cut(message.text, budget);
    format!("{head}{text}{sep}{facts}")
}

/// `text` cut to `max` bytes, saying so, never between a backslash and what it escapes.
fn cut(text: &str, max: usize) -> String {
    let cut = limit(text, max);
    let Some(kept) = cut
        .strip_suffix(TRUNCATION_NOTE)
        .filter(|_| text.len() > max)
    else {
        return cut.into_owned();
    };
    let backslashes = kept.len() - kept.trim_end_matches('\\').len();
    let kept = &kept[..kept.len() - backslashes % 2];
    format!("{kept}{TRUNCATION_NOTE}")
}

pub(crate) fn compile(spec: &WebexReceiver, path: &str, cx: &mut Compiler<'_>) -> Option<Compiled> {
    let before = cx.problem_count();
    let api = cx.api_url(spec.api_url.as_deref(), herald_api::WEBEX_API_URL, path);
    let room_id = match spec.room_id.as_deref() {
        None | Some("") => {
            cx.invalid(&format!("{path}.roomId"), "required: the room's ID");
            None
        }
        Some(id) => Some(id.to_owned()),
    };
    let field = format!("{path}.tokenSecretRef");
    let token = match &spec.token_secret_ref {
        None => {
            cx.invalid(
                &field,
                "required: the Secret key holding the bot's access token",
            );
            None
        }
        Some(secret) => cx.token_value(secret, &field),
    };
    if cx.problem_count() > before {
        return None;
    }
    let token = token?;
    let kind = Webex {
        room_id: room_id?,
        queue: super::http::fingerprint(token.expose()),
    };
    Some(Compiled {
        type_name: "",
        kind: Arc::new(kind),
        url: Redacted::new(format!("{api}/v1/messages")),
        request: RequestSpec {
            bearer_token: Some(token),
            ..RequestSpec::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_sources, FlaggerEvent, MatchInput};
    use herald_api::EventType;

    const POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: wx, namespace: default}
stringData: {token: webex-bot-token}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: room, namespace: default}
spec:
  receivers:
    - name: wx
      webex: {tokenSecretRef: {name: wx}, roomId: Y2lzY29zcGFyazovL3VzL1JPT00vYWJj}
"#;

    fn body(message: &str) -> serde_json::Value {
        let mut loaded = load_sources([("p.yaml", POLICY)]);
        let set = loaded.build("prod-eu", "default");
        assert_eq!(loaded.problems, []);
        let receiver = set.receiver(0, 0);
        assert_eq!(receiver.url.expose(), "https://webexapis.com/v1/messages");
        let headers = receiver.request.headers_for(b"");
        assert_eq!(headers[0].value.expose(), "Bearer webex-bot-token");
        assert!(headers[0].sensitive);
        let ev = FlaggerEvent::new(
            "podinfo",
            "default",
            "Failed",
            message,
            EventType::Warning,
            1_578_607_635_167,
        );
        let got = set.notifications(&MatchInput::event(&ev), None);
        serde_json::from_slice(&got[0].as_ref().unwrap().body).unwrap()
    }

    #[test]
    fn markdown_with_the_values_escaped() {
        assert_eq!(
            body("Canary failed! <@all> **now** [x](http://evil)"),
            serde_json::json!({
                "roomId": "Y2lzY29zcGFyazovL3VzL1JPT00vYWJj",
                "markdown": "**[prod-eu] podinfo.default**\n\nCanary failed! \\<@all\\> \\*\\*now\\*\\* \\[x\\]\\(http://evil\\)\n\n**Phase:** Failed  \n**Cluster:** prod-eu"
            })
        );
    }

    #[test]
    fn the_text_is_cut_to_7439_bytes_never_after_a_lone_backslash() {
        let got = body(&"*".repeat(8_000));
        let markdown = got["markdown"].as_str().unwrap();
        assert!(markdown.len() <= MESSAGE_LIMIT, "{}", markdown.len());
        assert!(markdown.len() > MESSAGE_LIMIT - 10);
        let (kept, _) = markdown.split_once(TRUNCATION_NOTE).unwrap();
        assert!(kept.ends_with("\\*"));
        assert!(markdown.ends_with("**Cluster:** prod-eu"));
    }
}
