//! Herald as Flagger's gate: Flagger's gate calls answered from a revision's decisions,
//! asks sent to chat the first time a gate waits, and decisions taken from Slack buttons,
//! signed links and `herald gate`. One [`Gates`] is shared by `serve` and `controller`; only
//! where decisions are kept differs ([`store::ApprovalStore`]).

mod announce;
pub mod cli;
pub mod endpoints;
mod links;
mod reminders;
mod slack;
pub mod store;
pub mod terminal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use herald_api::{Decision, GateType, Verdict};
use herald_core::gates::Recorded;
use herald_core::gates::{record_decision, RevisionKey};
use herald_core::PolicyId;
use tracing::info;

use crate::api::AppState;
use crate::metrics::GateDecisionLabels;
use crate::{Error, Result};

pub use self::reminders::run_reminders;
pub use self::store::{ApprovalStore, FileApprovals};

/// How long a signed link lasts unless `--gate-link-ttl` says otherwise.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// The gate settings of `serve` and `controller`.
#[derive(Clone, Debug, Default)]
pub struct GateOptions {
    /// Where people reach Herald (`https://herald.example.com`): the base of signed links.
    pub external_url: Option<String>,
    /// The key that signs links (a file, as a mounted Secret is).
    pub link_key_file: Option<PathBuf>,
    pub link_ttl: Option<Duration>,
    /// The Slack app's signing secret (a file), for `/slack/interactions`.
    pub slack_signing_secret_file: Option<PathBuf>,
    /// The header an authenticating proxy in front of Herald names the user in.
    pub identity_header: Option<String>,
    /// How often waiting gates are checked for reminders (default 30 s).
    pub reminder_check: Option<Duration>,
}

impl GateOptions {
    pub fn reminder_check(&self) -> Duration {
        self.reminder_check.unwrap_or(Duration::from_secs(30))
    }
}

/// Records a decision where the cluster can see it (a Kubernetes Event on the Canary).
pub trait Audit: Send + Sync {
    fn decided(&self, key: &RevisionKey, decision: &Decision);
}

/// What the gate endpoints share.
pub struct Gates {
    pub store: Arc<dyn ApprovalStore>,
    link_key: Option<Vec<u8>>,
    external_url: Option<String>,
    link_ttl: Duration,
    slack_signing_secret: Option<Vec<u8>>,
    identity_header: Option<HeaderName>,
    pub audit: Option<Arc<dyn Audit>>,
    /// Whether `herald gate` may decide through this API (`serve`). In a cluster it may not:
    /// terminals decide by writing Approvals, which RBAC guards (the event token is in every
    /// Canary that calls a gate, so it cannot tell an approver from Flagger).
    pub decisions_over_http: bool,
    /// For Slack's `response_url` and its Web API (user groups). Built on first use: a
    /// client loads the system's CA certificates (milliseconds), which only a Slack press
    /// needs, so start-up and readiness do not wait for a second copy of the delivery
    /// client's.
    client: std::sync::OnceLock<reqwest::Client>,
}

fn read_secret(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Gates(format!("{what} {}: {e}", path.display())))?;
    let secret = text.trim();
    if secret.len() < 16 {
        return Err(Error::Gates(format!(
            "{what} {}: shorter than 16 characters",
            path.display()
        )));
    }
    Ok(secret.as_bytes().to_vec())
}

impl Gates {
    pub fn new(options: &GateOptions, store: Arc<dyn ApprovalStore>) -> Result<Gates> {
        let identity_header = match &options.identity_header {
            Some(name) => Some(HeaderName::try_from(name.as_str()).map_err(|_| {
                Error::Gates(format!("--identity-header {name:?} is not a header name"))
            })?),
            None => None,
        };
        let external_url = match &options.external_url {
            Some(url) if !herald_core::policy::is_http_url(url) => {
                return Err(Error::Gates(format!(
                    "--external-url {url:?} must be an http:// or https:// URL"
                )))
            }
            url => url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
        };
        Ok(Gates {
            store,
            link_key: match &options.link_key_file {
                Some(path) => Some(read_secret(path, "the link key file")?),
                None => None,
            },
            external_url,
            link_ttl: options.link_ttl.unwrap_or(DEFAULT_LINK_TTL),
            slack_signing_secret: match &options.slack_signing_secret_file {
                Some(path) => Some(read_secret(path, "the Slack signing secret file")?),
                None => None,
            },
            identity_header,
            audit: None,
            decisions_over_http: true,
            client: std::sync::OnceLock::new(),
        })
    }

    /// The client for Slack's `response_url` and Web API.
    pub(crate) fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client")
        })
    }

    /// Gates without links or Slack, keeping decisions in memory (tests).
    pub fn in_memory() -> Gates {
        Gates::new(
            &GateOptions::default(),
            Arc::new(FileApprovals::in_memory()),
        )
        .expect("default options are valid")
    }

    /// The signed link deciding `verdict` for `key`, when links can be made.
    fn link(
        &self,
        key: &RevisionKey,
        gate: GateType,
        verdict: Verdict,
        policy: &PolicyId,
    ) -> Option<String> {
        let (secret, base) = (self.link_key.as_ref()?, self.external_url.as_ref()?);
        let claims = herald_core::gates::links::LinkClaims {
            namespace: key.namespace.clone(),
            canary: key.canary.clone(),
            revision: key.revision.clone(),
            gate: Some(gate),
            verdict,
            policy: policy.to_string(),
            expires: now_ms() / 1000 + self.link_ttl.as_secs() as i64,
        };
        Some(format!(
            "{base}/links/{}",
            herald_core::gates::links::sign(&claims, secret)
        ))
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The policy named by a button or link (`namespace/name`, or `name`).
pub(crate) fn policy_id(text: &str) -> PolicyId {
    match text.split_once('/') {
        Some((namespace, name)) => PolicyId::namespaced(namespace, name),
        None => PolicyId::cluster(text),
    }
}

/// Records a decision in `store` unless what it decides is settled already (the first
/// decision counts). Nothing else: no audit, no announcement.
pub(crate) async fn record(
    store: &dyn ApprovalStore,
    key: &RevisionKey,
    decision: &Decision,
) -> std::result::Result<Recorded, String> {
    let wanted = decision.clone();
    // What the change found: the store may apply it more than once (a conflict with
    // another replica), and the last application is the one kept.
    let found = Arc::new(std::sync::Mutex::new(Recorded::New));
    let seen = found.clone();
    store
        .update(
            key,
            Box::new(move |record| {
                let recorded = record_decision(record, wanted.clone());
                let changed = recorded == Recorded::New;
                *seen.lock().expect("decision slot") = recorded;
                changed
            }),
        )
        .await?;
    let recorded = found.lock().expect("decision slot").clone();
    Ok(recorded)
}

/// Records a decision and, when it is new, audits it and announces it to the policies that
/// answer the canary's gates. `Ok(AlreadyDecided)` changes nothing.
pub async fn decide(
    state: &AppState,
    key: &RevisionKey,
    decision: Decision,
) -> std::result::Result<Recorded, String> {
    let outcome = record(state.gates.store.as_ref(), key, &decision).await?;
    if outcome == Recorded::New {
        state
            .metrics
            .gate_decisions
            .get_or_create(&GateDecisionLabels {
                verdict: decision.verdict.as_str(),
                via: via_label(&decision.via),
            })
            .inc();
        info!(
            canary = %key.canary, namespace = %key.namespace, revision = %key.revision,
            gate = decision.gate.map(GateType::as_str).unwrap_or("any"),
            verdict = decision.verdict.as_str(), by = %decision.by, via = %decision.via,
            "gate decision recorded"
        );
        if let Some(audit) = &state.gates.audit {
            audit.decided(key, &decision);
        }
        announce::decision(state, key, &decision);
    }
    Ok(outcome)
}

/// `via` as a bounded metric label.
fn via_label(via: &str) -> &'static str {
    match via {
        "slack" => "slack",
        "link" => "link",
        "cli" => "cli",
        _ => "other",
    }
}

/// `text` with its first letter upper-cased: "promotion" → "Promotion".
pub(crate) fn capitalised(text: &str) -> String {
    let mut out = text.to_owned();
    if let Some(first) = out.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    out
}

/// The policies that answer `gate` for `key`'s canary. A gate call carries no labels, so
/// neither does the input.
pub(crate) fn answering(
    policies: &herald_core::PolicySet,
    key: &RevisionKey,
    phase: &str,
    gate: GateType,
) -> Vec<u32> {
    let event = herald_core::FlaggerEvent::new(
        &key.canary,
        &key.namespace,
        phase,
        "",
        herald_api::EventType::Normal,
        0,
    );
    policies.gate_policies(&herald_core::MatchInput::event(&event), gate)
}

/// A decision's sentence: "Promotion of podinfo.test (revision 7c4d1a2f) approved by @alice
/// via Slack."
pub fn sentence(key: &RevisionKey, decision: &Decision) -> String {
    let via = match decision.via.as_str() {
        "slack" => "Slack",
        "link" => "a signed link",
        "cli" => "herald gate",
        other => other,
    };
    match (decision.verdict, decision.gate) {
        (Verdict::Rollback, _) => {
            format!("Rollback of {key} requested by {} via {via}.", decision.by)
        }
        (Verdict::Approve, gate) => {
            let what = capitalised(gate.map(GateType::waiting).unwrap_or("rollout"));
            format!("{what} of {key} approved by {} via {via}.", decision.by)
        }
    }
}
