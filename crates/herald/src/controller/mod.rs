//! `herald controller`: Herald in a cluster. Watches NotificationPolicies,
//! ClusterNotificationPolicies and the Secrets they use (status, the PolicySet), Canaries and
//! the Events Flagger records on them (notifications), serves the same HTTP API as
//! `herald serve`, and elects a leader with a Lease so that replicas do not notify twice.

pub mod canaries;
pub mod leader;
pub mod notifier;
pub mod policies;
pub mod record;
pub mod sources;
pub mod state;
pub mod watches;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use herald_api::{ClusterNotificationPolicy, NotificationPolicy};
use herald_core::{PolicyObject, PolicySet, PolicySetBuilder};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use self::canaries::CanaryNotifier;
use self::leader::{Fence, Leadership};
use self::policies::{Context, PolicyResource, ReceiverStats, StatusObserver};
use self::sources::EventSources;
use self::state::{StateStore, StateThreads};
use self::watches::WatchHealth;
use crate::delivery::{DeliveryConfig, Dispatcher, MemoryThreads};
use crate::metrics::{Metrics, Outcome};
use crate::server::{router, AppState};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub listen: SocketAddr,
    pub cluster: String,
    /// Herald's own namespace: its Lease, its state ConfigMap, cluster policies' Secrets.
    pub namespace: String,
    pub delivery: DeliveryConfig,
    pub body_limit: usize,
    pub drain_timeout: Duration,
    /// How long a terminal phase change waits for Flagger's own Event.
    pub phase_grace: Duration,
    /// How far apart the webhook's and the Event watch's reports of one action may arrive.
    pub pairing_window: Duration,
    pub state_configmap: String,
    /// `None` runs without leader election (one replica).
    pub lease_name: Option<String>,
    pub identity: String,
    /// The event token and the HTTP connection limits.
    pub http: crate::http::HttpOptions,
}

/// Runs until SIGTERM/SIGINT, then stops taking events, drains and saves its state.
pub async fn run(options: ControllerOptions) -> Result<ExitCode> {
    let client = Client::try_default().await?;
    let running = start(client, options).await?;
    crate::serve::shutdown_signal().await;
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// A started controller.
pub struct Running {
    pub addr: SocketAddr,
    pub app: AppState,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    state: Arc<Mutex<Option<Arc<StateStore>>>>,
    drain_timeout: Duration,
    leadership: Leadership,
}

impl Running {
    /// Stops taking events, delivers what is queued (the lease is still held and renewed
    /// meanwhile, so nothing queued is lost to the fence), saves the state, then releases the
    /// lease so the other replica takes over at once.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.app.dispatcher.drain(self.drain_timeout).await;
        let state = self.state.lock().expect("state slot").clone();
        let saved = match state {
            Some(state) => state.flush().await,
            None => Ok(()),
        };
        self.leadership.release().await;
        saved?;
        info!("controller stopped");
        Ok(())
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub async fn start(client: Client, options: ControllerOptions) -> Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let event_token = options.http.event_token()?;
    let stats = Arc::new(ReceiverStats::default());
    let (refresh_tx, refresh_rx) = tokio::sync::mpsc::unbounded_channel();
    let (failures_tx, failures_rx) = tokio::sync::mpsc::unbounded_channel();
    let observer = StatusObserver {
        stats: stats.clone(),
        refresh: refresh_tx,
        failures: failures_tx,
    };
    let state_slot: Arc<Mutex<Option<Arc<StateStore>>>> = Arc::default();
    let dispatcher = Dispatcher::with_parts(
        options.delivery.clone(),
        metrics.clone(),
        Some(Arc::new(observer)),
        Arc::new(StateThreads {
            slot: state_slot.clone(),
            fallback: MemoryThreads::new(),
        }),
    );
    // Flagger's webhook POSTs (the HTTP server) and watched Events (the leader) meet here.
    let sources = Arc::new(EventSources::new(
        options.pairing_window,
        state_slot.clone(),
    ));
    let app = AppState {
        policies: Arc::new(ArcSwap::from_pointee(PolicySet::empty())),
        dispatcher,
        metrics,
        body_limit: options.body_limit,
        ready: Arc::new(AtomicBool::new(false)),
        incoming: Some(sources.clone()),
        repeats: Default::default(),
        event_token,
        body_timeout: options.http.body_timeout(),
        store: None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let leadership = match &options.lease_name {
        None => Leadership::single(),
        Some(lease) => {
            Leadership::elect(client.clone(), &options.namespace, lease, &options.identity)
        }
    };
    let leader = leadership.leading.clone();

    let ctx = Arc::new(Context {
        client: client.clone(),
        herald_namespace: options.namespace.clone(),
        cluster: options.cluster.clone(),
        secrets: Default::default(),
        stats,
        rebuild: Default::default(),
        leader: leader.clone(),
        validated: Default::default(),
    });

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: options.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    {
        let app_router = router(app.clone());
        let stop = stopped(stop_rx.clone());
        let limits = options.http.limits;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::http::serve(listener, app_router, limits, stop).await {
                error!(error = %e, "HTTP server failed");
            }
        }));
    }

    // Status refreshes after deliveries, at most every 2 s, for both policy kinds.
    let (np_trigger, np_refresh) = futures::channel::mpsc::unbounded();
    let (cnp_trigger, cnp_refresh) = futures::channel::mpsc::unbounded();
    let reconcile_all = vec![np_trigger, cnp_trigger];
    tasks.push(tokio::spawn(throttle_refresh(
        refresh_rx,
        reconcile_all.clone(),
        stopped(stop_rx.clone()),
    )));

    let known = Arc::new(PoliciesKnown::default());
    let (np_store, np_task) = policy_controller::<NotificationPolicy>(
        &client,
        &ctx,
        np_refresh,
        known.namespaced.clone(),
        stop_rx.clone(),
    );
    let (cnp_store, cnp_task) = policy_controller::<ClusterNotificationPolicy>(
        &client,
        &ctx,
        cnp_refresh,
        known.cluster.clone(),
        stop_rx.clone(),
    );
    tasks.push(np_task);
    tasks.push(cnp_task);
    tasks.push(tokio::spawn(rebuild_policy_set(
        ctx.clone(),
        app.clone(),
        np_store.clone(),
        cnp_store.clone(),
        known.clone(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(publish_failures(
        client.clone(),
        options.identity.clone(),
        failures_rx,
        np_store,
        cnp_store,
        stopped(stop_rx.clone()),
    )));

    tasks.push(tokio::spawn(lead(
        client,
        options.clone(),
        app.clone(),
        Leaders {
            leading: leader,
            fence: leadership.fence.clone(),
        },
        reconcile_all,
        sources,
        known,
        stop_rx,
    )));
    info!(%addr, "herald controller started");
    Ok(Running {
        addr,
        app,
        stop,
        tasks,
        state: state_slot,
        drain_timeout: options.drain_timeout,
        leadership,
    })
}

/// Whether the PolicySet reflects the cluster's policies: both policy watches are synced,
/// and the set was built after their latest (re-)list.
#[derive(Default)]
pub struct PoliciesKnown {
    namespaced: Arc<WatchHealth>,
    cluster: Arc<WatchHealth>,
    /// The lists (of both watches together) the current set was built after.
    built_after: std::sync::atomic::AtomicU64,
}

impl PoliciesKnown {
    fn lists(&self) -> u64 {
        self.namespaced.lists() + self.cluster.lists()
    }

    fn synced(&self) -> bool {
        self.namespaced.is_synced() && self.cluster.is_synced()
    }

    pub fn known(&self) -> bool {
        self.synced() && self.built_after.load(Ordering::Acquire) == self.lists()
    }
}

/// One policy kind's controller: reconciles on policy changes, on changes of the Secrets it
/// uses, and on status refresh triggers. Secrets are watched by their metadata only: Herald
/// reads (GET) just the Secrets its policies name, when they change.
fn policy_controller<P: PolicyResource>(
    client: &Client,
    ctx: &Arc<Context>,
    refresh: futures::channel::mpsc::UnboundedReceiver<()>,
    health: Arc<WatchHealth>,
    stop: watch::Receiver<bool>,
) -> (Store<P>, tokio::task::JoinHandle<()>) {
    let (store, writer) = reflector::store();
    let policies = watches::backoff(watcher(
        Api::<P>::all(client.clone()),
        watcher::Config::default(),
    ))
    .inspect(move |item| health.observe(item))
    .reflect(writer)
    .touched_objects();
    let mapper_store = store.clone();
    let mapper_ctx = ctx.clone();
    let secret_changes = watches::backoff(watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default(),
    ))
    .filter_map(move |item| {
        // A re-list repeats every Secret: one cached at the same resourceVersion is unchanged.
        let unchanged = |m: &PartialObjectMeta<Secret>, seen: Option<&str>| {
            let (ns, name) = (m.namespace().unwrap_or_default(), m.name_any());
            mapper_ctx.secrets.contains(&ns, &name)
                && !mapper_ctx.secrets.is_stale(&ns, &name, seen)
        };
        let changed = match item {
            Ok(watcher::Event::Apply(m)) | Ok(watcher::Event::InitApply(m)) => {
                let seen = m.metadata.resource_version.clone();
                (!unchanged(&m, seen.as_deref())).then_some(m)
            }
            Ok(watcher::Event::Delete(m)) => Some(m),
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, "Secret watch error; retrying");
                None
            }
        };
        std::future::ready(changed.map(Ok::<_, watcher::Error>))
    });
    let secret_ctx = ctx.clone();
    let task = Controller::for_stream(policies, store.clone())
        .watches_stream(secret_changes, move |secret| {
            let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            if secret_ctx.secrets.contains(&namespace, &name) {
                // Read it again on the next reconcile, and rebuild.
                secret_ctx.secrets.forget(&namespace, &name);
                secret_ctx.rebuild.notify_one();
            }
            policies::policies_using(&mapper_store, &secret, &secret_ctx.herald_namespace)
        })
        .reconcile_all_on(refresh)
        .graceful_shutdown_on(stopped(stop))
        .run(
            policies::reconcile::<P>,
            policies::error_policy::<P>,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "policy controller");
            }
        });
    (store, tokio::spawn(task))
}

/// Batches delivery-triggered status refreshes: at most one every 2 seconds.
async fn throttle_refresh(
    mut refresh: tokio::sync::mpsc::UnboundedReceiver<()>,
    triggers: Vec<futures::channel::mpsc::UnboundedSender<()>>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            got = refresh.recv() => if got.is_none() { return },
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        while refresh.try_recv().is_ok() {}
        for trigger in &triggers {
            let _ = trigger.unbounded_send(());
        }
    }
}

/// Rebuilds the delivering PolicySet whenever a policy or a Secret changed.
async fn rebuild_policy_set(
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

/// A Warning Event on the policy for each notification that failed or was dropped.
async fn publish_failures(
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

/// This replica's standing: whether it leads, and until when it may act.
struct Leaders {
    leading: watch::Receiver<bool>,
    fence: Fence,
}

/// While this replica leads: load the delivery state, notify on canary events, save the
/// state every second.
#[allow(clippy::too_many_arguments)]
async fn lead(
    client: Client,
    options: ControllerOptions,
    app: AppState,
    leaders: Leaders,
    reconcile_all: Vec<futures::channel::mpsc::UnboundedSender<()>>,
    sources: Arc<EventSources>,
    known: Arc<PoliciesKnown>,
    stop: watch::Receiver<bool>,
) {
    let Leaders {
        leading: mut leader,
        fence,
    } = leaders;
    // On a first install, Events older than Herald's start are history and not replayed.
    // Event times have whole seconds: round down and allow one more, so an Event recorded
    // while Herald was starting (or electing a leader) is not mistaken for history.
    let now = jiff::Timestamp::now().as_millisecond();
    let history_before = now - now.rem_euclid(1000) - 1000;
    loop {
        tokio::select! {
            _ = stopped(stop.clone()) => return,
            res = leader.wait_for(|l| *l) => if res.is_err() { return },
        }
        info!("leading: writing policy status, notifying on canary events");
        // Followers skip status writes: catch up now.
        for trigger in &reconcile_all {
            let _ = trigger.unbounded_send(());
        }
        let state = match StateStore::load(
            client.clone(),
            &options.namespace,
            &options.state_configmap,
            history_before,
            fence.clone(),
        )
        .await
        {
            Ok(state) => Arc::new(state),
            Err(e) => {
                error!(error = %e, "cannot load the delivery state; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        // Shared with the delivery threads and the webhook side of the event pairing.
        *sources.state.lock().expect("state slot") = Some(state.clone());
        let lost = {
            let mut leader = leader.clone();
            let stop = stopped(stop.clone());
            async move {
                tokio::select! {
                    _ = stop => {}
                    _ = leader.wait_for(|l| !*l) => {}
                }
            }
        };
        let (done_tx, done_rx) = watch::channel(false);
        let flusher = {
            let state = state.clone();
            let done = stopped(done_rx);
            tokio::spawn(async move {
                tokio::pin!(done);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = &mut done => return,
                        _ = tick.tick() => { let _ = state.flush().await; }
                    }
                }
            })
        };
        let grace = options.phase_grace;
        let notifier_app = app.clone();
        let notifier_state = state.clone();
        let notifier_sources = sources.clone();
        let notifier_fence = fence.clone();
        let policies_app = app.clone();
        let policies_known = known.clone();
        canaries::run(
            client.clone(),
            move |canaries, namespaces| {
                CanaryNotifier::new(
                    notifier_app,
                    notifier_state,
                    canaries,
                    namespaces,
                    grace,
                    notifier_sources,
                )
                .with_fence(notifier_fence)
            },
            move || policies_app.ready.load(Ordering::Acquire) && policies_known.known(),
            lost,
        )
        .await;
        let _ = done_tx.send(true);
        let _ = flusher.await;
        if *stop.borrow() {
            return;
        }
        // Nothing is saved now: the fence is down, and the new leader owns the state.
        warn!("lost leadership: no longer notifying on canary events");
        *sources.state.lock().expect("state slot") = None;
    }
}
