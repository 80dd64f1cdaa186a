//! Helpers for the tests against a real kube-apiserver (`tests/e2e/run.sh`): CRDs,
//! namespaces, controller options, and Events and Canary phases written the way Flagger
//! writes them.

use std::time::{Duration, Instant};

use herald::controller::{state, ControllerOptions};
use herald::delivery::DeliveryConfig;
use herald_api::flagger::{Canary, CanaryStatus};
use herald_api::NotificationPolicy;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, ObjectReference};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("KUBECONFIG points at the test API server (tests/e2e/run.sh)")
}

/// Installs Herald's CRDs and a stand-in Canary CRD. `create`, not server-side apply: the 1.20
/// API server rejects CEL rules under SSA but accepts (and ignores) them on create.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in herald_api::crds().into_iter().chain([Canary::crd()]) {
        let name = crd.name_any();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating CRD {name}: {e}"),
        }
        tokio::time::timeout(
            WAIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .unwrap();
    }
}

pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", std::process::id() % 100_000);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    name
}

pub fn controller_options(namespace: &str) -> ControllerOptions {
    ControllerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster: "e2e".to_owned(),
        namespace: namespace.to_owned(),
        delivery: DeliveryConfig {
            max_attempts: 3,
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            ..DeliveryConfig::default()
        },
        body_limit: herald::api::DEFAULT_BODY_LIMIT,
        http: Default::default(),
        drain_timeout: Duration::from_secs(5),
        phase_grace: Duration::from_millis(500),
        pairing_window: Duration::from_secs(30),
        state_configmap: "herald-state".to_owned(),
        lease_name: Some("herald-leader".to_owned()),
        identity: "e2e-replica".to_owned(),
        state_dir: None,
        gates: Default::default(),
    }
}

pub async fn ready_condition(
    api: &Api<NotificationPolicy>,
    name: &str,
    want: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let policy = api.get(name).await.unwrap();
        let ready = policy
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        if let Some(ready) = ready {
            if ready.status == want {
                return serde_json::to_value(&policy.status).unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "policy {name} never became Ready={want}: {:?}",
            policy.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the state ConfigMap's entry `key` satisfies `saved` (the state is flushed in
/// the background).
pub async fn state_entry(
    client: &Client,
    herald_ns: &str,
    key: &str,
    saved: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let shard = state::shard_name("herald-state", state::shard_of(key, state::SHARDS));
        let cm = Api::<ConfigMap>::namespaced(client.clone(), herald_ns)
            .get_opt(&shard)
            .await
            .unwrap()
            .unwrap_or_default();
        let entry = cm
            .data
            .unwrap_or_default()
            .get(key)
            .cloned()
            .unwrap_or_default();
        if saved(&entry) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "state entry {key} never saved: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records an Event on a Canary the way Flagger's event recorder does.
pub async fn flagger_event(
    client: &Client,
    ns: &str,
    canary: &str,
    name: &str,
    message: &str,
    kind: &str,
) {
    flagger_event_at(
        client,
        ns,
        canary,
        name,
        message,
        kind,
        jiff::Timestamp::now(),
    )
    .await
}

/// Records an Event on a Canary as Flagger's event recorder does, as of `now`.
pub async fn flagger_event_at(
    client: &Client,
    ns: &str,
    canary: &str,
    name: &str,
    message: &str,
    kind: &str,
    now: jiff::Timestamp,
) {
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("flagger.app/v1beta1".into()),
            kind: Some("Canary".into()),
            name: Some(canary.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        reason: Some("Synced".into()),
        message: Some(message.into()),
        type_: Some(kind.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("flagger".into()),
            host: None,
        }),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
}

/// Creates the Canary `name` in `ns`, targeting the Deployment of the same name.
pub async fn create_canary(client: &Client, ns: &str, name: &str) {
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}}
    }))
    .unwrap();
    Api::<Canary>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &canary)
        .await
        .unwrap();
}

pub async fn set_phase(client: &Client, ns: &str, canary: &str, phase: &str) {
    let status = CanaryStatus {
        phase: Some(phase.into()),
        canary_weight: Some(10),
        last_applied_spec: Some("rev-1".into()),
        last_transition_time: Some(jiff::Timestamp::now().to_string()),
        ..Default::default()
    };
    Api::<Canary>::namespaced(client.clone(), ns)
        .patch_status(
            canary,
            &PatchParams::apply("flagger-e2e").force(),
            &Patch::Apply(
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "status": status}),
            ),
        )
        .await
        .unwrap();
}

/// Deletes the Events, Canaries and NotificationPolicies of `ns`. The suites share one API
/// server without a namespace controller, and every controller watches the whole cluster:
/// what a test leaves (say, the Event of a Canary it deleted, which a controller waits for)
/// is replayed by the next suite's controllers.
pub async fn clear_namespace(client: &Client, ns: &str) {
    let all = kube::api::DeleteParams::default();
    let every = kube::api::ListParams::default();
    Api::<Event>::namespaced(client.clone(), ns)
        .delete_collection(&all, &every)
        .await
        .unwrap();
    Api::<Canary>::namespaced(client.clone(), ns)
        .delete_collection(&all, &every)
        .await
        .unwrap();
    Api::<NotificationPolicy>::namespaced(client.clone(), ns)
        .delete_collection(&all, &every)
        .await
        .unwrap();
}
