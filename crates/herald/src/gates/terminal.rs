//! Decisions and status for terminals: what `herald gate` shows and decides, through a
//! running Herald's API (standalone) or through the Approvals in the API server (`--kube`).

use herald_api::{ApprovalSpec, Decision, GateType, Verdict};
use herald_core::gates::{answer, last_asked, waiting, RevisionKey};
use serde::Deserialize;
use serde_json::{json, Value};

use super::now_ms;
use super::store::ApprovalStore;

/// A canary's revisions, newest first: what was asked, what was decided, how each gate
/// answers now.
pub fn status(store: &dyn ApprovalStore, namespace: &str, canary: &str) -> Value {
    let mut records: Vec<(RevisionKey, ApprovalSpec)> = store
        .all()
        .into_iter()
        .filter(|(key, _)| key.namespace == namespace && key.canary == canary)
        .collect();
    records.sort_by_key(|(_, record)| std::cmp::Reverse(last_asked(record).to_owned()));
    let now = now_ms();
    let revisions: Vec<_> = records
        .iter()
        .map(|(key, record)| {
            let gates: serde_json::Map<_, _> = GateType::ALL
                .iter()
                .map(|gate| {
                    let answer = answer(key, *gate, Some(record));
                    let state = json!({"open": answer.open, "message": answer.message});
                    (gate.as_str().to_owned(), state)
                })
                .collect();
            let waiting: Vec<_> = waiting(record, now)
                .into_iter()
                .map(|(asked, ms)| json!({"gate": asked.gate, "waitedSeconds": ms / 1000}))
                .collect();
            json!({
                "revision": key.revision,
                "asked": record.asked,
                "decisions": record.decisions,
                "waiting": waiting,
                "gates": gates,
            })
        })
        .collect();
    json!({"namespace": namespace, "canary": canary, "revisions": revisions})
}

/// What `herald gate approve|rollback` asks for.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionRequest {
    pub namespace: String,
    pub canary: String,
    /// Unset: the canary's newest asked revision.
    #[serde(default)]
    pub revision: Option<String>,
    pub verdict: Verdict,
    /// Unset for an approval: the gate the revision waits on.
    #[serde(default)]
    pub gate: Option<GateType>,
    pub by: String,
}

/// The revision and the decision a request means, or an HTTP status and why not.
pub fn choose(
    store: &dyn ApprovalStore,
    request: DecisionRequest,
    via: &str,
) -> Result<(RevisionKey, Decision), (u16, String)> {
    let newest = store
        .all()
        .into_iter()
        .filter(|(key, _)| key.namespace == request.namespace && key.canary == request.canary)
        .filter(|(key, _)| request.revision.as_ref().is_none_or(|r| &key.revision == r))
        .max_by_key(|(_, record)| last_asked(record).to_owned());
    let (key, record) = match (newest, &request.revision) {
        (Some(found), _) => found,
        (None, Some(revision)) => {
            let key = RevisionKey {
                namespace: request.namespace.clone(),
                canary: request.canary.clone(),
                revision: revision.clone(),
            };
            let record = key.record();
            (key, record)
        }
        (None, None) => {
            return Err((
                404,
                format!(
                    "no gate of {}/{} has been asked yet; name the revision (--revision) to decide ahead",
                    request.namespace, request.canary
                ),
            ))
        }
    };
    let gate = match (request.verdict, request.gate) {
        (_, Some(gate)) => Some(gate),
        (Verdict::Rollback, None) => None,
        (Verdict::Approve, None) => match waiting(&record, now_ms()).first() {
            Some((asked, _)) => Some(asked.gate),
            None => {
                return Err((
                    409,
                    format!("no gate of {key} is waiting; name the gate (--gate) to approve ahead"),
                ))
            }
        },
    };
    let decision = Decision {
        gate,
        verdict: request.verdict,
        by: request.by,
        via: via.to_owned(),
        at: herald_core::gates::times::format(now_ms()),
    };
    Ok((key, decision))
}
