//! Warning Events on policies whose notifications failed or were dropped.

use herald_api::{ClusterNotificationPolicy, NotificationPolicy};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use tracing::warn;

use crate::metrics::Outcome;

/// A Warning Event on the policy for each notification that failed or was dropped.
pub(super) async fn publish_failures(
    client: Client,
    identity: String,
    mut failures: tokio::sync::mpsc::UnboundedReceiver<(herald_core::PolicyId, String, Outcome)>,
    namespaced: Store<NotificationPolicy>,
    cluster: Store<ClusterNotificationPolicy>,
    stop: impl std::future::Future<Output = ()>,
) {
    let reporter = Reporter {
        controller: "herald".into(),
        instance: Some(identity),
    };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    tokio::pin!(stop);
    loop {
        let (policy, receiver, outcome) = tokio::select! {
            _ = &mut stop => return,
            failure = failures.recv() => match failure { Some(f) => f, None => return },
        };
        let reference = match &policy.namespace {
            Some(ns) => namespaced
                .get(&ObjectRef::new(&policy.name).within(ns))
                .map(|p| p.object_ref(&())),
            None => cluster
                .get(&ObjectRef::new(&policy.name))
                .map(|p| p.object_ref(&())),
        };
        let Some(reference) = reference else { continue };
        let recorded = match reference.namespace {
            Some(_) => record_failure(&recorder, &reference, &receiver, outcome).await,
            None => {
                record_cluster_failure(&client, &reporter, &reference, &receiver, outcome).await
            }
        };
        if let Err(e) = recorded {
            warn!(error = %e, "could not record a Kubernetes Event");
        }
    }
}

/// Records a Warning Event on a policy for a notification that failed or was dropped. The
/// note names the receiver, never its URL.
pub async fn record_failure(
    recorder: &Recorder,
    policy: &k8s_openapi::api::core::v1::ObjectReference,
    receiver: &str,
    outcome: Outcome,
) -> std::result::Result<(), kube::Error> {
    let (reason, note) = failure_note(receiver, outcome);
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Notify".into(),
        secondary: None,
    };
    recorder.publish(&event, policy).await
}

fn failure_note(receiver: &str, outcome: Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Failed => (
            "DeliveryFailed",
            format!("notification to receiver {receiver} failed; see Herald's logs"),
        ),
        Outcome::Timeout | Outcome::Unknown => (
            "DeliveryUncertain",
            format!("notification to receiver {receiver} timed out or was in flight at shutdown: it may have arrived; see Herald's logs"),
        ),
        _ => (
            "DeliveryDropped",
            format!("notification to receiver {receiver} was dropped (queue full, shutdown or lost lease)"),
        ),
    }
}

/// Where the Events of cluster-scoped objects go: API servers before 1.22 accept an
/// events.k8s.io Event about a cluster-scoped object only in `kube-system` (kube's recorder
/// uses `default`, refused with "involvedObject.namespace: does not match event.namespace");
/// newer ones accept `kube-system` too.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "kube-system";

/// Records a Warning Event on a ClusterNotificationPolicy (see [`CLUSTER_EVENTS_NAMESPACE`]).
pub async fn record_cluster_failure(
    client: &Client,
    reporter: &Reporter,
    policy: &k8s_openapi::api::core::v1::ObjectReference,
    receiver: &str,
    outcome: Outcome,
) -> std::result::Result<(), kube::Error> {
    use k8s_openapi::api::events::v1::Event as ApiEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let (reason, note) = failure_note(receiver, outcome);
    let now = jiff::Timestamp::now();
    let event = ApiEvent {
        metadata: kube::api::ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                policy.name.as_deref().unwrap_or("herald"),
                now.as_nanosecond()
            )),
            namespace: Some(CLUSTER_EVENTS_NAMESPACE.to_owned()),
            ..Default::default()
        },
        action: Some("Notify".into()),
        reason: Some(reason.into()),
        note: Some(note),
        type_: Some("Warning".into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(policy.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: reporter.instance.clone(),
        ..Default::default()
    };
    Api::<ApiEvent>::namespaced(client.clone(), CLUSTER_EVENTS_NAMESPACE)
        .create(&kube::api::PostParams::default(), &event)
        .await
        .map(|_| ())
}
