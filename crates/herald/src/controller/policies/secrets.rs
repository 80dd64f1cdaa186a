//! The Secrets policies refer to (webhook URLs, tokens, signing keys): read on first use and
//! cached, so validating and rebuilding the PolicySet never waits on the API server; the
//! Secret watch drops an entry when its Secret changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use herald_core::{PolicyObject, SecretError, SecretSource};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::Result;

/// Secret data of the Secrets policies refer to: fetched on first use, dropped when the
/// Secret changes (the watch), fetched again on the next reconcile. `None` = known missing.
#[derive(Default)]
pub struct SecretCache {
    entries: RwLock<HashMap<(String, String), Option<SecretData>>>,
    /// The `resourceVersion` each cached Secret was read at: the metadata-only watch of
    /// Secrets compares it to tell a change from a re-list.
    read_at: RwLock<HashMap<(String, String), String>>,
    /// Counts changes to `entries`: validations made at an older version may be stale.
    version: AtomicU64,
}

/// A Secret's keys and decoded values.
type SecretData = BTreeMap<String, Vec<u8>>;

impl SecretCache {
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        self.entries.write().expect("cache lock").remove(&key);
        self.read_at.write().expect("cache lock").remove(&key);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// True when the Secret is cached at another `resourceVersion` than `seen` (a watched
    /// change), or is cached and `seen` is `None` (deleted).
    pub fn is_stale(&self, namespace: &str, name: &str, seen: Option<&str>) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        if !self.entries.read().expect("cache lock").contains_key(&key) {
            return false;
        }
        let read_at = self.read_at.read().expect("cache lock");
        match (seen, read_at.get(&key)) {
            (Some(seen), Some(read)) => seen != read,
            // Read as missing and now seen, or deleted.
            _ => true,
        }
    }

    /// Changes whenever a Secret is cached or forgotten.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.entries
            .read()
            .expect("cache lock")
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn insert(&self, namespace: &str, name: &str, secret: Option<&Secret>) {
        let data = secret.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            for (k, v) in s.string_data.iter().flatten() {
                data.insert(k.clone(), v.clone().into_bytes());
            }
            data
        });
        let key = (namespace.to_owned(), name.to_owned());
        let version = secret.and_then(|s| s.metadata.resource_version.clone());
        {
            let mut read_at = self.read_at.write().expect("cache lock");
            match version {
                Some(v) => read_at.insert(key.clone(), v),
                None => read_at.remove(&key),
            };
        }
        self.entries.write().expect("cache lock").insert(key, data);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Fetches the Secrets `policy` refers to that are not cached yet.
    pub async fn fetch_missing(
        &self,
        client: &Client,
        policy: &PolicyObject,
        herald_namespace: &str,
    ) -> Result<()> {
        for (namespace, name) in secret_refs(policy, herald_namespace) {
            if self.contains(&namespace, &name) {
                continue;
            }
            let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
                .get_opt(&name)
                .await?;
            self.insert(&namespace, &name, secret.as_ref());
        }
        Ok(())
    }
}

impl SecretSource for SecretCache {
    fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> std::result::Result<String, SecretError> {
        let entries = self.entries.read().expect("cache lock");
        let not_found = || SecretError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let data = entries
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(Option::as_ref)
            .ok_or_else(not_found)?;
        let mut store = herald_core::SecretStore::default();
        store.insert(namespace, name, data.clone());
        store.secret_value(namespace, name, key)
    }
}

/// The Secrets (namespace, name) a policy refers to. Cluster policies read Herald's namespace.
pub fn secret_refs(policy: &PolicyObject, herald_namespace: &str) -> Vec<(String, String)> {
    let namespace = policy
        .id()
        .namespace
        .unwrap_or_else(|| herald_namespace.to_owned());
    let mut refs: Vec<(String, String)> = policy
        .rules()
        .receivers
        .iter()
        .flat_map(|r| {
            r.secret_refs()
                .map(|secret| (namespace.clone(), secret.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

#[cfg(test)]
mod secret_ref_tests {
    use super::secret_refs;
    use herald_api::NotificationPolicy;
    use herald_core::PolicyObject;

    /// Every receiver kind's Secret is fetched (and watched), or its policy never gets Ready.
    #[test]
    fn every_kind_names_its_secret() {
        let policy: NotificationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"receivers": [
                {"name": "a", "slack": {"secretRef": {"name": "slack"}}},
                {"name": "b", "msteams": {"secretRef": {"name": "teams"}}},
                {"name": "c", "webhook": {"secretRef": {"name": "hook"}}},
                {"name": "d", "discord": {"secretRef": {"name": "discord"}}},
                {"name": "e", "googlechat": {"secretRef": {"name": "gchat", "key": "url"}}},
                {"name": "f", "rocketchat": {"secretRef": {"name": "rocket"}}},
                {"name": "g", "rocketchat": {"url": "https://rocket.example.com/hooks/x"}}
            ]}
        }))
        .unwrap();
        let refs = secret_refs(&PolicyObject::Namespaced(policy), "herald");
        let names: Vec<&str> = refs.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(
            names,
            ["discord", "gchat", "hook", "rocket", "slack", "teams"]
        );
        assert!(refs.iter().all(|(ns, _)| ns == "team"));
    }

    /// Credentials in their own Secrets are fetched too: a bot token, a bearer token, a
    /// signing key (else a policy using them never compiles in a cluster).
    #[test]
    fn credential_secrets_are_named_too() {
        let policy: NotificationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"receivers": [
                {"name": "bot", "slack": {"tokenSecretRef": {"name": "slack-bot"}, "channel": "C1"}},
                {"name": "hook", "webhook": {
                    "secretRef": {"name": "hook-url"},
                    "bearerTokenSecretRef": {"name": "hook-token"},
                    "signature": {"secretRef": {"name": "hook-key"}}
                }}
            ]}
        }))
        .unwrap();
        let refs = secret_refs(&PolicyObject::Namespaced(policy), "herald");
        let names: Vec<&str> = refs.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["hook-key", "hook-token", "hook-url", "slack-bot"]);
    }
}
