//! The controller's defaults and faults against a real kube-apiserver (v1.20, with etcd;
//! `tests/e2e/run.sh` runs these with `--ignored`): one replica without a lease, the lease's
//! release and takeover, a deleted state ConfigMap, Events recorded while Herald was down,
//! aggregated Events, and Warning Events on cluster policies. They run one at a time
//! (`--test-threads=1`): every controller watches the whole cluster.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use herald::controller::leader::Leadership;
use herald::controller::state;
use herald_api::NotificationPolicy;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Resource};
use serde_json::json;

/// A namespace with the canary `podinfo` (Progressing) and a policy sending its Events'
/// messages to `sink` as `{"text": ...}`.
async fn shop(client: &Client, prefix: &str, sink: &Sink) -> String {
    herald::telemetry::init(
        herald::telemetry::LogFormat::Text,
        "info,herald=debug,kube=warn",
    );
    let ns = namespace(client, prefix).await;
    let policy: NotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "team", "namespace": ns},
        "spec": {"receivers": [{"name": "hook", "webhook": {
            "url": sink.url("/hook"), "body": "{\"text\": {{json message}}, \"count\": \"{{default metadata.count \"-\"}}\"}"
        }}]}
    }))
    .unwrap();
    Api::<NotificationPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    create_canary(client, &ns, "podinfo").await;
    set_phase(client, &ns, "podinfo", "Progressing").await;
    ns
}

fn texts(sink: &Sink) -> Vec<String> {
    sink.received().iter().map(|r| r.text()).collect()
}

/// The chart's default: one replica, no `--leader-election`. It used to never notify on a
/// watched Event (the "lost leadership" wait ended at once, in a busy loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn one_replica_without_a_lease_notifies_and_reads_aggregated_events() {
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald-single").await;
    let sink = Sink::start().await;
    let ns = shop(&client, "single", &sink).await;
    let mut options = controller_options(&herald_ns);
    options.lease_name = None;
    let running = herald::controller::start(client.clone(), options)
        .await
        .unwrap();
    flagger_event(
        &client,
        &ns,
        "podinfo",
        "podinfo.a1",
        &format!("New revision detected! Scaling up podinfo.{ns}"),
        "Normal",
    )
    .await;
    sink.wait_for(1, WAIT).await;
    // client-go aggregated ten similar Events into one.
    flagger_event(
        &client,
        &ns,
        "podinfo",
        "podinfo.a2",
        &format!("(combined from similar events): Advance podinfo.{ns} canary weight 40"),
        "Normal",
    )
    .await;
    sink.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        texts(&sink),
        [
            format!(r#"{{"text":"New revision detected! Scaling up podinfo.{ns}","count":"1"}}"#),
            format!(r#"{{"text":"Advance podinfo.{ns} canary weight 40","count":"1"}}"#),
        ]
    );
    running.stop().await.unwrap();
}

/// SIGTERM on the leader: it releases the Lease and the other replica leads within one
/// retry period (2 s), not after the lease's 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn a_released_lease_is_taken_over_at_once_and_a_replaced_leader_is_fenced() {
    let client = client().await;
    let herald_ns = namespace(&client, "herald-lease").await;
    let first = Leadership::elect(client.clone(), &herald_ns, "herald-leader", "replica-a");
    let mut leading = first.leading.clone();
    tokio::time::timeout(WAIT, leading.wait_for(|l| *l))
        .await
        .expect("replica-a leads")
        .unwrap();
    assert!(first.fence.holds());
    let second = Leadership::elect(client.clone(), &herald_ns, "herald-leader", "replica-b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !*second.leading.borrow(),
        "the lease is held: replica-b waits"
    );
    assert!(!second.fence.holds());

    let released = Instant::now();
    first.release().await;
    let mut leading = second.leading.clone();
    tokio::time::timeout(Duration::from_secs(5), leading.wait_for(|l| *l))
        .await
        .expect("replica-b leads within 5 s of the release")
        .unwrap();
    let takeover = released.elapsed();
    assert!(second.fence.holds());
    eprintln!("takeover after release: {takeover:?}");

    // Someone else takes the lease (replica-b was paused past its expiry, say): replica-b
    // notices at its next renewal and its fence is down.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &herald_ns);
    leases
        .patch(
            "herald-leader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "replica-c"}})),
        )
        .await
        .unwrap();
    let mut leading = second.leading.clone();
    tokio::time::timeout(Duration::from_secs(5), leading.wait_for(|l| !*l))
        .await
        .expect("replica-b steps down")
        .unwrap();
    assert!(!second.fence.holds());
    second.release().await;
    let lease = leases.get("herald-leader").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-c"),
        "a replica that does not hold the lease does not release it"
    );
}

/// Events recorded while Herald was down are sent once each, in the order they happened
/// (the API lists them by name), paced rather than dropped when there are more than the
/// receiver's queue holds, and a deleted state ConfigMap is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn downtime_events_are_sent_once_in_order_and_deleted_state_is_recreated() {
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald-downtime").await;
    let sink = Sink::start().await;
    let ns = shop(&client, "downtime", &sink).await;
    let mut options = controller_options(&herald_ns);
    options.lease_name = None;
    // Smaller than the replay: it is paced by the receiver, not dropped.
    options.delivery.queue_capacity = 2;
    let running = herald::controller::start(client.clone(), options.clone())
        .await
        .unwrap();
    let started = jiff::Timestamp::now();
    flagger_event_at(
        &client,
        &ns,
        "podinfo",
        "podinfo.d0",
        "Starting",
        "Normal",
        started,
    )
    .await;
    sink.wait_for(1, WAIT).await;
    let key = format!("{ns}.podinfo");
    state_entry(&client, &herald_ns, &key, |e| e.contains("\"seen\"")).await;
    running.stop().await.unwrap();

    // While Herald is down: five Events, one a second, whose names sort opposite to their
    // times. (Event times have whole seconds; none is later than now.)
    let base = started + jiff::SignedDuration::from_secs(1);
    while jiff::Timestamp::now() < base + jiff::SignedDuration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..5i64 {
        let at = base + jiff::SignedDuration::from_secs(i);
        let name = format!("podinfo.z{}", 9 - i);
        flagger_event_at(
            &client,
            &ns,
            "podinfo",
            &name,
            &format!("step {i}"),
            "Normal",
            at,
        )
        .await;
    }
    let running = herald::controller::start(client.clone(), options.clone())
        .await
        .unwrap();
    sink.wait_for(6, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = texts(&sink);
    assert_eq!(
        sent[1..],
        (0..5)
            .map(|i| format!(r#"{{"text":"step {i}","count":"1"}}"#))
            .collect::<Vec<_>>()
    );

    // Someone deletes the state ConfigMap: Herald writes it again, whole.
    let shard = state::shard_name("herald-state", state::shard_of(&key, state::SHARDS));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &herald_ns);
    configmaps
        .delete(&shard, &DeleteParams::default())
        .await
        .unwrap();
    flagger_event(&client, &ns, "podinfo", "podinfo.d9", "after", "Normal").await;
    sink.wait_for(7, WAIT).await;
    state_entry(&client, &herald_ns, &key, |e| e.contains("\"seen\"")).await;
    running.stop().await.unwrap();

    // After a restart nothing is sent again.
    let running = herald::controller::start(client.clone(), options)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(texts(&sink).len(), 7, "{:#?}", texts(&sink));
    running.stop().await.unwrap();
}

/// The 1.20 API server refuses an events.k8s.io Event about a cluster-scoped object outside
/// kube-system (422); the chart's default policies are ClusterNotificationPolicies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn warning_events_on_cluster_policies_are_accepted() {
    let client = client().await;
    install_crds(&client).await;
    let policies: Api<herald_api::ClusterNotificationPolicy> = Api::all(client.clone());
    let name = format!("default-{}", std::process::id() % 100_000);
    let policy: herald_api::ClusterNotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "ClusterNotificationPolicy",
        "metadata": {"name": name},
        "spec": {"receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:9/x"}}]}
    }))
    .unwrap();
    let created = policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "herald".into(),
        instance: Some("e2e".into()),
    };
    herald::controller::record_cluster_failure(
        &client,
        &reporter,
        &created.object_ref(&()),
        "hook",
        herald::metrics::Outcome::Failed,
    )
    .await
    .expect("the API server accepts the Event");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), herald::controller::CLUSTER_EVENTS_NAMESPACE);
    let found = events.list(&Default::default()).await.unwrap();
    assert!(found.items.iter().any(|e| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
            && e.reason.as_deref() == Some("DeliveryFailed")
    }));
    // It matches every event: the suites after this one must not send to it too.
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}
