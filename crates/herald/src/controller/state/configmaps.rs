//! The records in ConfigMaps: loaded once when Herald leads, saved by merge patches that
//! touch only the changed canaries' keys, and a shard deleted under Herald created again.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{info, warn};

use super::{shard_name, shard_of, CanaryRecord, CanaryRef, StateStore, SHARDS};
use crate::controller::leader::Fence;
use crate::Result;

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
