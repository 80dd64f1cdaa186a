//! Gates from Slack: the ask with Approve / Roll back buttons, the interaction payload Slack
//! POSTs when one is pressed, its signature, and the messages that answer it.

use herald_api::{GateType, Verdict};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use super::RevisionKey;

/// Slack refuses to count on requests older than this, and so does Herald (replays).
pub const MAX_AGE_SECONDS: i64 = 5 * 60;

pub const APPROVE_ACTION: &str = "herald_approve";
pub const ROLLBACK_ACTION: &str = "herald_rollback";

/// Why an interaction request was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Slack-Request-Timestamp is missing or not a number")]
    NoTimestamp,
    #[error("X-Slack-Request-Timestamp is more than 5 minutes from now: a replay, or a clock off")]
    Stale,
    #[error("X-Slack-Signature is missing or does not match the signing secret")]
    Mismatch,
}

/// Checks `X-Slack-Signature` (`v0=` hex HMAC-SHA256 of `v0:<timestamp>:<raw body>` with the
/// app's signing secret) and the timestamp's age, as Slack documents.
pub fn verify_signature(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    let at: i64 = timestamp.parse().map_err(|_| SignatureError::NoTimestamp)?;
    if (now_s - at).abs() > MAX_AGE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let hex_signature = signature
        .and_then(|s| s.strip_prefix("v0="))
        .ok_or(SignatureError::Mismatch)?;
    let expected = hex::decode(hex_signature).map_err(|_| SignatureError::Mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret).expect("any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// What a button carries: the revision and gate it decides, and where it was asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonValue {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "c")]
    pub canary: String,
    #[serde(rename = "r")]
    pub revision: String,
    #[serde(rename = "g")]
    pub gate: GateType,
    /// The asking policy (`namespace/name`, or `name` for a cluster policy).
    #[serde(rename = "p")]
    pub policy: String,
    /// The receiver (a Slack bot) that asked: its token replies in the thread.
    #[serde(rename = "rc")]
    pub receiver: String,
}

impl ButtonValue {
    pub fn key(&self) -> RevisionKey {
        RevisionKey {
            namespace: self.namespace.clone(),
            canary: self.canary.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// A button press, from Slack's `block_actions` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interaction {
    /// The presser's user ID.
    pub user: String,
    /// The presser's user name, when Slack sends it.
    pub user_name: Option<String>,
    pub verdict: Verdict,
    pub value: ButtonValue,
    pub channel: String,
    /// The message with the buttons.
    pub message_ts: String,
    /// The thread the message is in (the rollout's), when it is in one.
    pub thread_ts: Option<String>,
    /// The message's text, kept when the buttons are replaced.
    pub message_text: String,
    /// Where the message is updated and ephemeral answers go.
    pub response_url: String,
}

#[derive(Deserialize)]
struct Form {
    payload: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: Id,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    channel: Option<Id>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    message: Option<MessageRef>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Deserialize)]
struct Id {
    id: String,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    message_ts: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct MessageRef {
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// Reads an interaction request's form body (`payload=<json>`). `Ok(None)`: a well-formed
/// interaction that is not a press of Herald's buttons (Slack sends others to the same URL).
pub fn parse_interaction(body: &[u8]) -> Result<Option<Interaction>, String> {
    let form: Form = serde_urlencoded::from_bytes(body)
        .map_err(|e| format!("expected a form with a payload field: {e}"))?;
    let payload: Payload = serde_json::from_str(&form.payload)
        .map_err(|e| format!("the payload is not Slack's interaction JSON: {e}"))?;
    if payload.kind != "block_actions" {
        return Ok(None);
    }
    let Some((verdict, value)) = payload.actions.iter().find_map(|action| {
        let verdict = match action.action_id.as_str() {
            APPROVE_ACTION => Verdict::Approve,
            ROLLBACK_ACTION => Verdict::Rollback,
            _ => return None,
        };
        Some((verdict, action.value.clone()?))
    }) else {
        return Ok(None);
    };
    let value: ButtonValue =
        serde_json::from_str(&value).map_err(|e| format!("the button's value: {e}"))?;
    let message = payload.message;
    let container = payload.container;
    let channel = payload
        .channel
        .map(|c: Id| c.id)
        .or_else(|| container.as_ref().and_then(|c| c.channel_id.clone()))
        .ok_or("the payload names no channel")?;
    let message_ts = message
        .as_ref()
        .map(|m| m.ts.clone())
        .or_else(|| container.as_ref().and_then(|c| c.message_ts.clone()))
        .ok_or("the payload names no message")?;
    Ok(Some(Interaction {
        user_name: payload.user.username,
        user: payload.user.id,
        verdict,
        value,
        channel,
        message_ts,
        thread_ts: message.as_ref().and_then(|m| m.thread_ts.clone()),
        message_text: message.and_then(|m| m.text).unwrap_or_default(),
        response_url: payload
            .response_url
            .ok_or("the payload has no response_url")?,
    }))
}

/// A Slack mention of an approver: users as `<@U…>`, user groups as `<!subteam^S…>`.
pub fn mentions(users: &[String], groups: &[String]) -> String {
    let mut all: Vec<String> = users.iter().map(|u| format!("<@{u}>")).collect();
    all.extend(groups.iter().map(|g| format!("<!subteam^{g}>")));
    all.join(", ")
}

fn plain(text: &str) -> Value {
    json!({"type": "plain_text", "text": text})
}

fn button(action: &str, label: &str, style: &str, value: &str, confirm: Value) -> Value {
    json!({
        "type": "button",
        "action_id": action,
        "text": plain(label),
        "style": style,
        "value": value,
        "confirm": confirm,
    })
}

/// The blocks of an ask: its text, who may decide, and the two buttons, each behind a
/// confirmation dialog. `text` is Slack mrkdwn, already escaped.
pub fn ask_blocks(text: &str, approvers: &str, value: &ButtonValue, what: &str) -> Value {
    let value = serde_json::to_string(value).expect("a button value serialises");
    let who = if approvers.is_empty() {
        "Nobody is on this gate's approvers list: decide with `herald gate` or `kubectl`."
            .to_owned()
    } else {
        format!("May decide: {approvers}")
    };
    json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": who}]},
        {"type": "actions", "block_id": "herald_gate", "elements": [
            button(APPROVE_ACTION, "Approve", "primary", &value, json!({
                "title": plain(&format!("Approve the {what}?")),
                "text": {"type": "mrkdwn", "text": format!("Flagger goes on with the {what} of this revision.")},
                "confirm": plain("Approve"),
                "deny": plain("Cancel"),
            })),
            button(ROLLBACK_ACTION, "Roll back", "danger", &value, json!({
                "title": plain("Roll back?"),
                "text": {"type": "mrkdwn", "text": "Flagger rolls this revision back at its next check."},
                "confirm": plain("Roll back"),
                "deny": plain("Cancel"),
                "style": "danger",
            })),
        ]},
    ])
}

/// The ask's message once decided: its text kept, the buttons replaced by the decision
/// (posted to the interaction's `response_url`).
pub fn decided_message(original_text: &str, outcome: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "replace_original": true,
        "text": format!("{original_text}\n{outcome}"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": original_text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]},
        ],
    }))
    .expect("a message serialises")
}

/// An answer only the presser sees (posted to `response_url`).
pub fn ephemeral(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": text,
    }))
    .expect("a message serialises")
}
