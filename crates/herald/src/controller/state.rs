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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{info, warn};

use super::leader::Fence;
pub use super::record::CanaryRecord;
use crate::delivery::{MemoryThreads, ThreadStore};
use crate::Result;
use herald_core::receivers::{ThreadParent, ThreadRef};

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

/// Rollout threads in the state ConfigMap, with the canary's record, so a restarted or newly
/// elected Herald still threads a rollout's replies. Until the state is loaded (before
/// leadership) they are kept in memory.
pub struct StateThreads {
    pub slot: Arc<Mutex<Option<Arc<StateStore>>>>,
    pub fallback: MemoryThreads,
}

impl StateThreads {
    fn store(&self) -> Option<Arc<StateStore>> {
        self.slot.lock().expect("state slot").clone()
    }
}

fn canary_of(thread: &ThreadRef) -> CanaryRef {
    CanaryRef {
        namespace: thread.namespace.clone(),
        name: thread.canary.clone(),
    }
}

impl ThreadStore for StateThreads {
    fn parent(&self, thread: &ThreadRef) -> Option<ThreadParent> {
        if let Some(store) = self.store() {
            if let Some(found) = store.get(&canary_of(thread)).threads.get(&thread.scope) {
                return Some(found.clone());
            }
        }
        self.fallback.parent(thread)
    }

    fn remember(&self, thread: &ThreadRef, parent: ThreadParent) {
        self.fallback.remember(thread, parent.clone());
        if let Some(store) = self.store() {
            // One entry per threading receiver of the canary: bounded by the policies.
            store.update(&canary_of(thread), |record| {
                record.threads.insert(thread.scope.clone(), parent);
            });
        }
    }
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

impl StateStore {
    /// Loads the state ConfigMaps `base_name`, `base_name-1`, ... in `namespace`. When none
    /// exists this is a first install: the first one is created, and Events older than
    /// `first_install_floor` (unix ms) count as handled.
    pub async fn load(
        client: Client,
        namespace: &str,
        base_name: &str,
        first_install_floor: i64,
        fence: Fence,
    ) -> Result<StateStore> {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let mut found = Vec::new();
        for index in 0..SHARDS {
            if let Some(cm) = api.get_opt(&shard_name(base_name, index)).await? {
                found.push((index, cm));
            }
        }
        let first_install = found.is_empty();
        let default_floor = if first_install {
            first_install_floor
        } else {
            0
        };
        let store = StateStore::new(api, base_name, SHARDS, HashMap::new(), default_floor)
            .with_fence(fence);
        {
            let mut records = store.records.lock().expect("state lock");
            let mut unsaved = store.unsaved.lock().expect("state lock");
            let mut existing = store.existing.lock().expect("state lock");
            for (index, cm) in &found {
                existing.insert(*index);
                for (canary, record) in parse_records(cm) {
                    let key = canary.key();
                    if shard_of(&key, SHARDS) != *index {
                        unsaved.removed.entry(*index).or_default().insert(key);
                        unsaved.changed.insert(canary.clone());
                    }
                    records.insert(canary, record);
                }
            }
        }
        if first_install {
            store.create_shard(0, Default::default()).await?;
            info!(
                configmap = base_name,
                "first start: created the delivery state; past Events are not replayed"
            );
        }
        Ok(store)
    }

    /// A store over `shards` ConfigMaps named after `base_name`, holding `records`.
    pub fn new(
        api: Api<ConfigMap>,
        base_name: &str,
        shards: usize,
        records: HashMap<CanaryRef, CanaryRecord>,
        default_floor: i64,
    ) -> Self {
        StateStore {
            api,
            base_name: base_name.to_owned(),
            shards: shards.max(1),
            records: Mutex::new(records),
            pending: Mutex::default(),
            unsaved: Mutex::default(),
            existing: Mutex::default(),
            default_floor,
            fence: Fence::always(),
        }
    }

    pub fn with_fence(self, fence: Fence) -> Self {
        StateStore { fence, ..self }
    }

    fn fresh(&self) -> CanaryRecord {
        CanaryRecord {
            floor: self.default_floor,
            ..CanaryRecord::default()
        }
    }

    /// A copy of the canary's record (a fresh one with the default floor if there is none).
    pub fn get(&self, canary: &CanaryRef) -> CanaryRecord {
        let records = self.records.lock().expect("state lock");
        records.get(canary).cloned().unwrap_or_else(|| self.fresh())
    }

    /// True when the Event is handled or its notifications are being sent.
    pub fn is_settled(&self, canary: &CanaryRef, key: &str, time_ms: i64) -> bool {
        let pending = self.pending.lock().expect("state lock");
        if pending.get(canary).is_some_and(|p| p.contains_key(key)) {
            return true;
        }
        drop(pending);
        self.get(canary).is_handled(key, time_ms)
    }

    /// The Event's notifications are being sent: the watermark waits for it.
    pub fn begin(&self, canary: &CanaryRef, key: &str, time_ms: i64) {
        let mut pending = self.pending.lock().expect("state lock");
        pending
            .entry(canary.clone())
            .or_default()
            .insert(key.to_owned(), time_ms);
    }

    /// The Event's notifications all reached an outcome: it is handled. (An Event whose
    /// notifications were dropped is never completed: it stays pending, holding the
    /// watermark below it, and is sent again after a restart.)
    pub fn complete(&self, canary: &CanaryRef, key: &str, time_ms: i64) {
        let oldest_pending = {
            let mut pending = self.pending.lock().expect("state lock");
            let oldest = pending.get_mut(canary).and_then(|events| {
                events.remove(key);
                events.values().copied().min()
            });
            if oldest.is_none() {
                pending.remove(canary);
            }
            oldest
        };
        self.update(canary, |r| r.record(key, time_ms, oldest_pending));
    }

    /// Changes a canary's record and marks it for the next flush.
    pub fn update(&self, canary: &CanaryRef, change: impl FnOnce(&mut CanaryRecord)) {
        let mut records = self.records.lock().expect("state lock");
        let record = records
            .entry(canary.clone())
            .or_insert_with(|| self.fresh());
        let before = record.clone();
        change(record);
        if *record != before {
            drop(records);
            let mut unsaved = self.unsaved.lock().expect("state lock");
            unsaved.changed.insert(canary.clone());
        }
    }

    /// Forgets the records for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&CanaryRef, &CanaryRecord) -> bool) {
        let mut records = self.records.lock().expect("state lock");
        let gone: Vec<CanaryRef> = records
            .iter()
            .filter(|(c, r)| !keep(c, r))
            .map(|(c, _)| c.clone())
            .collect();
        let mut unsaved = self.unsaved.lock().expect("state lock");
        for canary in gone {
            records.remove(&canary);
            unsaved.changed.remove(&canary);
            let key = canary.key();
            let shard = shard_of(&key, self.shards);
            unsaved.removed.entry(shard).or_default().insert(key);
        }
    }

    /// Writes the changes: one JSON merge patch per ConfigMap that has any.
    pub async fn flush(&self) -> Result<()> {
        if !self.fence.holds() {
            // The new leader owns the state now; this replica reloads it if it leads again.
            return Ok(());
        }
        let unsaved = std::mem::take(&mut *self.unsaved.lock().expect("state lock"));
        if unsaved.changed.is_empty() && unsaved.removed.is_empty() {
            return Ok(());
        }
        let mut patches: BTreeMap<usize, serde_json::Map<String, Value>> = BTreeMap::new();
        for (shard, keys) in &unsaved.removed {
            let data = patches.entry(*shard).or_default();
            for key in keys {
                data.insert(key.clone(), Value::Null);
            }
        }
        {
            let records = self.records.lock().expect("state lock");
            for canary in &unsaved.changed {
                if let Some(record) = records.get(canary) {
                    let key = canary.key();
                    let shard = shard_of(&key, self.shards);
                    patches
                        .entry(shard)
                        .or_default()
                        .insert(key, Value::String(record.to_json()));
                }
            }
        }
        let mut first_error = None;
        for (shard, data) in patches {
            if let Err(e) = self.write_shard(shard, data).await {
                warn!(error = %e, configmap = %shard_name(&self.base_name, shard), "could not save the delivery state; will retry");
                first_error.get_or_insert(e);
                // Keep this shard's changes for the next flush.
                let mut kept = self.unsaved.lock().expect("state lock");
                for canary in &unsaved.changed {
                    if shard_of(&canary.key(), self.shards) == shard {
                        kept.changed.insert(canary.clone());
                    }
                }
                if let Some(keys) = unsaved.removed.get(&shard) {
                    kept.removed
                        .entry(shard)
                        .or_default()
                        .extend(keys.iter().cloned());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Patches one shard; creates it, with all its records, when it does not exist (a first
    /// write, or someone deleted it).
    async fn write_shard(&self, shard: usize, data: serde_json::Map<String, Value>) -> Result<()> {
        let name = shard_name(&self.base_name, shard);
        let patch = serde_json::json!({ "data": data });
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let deleted = self.existing.lock().expect("state lock").contains(&shard);
                if deleted {
                    warn!(configmap = %name, "the delivery state ConfigMap was deleted: creating it again");
                }
                self.create_shard(shard, self.shard_records(shard)).await?;
                // Created by someone else meanwhile (409 above): patch that one.
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the first ConfigMap again, with its records, if someone deleted it: its
    /// existence tells the next start that this is no first install (so the Events of the
    /// downtime are sent). Called every minute by the leader.
    pub async fn keep_first_shard(&self) -> Result<()> {
        if !self.fence.holds() {
            return Ok(());
        }
        let name = shard_name(&self.base_name, 0);
        if self.api.get_opt(&name).await?.is_none() {
            warn!(configmap = %name, "the delivery state ConfigMap was deleted: creating it again");
            self.create_shard(0, self.shard_records(0)).await?;
        }
        Ok(())
    }

    /// Every record that belongs in `shard`, as ConfigMap data.
    fn shard_records(&self, shard: usize) -> BTreeMap<String, String> {
        let records = self.records.lock().expect("state lock");
        records
            .iter()
            .map(|(c, r)| (c.key(), r))
            .filter(|(key, _)| shard_of(key, self.shards) == shard)
            .map(|(key, r)| (key, r.to_json()))
            .collect()
    }

    async fn create_shard(&self, shard: usize, data: BTreeMap<String, String>) -> Result<()> {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(shard_name(&self.base_name, shard)),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "herald".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        match self.api.create(&PostParams::default(), &cm).await {
            Ok(_) => {
                self.existing.lock().expect("state lock").insert(shard);
                Ok(())
            }
            // Another replica created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.existing.lock().expect("state lock").insert(shard);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads the records of a state ConfigMap; unreadable entries are skipped with a warning.
pub fn parse_records(cm: &ConfigMap) -> HashMap<CanaryRef, CanaryRecord> {
    let mut records = HashMap::new();
    for (key, value) in cm.data.iter().flatten() {
        let Some((namespace, name)) = key.split_once('.') else {
            continue;
        };
        match serde_json::from_str::<CanaryRecord>(value) {
            Ok(record) => {
                records.insert(
                    CanaryRef {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    },
                    record,
                );
            }
            Err(e) => warn!(key, error = %e, "ignoring an unreadable delivery-state entry"),
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: a change here would strand every user's saved records.
        assert_eq!(
            shard_of("test.podinfo", SHARDS),
            shard_of("test.podinfo", SHARDS)
        );
        let mut counts = [0usize; SHARDS];
        for i in 0..10_000 {
            counts[shard_of(&format!("team-{}.app-{i}", i % 50), SHARDS)] += 1;
        }
        assert!(
            counts.iter().all(|c| (1000..1500).contains(c)),
            "10,000 canaries spread over the shards: {counts:?}"
        );
        assert_eq!(shard_name("herald-state", 0), "herald-state");
        assert_eq!(shard_name("herald-state", 7), "herald-state-7");
    }

    #[test]
    fn records_round_trip_through_the_configmap_format() {
        let mut record = CanaryRecord {
            phase: Some("Progressing".into()),
            ..Default::default()
        };
        record.record("uid-1:3", 1_700_000_000_000, None);
        let cm = ConfigMap {
            data: Some(BTreeMap::from([
                ("default.podinfo".to_owned(), record.to_json()),
                ("bad".to_owned(), "x".to_owned()),
            ])),
            ..Default::default()
        };
        let parsed = parse_records(&cm);
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed[&CanaryRef {
                namespace: "default".into(),
                name: "podinfo".into()
            }],
            record
        );
    }

    #[test]
    fn ten_thousand_canaries_with_long_histories_fit_the_object_limit() {
        let mut per_shard = [0usize; SHARDS];
        for i in 0..10_000 {
            let canary = CanaryRef {
                namespace: format!("team-{:03}", i % 200),
                name: format!("service-{i:05}"),
            };
            let mut record = CanaryRecord {
                phase: Some("Succeeded".into()),
                ..Default::default()
            };
            for e in 0..100 {
                let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, e);
                record.record(&format!("{uid}:1"), 1_700_000_000_000 + e * 1000, None);
            }
            let key = canary.key();
            per_shard[shard_of(&key, SHARDS)] += key.len() + record.to_json().len();
        }
        let total: usize = per_shard.iter().sum();
        assert!(total / 10_000 < 130, "bytes per canary: {}", total / 10_000);
        assert!(
            per_shard.iter().all(|b| *b < 1024 * 1024 / 4),
            "each shard far below 1 MiB: {per_shard:?}"
        );
    }
}
