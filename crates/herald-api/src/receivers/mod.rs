//! Receivers: the list of kinds, and what every kind's settings have in common. Each kind's
//! settings live in a file of their own; this list is the only other place a kind is named.
//! It generates the `Receiver` one-of, [`RECEIVER_KINDS`], the CRD's "exactly one kind" rule
//! and its message, so validation, the CRDs, status and the tests all go by the same list.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::MessageTemplate;

mod alertmanager;
mod discord;
mod googlechat;
mod grafana;
mod mattermost;
mod msteams;
mod opsgenie;
mod pagerduty;
mod rocketchat;
mod slack;
mod telegram;
mod webex;
mod webhook;

pub use alertmanager::{
    AlertmanagerBasicAuth, AlertmanagerReceiver,
    DEFAULT_PASSWORD_KEY as DEFAULT_ALERTMANAGER_PASSWORD_KEY,
};
pub use discord::DiscordReceiver;
pub use googlechat::GoogleChatReceiver;
pub use grafana::GrafanaReceiver;
pub use mattermost::MattermostReceiver;
pub use msteams::{TeamsFormat, TeamsReceiver};
pub use opsgenie::{
    OpsgeniePriority, OpsgenieReceiver, OpsgenieRegion, DEFAULT_API_KEY as DEFAULT_OPSGENIE_KEY,
};
pub use pagerduty::{
    PagerDutyReceiver, PagerDutySeverities, PagerDutySeverity, DEFAULT_ROUTING_KEY,
    PAGERDUTY_API_URL,
};
pub use rocketchat::RocketChatReceiver;
pub use slack::{SlackReceiver, SLACK_API_URL};
pub use telegram::{TelegramReceiver, TELEGRAM_API_URL};
pub use webex::{WebexReceiver, WEBEX_API_URL};
pub use webhook::{HttpMethod, WebhookReceiver, WebhookSignature};

/// Declares the receiver kinds: `field: SettingsType as Variant`, in the order the CRD lists
/// them.
macro_rules! receiver_kinds {
    ($($field:ident: $spec:ident as $variant:ident),* $(,)?) => {
        #[doc = concat!("One destination. It sets exactly one of these kinds:" $(, " `", stringify!($field), "`")*, ".")]
        #[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        #[serde(rename_all = "camelCase")]
        #[x_kube(validation = Rule::new(exactly_one_kind_rule()).message(kube::core::Message::Message(exactly_one_kind_message())))]
        pub struct Receiver {
            /// Unique within the policy; shown in status, metrics-free logs and `herald render`.
            #[schemars(
                length(min = 1, max = 63),
                regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
            )]
            pub name: String,
            // Boxed: a receiver sets one kind of many, and inline settings would make every
            // receiver as large as all of them together (over 2 KiB), which 10,000 parsed
            // policies hold at once while they compile.
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<Box<$spec>>,
            )*
            /// Overrides the policy's template for this receiver.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub template: Option<MessageTemplate>,
        }

        /// Every receiver kind, by its field name, in the CRD's order.
        pub const RECEIVER_KINDS: &[&str] = &[$(stringify!($field)),*];

        /// One kind a receiver sets, with its settings.
        #[derive(Clone, Copy, Debug)]
        pub enum ReceiverKindSpec<'a> {
            $($variant(&'a $spec),)*
        }

        impl Receiver {
            /// Every kind the receiver sets, by field name, with its settings: exactly one in
            /// a valid receiver.
            pub fn kinds(&self) -> Vec<(&'static str, ReceiverKindSpec<'_>)> {
                let mut set = Vec::with_capacity(1);
                $(
                    if let Some(spec) = &self.$field {
                        set.push((stringify!($field), ReceiverKindSpec::$variant(spec)));
                    }
                )*
                set
            }
        }

        impl<'a> ReceiverKindSpec<'a> {
            /// What every kind's settings have in common.
            pub fn common(self) -> &'a dyn ReceiverSpec {
                match self {
                    $(ReceiverKindSpec::$variant(spec) => spec,)*
                }
            }
        }
    };
}

receiver_kinds! {
    slack: SlackReceiver as Slack,
    msteams: TeamsReceiver as Teams,
    webhook: WebhookReceiver as Webhook,
    discord: DiscordReceiver as Discord,
    googlechat: GoogleChatReceiver as GoogleChat,
    rocketchat: RocketChatReceiver as RocketChat,
    mattermost: MattermostReceiver as Mattermost,
    pagerduty: PagerDutyReceiver as PagerDuty,
    opsgenie: OpsgenieReceiver as Opsgenie,
    alertmanager: AlertmanagerReceiver as Alertmanager,
    telegram: TelegramReceiver as Telegram,
    webex: WebexReceiver as Webex,
    grafana: GrafanaReceiver as Grafana,
}

/// The CRD's rule: exactly one kind is set.
fn exactly_one_kind_rule() -> String {
    let has: Vec<String> = RECEIVER_KINDS
        .iter()
        .map(|kind| format!("has(self.{kind})"))
        .collect();
    format!("[{}].filter(k, k).size() == 1", has.join(", "))
}

/// Said when a receiver sets no kind or several: by the CRD's rule and by `herald check`.
pub fn exactly_one_kind_message() -> String {
    format!(
        "a receiver sets exactly one of {}",
        RECEIVER_KINDS.join(", ")
    )
}

/// What every kind's settings have in common: where the URL comes from, and which Secret keys
/// they read.
pub trait ReceiverSpec {
    /// Where the receiver's URL comes from.
    fn address(&self) -> AddressRef<'_>;

    /// Every Secret key the settings read: the address's, and any token or signing key.
    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        address_secret(self.address())
    }
}

impl Receiver {
    /// Which receiver kinds are set, by field name: exactly one in a valid receiver.
    pub fn kinds_set(&self) -> Vec<&'static str> {
        self.kinds().into_iter().map(|(kind, _)| kind).collect()
    }

    /// Where the receiver's URL comes from, whichever kind it is (`Invalid` unless exactly
    /// one kind is set).
    pub fn address(&self) -> AddressRef<'_> {
        match self.kinds().as_slice() {
            [(_, spec)] => spec.common().address(),
            _ => AddressRef::Invalid,
        }
    }

    /// Every Secret key the receiver reads, whatever kinds it sets.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretKeyRef> {
        self.kinds()
            .into_iter()
            .flat_map(|(_, spec)| spec.common().secret_refs())
    }
}

/// The address of settings with a `url` and a `secretRef`, exactly one of them set.
pub(crate) fn url_or_secret<'a>(
    url: &'a Option<String>,
    secret: &'a Option<SecretKeyRef>,
) -> AddressRef<'a> {
    match (url, secret) {
        (Some(url), None) => AddressRef::Url(url),
        (None, Some(secret)) => AddressRef::Secret(secret),
        _ => AddressRef::Invalid,
    }
}

/// The Secret an address reads, if any.
pub(crate) fn address_secret(address: AddressRef<'_>) -> Vec<&SecretKeyRef> {
    match address {
        AddressRef::Secret(secret) => vec![secret],
        _ => Vec::new(),
    }
}

/// [`ReceiverSpec`] for settings whose only address is `url` or `secretRef`.
macro_rules! url_or_secret_spec {
    ($spec:ty) => {
        impl super::ReceiverSpec for $spec {
            fn address(&self) -> super::AddressRef<'_> {
                super::url_or_secret(&self.url, &self.secret_ref)
            }
        }
    };
}
pub(crate) use url_or_secret_spec;

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
        self.key_or(crate::DEFAULT_SECRET_KEY)
    }

    /// The key, or `default` when unset.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
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

/// An optional string enum as Kubernetes' structural schemas spell it: the names, without
/// the `null` enum member schemars adds for `Option` (an API server rejects a CRD whose enum
/// lists `null`), and not nullable (see `openapi`).
pub(crate) fn optional_enum<T: JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    let names = T::json_schema(generator)
        .get("enum")
        .cloned()
        .expect("a unit-variant enum has an enum schema");
    schemars::json_schema!({
        "type": "string",
        "enum": names
    })
}

/// The Secret key a bot token or bearer token is read from when `secretRef.key` is unset.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// The Secret key a webhook signing key is read from when `secretRef.key` is unset.
pub const DEFAULT_SIGNING_KEY: &str = "signingKey";
