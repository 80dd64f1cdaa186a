//! Policies: validated and compiled once per generation (`validate` + `build`), indexed so an
//! event finds its policies without scanning them all, and rendered into deliveries.

use std::collections::BTreeMap;
use std::fmt;

use herald_api::{ClusterNotificationPolicy, NamespaceSelector, NotificationPolicy, PolicyRules};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::template::TemplateError;

mod builder;
mod compiled;
mod compiler;
mod gates;
pub(crate) mod json;
mod names;
mod set;
#[cfg(test)]
mod tests;

pub use builder::PolicySetBuilder;
pub use compiled::{CompiledPolicy, CompiledReceiver, MatchInput};
pub use compiler::Compiler;
pub use gates::{Ask, CompiledGates};
pub use json::minify_json;
pub use set::{Notification, PolicySet, RenderFailure};

/// A policy's identity: `namespace/name` for a NotificationPolicy, `name` for a
/// ClusterNotificationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyId {
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PolicyId {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    pub fn cluster(name: impl Into<String>) -> Self {
        PolicyId {
            namespace: None,
            name: name.into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        if self.namespace.is_some() {
            "NotificationPolicy"
        } else {
            "ClusterNotificationPolicy"
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Either policy kind, as read from YAML or the API.
#[derive(Clone, Debug)]
pub enum PolicyObject {
    Namespaced(NotificationPolicy),
    Cluster(ClusterNotificationPolicy),
}

impl PolicyObject {
    fn metadata(&self) -> &ObjectMeta {
        match self {
            PolicyObject::Namespaced(p) => &p.metadata,
            PolicyObject::Cluster(p) => &p.metadata,
        }
    }

    /// The id; a namespaced policy without a namespace is in `default`, as `kubectl apply`
    /// would put it.
    pub fn id(&self) -> PolicyId {
        let name = self.metadata().name.clone().unwrap_or_default();
        match self {
            PolicyObject::Namespaced(p) => PolicyId::namespaced(
                p.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
                name,
            ),
            PolicyObject::Cluster(_) => PolicyId::cluster(name),
        }
    }

    pub fn generation(&self) -> Option<i64> {
        self.metadata().generation
    }

    pub fn rules(&self) -> PolicyRules<'_> {
        match self {
            PolicyObject::Namespaced(p) => p.spec.rules(),
            PolicyObject::Cluster(p) => p.spec.rules(),
        }
    }

    fn namespace_selector(&self) -> Option<&NamespaceSelector> {
        match self {
            PolicyObject::Namespaced(_) => None,
            PolicyObject::Cluster(p) => Some(&p.spec.namespace_selector),
        }
    }
}

/// Why a policy is not Ready: the `reason` of its `Ready=False` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidSpec,
    TemplateError,
    SecretNotFound,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TemplateError => "TemplateError",
            Reason::SecretNotFound => "SecretNotFound",
        }
    }
}

/// One thing wrong with a policy, at a field path such as `spec.receivers[0].slack.secretRef`.
/// Never contains a secret value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(reason: Reason, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            reason,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(crate) fn check_label_keys(
    labels: &BTreeMap<String, String>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    for key in labels.keys() {
        if let Some(why) = crate::labels::label_key_error(key) {
            problems.push(Problem::new(Reason::InvalidSpec, path, why));
        }
    }
}

pub(crate) fn template_problem(path: &str, e: &TemplateError) -> Problem {
    Problem::new(Reason::TemplateError, path, e.to_string())
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// An `http://` or `https://` URL with a host.
pub fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains(char::is_whitespace)
    })
}
