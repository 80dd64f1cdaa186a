//! Compiled policies and receivers, and how an event is matched against them: each policy's
//! own test, and the per-namespace index of candidates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use herald_api::{CanaryPhase, EventType};
use regex::Regex;

use super::names::{labels_match, NameFilter, Wildcard};
use super::PolicyId;
use crate::event::{CanaryFacts, FlaggerEvent};
use crate::receivers::{ReceiverKind, RequestSpec};
use crate::secret::Redacted;
use crate::template::TemplateId;

/// A receiver ready to send: its URL resolved, its templates compiled.
#[derive(Debug)]
pub struct CompiledReceiver {
    pub name: String,
    /// The kind's field name (`slack`): the `type` in `herald render` and the
    /// `receiver_type` metric label.
    pub type_name: &'static str,
    pub kind: Arc<dyn ReceiverKind>,
    pub url: Redacted,
    /// Method, headers, credentials: shared by every notification to the receiver.
    pub request: Arc<RequestSpec>,
    pub(super) title: TemplateId,
    pub(super) text: TemplateId,
}

/// A policy that passed validation.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    /// `id` as templates see it (`{{policy}}`), formatted once.
    pub(super) display: String,
    pub generation: Option<i64>,
    pub suspend: bool,
    /// `spec.repeatInterval` in milliseconds: a repeated message is sent at most once per
    /// interval (see `repeats`). `None` (or zero) sends every repeat.
    pub repeat_interval_ms: Option<u64>,
    pub receivers: Vec<CompiledReceiver>,
    /// For cluster policies: which namespaces (`None` for namespaced policies).
    pub(super) namespaces: Option<(NameFilter, BTreeMap<String, String>)>,
    pub(super) canaries: NameFilter,
    pub(super) match_labels: BTreeMap<String, String>,
    /// Bit `i` set for `CanaryPhase::ALL[i]`; 0 means every phase.
    pub(super) phases: u16,
    /// Bit 0 Normal, bit 1 Warning; 0 means both.
    pub(super) event_types: u8,
    pub(super) message_pattern: Option<Regex>,
    /// `spec.gates`: the Flagger gates this policy answers. Boxed: few policies have gates,
    /// and inline they would add their size (about 170 bytes) to every policy.
    pub gates: Option<Box<super::gates::CompiledGates>>,
}

pub(super) fn phase_bit(phase: CanaryPhase) -> u16 {
    1 << CanaryPhase::ALL
        .iter()
        .position(|p| *p == phase)
        .expect("ALL lists every phase")
}

pub(super) fn event_type_bit(event_type: EventType) -> u8 {
    match event_type {
        EventType::Normal => 1,
        EventType::Warning => 2,
    }
}

/// What is known about an event's canary: the event itself, and the Canary (labels, progress)
/// and the labels of its namespace when Herald has seen them in the cluster.
#[derive(Clone, Copy, Debug)]
pub struct MatchInput<'a> {
    pub event: &'a FlaggerEvent,
    pub canary: Option<&'a CanaryFacts>,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
}

impl<'a> MatchInput<'a> {
    pub fn event(event: &'a FlaggerEvent) -> Self {
        MatchInput {
            event,
            canary: None,
            namespace_labels: None,
        }
    }
}

impl CompiledPolicy {
    /// Whether the policy selects this event's canary (its namespace, names and labels),
    /// whatever the event says: what a gate asks about.
    pub fn selects_canary(&self, input: &MatchInput<'_>) -> bool {
        let event = input.event;
        let namespace = match &self.namespaces {
            Some((names, labels)) => {
                names.matches(&event.namespace) && labels_match(labels, input.namespace_labels)
            }
            None => self.id.namespace.as_deref() == Some(event.namespace.as_str()),
        };
        namespace
            && self.canaries.matches(&event.name)
            && labels_match(&self.match_labels, input.canary.map(|c| &c.labels))
    }

    /// The full test, index aside: does this policy fire for the event?
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        let event = input.event;
        if let Some((names, labels)) = &self.namespaces {
            if !names.matches(&event.namespace) || !labels_match(labels, input.namespace_labels) {
                return false;
            }
        } else if self.id.namespace.as_deref() != Some(event.namespace.as_str()) {
            return false;
        }
        if self.phases != 0
            && event
                .rollout_phase()
                .is_none_or(|p| self.phases & phase_bit(p) == 0)
        {
            return false;
        }
        if self.event_types != 0 && self.event_types & event_type_bit(event.event_type()) == 0 {
            return false;
        }
        self.canaries.matches(&event.name)
            && labels_match(&self.match_labels, input.canary.map(|c| &c.labels))
            && self
                .message_pattern
                .as_ref()
                .is_none_or(|re| re.is_match(event.message()))
    }
}

/// Candidate policies for one namespace (or for any namespace), keyed by canary name.
/// Wildcard patterns are indexed by their literal prefix (or, for those that start with a
/// wildcard, suffix), so that an event tests only the patterns that share its name's start
/// or end, however many there are.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    by_canary: HashMap<String, Vec<u32>>,
    any_canary: Vec<u32>,
    by_prefix: HashMap<String, Vec<(Wildcard, u32)>>,
    /// The distinct lengths of the keys of `by_prefix`, ascending.
    prefix_lens: Vec<usize>,
    by_suffix: HashMap<String, Vec<(Wildcard, u32)>>,
    suffix_lens: Vec<usize>,
    /// Wildcards with neither a literal prefix nor suffix (`*`, `*-api-*`).
    scan: Vec<(Wildcard, u32)>,
    /// Other globs, matched by one GlobSet.
    globs: Vec<u32>,
    glob_set: Option<GlobSet>,
    glob_patterns: Vec<Glob>,
}

impl Bucket {
    pub(super) fn add(&mut self, index: u32, policy: &CompiledPolicy) {
        if policy.canaries.is_all() {
            self.any_canary.push(index);
            return;
        }
        for name in &policy.canaries.exact {
            self.by_canary.entry(name.clone()).or_default().push(index);
        }
        for pattern in &policy.canaries.globs {
            if let Some(wildcard) = Wildcard::new(pattern) {
                let (prefix, suffix) = (wildcard.prefix(), wildcard.suffix());
                if !prefix.is_empty() {
                    self.prefix_lens.push(prefix.len());
                    let key = prefix.to_owned();
                    self.by_prefix
                        .entry(key)
                        .or_default()
                        .push((wildcard, index));
                } else if !suffix.is_empty() {
                    self.suffix_lens.push(suffix.len());
                    let key = suffix.to_owned();
                    self.by_suffix
                        .entry(key)
                        .or_default()
                        .push((wildcard, index));
                } else {
                    self.scan.push((wildcard, index));
                }
            } else if let Ok(glob) = Glob::new(pattern) {
                self.glob_patterns.push(glob);
                self.globs.push(index);
            }
        }
    }

    pub(super) fn finish(&mut self) {
        self.prefix_lens.sort_unstable();
        self.prefix_lens.dedup();
        self.suffix_lens.sort_unstable();
        self.suffix_lens.dedup();
        if !self.glob_patterns.is_empty() {
            let mut builder = GlobSetBuilder::new();
            for glob in self.glob_patterns.drain(..) {
                builder.add(glob);
            }
            self.glob_set = builder.build().ok();
        }
    }

    pub(super) fn candidates(&self, canary: &str, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any_canary);
        if let Some(found) = self.by_canary.get(canary) {
            out.extend_from_slice(found);
        }
        let wildcard_hits = |hits: Option<&Vec<(Wildcard, u32)>>, out: &mut Vec<u32>| {
            for (wildcard, index) in hits.into_iter().flatten() {
                if wildcard.is_match(canary) {
                    out.push(*index);
                }
            }
        };
        for &len in &self.prefix_lens {
            if len > canary.len() {
                break;
            }
            if canary.is_char_boundary(len) {
                wildcard_hits(self.by_prefix.get(&canary[..len]), out);
            }
        }
        for &len in &self.suffix_lens {
            if len > canary.len() {
                break;
            }
            let start = canary.len() - len;
            if canary.is_char_boundary(start) {
                wildcard_hits(self.by_suffix.get(&canary[start..]), out);
            }
        }
        for (wildcard, index) in &self.scan {
            if wildcard.is_match(canary) {
                out.push(*index);
            }
        }
        if let Some(set) = &self.glob_set {
            for hit in set.matches(canary) {
                out.push(self.globs[hit]);
            }
        }
    }
}
