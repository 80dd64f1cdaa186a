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
mod openapi;

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
}

policy_spec! {
    /// Which canaries, which events, and where to send them. Applies to canaries in the
    /// policy's own namespace.
    #[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[kube(
        group = "herald.dev",
        version = "v1alpha1",
        kind = "NotificationPolicy",
        doc = "Sends Flagger's canary events for canaries in this namespace to Slack, Microsoft Teams, Discord, Google Chat, Rocket.Chat or any webhook.",
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
        doc = "Sends Flagger's canary events for canaries in the namespaces chosen by namespaceSelector (all by default) to Slack, Microsoft Teams, Discord, Google Chat, Rocket.Chat or any webhook.",
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

/// One destination. Exactly one of `slack`, `msteams`, `webhook`, `discord`, `googlechat` or
/// `rocketchat` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.slack), has(self.msteams), has(self.webhook), has(self.discord), has(self.googlechat), has(self.rocketchat)].filter(k, k).size() == 1").message("a receiver sets exactly one of slack, msteams, webhook, discord, googlechat, rocketchat"))]
pub struct Receiver {
    /// Unique within the policy; shown in status, metrics-free logs and `herald render`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msteams: Option<TeamsReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub googlechat: Option<GoogleChatReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rocketchat: Option<RocketChatReceiver>,
    /// Overrides the policy's template for this receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<MessageTemplate>,
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

impl Receiver {
    /// Which receiver kinds are set, by field name: exactly one in a valid receiver. The one
    /// list of kinds that validation and Secret lookups go by.
    pub fn kinds_set(&self) -> Vec<&'static str> {
        [
            ("slack", self.slack.is_some()),
            ("msteams", self.msteams.is_some()),
            ("webhook", self.webhook.is_some()),
            ("discord", self.discord.is_some()),
            ("googlechat", self.googlechat.is_some()),
            ("rocketchat", self.rocketchat.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, set)| set.then_some(kind))
        .collect()
    }

    /// Where the receiver's URL comes from, whichever kind it is (`Invalid` unless exactly
    /// one kind is set).
    pub fn address(&self) -> AddressRef<'_> {
        let addresses = [
            self.slack.as_ref().map(SlackReceiver::address),
            self.msteams.as_ref().map(TeamsReceiver::address),
            self.webhook.as_ref().map(WebhookReceiver::address),
            self.discord.as_ref().map(DiscordReceiver::address),
            self.googlechat.as_ref().map(GoogleChatReceiver::address),
            self.rocketchat.as_ref().map(RocketChatReceiver::address),
        ];
        let mut set = addresses.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(address), None) => address,
            _ => AddressRef::Invalid,
        }
    }

    /// Every Secret key the receiver reads: its address's, a Slack bot's token, a webhook's
    /// bearer token and signing key.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretKeyRef> {
        let address = match self.address() {
            AddressRef::Secret(secret) => Some(secret),
            _ => None,
        };
        let slack_token = self
            .slack
            .as_ref()
            .and_then(|s| s.token_secret_ref.as_ref());
        let bearer = self
            .webhook
            .as_ref()
            .and_then(|w| w.bearer_token_secret_ref.as_ref());
        let signing = self
            .webhook
            .as_ref()
            .and_then(|w| w.signature.as_ref())
            .map(|s| &s.secret_ref);
        [address, slack_token, bearer, signing]
            .into_iter()
            .flatten()
    }
}

/// Where a receiver's URL comes from: inline `url`, or a key of a Secret (preferred: webhook
/// URLs are credentials). Every receiver kind has exactly one of the two.
#[derive(Clone, Copy, Debug)]
pub enum AddressRef<'a> {
    Url(&'a str),
    Secret(&'a SecretKeyRef),
    /// Neither or both were set: the spec is invalid.
    Invalid,
}

fn address_ref<'a>(url: &'a Option<String>, secret: &'a Option<SecretKeyRef>) -> AddressRef<'a> {
    match (url, secret) {
        (Some(url), None) => AddressRef::Url(url),
        (None, Some(secret)) => AddressRef::Secret(secret),
        _ => AddressRef::Invalid,
    }
}

/// A key of a Secret in the policy's namespace (Herald's namespace for cluster policies).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// Defaults to `address` for URLs, `token` for tokens and `signingKey` for signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key of a URL reference (`address` when unset).
    pub fn key(&self) -> &str {
        self.key_or(DEFAULT_SECRET_KEY)
    }

    /// The key, or `default` when unset.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// Slack: an incoming webhook (`url` or `secretRef`), or a bot token (`tokenSecretRef`) that
/// posts with `chat.postMessage` to `channel` and threads each rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.secretRef), has(self.tokenSecretRef)].filter(k, k).size() == 1").message("set exactly one of url, secretRef, tokenSecretRef"))]
#[x_kube(validation = Rule::new("!has(self.tokenSecretRef) || has(self.channel)").message("a bot token (tokenSecretRef) needs a channel"))]
pub struct SlackReceiver {
    /// The incoming-webhook URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the incoming-webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The Secret key holding a bot token (`xoxb-...`, scope `chat:write`); the key defaults
    /// to `token`. Messages go through Slack's Web API, one thread per rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// With a bot token: the Web API base URL. Defaults to `https://slack.com/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// With a bot token: reply in one thread per rollout (canary and revision) and update the
    /// rollout's first message with the outcome. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<bool>,
    /// Channel: required with a bot token (a channel ID such as `C0123ABCD`, or `#name`);
    /// with a webhook only legacy webhooks honour it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// e.g. `:rocket:`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// The Secret key a bot token or bearer token is read from when `secretRef.key` is unset.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// The Secret key a webhook signing key is read from when `secretRef.key` is unset.
pub const DEFAULT_SIGNING_KEY: &str = "signingKey";
/// Slack's Web API.
pub const SLACK_API_URL: &str = "https://slack.com/api";

/// A Microsoft Teams webhook: a Workflows webhook (Adaptive Card) or a legacy Office 365
/// connector (MessageCard).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct TeamsReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The card format. Unset: MessageCard for a legacy Office 365 connector URL (host
    /// `*.webhook.office.com` or `outlook.office.com`), AdaptiveCard for any other URL
    /// (Workflows / Power Automate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_enum::<TeamsFormat>")]
    pub format: Option<TeamsFormat>,
}

/// An optional string enum as Kubernetes' structural schemas spell it: the names, without
/// the `null` enum member schemars adds for `Option` (an API server rejects a CRD whose enum
/// lists `null`), and not nullable (see `openapi`).
fn optional_enum<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names = T::json_schema(generator)
        .get("enum")
        .cloned()
        .expect("a unit-variant enum has an enum schema");
    schemars::json_schema!({
        "type": "string",
        "enum": names
    })
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TeamsFormat {
    #[default]
    AdaptiveCard,
    MessageCard,
}

impl TeamsFormat {
    /// The format a Teams URL takes when `format` is unset: MessageCard for the legacy
    /// Office 365 connector hosts (`*.webhook.office.com`, `outlook.office.com`), AdaptiveCard
    /// for anything else (Workflows / Power Automate webhooks).
    pub fn detect(url: &str) -> TeamsFormat {
        let host = url_host(url);
        if host == "outlook.office.com" || host.ends_with(".webhook.office.com") {
            TeamsFormat::MessageCard
        } else {
            TeamsFormat::AdaptiveCard
        }
    }
}

/// The lower-cased host of an `http(s)://` URL, without user info, port or trailing dot;
/// empty when there is none.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or("", |(scheme, rest)| {
        if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            rest
        } else {
            ""
        }
    });
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        // An IPv6 literal: never an Office 365 host.
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A Discord channel webhook (`https://discord.com/api/webhooks/...`): one embed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct DiscordReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Overrides the webhook's default user name (1 to 80 characters; Discord refuses names
    /// containing "discord" or "clyde").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub username: Option<String>,
    /// Overrides the webhook's default avatar (an image URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// A Google Chat incoming webhook (`https://chat.googleapis.com/v1/spaces/...`): one card.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct GoogleChatReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// One thread per rollout (canary and revision): each message carries the rollout's
    /// `thread.threadKey` and is posted with
    /// `messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<bool>,
}

/// A Rocket.Chat incoming webhook integration (`https://<server>/hooks/...`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct RocketChatReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Channel override, e.g. `#deploys` or `@user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Shown as the sender's name (sent as `alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The sender's avatar as an emoji, e.g. `:rocket:` (sent as `emoji`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_emoji: Option<String>,
    /// The sender's avatar as an image URL (sent as `avatar`; wins over `iconEmoji`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// Any HTTP endpoint. The body is Flagger's event JSON unless `body` gives a template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct WebhookReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The HTTP method. Defaults to `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_enum::<HttpMethod>")]
    pub method: Option<HttpMethod>,
    /// Extra request headers. Their values are visible to anyone who can read the policy: put
    /// credentials in `bearerTokenSecretRef` or `signature`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The Secret key holding a token sent as `Authorization: Bearer <token>`; the key
    /// defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// Signs every body with HMAC-SHA256, so the receiver can check it came from Herald.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<WebhookSignature>,
    /// A handlebars template that must render a JSON document; use `{{json value}}` to
    /// insert a value as a JSON literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpMethod {
    #[default]
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// An HMAC-SHA256 signature of the exact request body: `<header>: sha256=<lower-case hex>`
/// (the convention of GitHub's and Flux's signed webhooks).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSignature {
    /// The Secret key holding the signing key; the key defaults to `signingKey`.
    pub secret_ref: SecretKeyRef,
    /// The header carrying the signature. Defaults to `X-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
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
    vec![NotificationPolicy::crd(), ClusterNotificationPolicy::crd()]
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

macro_rules! impl_address {
    ($($kind:ty),*) => {$(
        impl $kind {
            pub fn address(&self) -> AddressRef<'_> {
                address_ref(&self.url, &self.secret_ref)
            }
        }
    )*};
}
impl_address!(
    SlackReceiver,
    TeamsReceiver,
    WebhookReceiver,
    DiscordReceiver,
    GoogleChatReceiver,
    RocketChatReceiver
);

#[cfg(test)]
mod tests {
    use super::TeamsFormat;

    /// The hand-written schema of `msteams.format` names every variant.
    #[test]
    fn teams_format_schema_lists_every_variant() {
        let schema = schemars::schema_for!(TeamsFormat);
        let names: Vec<&str> = schema
            .get("enum")
            .and_then(|e| e.as_array())
            .expect("a plain enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours = super::optional_enum::<TeamsFormat>(&mut schemars::SchemaGenerator::default());
        assert_eq!(ours.get("enum").unwrap(), &serde_json::json!(names));
        assert_eq!(names, ["AdaptiveCard", "MessageCard"]);
    }

    #[test]
    fn teams_format_is_detected_from_the_host() {
        for legacy in [
            "https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d",
            "https://CONTOSO.Webhook.Office.com./webhookb2/x",
            "https://outlook.office.com/webhook/a@b/IncomingWebhook/c/d",
            "https://user@outlook.office.com:443/webhook/x",
            "HTTPS://contoso.webhook.office.com",
        ] {
            assert_eq!(
                TeamsFormat::detect(legacy),
                TeamsFormat::MessageCard,
                "{legacy}"
            );
        }
        for workflows in [
            "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
            "https://default123.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/abc",
            "http://127.0.0.1:9099/teams/oncall",
            // Look-alikes are not Office 365 hosts.
            "https://webhook.office.com.example.com/x",
            "https://evilwebhook.office.com/x",
            "https://example.com/outlook.office.com/webhook",
            "https://example.com/?u=https://a.webhook.office.com",
            "https://outlook.office.com@example.com/webhook",
            "https://[::1]:8080/outlook.office.com",
            "ftp://outlook.office.com/webhook",
            "",
        ] {
            assert_eq!(
                TeamsFormat::detect(workflows),
                TeamsFormat::AdaptiveCard,
                "{workflows}"
            );
        }
    }
}
