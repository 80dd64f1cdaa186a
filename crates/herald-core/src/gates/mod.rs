//! Flagger's gates, decided by people: what Flagger asks, how a revision's record answers
//! it, and how asks and decisions change that record. Pure: the stores that keep records
//! (a file standalone, `Approval` resources in a cluster) apply these functions.
//!
//! Flagger calls a gate webhook with `{name, namespace, phase, checksum, metadata}`; an
//! answer of 202 or below lets it go on, anything else halts it until the next interval.
//! The `rollback` gate is the other way round: a `2xx` answer rolls the canary back.

pub mod links;
pub mod slack;

use herald_api::{ApprovalSpec, Decision, GateAsked, GateType, Verdict};
use serde_json::{Map, Value};

/// One call of a gate webhook, as Flagger makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateCall {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    /// The revision: Flagger's checksum of the canary's tracked spec.
    pub revision: String,
}

/// Why a gate call's body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GateCallError {
    pub field: &'static str,
    pub message: String,
}

impl GateCall {
    /// Parses Flagger's gate payload. `metadata` is the webhook's own (often absent); the
    /// checksum is required, because an approval is bound to a revision.
    pub fn from_json(body: &[u8]) -> Result<GateCall, GateCallError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| GateCallError {
            field: "body",
            message: format!("not JSON: {e}"),
        })?;
        let Value::Object(object) = value else {
            return Err(GateCallError {
                field: "body",
                message: "expected a JSON object".into(),
            });
        };
        let field = |name: &'static str, object: &Map<String, Value>| match object.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(GateCallError {
                field: name,
                message: "must not be empty".into(),
            }),
            None | Some(Value::Null) => Err(GateCallError {
                field: name,
                message: if name == "checksum" {
                    "missing: approvals are bound to a revision, and Flagger sends its checksum (Flagger 1.0 or later)".into()
                } else {
                    "missing field".into()
                },
            }),
            Some(_) => Err(GateCallError {
                field: name,
                message: "expected a string".into(),
            }),
        };
        Ok(GateCall {
            name: field("name", &object)?,
            namespace: field("namespace", &object)?,
            phase: field("phase", &object)?,
            revision: field("checksum", &object)?,
        })
    }

    pub fn key(&self) -> RevisionKey {
        RevisionKey {
            namespace: self.namespace.clone(),
            canary: self.name.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// One revision of one canary: what a record of decisions is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionKey {
    pub namespace: String,
    pub canary: String,
    pub revision: String,
}

impl RevisionKey {
    /// The revision as people read it: its first 8 characters.
    pub fn short_revision(&self) -> &str {
        short(&self.revision)
    }

    /// An empty record of this revision.
    pub fn record(&self) -> ApprovalSpec {
        ApprovalSpec {
            canary: self.canary.clone(),
            revision: self.revision.clone(),
            asked: Vec::new(),
            decisions: Vec::new(),
        }
    }

    /// The `Approval` resource's name: the canary and the revision, within Kubernetes'
    /// 253 characters, in the characters a name may hold.
    pub fn object_name(&self) -> String {
        let revision: String = self
            .revision
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .take(40)
            .collect();
        let canary: String = self.canary.chars().take(253 - 1 - revision.len()).collect();
        format!("{canary}-{revision}")
            .trim_end_matches('-')
            .to_owned()
    }
}

impl std::fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} (revision {})",
            self.canary,
            self.namespace,
            self.short_revision()
        )
    }
}

pub fn short(revision: &str) -> &str {
    match revision.char_indices().nth(8) {
        Some((end, _)) => &revision[..end],
        None => revision,
    }
}

/// Herald's answer to a gate call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateAnswer {
    /// Whether Flagger may go on (for `rollback`: whether it rolls back).
    pub open: bool,
    /// What the answer body says.
    pub message: String,
    /// The decision the answer stands on.
    pub decision: Option<Decision>,
}

impl GateAnswer {
    /// The HTTP status Flagger reads: 200 opens (or, for `rollback`, rolls back), 403
    /// keeps the gate closed, as Flagger's load tester answers a closed gate.
    pub fn status(&self) -> u16 {
        if self.open {
            200
        } else {
            403
        }
    }
}

/// The decision that settles `gate` in `record`: a rollback settles every gate; an approval
/// its own gate.
pub fn settling(record: &ApprovalSpec, gate: GateType) -> Option<&Decision> {
    record
        .decisions
        .iter()
        .find(|d| d.verdict == Verdict::Rollback)
        .or_else(|| {
            record
                .decisions
                .iter()
                .find(|d| d.verdict == Verdict::Approve && d.gate == Some(gate))
        })
}

/// How `record` answers Flagger's call of `gate` for `key`.
pub fn answer(key: &RevisionKey, gate: GateType, record: Option<&ApprovalSpec>) -> GateAnswer {
    let decision = record.and_then(|record| settling(record, gate)).cloned();
    let what = gate.waiting();
    let (open, message) = match (&decision, gate) {
        (Some(d), GateType::Rollback) if d.verdict == Verdict::Rollback => (
            true,
            format!("roll back {key}: requested by {} via {}", d.by, d.via),
        ),
        (_, GateType::Rollback) => (false, format!("no rollback of {key} requested")),
        (Some(d), _) if d.verdict == Verdict::Approve => (
            true,
            format!("{what} of {key} approved by {} via {}", d.by, d.via),
        ),
        (Some(d), _) => (
            false,
            format!(
                "closed: rollback of {key} requested by {} via {}",
                d.by, d.via
            ),
        ),
        (None, _) => (false, format!("closed: {what} of {key} waits for approval")),
    };
    GateAnswer {
        open,
        message,
        decision,
    }
}

/// Marks `gate` asked at `at`. `false` when it was asked before (the ask is announced once
/// per revision and gate).
pub fn mark_asked(record: &mut ApprovalSpec, gate: GateType, at: &str) -> bool {
    if record.asked.iter().any(|a| a.gate == gate) {
        return false;
    }
    record.asked.push(GateAsked {
        gate,
        at: at.to_owned(),
        reminded: false,
        escalated: false,
    });
    true
}

/// What recording a decision did.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    /// It is the decision now.
    New,
    /// The gate was already settled by this decision; nothing changed.
    AlreadyDecided(Decision),
}

/// Records `decision` unless what it would decide is settled already (the first decision
/// counts: a second click, or a click on the other button, changes nothing).
pub fn record_decision(record: &mut ApprovalSpec, decision: Decision) -> Recorded {
    let settled = match (decision.verdict, decision.gate) {
        (Verdict::Rollback, _) => record
            .decisions
            .iter()
            .find(|d| d.verdict == Verdict::Rollback),
        (Verdict::Approve, Some(gate)) => settling(record, gate),
        (Verdict::Approve, None) => None,
    };
    if let Some(existing) = settled {
        return Recorded::AlreadyDecided(existing.clone());
    }
    record.decisions.push(decision);
    Recorded::New
}

/// When a gate of `record` was last asked (RFC 3339, so later times sort later); empty when
/// none was.
pub fn last_asked(record: &ApprovalSpec) -> &str {
    record
        .asked
        .iter()
        .map(|a| a.at.as_str())
        .max()
        .unwrap_or_default()
}

/// The gates of `record` still waiting, with how long (ms) since they were asked at `now_ms`.
pub fn waiting(record: &ApprovalSpec, now_ms: i64) -> Vec<(&GateAsked, i64)> {
    record
        .asked
        .iter()
        .filter(|asked| settling(record, asked.gate).is_none())
        .filter_map(|asked| Some((asked, now_ms - times::parse_ms(&asked.at)?)))
        .collect()
}

/// RFC 3339 times, as the records keep them, to and from unix milliseconds.
pub mod times {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// Unix milliseconds of an RFC 3339 time.
    pub fn parse_ms(text: &str) -> Option<i64> {
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// An RFC 3339 time (UTC, whole seconds) from unix milliseconds.
    pub fn format(unix_ms: i64) -> String {
        OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .format(&Rfc3339)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
