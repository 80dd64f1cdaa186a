//! Shared helpers for herald-core's integration tests: YAML in, a built `PolicySet` out, and
//! readable views of what matched and what would be sent.
#![allow(dead_code)]

use std::collections::BTreeMap;

use herald_api::EventType;
use herald_core::{
    load_sources, CanaryFacts, FlaggerEvent, LoadProblem, Loaded, MatchInput, Notification,
    PolicyId, PolicySet,
};

/// The cluster name templates see in these tests.
pub const CLUSTER: &str = "";
/// Herald's own namespace: where ClusterNotificationPolicies' Secrets are read.
pub const HERALD_NAMESPACE: &str = "herald";

/// Loads the sources and builds the set, as `herald check` / standalone mode do.
pub fn load_and_build(sources: &[(&str, &str)]) -> (Loaded, PolicySet) {
    let mut loaded = load_sources(sources.iter().copied());
    let set = loaded.build(CLUSTER, HERALD_NAMESPACE);
    (loaded, set)
}

/// Loads and builds one YAML text, asserting that every document was accepted.
pub fn build_ok(yaml: &str) -> PolicySet {
    let (loaded, set) = load_and_build(&[("policies.yaml", yaml)]);
    assert_eq!(
        loaded.problems,
        Vec::<LoadProblem>::new(),
        "the fixture must load without problems"
    );
    set
}

/// A namespaced policy with one webhook receiver `hook`; `spec` holds extra spec lines,
/// written as if at column 0 (they are indented here).
pub fn policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{}  receivers:\n    - name: hook\n      webhook:\n        url: https://hooks.example.com/{name}\n",
        indent(spec)
    )
}

/// A cluster policy with one webhook receiver `hook`; `spec` as for [`policy`].
pub fn cluster_policy(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: herald.dev/v1alpha1\nkind: ClusterNotificationPolicy\nmetadata:\n  name: {name}\nspec:\n{}  receivers:\n    - name: hook\n      webhook:\n        url: https://hooks.example.com/{name}\n",
        indent(spec)
    )
}

fn indent(spec: &str) -> String {
    spec.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect()
}

/// An event as the controller builds it.
pub fn event(
    name: &str,
    namespace: &str,
    phase: &str,
    message: &str,
    t: EventType,
) -> FlaggerEvent {
    FlaggerEvent::new(name, namespace, phase, message, t, 1_764_072_000_000)
}

/// A Normal `Progressing` event: the most common kind.
pub fn progressing(name: &str, namespace: &str) -> FlaggerEvent {
    event(
        name,
        namespace,
        "Progressing",
        &format!("Advance {name}.{namespace} canary weight 10"),
        EventType::Normal,
    )
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the controller knows of a Canary carrying these labels.
pub fn canary(pairs: &[(&str, &str)]) -> CanaryFacts {
    CanaryFacts {
        labels: labels(pairs),
        ..CanaryFacts::default()
    }
}

/// The ids (`namespace/name` or `name`) of the policies that fire, in the set's order.
pub fn matched(set: &PolicySet, input: &MatchInput<'_>) -> Vec<String> {
    set.matching(input)
        .into_iter()
        .map(|i| set.policy(i).id.to_string())
        .collect()
}

/// `matched` for an event without any labels (an event received over HTTP).
pub fn matched_event(set: &PolicySet, event: &FlaggerEvent) -> Vec<String> {
    matched(set, &MatchInput::event(event))
}

/// The deliveries as (policy id, receiver name, body); panics on a render failure.
pub fn deliveries(
    set: &PolicySet,
    input: &MatchInput<'_>,
    only: Option<u32>,
) -> Vec<(String, String, Vec<u8>)> {
    set.notifications(input, only)
        .into_iter()
        .map(|d| {
            let Notification {
                policy,
                receiver,
                body,
                ..
            } = d.unwrap_or_else(|f| panic!("render failure: {f:?}"));
            (
                set.policy(policy).id.to_string(),
                set.receiver(policy, receiver).name.clone(),
                body,
            )
        })
        .collect()
}

/// Just the (policy id, receiver name) pairs of [`deliveries`].
pub fn delivery_pairs(
    set: &PolicySet,
    input: &MatchInput<'_>,
    only: Option<u32>,
) -> Vec<(String, String)> {
    deliveries(set, input, only)
        .into_iter()
        .map(|(p, r, _)| (p, r))
        .collect()
}

pub fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect()
}

pub fn index_of(set: &PolicySet, id: &PolicyId) -> u32 {
    set.find(id)
        .unwrap_or_else(|| panic!("policy {id} is not in the set"))
}
