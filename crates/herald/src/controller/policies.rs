//! NotificationPolicy and ClusterNotificationPolicy reconciliation: validate, resolve
//! Secrets, write status (server-side apply), and keep the delivering PolicySet current.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herald_api::{ClusterNotificationPolicy, NotificationPolicy, PolicyStatus, ReceiverStatus};
use herald_core::{PolicyId, PolicyObject, PolicySetBuilder, Problem, SecretError, SecretSource};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, instrument, warn};

use crate::delivery::DeliveryObserver;
use crate::metrics::Outcome;
use crate::Result;

/// The field manager of Herald's status writes.
pub const FIELD_MANAGER: &str = "herald";
/// Longest `Ready` condition message; the API server allows 32 KiB, people read far less.
const MAX_MESSAGE: usize = 1024;

/// Both policy kinds, for code that treats them alike.
pub trait PolicyResource:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    fn to_object(&self) -> PolicyObject;
    fn status(&self) -> Option<&PolicyStatus>;
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
}

impl PolicyResource for NotificationPolicy {
    fn to_object(&self) -> PolicyObject {
        PolicyObject::Namespaced(self.clone())
    }
    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or("default"))
    }
}

impl PolicyResource for ClusterNotificationPolicy {
    fn to_object(&self) -> PolicyObject {
        PolicyObject::Cluster(self.clone())
    }
    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// Secret data of the Secrets policies refer to: fetched on first use, dropped when the
/// Secret changes (the watch), fetched again on the next reconcile. `None` = known missing.
#[derive(Default)]
pub struct SecretCache {
    entries: RwLock<HashMap<(String, String), Option<SecretData>>>,
    /// The `resourceVersion` each cached Secret was read at: the metadata-only watch of
    /// Secrets compares it to tell a change from a re-list.
    read_at: RwLock<HashMap<(String, String), String>>,
    /// Counts changes to `entries`: validations made at an older version may be stale.
    version: AtomicU64,
}

/// A Secret's keys and decoded values.
type SecretData = BTreeMap<String, Vec<u8>>;

impl SecretCache {
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        self.entries.write().expect("cache lock").remove(&key);
        self.read_at.write().expect("cache lock").remove(&key);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// True when the Secret is cached at another `resourceVersion` than `seen` (a watched
    /// change), or is cached and `seen` is `None` (deleted).
    pub fn is_stale(&self, namespace: &str, name: &str, seen: Option<&str>) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        if !self.entries.read().expect("cache lock").contains_key(&key) {
            return false;
        }
        let read_at = self.read_at.read().expect("cache lock");
        match (seen, read_at.get(&key)) {
            (Some(seen), Some(read)) => seen != read,
            // Read as missing and now seen, or deleted.
            _ => true,
        }
    }

    /// Changes whenever a Secret is cached or forgotten.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.entries
            .read()
            .expect("cache lock")
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn insert(&self, namespace: &str, name: &str, secret: Option<&Secret>) {
        let data = secret.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            for (k, v) in s.string_data.iter().flatten() {
                data.insert(k.clone(), v.clone().into_bytes());
            }
            data
        });
        let key = (namespace.to_owned(), name.to_owned());
        let version = secret.and_then(|s| s.metadata.resource_version.clone());
        {
            let mut read_at = self.read_at.write().expect("cache lock");
            match version {
                Some(v) => read_at.insert(key.clone(), v),
                None => read_at.remove(&key),
            };
        }
        self.entries.write().expect("cache lock").insert(key, data);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Fetches the Secrets `policy` refers to that are not cached yet.
    pub async fn fetch_missing(
        &self,
        client: &Client,
        policy: &PolicyObject,
        herald_namespace: &str,
    ) -> Result<()> {
        for (namespace, name) in secret_refs(policy, herald_namespace) {
            if self.contains(&namespace, &name) {
                continue;
            }
            let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
                .get_opt(&name)
                .await?;
            self.insert(&namespace, &name, secret.as_ref());
        }
        Ok(())
    }
}

impl SecretSource for SecretCache {
    fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> std::result::Result<String, SecretError> {
        let entries = self.entries.read().expect("cache lock");
        let not_found = || SecretError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let data = entries
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(Option::as_ref)
            .ok_or_else(not_found)?;
        let mut store = herald_core::SecretStore::default();
        store.insert(namespace, name, data.clone());
        store.secret_value(namespace, name, key)
    }
}

/// The Secrets (namespace, name) a policy refers to. Cluster policies read Herald's namespace.
pub fn secret_refs(policy: &PolicyObject, herald_namespace: &str) -> Vec<(String, String)> {
    let namespace = policy
        .id()
        .namespace
        .unwrap_or_else(|| herald_namespace.to_owned());
    let mut refs: Vec<(String, String)> = policy
        .rules()
        .receivers
        .iter()
        .flat_map(|r| {
            r.secret_refs()
                .map(|secret| (namespace.clone(), secret.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// Per-receiver delivery results, for the policies' status.
#[derive(Default)]
pub struct ReceiverStats {
    entries: Mutex<HashMap<(PolicyId, String), ReceiverStatus>>,
}

impl ReceiverStats {
    /// Starts from what an earlier Herald wrote in the status, so counts survive restarts.
    pub fn seed(&self, id: &PolicyId, status: Option<&PolicyStatus>) {
        let mut entries = self.entries.lock().expect("stats lock");
        for receiver in status.map(|s| s.receivers.as_slice()).unwrap_or_default() {
            entries
                .entry((id.clone(), receiver.name.clone()))
                .or_insert_with(|| receiver.clone());
        }
    }

    pub fn get(&self, id: &PolicyId, receiver: &str) -> ReceiverStatus {
        let entries = self.entries.lock().expect("stats lock");
        entries
            .get(&(id.clone(), receiver.to_owned()))
            .cloned()
            .unwrap_or_else(|| ReceiverStatus {
                name: receiver.to_owned(),
                ..ReceiverStatus::default()
            })
    }

    pub fn record(&self, id: &PolicyId, receiver: &str, outcome: Outcome, at: &str) {
        let mut entries = self.entries.lock().expect("stats lock");
        let entry = entries
            .entry((id.clone(), receiver.to_owned()))
            .or_insert_with(|| ReceiverStatus {
                name: receiver.to_owned(),
                ..ReceiverStatus::default()
            });
        entry.last_delivery_time = Some(at.to_owned());
        entry.last_outcome = Some(
            match outcome {
                Outcome::Delivered => "Delivered",
                Outcome::Failed => "Failed",
                Outcome::Dropped => "Dropped",
                Outcome::Deferred => "Deferred",
                Outcome::Timeout => "Timeout",
                Outcome::Unknown => "Unknown",
            }
            .to_owned(),
        );
        // A deferred notification is sent by the next process: not a failure.
        if !matches!(outcome, Outcome::Delivered | Outcome::Deferred) {
            entry.failures += 1;
        }
    }
}

/// The status a policy should have: `Ready` from its problems, receivers from the stats.
/// `previous` keeps `lastTransitionTime` when `Ready` does not change.
pub fn desired_status(
    object: &PolicyObject,
    problems: &[Problem],
    stats: &ReceiverStats,
    previous: Option<&PolicyStatus>,
    now: &Time,
) -> PolicyStatus {
    let id = object.id();
    let rules = object.rules();
    let (status, reason, message) = if !problems.is_empty() {
        let reason = problems
            .iter()
            .map(|p| p.reason)
            .min()
            .expect("not empty")
            .as_str();
        let mut message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE - 1;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ("False", reason, message)
    } else if rules.suspend {
        (
            "False",
            "Suspended",
            "spec.suspend is true: no notifications are sent".to_owned(),
        )
    } else {
        (
            "True",
            "Ready",
            format!("{} receiver(s) ready", rules.receivers.len()),
        )
    };
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    PolicyStatus {
        observed_generation: object.generation(),
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: object.generation(),
        }],
        receiver_kinds: rules.receiver_kinds(),
        receivers: rules
            .receivers
            .iter()
            .map(|r| stats.get(&id, &r.name))
            .collect(),
    }
}

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub herald_namespace: String,
    pub cluster: String,
    pub secrets: SecretCache,
    pub stats: Arc<ReceiverStats>,
    /// Set when policies or Secrets change: the PolicySet is rebuilt.
    pub rebuild: tokio::sync::Notify,
    /// Only the leader writes status.
    pub leader: tokio::sync::watch::Receiver<bool>,
    /// Each policy's problems, with the revision and Secrets they were found at: reconciles
    /// that only refresh delivery counts do not compile the policy again.
    pub validated: Mutex<HashMap<PolicyId, ValidatedAt>>,
}

/// A policy's problems at one revision of it and of the Secret cache.
pub struct ValidatedAt {
    revision: String,
    secrets: u64,
    problems: Vec<Problem>,
}

/// What identifies a policy's spec: its uid and `metadata.generation`, which the API server
/// bumps on spec changes only (status writes leave it alone). Empty when unknown.
pub fn spec_revision(meta: &kube::api::ObjectMeta) -> String {
    match (&meta.uid, meta.generation) {
        (Some(uid), Some(generation)) => format!("{uid}/{generation}"),
        _ => String::new(),
    }
}

/// Validates one policy against the cached Secrets; its problems, if any.
pub fn validate(object: &PolicyObject, ctx: &Context) -> Vec<Problem> {
    let mut builder = PolicySetBuilder::new(
        &ctx.secrets,
        ctx.cluster.clone(),
        ctx.herald_namespace.clone(),
    );
    builder.add(object).err().unwrap_or_default()
}

/// The policy's problems, validated again only when its spec or the Secrets changed since
/// the last time; a change also asks for the PolicySet to be rebuilt.
fn problems_of(object: &PolicyObject, revision: String, ctx: &Context) -> Vec<Problem> {
    let id = object.id();
    let secrets = ctx.secrets.version();
    if !revision.is_empty() {
        let validated = ctx.validated.lock().expect("validation cache lock");
        if let Some(at) = validated.get(&id) {
            if at.revision == revision && at.secrets == secrets {
                return at.problems.clone();
            }
        }
    }
    let problems = validate(object, ctx);
    ctx.validated.lock().expect("validation cache lock").insert(
        id,
        ValidatedAt {
            revision,
            secrets,
            problems: problems.clone(),
        },
    );
    ctx.rebuild.notify_one();
    problems
}

#[instrument(skip_all, fields(policy = %policy.name_any(), namespace = ?policy.namespace()))]
pub async fn reconcile<P: PolicyResource>(policy: Arc<P>, ctx: Arc<Context>) -> Result<Action> {
    let object = policy.to_object();
    let id = object.id();
    ctx.secrets
        .fetch_missing(&ctx.client, &object, &ctx.herald_namespace)
        .await?;
    let problems = problems_of(&object, spec_revision(policy.meta()), &ctx);
    if !*ctx.leader.borrow() {
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    ctx.stats.seed(&id, policy.status());
    let status = desired_status(
        &object,
        &problems,
        &ctx.stats,
        policy.status(),
        &Time(jiff::Timestamp::now()),
    );
    if policy.status() != Some(&status) {
        let api = P::api(ctx.client.clone(), policy.namespace().as_deref());
        let patch = serde_json::json!({
            "apiVersion": P::api_version(&()),
            "kind": P::kind(&()),
            "status": status,
        });
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        debug!(ready = %status.conditions[0].status, reason = %status.conditions[0].reason, "status written");
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

pub fn error_policy<P: PolicyResource>(
    policy: Arc<P>,
    error: &crate::Error,
    _: Arc<Context>,
) -> Action {
    warn!(policy = %policy.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Policies referring to a Secret (for the Secret watch).
pub fn policies_using<P: PolicyResource>(
    store: &Store<P>,
    secret: &impl ResourceExt,
    herald_namespace: &str,
) -> Vec<ObjectRef<P>> {
    let key = (secret.namespace().unwrap_or_default(), secret.name_any());
    store
        .state()
        .iter()
        .filter(|p| secret_refs(&p.to_object(), herald_namespace).contains(&key))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Feeds delivery outcomes into the receiver stats and, for failures, a Kubernetes Event on
/// the policy; asks for a status refresh.
pub struct StatusObserver {
    pub stats: Arc<ReceiverStats>,
    pub refresh: tokio::sync::mpsc::UnboundedSender<()>,
    pub failures: tokio::sync::mpsc::UnboundedSender<(PolicyId, String, Outcome)>,
}

impl DeliveryObserver for StatusObserver {
    fn finished(&self, policy: &PolicyId, receiver: &str, outcome: Outcome) {
        self.stats.record(
            policy,
            receiver,
            outcome,
            &jiff::Timestamp::now().to_string(),
        );
        let _ = self.refresh.send(());
        if outcome != Outcome::Delivered {
            let _ = self
                .failures
                .send((policy.clone(), receiver.to_owned(), outcome));
        }
    }
}

#[cfg(test)]
mod secret_ref_tests {
    use super::secret_refs;
    use herald_api::NotificationPolicy;
    use herald_core::PolicyObject;

    /// Every receiver kind's Secret is fetched (and watched), or its policy never gets Ready.
    #[test]
    fn every_kind_names_its_secret() {
        let policy: NotificationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"receivers": [
                {"name": "a", "slack": {"secretRef": {"name": "slack"}}},
                {"name": "b", "msteams": {"secretRef": {"name": "teams"}}},
                {"name": "c", "webhook": {"secretRef": {"name": "hook"}}},
                {"name": "d", "discord": {"secretRef": {"name": "discord"}}},
                {"name": "e", "googlechat": {"secretRef": {"name": "gchat", "key": "url"}}},
                {"name": "f", "rocketchat": {"secretRef": {"name": "rocket"}}},
                {"name": "g", "rocketchat": {"url": "https://rocket.example.com/hooks/x"}}
            ]}
        }))
        .unwrap();
        let refs = secret_refs(&PolicyObject::Namespaced(policy), "herald");
        let names: Vec<&str> = refs.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(
            names,
            ["discord", "gchat", "hook", "rocket", "slack", "teams"]
        );
        assert!(refs.iter().all(|(ns, _)| ns == "team"));
    }

    /// Credentials in their own Secrets are fetched too: a bot token, a bearer token, a
    /// signing key (else a policy using them never compiles in a cluster).
    #[test]
    fn credential_secrets_are_named_too() {
        let policy: NotificationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"receivers": [
                {"name": "bot", "slack": {"tokenSecretRef": {"name": "slack-bot"}, "channel": "C1"}},
                {"name": "hook", "webhook": {
                    "secretRef": {"name": "hook-url"},
                    "bearerTokenSecretRef": {"name": "hook-token"},
                    "signature": {"secretRef": {"name": "hook-key"}}
                }}
            ]}
        }))
        .unwrap();
        let refs = secret_refs(&PolicyObject::Namespaced(policy), "herald");
        let names: Vec<&str> = refs.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["hook-key", "hook-token", "hook-url", "slack-bot"]);
    }
}
