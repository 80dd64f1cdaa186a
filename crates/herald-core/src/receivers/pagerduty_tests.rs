//! PagerDuty's bodies, and the routing key added only to the request.

use herald_api::EventType;
use serde_json::{json, Value};

use super::*;
use crate::{load_sources, FlaggerEvent, MatchInput, PolicySet};

const POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: pd, namespace: default}
stringData: {routingKey: R0UT1NGKEY0123456789abcdefABCDEF}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: oncall, namespace: default}
spec:
  receivers:
    - name: pager
      pagerduty:
        routingKeySecretRef: {name: pd}
        severity: {error: error}
"#;

fn set(cluster: &str) -> PolicySet {
    let mut loaded = load_sources([("p.yaml", POLICY)]);
    let set = loaded.build(cluster, "default");
    assert_eq!(loaded.problems, []);
    set
}

fn bodies(set: &PolicySet, ev: &FlaggerEvent) -> Vec<Vec<u8>> {
    set.notifications(&MatchInput::event(ev), None)
        .into_iter()
        .map(|n| n.unwrap().body)
        .collect()
}

fn event(phase: &str, message: &str) -> FlaggerEvent {
    FlaggerEvent::new(
        "podinfo",
        "default",
        phase,
        message,
        EventType::Warning,
        1_578_607_635_167,
    )
    .with_checksum("abc123")
}

#[test]
fn a_rollback_triggers_with_the_canary_key_and_no_routing_key() {
    let set = set("prod-eu");
    let got = bodies(
        &set,
        &event(
            "Progressing",
            "Rolling back podinfo.default failed checks threshold reached 5",
        ),
    );
    assert_eq!(got.len(), 1);
    let text = String::from_utf8(got[0].clone()).unwrap();
    assert!(!text.contains("R0UT1NGKEY"), "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({
            "event_action": "trigger",
            "dedup_key": "herald/prod-eu/default/podinfo",
            "payload": {
                "summary": "[prod-eu] podinfo.default: Rolling back podinfo.default failed checks threshold reached 5",
                "source": "prod-eu",
                "severity": "error",
                "timestamp": "2020-01-09T22:07:15.167Z",
                "component": "podinfo",
                "group": "default",
                "class": "canary",
                "custom_details": {
                    "phase": "Progressing",
                    "revision": "abc123",
                    "cluster": "prod-eu",
                    "message": "Rolling back podinfo.default failed checks threshold reached 5"
                }
            },
            "client": "Herald"
        })
    );
    // The request carries the key, first, and the rest byte for byte.
    let receiver = set.receiver(0, 0);
    let plan = receiver.kind.plan(&got[0], None, None);
    let sent = plan.request.body.unwrap();
    assert_eq!(
        String::from_utf8(sent).unwrap(),
        format!(
            "{{\"routing_key\":\"R0UT1NGKEY0123456789abcdefABCDEF\",{}",
            &text[1..]
        )
    );
    assert_eq!(
        receiver.url.expose(),
        "https://events.pagerduty.com/v2/enqueue"
    );
}

#[test]
fn a_promotion_resolves_and_progress_sends_nothing() {
    let set = set("");
    let got = bodies(
        &set,
        &event(
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
        ),
    );
    assert_eq!(
        got,
        [br#"{"event_action":"resolve","dedup_key":"herald//default/podinfo"}"#.to_vec()]
    );
    // `wants`: the events in between get no notification at all.
    for message in [
        "New revision detected! Scaling up podinfo.default",
        "Advance podinfo.default canary weight 20",
    ] {
        assert!(
            set.notifications(&MatchInput::event(&event("Progressing", message)), None)
                .is_empty(),
            "{message}"
        );
    }
}

#[test]
fn the_summary_is_cut_to_its_limit_and_the_source_defaults_to_herald() {
    let set = set("");
    let long = format!("Canary failed! {}", "é".repeat(2_000));
    let got = bodies(&set, &event("Failed", &long));
    let body: Value = serde_json::from_slice(&got[0]).unwrap();
    let summary = body["payload"]["summary"].as_str().unwrap();
    assert_eq!(summary.chars().count(), SUMMARY_LIMIT);
    assert!(summary.ends_with(super::super::TRUNCATION_NOTE));
    assert_eq!(body["payload"]["source"], "herald");
    assert_eq!(body["payload"]["custom_details"].get("cluster"), None);
}

#[test]
fn check_names_the_fields() {
    let policy = r#"
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: oncall, namespace: default}
spec:
  receivers:
    - name: no-key
      pagerduty: {apiUrl: "ftp://x", source: ""}
    - name: missing-secret
      pagerduty: {routingKeySecretRef: {name: absent}}
"#;
    let mut loaded = load_sources([("p.yaml", policy)]);
    let set = loaded.build("", "default");
    let paths: Vec<String> = set
        .problems()
        .values()
        .flatten()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        paths,
        [
            "spec.receivers[0].pagerduty.apiUrl: must be an http:// or https:// URL with a host",
            "spec.receivers[0].pagerduty.source: must not be empty",
            "spec.receivers[0].pagerduty.routingKeySecretRef: required: the Secret key holding the integration's routing key",
            "spec.receivers[1].pagerduty.routingKeySecretRef: Secret default/absent not found",
        ]
    );
}

#[test]
fn change_events_follow_a_promotions_resolve_only() {
    let policy = POLICY.replace("severity: {error: error}", "changeEvents: true");
    let mut loaded = load_sources([("p.yaml", policy.as_str())]);
    let set = loaded.build("prod-eu", "default");
    assert_eq!(loaded.problems, []);
    let receiver = set.receiver(0, 0);
    let promoted = "Promotion completed! Scaling down podinfo.default";
    let got = bodies(&set, &event("Succeeded", promoted));
    // The rendered body (`herald render`) shows both, without the routing key.
    let rendered: Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(rendered["event_action"], "resolve");
    assert_eq!(rendered["change"]["source"], "prod-eu");
    let plan = receiver.kind.plan(&got[0], None, None);
    assert_eq!(
        String::from_utf8(plan.request.body.unwrap()).unwrap(),
        r#"{"routing_key":"R0UT1NGKEY0123456789abcdefABCDEF","event_action":"resolve","dedup_key":"herald/prod-eu/default/podinfo"}"#
    );
    let change = plan.follow_up.expect("a change event");
    assert_eq!(
        change.url.unwrap().expose(),
        "https://events.pagerduty.com/v2/change/enqueue"
    );
    assert_eq!(
        String::from_utf8(change.body.unwrap()).unwrap(),
        format!(
            r#"{{"routing_key":"R0UT1NGKEY0123456789abcdefABCDEF","payload":{{"summary":"[prod-eu] podinfo.default: {promoted}","timestamp":"2020-01-09T22:07:15.167Z","source":"prod-eu","custom_details":{{"phase":"Succeeded","revision":"abc123","cluster":"prod-eu","message":"{promoted}"}}}}}}"#
        )
    );
    // A failure, and a success that is no promotion, send no change event.
    for (phase, message) in [
        ("Failed", "Canary failed! Scaling down podinfo.default"),
        ("Succeeded", "Copying podinfo.default template spec"),
    ] {
        let got = bodies(&set, &event(phase, message));
        let plan = receiver.kind.plan(&got[0], None, None);
        assert_eq!(plan.follow_up, None, "{message}");
    }
}

#[test]
fn a_watched_canary_adds_its_weight_and_failed_checks() {
    let set = set("");
    let ev = FlaggerEvent::new(
        "podinfo",
        "default",
        "Failed",
        "Canary failed! Scaling down podinfo.default",
        EventType::Warning,
        1_578_607_635_167,
    );
    // No checksum in a watched Event: the Canary's revision stands in.
    let body = super::super::test_support::watched_body(
        &set,
        &ev,
        &super::super::test_support::failed_canary(),
    );
    assert_eq!(
        body["payload"]["custom_details"],
        json!({
            "phase": "Failed",
            "revision": "7c4d1a2f",
            "weight": 0,
            "failed_checks": 5,
            "message": "Canary failed! Scaling down podinfo.default"
        })
    );
}
