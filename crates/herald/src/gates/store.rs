//! Where decisions are kept: [`ApprovalStore`]. Standalone, a JSON file in the state
//! directory (or memory); in a cluster, `Approval` resources (see `controller::approvals`),
//! so every replica answers Flagger the same and a restart keeps them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use futures::future::BoxFuture;
use herald_api::ApprovalSpec;
use herald_core::gates::RevisionKey;
use tracing::warn;

/// A change to a revision's record: `false` when it changes nothing (nothing is written).
pub type Change = Box<dyn FnMut(&mut ApprovalSpec) -> bool + Send>;

pub trait ApprovalStore: Send + Sync {
    /// The record of a revision as known now, without waiting (Flagger waits on answers).
    fn get(&self, key: &RevisionKey) -> Option<ApprovalSpec>;

    /// Applies `change` to the record (an empty one if there is none) and keeps the result,
    /// atomically: two replicas changing one record both see the other's change. `Ok(None)`
    /// when `change` changed nothing; the new record otherwise.
    fn update<'a>(
        &'a self,
        key: &'a RevisionKey,
        change: Change,
    ) -> BoxFuture<'a, Result<Option<ApprovalSpec>, String>>;

    /// Every record, for reminders and `herald gate status`.
    fn all(&self) -> Vec<(RevisionKey, ApprovalSpec)>;
}

/// Records in memory; with a file, written on every change (a temporary file, flushed,
/// renamed over the old one) and read at start.
pub struct FileApprovals {
    records: Mutex<BTreeMap<RevisionKey, ApprovalSpec>>,
    file: Option<PathBuf>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    approvals: Vec<SavedApproval>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedApproval {
    namespace: String,
    #[serde(flatten)]
    spec: ApprovalSpec,
}

/// The most records kept: the oldest revisions' are forgotten first (a canary's old
/// revisions are never asked about again).
const CAPACITY: usize = 10_000;

impl FileApprovals {
    pub fn in_memory() -> Self {
        FileApprovals {
            records: Default::default(),
            file: None,
        }
    }

    /// Reads `path` if it exists. Unlike a cache, decisions matter: an unreadable file stops
    /// Herald from starting rather than reopening gates that were closed by a rollback.
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not Herald's approvals file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let records = saved
            .approvals
            .into_iter()
            .map(|a| {
                let key = RevisionKey {
                    namespace: a.namespace,
                    canary: a.spec.canary.clone(),
                    revision: a.spec.revision.clone(),
                };
                (key, a.spec)
            })
            .collect();
        Ok(FileApprovals {
            records: Mutex::new(records),
            file: Some(path),
        })
    }

    fn save(&self, records: &BTreeMap<RevisionKey, ApprovalSpec>) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let saved = Saved {
            approvals: records
                .iter()
                .map(|(key, spec)| SavedApproval {
                    namespace: key.namespace.clone(),
                    spec: spec.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).expect("records serialise");
        crate::state_file::write_atomically(path, &bytes).map_err(|e| {
            warn!(path = %path.display(), error = %e, "cannot write the approvals file");
            format!("cannot write {}: {e}", path.display())
        })
    }
}

impl ApprovalStore for FileApprovals {
    fn get(&self, key: &RevisionKey) -> Option<ApprovalSpec> {
        self.records
            .lock()
            .expect("approvals lock")
            .get(key)
            .cloned()
    }

    fn update<'a>(
        &'a self,
        key: &'a RevisionKey,
        mut change: Change,
    ) -> BoxFuture<'a, Result<Option<ApprovalSpec>, String>> {
        Box::pin(async move {
            let mut records = self.records.lock().expect("approvals lock");
            let mut record = records.get(key).cloned().unwrap_or_else(|| key.record());
            if !change(&mut record) {
                return Ok(None);
            }
            let before = records.insert(key.clone(), record.clone());
            if records.len() > CAPACITY {
                let oldest = records
                    .iter()
                    .min_by_key(|(_, r)| r.asked.first().map(|a| a.at.clone()))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest.filter(|k| k != key) {
                    records.remove(&oldest);
                }
            }
            // Written before anyone is told: a decision answered is a decision kept.
            if let Err(e) = self.save(&records) {
                match before {
                    Some(before) => records.insert(key.clone(), before),
                    None => records.remove(key),
                };
                return Err(e);
            }
            Ok(Some(record))
        })
    }

    fn all(&self) -> Vec<(RevisionKey, ApprovalSpec)> {
        let records = self.records.lock().expect("approvals lock");
        records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
