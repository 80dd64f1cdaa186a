//! Herald's Kubernetes API: `NotificationPolicy` (namespaced) and `ClusterNotificationPolicy`
//! (cluster-scoped), group `herald.dev`, version `v1alpha1`.
//!
//! These types are the single source of the CRD YAML in `crds/` (`herald crd` prints them).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod flagger;
mod gates;
mod openapi;
mod receivers;

pub use gates::*;
pub use receivers::*;

pub const GROUP: &str = "herald.dev";
pub const VERSION: &str = "v1alpha1";
/// The Secret key read when a `secretRef` names no key (the same key Flagger's AlertProviders use).
pub const DEFAULT_SECRET_KEY: &str = "address";

/// Declares a policy spec struct: the given leading fields followed by the rules shared by
/// both policy kinds. A macro rather than `#[serde(flatten)]`, because flatten loses the field
/// path in errors and hides unknown (misspelt) fields from `herald check`.
macro_rules! policy_spec {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Canary names: exact names or globs such as `payments-*`. Empty means every canary.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub canaries: Vec<String>,
            /// Labels the Canary object must carry (all of them). Events received over HTTP carry
            /// no labels, so a policy with `matchLabels` only fires for events Herald saw in the
            /// cluster.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub match_labels: BTreeMap<String, String>,
            /// Canary phases to notify on. Empty means every phase.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub phases: Vec<CanaryPhase>,
            /// Event types to notify on (`Normal`, `Warning`). Empty means both.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub event_types: Vec<EventType>,
            /// A regular expression (Rust `regex` syntax) the event message must match.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub message_pattern: Option<String>,
            /// Send a repeated message at most once per this interval: the same text, event
            /// type, canary and revision to the same receiver, such as Flagger's "Halt
            /// advancement" or "waiting for approval" every analysis interval. A duration such
            /// as `30s`, `10m` or `1h30m`, more than zero. Unset: every repeat is sent.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            // At least one part has a non-zero digit: `0s` would hold nothing back.
            #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))*[0-9]*[1-9][0-9]*(ms|s|m|h)([0-9]+(ms|s|m|h))*$"))]
            pub repeat_interval: Option<String>,
            /// Where to send matching events. Receiver names are unique within a policy.
            #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
            #[schemars(length(min = 1))]
            pub receivers: Vec<Receiver>,
            /// Handlebars templates for the notification's title and text, for every receiver
            /// that does not set its own.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub template: Option<MessageTemplate>,
            /// Stop sending without deleting the policy.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub suspend: bool,
            /// Answer Flagger's gate webhooks for these canaries: ask the receivers, take
            /// decisions from the approvers (see the README's "Gates").
            // Boxed: most policies answer no gates, and every parsed policy would otherwise
            // carry the room for them.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub gates: Option<Box<GatePolicy>>,
        }

        impl $name {
            /// The rules shared by both policy kinds.
            pub fn rules(&self) -> PolicyRules<'_> {
                PolicyRules {
                    canaries: &self.canaries,
                    match_labels: &self.match_labels,
                    phases: &self.phases,
                    event_types: &self.event_types,
                    message_pattern: self.message_pattern.as_deref(),
                    repeat_interval: self.repeat_interval.as_deref(),
                    receivers: &self.receivers,
                    template: self.template.as_ref(),
                    suspend: self.suspend,
                    gates: self.gates.as_deref(),
                }
            }
        }
    };
}

/// A borrowed view of the rules both policy kinds share. Every empty selector means "all".
#[derive(Clone, Copy, Debug)]
pub struct PolicyRules<'a> {
    pub canaries: &'a [String],
    pub match_labels: &'a BTreeMap<String, String>,
    pub phases: &'a [CanaryPhase],
    pub event_types: &'a [EventType],
    pub message_pattern: Option<&'a str>,
    pub repeat_interval: Option<&'a str>,
    pub receivers: &'a [Receiver],
    pub template: Option<&'a MessageTemplate>,
    pub suspend: bool,
    pub gates: Option<&'a GatePolicy>,
}

policy_spec! {
    /// Which canaries, which events, and where to send them. Applies to canaries in the
    /// policy's own namespace.
    #[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[kube(
        group = "herald.dev",
        version = "v1alpha1",
        kind = "NotificationPolicy",
        doc = "Sends Flagger's canary events for canaries in this namespace to the receivers it lists: chat, on-call, alerting and dashboard services, or any webhook.",
        plural = "notificationpolicies",
        shortname = "notpol",
        namespaced,
        status = "PolicyStatus",
        category = "herald",
        printcolumn = r#"{"name":"Receivers","type":"string","jsonPath":".status.receiverKinds"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct NotificationPolicySpec {}
}

policy_spec! {
    /// Like `NotificationPolicy`, but for canaries in every namespace chosen by
    /// `namespaceSelector` (all namespaces when it is empty). Secrets named by `secretRef` are
    /// read from Herald's own namespace.
    #[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[kube(
        group = "herald.dev",
        version = "v1alpha1",
        kind = "ClusterNotificationPolicy",
        doc = "Sends Flagger's canary events for canaries in the namespaces chosen by namespaceSelector (all by default) to the receivers it lists: chat, on-call, alerting and dashboard services, or any webhook.",
        plural = "clusternotificationpolicies",
        shortname = "cnotpol",
        status = "PolicyStatus",
        category = "herald",
        printcolumn = r#"{"name":"Receivers","type":"string","jsonPath":".status.receiverKinds"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterNotificationPolicySpec {
        /// Which namespaces this policy covers. Empty means all namespaces.
        #[serde(default, skip_serializing_if = "NamespaceSelector::is_empty")]
        pub namespace_selector: NamespaceSelector,
    }
}

/// Namespaces a cluster policy covers: exact names or globs, and/or namespace labels.
/// Both must match when both are set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Namespace names or globs such as `team-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
    /// Labels the namespace must carry. Only known in a cluster; standalone Herald never
    /// matches a selector that sets these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl NamespaceSelector {
    pub fn is_empty(&self) -> bool {
        self.match_names.is_empty() && self.match_labels.is_empty()
    }
}

/// Flagger's canary phases (`status.phase` of a `flagger.app/v1beta1` Canary).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum CanaryPhase {
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl CanaryPhase {
    pub const ALL: [CanaryPhase; 11] = [
        CanaryPhase::Initializing,
        CanaryPhase::Initialized,
        CanaryPhase::Waiting,
        CanaryPhase::Progressing,
        CanaryPhase::WaitingPromotion,
        CanaryPhase::Promoting,
        CanaryPhase::Finalising,
        CanaryPhase::Succeeded,
        CanaryPhase::Failed,
        CanaryPhase::Terminating,
        CanaryPhase::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CanaryPhase::Initializing => "Initializing",
            CanaryPhase::Initialized => "Initialized",
            CanaryPhase::Waiting => "Waiting",
            CanaryPhase::Progressing => "Progressing",
            CanaryPhase::WaitingPromotion => "WaitingPromotion",
            CanaryPhase::Promoting => "Promoting",
            CanaryPhase::Finalising => "Finalising",
            CanaryPhase::Succeeded => "Succeeded",
            CanaryPhase::Failed => "Failed",
            CanaryPhase::Terminating => "Terminating",
            CanaryPhase::Terminated => "Terminated",
        }
    }

    pub fn parse(s: &str) -> Option<CanaryPhase> {
        CanaryPhase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The Kubernetes event type Flagger records: `Normal` or `Warning`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl PolicyRules<'_> {
    /// Every receiver's kind, in order, joined by commas: `PolicyStatus::receiver_kinds`. A
    /// receiver that sets several kinds shows them joined by `+`, one that sets none as `?`.
    pub fn receiver_kinds(&self) -> String {
        let kinds: Vec<String> = self
            .receivers
            .iter()
            .map(|receiver| match receiver.kinds_set().join("+") {
                none if none.is_empty() => "?".to_owned(),
                kinds => kinds,
            })
            .collect();
        kinds.join(",")
    }
}

/// Handlebars templates for a notification. Unset parts use Herald's defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What Herald observed of a policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when the policy delivers; False with a reason (`InvalidSpec`,
    /// `TemplateError`, `SecretNotFound`, `Suspended`) when it does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The kinds of `spec.receivers`, in order, joined by commas (`slack,msteams`): the
    /// RECEIVERS column. A column shows only the first value its JSONPath selects, so a path
    /// into the receivers themselves would show one receiver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiver_kinds: String,
    /// Per receiver: the last delivery and how many have failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub receivers: Vec<ReceiverStatus>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<String>,
    /// The last notification's outcome: `Delivered` (a 2xx answer), `Failed` (refused, or
    /// every attempt failed), `Timeout` (the last attempt got no answer in time: the receiver
    /// may have it), `Unknown` (on the wire when Herald stopped: it may have it), `Deferred`
    /// (not sent when Herald stopped, kept in `--state-dir`: sent after the restart) or
    /// `Dropped` (never sent: Herald stopped without `--state-dir`, or the lease was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    #[serde(default)]
    pub failures: u64,
}

/// Every CRD Herald defines, in a stable order. Use these rather than `NotificationPolicy::crd()`:
/// they are what `crds/` holds and the cluster is given.
pub fn crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    // Not `T::crd()` alone: see `openapi` for why no schema may be nullable.
    vec![
        NotificationPolicy::crd(),
        ClusterNotificationPolicy::crd(),
        Approval::crd(),
    ]
    .into_iter()
    .map(openapi::without_nullable)
    .collect()
}

/// One CRD as YAML, the content of `crds/<name>.yaml`.
pub fn crd_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serialises")
}

/// The file name a CRD is checked in under: `crds/<metadata.name>.yaml`.
pub fn crd_file_name(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// All CRDs as multi-document YAML (`herald crd`).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| format!("---\n{}", crd_yaml(crd)))
        .collect()
}
