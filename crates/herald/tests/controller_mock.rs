//! The controller against a mocked API server (kube-rs controller-rs style): each test scripts
//! the exact requests Herald must make (status patch bodies, Secret reads, Event creation,
//! state ConfigMap patches) and what the API server answers. Deliveries go to a real loopback
//! sink.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use common::mock::*;
use common::*;
use herald::api::AppState;
use herald::controller::canaries::{CanaryNotifier, Input};
use herald::controller::policies::{self, Context, ReceiverStats};
use herald::controller::sources::EventSources;
use herald::controller::state::{CanaryRecord, CanaryRef, StateStore};
use herald::delivery::{DeliveryConfig, Dispatcher};
use herald::metrics::{Metrics, Outcome};
use herald_api::flagger::Canary;
use herald_api::NotificationPolicy;
use herald_core::{PolicyObject, PolicySetBuilder, SecretStore};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, Resource};
use serde_json::{json, Value};

fn context(client: Client) -> (Arc<Context>, tokio::sync::watch::Sender<bool>) {
    let (leader_tx, leader) = tokio::sync::watch::channel(true);
    let ctx = Context {
        client,
        herald_namespace: "herald".to_owned(),
        cluster: "prod".to_owned(),
        secrets: Default::default(),
        stats: Arc::new(ReceiverStats::default()),
        rebuild: Default::default(),
        leader,
        validated: Default::default(),
    };
    (Arc::new(ctx), leader_tx)
}

fn policy(spec: Value) -> NotificationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "team", "namespace": "shop", "generation": 3, "uid": "uid-team"},
        "spec": spec,
    }))
    .unwrap()
}

const STATUS_PATH: &str =
    "/apis/herald.dev/v1alpha1/namespaces/shop/notificationpolicies/team/status?&force=true&fieldManager=herald";

async fn reconcile(policy: NotificationPolicy, ctx: Arc<Context>) -> Action {
    tokio::time::timeout(
        Duration::from_secs(5),
        policies::reconcile(Arc::new(policy), ctx),
    )
    .await
    .expect("reconcile finished")
    .expect("reconcile succeeded")
}

#[tokio::test]
async fn missing_secret_then_created_moves_ready_from_false_to_true() {
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client);
    let team = policy(
        json!({"receivers": [{"name": "chat", "slack": {"secretRef": {"name": "slack-url"}}}]}),
    );

    let server = {
        let team = team.clone();
        tokio::spawn(async move {
            expect(
                &mut api,
                "GET",
                "/api/v1/namespaces/shop/secrets/slack-url",
                404,
                not_found("secrets \"slack-url\""),
            )
            .await;
            let patch = expect(
                &mut api,
                "PATCH",
                STATUS_PATH,
                200,
                serde_json::to_value(&team).unwrap(),
            )
            .await;
            (api, patch)
        })
    };
    let action = reconcile(team.clone(), ctx.clone()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let (mut api, patch) = server.await.unwrap();
    let ready = &patch["status"]["conditions"][0];
    assert_eq!(patch["apiVersion"], "herald.dev/v1alpha1");
    assert_eq!(patch["kind"], "NotificationPolicy");
    assert_eq!(patch["status"]["observedGeneration"], 3);
    assert_eq!(
        (
            &ready["type"],
            &ready["status"],
            &ready["reason"],
            &ready["observedGeneration"]
        ),
        (
            &json!("Ready"),
            &json!("False"),
            &json!("SecretNotFound"),
            &json!(3)
        )
    );
    assert_eq!(
        ready["message"],
        "spec.receivers[0].slack.secretRef: Secret shop/slack-url not found"
    );
    assert_eq!(
        patch["status"]["receivers"],
        json!([{"name": "chat", "failures": 0}])
    );

    // The Secret is created: the watch makes Herald forget its cache entry; the next
    // reconcile reads it and the policy becomes Ready.
    ctx.secrets.forget("shop", "slack-url");
    let mut previous = team.clone();
    previous.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
    let server = {
        let previous = previous.clone();
        tokio::spawn(async move {
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "slack-url", "namespace": "shop"},
                                "data": {"address": "aHR0cHM6Ly9ob29rcy5zbGFjay5jb20vc2VydmljZXMvVDAvQjAvc2VjcmV0"}});
            expect(
                &mut api,
                "GET",
                "/api/v1/namespaces/shop/secrets/slack-url",
                200,
                secret,
            )
            .await;
            expect(
                &mut api,
                "PATCH",
                STATUS_PATH,
                200,
                serde_json::to_value(&previous).unwrap(),
            )
            .await
        })
    };
    reconcile(previous, ctx.clone()).await;
    let patch = server.await.unwrap();
    let ready = &patch["status"]["conditions"][0];
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("True"), &json!("Ready"))
    );
    assert_eq!(ready["message"], "1 receiver(s) ready");
    assert!(
        !patch.to_string().contains("hooks.slack.com"),
        "the URL must not reach the status"
    );
}

#[tokio::test]
async fn template_error_is_reported_with_its_position_and_no_secret_is_read() {
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client);
    let team = policy(json!({
        "template": {"text": "{{message}}\n{{#if phase}}unclosed"},
        "receivers": [{"name": "hook", "webhook": {"url": "https://example.com/hook"}}]
    }));
    let answer = serde_json::to_value(&team).unwrap();
    let server =
        tokio::spawn(async move { expect(&mut api, "PATCH", STATUS_PATH, 200, answer).await });
    reconcile(team, ctx).await;
    let patch = server.await.unwrap();
    let ready = &patch["status"]["conditions"][0];
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("TemplateError"))
    );
    let message = ready["message"].as_str().unwrap();
    assert_eq!(
        message,
        "spec.template.text: unclosed {{#if}} block opened at line 2, column 1"
    );
}

/// The status names every receiver's kind, for the RECEIVERS column.
#[tokio::test]
async fn the_status_lists_every_receiver_kind() {
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client);
    let team = policy(json!({"receivers": [
        {"name": "hook", "webhook": {"url": "https://example.com/h"}},
        {"name": "teams", "msteams": {"url": "https://example.com/t"}}
    ]}));
    let answer = serde_json::to_value(&team).unwrap();
    let server =
        tokio::spawn(async move { expect(&mut api, "PATCH", STATUS_PATH, 200, answer).await });
    reconcile(team, ctx).await;
    let patch = server.await.unwrap();
    assert_eq!(patch["status"]["receiverKinds"], "webhook,msteams");
}

#[tokio::test]
async fn suspended_policy_says_so() {
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client);
    let team = policy(
        json!({"suspend": true, "receivers": [{"name": "hook", "webhook": {"url": "https://example.com/h"}}]}),
    );
    let answer = serde_json::to_value(&team).unwrap();
    let server =
        tokio::spawn(async move { expect(&mut api, "PATCH", STATUS_PATH, 200, answer).await });
    reconcile(team, ctx).await;
    let ready = server.await.unwrap()["status"]["conditions"][0].clone();
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("Suspended"))
    );
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again_and_followers_never_write() {
    let (client, mut api) = mock_client();
    let (ctx, leader) = context(client);
    let team = policy(
        json!({"receivers": [{"name": "hook", "webhook": {"url": "https://example.com/h"}}]}),
    );
    let answer = serde_json::to_value(&team).unwrap();
    let server = tokio::spawn(async move {
        let patch = expect(&mut api, "PATCH", STATUS_PATH, 200, answer).await;
        (api, patch)
    });
    reconcile(team.clone(), ctx.clone()).await;
    let (api, patch) = server.await.unwrap();
    let mut current = team.clone();
    current.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
    // Same status: no request at all (an unanswered request would time the reconcile out).
    reconcile(current, ctx.clone()).await;
    // A follower does not write status.
    leader.send(false).unwrap();
    assert_eq!(
        reconcile(team, ctx).await,
        Action::requeue(Duration::from_secs(60))
    );
    drop(api);
}

#[tokio::test]
async fn a_status_refresh_does_not_rebuild_the_policies_but_an_edit_does() {
    let (client, _api) = mock_client();
    let (ctx, leader) = context(client);
    // A follower makes no API requests, so the mocked server needs no script.
    leader.send(false).unwrap();
    let rebuild_asked = |ctx: Arc<Context>| async move {
        tokio::time::timeout(Duration::from_millis(50), ctx.rebuild.notified())
            .await
            .is_ok()
    };
    let team = policy(
        json!({"receivers": [{"name": "hook", "webhook": {"url": "https://example.com/h"}}]}),
    );
    reconcile(team.clone(), ctx.clone()).await;
    assert!(rebuild_asked(ctx.clone()).await);
    // Deliveries trigger reconciles to refresh the counts: same spec, same Secrets.
    reconcile(team.clone(), ctx.clone()).await;
    assert!(!rebuild_asked(ctx.clone()).await);
    // An edit bumps the generation.
    let mut edited = policy(
        json!({"receivers": [{"name": "hook", "webhook": {"url": "https://example.com/new"}}]}),
    );
    edited.metadata.generation = Some(4);
    reconcile(edited, ctx.clone()).await;
    assert!(rebuild_asked(ctx.clone()).await);
    // A Secret read into the cache (here: one found missing) counts as a change too.
    ctx.secrets.insert("shop", "slack-url", None);
    reconcile(team, ctx.clone()).await;
    assert!(rebuild_asked(ctx).await);
}

#[tokio::test]
async fn a_failed_delivery_becomes_a_warning_event_on_the_policy() {
    let (client, mut api) = mock_client();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "herald".into(),
            instance: Some("herald-0".into()),
        },
    );
    let team = policy(json!({"receivers": []}));
    let reference = team.object_ref(&());
    let server = tokio::spawn(async move {
        expect(
            &mut api,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/shop/events?",
            201,
            json!({}),
        )
        .await
    });
    herald::controller::record_failure(&recorder, &reference, "chat", Outcome::Failed)
        .await
        .unwrap();
    let event = server.await.unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "DeliveryFailed");
    assert_eq!(event["action"], "Notify");
    assert_eq!(
        event["note"],
        "notification to receiver chat failed; see Herald's logs"
    );
    assert_eq!(event["regarding"]["kind"], "NotificationPolicy");
    assert_eq!(event["regarding"]["name"], "team");
    assert_eq!(event["regarding"]["uid"], "uid-team");
    assert_eq!(event["reportingController"], "herald");
}

/// API servers before 1.22 refuse an events.k8s.io Event about a cluster-scoped object
/// unless it is in kube-system (422 "involvedObject.namespace: does not match").
#[tokio::test]
async fn a_failed_delivery_of_a_cluster_policy_becomes_a_warning_event_in_kube_system() {
    let (client, mut api) = mock_client();
    let reporter = Reporter {
        controller: "herald".into(),
        instance: Some("herald-0".into()),
    };
    let cluster: herald_api::ClusterNotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "ClusterNotificationPolicy",
        "metadata": {"name": "herald-default", "uid": "uid-default", "generation": 1},
        "spec": {"receivers": []}
    }))
    .unwrap();
    let reference = cluster.object_ref(&());
    let server = tokio::spawn(async move {
        expect(
            &mut api,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/kube-system/events?",
            201,
            json!({}),
        )
        .await
    });
    herald::controller::record_cluster_failure(
        &client,
        &reporter,
        &reference,
        "slack",
        Outcome::Dropped,
    )
    .await
    .unwrap();
    let event = server.await.unwrap();
    assert_eq!(event["metadata"]["namespace"], "kube-system");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "DeliveryDropped");
    assert_eq!(event["regarding"]["kind"], "ClusterNotificationPolicy");
    assert_eq!(event["regarding"]["name"], "herald-default");
    assert_eq!(event["regarding"].get("namespace"), None);
    assert_eq!(event["reportingController"], "herald");
    assert_eq!(event["reportingInstance"], "herald-0");
    assert!(event["eventTime"].is_string());
}

/// A notifier wired to a loopback sink, with the delivery state in a mocked ConfigMap.
struct Harness {
    notifier: CanaryNotifier,
    app: AppState,
    later: tokio::sync::mpsc::UnboundedSender<Input>,
    _later_rx: tokio::sync::mpsc::UnboundedReceiver<Input>,
}

impl Harness {
    /// Serves the notifier's HTTP API (`/events`, Flagger's webhook) on a loopback port.
    async fn serve_http(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = herald::api::router(self.app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }
}

fn harness(
    sink: &Sink,
    state_client: Client,
    records: HashMap<CanaryRef, CanaryRecord>,
) -> Harness {
    harness_with(
        json!({
            "canaries": ["podinfo"],
            "matchLabels": {"team": "shop"},
            "receivers": [{"name": "hook", "webhook": {"url": sink.url("/hook"), "body": "{\"text\": {{json message}}, \"weight\": {{json canary.weight}}}"}}]
        }),
        state_client,
        records,
    )
}

fn harness_with(
    policy_spec: Value,
    state_client: Client,
    records: HashMap<CanaryRef, CanaryRecord>,
) -> Harness {
    let team = policy(policy_spec);
    let secrets = SecretStore::default();
    let mut builder = PolicySetBuilder::new(&secrets, "prod", "herald");
    builder.add(&PolicyObject::Namespaced(team)).unwrap();
    let metrics = Arc::new(Metrics::new());
    let app = AppState {
        gates: std::sync::Arc::new(herald::gates::Gates::in_memory()),
        policies: Arc::new(ArcSwap::from_pointee(builder.build())),
        dispatcher: Dispatcher::new(DeliveryConfig::default(), metrics.clone()),
        metrics,
        body_limit: 65536,
        ready: Arc::new(AtomicBool::new(true)),
        incoming: None,
        repeats: Default::default(),
        open: Default::default(),
        event_token: None,
        body_timeout: herald::api::DEFAULT_BODY_TIMEOUT,
        store: None,
    };
    let state = Arc::new(StateStore::new(
        Api::<ConfigMap>::namespaced(state_client, "herald"),
        "herald-state",
        1,
        records,
        0,
    ));
    let sources = Arc::new(EventSources::new(
        Duration::from_secs(30),
        Arc::new(Mutex::new(Some(state.clone()))),
    ));
    let app = AppState {
        gates: std::sync::Arc::new(herald::gates::Gates::in_memory()),
        incoming: Some(sources.clone()),
        ..app
    };
    let (canaries, mut canary_writer) = reflector::store::<Canary>();
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "shop", "labels": {"team": "shop"}},
        "spec": {}, "status": {"phase": "Progressing", "canaryWeight": 30, "lastAppliedSpec": "rev-7"}
    }))
    .unwrap();
    canary_writer.apply_watcher_event(&watcher::Event::Apply(canary));
    let (namespaces, _ns_writer) = reflector::store::<Namespace>();
    let (later, later_rx) = tokio::sync::mpsc::unbounded_channel();
    Harness {
        notifier: CanaryNotifier::new(
            app.clone(),
            state,
            canaries,
            namespaces,
            Duration::from_millis(50),
            sources,
        ),
        app,
        later,
        _later_rx: later_rx,
    }
}

fn flagger_event(uid: &str, count: i32, message: &str, at: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("podinfo.{uid}"), "namespace": "shop", "uid": uid},
        "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "namespace": "shop"},
        "reason": "Synced", "message": message, "type": "Normal", "count": count,
        "firstTimestamp": at, "lastTimestamp": at, "source": {"component": "flagger"}
    }))
    .unwrap()
}

fn canary_ref() -> CanaryRef {
    CanaryRef {
        namespace: "shop".into(),
        name: "podinfo".into(),
    }
}

#[tokio::test]
async fn a_canary_event_is_delivered_once_and_recorded() {
    let sink = Sink::start().await;
    let (client, mut api) = mock_client();
    let h = harness(&sink, client, HashMap::new());
    let event = flagger_event(
        "e1",
        1,
        "New revision detected! Scaling up podinfo.shop",
        "2026-11-25T10:00:00Z",
    );
    h.notifier
        .handle(Input::Event(Box::new(event.clone())), &h.later);
    // The same Event again (a re-list) while its notification is in flight or done: ignored.
    h.notifier
        .handle(Input::Event(Box::new(event.clone())), &h.later);
    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        got[0].text(),
        r#"{"text":"New revision detected! Scaling up podinfo.shop","weight":30}"#
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.notifier.handle(Input::Event(Box::new(event)), &h.later);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.received().len(), 1);

    // Saved with one merge patch touching only this canary's key.
    let record = h.notifier.state.get(&canary_ref());
    assert_eq!(
        record.seen,
        BTreeMap::from([("e1:1".to_owned(), 1_795_600_800_000)])
    );
    let server = tokio::spawn(async move {
        expect(
            &mut api,
            "PATCH",
            "/api/v1/namespaces/herald/configmaps/herald-state?",
            200,
            json!({}),
        )
        .await
    });
    h.notifier.state.flush().await.unwrap();
    let patch = server.await.unwrap();
    assert_eq!(
        patch,
        json!({"data": {"shop.podinfo": r#"{"floor":1795600800000,"seen":{"e1:1":1795600800000}}"#}})
    );
}

/// A deleted canary's record leaves the state: one merge patch removes its key.
#[tokio::test]
async fn a_forgotten_canary_is_removed_from_the_state_configmap() {
    let sink = Sink::start().await;
    let (client, mut api) = mock_client();
    let mut handled = CanaryRecord::default();
    handled.record("e1:1", 1_795_600_800_000, None);
    let h = harness(&sink, client, HashMap::from([(canary_ref(), handled)]));
    h.notifier.state.retain(|_, _| false);
    assert_eq!(h.notifier.state.get(&canary_ref()), CanaryRecord::default());
    let server = tokio::spawn(async move {
        expect(
            &mut api,
            "PATCH",
            "/api/v1/namespaces/herald/configmaps/herald-state?",
            200,
            json!({}),
        )
        .await
    });
    h.notifier.state.flush().await.unwrap();
    assert_eq!(
        server.await.unwrap(),
        json!({"data": {"shop.podinfo": null}})
    );
}

#[tokio::test]
async fn one_action_reported_by_flaggers_webhook_and_as_an_event_is_sent_once() {
    let sink = Sink::start().await;
    let (client, _api) = mock_client();
    // No label selector: events POSTed over HTTP carry no Canary labels (nor `canary`).
    let h = harness_with(
        json!({
            "canaries": ["podinfo"],
            "receivers": [{"name": "hook", "webhook": {"url": sink.url("/hook"), "body": "{\"text\": {{json message}}, \"weight\": {{#if canary}}{{canary.weight}}{{else}}null{{/if}}}"}}]
        }),
        client,
        HashMap::new(),
    );
    let addr = h.serve_http().await;
    let webhook = |message: &str| event("podinfo", "shop", "Progressing", message, "Normal", 1);

    // Flagger POSTs an action to its event webhook, then the watch sees its Event.
    let (status, answer) = post_event(
        addr,
        "/events",
        &webhook("Advance podinfo.shop canary weight 30"),
    )
    .await;
    assert_eq!((status, answer), (202, json!({"deliveries": 1})));
    let first = flagger_event(
        "e1",
        1,
        "Advance podinfo.shop canary weight 30",
        "2026-11-25T10:00:00Z",
    );
    h.notifier.handle(Input::Event(Box::new(first)), &h.later);
    // The next action the other way round: the Event first, then the POST.
    let second = flagger_event(
        "e2",
        1,
        "Advance podinfo.shop canary weight 40",
        "2026-11-25T10:01:00Z",
    );
    h.notifier.handle(Input::Event(Box::new(second)), &h.later);
    let (status, answer) = post_event(
        addr,
        "/events",
        &webhook("Advance podinfo.shop canary weight 40"),
    )
    .await;
    assert_eq!(
        (status, answer),
        (202, json!({"deliveries": 0, "duplicate": true}))
    );

    let got = sink.wait_for(2, Duration::from_secs(5)).await;
    let mut bodies: Vec<String> = got.iter().map(|r| r.text()).collect();
    bodies.sort();
    // The webhook's report has no Canary facts (weight null); the Event's has the Canary's.
    assert_eq!(
        bodies,
        [
            r#"{"text":"Advance podinfo.shop canary weight 30","weight":null}"#,
            r#"{"text":"Advance podinfo.shop canary weight 40","weight":30}"#,
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.received().len(), 2);
    let text = h.app.metrics.encode();
    for source in ["webhook", "watch"] {
        assert_eq!(
            metric(
                &text,
                &format!(r#"herald_events_duplicate_total{{source="{source}"}}"#)
            ),
            1.0
        );
    }
    // The paired Event counts as handled: a re-list after a restart does not send it.
    let record = h.notifier.state.get(&canary_ref());
    assert!(record.is_handled("e1:1", 1_795_600_800_000), "{record:?}");

    // Flagger's failure message over the webhook is its announcement of the phase: Herald's
    // own "phase change seen by Herald" message is not sent.
    let (status, _) = post_event(
        addr,
        "/events",
        &webhook("Canary failed! Rolling back podinfo.shop"),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        h.notifier.state.get(&canary_ref()).announced.as_deref(),
        Some("Failed")
    );
}

#[tokio::test]
async fn an_event_paired_with_a_webhook_report_still_being_sent_is_not_sent_on_a_relist() {
    let sink = Sink::start().await;
    // The webhook report's notification takes a while.
    sink.delay_every_answer(Duration::from_millis(600));
    let (client, _api) = mock_client();
    let h = harness_with(
        json!({
            "canaries": ["podinfo"],
            "receivers": [{"name": "hook", "webhook": {"url": sink.url("/hook")}}]
        }),
        client,
        HashMap::new(),
    );
    let addr = h.serve_http().await;
    let message = "Advance podinfo.shop canary weight 30";
    let posted = event("podinfo", "shop", "Progressing", message, "Normal", 1);
    assert_eq!(
        post_event(addr, "/events", &posted).await,
        (202, json!({"deliveries": 1}))
    );
    let watched = flagger_event("e1", 1, message, "2026-11-25T10:00:00Z");
    h.notifier
        .handle(Input::Event(Box::new(watched.clone())), &h.later);
    // Not handled yet (the webhook report may still be dropped), but not sent on a re-list.
    assert!(!h
        .notifier
        .state
        .get(&canary_ref())
        .is_handled("e1:1", 1_795_600_800_000));
    h.notifier.handle(Input::Event(Box::new(watched)), &h.later);
    sink.wait_for(1, Duration::from_secs(5)).await;
    // A second notification would queue behind the first (same canary) and take as long.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(sink.received().len(), 1);
    // Once the webhook report's notification is delivered, the Event is handled.
    assert!(h
        .notifier
        .state
        .get(&canary_ref())
        .is_handled("e1:1", 1_795_600_800_000));
}

#[tokio::test]
async fn after_a_restart_handled_events_are_not_resent_and_missed_ones_are_sent_once() {
    let sink = Sink::start().await;
    let (client, _api) = mock_client();
    let mut handled = CanaryRecord::default();
    handled.record("e1:1", 1_795_600_800_000, None);
    let h = harness(&sink, client, HashMap::from([(canary_ref(), handled)]));
    // Listed again after the restart: already handled.
    h.notifier.handle(
        Input::Event(Box::new(flagger_event(
            "e1",
            1,
            "New revision detected! Scaling up podinfo.shop",
            "2026-11-25T10:00:00Z",
        ))),
        &h.later,
    );
    // Flagger aggregated the same message again while Herald was down (count 2): new.
    h.notifier.handle(
        Input::Event(Box::new(flagger_event(
            "e1",
            2,
            "New revision detected! Scaling up podinfo.shop",
            "2026-11-25T10:05:00Z",
        ))),
        &h.later,
    );
    // A different Event recorded while Herald was down: new.
    h.notifier.handle(
        Input::Event(Box::new(flagger_event(
            "e2",
            1,
            "Advance podinfo.shop canary weight 30",
            "2026-11-25T10:06:00Z",
        ))),
        &h.later,
    );
    let got = sink.wait_for(2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sink.received().iter().map(|r| r.text()).collect::<Vec<_>>(),
        [
            r#"{"text":"New revision detected! Scaling up podinfo.shop","weight":30}"#,
            r#"{"text":"Advance podinfo.shop canary weight 30","weight":30}"#
        ]
    );
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn events_of_other_kinds_and_unmatched_canaries_send_nothing() {
    let sink = Sink::start().await;
    let (client, _api) = mock_client();
    let h = harness(&sink, client, HashMap::new());
    let mut pod_event = flagger_event("p1", 1, "Pulled image", "2026-11-25T10:00:00Z");
    pod_event.involved_object.kind = Some("Pod".into());
    pod_event.involved_object.api_version = Some("v1".into());
    h.notifier
        .handle(Input::Event(Box::new(pod_event)), &h.later);
    let mut other = flagger_event(
        "o1",
        1,
        "New revision detected! Scaling up checkout.shop",
        "2026-11-25T10:00:00Z",
    );
    other.involved_object.name = Some("checkout".into());
    h.notifier.handle(Input::Event(Box::new(other)), &h.later);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty());
    // The unmatched canary's event is still recorded as handled (nothing to send).
    let checkout = CanaryRef {
        namespace: "shop".into(),
        name: "checkout".into(),
    };
    assert!(h.notifier.state.get(&checkout).seen.contains_key("o1:1"));
}

/// Rollout threads live in the state ConfigMap: saved with the canary's record, and a
/// restarted (or newly elected) Herald that loads the ConfigMap finds them.
#[tokio::test]
async fn rollout_threads_are_saved_in_the_state_configmap_and_found_after_a_restart() {
    use herald::controller::state::{parse_records, StateThreads};
    use herald::delivery::{MemoryThreads, ThreadStore};
    use herald_core::receivers::threads::thread_ref;
    use herald_core::receivers::ThreadParent;
    use herald_core::FlaggerEvent;
    use std::sync::Mutex;

    let (client, mut api) = mock_client();
    let cm_api = Api::<ConfigMap>::namespaced(client, "herald");
    let store = Arc::new(StateStore::new(
        cm_api.clone(),
        "herald-state",
        1,
        HashMap::new(),
        0,
    ));
    let threads = StateThreads {
        slot: Arc::new(Mutex::new(Some(store.clone()))),
        fallback: MemoryThreads::new(),
    };
    let event = FlaggerEvent::new(
        "checkout",
        "payments",
        "Progressing",
        "Advance checkout.payments canary weight 10",
        herald_api::EventType::Normal,
        1_700_000_000_000,
    );
    let thread = thread_ref("slack/f00d/C0123ABCD", &event, None);
    assert_eq!(threads.parent(&thread), None);
    let parent = ThreadParent {
        channel: "C0123ABCD".into(),
        ts: "1700000000.000001".into(),
        revision: Some("5a6b7c".into()),
    };
    threads.remember(&thread, parent.clone());
    let server = tokio::spawn(async move {
        expect(
            &mut api,
            "PATCH",
            "/api/v1/namespaces/herald/configmaps/herald-state?",
            200,
            json!({}),
        )
        .await
    });
    store.flush().await.unwrap();
    let patch = server.await.unwrap();
    let saved = r#"{"floor":0,"threads":{"slack/f00d/C0123ABCD":{"channel":"C0123ABCD","ts":"1700000000.000001","revision":"5a6b7c"}}}"#;
    assert_eq!(patch, json!({"data": {"payments.checkout": saved}}));

    // After a restart: the records come from the ConfigMap, the memory is empty.
    let cm = ConfigMap {
        data: Some(BTreeMap::from([(
            "payments.checkout".to_owned(),
            saved.to_owned(),
        )])),
        ..Default::default()
    };
    let restarted = StateThreads {
        slot: Arc::new(Mutex::new(Some(Arc::new(StateStore::new(
            cm_api,
            "herald-state",
            1,
            parse_records(&cm),
            0,
        ))))),
        fallback: MemoryThreads::new(),
    };
    assert_eq!(restarted.parent(&thread), Some(parent));
    let other_receiver = thread_ref("slack/beef/C0123ABCD", &event, None);
    assert_eq!(restarted.parent(&other_receiver), None);
}
