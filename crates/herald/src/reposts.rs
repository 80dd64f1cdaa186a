//! Notifications posted again while their canary's rollout stays open, for the kinds whose
//! service forgets otherwise (see `ReceiverKind::keeps_open`: an alert that is not posted
//! again lapses, and Flagger says nothing more about a canary that stays failed).
//!
//! What is kept is the event that opened it, rendered again at each repeat with the receiver
//! as it is then (an edited label or severity applies from the next repeat). Any later event
//! of the canary that the receiver's kind takes as a close ends it, whether or not the
//! policy matches that event; in the controller, so does the Canary's deletion or its return
//! to a healthy phase (the leader's watch cache), whatever was missed. A receiver gone from
//! the policies for [`FORGET_AFTER`] is forgotten; a suspended policy repeats nothing.
//!
//! With a state directory the repeats are also kept in `open.json` (written in the
//! background after a change, flushed, then renamed), so a restarted Herald goes on. In the
//! controller only the leader adds and posts repeats (it sees every watched Event, so every
//! close); closes are applied on every replica.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::policy::{CompiledPolicy, CompiledReceiver};
use herald_core::receivers::KeepOpen;
use herald_core::{FlaggerEvent, MatchInput, PolicySet};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::AppState;
use crate::delivery::Job;
use crate::durable::StoredPolicy;

/// The most notifications repeated at once: one per failed canary and receiver.
pub const CAPACITY: usize = 10_000;
/// How long a repeat's receiver may be missing from the policies (a policy rejected for a
/// while, a Secret being replaced) before the repeat is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
/// How often due repeats are looked for, and changes saved.
const TICK: Duration = Duration::from_millis(250);
/// After a restart, the repeats loaded are spread over this long, not posted all at once.
const SPREAD: Duration = Duration::from_secs(5);

/// Where a watched canary stands now, as the controller's cache shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryNow {
    /// No such Canary (deleted).
    Gone,
    /// `Succeeded` or `Initialized`: nothing is open any more.
    Healthy,
    /// Anything else: a failure stays open until the canary's next success.
    Other,
}

type CanaryView = Arc<dyn Fn(&str, &str) -> CanaryNow + Send + Sync>;

/// One receiver's repeated notification for one canary.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Open {
    namespace: String,
    canary: String,
    policy: StoredPolicy,
    receiver: String,
    /// The receiver's kind when it was opened: a receiver changed to another kind repeats
    /// nothing.
    receiver_type: String,
    /// The event that opened it, as Flagger's JSON.
    event: String,
    #[serde(skip, default = "Instant::now")]
    due: Instant,
    #[serde(skip)]
    missing_since: Option<Instant>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    open: Vec<Open>,
}

/// A notification just queued that its kind repeats.
pub struct Repeat {
    policy: StoredPolicy,
    receiver: String,
    receiver_type: &'static str,
    every: Duration,
}

/// The repeats, by namespace and canary.
#[derive(Default)]
pub struct Registry {
    canaries: HashMap<String, HashMap<String, Vec<Open>>>,
    len: usize,
    dirty: bool,
}

/// The notifications being repeated.
pub struct OpenNotifications {
    registry: Mutex<Registry>,
    file: Option<PathBuf>,
    /// Whether this process adds and posts repeats now (the controller: while it leads).
    active: Box<dyn Fn() -> bool + Send + Sync>,
    canary_view: RwLock<Option<CanaryView>>,
}

impl Default for OpenNotifications {
    fn default() -> Self {
        OpenNotifications {
            registry: Default::default(),
            file: None,
            active: Box::new(|| true),
            canary_view: RwLock::new(None),
        }
    }
}

/// The notifications among `jobs` (queued for `event`) that their kind repeats.
pub fn repeats_of<'a>(
    event: &FlaggerEvent,
    jobs: impl IntoIterator<Item = &'a Job>,
) -> Vec<Repeat> {
    jobs.into_iter()
        .filter_map(|job| match job.kind.keeps_open(event) {
            KeepOpen::Repeat(every) => Some(Repeat {
                policy: StoredPolicy::from(&*job.policy),
                receiver: job.receiver.to_string(),
                receiver_type: job.receiver_type,
                every,
            }),
            _ => None,
        })
        .collect()
}

/// The policy and receiver a repeat names, if they still exist as the same kind.
fn receiver_of<'p>(
    policies: &'p PolicySet,
    open: &Open,
) -> Option<(u32, u32, &'p CompiledPolicy, &'p CompiledReceiver)> {
    let index = policies.find(&open.policy.id())?;
    let policy = policies.policy(index);
    let position = policy
        .receivers
        .iter()
        .position(|r| r.name == open.receiver && r.type_name == open.receiver_type)?;
    Some((index, position as u32, policy, &policy.receivers[position]))
}

impl Registry {
    /// Applies a queued event: an open repeat whose receiver's kind takes `event` as a close
    /// ends; `repeats` (when `add`) start or replace the canary's repeat to their receiver.
    pub fn observe(
        &mut self,
        event: &FlaggerEvent,
        policies: &PolicySet,
        repeats: Vec<Repeat>,
        add: bool,
    ) {
        if let Some(list) = self
            .canaries
            .get_mut(&event.namespace)
            .and_then(|canaries| canaries.get_mut(&event.name))
        {
            let before = list.len();
            list.retain(|open| {
                receiver_of(policies, open)
                    .is_none_or(|(.., receiver)| receiver.kind.keeps_open(event) != KeepOpen::Close)
            });
            self.len -= before - list.len();
            self.dirty |= list.len() != before;
        }
        if !add || repeats.is_empty() {
            return;
        }
        let json = String::from_utf8(event.to_json()).expect("event JSON is UTF-8");
        let list = self
            .canaries
            .entry(event.namespace.clone())
            .or_default()
            .entry(event.name.clone())
            .or_default();
        for repeat in repeats {
            let open = Open {
                namespace: event.namespace.clone(),
                canary: event.name.clone(),
                policy: repeat.policy,
                receiver: repeat.receiver,
                receiver_type: repeat.receiver_type.to_owned(),
                event: json.clone(),
                due: Instant::now() + repeat.every,
                missing_since: None,
            };
            let same = |o: &Open| o.policy == open.policy && o.receiver == open.receiver;
            match list.iter_mut().find(|o| same(o)) {
                Some(existing) => *existing = open,
                None if self.len < CAPACITY => {
                    list.push(open);
                    self.len += 1;
                }
                None => warn!(canary = %event.name, namespace = %event.namespace,
                    "{CAPACITY} notifications are repeated already; this one is posted once"),
            }
            self.dirty = true;
        }
    }
}

impl OpenNotifications {
    /// Repeats kept in `path` too, and loaded from it now. A file that cannot be read is
    /// logged and set aside (`.bad`): what it held then lapses as it would without Herald,
    /// which is not a reason not to start.
    pub fn persisted(path: PathBuf) -> Self {
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes).unwrap_or_else(|e| {
                let aside = path.with_extension("bad");
                warn!(path = %path.display(), error = %e, moved_to = %aside.display(),
                    "the repeated notifications' file is unreadable; starting without them");
                let _ = std::fs::rename(&path, &aside);
                Saved { open: Vec::new() }
            }),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %path.display(), error = %e,
                        "cannot read the repeated notifications' file; starting without them");
                }
                Saved { open: Vec::new() }
            }
        };
        let mut registry = Registry::default();
        let (now, n) = (Instant::now(), saved.open.len().max(1) as u32);
        for (i, mut open) in saved.open.into_iter().take(CAPACITY).enumerate() {
            open.due = now + SPREAD * i as u32 / n;
            let canaries = registry.canaries.entry(open.namespace.clone()).or_default();
            canaries.entry(open.canary.clone()).or_default().push(open);
            registry.len += 1;
        }
        OpenNotifications {
            registry: Mutex::new(registry),
            file: Some(path),
            ..Default::default()
        }
    }

    /// Adds and posts repeats only while `active` says so.
    pub fn only_while(mut self, active: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.active = Box::new(active);
        self
    }

    /// Consults `view` (the controller's Canary cache, once listed) before each repeat.
    pub fn watch_canaries(&self, view: impl Fn(&str, &str) -> CanaryNow + Send + Sync + 'static) {
        *self.canary_view.write().expect("canary view lock") = Some(Arc::new(view));
    }

    pub fn is_active(&self) -> bool {
        (self.active)()
    }

    /// The registry, held while an event's notifications are queued and observed, so that a
    /// repeat cannot be queued between a close being queued and being applied.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("repeats lock poisoned")
    }

    /// The file's bytes when something changed since the last save.
    fn changes_to_save(&self) -> Option<(PathBuf, Vec<u8>)> {
        let path = self.file.clone()?;
        let mut registry = self.lock();
        if !std::mem::take(&mut registry.dirty) {
            return None;
        }
        let open: Vec<Open> = registry
            .canaries
            .values()
            .flat_map(|c| c.values().flatten())
            .cloned()
            .collect();
        Some((
            path,
            serde_json::to_vec(&Saved { open }).expect("repeats serialise"),
        ))
    }
}

async fn save_changes(open: &OpenNotifications) {
    if let Some((path, bytes)) = open.changes_to_save() {
        let saved = tokio::task::spawn_blocking(move || {
            crate::state_file::write_atomically(&path, &bytes).map_err(|e| (path, e))
        })
        .await;
        if let Ok(Err((path, e))) = saved {
            warn!(path = %path.display(), error = %e, "could not save the repeated notifications");
        }
    }
}

/// Posts the due repeats through the delivery engine (in the canary's order, with its
/// retries) and saves changes, until `stopped`.
pub async fn run(state: AppState, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        // Until the policies are loaded (the controller's first list), every receiver would
        // look gone.
        if state.ready.load(std::sync::atomic::Ordering::Acquire) && state.open.is_active() {
            post_due(&state, Instant::now());
        }
        // Read each tick rather than at every change: closes also happen in the pipeline.
        let open = state.open.lock().len;
        state.metrics.reposts_open.set(open as i64);
        save_changes(&state.open).await;
    }
    save_changes(&state.open).await;
}

/// Queues every due repeat, under the registry's lock.
fn post_due(state: &AppState, now: Instant) {
    let policies = state.policies.load();
    let view = state
        .open
        .canary_view
        .read()
        .expect("canary view lock")
        .clone();
    let mut registry = state.open.lock();
    let Registry {
        canaries,
        len,
        dirty,
    } = &mut *registry;
    for (namespace, by_name) in canaries.iter_mut() {
        by_name.retain(|name, list| {
            let before = list.len();
            let now_is = view.as_ref().map_or(CanaryNow::Other, |view| view(namespace, name));
            if now_is == CanaryNow::Other {
                list.retain_mut(|open| post_one(state, &policies, open, now));
            } else {
                debug!(%namespace, canary = %name, state = ?now_is, "canary no longer failed; its repeats end");
                list.clear();
            }
            *len -= before - list.len();
            *dirty |= list.len() != before;
            !list.is_empty()
        });
    }
    canaries.retain(|_, by_name| !by_name.is_empty());
}

/// Queues `open` again if it is due; false when it is to be forgotten.
fn post_one(state: &AppState, policies: &PolicySet, open: &mut Open, now: Instant) -> bool {
    if open.due > now {
        return true;
    }
    let Some((policy_index, receiver_index, policy, receiver)) = receiver_of(policies, open) else {
        let since = *open.missing_since.get_or_insert(now);
        open.due = now + TICK * 4;
        return now.duration_since(since) < FORGET_AFTER;
    };
    open.missing_since = None;
    let Ok(event) = FlaggerEvent::from_json(open.event.as_bytes()) else {
        return false;
    };
    let KeepOpen::Repeat(every) = receiver.kind.keeps_open(&event) else {
        return false;
    };
    open.due = now + every;
    if policy.suspend {
        return true;
    }
    let notification =
        match policies.notification_for(&MatchInput::event(&event), policy_index, receiver_index) {
            Some(Ok(notification)) => notification,
            Some(Err(failure)) => {
                state.metrics.render_failures.inc();
                warn!(policy = %policy.id, receiver = %receiver.name, error = %failure.error,
                "template failed for a repeated notification; posted again next time");
                return true;
            }
            None => return false,
        };
    let mut job = Job::new(
        Arc::new(policy.id.clone()),
        receiver,
        Bytes::from(notification.body),
        now,
    );
    job.path = notification.path;
    job.order_key = format!("{}/{}", open.namespace, open.canary).into();
    match state.dispatcher.enqueue_all(vec![job], None) {
        Ok(_) => {
            state.metrics.reposts.inc();
        }
        Err(refusal) => {
            // Soon again rather than a whole interval later: the queue is full for now.
            open.due = now + TICK * 4;
            warn!(canary = %open.canary, namespace = %open.namespace, ?refusal,
                "a repeated notification was not queued; trying again shortly");
        }
    }
    true
}
