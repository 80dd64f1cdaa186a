//! A policy's `gates`, compiled: which of Flagger's gates it answers, which receivers are
//! asked (and escalated to), who may decide; and the asks rendered for those receivers.

use herald_api::{Approvers, GatePolicy, GateType, Receiver};

use super::compiled::MatchInput;
use super::set::{Notification, RenderFailure};
use super::{PolicySet, Problem, Reason};
use crate::event::FlaggerEvent;

/// `spec.gates`, validated.
#[derive(Debug, Clone)]
pub struct CompiledGates {
    /// Bit `i` set for `GateType::ALL[i]`.
    types: u8,
    /// Indices of the receivers asked.
    pub ask: Vec<u32>,
    pub approvers: Approvers,
    pub remind_after_ms: Option<u64>,
    pub escalate_after_ms: Option<u64>,
    /// Indices of the receivers asked when a gate is escalated.
    pub escalate_to: Vec<u32>,
}

fn gate_bit(gate: GateType) -> u8 {
    1 << GateType::ALL
        .iter()
        .position(|g| *g == gate)
        .expect("ALL lists every gate")
}

impl CompiledGates {
    pub fn covers(&self, gate: GateType) -> bool {
        self.types & gate_bit(gate) != 0
    }

    /// Whether anyone may decide from a signed link.
    pub fn takes_links(&self) -> bool {
        self.approvers.link_holders || !self.approvers.identities.is_empty()
    }
}

fn receiver_indices(
    names: &[String],
    receivers: &[Receiver],
    path: &str,
    problems: &mut Vec<Problem>,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        match receivers.iter().position(|r| &r.name == name) {
            Some(index) => out.push(index as u32),
            None => problems.push(Problem::new(
                Reason::InvalidSpec,
                format!("{path}[{i}]"),
                format!("no receiver named {name:?} in spec.receivers"),
            )),
        }
    }
    out
}

fn slack_ids(ids: &[String], first: &[char], what: &str, path: &str, problems: &mut Vec<Problem>) {
    for (i, id) in ids.iter().enumerate() {
        let ok = id.len() >= 2
            && id.starts_with(first)
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !ok {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                format!("{path}[{i}]"),
                format!(
                    "{id:?} is not a Slack {what} ID (such as {}012AB3CD)",
                    first[0]
                ),
            ));
        }
    }
}

fn duration(text: Option<&str>, path: &str, problems: &mut Vec<Problem>) -> Option<u64> {
    match crate::repeats::parse_interval(text?) {
        Ok(0) => {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                path,
                "must be more than zero",
            ));
            None
        }
        Ok(ms) => Some(ms),
        Err(e) => {
            problems.push(Problem::new(Reason::InvalidSpec, path, e));
            None
        }
    }
}

/// Validates `spec.gates` against the policy's receivers.
pub(super) fn compile(
    spec: &GatePolicy,
    receivers: &[Receiver],
    problems: &mut Vec<Problem>,
) -> CompiledGates {
    let types = match spec.types.as_slice() {
        [] => GateType::ALL.iter().fold(0, |mask, g| mask | gate_bit(*g)),
        types => types.iter().fold(0, |mask, g| mask | gate_bit(*g)),
    };
    let ask = match spec.receivers.as_slice() {
        [] => (0..receivers.len() as u32).collect(),
        names => receiver_indices(names, receivers, "spec.gates.receivers", problems),
    };
    let escalate_to = receiver_indices(
        &spec.escalate_to,
        receivers,
        "spec.gates.escalateTo",
        problems,
    );
    let escalate_after_ms = duration(
        spec.escalate_after.as_deref(),
        "spec.gates.escalateAfter",
        problems,
    );
    if escalate_after_ms.is_some() && spec.escalate_to.is_empty() {
        problems.push(Problem::new(
            Reason::InvalidSpec,
            "spec.gates.escalateTo",
            "escalateAfter is set: name the receivers to escalate to",
        ));
    }
    let approvers = &spec.approvers;
    slack_ids(
        &approvers.slack_users,
        &['U', 'W'],
        "user",
        "spec.gates.approvers.slackUsers",
        problems,
    );
    slack_ids(
        &approvers.slack_user_groups,
        &['S'],
        "user group",
        "spec.gates.approvers.slackUserGroups",
        problems,
    );
    CompiledGates {
        types,
        ask,
        approvers: approvers.clone(),
        remind_after_ms: duration(
            spec.remind_after.as_deref(),
            "spec.gates.remindAfter",
            problems,
        ),
        escalate_after_ms,
        escalate_to,
    }
}

/// An ask for a decision, rendered for some of a policy's receivers.
pub struct Ask<'a> {
    /// The ask as an event of the canary: its message says what waits. Receivers with
    /// buttons render this one.
    pub event: &'a FlaggerEvent,
    /// The same with the signed links (or how to decide without them) in its message: what
    /// every other receiver renders.
    pub with_links: &'a FlaggerEvent,
    pub gate: GateType,
    /// Whether presses of buttons reach Herald (Slack interactivity is set up): without,
    /// every receiver gets `with_links`.
    pub buttons: bool,
}

impl PolicySet {
    /// The policies that answer `gate` for this canary, in policy-id order.
    pub fn gate_policies(&self, input: &MatchInput<'_>, gate: GateType) -> Vec<u32> {
        let mut candidates = self.candidates(input.event);
        candidates.retain(|i| {
            let policy = &self.policies[*i as usize];
            !policy.suspend
                && policy.gates.as_ref().is_some_and(|g| g.covers(gate))
                && policy.selects_canary(input)
        });
        candidates
    }

    /// Renders `ask` for the given receivers of `policy`: with buttons for the kinds that
    /// have them, as an event with links in its message for the others.
    pub fn ask_notifications(
        &self,
        policy: u32,
        receivers: &[u32],
        ask: &Ask<'_>,
        canary: Option<&crate::event::CanaryFacts>,
    ) -> Vec<Result<Notification, RenderFailure>> {
        let compiled = &self.policies[policy as usize];
        let approvers = compiled
            .gates
            .as_ref()
            .map(|g| g.approvers.clone())
            .unwrap_or_default();
        let plain = MatchInput {
            event: ask.event,
            canary,
            namespace_labels: None,
        };
        let linked = MatchInput {
            event: ask.with_links,
            ..plain
        };
        let mut out = Vec::with_capacity(receivers.len());
        for &index in receivers {
            let receiver = &compiled.receivers[index as usize];
            let buttons = crate::receivers::AskButtons {
                value: crate::gates::slack::ButtonValue {
                    namespace: ask.event.namespace.clone(),
                    canary: ask.event.name.clone(),
                    revision: ask.event.checksum.clone().unwrap_or_default(),
                    gate: ask.gate,
                    policy: compiled.id.to_string(),
                    receiver: receiver.name.clone(),
                },
                approvers: &approvers,
                what: ask.gate.waiting(),
            };
            let with_buttons = match ask.buttons {
                true => self.render_for(&plain, compiled, receiver, |kind, render| {
                    kind.ask_body(render, &buttons)
                }),
                false => None,
            };
            match with_buttons {
                Some(body) => out.push(
                    body.map(|body| notification(policy, index, receiver, body, &plain))
                        .map_err(|error| RenderFailure {
                            policy,
                            receiver: index,
                            error,
                        }),
                ),
                None => out.extend(self.receiver_notifications(policy, &[index], &linked)),
            }
        }
        out
    }

    /// Renders `input` for the given receivers of `policy`, as any event (a decision's
    /// announcement, or an ask for receivers without buttons).
    pub fn receiver_notifications(
        &self,
        policy: u32,
        receivers: &[u32],
        input: &MatchInput<'_>,
    ) -> Vec<Result<Notification, RenderFailure>> {
        let compiled = &self.policies[policy as usize];
        receivers
            .iter()
            .map(|&index| {
                let receiver = &compiled.receivers[index as usize];
                self.render_for(input, compiled, receiver, |kind, render| {
                    Some(kind.body(render))
                })
                .expect("every kind renders a body")
                .map(|body| notification(policy, index, receiver, body, input))
                .map_err(|error| RenderFailure {
                    policy,
                    receiver: index,
                    error,
                })
            })
            .collect()
    }
}

fn notification(
    policy: u32,
    index: u32,
    receiver: &super::CompiledReceiver,
    body: Vec<u8>,
    input: &MatchInput<'_>,
) -> Notification {
    Notification {
        policy,
        receiver: index,
        body,
        path: None,
        thread: receiver
            .kind
            .thread_scope()
            .map(|scope| crate::receivers::threads::thread_ref(scope, input.event, input.canary)),
    }
}
