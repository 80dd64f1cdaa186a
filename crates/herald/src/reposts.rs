//! Notifications posted again, unchanged, while their canary's rollout stays open, for the
//! kinds whose service forgets otherwise (see `ReceiverKind::keeps_open`: an alert that is
//! not posted again lapses, and Flagger says nothing more about a canary that stays
//! failed). A later notification of the same canary to the same receiver replaces or closes
//! the repeated one.
//!
//! What is repeated is kept in memory and, with a state directory, in `open.json` there
//! (written on each change, flushed, then renamed), so a restarted Herald posts the open
//! notifications again at once instead of letting them lapse. In the controller only the
//! leader keeps and posts them: it sees every watched Event, so it also sees every close.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::receivers::KeepOpen;
use herald_core::FlaggerEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::AppState;
use crate::delivery::Job;
use crate::durable::StoredPolicy;

/// The most notifications repeated at once: one per failed canary and receiver.
pub const CAPACITY: usize = 10_000;
/// How often due repeats are looked for.
const TICK: Duration = Duration::from_millis(250);

/// A canary's repeated notification to one receiver of one policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenKey {
    pub policy: StoredPolicy,
    pub receiver: String,
    pub namespace: String,
    pub canary: String,
}

/// What is posted again, and how often.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Open {
    #[serde(flatten)]
    key: OpenKey,
    /// The receiver's kind when it was rendered: a receiver changed to another kind
    /// repeats nothing.
    receiver_type: String,
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    every_ms: u64,
    #[serde(skip, default = "Instant::now")]
    due: Instant,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    open: Vec<Open>,
}

/// A change to what is repeated, made once its notification is queued.
pub struct Change(OpenKey, Option<Open>);

/// The notifications being repeated.
pub struct OpenNotifications {
    entries: Mutex<HashMap<OpenKey, Open>>,
    file: Option<PathBuf>,
    /// Whether this process keeps and posts repeats now (the controller: while it leads).
    active: Box<dyn Fn() -> bool + Send + Sync>,
}

impl Default for OpenNotifications {
    fn default() -> Self {
        OpenNotifications {
            entries: Default::default(),
            file: None,
            active: Box::new(|| true),
        }
    }
}

impl OpenNotifications {
    /// Repeats kept in `path` too; loaded from it now (due at once). A file that cannot be
    /// read is logged and set aside (`.bad`): what it held then lapses as it would without
    /// Herald, which is not a reason not to start.
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
        let entries = saved.open.into_iter().map(|o| (o.key.clone(), o)).collect();
        OpenNotifications {
            entries: Mutex::new(entries),
            file: Some(path),
            active: Box::new(|| true),
        }
    }

    /// Keeps and posts repeats only while `active` says so.
    pub fn only_while(mut self, active: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.active = Box::new(active);
        self
    }

    /// What queueing `jobs` for `event` changes, asked of each job's kind.
    pub fn changes<'a>(
        &self,
        event: &FlaggerEvent,
        jobs: impl IntoIterator<Item = &'a Job>,
    ) -> Vec<Change> {
        jobs.into_iter()
            .filter_map(|job| {
                let key = OpenKey {
                    policy: StoredPolicy::from(&*job.policy),
                    receiver: job.receiver.to_string(),
                    namespace: event.namespace.clone(),
                    canary: event.name.clone(),
                };
                match job.kind.keeps_open(event) {
                    KeepOpen::Leave => None,
                    KeepOpen::Close => Some(Change(key, None)),
                    KeepOpen::Repeat(every) => {
                        let open = Open {
                            key: key.clone(),
                            receiver_type: job.receiver_type.to_owned(),
                            body: String::from_utf8(job.body.to_vec()).ok()?,
                            path: job.path.clone(),
                            every_ms: every.as_millis() as u64,
                            due: Instant::now() + every,
                        };
                        Some(Change(key, Some(open)))
                    }
                }
            })
            .collect()
    }

    /// Applies changes whose notifications were queued.
    pub fn apply(&self, changes: Vec<Change>) {
        if changes.is_empty() || !(self.active)() {
            return;
        }
        let mut entries = self.entries.lock().expect("repeats lock poisoned");
        for Change(key, open) in changes {
            match open {
                Some(open) if entries.len() < CAPACITY || entries.contains_key(&key) => {
                    entries.insert(key, open);
                }
                Some(open) => warn!(
                    canary = %open.key.canary, namespace = %open.key.namespace,
                    "{CAPACITY} notifications are repeated already; this one is posted once"
                ),
                None => {
                    entries.remove(&key);
                }
            }
        }
        self.save(&entries);
    }

    /// How many notifications are being repeated.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("repeats lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The repeats due at `now`, each made due again one interval later.
    fn take_due(&self, now: Instant) -> Vec<Open> {
        if !(self.active)() {
            return Vec::new();
        }
        let mut entries = self.entries.lock().expect("repeats lock poisoned");
        entries
            .values_mut()
            .filter(|open| open.due <= now)
            .map(|open| {
                open.due = now + Duration::from_millis(open.every_ms);
                open.clone()
            })
            .collect()
    }

    fn forget(&self, key: &OpenKey) {
        let mut entries = self.entries.lock().expect("repeats lock poisoned");
        if entries.remove(key).is_some() {
            self.save(&entries);
        }
    }

    /// Writes the file: a temporary file, flushed, then renamed over the old one.
    fn save(&self, entries: &HashMap<OpenKey, Open>) {
        let Some(path) = &self.file else { return };
        let saved = Saved {
            open: entries.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&saved).expect("repeats serialise");
        let temporary = path.with_extension("tmp");
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "could not save the repeated notifications");
        }
    }
}

/// Posts the due repeats through the delivery engine (so in the canary's order, with its
/// retries) until `stopped`. A repeat whose policy or receiver is gone, or whose receiver is
/// now of another kind, is forgotten.
pub async fn run(state: AppState, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        // Until the policies are loaded (the controller's first list), every receiver would
        // look gone and its repeats be forgotten.
        if !state.ready.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        let due = state.open.take_due(Instant::now());
        if due.is_empty() {
            continue;
        }
        let policies = state.policies.load();
        for open in due {
            let receiver = policies
                .find(&open.key.policy.id())
                .map(|index| policies.policy(index))
                .and_then(|policy| {
                    let receiver = policy
                        .receivers
                        .iter()
                        .find(|r| r.name == open.key.receiver);
                    receiver.map(|receiver| (policy, receiver))
                })
                .filter(|(_, receiver)| receiver.type_name == open.receiver_type);
            let Some((policy, receiver)) = receiver else {
                debug!(canary = %open.key.canary, namespace = %open.key.namespace,
                    "the repeated notification's receiver is gone; not posted again");
                state.open.forget(&open.key);
                continue;
            };
            let mut job = Job::new(
                Arc::new(policy.id.clone()),
                receiver,
                Bytes::from(open.body.into_bytes()),
                Instant::now(),
            );
            job.path = open.path;
            job.order_key = format!("{}/{}", open.key.namespace, open.key.canary).into();
            if let Err(refusal) = state.dispatcher.enqueue_all(vec![job], None) {
                // Posted again at the next interval; the queue is full or stopping.
                debug!(canary = %open.key.canary, ?refusal, "a repeat was not queued");
            } else {
                state.metrics.reposts.inc();
            }
        }
    }
}
