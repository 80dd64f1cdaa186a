//! What Herald has already sent, per canary, persisted in ConfigMaps it owns, so a restart,
//! a re-list, a watch reconnect or a new leader does not send a notification twice, and an
//! Event that came while Herald was down is still sent once.
//!
//! Each canary's [`CanaryRecord`] is a watermark (see `record.rs`), about 100 bytes however
//! long its history. Records are spread over [`SHARDS`] ConfigMaps (`herald-state`,
//! `herald-state-1` ... `-7`) by a stable hash of the canary, so 10,000 canaries take about
//! 130 KB per ConfigMap, far from the API's 1 MiB object limit. A flush sends one JSON merge
//! patch per ConfigMap with changes, touching only the changed canaries' keys, at most once a
//! second. A ConfigMap deleted under Herald is created again, whole, by the next flush.
//!
//! The guarantee is at-least-once. An Event is recorded only after all its notifications
//! reached an outcome; so an Event is sent twice only when Herald stops (crash, kill -9,
//! lost lease) after a receiver got it and before the record was saved (flushed every
//! second), or when a receiver accepted a request whose answer did not arrive in time (it
//! is then retried).
//!
//! - `tracking`: the records in memory: which Events are pending, which are handled;
//! - `configmaps`: loading them from and saving them to the ConfigMaps;
//! - `threads`: rollout threads kept with the records, for the delivery engine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::leader::Fence;
pub use super::record::CanaryRecord;

mod configmaps;
#[cfg(test)]
mod tests;
mod threads;
mod tracking;

pub use configmaps::parse_records;
pub use threads::StateThreads;

/// ConfigMaps the state is spread over. Fixed: the chart's RBAC names each of them.
pub const SHARDS: usize = 8;

/// A canary, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanaryRef {
    pub namespace: String,
    pub name: String,
}

impl CanaryRef {
    /// The ConfigMap key: `<namespace>.<name>` (both DNS names, so valid key characters).
    pub fn key(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// The name of shard `index` of the state ConfigMaps called `base`.
pub fn shard_name(base: &str, index: usize) -> String {
    match index {
        0 => base.to_owned(),
        i => format!("{base}-{i}"),
    }
}

/// The shard holding a canary: FNV-1a of its key, which (unlike std's hasher) is the same in
/// every build, so every version of Herald finds a record where an earlier one wrote it.
pub fn shard_of(key: &str, shards: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards.max(1) as u64) as usize
}

/// Changes not yet saved.
#[derive(Default)]
struct Unsaved {
    /// Canaries whose record changed.
    changed: BTreeSet<CanaryRef>,
    /// Keys to remove, per shard: records found in another shard than their own (written by
    /// an older Herald) and records of deleted canaries.
    removed: BTreeMap<usize, BTreeSet<String>>,
}

/// All records, with the ones changed since the last flush.
pub struct StateStore {
    api: Api<ConfigMap>,
    base_name: String,
    shards: usize,
    records: Mutex<HashMap<CanaryRef, CanaryRecord>>,
    /// Events whose notifications are being sent, per canary: `<uid>:<count>` and time.
    pending: Mutex<HashMap<CanaryRef, BTreeMap<String, i64>>>,
    unsaved: Mutex<Unsaved>,
    /// The shards known to exist (found at load or created since): a missing one of these
    /// was deleted under Herald.
    existing: Mutex<BTreeSet<usize>>,
    /// The floor of canaries without a record: 0 normally (send what was missed), the start
    /// time on a first install (do not replay the cluster's history).
    default_floor: i64,
    /// Writes happen only while this replica holds the lease: a replica that lost it must
    /// not overwrite what the new leader saved.
    fence: Fence,
}
