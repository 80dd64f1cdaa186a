//! The PolicySet the controller delivers with: built from both policy kinds' stores and the
//! cached Secrets, rebuilt when either changes, and known to reflect the cluster only while
//! both policy watches are synced.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_api::{ClusterNotificationPolicy, NotificationPolicy};
use herald_core::{PolicyObject, PolicySet, PolicySetBuilder};
use kube::runtime::reflector::Store;
use kube::Resource;
use tracing::{debug, info, warn};

use super::policies::{self, Context, PolicyResource};
use super::watches::WatchHealth;
use crate::api::AppState;

/// Whether the PolicySet reflects the cluster's policies: both policy watches are synced,
/// and the set was built after their latest (re-)list.
#[derive(Default)]
pub struct PoliciesKnown {
    pub(super) namespaced: Arc<WatchHealth>,
    pub(super) cluster: Arc<WatchHealth>,
    /// The lists (of both watches together) the current set was built after.
    built_after: std::sync::atomic::AtomicU64,
    /// When every policy disappeared at once (the set became empty after holding some).
    emptied_at: std::sync::Mutex<Option<Instant>>,
}

/// How long watched Events wait after every policy disappeared at once. That is what
/// re-creating Herald's CRDs looks like (deleting a CRD deletes its objects; they are
/// applied again moments later), and Events of that window would otherwise match nothing.
/// A first install with no policy yet does not wait: nothing disappeared.
pub const EMPTIED_GRACE: Duration = Duration::from_secs(60);

impl PoliciesKnown {
    fn lists(&self) -> u64 {
        self.namespaced.lists() + self.cluster.lists()
    }

    fn synced(&self) -> bool {
        self.namespaced.is_synced() && self.cluster.is_synced()
    }

    pub fn known(&self) -> bool {
        let emptied = *self.emptied_at.lock().expect("policies lock");
        self.synced()
            && self.built_after.load(Ordering::Acquire) == self.lists()
            && emptied.is_none_or(|at| at.elapsed() >= EMPTIED_GRACE)
    }

    /// Follows the sizes of the sets built.
    fn built(&self, before: usize, now: usize) {
        let mut emptied = self.emptied_at.lock().expect("policies lock");
        if now > 0 {
            *emptied = None;
        } else if before > 0 {
            warn!(grace = ?EMPTIED_GRACE, "every policy disappeared at once (Herald's CRDs re-created?): watched Events wait for them to come back");
            *emptied = Some(Instant::now());
        }
    }
}

/// Rebuilds the delivering PolicySet whenever a policy or a Secret changed.
pub(super) async fn rebuild_policy_set(
    ctx: Arc<Context>,
    app: AppState,
    namespaced: Store<NotificationPolicy>,
    cluster: Store<ClusterNotificationPolicy>,
    known: Arc<PoliciesKnown>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => return,
        _ = async { listed(&namespaced).await; listed(&cluster).await; } => {}
    }
    let mut built_from: Option<PolicySetInputs> = None;
    loop {
        // Read before the stores: a list completing meanwhile makes the next round rebuild.
        let lists = known.lists();
        let synced = known.synced();
        let inputs = PolicySetInputs::of(&ctx, &namespaced, &cluster);
        if !synced {
            debug!("a policy watch is not synced: events wait until it has listed again");
        } else if inputs.known()
            && built_from.as_ref() == Some(&inputs)
            && known.built_after.load(Ordering::Acquire) == lists
        {
            // Nothing to fetch either: a Secret Herald may not read is asked for again on the
            // next change, not every second.
            debug!("policies and Secrets unchanged: the PolicySet is kept");
        } else {
            // Secrets first: the reconciles may not have fetched them all yet, and a set
            // built without them would wrongly leave policies out.
            for object in all_policies(&namespaced, &cluster) {
                if let Err(e) = ctx
                    .secrets
                    .fetch_missing(&ctx.client, &object, &ctx.herald_namespace)
                    .await
                {
                    warn!(policy = %object.id(), error = %e, "cannot read a Secret of this policy");
                }
            }
            // The fetches may have changed the Secret cache.
            let inputs = PolicySetInputs::of(&ctx, &namespaced, &cluster);
            let set = build_policy_set(&ctx, &namespaced, &cluster);
            app.metrics.policies_loaded.set(set.policies().len() as i64);
            info!(
                valid = set.policies().len(),
                invalid = set.problems().len(),
                "policies in effect"
            );
            let before =
                app.policies.load().policies().len() + app.policies.load().problems().len();
            known.built(before, set.policies().len() + set.problems().len());
            app.policies.store(Arc::new(set));
            built_from = Some(inputs);
            known.built_after.store(lists, Ordering::Release);
        }
        app.ready.store(true, Ordering::Release);
        tokio::select! {
            _ = &mut stop => return,
            _ = ctx.rebuild.notified() => {
                // Let a burst of changes settle into one rebuild.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A deleted policy is never reconciled: its absence is noticed here, by comparing
            // the stores with what the set was built from.
            _ = tokio::time::sleep(DELETION_CHECK) => {}
        }
    }
}

/// Waits until a store holds the initial list. Polls `wait_until_ready` with a timeout: its
/// wake-up was seen to be missed here, which left Herald unready until the next change.
async fn listed<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// How often the policy stores are compared with what the PolicySet was built from.
const DELETION_CHECK: Duration = Duration::from_secs(1);

/// What a PolicySet is built from: every policy's spec revision and the Secret cache's
/// version. Reconciles ask for a rebuild often (status refreshes after deliveries); equal
/// inputs would build an equal set, so the rebuild is skipped.
#[derive(PartialEq, Eq)]
struct PolicySetInputs {
    revisions: Vec<String>,
    secrets: u64,
}

impl PolicySetInputs {
    fn of(
        ctx: &Context,
        namespaced: &Store<NotificationPolicy>,
        cluster: &Store<ClusterNotificationPolicy>,
    ) -> Self {
        let mut revisions: Vec<String> = namespaced
            .state()
            .iter()
            .map(|p| policies::spec_revision(p.meta()))
            .chain(
                cluster
                    .state()
                    .iter()
                    .map(|p| policies::spec_revision(p.meta())),
            )
            .collect();
        revisions.sort_unstable();
        PolicySetInputs {
            revisions,
            secrets: ctx.secrets.version(),
        }
    }

    /// False when some policy's revision is unknown (no uid or generation): then always build.
    fn known(&self) -> bool {
        self.revisions.iter().all(|r| !r.is_empty())
    }
}

/// The policies of both kinds in the stores.
fn all_policies(
    namespaced: &Store<NotificationPolicy>,
    cluster: &Store<ClusterNotificationPolicy>,
) -> impl Iterator<Item = PolicyObject> {
    namespaced
        .state()
        .into_iter()
        .map(|p| p.to_object())
        .chain(cluster.state().into_iter().map(|p| p.to_object()))
}

/// Every valid policy of both kinds, compiled against the cached Secrets.
fn build_policy_set(
    ctx: &Context,
    namespaced: &Store<NotificationPolicy>,
    cluster: &Store<ClusterNotificationPolicy>,
) -> PolicySet {
    let mut builder = PolicySetBuilder::new(
        &ctx.secrets,
        ctx.cluster.clone(),
        ctx.herald_namespace.clone(),
    );
    for object in all_policies(namespaced, cluster) {
        // A policy with problems is left out; its reconcile reports them in its status.
        let _ = builder.add(&object);
    }
    builder.build()
}
