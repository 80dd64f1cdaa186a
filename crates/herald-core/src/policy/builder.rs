//! Validating and compiling policy objects into a [`PolicySet`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use herald_api::MessageTemplate;
use regex::Regex;

use super::compiled::{event_type_bit, phase_bit, Bucket, CompiledPolicy, CompiledReceiver};
use super::names::NameFilter;
use super::set::PolicySet;
use super::{
    check_label_keys, is_dns_label, one_line, Compiler, PolicyId, PolicyObject, Problem, Reason,
};
use crate::secret::SecretSource;
use crate::template::{self, TemplateEngine, TemplateId};

/// Turns policy objects into a [`PolicySet`]: validates each, resolves its secrets, compiles
/// its templates. A policy with problems is left out and its problems are kept.
pub struct PolicySetBuilder<'s> {
    secrets: &'s dyn SecretSource,
    cluster: String,
    herald_namespace: String,
    engine: TemplateEngine,
    policies: BTreeMap<PolicyId, CompiledPolicy>,
    rejected: BTreeMap<PolicyId, Vec<Problem>>,
}

impl<'s> PolicySetBuilder<'s> {
    /// `herald_namespace` is where cluster policies' Secrets live; `cluster` is the cluster
    /// name templates see.
    pub fn new(
        secrets: &'s dyn SecretSource,
        cluster: impl Into<String>,
        herald_namespace: impl Into<String>,
    ) -> Self {
        PolicySetBuilder {
            secrets,
            cluster: cluster.into(),
            herald_namespace: herald_namespace.into(),
            engine: TemplateEngine::new(),
            policies: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }

    /// Validates and adds one policy. On problems the policy is not added and the problems
    /// are returned (and kept for [`PolicySet::problems`]).
    pub fn add(&mut self, object: &PolicyObject) -> Result<(), Vec<Problem>> {
        let id = object.id();
        match self.compile(object, &id) {
            Ok(policy) => {
                self.rejected.remove(&id);
                self.policies.insert(id, policy);
                Ok(())
            }
            Err(problems) => {
                self.policies.remove(&id);
                self.rejected.insert(id, problems.clone());
                Err(problems)
            }
        }
    }

    fn compile(
        &mut self,
        object: &PolicyObject,
        id: &PolicyId,
    ) -> Result<CompiledPolicy, Vec<Problem>> {
        let rules = object.rules();
        let secret_namespace = id
            .namespace
            .clone()
            .unwrap_or_else(|| self.herald_namespace.clone());
        let mut cx = Compiler {
            secrets: self.secrets,
            engine: &mut self.engine,
            cluster: &self.cluster,
            secret_namespace: &secret_namespace,
            problems: Vec::new(),
        };
        if id.name.is_empty() {
            cx.problems.push(Problem::new(
                Reason::InvalidSpec,
                "metadata.name",
                "missing",
            ));
        }
        let canaries = NameFilter::build(rules.canaries, "spec.canaries", &mut cx.problems);
        check_label_keys(rules.match_labels, "spec.matchLabels", &mut cx.problems);
        let namespaces = object.namespace_selector().map(|selector| {
            check_label_keys(
                &selector.match_labels,
                "spec.namespaceSelector.matchLabels",
                &mut cx.problems,
            );
            let names = NameFilter::build(
                &selector.match_names,
                "spec.namespaceSelector.matchNames",
                &mut cx.problems,
            );
            (names, selector.match_labels.clone())
        });
        let message_pattern = rules
            .message_pattern
            .and_then(|pattern| match Regex::new(pattern) {
                Ok(re) => Some(re),
                Err(e) => {
                    cx.problems.push(Problem::new(
                        Reason::InvalidSpec,
                        "spec.messagePattern",
                        format!("invalid regular expression: {}", one_line(&e.to_string())),
                    ));
                    None
                }
            });
        let repeat_interval_ms =
            rules
                .repeat_interval
                .and_then(|text| match crate::repeats::parse_interval(text) {
                    Ok(0) => {
                        // Zero would hold nothing back: say so rather than ignore it.
                        cx.problems.push(Problem::new(
                            Reason::InvalidSpec,
                            "spec.repeatInterval",
                            format!("{text:?} is zero: give a longer interval, or leave repeatInterval unset to send every repeat"),
                        ));
                        None
                    }
                    Ok(ms) => Some(ms),
                    Err(e) => {
                        cx.problems.push(Problem::new(Reason::InvalidSpec, "spec.repeatInterval", e));
                        None
                    }
                });
        let policy_template = template_pair(&mut cx, rules.template, None, "spec.template");
        if rules.receivers.is_empty() {
            cx.problems.push(Problem::new(
                Reason::InvalidSpec,
                "spec.receivers",
                "at least one receiver is required",
            ));
        }
        let mut receivers = Vec::with_capacity(rules.receivers.len());
        for (i, receiver) in rules.receivers.iter().enumerate() {
            let path = format!("spec.receivers[{i}]");
            if rules.receivers[..i].iter().any(|r| r.name == receiver.name) {
                cx.problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.name"),
                    format!("duplicate receiver name {:?}", receiver.name),
                ));
            }
            if !is_dns_label(&receiver.name) {
                cx.problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.name"),
                    "must be a DNS label: lower-case letters, digits and '-', at most 63 characters",
                ));
            }
            let (title, text) = match template_pair(
                &mut cx,
                receiver.template.as_ref(),
                policy_template,
                &format!("{path}.template"),
            ) {
                Some(pair) => pair,
                None => continue,
            };
            if let Some(compiled) = crate::receivers::compile(receiver, &path, &mut cx) {
                receivers.push(CompiledReceiver {
                    name: receiver.name.clone(),
                    type_name: compiled.type_name,
                    kind: compiled.kind,
                    url: compiled.url,
                    request: Arc::new(compiled.request),
                    title,
                    text,
                });
            }
        }
        let gates = rules.gates.map(|spec| {
            Box::new(super::gates::compile(
                spec,
                rules.receivers,
                &mut cx.problems,
            ))
        });
        if !cx.problems.is_empty() {
            return Err(cx.problems);
        }
        Ok(CompiledPolicy {
            id: id.clone(),
            display: id.to_string(),
            generation: object.generation(),
            suspend: rules.suspend,
            repeat_interval_ms,
            receivers,
            namespaces,
            canaries,
            match_labels: rules.match_labels.clone(),
            phases: rules.phases.iter().fold(0, |mask, p| mask | phase_bit(*p)),
            event_types: rules
                .event_types
                .iter()
                .fold(0, |mask, t| mask | event_type_bit(*t)),
            message_pattern,
            gates,
        })
    }

    /// Compiles a title/text pair, each part falling back to `inherited` (the policy's pair)
    /// and then to Herald's defaults. `None` when a part fails (the problem is recorded).
    pub fn build(mut self) -> PolicySet {
        // In id order already, as the map keeps them: a sort would find nothing to do, after
        // allocating scratch room for every policy.
        let policies: Vec<CompiledPolicy> =
            std::mem::take(&mut self.policies).into_values().collect();
        let mut by_namespace: HashMap<String, Bucket> = HashMap::new();
        let mut any_namespace = Bucket::default();
        for (i, policy) in policies.iter().enumerate() {
            if policy.suspend {
                continue;
            }
            let i = i as u32;
            match (&policy.id.namespace, &policy.namespaces) {
                (Some(ns), _) => by_namespace.entry(ns.clone()).or_default().add(i, policy),
                (None, Some((names, _))) if names.globs.is_empty() && !names.exact.is_empty() => {
                    for ns in &names.exact {
                        by_namespace.entry(ns.clone()).or_default().add(i, policy);
                    }
                }
                (None, _) => any_namespace.add(i, policy),
            }
        }
        for bucket in by_namespace.values_mut() {
            bucket.finish();
        }
        any_namespace.finish();
        let by_id = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i as u32))
            .collect();
        PolicySet {
            engine: self.engine,
            policies,
            by_id,
            by_namespace,
            any_namespace,
            rejected: self.rejected,
            cluster: self.cluster,
        }
    }
}

fn template_pair(
    cx: &mut Compiler<'_>,
    template: Option<&MessageTemplate>,
    inherited: Option<(TemplateId, TemplateId)>,
    path: &str,
) -> Option<(TemplateId, TemplateId)> {
    let mut part = |source: Option<&String>,
                    inherited: Option<TemplateId>,
                    default: &str,
                    field: &str| {
        match (source, inherited) {
            (Some(source), _) => cx.checked_template(source, &format!("{path}.{field}")),
            (None, Some(id)) => Some(id),
            (None, None) => Some(
                cx.engine
                    .compile(default)
                    .expect("default templates compile"),
            ),
        }
    };
    let title = part(
        template.and_then(|t| t.title.as_ref()),
        inherited.map(|p| p.0),
        template::DEFAULT_TITLE,
        "title",
    );
    let text = part(
        template.and_then(|t| t.text.as_ref()),
        inherited.map(|p| p.1),
        template::DEFAULT_TEXT,
        "text",
    );
    Some((title?, text?))
}
