//! What each receiver is sent: templates (inherited, overridden, per-delivery variables), the
//! cluster name, and webhook bodies, for policies loaded from YAML.

mod common;

use common::*;
use herald_api::EventType;
use herald_api::TeamsFormat;
use herald_core::receivers::msteams::Teams;
use herald_core::{load_sources, FlaggerEvent, MatchInput};
use serde_json::{json, Value};

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("every body is JSON")
}

const POLICY: &str = r#"
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata:
  name: team
  namespace: default
spec:
  template:
    title: "{{upper name}} in {{namespace}}"
    text: "{{message}} ({{severity}})"
  receivers:
    - name: inherits
      slack:
        url: https://hooks.example.com/1
    - name: own-text
      slack:
        url: https://hooks.example.com/2
      template:
        text: "{{policy}} → {{receiver}}: {{truncate message 14}}"
    - name: own-body
      webhook:
        url: https://hooks.example.com/3
        body: '{"who": {{json receiver}}, "policy": {{json policy}}, "checksum": {{json checksum}}, "cluster": {{json cluster}}}'
"#;

#[test]
fn templates_are_inherited_and_overridden_per_part() {
    let set = build_ok(POLICY);
    let ev = event(
        "podinfo",
        "default",
        "Progressing",
        "Rolling back podinfo.default failed checks threshold reached 5",
        EventType::Warning,
    );
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    assert_eq!(got.len(), 3);

    let inherits = json_of(&got[0].2);
    assert_eq!(
        inherits["attachments"][0]["author_name"],
        "PODINFO in default"
    );
    assert_eq!(
        inherits["attachments"][0]["text"],
        "Rolling back podinfo.default failed checks threshold reached 5 (error)"
    );

    // The title still comes from the policy; the text is the receiver's own.
    let own = json_of(&got[1].2);
    assert_eq!(own["attachments"][0]["author_name"], "PODINFO in default");
    assert_eq!(
        own["attachments"][0]["text"],
        "default/team → own-text: Rolling back …"
    );

    assert_eq!(
        json_of(&got[2].2),
        json!({"who": "own-body", "policy": "default/team", "checksum": null, "cluster": ""})
    );
}

#[test]
fn cluster_name_is_shown_when_set() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: slack\nspec:\n  receivers:\n    - name: s\n      slack:\n        url: https://hooks.example.com/s\n";
    let mut loaded = load_sources([("p.yaml", yaml)]);
    let set = loaded.build("prod-eu", HERALD_NAMESPACE);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(set.cluster(), "prod-eu");
    let ev = progressing("podinfo", "default");
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    let body = json_of(&got[0].2);
    assert_eq!(
        body["attachments"][0]["author_name"],
        "[prod-eu] podinfo.default"
    );
    assert_eq!(
        body["attachments"][0]["fields"],
        json!([
            {"title": "Phase", "value": "Progressing", "short": true},
            {"title": "Cluster", "value": "prod-eu", "short": true}
        ])
    );
}

#[test]
fn webhook_without_body_forwards_flaggers_json_unchanged() {
    let set = build_ok(&policy("default", "forward", ""));
    // Unknown phase, extra metadata and an unknown top-level field: all kept, byte for byte.
    let line = r#"{"name":"podinfo","namespace":"default","phase":"Paused","metadata":{"cluster":"eu","eventMessage":"Paused \"podinfo\"","eventType":"Normal","timestamp":"1764072000000"},"zeta":[1,{"b":2}]}"#;
    let ev = FlaggerEvent::from_json(line.as_bytes()).unwrap();
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    assert_eq!(got.len(), 1);
    assert_eq!(String::from_utf8(got[0].2.clone()).unwrap(), line);
}

#[test]
fn body_that_breaks_json_for_one_event_fails_only_that_delivery() {
    // Valid JSON for the load-time sample message, but not for a message with quotes.
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: team\nspec:\n  receivers:\n    - name: naive\n      webhook:\n        url: https://hooks.example.com/1\n        body: '{\"text\": \"{{message}}\"}'\n    - name: safe\n      webhook:\n        url: https://hooks.example.com/2\n        body: '{\"text\": {{json message}}}'\n";
    let set = build_ok(yaml);

    let fine = progressing("podinfo", "default");
    let got = deliveries(&set, &MatchInput::event(&fine), None);
    assert_eq!(
        json_of(&got[0].2),
        json!({"text": "Advance podinfo.default canary weight 10"})
    );

    let quoted = event(
        "podinfo",
        "default",
        "Progressing",
        r#"Halt advancement no values found for metric "request-success-rate""#,
        EventType::Warning,
    );
    let results = set.notifications(&MatchInput::event(&quoted), None);
    assert_eq!(results.len(), 2);
    let failure = results[0].as_ref().unwrap_err();
    assert_eq!(set.receiver(failure.policy, failure.receiver).name, "naive");
    assert!(
        failure
            .error
            .reason
            .starts_with("body template rendered invalid JSON: "),
        "{}",
        failure.error
    );
    let delivered = results[1].as_ref().unwrap();
    assert_eq!(
        set.receiver(delivered.policy, delivered.receiver).name,
        "safe"
    );
    assert_eq!(
        json_of(&delivered.body),
        json!({"text": "Halt advancement no values found for metric \"request-success-rate\""})
    );
}

#[test]
fn teams_message_card_and_adaptive_card_from_yaml() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: ClusterNotificationPolicy\nmetadata:\n  name: teams\nspec:\n  receivers:\n    - name: legacy\n      msteams:\n        url: https://hooks.example.com/1\n        format: MessageCard\n    - name: workflows\n      msteams:\n        url: https://hooks.example.com/2\n";
    let set = build_ok(yaml);
    let ev = event(
        "podinfo",
        "default",
        "WaitingPromotion",
        "Canary promotion is waiting for approval.",
        EventType::Normal,
    );
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    assert_eq!(got.len(), 2);
    let card = json_of(&got[0].2);
    assert_eq!(card["@type"], "MessageCard");
    assert_eq!(card["themeColor"], "FFA500");
    let adaptive = json_of(&got[1].2);
    assert_eq!(adaptive["type"], "message");
    assert_eq!(
        adaptive["attachments"][0]["content"]["body"][0]["color"], "warning",
        "format defaults to AdaptiveCard"
    );
}

#[test]
fn canary_progress_is_available_when_the_controller_knows_the_canary() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: progress\nspec:\n  template:\n    text: \"{{message}}{{#if canary}} (weight {{canary.weight}}, app {{canary.labels.app}}){{/if}}\"\n  receivers:\n    - name: s\n      slack:\n        url: https://hooks.example.com/s\n";
    let set = build_ok(yaml);
    let ev = progressing("podinfo", "default");
    let text = |input: &MatchInput<'_>| {
        let got = deliveries(&set, input, None);
        json_of(&got[0].2)["attachments"][0]["text"].clone()
    };
    // Over HTTP nothing is known of the Canary.
    assert_eq!(
        text(&MatchInput::event(&ev)),
        "Advance podinfo.default canary weight 10"
    );
    let mut facts = canary(&[("app", "podinfo")]);
    facts.weight = Some(30);
    let input = MatchInput {
        event: &ev,
        canary: Some(&facts),
        namespace_labels: None,
    };
    assert_eq!(
        text(&input),
        "Advance podinfo.default canary weight 10 (weight 30, app podinfo)"
    );
}

#[test]
fn teams_format_is_detected_from_the_url_unless_set() {
    let yaml = r#"
apiVersion: v1
kind: Secret
metadata: {name: teams, namespace: herald}
stringData:
  legacy: https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d
---
apiVersion: herald.dev/v1alpha1
kind: ClusterNotificationPolicy
metadata:
  name: teams
spec:
  receivers:
    - name: connector
      msteams: {url: "https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d"}
    - name: old-connector
      msteams: {url: "https://outlook.office.com/webhook/a@b/IncomingWebhook/c/d"}
    - name: connector-from-secret
      msteams: {secretRef: {name: teams, key: legacy}}
    - name: workflows
      msteams: {url: "https://prod-01.westeurope.logic.azure.com:443/workflows/x/triggers/manual/paths/invoke?sig=s"}
    - name: power-automate
      msteams: {url: "https://x.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/y"}
    - name: connector-told-adaptive
      msteams: {url: "https://contoso.webhook.office.com/webhookb2/z", format: AdaptiveCard}
    - name: workflows-told-messagecard
      msteams: {url: "https://prod-01.westeurope.logic.azure.com/workflows/z", format: MessageCard}
"#;
    let set = build_ok(yaml);
    let policy = &set.policies()[0];
    let formats: Vec<(&str, TeamsFormat)> = policy
        .receivers
        .iter()
        .map(|r| {
            let teams = r.kind.as_any().downcast_ref::<Teams>().unwrap();
            (r.name.as_str(), teams.format)
        })
        .collect();
    let teams = |format: TeamsFormat| format;
    assert_eq!(
        formats,
        [
            ("connector", teams(TeamsFormat::MessageCard)),
            ("old-connector", teams(TeamsFormat::MessageCard)),
            ("connector-from-secret", teams(TeamsFormat::MessageCard)),
            ("workflows", teams(TeamsFormat::AdaptiveCard)),
            ("power-automate", teams(TeamsFormat::AdaptiveCard)),
            ("connector-told-adaptive", teams(TeamsFormat::AdaptiveCard)),
            (
                "workflows-told-messagecard",
                teams(TeamsFormat::MessageCard)
            ),
        ]
    );
    // And the bodies follow.
    let ev = progressing("podinfo", "default");
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    let kinds: Vec<(&str, bool)> = got
        .iter()
        .map(|(_, receiver, body)| {
            let body = json_of(body);
            (receiver.as_str(), body["@type"] == "MessageCard")
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("connector", true),
            ("old-connector", true),
            ("connector-from-secret", true),
            ("workflows", false),
            ("power-automate", false),
            ("connector-told-adaptive", false),
            ("workflows-told-messagecard", true),
        ]
    );
    for (_, receiver, body) in &got {
        let body = json_of(body);
        if body["@type"] != "MessageCard" {
            assert_eq!(
                body["attachments"][0]["content"]["version"], "1.4",
                "{receiver}"
            );
        }
    }
}

#[test]
fn chat_kinds_from_yaml_get_their_exact_bodies() {
    let yaml = r##"
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata:
  name: chat
  namespace: default
spec:
  template:
    title: "{{name}}.{{namespace}} ({{severity}})"
  receivers:
    - name: discord
      discord:
        url: https://discord.example.com/api/webhooks/1/token
        username: herald
        avatarUrl: https://example.com/herald.png
    - name: gchat
      googlechat:
        url: https://chat.example.com/v1/spaces/A/messages?key=k&token=t
      template:
        text: "*{{message}}*"
    - name: rocket
      rocketchat:
        url: https://rocket.example.com/hooks/a/b
        channel: "#deploys"
        username: herald
        iconEmoji: ":rocket:"
"##;
    let set = build_ok(yaml);
    let ev = event(
        "podinfo",
        "default",
        "Failed",
        "Canary failed! Scaling down podinfo.default",
        EventType::Warning,
    );
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    let bodies: Vec<(&str, Value)> = got
        .iter()
        .map(|(_, receiver, body)| (receiver.as_str(), json_of(body)))
        .collect();
    assert_eq!(
        bodies,
        [
            (
                "discord",
                json!({
                    "username": "herald",
                    "avatar_url": "https://example.com/herald.png",
                    "embeds": [{
                        "title": "podinfo.default (error)",
                        "description": "Canary failed! Scaling down podinfo.default",
                        "color": 0xFF0000,
                        "fields": [{"name": "Phase", "value": "Failed", "inline": true}],
                        "timestamp": "2025-11-25T12:00:00Z"
                    }],
                    "allowed_mentions": {"parse": []}
                })
            ),
            (
                "gchat",
                json!({
                    "fallbackText": "podinfo.default (error) *Canary failed! Scaling down podinfo.default*",
                    "cardsV2": [{
                        "cardId": "herald",
                        "card": {
                            "header": {"title": "podinfo.default (error)"},
                            "sections": [{"widgets": [
                                {"textParagraph": {"text": "*Canary failed! Scaling down podinfo.default*"}},
                                {"decoratedText": {"topLabel": "Phase", "text": "<font color=\"#FF0000\">Failed</font>"}}
                            ]}]
                        }
                    }]
                })
            ),
            (
                "rocket",
                json!({
                    "channel": "#deploys",
                    "alias": "herald",
                    "emoji": ":rocket:",
                    "text": "podinfo.default (error)",
                    "attachments": [{
                        "text": "Canary failed! Scaling down podinfo.default",
                        "color": "#FF0000",
                        "fields": [{"title": "Phase", "value": "Failed", "short": true}],
                        "ts": "2025-11-25T12:00:00Z"
                    }]
                })
            ),
        ]
    );
    let types: Vec<&str> = set.policies()[0]
        .receivers
        .iter()
        .map(|r| r.type_name)
        .collect();
    assert_eq!(types, ["discord", "googlechat", "rocketchat"]);
}

/// Google Chat threads a rollout by `thread.threadKey` (canary and revision) and asks Chat to
/// reply in that thread; with `threads: false`, or when the revision is unknown, messages
/// stand alone.
#[test]
fn google_chat_threads_each_rollout_unless_told_not_to() {
    let set = build_ok(
        r#"
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: chat, namespace: default}
spec:
  receivers:
    - name: threaded
      googlechat:
        url: "https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token=t#x"
    - name: flat
      googlechat:
        url: https://chat.googleapis.com/v1/spaces/BBB/messages
        threads: false
    - name: already
      googlechat:
        url: https://chat.googleapis.com/v1/spaces/CCC/messages?messageReplyOption=REPLY_MESSAGE_OR_FAIL
"#,
    );
    let urls: Vec<&str> = set.policies()[0]
        .receivers
        .iter()
        .map(|r| r.url.expose())
        .collect();
    assert_eq!(
        urls,
        [
            "https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token=t&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD#x",
            "https://chat.googleapis.com/v1/spaces/BBB/messages",
            "https://chat.googleapis.com/v1/spaces/CCC/messages?messageReplyOption=REPLY_MESSAGE_OR_FAIL",
        ]
    );
    // The thread is chosen when the message is sent (it depends on the canary's current
    // thread); the rendered delivery says which canary's thread and with which revision.
    let with_revision = progressing("podinfo", "default").with_checksum("7c4d5e6f8");
    let threads: Vec<Option<(bool, String, Option<String>)>> = set
        .notifications(&MatchInput::event(&with_revision), None)
        .into_iter()
        .map(|d| {
            let d = d.unwrap();
            assert_eq!(json_of(&d.body).get("thread"), None);
            d.thread
                .map(|t| (t.scope.starts_with("googlechat/"), t.key(), t.revision))
        })
        .collect();
    assert_eq!(threads.len(), 3);
    let (is_google, key, revision) = threads[0].clone().expect("threaded");
    assert!(is_google && key.ends_with("/default/podinfo"), "{key}");
    assert_eq!(revision.as_deref(), Some("7c4d5e6f8"));
    assert_eq!(threads[1], None, "threads: false");
    // Two webhooks, two scopes: their threads are kept apart.
    assert_ne!(
        threads[0].as_ref().unwrap().1,
        threads[2].as_ref().unwrap().1
    );
    // In a cluster an event without a checksum takes the Canary's revision.
    let no_checksum = progressing("podinfo", "default");
    let canary = herald_core::CanaryFacts {
        revision: Some("rev-9".into()),
        ..Default::default()
    };
    let input = MatchInput {
        canary: Some(&canary),
        ..MatchInput::event(&no_checksum)
    };
    let first = set.notifications(&input, None).remove(0).unwrap();
    assert_eq!(first.thread.unwrap().revision.as_deref(), Some("rev-9"));
}
