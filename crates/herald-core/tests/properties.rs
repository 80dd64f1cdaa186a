//! Properties over arbitrary input: any event body Herald accepts, through every receiver
//! kind's templates and payload writer, and any title and text through the writers directly,
//! gives a body that is valid JSON with no key twice in an object, within the limits Herald
//! claims to enforce for the receiver, and with the event's markup escaped.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use herald_api::EventType;
use herald_core::receivers::discord::{self, DiscordOptions};
use herald_core::receivers::rocketchat::{self, RocketChatOptions};
use herald_core::receivers::slack::{self, SlackOptions};
use herald_core::receivers::{googlechat, msteams, Message};
use herald_core::{load_sources, FlaggerEvent, MatchInput, PolicySet};
use proptest::prelude::*;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Every kind, with the default templates (all their text comes from the event) and a
/// webhook body template inserting values the safe way and the unsafe way.
const POLICIES: &str = r##"
apiVersion: v1
kind: Secret
metadata: {name: bot, namespace: default}
stringData: {token: xoxb-1}
---
apiVersion: herald.dev/v1alpha1
kind: ClusterNotificationPolicy
metadata: {name: all}
spec:
  receivers:
    - {name: slack, slack: {url: "https://hooks.example.com/s", channel: "#c"}}
    - {name: bot, slack: {tokenSecretRef: {name: bot}, channel: "#c"}}
    - {name: legacy, msteams: {url: "https://example.webhook.office.com/x", format: MessageCard}}
    - {name: workflows, msteams: {url: "https://example.com/workflows", format: AdaptiveCard}}
    - {name: discord, discord: {url: "https://discord.com/api/webhooks/1/t"}}
    - {name: gchat, googlechat: {url: "https://chat.googleapis.com/v1/spaces/A/messages?key=k"}}
    - {name: rocket, rocketchat: {url: "https://rocket.example.com/hooks/a/b"}}
    - {name: forward, webhook: {url: "https://hooks.example.com/f"}}
    - name: safe
      webhook:
        url: https://hooks.example.com/safe
        body: '{"text": {{json message}}, "name": {{json name}}, "meta": {{json metadata}}, "admin": false}'
    - name: naive
      webhook:
        url: https://hooks.example.com/naive
        body: '{"text": "{{message}}", "admin": false}'
"##;

const CLUSTER: &str = "<!subteam^S1> @all [x](y)";

static SET: LazyLock<PolicySet> = LazyLock::new(|| {
    let mut loaded = load_sources([("all.yaml", POLICIES)]);
    let set = loaded.build(CLUSTER, "default");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    set
});

/// Characters that mean something to JSON or to a receiver's markup, and some that take
/// more than one byte or UTF-16 unit.
const CHARS: &[char] = &[
    'a', 'b', ' ', '<', '>', '&', '@', '!', '"', '\\', '*', '_', '~', '`', '[', ']', '(', ')', '#',
    '|', ':', '/', '{', '}', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'é', '\u{2028}',
    '\u{200B}', '🚀',
];

/// Short strings of special characters, arbitrary Unicode, or (sometimes) long ones that
/// need cutting.
fn text() -> impl Strategy<Value = String> {
    let special = prop::collection::vec(prop::sample::select(CHARS), 0..48)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    prop_oneof![
        12 => special.clone(),
        6 => any::<String>(),
        1 => (special, 100usize..1_500).prop_map(|(s, n)| s.repeat(n).chars().take(40_000).collect()),
    ]
}

fn event_json() -> impl Strategy<Value = Value> {
    (
        text(),
        text(),
        text(),
        text(),
        prop::sample::select(vec!["Normal", "Warning", "Other"]),
        any::<u64>(),
        prop::collection::btree_map(text(), text(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(
            |(name, namespace, phase, message, kind, ts, extra, checksum)| {
                let mut metadata = serde_json::Map::new();
                for (k, v) in extra {
                    metadata.insert(k, Value::String(v));
                }
                metadata.insert("eventMessage".into(), Value::String(message));
                metadata.insert("eventType".into(), Value::String(kind.into()));
                metadata.insert("timestamp".into(), Value::String(ts.to_string()));
                let mut event = serde_json::json!({
                    "name": name, "namespace": namespace, "phase": phase, "metadata": metadata,
                });
                if let Some(checksum) = checksum {
                    event["checksum"] = Value::String(checksum);
                }
                event
            },
        )
}

/// Parses JSON, refusing an object with a key twice (which `Value` would take last-wins).
fn parse_unique(body: &[u8]) -> Result<Value, String> {
    struct Unique(Value);
    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(UniqueVisitor)
        }
    }
    struct UniqueVisitor;
    impl<'de> Visitor<'de> for UniqueVisitor {
        type Value = Unique;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
            Ok(Unique(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }
        fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
            Ok(Unique(Value::String(v.to_owned())))
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            let mut out = Vec::new();
            while let Some(Unique(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Unique(Value::Array(out)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut out = serde_json::Map::new();
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format!("duplicate key {key:?}")));
                }
                let Unique(v) = map.next_value()?;
                out.insert(key, v);
            }
            Ok(Unique(Value::Object(out)))
        }
    }
    serde_json::from_slice::<Unique>(body)
        .map(|u| u.0)
        .map_err(|e| e.to_string())
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.encode_utf16().count())
}

/// The limits Herald claims for each kind, and what escaping guarantees there.
fn check_chat_body(kind: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let body = parse_unique(bytes).map_err(|e| TestCaseError::fail(format!("{kind}: {e}")))?;
    match kind {
        "slack" => {
            // With the default templates everything is the event's: no `<` or `>` survives
            // (they would be mentions or links), only entities.
            let attachment = &body["attachments"][0];
            for part in ["text", "fallback", "author_name"] {
                let s = attachment[part].as_str().unwrap();
                prop_assert!(!s.contains(['<', '>']), "slack {part}: {s:?}");
            }
        }
        "teams" => {
            prop_assert!(
                bytes.len() <= msteams::TEAMS_PAYLOAD_LIMIT,
                "{}",
                bytes.len()
            );
        }
        "discord" => {
            prop_assert_eq!(&body["allowed_mentions"], &serde_json::json!({"parse": []}));
            let embed = &body["embeds"][0];
            prop_assert!(chars(&embed["title"]) <= discord::DISCORD_TITLE_LIMIT);
            prop_assert!(chars(&embed["description"]) <= discord::DISCORD_DESCRIPTION_LIMIT);
            let mut total = chars(&embed["title"]) + chars(&embed["description"]);
            for part in ["title", "description"] {
                if let Some(v) = embed.get(part) {
                    prop_assert!(chars(v) > 0, "empty {part}");
                }
            }
            for field in embed["fields"].as_array().unwrap() {
                let value = chars(&field["value"]);
                prop_assert!(value > 0 && value <= discord::DISCORD_FIELD_LIMIT);
                total += chars(&field["name"]) + value;
            }
            prop_assert!(total <= discord::DISCORD_EMBED_LIMIT, "{}", total);
        }
        "googlechat" => {
            prop_assert!(
                bytes.len()
                    <= googlechat::GOOGLE_CHAT_MESSAGE_LIMIT
                        - googlechat::GOOGLE_CHAT_THREAD_ALLOWANCE,
                "{}",
                bytes.len()
            );
        }
        "rocketchat" => {
            let text = body["text"].as_str().unwrap();
            prop_assert!(text.chars().count() <= rocketchat::ROCKET_CHAT_TEXT_LIMIT);
            // No `@` from the event is followed by a username character: no mention.
            let all = String::from_utf8_lossy(bytes).into_owned();
            let at_user = all
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'@' && (w[1].is_ascii_alphanumeric() || b"-_.".contains(&w[1])));
            prop_assert!(!at_user, "{all}");
        }
        _ => {}
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1_500,
        failure_persistence: None,
        // Shrinking long strings takes long: stop early, the first failure is shown anyway.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any event body Herald accepts renders, for every receiver, into a valid body.
    #[test]
    fn every_accepted_event_renders_valid_bodies(event in event_json()) {
        let bytes = serde_json::to_vec(&event).unwrap();
        let Ok(event) = FlaggerEvent::from_json(&bytes) else {
            return Ok(());
        };
        let set = &*SET;
        for result in set.notifications(&MatchInput::event(&event), None) {
            match result {
                Ok(delivery) => {
                    let receiver = set.receiver(delivery.policy, delivery.receiver);
                    check_chat_body(receiver.type_name, &delivery.body)?;
                }
                // Only the naive body may fail: invalid JSON, or a key added twice.
                Err(failure) => {
                    let receiver = set.receiver(failure.policy, failure.receiver);
                    prop_assert_eq!(receiver.name.as_str(), "naive", "{}", failure.error);
                }
            }
        }
    }

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn any_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = FlaggerEvent::from_json(&bytes);
    }

    /// Any title and text (already rendered), through every writer directly.
    #[test]
    fn every_writer_gives_valid_bodies_within_limits(
        title in text(),
        body_text in text(),
        phase in text(),
        cluster in text(),
        warning in any::<bool>(),
    ) {
        let kind = if warning { EventType::Warning } else { EventType::Normal };
        let event = FlaggerEvent::new("podinfo", "default", &phase, &body_text, kind, 1);
        let message = Message { title: &title, text: &body_text, event: &event, cluster: &cluster };
        // The writers escape the facts, not the title and text: the Slack and Rocket.Chat
        // markup checks only hold for templates' output, so they are checked above.
        for (kind, bytes) in [
            ("", slack::slack(&SlackOptions::default(), &message)),
            ("teams", msteams::teams_message_card(&message)),
            ("teams", msteams::teams_adaptive_card(&message)),
            ("discord", discord::discord(&DiscordOptions::default(), &message)),
            ("googlechat", googlechat::google_chat(&message)),
            ("", rocketchat::rocket_chat(&RocketChatOptions::default(), &message)),
        ] {
            check_chat_body(kind, &bytes)?;
        }
        let body = parse_unique(&rocketchat::rocket_chat(&RocketChatOptions::default(), &message)).unwrap();
        prop_assert!(body["text"].as_str().unwrap().chars().count() <= rocketchat::ROCKET_CHAT_TEXT_LIMIT);
    }
}
