//! `herald controller`: Herald in a cluster. Watches NotificationPolicies,
//! ClusterNotificationPolicies and the Secrets they use (status, the PolicySet), Canaries and
//! the Events Flagger records on them (notifications), serves the same HTTP API as
//! `herald serve`, and elects a leader with a Lease so that replicas do not notify twice.

pub mod approvals;
pub mod canaries;
mod failures;
mod gate;
mod intake;
pub mod leader;
mod leading;
pub mod notifier;
pub mod policies;
mod policy_set;
pub mod record;
pub mod sources;
pub mod state;
pub mod watches;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use herald_api::{ClusterNotificationPolicy, NotificationPolicy};
use herald_core::PolicySet;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{predicates, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use self::failures::publish_failures;
pub use self::failures::{record_cluster_failure, record_failure, CLUSTER_EVENTS_NAMESPACE};
use self::leader::Leadership;
use self::leading::{lead, Leaders};
use self::policies::{Context, PolicyResource, ReceiverStats, StatusObserver};
use self::policy_set::{rebuild_policy_set, PoliciesKnown};
use self::sources::EventSources;
use self::state::{StateStore, StateThreads};
use self::watches::WatchHealth;
use crate::api::{router, AppState};
use crate::delivery::{DeliveryConfig, Dispatcher, MemoryThreads};
use crate::metrics::Metrics;
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
    /// The durable queue for events received over HTTP (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Signed links, Slack's signing secret, the identity header.
    pub gates: crate::gates::GateOptions,
}

/// Runs until SIGTERM/SIGINT, then stops taking events, drains and saves its state.
pub async fn run(options: ControllerOptions) -> Result<ExitCode> {
    let signal = crate::serve::shutdown_signal();
    let client = Client::try_default().await?;
    let running = start(client, options).await?;
    signal.await;
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
        if let Some(store) = self.app.store.clone() {
            // What finished during the drain is not owed any more: persist that, and close.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
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
    let opened = match &options.state_dir {
        Some(dir) => Some(intake::open(dir, metrics.clone())?),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // Gate decisions: `Approval` resources, shared by every replica.
    let (approvals, approvals_task) = approvals::KubeApprovals::start(
        client.clone(),
        options.identity.clone(),
        stopped(stop_rx.clone()),
    );
    tasks.push(approvals_task);
    let mut gates = crate::gates::Gates::new(&options.gates, approvals.clone())?;
    gates.audit = Some(approvals);
    gates.decisions_over_http = false;
    let leadership = match &options.lease_name {
        None => Leadership::single(),
        Some(lease) => {
            Leadership::elect(client.clone(), &options.namespace, lease, &options.identity)
        }
    };
    // The leader sees every watched Event, so every close: only it repeats alerts.
    let open = match &options.state_dir {
        Some(dir) => crate::reposts::OpenNotifications::persisted(dir.join("open.json")),
        None => Default::default(),
    }
    .only_while(leadership.fence.checker());
    let app = AppState {
        gates: Arc::new(gates),
        policies: Arc::new(ArcSwap::from_pointee(PolicySet::empty())),
        dispatcher,
        metrics,
        body_limit: options.body_limit,
        ready: Arc::new(AtomicBool::new(false)),
        incoming: Some(sources.clone()),
        repeats: Default::default(),
        open: Arc::new(open),
        event_token,
        body_timeout: options.http.body_timeout(),
        store: opened.as_ref().map(|o| o.store.clone()),
    };
    tasks.push(tokio::spawn(crate::reposts::run(
        app.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::gates::run_reminders(
        app.clone(),
        stop_rx.clone(),
        options.gates.reminder_check(),
    )));

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
        let app_router = intake::gate(router(app.clone()), sources.clone(), app.metrics.clone());
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

    tasks.push(tokio::spawn(intake::open_when_ready(
        intake::Opening {
            app: app.clone(),
            stored: opened.map(|o| (o.store, o.events)),
            sources: sources.clone(),
            known: known.clone(),
            leading: leader.clone(),
        },
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
    .touched_objects()
    // Only spec changes trigger a reconcile: Herald's own status writes would otherwise
    // trigger the next one, and during a burst of deliveries each policy's status was
    // written about ten times a second. Refreshes come from `reconcile_all_on` (at most
    // every 2 s), deletions from the PolicySet's store comparison.
    .predicate_filter(predicates::generation, Default::default());
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
