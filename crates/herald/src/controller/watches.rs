//! The watches that feed the notifier: Canaries, their Events and Namespaces. Events of a
//! (re-)list are handed over in the order they happened, not the API's order (by name).
//! The notifier waits, rather than sending something wrong or losing an Event, while the
//! policies are not known (a policy watch broken, e.g. Herald's CRDs being re-created), while
//! an Event's Canary is not known yet (the Canary CRD re-created), and while a receiver's
//! queue is nearly full (a replay after downtime goes at the receivers' pace).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStream};
use herald_api::flagger::Canary;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::runtime::reflector::Store;
use kube::runtime::utils::StreamBackoff;
use kube::runtime::watcher::{self, ExponentialBackoff};
use kube::runtime::{reflector, watcher as watch_api, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::canaries::{observe_event, ObservedEvent};
use super::notifier::{CanaryNotifier, Input};
use super::state::{CanaryRef, StateStore};

/// How long an Event waits for its Canary to appear in the store before it is sent without
/// the Canary's phase, labels and revision.
const CANARY_WAIT: Duration = Duration::from_secs(10);

/// Whether a watch is in sync with the API server: false from an error until it has listed
/// again. Kubernetes' own clients call this "synced".
#[derive(Default)]
pub struct WatchHealth {
    synced: AtomicBool,
    /// Completed (re-)lists: whatever was built from the watch's store before the latest one
    /// may be stale.
    lists: AtomicU64,
}

impl WatchHealth {
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Acquire)
    }

    /// Follows a watch stream's items.
    pub fn observe<K>(&self, item: &Result<watcher::Event<K>, watcher::Error>) {
        match item {
            Ok(watcher::Event::InitDone) => {
                self.lists.fetch_add(1, Ordering::AcqRel);
                self.synced.store(true, Ordering::Release);
            }
            Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) => {
                self.synced.store(true, Ordering::Release)
            }
            Ok(_) => {}
            Err(_) => self.synced.store(false, Ordering::Release),
        }
    }
}

/// Watch retries: from 0.5 s up to 5 s (kube's default goes up to 30 s, which kept Herald
/// blind for up to a minute after its CRDs were re-created).
pub fn backoff<S: TryStream>(stream: S) -> StreamBackoff<S, ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    StreamBackoff::new(stream, ExponentialBackoff::from(builder))
}

/// Watches Canaries, their Events and Namespaces, and feeds the notifier until `stop`.
/// `policies_known` says whether the policy set reflects the cluster's policies.
pub async fn run(
    client: Client,
    notifier_parts: impl FnOnce(Store<Canary>, Store<Namespace>) -> CanaryNotifier,
    policies_known: impl Fn() -> bool,
    stop: impl std::future::Future<Output = ()>,
) {
    let (canary_reader, canary_writer) = reflector::store();
    let (namespace_reader, namespace_writer) = reflector::store();
    let notifier = notifier_parts(canary_reader.clone(), namespace_reader.clone());
    let canaries_synced = Arc::new(WatchHealth::default());
    let (inputs, mut received) = mpsc::unbounded_channel();
    let canaries = {
        let health = canaries_synced.clone();
        backoff(watch_api(
            Api::<Canary>::all(client.clone()),
            watcher::Config::default(),
        ))
        .inspect(move |item| health.observe(item))
        .modify(keep_what_herald_reads)
        .reflect(canary_writer)
        .applied_objects()
    };
    let namespaces = reflector(
        namespace_writer,
        backoff(watch_api(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ))
        .modify(|ns: &mut Namespace| {
            // Only the labels are read (namespaceSelector.matchLabels).
            ns.metadata.managed_fields = None;
            ns.metadata.annotations = None;
            ns.spec = None;
            ns.status = None;
        }),
    )
    .applied_objects();
    let events = backoff(watch_api(
        Api::<Event>::all(client),
        watcher::Config::default().fields("involvedObject.kind=Canary"),
    ));
    let tasks = [
        forward(canaries, inputs.clone(), |c| Input::Canary(Box::new(c))),
        forward_events_in_order(events, inputs.clone()),
        tokio::spawn(namespaces.for_each(|_| async {})),
    ];
    let pruner = tokio::spawn(forget_deleted_canaries(
        notifier.state.clone(),
        canary_reader.clone(),
        canaries_synced.clone(),
    ));
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => {}
        _ = async {
            let _ = canary_reader.wait_until_ready().await;
            let _ = namespace_reader.wait_until_ready().await;
            notifier.end_repeats_of_healthy_canaries();
            let mut gave_up_waiting: HashSet<CanaryRef> = HashSet::new();
            while let Some(input) = received.recv().await {
                if let Input::Observed(observed) = &input {
                    // An Event handled now would match nothing or the wrong policies and be
                    // recorded as handled: wait until the policies are known.
                    // Both, again after waiting for the Canary: its CRD and Herald's may be
                    // re-created together.
                    loop {
                        while !policies_known() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        wait_for_canary(&notifier, observed, &canaries_synced, &mut gave_up_waiting).await;
                        if policies_known() {
                            break;
                        }
                    }
                    notifier.app.dispatcher.wait_for_room().await;
                }
                notifier.handle(input, &inputs);
            }
        } => {}
    }
    pruner.abort();
    for task in tasks {
        task.abort();
    }
}

/// How often the records of deleted canaries are dropped from the state.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A deleted canary's record is kept this long after its last handled Event: its Events
/// stay in the API for an hour (kube-apiserver's `--event-ttl`), and a record dropped earlier
/// would let a re-list send them again.
const KEEP_DELETED: i64 = 2 * 3600 * 1000;

/// Drops the records of canaries that no longer exist, so the state follows the cluster's
/// canaries instead of every canary that ever was. Only while the Canary watch is synced: an
/// empty store during a broken watch would wipe everything.
async fn forget_deleted_canaries(
    state: Arc<StateStore>,
    canaries: Store<Canary>,
    synced: Arc<WatchHealth>,
) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        if !synced.is_synced() {
            continue;
        }
        let existing: HashSet<CanaryRef> = canaries
            .state()
            .iter()
            .map(|c| CanaryRef {
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
            })
            .collect();
        let cutoff = jiff::Timestamp::now().as_millisecond() - KEEP_DELETED;
        state.retain(|canary, record| existing.contains(canary) || record.floor > cutoff);
    }
}

/// Herald reads a Canary's name, labels and status: the rest (its spec, managed fields,
/// annotations such as kubectl's last-applied configuration) is dropped before the store, so
/// memory follows the number of canaries, not the size of their specs.
fn keep_what_herald_reads(canary: &mut Canary) {
    canary.metadata.managed_fields = None;
    canary.metadata.annotations = None;
    canary.metadata.owner_references = None;
    canary.spec.fields.clear();
}

/// Waits (up to [`CANARY_WAIT`], once per canary) until the Event's Canary is in the store,
/// so the Event goes out with the Canary's phase, labels and revision.
async fn wait_for_canary(
    notifier: &CanaryNotifier,
    observed: &ObservedEvent,
    synced: &WatchHealth,
    gave_up: &mut HashSet<CanaryRef>,
) {
    let canary = observed.canary.clone();
    if notifier.canary(&canary).is_some() {
        gave_up.remove(&canary);
        return;
    }
    if gave_up.contains(&canary)
        || notifier
            .state
            .is_settled(&canary, &observed.key, observed.time_ms)
    {
        return;
    }
    let deadline = tokio::time::Instant::now() + CANARY_WAIT;
    while notifier.canary(&canary).is_none() {
        // A synced watch that does not have it: the Canary is gone, not late.
        if tokio::time::Instant::now() >= deadline {
            warn!(canary = %canary.key(), synced = synced.is_synced(), "the Canary of an Event is not known: sending the Event without its phase and labels");
            gave_up.insert(canary);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    info!(canary = %canary.key(), "the Canary of an Event is known now");
}

/// Sends a watch stream's objects into the notifier's channel, logging watch errors (the
/// stream retries with backoff).
fn forward<K, S>(
    stream: S,
    inputs: mpsc::UnboundedSender<Input>,
    wrap: fn(K) -> Input,
) -> tokio::task::JoinHandle<()>
where
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(object) => {
                    if inputs.send(wrap(object)).is_err() {
                        break;
                    }
                }
                Err(e) => warn!(error = %e, "watch error; retrying"),
            }
        }
    })
}

/// Forwards the Event watch: changes as they come, each (re-)list sorted by time.
fn forward_events_in_order<S>(
    stream: S,
    inputs: mpsc::UnboundedSender<Input>,
) -> tokio::task::JoinHandle<()>
where
    S: Stream<Item = Result<watcher::Event<Event>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        let mut listing: Vec<ObservedEvent> = Vec::new();
        while let Some(item) = stream.next().await {
            // Each Event is read once, here; those about no Canary go no further.
            let ready = match item {
                Ok(watcher::Event::Apply(event)) => observe_event(&event).into_iter().collect(),
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(event)) => {
                    listing.extend(observe_event(&event));
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    let mut list = std::mem::take(&mut listing);
                    list.sort_by_key(|observed| observed.time_ms);
                    list
                }
                Ok(watcher::Event::Delete(_)) => Vec::new(),
                Err(e) => {
                    warn!(error = %e, "watch error; retrying");
                    Vec::new()
                }
            };
            for observed in ready {
                if inputs.send(Input::Observed(Box::new(observed))).is_err() {
                    return;
                }
            }
        }
    })
}
