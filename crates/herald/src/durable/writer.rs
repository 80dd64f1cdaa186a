//! The durable queue's writer: one thread owns the write transactions and commits whatever
//! arrived while the previous commit was being written (group commit), so concurrent accepts
//! share one fsync. Removing a finished notification is not urgent (at worst it is sent
//! again), so those commits do not wait for the disk (`Durability::None`); the next durable
//! commit, or one made after [`SYNC_IDLE`] without traffic, persists them.
//!
//! After an I/O error (a full disk) redb refuses every later operation until the database is
//! opened again (`PreviousIo`): the writer opens it again at the next commit, so a full disk
//! refuses events (`503`, reason `state`) only while it is full. The removals and canary
//! phases not yet known to be on disk (those of the failed commit, and of the commits since
//! the last durable one, which reopening rolls back) are written again then.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use herald_api::CanaryPhase;
use redb::{Database, Durability};
use tracing::{error, info};

use super::{storage, CANARIES, EVENTS, JOBS};
use crate::metrics::{Class as CanaryClass, Metrics, Tracked as TrackedCanaries};

pub(super) enum Op {
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

#[derive(Clone)]
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
    /// `namespace\nname` → `<phase> <order>`.
    Canary {
        key: String,
        value: String,
    },
    ForgetCanary {
        key: String,
    },
}

/// Most operations in one transaction.
const BATCH: usize = 4096;
/// How long commits that did not wait for the disk may stay unsynced without traffic.
const SYNC_IDLE: Duration = Duration::from_millis(200);

/// The canaries table, bounded as `herald_canary_status` is: at most
/// [`MAX_TRACKED_CANARIES`](crate::metrics::MAX_TRACKED_CANARIES) canaries, the
/// longest-finished one making room for a newcomer, a failed one kept (a new `Failed` takes
/// the place of the oldest one not failed). Canaries deleted from the cluster are never
/// reported again, so without this the table would grow with every name ever seen.
pub(super) struct Canaries {
    tracked: TrackedCanaries,
    limit: usize,
}

impl Canaries {
    /// From the stored `(key, value)` pairs: the table, the canaries as `(namespace, name,
    /// phase)` oldest update first, and the keys to remove (over the limit: a table written
    /// before it was bounded).
    pub(super) fn load(
        stored: Vec<(String, String)>,
        limit: usize,
    ) -> (Self, Vec<(String, String, String)>, Vec<String>) {
        let mut parsed: Vec<(u64, String, String)> = stored
            .into_iter()
            .map(|(key, value)| {
                // Values written before the order was kept hold the phase alone.
                let (phase, order) = value.split_once(' ').unwrap_or((value.as_str(), "0"));
                (order.parse().unwrap_or(0), key, phase.to_owned())
            })
            .collect();
        parsed.sort();
        let mut canaries = Canaries {
            tracked: TrackedCanaries::starting_after(parsed.last().map_or(0, |p| p.0)),
            limit,
        };
        let mut restored = Vec::with_capacity(parsed.len());
        for (_, key, phase) in parsed {
            if let Some((namespace, name)) = key.split_once('\n') {
                let class = CanaryPhase::parse(&phase).map_or(CanaryClass::Active, CanaryClass::of);
                canaries
                    .tracked
                    .put((name.to_owned(), namespace.to_owned()), class);
                restored.push((namespace.to_owned(), name.to_owned(), phase));
            }
        }
        let mut evicted = std::collections::BTreeSet::new();
        while canaries.tracked.len() > limit {
            // As a new failed canary would: the longest-finished first, then the oldest active.
            match canaries.tracked.make_room(CanaryClass::Failed) {
                Ok(((name, namespace), _)) => {
                    evicted.insert(format!("{namespace}\n{name}"));
                }
                Err(()) => break,
            }
        }
        restored.retain(|(namespace, name, _)| !evicted.contains(&format!("{namespace}\n{name}")));
        (canaries, restored, evicted.into_iter().collect())
    }

    /// The table writes for a canary's new phase (an eviction, then the phase; or nothing
    /// when the table is full of failed canaries and this one did not fail).
    fn observe(&mut self, key: String, phase: &str) -> Vec<Write> {
        let Some((namespace, name)) = key.split_once('\n') else {
            return Vec::new();
        };
        let canary = (name.to_owned(), namespace.to_owned());
        let class = CanaryPhase::parse(phase).map_or(CanaryClass::Active, CanaryClass::of);
        let mut writes = Vec::new();
        if !self.tracked.contains(&canary) && self.tracked.len() >= self.limit {
            match self.tracked.make_room(class) {
                Ok(((name, namespace), _)) => writes.push(Write::ForgetCanary {
                    key: format!("{namespace}\n{name}"),
                }),
                Err(()) => return writes,
            }
        }
        let order = self.tracked.put(canary, class);
        writes.push(Write::Canary {
            key,
            value: format!("{phase} {order}"),
        });
        writes
    }
}

pub(super) struct Writer {
    pub(super) db: Option<Database>,
    pub(super) path: PathBuf,
    pub(super) metrics: Arc<Metrics>,
    pub(super) canaries: Canaries,
    /// Removals and canary writes not known to be on disk yet (see the module's doc).
    redo: Vec<Write>,
}

impl Writer {
    pub(super) fn new(
        db: Database,
        path: PathBuf,
        metrics: Arc<Metrics>,
        canaries: Canaries,
    ) -> Self {
        Writer {
            db: Some(db),
            path,
            metrics,
            canaries,
            redo: Vec::new(),
        }
    }

    /// Commits `writes` (with the ones to write again after a reopen). On a failure the
    /// database is dropped, to be opened again by the next commit.
    fn commit(&mut self, writes: Vec<Write>, durable: bool) -> Result<(), String> {
        let kept: Vec<Write> = writes
            .iter()
            .filter(|w| !matches!(w, Write::Append { .. }))
            .cloned()
            .collect();
        let again = !self.redo.is_empty() && self.db.is_none();
        if self.db.is_none() {
            match Database::create(&self.path) {
                Ok(db) => {
                    info!(path = %self.path.display(), "durable queue opened again after a failed write");
                    self.db = Some(db);
                }
                Err(e) => {
                    self.redo.extend(kept);
                    return Err(format!("reopening {}: {e}", self.path.display()));
                }
            }
        }
        let all = if again {
            self.redo.iter().cloned().chain(writes).collect()
        } else {
            writes
        };
        let result = apply(self.db.as_ref().expect("opened above"), all, durable);
        match &result {
            Ok(()) if durable => self.redo.clear(),
            Ok(()) => self.redo.extend(kept),
            Err(_) => {
                self.redo.extend(kept);
                self.db = None;
            }
        }
        result
    }

    pub(super) fn run(mut self, ops: mpsc::Receiver<Op>) {
        let mut unsynced = false;
        let mut closing = Vec::new();
        while closing.is_empty() {
            let first = match ops.recv_timeout(SYNC_IDLE) {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if unsynced {
                        match self.commit(Vec::new(), true) {
                            Ok(()) => {
                                self.metrics.state_commits.inc();
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
                    Op::Canary { key, phase } => writes.extend(self.canaries.observe(key, phase)),
                    Op::Sync(answer) => synced.push(answer),
                    Op::Close(answer) => closing.push(answer),
                }
            }
            let ok = match self.commit(writes, durable) {
                Ok(()) => {
                    self.metrics.state_commits.inc();
                    if durable {
                        if appends > 0 {
                            self.metrics.state_commit_events.observe(appends as f64);
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
        if unsynced || self.db.is_none() {
            let _ = self.commit(Vec::new(), true);
        }
        drop(self.db.take());
        for answer in closing {
            let _ = answer.send(());
        }
    }
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
                Write::Canary { key, value } => {
                    canaries
                        .insert(key.as_str(), value.as_str())
                        .map_err(storage)?;
                }
                Write::ForgetCanary { key } => {
                    canaries.remove(key.as_str()).map_err(storage)?;
                }
            }
        }
    }
    txn.commit().map_err(storage)
}
