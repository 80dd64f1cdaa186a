//! How a receiver's HTTP request is made beyond its body: method, headers, credentials,
//! the body's signature, and for Slack bots the thread a message belongs to. Pure: the edge
//! (the delivery engine) sends what this describes.

use herald_api::HttpMethod;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::FlaggerEvent;
use crate::secret::Redacted;
use crate::CanaryFacts;
use herald_api::CanaryPhase;

/// Everything about a receiver's request except the URL and the body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestSpec {
    pub method: HttpMethod,
    /// Headers from the policy, sent as they are (validated at load time).
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Redacted>,
    /// Signs every body with HMAC-SHA256.
    pub signature: Option<Signature>,
    /// Set for Slack bots: the request goes to Slack's Web API.
    pub slack_api: Option<SlackApi>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub header: String,
    pub key: Redacted,
}

/// A Slack bot receiver: `chat.postMessage` (the receiver's URL) and `chat.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackApi {
    /// `<api>/chat.update`, used to show a rollout's outcome on its first message.
    pub update_url: String,
    /// The channel as configured: part of the thread key.
    pub channel: String,
    /// One thread per rollout.
    pub threads: bool,
    /// Identifies the token (a hash of it, never the token): Slack rate-limits per token,
    /// so a `429` pauses every channel this token posts to.
    pub rate_limit_group: String,
}

/// A short, stable name for a credential that reveals nothing of it.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&Sha256::digest(secret.as_bytes())[..8])
}

/// A header to send; `sensitive` ones are credentials (never logged, marked sensitive for
/// the HTTP stack).
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: String,
    pub value: Redacted,
    pub sensitive: bool,
}

impl RequestSpec {
    /// The extra headers for one request carrying `body`: the policy's headers, then the
    /// bearer token and the body's signature.
    pub fn headers_for(&self, body: &[u8]) -> Vec<Header> {
        let mut out: Vec<Header> = self
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: Redacted::new(value.clone()),
                sensitive: false,
            })
            .collect();
        if let Some(token) = &self.bearer_token {
            out.push(Header {
                name: "Authorization".to_owned(),
                value: Redacted::new(format!("Bearer {}", token.expose())),
                sensitive: true,
            });
        }
        if let Some(signature) = &self.signature {
            out.push(Header {
                name: signature.header.clone(),
                value: Redacted::new(sign(signature.key.expose().as_bytes(), body)),
                sensitive: false,
            });
        }
        out
    }
}

/// `sha256=<lower-case hex HMAC-SHA256 of body>`, the signature format of GitHub's and Flux's
/// signed webhooks.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Where a Slack bot message goes in its rollout's thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRef {
    /// `<channel>/<namespace>/<canary>/<revision>`: one thread per rollout and channel.
    pub key: String,
    /// The rollout ended (Succeeded or Failed): its first message is updated to show this.
    pub outcome: bool,
    /// A failure: the reply is also shown in the channel (`reply_broadcast`), because an
    /// edited message notifies nobody.
    pub broadcast: bool,
}

/// The revision an event belongs to: Flagger's `checksum`, or the Canary's
/// `status.lastAppliedSpec` when Herald watches the cluster.
pub fn rollout_revision<'a>(
    event: &'a FlaggerEvent,
    canary: Option<&'a CanaryFacts>,
) -> Option<&'a str> {
    event
        .checksum
        .as_deref()
        .or_else(|| canary.and_then(|c| c.revision.as_deref()))
        .filter(|r| !r.is_empty())
}

/// `<namespace>/<canary>/<revision>`: names one rollout, or `None` when the revision is
/// unknown.
pub fn rollout_key(event: &FlaggerEvent, canary: Option<&CanaryFacts>) -> Option<String> {
    rollout_revision(event, canary)
        .map(|revision| format!("{}/{}/{revision}", event.namespace, event.name))
}

/// The thread of one event for a Slack bot, or `None` when the revision is unknown (the
/// event has no `checksum` and no Canary was seen): then the message stands alone.
pub fn thread_ref(
    api: &SlackApi,
    event: &FlaggerEvent,
    canary: Option<&CanaryFacts>,
) -> Option<ThreadRef> {
    if !api.threads {
        return None;
    }
    let rollout = rollout_key(event, canary)?;
    let phase = event.known_phase();
    let outcome = matches!(phase, Some(CanaryPhase::Succeeded | CanaryPhase::Failed));
    Some(ThreadRef {
        key: format!("{}/{rollout}", api.channel),
        outcome,
        broadcast: phase == Some(CanaryPhase::Failed),
    })
}

/// A `chat.postMessage` body made a reply in the thread `parent_ts`: the same bytes with
/// `thread_ts` (and `reply_broadcast`) added at the end.
pub fn slack_reply(body: &[u8], parent_ts: &str, broadcast: bool) -> Vec<u8> {
    let end = body
        .iter()
        .rposition(|b| *b == b'}')
        .expect("Slack bodies are JSON objects");
    let mut out = Vec::with_capacity(body.len() + parent_ts.len() + 40);
    out.extend_from_slice(&body[..end]);
    if body[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        out.push(b',');
    }
    out.extend_from_slice(b"\"thread_ts\":");
    serde_json::to_writer(&mut out, parent_ts).expect("a string serialises");
    if broadcast {
        out.extend_from_slice(b",\"reply_broadcast\":true");
    }
    out.extend_from_slice(&body[end..]);
    out
}

/// A `chat.update` body that replaces the message `ts` in `channel` (the channel ID Slack
/// answered with) by the content of `body`: the rollout's first message then shows its
/// outcome. `chat.update` takes no username or icon, so only the content is kept.
pub fn slack_update(body: &[u8], channel: &str, ts: &str) -> Vec<u8> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).expect("Slack bodies are JSON objects");
    let mut update = serde_json::Map::new();
    update.insert("channel".into(), channel.into());
    update.insert("ts".into(), ts.into());
    for key in ["text", "attachments", "blocks"] {
        if let Some(value) = object.get(key) {
            update.insert(key.into(), value.clone());
        }
    }
    serde_json::to_vec(&update).expect("a JSON object serialises")
}

/// What Slack's Web API answered: `{"ok":true,"channel":"C…","ts":"…"}` or
/// `{"ok":false,"error":"…"}` (with HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackAnswer {
    Posted { channel: String, ts: String },
    Error { code: String, retry: bool },
}

/// Reads a Web API answer. Slack's error codes are short identifiers (`channel_not_found`),
/// safe to log; anything else is reported as `invalid_response`.
pub fn slack_answer(body: &[u8]) -> SlackAnswer {
    #[derive(serde::Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        ts: Option<String>,
    }
    let invalid = SlackAnswer::Error {
        code: "invalid_response".into(),
        retry: true,
    };
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return invalid;
    };
    if answer.ok {
        return match (answer.channel, answer.ts) {
            (Some(channel), Some(ts)) => SlackAnswer::Posted { channel, ts },
            _ => invalid,
        };
    }
    let code = answer
        .error
        .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_else(|| "unknown_error".into());
    // Slack's documented transient errors; everything else (bad token, unknown channel,
    // not in channel, invalid blocks) fails the same way on every attempt.
    let retry = matches!(
        code.as_str(),
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "team_added_to_org"
    );
    SlackAnswer::Error { code, retry }
}

/// A header name as HTTP defines it (a token): letters, digits and ``!#$%&'*+-.^_`|~``.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A header value HTTP can carry: visible ASCII, spaces and tabs, no line breaks.
pub fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_api::EventType;
    use serde_json::{json, Value};

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn headers_carry_the_token_and_the_signature() {
        let spec = RequestSpec {
            headers: vec![("X-Team".into(), "payments".into())],
            bearer_token: Some(Redacted::new("t0k3n")),
            signature: Some(Signature {
                header: "X-Signature".into(),
                key: Redacted::new("Jefe"),
            }),
            ..RequestSpec::default()
        };
        let headers = spec.headers_for(b"what do ya want for nothing?");
        let plain: Vec<(&str, &str, bool)> = headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.expose(), h.sensitive))
            .collect();
        assert_eq!(
            plain,
            [
                ("X-Team", "payments", false),
                ("Authorization", "Bearer t0k3n", true),
                (
                    "X-Signature",
                    "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                    false
                ),
            ]
        );
    }

    fn api() -> SlackApi {
        SlackApi {
            update_url: "http://127.0.0.1:1/api/chat.update".into(),
            channel: "C0123".into(),
            threads: true,
            rate_limit_group: fingerprint("xoxb"),
        }
    }

    #[test]
    fn threads_are_per_channel_canary_and_revision() {
        let new = FlaggerEvent::new(
            "podinfo",
            "default",
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
            EventType::Normal,
            1,
        )
        .with_checksum("7c4d5e6f8");
        assert_eq!(
            thread_ref(&api(), &new, None),
            Some(ThreadRef {
                key: "C0123/default/podinfo/7c4d5e6f8".into(),
                outcome: false,
                broadcast: false
            })
        );
        let failed = FlaggerEvent::new(
            "podinfo",
            "default",
            "Failed",
            "Canary failed! Scaling down podinfo.default",
            EventType::Warning,
            2,
        );
        // No checksum: the Canary's revision names the rollout.
        let canary = CanaryFacts {
            revision: Some("rev-2".into()),
            ..CanaryFacts::default()
        };
        assert_eq!(
            thread_ref(&api(), &failed, Some(&canary)),
            Some(ThreadRef {
                key: "C0123/default/podinfo/rev-2".into(),
                outcome: true,
                broadcast: true
            })
        );
        assert_eq!(thread_ref(&api(), &failed, None), None);
        let off = SlackApi {
            threads: false,
            ..api()
        };
        assert_eq!(thread_ref(&off, &new, None), None);
    }

    #[test]
    fn replies_and_updates() {
        let body = br#"{"channel":"C0123","username":"herald","attachments":[{"text":"x"}]}"#;
        // The body is kept byte for byte, the thread added at its end.
        assert_eq!(
            String::from_utf8(slack_reply(body, "1.5", false)).unwrap(),
            r#"{"channel":"C0123","username":"herald","attachments":[{"text":"x"}],"thread_ts":"1.5"}"#
        );
        assert_eq!(
            String::from_utf8(slack_reply(b"{}", "1.5", false)).unwrap(),
            r#"{"thread_ts":"1.5"}"#
        );
        let broadcast: Value = serde_json::from_slice(&slack_reply(body, "1.5", true)).unwrap();
        assert_eq!(broadcast["reply_broadcast"], true);
        let update: Value = serde_json::from_slice(&slack_update(body, "C999", "1.5")).unwrap();
        assert_eq!(
            update,
            json!({"channel":"C999","ts":"1.5","attachments":[{"text":"x"}]})
        );
    }

    #[test]
    fn slack_answers() {
        assert_eq!(
            slack_answer(br#"{"ok":true,"channel":"C1","ts":"1.2","message":{}}"#),
            SlackAnswer::Posted {
                channel: "C1".into(),
                ts: "1.2".into()
            }
        );
        assert_eq!(
            slack_answer(br#"{"ok":false,"error":"channel_not_found"}"#),
            SlackAnswer::Error {
                code: "channel_not_found".into(),
                retry: false
            }
        );
        assert_eq!(
            slack_answer(br#"{"ok":false,"error":"internal_error"}"#),
            SlackAnswer::Error {
                code: "internal_error".into(),
                retry: true
            }
        );
        assert_eq!(
            slack_answer(b"<html>"),
            SlackAnswer::Error {
                code: "invalid_response".into(),
                retry: true
            }
        );
        assert_eq!(
            slack_answer(br#"{"ok":false,"error":"https://evil/\nx"}"#),
            SlackAnswer::Error {
                code: "unknown_error".into(),
                retry: false
            }
        );
    }

    #[test]
    fn header_syntax() {
        assert!(is_header_name("X-Signature"));
        assert!(!is_header_name("X Signature"));
        assert!(!is_header_name(""));
        assert!(is_header_value("Bearer abc"));
        assert!(!is_header_value("a\r\nInjected: 1"));
    }
}
