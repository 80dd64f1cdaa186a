//! The records in memory: an Event is pending from the moment its notifications are queued
//! until they all reach an outcome, then handled; the watermark waits for the oldest pending.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::{shard_of, CanaryRecord, CanaryRef, StateStore};
use crate::controller::leader::Fence;

impl StateStore {
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
}
