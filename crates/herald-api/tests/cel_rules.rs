//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated the way an API server would,
//! with kube's client-side CEL validator. Admission rejects these objects in a cluster.

use herald_api::{ClusterNotificationPolicy, NotificationPolicy};
use serde_json::json;

fn policy(receivers: serde_json::Value) -> NotificationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"receivers": receivers}
    }))
    .unwrap()
}

fn errors(policy: &NotificationPolicy) -> String {
    match kube::core::cel::validate_cel(policy) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_policy_passes() {
    let ok = policy(json!([
        {"name": "chat", "slack": {"secretRef": {"name": "s"}}},
        {"name": "hook", "webhook": {"url": "https://example.com"}},
        {"name": "teams", "msteams": {"url": "https://example.com"}},
        {"name": "discord", "discord": {"secretRef": {"name": "s", "key": "discord"}, "username": "herald", "avatarUrl": "https://example.com/a.png"}},
        {"name": "gchat", "googlechat": {"url": "https://chat.example.com/v1/spaces/x"}},
        {"name": "rocket", "rocketchat": {"secretRef": {"name": "s"}, "channel": "#deploys", "username": "herald", "iconEmoji": ":rocket:", "iconUrl": "https://example.com/a.png"}}
    ]));
    assert_eq!(errors(&ok), "");
}

#[test]
fn a_receiver_sets_exactly_one_kind() {
    let two = policy(
        json!([{"name": "x", "slack": {"url": "https://a"}, "webhook": {"url": "https://b"}}]),
    );
    let one_kind = herald_api::exactly_one_kind_message();
    assert!(errors(&two).contains(&one_kind), "{}", errors(&two));
    let none = policy(json!([{"name": "x"}]));
    assert!(errors(&none).contains(&one_kind), "{}", errors(&none));
}

/// The least a kind's settings need: a URL, or the API kinds' credential.
fn minimal_settings(kind: &str) -> serde_json::Value {
    match kind {
        "pagerduty" => json!({"routingKeySecretRef": {"name": "s"}}),
        "opsgenie" => json!({"apiKeySecretRef": {"name": "s"}}),
        "telegram" => json!({"tokenSecretRef": {"name": "s"}, "chatId": "@c"}),
        "webex" => json!({"tokenSecretRef": {"name": "s"}, "roomId": "r"}),
        "grafana" => json!({"url": "https://a", "tokenSecretRef": {"name": "s"}}),
        _ => json!({"url": "https://a"}),
    }
}

#[test]
fn the_new_kinds_count_as_kinds() {
    let one_kind = herald_api::exactly_one_kind_message();
    let kinds: Vec<(&str, serde_json::Value)> = herald_api::RECEIVER_KINDS
        .iter()
        .map(|kind| (*kind, minimal_settings(kind)))
        .collect();
    for (i, (first, a)) in kinds.iter().enumerate() {
        let alone = policy(json!([{"name": "x", *first: a}]));
        assert_eq!(errors(&alone), "", "{first} alone");
        for (second, b) in &kinds[i + 1..] {
            let both = policy(json!([{"name": "x", *first: a, *second: b}]));
            let e = errors(&both);
            assert!(e.contains(&one_kind), "{first} + {second}: {e}");
        }
    }
    let three = policy(json!([{
        "name": "x",
        "discord": {"url": "https://a"},
        "googlechat": {"url": "https://b"},
        "rocketchat": {"url": "https://c"}
    }]));
    assert!(errors(&three).contains(&one_kind), "{}", errors(&three));
}

#[test]
fn an_address_is_a_url_or_a_secret_ref() {
    let both =
        policy(json!([{"name": "x", "msteams": {"url": "https://a", "secretRef": {"name": "s"}}}]));
    assert!(
        errors(&both).contains("set exactly one of url, secretRef"),
        "{}",
        errors(&both)
    );
    let neither = policy(json!([{"name": "x", "webhook": {}}]));
    assert!(
        errors(&neither).contains("set exactly one of url, secretRef"),
        "{}",
        errors(&neither)
    );
    for kind in ["discord", "googlechat", "rocketchat"] {
        let both =
            policy(json!([{"name": "x", kind: {"url": "https://a", "secretRef": {"name": "s"}}}]));
        assert!(
            errors(&both).contains("set exactly one of url, secretRef"),
            "{kind}: {}",
            errors(&both)
        );
        let neither = policy(json!([{"name": "x", kind: {}}]));
        assert!(
            errors(&neither).contains("set exactly one of url, secretRef"),
            "{kind}: {}",
            errors(&neither)
        );
    }
}

#[test]
fn cluster_policies_have_the_same_rules() {
    let cluster: ClusterNotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "ClusterNotificationPolicy",
        "metadata": {"name": "c"},
        "spec": {"namespaceSelector": {"matchNames": ["team-*"]}, "receivers": [{"name": "x", "webhook": {}}]}
    }))
    .unwrap();
    let e = kube::core::cel::validate_cel(&cluster)
        .unwrap_err()
        .to_string();
    assert!(e.contains("set exactly one of url, secretRef"), "{e}");
}

#[test]
fn a_slack_bot_has_a_token_and_a_channel() {
    let ok = policy(json!([
        {"name": "bot", "slack": {"tokenSecretRef": {"name": "s"}, "channel": "C0123"}}
    ]));
    assert_eq!(errors(&ok), "");
    let no_channel = policy(json!([{"name": "bot", "slack": {"tokenSecretRef": {"name": "s"}}}]));
    assert!(
        errors(&no_channel).contains("a bot token (tokenSecretRef) needs a channel"),
        "{}",
        errors(&no_channel)
    );
    let both = policy(json!([
        {"name": "bot", "slack": {"url": "https://a", "tokenSecretRef": {"name": "s"}, "channel": "C1"}}
    ]));
    assert!(
        errors(&both).contains("set exactly one of url, secretRef, tokenSecretRef"),
        "{}",
        errors(&both)
    );
}

#[test]
fn pagerduty_needs_its_routing_key() {
    let none = policy(json!([{"name": "x", "pagerduty": {"apiUrl": "https://a"}}]));
    assert!(
        errors(&none).contains("set routingKeySecretRef"),
        "{}",
        errors(&none)
    );
}

#[test]
fn the_api_kinds_need_their_credentials_and_targets() {
    let cases = [
        (json!({"telegram": {"chatId": "@c"}}), "set tokenSecretRef"),
        (
            json!({"telegram": {"tokenSecretRef": {"name": "s"}}}),
            "set chatId",
        ),
        (json!({"webex": {"roomId": "r"}}), "set tokenSecretRef"),
        (
            json!({"webex": {"tokenSecretRef": {"name": "s"}}}),
            "set roomId",
        ),
        (
            json!({"alertmanager": {"url": "https://a", "secretRef": {"name": "s"}}}),
            "set exactly one of url, secretRef",
        ),
        (
            json!({"alertmanager": {"url": "https://a", "bearerTokenSecretRef": {"name": "s"},
                   "basicAuth": {"username": "u", "passwordSecretRef": {"name": "s"}}}}),
            "set at most one of basicAuth, bearerTokenSecretRef",
        ),
    ];
    for (receiver, message) in cases {
        let mut receiver = receiver;
        receiver["name"] = json!("x");
        let e = errors(&policy(json!([receiver])));
        assert!(e.contains(message), "{receiver}: {e}");
    }
}
