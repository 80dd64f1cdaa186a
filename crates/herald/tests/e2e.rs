//! End to end against a real kube-apiserver (v1.20, with etcd): `tests/e2e/run.sh` starts
//! one on loopback and runs these with `--ignored`. The controller runs in process, notifies a
//! local HTTP sink, and is stopped and started again to check what it remembers.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::slack::{self, FakeSlack};
use common::*;
use herald_api::flagger::Canary;
use herald_api::NotificationPolicy;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn controller_end_to_end() {
    herald::telemetry::init(
        herald::telemetry::LogFormat::Text,
        "info,herald=debug,kube=warn",
    );
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald").await;
    let ns = namespace(&client, "shop").await;
    let sink = Sink::start().await;

    // A policy whose Secret does not exist yet: Ready=False, SecretNotFound.
    let policies: Api<NotificationPolicy> = Api::namespaced(client.clone(), &ns);
    let policy: NotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "team", "namespace": ns},
        "spec": {
            "canaries": ["podinfo"],
            "receivers": [{"name": "chat", "slack": {"secretRef": {"name": "slack-url"}, "channel": "#shop"}}],
            "template": {"text": "{{message}}{{#if canary}} (weight {{canary.weight}}){{/if}}"}
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let mut running = herald::controller::start(client.clone(), controller_options(&herald_ns))
        .await
        .unwrap();
    let status = ready_condition(&policies, "team", "False").await;
    assert_eq!(status["conditions"][0]["reason"], "SecretNotFound");
    assert_eq!(
        status["conditions"][0]["message"],
        format!("spec.receivers[0].slack.secretRef: Secret {ns}/slack-url not found")
    );
    assert_eq!(status["observedGeneration"], 1);

    // The Secret appears: the watch picks it up, the policy becomes Ready.
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("slack-url".into()),
            ..Default::default()
        },
        string_data: Some([("address".to_owned(), sink.url("/slack/T0/s3cr3t"))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let status = ready_condition(&policies, "team", "True").await;
    assert!(
        !status.to_string().contains("s3cr3t"),
        "no secret in the status"
    );

    // Flagger creates the canary and records an Event: one Slack message, with the canary's
    // progress from its status.
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": {"team": "shop"}},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}}
    }))
    .unwrap();
    canaries
        .create(&PostParams::default(), &canary)
        .await
        .unwrap();
    set_phase(&client, &ns, "podinfo", "Progressing").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    flagger_event(
        &client,
        &ns,
        "podinfo",
        "podinfo.e1",
        &format!("New revision detected! Scaling up podinfo.{ns}"),
        "Normal",
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["channel"], "#shop");
    assert_eq!(
        body["attachments"][0]["author_name"],
        format!("[e2e] podinfo.{ns}")
    );
    assert_eq!(
        body["attachments"][0]["text"],
        format!("New revision detected! Scaling up podinfo.{ns} (weight 10)")
    );
    assert_eq!(
        body["attachments"][0]["fields"][0],
        json!({"title": "Phase", "value": "Progressing", "short": true})
    );

    // The leader holds the Lease; the delivery state is saved.
    let lease = Api::<Lease>::namespaced(client.clone(), &herald_ns)
        .get("herald-leader")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("e2e-replica")
    );
    state_entry(&client, &herald_ns, &format!("{ns}.podinfo"), |entry| {
        entry.contains("\"seen\"")
    })
    .await;

    // Restart: the Event is listed again but not re-sent. An Event recorded while Herald was
    // down is sent once.
    running.stop().await.unwrap();
    flagger_event(
        &client,
        &ns,
        "podinfo",
        "podinfo.e2",
        &format!("Advance podinfo.{ns} canary weight 20"),
        "Normal",
    )
    .await;
    running = herald::controller::start(client.clone(), controller_options(&herald_ns))
        .await
        .unwrap();
    sink.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let texts: Vec<String> = sink
        .received()
        .iter()
        .map(|r| {
            r.json()["attachments"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        texts,
        [
            format!("New revision detected! Scaling up podinfo.{ns} (weight 10)"),
            format!("Advance podinfo.{ns} canary weight 20 (weight 10)")
        ]
    );

    // The URL is rotated in the Secret: the watch picks it up, later notifications use it.
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "slack-url",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"address": sink.url("/slack/T0/rotated")}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The canary fails without Flagger recording an Event: Herald announces the phase change,
    // once, after the grace period.
    set_phase(&client, &ns, "podinfo", "Failed").await;
    sink.wait_for(3, WAIT).await;
    assert_eq!(sink.received()[2].path, "/slack/T0/rotated");
    let failed = sink.received()[2].json();
    assert_eq!(failed["attachments"][0]["color"], "danger");
    assert_eq!(
        failed["attachments"][0]["text"],
        format!("Canary failed! podinfo.{ns} (phase change seen by Herald) (weight 10)")
    );

    // Back to Progressing, then Flagger's own failure Event before the phase change: only the
    // Event is sent, not a second announcement.
    set_phase(&client, &ns, "podinfo", "Progressing").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    flagger_event(
        &client,
        &ns,
        "podinfo",
        "podinfo.e3",
        &format!("Canary failed! Scaling down podinfo.{ns}"),
        "Warning",
    )
    .await;
    sink.wait_for(4, WAIT).await;
    set_phase(&client, &ns, "podinfo", "Failed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.received().len(),
        4,
        "the phase change was already announced by Flagger's Event"
    );

    // Metrics of the controller's own HTTP server.
    let text = metrics_text(running.addr).await;
    assert_eq!(
        metric(
            &text,
            r#"herald_canary_status{name="podinfo",namespace=""#
                .to_owned()
                .as_str()
        ),
        0.0
    );
    assert!(
        text.contains(&format!(
            r#"herald_canary_status{{name="podinfo",namespace="{ns}"}} 2"#
        )),
        "{text}"
    );

    // Flagger's event webhook points at Herald too: each action arrives twice, as a POST and
    // as a Kubernetes Event, and is sent once.
    let advance = format!("Advance podinfo.{ns} canary weight 30");
    let now_ms = jiff::Timestamp::now().as_millisecond() as u64;
    let posted = event("podinfo", &ns, "Failed", &advance, "Normal", now_ms);
    assert_eq!(
        post_event(running.addr, "/events", &posted).await,
        (202, json!({"deliveries": 1}))
    );
    flagger_event(&client, &ns, "podinfo", "podinfo.e4", &advance, "Normal").await;
    sink.wait_for(5, WAIT).await;
    let duplicate = r#"herald_events_duplicate_total{source="watch"}"#;
    let deadline = std::time::Instant::now() + WAIT;
    while metric(&metrics_text(running.addr).await, duplicate) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the Event was not paired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = sink.received();
    assert_eq!(received.len(), 5, "one action, two reports, one message");
    // The webhook's report was first: it has no Canary facts, so no weight.
    assert_eq!(received[4].json()["attachments"][0]["text"], advance);

    // Flagger repeats "waiting for approval" every analysis interval; the Event recorder
    // aggregates the repeats into one Event with a growing count. With `repeatInterval` the
    // team hears it once per rollout.
    policies
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"repeatInterval": "1h"}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while policies
        .get("team")
        .await
        .unwrap()
        .status
        .unwrap()
        .observed_generation
        != Some(2)
    {
        assert!(Instant::now() < deadline, "the edit was not reconciled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = format!("Halt podinfo.{ns} advancement waiting for approval confirm-rollout");
    flagger_event(&client, &ns, "podinfo", "podinfo.e5", &waiting, "Normal").await;
    sink.wait_for(6, WAIT).await;
    for count in 2..=3 {
        Api::<Event>::namespaced(client.clone(), &ns)
            .patch(
                "podinfo.e5",
                &PatchParams::default(),
                &Patch::Merge(json!({"count": count, "lastTimestamp": jiff::Timestamp::now()})),
            )
            .await
            .unwrap();
    }
    let held = "herald_repeats_held_total";
    let deadline = Instant::now() + WAIT;
    while metric(&metrics_text(running.addr).await, held) < 2.0 {
        assert!(Instant::now() < deadline, "the repeats were not held back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.received().len(),
        6,
        "the repeats of one message were sent"
    );
    assert_eq!(
        sink.received()[5].json()["attachments"][0]["text"],
        format!("{waiting} (weight 10)")
    );

    // A Slack bot: its token in a Secret, one thread per rollout. The thread's first message
    // is kept in the state ConfigMap, so after a restart replies still thread under it.
    let slack = FakeSlack::start().await;
    let token = Secret {
        metadata: ObjectMeta {
            name: Some("slack-bot".into()),
            ..Default::default()
        },
        string_data: Some([("token".to_owned(), slack::TOKEN.to_owned())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let bot: NotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "bot", "namespace": ns},
        "spec": {
            "canaries": ["checkout"],
            "receivers": [{"name": "threads", "slack": {
                "tokenSecretRef": {"name": "slack-bot"}, "channel": "#deploys", "apiUrl": slack.api_url()
            }}]
        }
    }))
    .unwrap();
    policies.create(&PostParams::default(), &bot).await.unwrap();
    ready_condition(&policies, "bot", "True").await;
    let checkout: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"}}
    }))
    .unwrap();
    canaries
        .create(&PostParams::default(), &checkout)
        .await
        .unwrap();
    set_phase(&client, &ns, "checkout", "Progressing").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    flagger_event(
        &client,
        &ns,
        "checkout",
        "checkout.e1",
        &format!("New revision detected! Scaling up checkout.{ns}"),
        "Normal",
    )
    .await;
    let first = slack.wait_for(1).await;
    assert_eq!(first[0].method, "chat.postMessage");
    assert_eq!(first[0].body.get("thread_ts"), None);
    state_entry(&client, &herald_ns, &format!("{ns}.checkout"), |entry| {
        // The bot's thread scope (token fingerprint and channel) to the first message, with
        // no revision yet: "New revision detected!" started it.
        entry.contains(r#""threads":{"slack/"#)
            && entry.contains(r##"/#deploys":{"channel":"C0123ABCD","ts":"1700000000.000001"}}"##)
    })
    .await;
    running.stop().await.unwrap();
    let running = herald::controller::start(client.clone(), controller_options(&herald_ns))
        .await
        .unwrap();
    flagger_event(
        &client,
        &ns,
        "checkout",
        "checkout.e2",
        &format!("Advance checkout.{ns} canary weight 20"),
        "Normal",
    )
    .await;
    let calls = slack.wait_for(2).await;
    assert_eq!(calls[1].method, "chat.postMessage");
    assert_eq!(calls[1].body["thread_ts"], "1700000000.000001");

    // The bot policy is deleted: it stops notifying (a deleted policy is never reconciled,
    // so this checks the PolicySet follows deletions, not only reconciles).
    let before = metric(&metrics_text(running.addr).await, "herald_policies");
    policies
        .delete("bot", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&metrics_text(running.addr).await, "herald_policies") != before - 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted policy is still in effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flagger_event(
        &client,
        &ns,
        "checkout",
        "checkout.e3",
        &format!("Advance checkout.{ns} canary weight 30"),
        "Normal",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(slack.calls().len(), 2, "a deleted policy notified");
    running.stop().await.unwrap();
}

/// What kubectl sees (`explain`, client-side validation): the API server's OpenAPI v2, where a
/// `nullable` schema loses its type and fields. Every receiver kind must keep both there, or a
/// misspelt field inside a receiver is pruned silently instead of refused.
#[tokio::test]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn published_openapi_shows_every_receiver_kinds_fields() {
    let client = client().await;
    install_crds(&client).await;
    let receiver_kinds = herald_api::RECEIVER_KINDS;
    // The server publishes a new CRD's OpenAPI a moment after it is established.
    let deadline = Instant::now() + WAIT;
    for kind in ["NotificationPolicy", "ClusterNotificationPolicy"] {
        let receivers = loop {
            let request = http::Request::get("/openapi/v2").body(Vec::new()).unwrap();
            let document: serde_json::Value =
                serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
            let receivers = document
                .pointer(&format!(
                    "/definitions/dev.herald.v1alpha1.{kind}/properties/spec/properties/receivers/items/properties"
                ))
                .cloned();
            match receivers {
                Some(receivers) => break receivers,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                None => panic!("{kind} is not in /openapi/v2"),
            }
        };
        for receiver_kind in receiver_kinds {
            let schema = &receivers[receiver_kind];
            assert_eq!(schema["type"], "object", "{kind} {receiver_kind}: {schema}");
            // Published typed, with its fields (a nullable kind is published empty). Every
            // kind has fields; not every kind has a URL (PagerDuty has a routing key).
            let fields = schema["properties"].as_object();
            assert!(
                fields.is_some_and(|f| !f.is_empty()),
                "{kind} {receiver_kind} has no fields in /openapi/v2: {schema}"
            );
        }
        assert_eq!(
            receivers["slack"]["properties"]["channel"]["type"], "string",
            "{kind}"
        );
    }
}
