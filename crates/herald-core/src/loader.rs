//! Reading policies from YAML text (standalone mode and `herald check`): multi-document
//! files holding NotificationPolicy, ClusterNotificationPolicy and v1 Secret documents.
//! Every problem names its file, document and field path. Pure: the caller reads the files.

// Load problems are built once per bad document, never on a hot path; boxing them would only
// obscure the code.
#![allow(clippy::result_large_err)]

use std::fmt;

use herald_api::{ClusterNotificationPolicy, NotificationPolicy};
use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::policy::{PolicyId, PolicyObject, PolicySet, PolicySetBuilder};
use crate::secret::SecretStore;

/// Where a document came from: a file (or other source name) and its 1-based document number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.source, self.document)
    }
}

/// A document Herald understood.
#[derive(Clone, Debug)]
pub enum Document {
    Policy(Box<PolicyObject>),
    Secret(Box<Secret>),
    /// Another kind (a Canary, a Deployment): not Herald's, skipped.
    Other {
        api_version: String,
        kind: String,
    },
}

/// A document that could not be read, or a policy that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadProblem {
    pub origin: Origin,
    /// The policy, when the document was one.
    pub policy: Option<PolicyId>,
    /// The field path, e.g. `spec.receivers[0].slack.url`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(policy) = &self.policy {
            write!(f, " {} {policy}", policy.kind())?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Splits a YAML text into documents and reads each one.
pub fn load_documents(source: &str, text: &str) -> Vec<Result<(Origin, Document), LoadProblem>> {
    let mut out = Vec::new();
    let mut last_error_at = None;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            source: source.to_owned(),
            document: i + 1,
        };
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                let at = e.location().map(|at| (at.line(), at.column()));
                // A syntax error leaves the parser stuck: every later document repeats it at
                // the same place. Any other error (a duplicate key) spoils only its document.
                if at.is_some() && at <= last_error_at {
                    break;
                }
                let message = match e.location() {
                    Some(at) => format!(
                        "invalid YAML at line {}, column {}: {}",
                        at.line(),
                        at.column(),
                        strip_location(&e)
                    ),
                    None => format!("invalid YAML: {e}"),
                };
                out.push(Err(LoadProblem {
                    origin,
                    policy: None,
                    path: String::new(),
                    message,
                }));
                if at.is_none() {
                    break;
                }
                last_error_at = at;
                continue;
            }
        };
        out.push(read_document(origin, value));
    }
    out
}

fn strip_location(e: &serde_yaml::Error) -> String {
    let full = e.to_string();
    full.find(" at line ")
        .map_or(full.clone(), |i| full[..i].to_owned())
}

fn read_document(
    origin: Origin,
    value: serde_yaml::Value,
) -> Result<(Origin, Document), LoadProblem> {
    let problem = |path: &str, message: String| LoadProblem {
        origin: origin.clone(),
        policy: None,
        path: path.to_owned(),
        message,
    };
    let meta = TypeMeta::deserialize(value.clone())
        .map_err(|e| problem("", format!("not a Kubernetes object: {e}")))?;
    let document = match (meta.api_version.as_str(), meta.kind.as_str()) {
        (_, "") => return Err(problem("kind", "missing field".to_owned())),
        ("herald.dev/v1alpha1", "NotificationPolicy") => {
            Document::Policy(Box::new(PolicyObject::Namespaced(strict::<
                NotificationPolicy,
            >(
                value, &origin
            )?)))
        }
        ("herald.dev/v1alpha1", "ClusterNotificationPolicy") => {
            Document::Policy(Box::new(PolicyObject::Cluster(strict::<
                ClusterNotificationPolicy,
            >(
                value, &origin
            )?)))
        }
        (api_version, kind @ ("NotificationPolicy" | "ClusterNotificationPolicy")) => {
            return Err(problem(
                "apiVersion",
                format!("{kind} is served as herald.dev/v1alpha1, not {api_version:?}"),
            ))
        }
        ("v1", "Secret") => Document::Secret(Box::new(strict::<Secret>(value, &origin)?)),
        (api_version, kind) => Document::Other {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        },
    };
    Ok((origin, document))
}

/// Deserialises with the failing field's path, and rejects unknown fields (a misspelt
/// `phase:` must not silently mean "every phase").
fn strict<T: DeserializeOwned>(
    value: serde_yaml::Value,
    origin: &Origin,
) -> Result<T, LoadProblem> {
    let mut unknown = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(value, &mut track);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    let problem = |path: String, message: String| LoadProblem {
        origin: origin.clone(),
        policy: None,
        path,
        message,
    };
    let parsed = parsed.map_err(|e| problem(e.path().to_string(), strip_location(e.inner())))?;
    // apiVersion and kind are read above; the typed objects do not keep them.
    if let Some(path) = unknown
        .iter()
        .map(|p| ignored_path(p))
        .find(|p| p != "apiVersion" && p != "kind")
    {
        return Err(problem(path, "unknown field".to_owned()));
    }
    Ok(parsed)
}

/// serde_ignored writes `spec.receivers.0.slack.?.chanel`; Herald reports
/// `spec.receivers[0].slack.chanel`, the form `kubectl explain` and the API server use.
fn ignored_path(path: &str) -> String {
    let mut out = String::new();
    for segment in path.split('.').filter(|s| *s != "?") {
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// Everything read from a set of sources.
#[derive(Default)]
pub struct Loaded {
    pub policies: Vec<(Origin, PolicyObject)>,
    pub secrets: SecretStore,
    pub problems: Vec<LoadProblem>,
    /// Documents of other kinds, skipped.
    pub skipped: Vec<(Origin, String)>,
}

/// Reads every source (name, YAML text). Secrets without a namespace are in `default`, as
/// `kubectl apply` would put them.
pub fn load_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Loaded {
    let mut loaded = Loaded::default();
    let mut seen: std::collections::HashMap<PolicyId, Origin> = std::collections::HashMap::new();
    for (name, text) in sources {
        let documents = load_documents(name, text);
        // Room for every document at once: grown by doubling, the policies (over 700 bytes
        // each) would be copied a dozen times and hold up to twice the room they need.
        loaded.policies.reserve(documents.len());
        for result in documents {
            match result {
                Err(problem) => loaded.problems.push(problem),
                Ok((_, Document::Secret(secret))) => {
                    loaded.secrets.insert_secret("default", &secret)
                }
                Ok((origin, Document::Other { api_version, kind })) => loaded
                    .skipped
                    .push((origin, format!("{api_version} {kind}"))),
                Ok((origin, Document::Policy(policy))) => {
                    let id = policy.id();
                    if let Some(first) = seen.get(&id) {
                        loaded.problems.push(LoadProblem {
                            origin,
                            policy: Some(id),
                            path: "metadata.name".to_owned(),
                            message: format!("already defined in {first}"),
                        });
                        continue;
                    }
                    seen.insert(id, origin.clone());
                    loaded.policies.push((origin, *policy));
                }
            }
        }
    }
    loaded
}

impl Loaded {
    /// What is valid but likely wrong in the policies: webhook body templates that put a
    /// value inside a JSON string (see [`crate::template::values_in_json_strings`]).
    /// `herald check` prints them as warnings.
    pub fn warnings(&self) -> Vec<LoadProblem> {
        let mut out = Vec::new();
        for (origin, policy) in &self.policies {
            for (i, receiver) in policy.rules().receivers.iter().enumerate() {
                let Some(body) = receiver.webhook.as_ref().and_then(|w| w.body.as_ref()) else {
                    continue;
                };
                for tag in crate::template::values_in_json_strings(body) {
                    out.push(LoadProblem {
                        origin: origin.clone(),
                        policy: Some(policy.id()),
                        path: format!("spec.receivers[{i}].webhook.body"),
                        message: format!(
                            "{tag} is inside a JSON string: a value with a quote breaks the body or adds keys to it; write {{{{json ...}}}} in place of the quoted string"
                        ),
                    });
                }
            }
        }
        out
    }

    /// Validates and compiles the policies. Problems of rejected policies are appended to
    /// `self.problems` with their origin.
    pub fn build(&mut self, cluster: &str, herald_namespace: &str) -> PolicySet {
        let mut builder = PolicySetBuilder::new(&self.secrets, cluster, herald_namespace);
        let mut rejected = Vec::new();
        for (origin, policy) in &self.policies {
            add(&mut builder, origin, policy, &mut rejected);
        }
        let set = builder.build();
        self.problems.extend(rejected);
        set
    }

    /// [`Self::build`] for a caller that keeps only the set and the problems (a server
    /// loading its files): each policy object is dropped as soon as it is compiled, so the
    /// parsed policies and the compiled ones are never all held at once (with 10,000
    /// policies, tens of MiB the process would keep from the allocator afterwards).
    pub fn into_set(
        mut self,
        cluster: &str,
        herald_namespace: &str,
    ) -> (PolicySet, Vec<LoadProblem>) {
        let policies = std::mem::take(&mut self.policies);
        let mut builder = PolicySetBuilder::new(&self.secrets, cluster, herald_namespace);
        let mut rejected = Vec::new();
        for (origin, policy) in policies {
            add(&mut builder, &origin, &policy, &mut rejected);
        }
        let set = builder.build();
        self.problems.extend(rejected);
        (set, self.problems)
    }
}

/// Adds one policy to `builder`; its problems, if rejected, go to `rejected` with its origin.
fn add(
    builder: &mut PolicySetBuilder<'_>,
    origin: &Origin,
    policy: &PolicyObject,
    rejected: &mut Vec<LoadProblem>,
) {
    if let Err(problems) = builder.add(policy) {
        let id = policy.id();
        rejected.extend(problems.into_iter().map(|p| LoadProblem {
            origin: origin.clone(),
            policy: Some(id.clone()),
            path: p.path,
            message: p.message,
        }));
    }
}
