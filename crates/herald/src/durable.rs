//! The durable queue (`herald serve --state-dir`): every event answered `202` is on disk
//! first, with the notifications it still owes, so a `kill -9`, an OOM kill or a node loss
//! loses nothing: after the restart the notifications not yet delivered are rendered again
//! from the stored event and sent, in event order (so per canary), at least once.
//!
//! The store is [redb](https://www.redb.org): an embedded, pure-Rust, ACID key-value store
//! whose `Durability::Immediate` commit returns only once the data is on disk (copy-on-write
//! B-trees with a checksummed commit slot: a crash leaves the last commit or the one before,
//! never half of one). One thread writes (`writer.rs`: group commit, reopening after a failed
//! write).
//!
//! Nothing secret is stored: the event as Flagger sent it, and for each notification the
//! policy and receiver it is for. Webhook URLs, tokens and headers come from the policies in
//! force when it is sent again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use herald_core::PolicyId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use self::writer::{Canaries, Op, Writer};
use crate::metrics::{Metrics, MAX_TRACKED_CANARIES};

mod writer;

/// Events by sequence number: the stored [`EventRecord`] (JSON).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// The notifications still owed: (event sequence number, index in the record's `jobs`).
const JOBS: TableDefinition<(u64, u32), ()> = TableDefinition::new("jobs");
/// Each canary's last phase (`namespace\nname` → `<phase> <update order>`), for
/// `herald_canary_status`; bounded as that metric is (see `writer.rs`).
const CANARIES: TableDefinition<&str, &str> = TableDefinition::new("canaries");

/// An accepted event as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event body as received.
    pub event: String,
    /// The policy the event was addressed to (`/events/<ns>/<policy>`), if any.
    pub only: Option<StoredPolicy>,
    /// One entry per notification, in the order they were queued.
    pub jobs: Vec<StoredJob>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub namespace: Option<String>,
    pub name: String,
}

impl From<&PolicyId> for StoredPolicy {
    fn from(id: &PolicyId) -> Self {
        StoredPolicy {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
        }
    }
}

impl StoredPolicy {
    pub fn id(&self) -> PolicyId {
        PolicyId {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredJob {
    pub policy: StoredPolicy,
    pub receiver: String,
}

/// An event found in the store at start-up, with the notifications it still owes.
pub struct Recovered {
    pub seq: u64,
    pub record: EventRecord,
    /// Indexes into `record.jobs`, ascending.
    pub pending: Vec<u32>,
}

/// What a store had at start-up.
pub struct Opened {
    pub store: Store,
    pub events: Vec<Recovered>,
    /// `(namespace, name, phase)` of the canaries kept (at most
    /// [`MAX_TRACKED_CANARIES`], as `herald_canary_status`), the least recently updated first.
    pub canaries: Vec<(String, String, String)>,
}

/// Resolves once the event is on disk: `true`, or `false` when it could not be stored.
pub type Committed = tokio::sync::watch::Receiver<Option<bool>>;

/// Waits for a [`Committed`]; a store that went away counts as a failure.
pub async fn committed(mut gate: Committed) -> bool {
    match gate.wait_for(|v| v.is_some()).await {
        Ok(v) => v.unwrap_or(false),
        Err(_) => false,
    }
}

/// A gate that resolves as `gate` does, after `on_failure` ran if the event could not be
/// stored: whoever waits on it (the `503`) sees the failure's consequences done.
pub fn after_failure(gate: Committed, on_failure: impl FnOnce() + Send + 'static) -> Committed {
    let (done, resolved) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let ok = committed(gate).await;
        if !ok {
            on_failure();
        }
        let _ = done.send(Some(ok));
    });
    resolved
}

/// The durable queue. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    ops: Mutex<mpsc::Sender<Op>>,
    next_seq: AtomicU64,
    path: PathBuf,
}

/// One stored event's notifications in memory: the event's record is removed with its last.
pub struct DurableEvent {
    seq: u64,
    remaining: AtomicU32,
    store: Store,
}

/// One stored notification.
pub struct DurableRef {
    pub event: Arc<DurableEvent>,
    pub idx: u32,
}

impl DurableRef {
    /// The notification reached a final outcome: it is not owed any more.
    pub fn done(&self) {
        let last = self.event.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        self.event.store.send(Op::Done {
            seq: self.event.seq,
            idx: self.idx,
            last,
        });
    }
}

impl DurableEvent {
    pub fn new(store: &Store, seq: u64, jobs: u32) -> Arc<Self> {
        Arc::new(DurableEvent {
            seq,
            remaining: AtomicU32::new(jobs),
            store: store.clone(),
        })
    }
}

fn storage(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Store {
    /// Opens (or creates) `dir/queue.redb` and reads what it holds.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Opened, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("queue.redb");
        let db = Database::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(JOBS).map_err(storage)?;
            txn.open_table(CANARIES).map_err(storage)?;
            txn.commit().map_err(storage)?;
        }
        let mut events = Vec::new();
        let mut stored_canaries = Vec::new();
        let mut next_seq = 0;
        {
            let txn = db.begin_read().map_err(storage)?;
            let stored = txn.open_table(EVENTS).map_err(storage)?;
            let jobs = txn.open_table(JOBS).map_err(storage)?;
            for entry in stored.iter().map_err(storage)? {
                let (seq, value) = entry.map_err(storage)?;
                let seq = seq.value();
                next_seq = seq + 1;
                let record: EventRecord = match serde_json::from_slice(value.value()) {
                    Ok(record) => record,
                    Err(e) => {
                        warn!(seq, error = %e, "unreadable event in the durable queue; skipping it");
                        continue;
                    }
                };
                let mut pending = Vec::new();
                for job in jobs.range((seq, 0)..=(seq, u32::MAX)).map_err(storage)? {
                    let (key, _) = job.map_err(storage)?;
                    pending.push(key.value().1);
                }
                events.push(Recovered {
                    seq,
                    record,
                    pending,
                });
            }
            let table = txn.open_table(CANARIES).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (key, value) = entry.map_err(storage)?;
                stored_canaries.push((key.value().to_owned(), value.value().to_owned()));
            }
        }
        let (tracked, canaries, evicted) = Canaries::load(stored_canaries, MAX_TRACKED_CANARIES);
        if !evicted.is_empty() {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(CANARIES).map_err(storage)?;
                for key in &evicted {
                    table.remove(key.as_str()).map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)?;
        }
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::new(db, path.clone(), metrics, tracked);
        std::thread::Builder::new()
            .name("herald-state".into())
            .spawn(move || writer.run(receiver))
            .map_err(storage)?;
        Ok(Opened {
            store: Store {
                inner: Arc::new(StoreInner {
                    ops: Mutex::new(sender),
                    next_seq: AtomicU64::new(next_seq),
                    path,
                }),
            },
            events,
            canaries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn send(&self, op: Op) {
        let sent = self.inner.ops.lock().expect("state lock poisoned").send(op);
        if sent.is_err() {
            error!("the durable queue's writer has stopped");
        }
    }

    /// Stores an event with `jobs` notifications. Called while the dispatcher admits the
    /// event, so sequence numbers follow the order of the queues. The notifications may go
    /// out only once the returned gate says `true`.
    pub fn append(&self, record: &EventRecord) -> (Arc<DurableEvent>, Committed) {
        let jobs = record.jobs.len() as u32;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::AcqRel);
        let (done, gate) = tokio::sync::watch::channel(None);
        let bytes = serde_json::to_vec(record).expect("records serialise");
        self.send(Op::Append {
            seq,
            record: bytes,
            jobs,
            done,
        });
        (DurableEvent::new(self, seq, jobs), gate)
    }

    /// Waits until everything sent so far is on disk (at shutdown).
    pub fn sync(&self) {
        let (answer, answered) = mpsc::channel();
        self.send(Op::Sync(answer));
        let _ = answered.recv_timeout(Duration::from_secs(5));
    }

    /// Persists everything and closes the database (at shutdown; another process, or a
    /// restarted server, may then open it).
    pub fn close(&self) {
        let (answer, answered) = mpsc::channel();
        self.send(Op::Close(answer));
        let _ = answered.recv_timeout(Duration::from_secs(5));
    }

    /// Remembers a canary's phase (not waiting for the disk).
    pub fn canary(&self, namespace: &str, name: &str, phase: &'static str) {
        self.send(Op::Canary {
            key: format!("{namespace}\n{name}"),
            phase,
        });
    }
}
