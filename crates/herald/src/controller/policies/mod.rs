//! NotificationPolicy and ClusterNotificationPolicy reconciliation: validate, resolve
//! Secrets, write status (server-side apply), and keep the delivering PolicySet current.
//!
//! - this file: the reconciler, and the validation it caches per spec revision;
//! - `secrets`: the Secrets policies refer to, cached and watched;
//! - `status`: the status a policy is given, from its problems and its receivers' results.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_api::{ClusterNotificationPolicy, NotificationPolicy, PolicyStatus};
use herald_core::{PolicyId, PolicyObject, PolicySetBuilder, Problem};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, instrument, warn};

use crate::Result;

mod secrets;
mod status;

pub use secrets::{secret_refs, SecretCache};
pub use status::{desired_status, ReceiverStats, StatusObserver};

/// The field manager of Herald's status writes.
pub const FIELD_MANAGER: &str = "herald";

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
