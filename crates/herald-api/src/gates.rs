//! Flagger's gates answered by Herald: a policy's `gates` (who is asked, who may decide) and
//! the `Approval` resource that records a revision's decisions, shared by every replica and
//! writable with `kubectl` or GitOps.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Flagger's gate webhooks (`spec.analysis.webhooks[].type`) Herald answers.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum GateType {
    /// Asked before a new revision is scaled up (phase `Waiting`).
    ConfirmRollout,
    /// Asked before each step of traffic weight.
    ConfirmTrafficIncrease,
    /// Asked before the canary is promoted (phase `WaitingPromotion`).
    ConfirmPromotion,
    /// Asked throughout the analysis: a `2xx` answer rolls the canary back.
    Rollback,
}

impl GateType {
    pub const ALL: [GateType; 4] = [
        GateType::ConfirmRollout,
        GateType::ConfirmTrafficIncrease,
        GateType::ConfirmPromotion,
        GateType::Rollback,
    ];

    /// Flagger's name, also the endpoint's last segment (`/gates/confirm-promotion`).
    pub fn as_str(self) -> &'static str {
        match self {
            GateType::ConfirmRollout => "confirm-rollout",
            GateType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            GateType::ConfirmPromotion => "confirm-promotion",
            GateType::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<GateType> {
        GateType::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// What waits for this gate, in a sentence: "the rollout", "the promotion".
    pub fn waiting(self) -> &'static str {
        match self {
            GateType::ConfirmRollout => "rollout",
            GateType::ConfirmTrafficIncrease => "traffic increase",
            GateType::ConfirmPromotion => "promotion",
            GateType::Rollback => "rollback",
        }
    }
}

/// A policy's gates: which of Flagger's gates it answers for the canaries it selects, who is
/// asked, and who may decide. A gate that no policy covers stays closed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatePolicy {
    /// The gates this policy answers. Empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<GateType>,
    /// The receivers (by name, from `spec.receivers`) asked to decide. Empty means all of
    /// them. Slack bots get Approve / Roll back buttons; every other kind signed links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<String>,
    /// Who may decide. Nobody, when empty: decisions are then made with `kubectl`, GitOps or
    /// `herald gate` only.
    #[serde(default)]
    pub approvers: Approvers,
    /// Remind the receivers in the rollout's thread when a gate has waited this long (a
    /// duration such as `30m`). Unset: no reminder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_after: Option<String>,
    /// Ask `escalateTo` when a gate has waited this long. Unset: no escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after: Option<String>,
    /// The receivers (by name) asked when a gate is escalated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<String>,
}

/// Who may decide a gate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Approvers {
    /// Slack user IDs (`U012AB3CD`) who may press the buttons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slack_users: Vec<String>,
    /// Slack user-group IDs (`S0614TZR7`) whose members may press the buttons (read with the
    /// bot's token: the bot needs `usergroups:read`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slack_user_groups: Vec<String>,
    /// Identities, as the authenticating proxy in front of Herald names them in its trusted
    /// header (`--identity-header`), that may decide from a signed link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Anyone holding a signed link may decide from it (recorded as "link holder"). Links go
    /// to every receiver that is not a Slack bot, so this trusts those channels' members.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_holders: bool,
}

/// What was decided.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Opens the gate.
    Approve,
    /// Rolls the canary back: the `rollback` gate answers 200, the others stay closed.
    Rollback,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "Approve",
            Verdict::Rollback => "Rollback",
        }
    }
}

/// The decisions about one revision of one canary. Herald creates it the first time a gate
/// of the revision is asked, and records every decision in it; a decision can also be made
/// by adding one with `kubectl` (`herald gate approve` does that).
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "Approval",
    doc = "The gate decisions about one revision of one Flagger canary: approved or rolled back, by whom and how.",
    plural = "approvals",
    shortname = "appr",
    namespaced,
    category = "herald",
    printcolumn = r#"{"name":"Canary","type":"string","jsonPath":".spec.canary"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"Decided","type":"string","jsonPath":".spec.decisions[*].verdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// The Canary's name (in the Approval's namespace).
    pub canary: String,
    /// The canary's revision: Flagger's `checksum` of its tracked spec.
    pub revision: String,
    /// Gates Herald asked about, and when (an RFC 3339 time): each is announced once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asked: Vec<GateAsked>,
    /// The decisions; the first one for a gate counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateAsked {
    pub gate: GateType,
    pub at: String,
    /// Set once the waiting gate was reminded in its thread.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reminded: bool,
    /// Set once the waiting gate was escalated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated: bool,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The gate decided. A `Rollback` verdict needs none: it rolls the revision back
    /// whichever gate it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateType>,
    pub verdict: Verdict,
    /// Who decided: a Slack user (`<@U012AB3CD>`), an identity, "link holder", or what
    /// `kubectl` or `herald gate --as` said.
    pub by: String,
    /// How: `slack`, `link`, `cli`, `kubectl`.
    pub via: String,
    /// When (RFC 3339).
    pub at: String,
}
