//! The durable queue (`herald serve --state-dir`): every event answered `202` is on disk
//! first, with the notifications it still owes, so a `kill -9`, an OOM kill or a node loss
//! loses nothing: after the restart the notifications not yet delivered are rendered again
//! from the stored event and sent, in event order (so per canary), at least once.
//!
//! The store is [redb](https://www.redb.org): an embedded, pure-Rust, ACID key-value store
//! whose `Durability::Immediate` commit returns only once the data is on disk (copy-on-write
//! B-trees with a checksummed commit slot: a crash leaves the last commit or the one before,
//! never half of one). One thread owns the write transactions and commits whatever arrived
//! while the previous commit was being written (group commit): concurrent accepts share one
//! fsync. Removing a finished notification is not urgent (at worst it is sent again), so those
//! commits do not wait for the disk (`Durability::None`); the next durable commit, or one made
//! after 200 ms without traffic, persists them.
//!
//! Nothing secret is stored: the event as Flagger sent it, and for each notification the
//! policy and receiver it is for. Webhook URLs, tokens and headers come from the policies in
//! force when it is sent again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use herald_core::PolicyId;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::metrics::Metrics;

/// Events by sequence number: the stored [`EventRecord`] (JSON).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// The notifications still owed: (event sequence number, index in the record's `jobs`).
const JOBS: TableDefinition<(u64, u32), ()> = TableDefinition::new("jobs");
/// Each canary's last phase (`namespace\nname` → phase), for `herald_canary_status`.
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
    /// `(namespace, name, phase)` of every canary seen.
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

enum Op {
    Append {
        seq: u64,
        record: Vec<u8>,
        jobs: u32,
        done: tokio::sync::watch::Sender<Option<bool>>,
    },
    Done {
        seq: u64,
        idx: u32,
        last: bool,
    },
    Canary {
        key: String,
        phase: &'static str,
    },
    /// Commit to disk now, then answer.
    Sync(mpsc::Sender<()>),
    /// Commit, close the database, then answer.
    Close(mpsc::Sender<()>),
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
        let mut canaries = Vec::new();
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
                let (key, phase) = entry.map_err(storage)?;
                if let Some((namespace, name)) = key.value().split_once('\n') {
                    canaries.push((
                        namespace.to_owned(),
                        name.to_owned(),
                        phase.value().to_owned(),
                    ));
                }
            }
        }
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("herald-state".into())
            .spawn(move || commit_loop(db, receiver, metrics))
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

/// Most operations in one transaction.
const BATCH: usize = 4096;
/// How long commits that did not wait for the disk may stay unsynced without traffic.
const SYNC_IDLE: Duration = Duration::from_millis(200);

fn commit_loop(db: Database, ops: mpsc::Receiver<Op>, metrics: Arc<Metrics>) {
    let mut unsynced = false;
    let mut closing = Vec::new();
    while closing.is_empty() {
        let first = match ops.recv_timeout(SYNC_IDLE) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if unsynced {
                    match apply(&db, Vec::new(), true) {
                        Ok(()) => {
                            metrics.state_commits.inc();
                            unsynced = false;
                        }
                        Err(e) => error!(error = %e, "durable queue: sync failed"),
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let appends = batch
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count();
        let durable = appends > 0
            || batch
                .iter()
                .any(|op| matches!(op, Op::Sync(_) | Op::Close(_)));
        let mut synced = Vec::new();
        let (result, gates) = {
            let mut gates = Vec::new();
            let mut writes = Vec::with_capacity(batch.len());
            for op in batch {
                match op {
                    Op::Append {
                        seq,
                        record,
                        jobs,
                        done,
                    } => {
                        gates.push(done);
                        writes.push(Write::Append { seq, record, jobs });
                    }
                    Op::Done { seq, idx, last } => writes.push(Write::Done { seq, idx, last }),
                    Op::Canary { key, phase } => writes.push(Write::Canary { key, phase }),
                    Op::Sync(answer) => synced.push(answer),
                    Op::Close(answer) => closing.push(answer),
                }
            }
            (apply(&db, writes, durable), gates)
        };
        let ok = match result {
            Ok(()) => {
                metrics.state_commits.inc();
                if durable {
                    if appends > 0 {
                        metrics.state_commit_events.observe(appends as f64);
                    }
                    unsynced = false;
                } else {
                    unsynced = true;
                }
                true
            }
            Err(e) => {
                error!(error = %e, events = appends, "durable queue: commit failed; the events are refused");
                false
            }
        };
        for gate in gates {
            let _ = gate.send(Some(ok));
        }
        for answer in synced {
            let _ = answer.send(());
        }
    }
    // Closing, or every sender is gone: persist what did not wait for the disk.
    if unsynced {
        let _ = apply(&db, Vec::new(), true);
    }
    drop(db);
    for answer in closing {
        let _ = answer.send(());
    }
}

enum Write {
    Append {
        seq: u64,
        record: Vec<u8>,
        jobs: u32,
    },
    Done {
        seq: u64,
        idx: u32,
        last: bool,
    },
    Canary {
        key: String,
        phase: &'static str,
    },
}

fn apply(db: &Database, writes: Vec<Write>, durable: bool) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(storage)?;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut jobs = txn.open_table(JOBS).map_err(storage)?;
        let mut canaries = txn.open_table(CANARIES).map_err(storage)?;
        for write in writes {
            match write {
                Write::Append {
                    seq,
                    record,
                    jobs: n,
                } => {
                    events.insert(seq, record.as_slice()).map_err(storage)?;
                    for idx in 0..n {
                        jobs.insert((seq, idx), ()).map_err(storage)?;
                    }
                }
                Write::Done { seq, idx, last } => {
                    jobs.remove((seq, idx)).map_err(storage)?;
                    if last {
                        events.remove(seq).map_err(storage)?;
                    }
                }
                Write::Canary { key, phase } => {
                    canaries.insert(key.as_str(), phase).map_err(storage)?;
                }
            }
        }
    }
    txn.commit().map_err(storage)
}
