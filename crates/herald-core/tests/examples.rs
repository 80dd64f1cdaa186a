//! The shipped examples (`examples/policies`, `examples/events`) load cleanly and send exactly
//! the notifications they describe, event by event.

mod common;

use std::path::PathBuf;

use common::*;
use herald_core::{load_sources, FlaggerEvent, MatchInput, PolicySet};
use serde_json::{json, Value};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Every file of `examples/policies`, loaded together as `herald --policies examples/policies`
/// would, built with no cluster name and Herald running in `default`.
fn example_policies() -> PolicySet {
    let dir = examples().join("policies");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                text,
            )
        })
        .collect();
    files.sort();
    assert_eq!(
        files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "alertmanager-oncall.yaml",
            "audit-webhook.yaml",
            "discord-releases.yaml",
            "googlechat-team.yaml",
            "grafana-annotations.yaml",
            "mattermost-frontend.yaml",
            "oncall-failures.yaml",
            "opsgenie-oncall.yaml",
            "pagerduty-oncall.yaml",
            "rocketchat-oncall.yaml",
            "secrets.yaml",
            "signed-webhook.yaml",
            "slack-bot-threads.yaml",
            "team-slack.yaml",
            "teams-messagecard.yaml",
            "telegram-releases.yaml",
            "webex-room.yaml"
        ],
        "the examples changed: update this test"
    );
    let mut loaded = load_sources(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
    let set = loaded.build("", "default");
    assert_eq!(loaded.problems, [], "the examples must check clean");
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    assert_eq!(loaded.secrets.len(), 11);
    set
}

fn events(file: &str) -> Vec<(String, FlaggerEvent)> {
    let path = examples().join("events").join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let event = FlaggerEvent::from_json(line.as_bytes())
                .unwrap_or_else(|e| panic!("{file}: {e}: {line}"));
            (line.to_owned(), event)
        })
        .collect()
}

const AUDIT: [(&str, &str); 2] = [
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
];
const AUDIT_AND_SLACK: [(&str, &str); 3] = [
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
    ("default/team-payments", "deploys-channel"),
];
/// New revision detected: the team's Slack channel and Google Chat space too.
const NEW_REVISION: [(&str, &str); 4] = [
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
    ("default/team-gchat", "team-space"),
    ("default/team-payments", "deploys-channel"),
];
/// Promotion completed: the releases Discord channel as well.
const PROMOTED: [(&str, &str); 5] = [
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
    ("default/releases", "releases-discord"),
    ("default/team-gchat", "team-space"),
    ("default/team-payments", "deploys-channel"),
];
/// A Warning that is not a failure: on-call Rocket.Chat, and the audit log.
const HALT: [(&str, &str); 3] = [
    ("oncall-rocketchat", "oncall-rocket"),
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
];
const ROLLING_BACK: [(&str, &str); 5] = [
    ("oncall-failures", "oncall-teams"),
    ("oncall-rocketchat", "oncall-rocket"),
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
    ("default/team-payments", "deploys-channel"),
];
const FAILED: [(&str, &str); 7] = [
    ("oncall-failures", "oncall-teams"),
    ("oncall-rocketchat", "oncall-rocket"),
    ("default/audit", "audit-log"),
    ("default/audit", "audit-summary"),
    ("default/releases", "releases-discord"),
    ("default/team-gchat", "team-space"),
    ("default/team-payments", "deploys-channel"),
];

fn body_of(deliveries: &[(String, String, Vec<u8>)], receiver: &str) -> Value {
    let (_, _, body) = deliveries
        .iter()
        .find(|(_, r, _)| r == receiver)
        .unwrap_or_else(|| panic!("no delivery to {receiver}"));
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{receiver} body is not JSON: {e}"))
}

/// For each event: the exact (policy, receiver) sequence, and the audit-log receiver gets
/// Flagger's JSON byte for byte.
fn assert_sequence(
    file: &str,
    expected: &[&[(&str, &str)]],
) -> Vec<Vec<(String, String, Vec<u8>)>> {
    let set = example_policies();
    let events = events(file);
    assert_eq!(events.len(), expected.len(), "{file}: number of events");
    let mut all = Vec::new();
    for (n, ((line, event), expected)) in events.iter().zip(expected).enumerate() {
        let got = deliveries(&set, &MatchInput::event(event), None);
        let got_pairs: Vec<(String, String)> =
            got.iter().map(|(p, r, _)| (p.clone(), r.clone())).collect();
        assert_eq!(got_pairs, pairs(expected), "{file} line {}: {line}", n + 1);
        let (_, _, audit_log) = got
            .iter()
            .find(|(_, r, _)| r == "audit-log")
            .expect("the audit policy takes every event");
        assert_eq!(
            String::from_utf8_lossy(audit_log),
            line.as_str(),
            "{file} line {}: audit-log must forward Flagger's JSON unchanged",
            n + 1
        );
        all.push(got);
    }
    all
}

#[test]
fn examples_check_clean_and_resolve_their_secrets() {
    let set = example_policies();
    let ids: Vec<String> = set.policies().iter().map(|p| p.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "oncall-failures",
            "oncall-rocketchat",
            "default/audit",
            "default/frontend-mattermost",
            "default/releases",
            "default/search-telegram",
            "default/search-webex",
            "default/team-gchat",
            "default/team-payments",
            "payments/payments-alertmanager",
            "payments/payments-grafana",
            "payments/payments-opsgenie",
            "payments/payments-pagerduty",
            "payments/payments-rollouts",
            "payments/payments-tracker",
            "staging/staging-teams"
        ]
    );
    let urls: Vec<(String, &str, &str)> = set
        .policies()
        .iter()
        .flat_map(|p| {
            p.receivers
                .iter()
                .map(|r| (r.name.clone(), r.type_name, r.url.expose()))
        })
        .collect();
    assert_eq!(
        urls,
        [
            (
                "oncall-teams".to_owned(),
                "msteams",
                "http://127.0.0.1:9099/teams/oncall"
            ),
            (
                "oncall-rocket".to_owned(),
                "rocketchat",
                "http://127.0.0.1:9099/rocketchat/oncall"
            ),
            (
                "audit-log".to_owned(),
                "webhook",
                "http://127.0.0.1:9099/audit"
            ),
            (
                "audit-summary".to_owned(),
                "webhook",
                "http://127.0.0.1:9099/audit"
            ),
            (
                "frontend-channel".to_owned(),
                "mattermost",
                "http://127.0.0.1:9099/mattermost/frontend"
            ),
            (
                "releases-discord".to_owned(),
                "discord",
                "http://127.0.0.1:9099/discord/releases"
            ),
            (
                "search-topic".to_owned(),
                "telegram",
                "http://127.0.0.1:9099/telegram/bot123456789:demo-not-a-real-telegram-token/sendMessage"
            ),
            (
                "search-room".to_owned(),
                "webex",
                "http://127.0.0.1:9099/webex/v1/messages"
            ),
            (
                "team-space".to_owned(),
                "googlechat",
                "http://127.0.0.1:9099/googlechat/team?messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
            ),
            (
                "deploys-channel".to_owned(),
                "slack",
                "http://127.0.0.1:9099/slack/deploys"
            ),
            (
                "payments-alerts".to_owned(),
                "alertmanager",
                "http://127.0.0.1:9099/alertmanager/api/v2/alerts"
            ),
            (
                "payments-dashboard".to_owned(),
                "grafana",
                "http://127.0.0.1:9099/grafana/api/annotations"
            ),
            (
                "payments-genie".to_owned(),
                "opsgenie",
                "http://127.0.0.1:9099/opsgenie/v2/alerts"
            ),
            (
                "payments-oncall".to_owned(),
                "pagerduty",
                "http://127.0.0.1:9099/pagerduty/v2/enqueue"
            ),
            (
                "rollout-threads".to_owned(),
                "slack",
                "http://127.0.0.1:9099/slack-api/chat.postMessage"
            ),
            (
                "tracker".to_owned(),
                "webhook",
                "http://127.0.0.1:9099/tracker/deploys"
            ),
            (
                "staging-connector".to_owned(),
                "msteams",
                "http://127.0.0.1:9099/teams/staging"
            ),
        ]
    );
}

#[test]
fn rollout_notifies_the_team_and_the_audit_log() {
    let all = assert_sequence(
        "rollout.jsonl",
        &[
            &AUDIT_AND_SLACK, // Initialization done!
            &NEW_REVISION,    // New revision detected!
            &AUDIT,           // Starting canary analysis
            &AUDIT,           // Advance … weight 10
            &AUDIT,           // Advance … weight 20
            &AUDIT,           // Copying … template spec (Promoting)
            &AUDIT,           // Routing all traffic to primary (Finalising)
            &PROMOTED,        // Promotion completed!
        ],
    );

    // Promotion completed: Slack in Flagger's layout, green.
    assert_eq!(
        body_of(&all[7], "deploys-channel"),
        json!({
            "channel": "#deploys",
            "username": "herald",
            "icon_emoji": ":rocket:",
            "attachments": [{
                "color": "good",
                "fallback": "podinfo.default Promotion completed! Scaling down podinfo.default",
                "author_name": "podinfo.default",
                "text": "Promotion completed! Scaling down podinfo.default",
                "mrkdwn_in": ["text"],
                "fields": [{"title": "Phase", "value": "Succeeded", "short": true}],
                "ts": 1764072420
            }]
        })
    );
    // Promotion completed: Discord gets one green embed, titled by the policy's template.
    assert_eq!(
        body_of(&all[7], "releases-discord"),
        json!({
            "username": "herald",
            "embeds": [{
                "title": "podinfo.default released",
                "description": "Promotion completed! Scaling down podinfo.default",
                "color": 0x2EB886,
                "fields": [{"name": "Phase", "value": "Succeeded", "inline": true}],
                "timestamp": "2025-11-25T12:07:00Z"
            }],
            "allowed_mentions": {"parse": []}
        })
    );
    // New revision: Google Chat gets one card (its thread is added when it is sent). Flagger
    // sends this message with the previous rollout's phase and checksum: the card shows the
    // phase as sent, coloured as progress.
    assert_eq!(
        body_of(&all[1], "team-space"),
        json!({
            "fallbackText": "podinfo.default New revision detected! Scaling up podinfo.default",
            "cardsV2": [{
                "cardId": "herald",
                "card": {
                    "header": {"title": "podinfo.default"},
                    "sections": [{"widgets": [
                        {"textParagraph": {"text": "New revision detected! Scaling up podinfo.default"}},
                        {"decoratedText": {"topLabel": "Phase", "text": "<font color=\"#0076D7\">Initialized</font>"}}
                    ]}]
                }
            }]
        })
    );
    // Initialization: the info colour.
    assert_eq!(
        body_of(&all[0], "deploys-channel")["attachments"][0]["color"],
        "#0076D7"
    );
    // The body template is written over two lines for people; the receiver gets it compact,
    // keys in the template's order.
    let (_, _, summary) = all[1]
        .iter()
        .find(|(_, r, _)| r == "audit-summary")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(summary),
        r#"{"canary":"podinfo.default","phase":"Initialized","severity":"info","text":"New revision detected! Scaling up podinfo.default","at":"2025-11-25T12:01:00Z","revision":"6b8c9d7f5"}"#
    );
    assert_eq!(
        body_of(&all[1], "audit-summary"),
        json!({
            "canary": "podinfo.default",
            "phase": "Initialized",
            "severity": "info",
            "text": "New revision detected! Scaling up podinfo.default",
            "at": "2025-11-25T12:01:00Z",
            "revision": "6b8c9d7f5"
        })
    );
}

#[test]
fn rollback_pages_oncall() {
    let all = assert_sequence(
        "rollback.jsonl",
        &[
            &NEW_REVISION, // New revision detected!
            &AUDIT,        // Starting canary analysis
            &AUDIT,        // Advance … weight 10
            &HALT,         // Halt advancement (Warning, but not a failure)
            &ROLLING_BACK, // Rolling back …
            &FAILED,       // Canary failed!
        ],
    );

    assert_eq!(
        body_of(&all[4], "oncall-teams"),
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "Rollout of podinfo.default failed",
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": "attention",
                            "wrap": true
                        },
                        {
                            "type": "TextBlock",
                            "text": "Rolling back podinfo.default failed checks threshold reached 5 (phase Progressing, 2025-11-25T13:04:00Z)",
                            "wrap": true
                        },
                        {"type": "FactSet", "facts": [{"title": "Phase", "value": "Progressing"}]}
                    ]
                }
            }]
        })
    );
    assert_eq!(
        body_of(&all[5], "deploys-channel"),
        json!({
            "channel": "#deploys",
            "username": "herald",
            "icon_emoji": ":rocket:",
            "attachments": [{
                "color": "danger",
                "fallback": "podinfo.default Canary failed! Scaling down podinfo.default",
                "author_name": "podinfo.default",
                "text": "Canary failed! Scaling down podinfo.default",
                "mrkdwn_in": ["text"],
                "fields": [{"title": "Phase", "value": "Failed", "short": true}],
                "ts": 1764075900
            }]
        })
    );
    // The halt is a warning for on-call Rocket.Chat, not a failure.
    assert_eq!(
        body_of(&all[3], "oncall-rocket"),
        json!({
            "channel": "#oncall",
            "alias": "herald",
            "emoji": ":rotating_light:",
            "text": "podinfo.default",
            "attachments": [{
                "text": "Halt advancement no values found for istio metric request-success-rate probably podinfo.default is not receiving traffic",
                "color": "#FFA500",
                "fields": [{"title": "Phase", "value": "Progressing", "short": true}],
                "ts": "2025-11-25T13:03:00Z"
            }]
        })
    );
    assert_eq!(
        body_of(&all[5], "oncall-rocket")["attachments"][0]["color"],
        "#FF0000"
    );
    assert_eq!(
        body_of(&all[5], "releases-discord")["embeds"][0]["title"],
        "podinfo.default rolled back"
    );
    assert_eq!(
        body_of(&all[5], "audit-summary"),
        json!({
            "canary": "podinfo.default",
            "phase": "Failed",
            "severity": "error",
            "text": "Canary failed! Scaling down podinfo.default",
            "at": "2025-11-25T13:05:00Z",
            "revision": "9e1f2a3b4"
        })
    );
}

#[test]
fn staging_gets_message_cards_for_its_phases_only() {
    let set = example_policies();
    let at = |phase: &str, message: &str| {
        let ev = FlaggerEvent::from_json(
            format!(
                r#"{{"name":"web","namespace":"staging","phase":"{phase}","metadata":{{"eventMessage":"{message}","eventType":"Normal","timestamp":"1764072000000"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        deliveries(&set, &MatchInput::event(&ev), None)
    };
    assert!(at("Progressing", "Advance web.staging canary weight 10").is_empty());
    let done = at("Succeeded", "Promotion completed! Scaling down web.staging");
    let got: Vec<(&str, &str)> = done
        .iter()
        .map(|(p, r, _)| (p.as_str(), r.as_str()))
        .collect();
    assert_eq!(got, [("staging/staging-teams", "staging-connector")]);
    assert_eq!(
        serde_json::from_slice::<Value>(&done[0].2).unwrap(),
        json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": "2EB886",
            "summary": "web.staging Promotion completed! Scaling down web.staging",
            "sections": [{
                "activityTitle": "Promotion completed! Scaling down web.staging",
                "activitySubtitle": "web.staging",
                "facts": [{"name": "Phase", "value": "Succeeded"}]
            }]
        })
    );
}

#[test]
fn new_revision_example_event() {
    let set = example_policies();
    let path = examples().join("events/new-revision.json");
    let text = std::fs::read_to_string(path).unwrap();
    let ev = FlaggerEvent::from_json(text.trim_end().as_bytes()).unwrap();
    let got = deliveries(&set, &MatchInput::event(&ev), None);
    let got_pairs: Vec<(String, String)> =
        got.iter().map(|(p, r, _)| (p.clone(), r.clone())).collect();
    assert_eq!(got_pairs, pairs(&NEW_REVISION));
    assert_eq!(got[0].2, text.trim_end().as_bytes());
}

#[test]
fn payments_rollouts_thread_in_slack_and_failures_reach_the_signed_tracker() {
    let set = example_policies();
    let at = |phase: &str, message: &str, event_type: &str| {
        let ev = FlaggerEvent::from_json(
            format!(
                r#"{{"name":"checkout","namespace":"payments","phase":"{phase}","checksum":"5a6b7c","metadata":{{"eventMessage":"{message}","eventType":"{event_type}","timestamp":"1764075900000"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let rendered = set.notifications(&MatchInput::event(&ev), None);
        rendered
            .into_iter()
            .map(|d| d.unwrap())
            .map(|d| {
                let policy = set.policy(d.policy);
                let receiver = &policy.receivers[d.receiver as usize];
                let headers: Vec<(String, String)> = receiver
                    .request
                    .headers_for(&d.body)
                    .into_iter()
                    .map(|h| (h.name, h.value.expose().to_owned()))
                    .collect();
                (
                    receiver.name.clone(),
                    d.thread.map(|t| {
                        (
                            // The token's fingerprint, then the channel.
                            t.scope.starts_with("slack/") && t.scope.ends_with("/C0123ABCD"),
                            t.key().ends_with("/C0123ABCD/payments/checkout"),
                            t.revision,
                            t.outcome,
                            t.broadcast,
                        )
                    }),
                    headers,
                    serde_json::from_slice::<Value>(&d.body).unwrap(),
                    d.body,
                )
            })
            .collect::<Vec<_>>()
    };
    let progress = at(
        "Progressing",
        "Advance checkout.payments canary weight 10",
        "Normal",
    );
    assert_eq!(progress.len(), 1);
    let (receiver, thread, headers, body, _) = &progress[0];
    assert_eq!(receiver, "rollout-threads");
    assert_eq!(
        thread,
        &Some((true, true, Some("5a6b7c".to_owned()), false, false))
    );
    assert_eq!(
        headers,
        &[(
            "Authorization".to_owned(),
            "Bearer xoxb-demo-not-a-real-token".to_owned()
        )]
    );
    assert_eq!(body["channel"], "C0123ABCD");

    let failed = at(
        "Failed",
        "Canary failed! Scaling down checkout.payments",
        "Warning",
    );
    let receivers: Vec<&str> = failed.iter().map(|(r, ..)| r.as_str()).collect();
    // On-call Rocket.Chat takes every Warning, from every namespace.
    assert_eq!(
        receivers,
        [
            "oncall-teams",
            "oncall-rocket",
            "payments-alerts",
            "payments-genie",
            "payments-oncall",
            "rollout-threads",
            "tracker"
        ]
    );
    assert_eq!(
        failed[5].1,
        Some((true, true, Some("5a6b7c".to_owned()), true, true))
    );
    let (_, _, headers, body, exact) = &failed[6];
    assert_eq!(
        body,
        &json!({"service": "checkout", "namespace": "payments", "revision": "5a6b7c",
                "status": "Failed", "reason": "Canary failed! Scaling down checkout.payments"})
    );
    assert_eq!(
        headers,
        &[
            ("X-Source".to_owned(), "herald".to_owned()),
            (
                "Authorization".to_owned(),
                "Bearer demo-bearer-token".to_owned()
            ),
            (
                "X-Signature".to_owned(),
                herald_core::receivers::http::sign(b"demo-signing-key", exact)
            ),
        ]
    );
}

/// The payments rollback the demo plays: the bot thread gets every step, the signed tracker
/// and Rocket.Chat the warnings, Teams on-call the failures, PagerDuty one incident (its
/// dedup key keeps the second failure in it).
#[test]
fn payments_rollback_example_events() {
    let set = example_policies();
    let expected: [&[(&str, &str)]; 4] = [
        &[("payments/payments-rollouts", "rollout-threads")],
        &[("payments/payments-rollouts", "rollout-threads")],
        &[
            ("oncall-failures", "oncall-teams"),
            ("oncall-rocketchat", "oncall-rocket"),
            ("payments/payments-alertmanager", "payments-alerts"),
            ("payments/payments-opsgenie", "payments-genie"),
            ("payments/payments-pagerduty", "payments-oncall"),
            ("payments/payments-rollouts", "rollout-threads"),
            ("payments/payments-tracker", "tracker"),
        ],
        &[
            ("oncall-failures", "oncall-teams"),
            ("oncall-rocketchat", "oncall-rocket"),
            ("payments/payments-alertmanager", "payments-alerts"),
            ("payments/payments-opsgenie", "payments-genie"),
            ("payments/payments-pagerduty", "payments-oncall"),
            ("payments/payments-rollouts", "rollout-threads"),
            ("payments/payments-tracker", "tracker"),
        ],
    ];
    let events = events("payments-rollback.jsonl");
    assert_eq!(events.len(), expected.len());
    for ((line, event), expected) in events.iter().zip(expected) {
        let got: Vec<(String, String)> = deliveries(&set, &MatchInput::event(event), None)
            .into_iter()
            .map(|(p, r, _)| (p, r))
            .collect();
        assert_eq!(got, pairs(expected), "{line}");
    }
}
