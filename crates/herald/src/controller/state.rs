//! What Herald has already sent, per canary, persisted in a ConfigMap it owns, so a restart,
//! a re-list or a watch reconnect does not send a notification twice and an event that came
//! while Herald was down is still sent once.
//!
//! Per canary Herald keeps the keys (`<Event uid>:<count>`) of the latest handled Kubernetes
//! Events with their times (at most [`MAX_KEYS`]) and a floor time: everything older than the
//! floor counts as handled. An Event is recorded only after all of its notifications reached
//! an outcome, so the guarantee is at-least-once: a duplicate is possible only if Herald dies
//! between sending and recording.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::delivery::{MemoryThreads, ThreadStore};
use crate::Result;
use herald_core::request::{ThreadParent, ThreadRef};

/// Handled Event keys kept per canary; older ones fold into the floor.
pub const MAX_KEYS: usize = 100;

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

/// What was handled for one canary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRecord {
    /// Handled Event keys and their times (unix ms).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handled: BTreeMap<String, i64>,
    /// Events older than this (unix ms) count as handled.
    #[serde(default)]
    pub floor: i64,
    /// The last canary phase Herald saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The terminal phase (Initialized, Succeeded, Failed) already announced for the current
    /// transition, by a Flagger Event or by Herald itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
    /// The canary's current rollout thread per threading receiver (Slack bot, Google Chat),
    /// by the receiver's thread scope.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threads: BTreeMap<String, ThreadParent>,
}

impl CanaryRecord {
    pub fn is_handled(&self, key: &str, time_ms: i64) -> bool {
        time_ms < self.floor || self.handled.contains_key(key)
    }

    pub fn record(&mut self, key: &str, time_ms: i64) {
        self.handled.insert(key.to_owned(), time_ms);
        while self.handled.len() > MAX_KEYS {
            let (oldest_key, oldest_time) = self
                .handled
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, t)| (k.clone(), *t))
                .expect("not empty");
            self.handled.remove(&oldest_key);
            self.floor = self.floor.max(oldest_time);
        }
    }
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

/// All records, with the ones changed since the last flush.
pub struct StateStore {
    api: Api<ConfigMap>,
    name: String,
    records: Mutex<HashMap<CanaryRef, CanaryRecord>>,
    dirty: Mutex<BTreeSet<CanaryRef>>,
    /// The floor of canaries without a record: 0 normally (send what was missed), the start
    /// time on a first install (do not replay the cluster's history).
    default_floor: i64,
}

impl StateStore {
    /// Loads the ConfigMap `name` in `namespace`, creating it on first install; then Events
    /// older than `first_install_floor` (unix ms) count as handled.
    pub async fn load(
        client: Client,
        namespace: &str,
        name: &str,
        first_install_floor: i64,
    ) -> Result<StateStore> {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let (records, default_floor) = match api.get_opt(name).await? {
            Some(cm) => (parse_records(&cm), 0),
            None => {
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.to_owned()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "herald".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => info!(
                        configmap = name,
                        "first start: created the delivery state; past Events are not replayed"
                    ),
                    // Another replica created it first.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                (HashMap::new(), first_install_floor)
            }
        };
        Ok(StateStore::new(api, name, records, default_floor))
    }

    pub fn new(
        api: Api<ConfigMap>,
        name: &str,
        records: HashMap<CanaryRef, CanaryRecord>,
        default_floor: i64,
    ) -> Self {
        StateStore {
            api,
            name: name.to_owned(),
            records: Mutex::new(records),
            dirty: Mutex::new(BTreeSet::new()),
            default_floor,
        }
    }

    /// A copy of the canary's record (a fresh one with the default floor if there is none).
    pub fn get(&self, canary: &CanaryRef) -> CanaryRecord {
        self.records
            .lock()
            .expect("state lock")
            .get(canary)
            .cloned()
            .unwrap_or_else(|| CanaryRecord {
                floor: self.default_floor,
                ..CanaryRecord::default()
            })
    }

    /// Changes a canary's record and marks it for the next flush.
    pub fn update(&self, canary: &CanaryRef, change: impl FnOnce(&mut CanaryRecord)) {
        let mut records = self.records.lock().expect("state lock");
        let record = records
            .entry(canary.clone())
            .or_insert_with(|| CanaryRecord {
                floor: self.default_floor,
                ..CanaryRecord::default()
            });
        let before = record.clone();
        change(record);
        if *record != before {
            self.dirty
                .lock()
                .expect("state lock")
                .insert(canary.clone());
        }
    }

    /// Writes the changed records with one JSON merge patch (touching only their keys).
    pub async fn flush(&self) -> Result<()> {
        let dirty: Vec<CanaryRef> = std::mem::take(&mut *self.dirty.lock().expect("state lock"))
            .into_iter()
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let data: serde_json::Map<String, serde_json::Value> = {
            let records = self.records.lock().expect("state lock");
            dirty
                .iter()
                .filter_map(|c| {
                    records
                        .get(c)
                        .map(|r| (c.key(), serde_json::Value::String(to_json(r))))
                })
                .collect()
        };
        let patch = serde_json::json!({ "data": data });
        if let Err(e) = self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Keep them dirty for the next flush.
            self.dirty.lock().expect("state lock").extend(dirty);
            warn!(error = %e, "could not save the delivery state; will retry");
            return Err(e.into());
        }
        Ok(())
    }
}

fn to_json(record: &CanaryRecord) -> String {
    serde_json::to_string(record).expect("a record serialises")
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
    fn handled_keys_and_floor() {
        let mut record = CanaryRecord::default();
        assert!(!record.is_handled("a:1", 10));
        record.record("a:1", 10);
        assert!(record.is_handled("a:1", 10));
        assert!(
            !record.is_handled("a:2", 10),
            "the same Event seen again (count 2) is new"
        );
        for i in 0..=MAX_KEYS as i64 {
            record.record(&format!("k:{i}"), 100 + i);
        }
        assert_eq!(record.handled.len(), MAX_KEYS);
        assert_eq!(record.floor, 100, "the oldest keys fold into the floor");
        assert!(record.is_handled("unknown:1", 99), "older than the floor");
        assert!(!record.is_handled("unknown:1", 100));
    }

    #[test]
    fn records_round_trip_through_the_configmap_format() {
        let mut record = CanaryRecord {
            phase: Some("Progressing".into()),
            ..Default::default()
        };
        record.record("uid-1:3", 1_700_000_000_000);
        let cm = ConfigMap {
            data: Some(BTreeMap::from([
                ("default.podinfo".to_owned(), to_json(&record)),
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
        assert_eq!(
            to_json(&record),
            r#"{"handled":{"uid-1:3":1700000000000},"floor":0,"phase":"Progressing"}"#
        );
    }
}
