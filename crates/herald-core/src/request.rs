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

impl SlackApi {
    /// Whose threads: this token (by fingerprint) in this channel.
    pub fn thread_scope(&self) -> String {
        format!("slack/{}/{}", self.rate_limit_group, self.channel)
    }
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

/// Where one message goes in its rollout's thread (Slack bots and Google Chat).
///
/// A rollout is found by what Flagger says, not only by the revision: Flagger records "New
/// revision detected!" *before* it stores the new revision, so that message carries the
/// previous revision's checksum (and, in a cluster, the previous phase). It therefore always
/// starts a new thread; the revision of the first later message is bound to that thread, and
/// a message whose revision differs from its thread's starts another one (Herald missed the
/// start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRef {
    /// Which receiver's threads: a Slack bot's token and channel, or a Google Chat webhook
    /// (fingerprints, never the secrets themselves).
    pub scope: String,
    pub namespace: String,
    pub canary: String,
    /// The event's revision, when known.
    pub revision: Option<String>,
    /// "New revision detected!": this message starts the rollout's thread.
    pub starts: bool,
    /// The rollout ended ("Promotion completed!", "Canary failed!", or phase Succeeded or
    /// Failed): Slack's first message is updated to show it.
    pub outcome: bool,
    /// A failure: the reply is also shown in the channel (`reply_broadcast`), because an
    /// edited message notifies nobody.
    pub broadcast: bool,
    /// The event time (unix ms): names a new Google Chat thread.
    pub at_ms: u64,
}

impl ThreadRef {
    /// `<scope>/<namespace>/<canary>`: one current thread per receiver and canary.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.scope, self.namespace, self.canary)
    }

    /// The thread this message starts, or binds its revision to, at `channel` and `ts`. A
    /// starting message carries the previous rollout's revision (see above), so the new
    /// thread's revision stays unknown until the next message.
    pub fn parent_at(&self, channel: String, ts: String) -> ThreadParent {
        ThreadParent {
            channel,
            ts,
            revision: if self.starts {
                None
            } else {
                self.revision.clone()
            },
        }
    }
}

/// A rollout's thread as it was started: where its first message is (Slack: the channel ID
/// and `ts` Slack answered; Google Chat: the thread key, in `ts`) and the revision it belongs
/// to once known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadParent {
    pub channel: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// What to do with one message, given the canary's current thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadAction<'a> {
    /// Post on its own; it becomes the canary's thread.
    Start,
    /// Reply in `parent`. `bind`: the thread's revision was unknown and is this message's.
    Reply {
        parent: &'a ThreadParent,
        bind: bool,
    },
}

pub fn thread_action<'a>(
    thread: &ThreadRef,
    current: Option<&'a ThreadParent>,
) -> ThreadAction<'a> {
    let Some(parent) = current else {
        return ThreadAction::Start;
    };
    if thread.starts {
        return ThreadAction::Start;
    }
    match (&parent.revision, &thread.revision) {
        (Some(theirs), Some(ours)) if theirs != ours => ThreadAction::Start,
        (None, Some(_)) => ThreadAction::Reply { parent, bind: true },
        _ => ThreadAction::Reply {
            parent,
            bind: false,
        },
    }
}

/// The thread of one event for a receiver whose threads are named by `scope`.
pub fn thread_ref(scope: &str, event: &FlaggerEvent, canary: Option<&CanaryFacts>) -> ThreadRef {
    let message = event.message();
    let phase = event.known_phase();
    let failed = phase == Some(CanaryPhase::Failed) || message.starts_with("Canary failed!");
    let succeeded =
        phase == Some(CanaryPhase::Succeeded) || message.starts_with("Promotion completed!");
    let starts = message.starts_with("New revision detected!");
    ThreadRef {
        scope: scope.to_owned(),
        namespace: event.namespace.clone(),
        canary: event.name.clone(),
        revision: rollout_revision(event, canary).map(str::to_owned),
        starts,
        // The phase of a starting message may be the previous rollout's (see above).
        outcome: !starts && (failed || succeeded),
        broadcast: !starts && failed,
        at_ms: event.timestamp_ms(),
    }
}

/// Adds `"<name>":<value>` at the end of a JSON object body, keeping its bytes.
pub fn with_field(body: &[u8], name: &str, value: &serde_json::Value) -> Vec<u8> {
    let end = body
        .iter()
        .rposition(|b| *b == b'}')
        .expect("bodies are JSON objects");
    let mut out = Vec::with_capacity(body.len() + name.len() + 64);
    out.extend_from_slice(&body[..end]);
    if body[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        out.push(b',');
    }
    serde_json::to_writer(&mut out, name).expect("a string serialises");
    out.push(b':');
    serde_json::to_writer(&mut out, value).expect("a value serialises");
    out.extend_from_slice(&body[end..]);
    out
}

/// A Google Chat body put in the thread `key`.
pub fn google_chat_in_thread(body: &[u8], key: &str) -> Vec<u8> {
    with_field(body, "thread", &serde_json::json!({ "threadKey": key }))
}

/// The key of a new Google Chat thread for this rollout: `<namespace>/<canary>/<event ms>`.
pub fn google_chat_thread_key(thread: &ThreadRef) -> String {
    format!("{}/{}/{}", thread.namespace, thread.canary, thread.at_ms)
}

/// A `chat.postMessage` body made a reply in the thread `parent_ts`: the same bytes with
/// `thread_ts` (and `reply_broadcast`) added at the end.
pub fn slack_reply(body: &[u8], parent_ts: &str, broadcast: bool) -> Vec<u8> {
    let reply = with_field(body, "thread_ts", &parent_ts.into());
    if broadcast {
        with_field(&reply, "reply_broadcast", &true.into())
    } else {
        reply
    }
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
    Posted {
        channel: String,
        ts: String,
    },
    Error {
        code: String,
        retry: bool,
    },
    /// HTTP 2xx with a body that is not Slack's answer: the message may well be posted, so it
    /// is not sent again, but its `ts` is unknown.
    Unreadable,
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
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return SlackAnswer::Unreadable;
    };
    if answer.ok {
        return match (answer.channel, answer.ts) {
            (Some(channel), Some(ts)) => SlackAnswer::Posted { channel, ts },
            _ => SlackAnswer::Unreadable,
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

    fn event(
        phase: &str,
        message: &str,
        event_type: EventType,
        checksum: Option<&str>,
    ) -> FlaggerEvent {
        let event = FlaggerEvent::new("podinfo", "default", phase, message, event_type, 1_000);
        match checksum {
            Some(c) => event.with_checksum(c),
            None => event,
        }
    }

    /// Flagger's real order: "New revision detected!" carries the previous revision (and, in
    /// a cluster, the previous phase); it starts a thread anyway, which the next message's
    /// revision is bound to.
    #[test]
    fn a_rollout_starts_with_new_revision_detected_whatever_its_checksum() {
        let new = event(
            "Succeeded",
            "New revision detected! Scaling up podinfo.default",
            EventType::Normal,
            Some("old"),
        );
        let start = thread_ref("slack/abc/C1", &new, None);
        assert!(start.starts && !start.outcome && !start.broadcast);
        assert_eq!(start.key(), "slack/abc/C1/default/podinfo");
        let previous = ThreadParent {
            channel: "C1".into(),
            ts: "1.0".into(),
            revision: Some("old".into()),
        };
        assert_eq!(thread_action(&start, Some(&previous)), ThreadAction::Start);

        let started = ThreadParent {
            channel: "C1".into(),
            ts: "2.0".into(),
            revision: None,
        };
        let advance = thread_ref(
            "slack/abc/C1",
            &event(
                "Progressing",
                "Advance podinfo.default canary weight 10",
                EventType::Normal,
                Some("new"),
            ),
            None,
        );
        assert_eq!(
            thread_action(&advance, Some(&started)),
            ThreadAction::Reply {
                parent: &started,
                bind: true
            }
        );
        let bound = ThreadParent {
            revision: Some("new".into()),
            ..started.clone()
        };
        assert_eq!(
            thread_action(&advance, Some(&bound)),
            ThreadAction::Reply {
                parent: &bound,
                bind: false
            }
        );
        // Another revision without a start message: Herald missed it; a new thread.
        let missed = thread_ref(
            "slack/abc/C1",
            &event(
                "Progressing",
                "Advance podinfo.default canary weight 10",
                EventType::Normal,
                Some("newer"),
            ),
            None,
        );
        assert_eq!(thread_action(&missed, Some(&bound)), ThreadAction::Start);
        assert_eq!(thread_action(&missed, None), ThreadAction::Start);
    }

    #[test]
    fn outcomes_by_phase_or_by_flaggers_message() {
        let promoted = thread_ref(
            "s",
            &event(
                "Finalising",
                "Promotion completed! Scaling down podinfo.default",
                EventType::Normal,
                None,
            ),
            None,
        );
        assert!(promoted.outcome && !promoted.broadcast);
        // In a cluster the phase may still be Progressing when Flagger records the failure.
        let failed = thread_ref(
            "s",
            &event(
                "Progressing",
                "Canary failed! Scaling down podinfo.default",
                EventType::Warning,
                None,
            ),
            None,
        );
        assert!(failed.outcome && failed.broadcast);
        let rolling_back = thread_ref(
            "s",
            &event(
                "Progressing",
                "Rolling back podinfo.default failed checks threshold reached 5",
                EventType::Warning,
                None,
            ),
            None,
        );
        assert!(!rolling_back.outcome && !rolling_back.broadcast);
        // The canary's revision when the event has no checksum.
        let canary = CanaryFacts {
            revision: Some("rev-2".into()),
            ..CanaryFacts::default()
        };
        assert_eq!(
            thread_ref(
                "s",
                &event("Progressing", "x", EventType::Normal, None),
                Some(&canary)
            )
            .revision
            .as_deref(),
            Some("rev-2")
        );
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
            String::from_utf8(slack_reply(b"{}", "1.5", true)).unwrap(),
            r#"{"thread_ts":"1.5","reply_broadcast":true}"#
        );
        assert_eq!(
            String::from_utf8(google_chat_in_thread(br#"{"a":1}"#, "default/podinfo/9")).unwrap(),
            r#"{"a":1,"thread":{"threadKey":"default/podinfo/9"}}"#
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
        assert_eq!(slack_answer(b"<html>"), SlackAnswer::Unreadable);
        assert_eq!(slack_answer(br#"{"ok":true}"#), SlackAnswer::Unreadable);
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
