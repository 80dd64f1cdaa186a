//! Secret values (receiver URLs) and where they come from.

use std::collections::BTreeMap;
use std::fmt;

/// A value that must never be printed: receiver URLs carry their credentials in the path.
/// `Debug` and `Display` print `[redacted]`; only [`Redacted::expose`] yields the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(value: impl Into<String>) -> Self {
        Redacted(value.into())
    }

    /// The secret value, for the one place that needs it: the HTTP request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
}

/// Where `secretRef`s are resolved: Secret documents next to standalone policies, or the
/// controller's cache of cluster Secrets.
pub trait SecretSource {
    fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Result<String, SecretError>;
}

/// Secrets held in memory, keyed by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl SecretStore {
    pub fn insert(
        &mut self,
        namespace: impl Into<String>,
        name: impl Into<String>,
        data: BTreeMap<String, Vec<u8>>,
    ) {
        self.secrets.insert((namespace.into(), name.into()), data);
    }

    /// Adds a Kubernetes Secret: `data` (base64, already decoded by k8s-openapi) and
    /// `stringData` (which wins, as the API server merges it).
    pub fn insert_secret(
        &mut self,
        default_namespace: &str,
        secret: &k8s_openapi::api::core::v1::Secret,
    ) {
        let namespace = secret
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_owned());
        let name = secret.metadata.name.clone().unwrap_or_default();
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        self.insert(namespace, name, data);
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl SecretSource for SecretStore {
    fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Result<String, SecretError> {
        let data = self
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| SecretError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        let bytes = data.get(key).ok_or_else(|| SecretError::KeyMissing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        })?;
        let text = std::str::from_utf8(bytes).map_err(|_| SecretError::NotText {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        })?;
        // A trailing newline is the usual accident of `kubectl create secret --from-file`.
        Ok(text.trim().to_owned())
    }
}
