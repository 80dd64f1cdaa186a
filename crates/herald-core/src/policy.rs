//! Policies: validated and compiled once per generation (`validate` + `build`), indexed so an
//! event finds its policies without scanning them all, and rendered into deliveries.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};
use handlebars::Context;
use herald_api::{
    AddressRef, CanaryPhase, ClusterNotificationPolicy, EventType, MessageTemplate,
    NamespaceSelector, NotificationPolicy, PolicyRules, Receiver, TeamsFormat,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use regex::Regex;

use crate::event::{CanaryFacts, FlaggerEvent};
use crate::payload::{self, Message, ReceiverKind, SlackOptions, WebhookOptions};
use crate::secret::{Redacted, SecretError, SecretSource};
use crate::template::{self, TemplateEngine, TemplateError, TemplateId};

/// A policy's identity: `namespace/name` for a NotificationPolicy, `name` for a
/// ClusterNotificationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyId {
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PolicyId {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    pub fn cluster(name: impl Into<String>) -> Self {
        PolicyId {
            namespace: None,
            name: name.into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        if self.namespace.is_some() {
            "NotificationPolicy"
        } else {
            "ClusterNotificationPolicy"
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Either policy kind, as read from YAML or the API.
#[derive(Clone, Debug)]
pub enum PolicyObject {
    Namespaced(NotificationPolicy),
    Cluster(ClusterNotificationPolicy),
}

impl PolicyObject {
    fn metadata(&self) -> &ObjectMeta {
        match self {
            PolicyObject::Namespaced(p) => &p.metadata,
            PolicyObject::Cluster(p) => &p.metadata,
        }
    }

    /// The id; a namespaced policy without a namespace is in `default`, as `kubectl apply`
    /// would put it.
    pub fn id(&self) -> PolicyId {
        let name = self.metadata().name.clone().unwrap_or_default();
        match self {
            PolicyObject::Namespaced(p) => PolicyId::namespaced(
                p.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
                name,
            ),
            PolicyObject::Cluster(_) => PolicyId::cluster(name),
        }
    }

    pub fn generation(&self) -> Option<i64> {
        self.metadata().generation
    }

    pub fn rules(&self) -> PolicyRules<'_> {
        match self {
            PolicyObject::Namespaced(p) => p.spec.rules(),
            PolicyObject::Cluster(p) => p.spec.rules(),
        }
    }

    fn namespace_selector(&self) -> Option<&NamespaceSelector> {
        match self {
            PolicyObject::Namespaced(_) => None,
            PolicyObject::Cluster(p) => Some(&p.spec.namespace_selector),
        }
    }
}

/// Why a policy is not Ready: the `reason` of its `Ready=False` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidSpec,
    TemplateError,
    SecretNotFound,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TemplateError => "TemplateError",
            Reason::SecretNotFound => "SecretNotFound",
        }
    }
}

/// One thing wrong with a policy, at a field path such as `spec.receivers[0].slack.secretRef`.
/// Never contains a secret value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(reason: Reason, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            reason,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Names matched by exact value or glob; an empty filter matches everything.
#[derive(Debug, Default)]
struct NameFilter {
    exact: Vec<String>,
    globs: Vec<String>,
    glob_set: Option<GlobSet>,
}

impl NameFilter {
    fn build(patterns: &[String], path: &str, problems: &mut Vec<Problem>) -> NameFilter {
        let mut filter = NameFilter::default();
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.is_empty() {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}[{i}]"),
                    "must not be empty",
                ));
            } else if !is_glob(pattern) {
                filter.exact.push(pattern.clone());
            } else {
                match Glob::new(pattern) {
                    Ok(glob) => {
                        builder.add(glob);
                        filter.globs.push(pattern.clone());
                    }
                    Err(e) => problems.push(Problem::new(
                        Reason::InvalidSpec,
                        format!("{path}[{i}]"),
                        format!("invalid glob: {}", e.kind()),
                    )),
                }
            }
        }
        if !filter.globs.is_empty() {
            filter.glob_set = builder.build().ok();
        }
        filter
    }

    fn is_all(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    fn matches(&self, name: &str) -> bool {
        self.is_all()
            || self.exact.iter().any(|e| e == name)
            || self.glob_set.as_ref().is_some_and(|set| set.is_match(name))
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

fn labels_match(
    required: &BTreeMap<String, String>,
    actual: Option<&BTreeMap<String, String>>,
) -> bool {
    required.is_empty()
        || actual.is_some_and(|actual| required.iter().all(|(k, v)| actual.get(k) == Some(v)))
}

/// A receiver ready to send: its URL resolved, its templates compiled.
#[derive(Debug)]
pub struct CompiledReceiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: Redacted,
    title: TemplateId,
    text: TemplateId,
}

/// A policy that passed validation.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    pub generation: Option<i64>,
    pub suspend: bool,
    pub receivers: Vec<CompiledReceiver>,
    /// For cluster policies: which namespaces (`None` for namespaced policies).
    namespaces: Option<(NameFilter, BTreeMap<String, String>)>,
    canaries: NameFilter,
    match_labels: BTreeMap<String, String>,
    /// Bit `i` set for `CanaryPhase::ALL[i]`; 0 means every phase.
    phases: u16,
    /// Bit 0 Normal, bit 1 Warning; 0 means both.
    event_types: u8,
    message_pattern: Option<Regex>,
}

fn phase_bit(phase: CanaryPhase) -> u16 {
    1 << CanaryPhase::ALL
        .iter()
        .position(|p| *p == phase)
        .expect("ALL lists every phase")
}

fn event_type_bit(event_type: EventType) -> u8 {
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
                .known_phase()
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
#[derive(Debug, Default)]
struct Bucket {
    by_canary: HashMap<String, Vec<u32>>,
    any_canary: Vec<u32>,
    globs: Vec<u32>,
    glob_set: Option<GlobSet>,
    glob_patterns: Vec<Glob>,
}

impl Bucket {
    fn add(&mut self, index: u32, policy: &CompiledPolicy) {
        if policy.canaries.is_all() {
            self.any_canary.push(index);
            return;
        }
        for name in &policy.canaries.exact {
            self.by_canary.entry(name.clone()).or_default().push(index);
        }
        for pattern in &policy.canaries.globs {
            if let Ok(glob) = Glob::new(pattern) {
                self.glob_patterns.push(glob);
                self.globs.push(index);
            }
        }
    }

    fn finish(&mut self) {
        if !self.glob_patterns.is_empty() {
            let mut builder = GlobSetBuilder::new();
            for glob in self.glob_patterns.drain(..) {
                builder.add(glob);
            }
            self.glob_set = builder.build().ok();
        }
    }

    fn candidates(&self, canary: &str, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any_canary);
        if let Some(found) = self.by_canary.get(canary) {
            out.extend_from_slice(found);
        }
        if let Some(set) = &self.glob_set {
            for hit in set.matches(canary) {
                out.push(self.globs[hit]);
            }
        }
    }
}

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
        let mut problems = Vec::new();
        if id.name.is_empty() {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                "metadata.name",
                "missing",
            ));
        }
        let canaries = NameFilter::build(rules.canaries, "spec.canaries", &mut problems);
        let namespaces = object.namespace_selector().map(|selector| {
            let names = NameFilter::build(
                &selector.match_names,
                "spec.namespaceSelector.matchNames",
                &mut problems,
            );
            (names, selector.match_labels.clone())
        });
        let message_pattern = rules
            .message_pattern
            .and_then(|pattern| match Regex::new(pattern) {
                Ok(re) => Some(re),
                Err(e) => {
                    problems.push(Problem::new(
                        Reason::InvalidSpec,
                        "spec.messagePattern",
                        format!("invalid regular expression: {}", one_line(&e.to_string())),
                    ));
                    None
                }
            });
        let policy_template =
            self.compile_template_pair(rules.template, None, "spec.template", &mut problems);
        if rules.receivers.is_empty() {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                "spec.receivers",
                "at least one receiver is required",
            ));
        }
        let secret_namespace = id
            .namespace
            .clone()
            .unwrap_or_else(|| self.herald_namespace.clone());
        let mut receivers = Vec::with_capacity(rules.receivers.len());
        for (i, receiver) in rules.receivers.iter().enumerate() {
            let path = format!("spec.receivers[{i}]");
            if rules.receivers[..i].iter().any(|r| r.name == receiver.name) {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.name"),
                    format!("duplicate receiver name {:?}", receiver.name),
                ));
            }
            if !is_dns_label(&receiver.name) {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.name"),
                    "must be a DNS label: lower-case letters, digits and '-', at most 63 characters",
                ));
            }
            let (title, text) = match self.compile_template_pair(
                receiver.template.as_ref(),
                policy_template,
                &format!("{path}.template"),
                &mut problems,
            ) {
                Some(pair) => pair,
                None => continue,
            };
            if let Some((kind, url)) =
                self.compile_kind(receiver, &path, &secret_namespace, &mut problems)
            {
                receivers.push(CompiledReceiver {
                    name: receiver.name.clone(),
                    kind,
                    url,
                    title,
                    text,
                });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CompiledPolicy {
            id: id.clone(),
            generation: object.generation(),
            suspend: rules.suspend,
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
        })
    }

    /// Compiles a title/text pair, each part falling back to `inherited` (the policy's pair)
    /// and then to Herald's defaults. `None` when a part fails (the problem is recorded).
    fn compile_template_pair(
        &mut self,
        template: Option<&MessageTemplate>,
        inherited: Option<(TemplateId, TemplateId)>,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<(TemplateId, TemplateId)> {
        let mut part =
            |source: Option<&String>, inherited: Option<TemplateId>, default: &str, field: &str| {
                match (source, inherited) {
                    (Some(source), _) => {
                        self.compile_checked(source, &format!("{path}.{field}"), problems)
                    }
                    (None, Some(id)) => Some(id),
                    (None, None) => Some(
                        self.engine
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

    /// Compiles a template and renders it once against a sample event, so that a misspelt
    /// variable is reported now, with its line and column.
    fn compile_checked(
        &mut self,
        source: &str,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<TemplateId> {
        let checked = self.engine.compile(source).and_then(|id| {
            let context = template::event_context(
                &template::sample_event(),
                &self.cluster,
                Some(&template::sample_canary()),
            );
            self.engine.render(id, &context).map(|_| id)
        });
        match checked {
            Ok(id) => Some(id),
            Err(e) => {
                problems.push(template_problem(path, &e));
                None
            }
        }
    }

    fn compile_kind(
        &mut self,
        receiver: &Receiver,
        path: &str,
        secret_namespace: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<(ReceiverKind, Redacted)> {
        let kinds = [
            receiver.slack.is_some(),
            receiver.msteams.is_some(),
            receiver.webhook.is_some(),
        ];
        if kinds.iter().filter(|set| **set).count() != 1 {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                path,
                "a receiver sets exactly one of slack, msteams, webhook",
            ));
            return None;
        }
        let (kind, address, field) = if let Some(slack) = &receiver.slack {
            let options = SlackOptions {
                channel: slack.channel.clone(),
                username: slack.username.clone(),
                icon_emoji: slack.icon_emoji.clone(),
                icon_url: slack.icon_url.clone(),
            };
            (ReceiverKind::Slack(options), slack.address(), "slack")
        } else if let Some(teams) = &receiver.msteams {
            (
                ReceiverKind::Teams(teams.format),
                teams.address(),
                "msteams",
            )
        } else {
            let webhook = receiver.webhook.as_ref().expect("exactly one kind is set");
            let body_path = format!("{path}.webhook.body");
            let body = match &webhook.body {
                Some(source) => Some(self.compile_json_body(source, &body_path, problems)?),
                None => None,
            };
            let headers = webhook
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (
                ReceiverKind::Webhook(WebhookOptions { headers, body }),
                webhook.address(),
                "webhook",
            )
        };
        let url = self.resolve_address(
            address,
            &format!("{path}.{field}"),
            secret_namespace,
            problems,
        )?;
        Some((kind, url))
    }

    fn compile_json_body(
        &mut self,
        source: &str,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<TemplateId> {
        let id = self.compile_checked(source, path, problems)?;
        let context = template::event_context(
            &template::sample_event(),
            &self.cluster,
            Some(&template::sample_canary()),
        );
        let rendered = self.engine.render(id, &context).ok()?;
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&rendered) {
            problems.push(Problem::new(
                Reason::TemplateError,
                path,
                format!(
                    "renders invalid JSON (line {}, column {} of the output: {}); insert values with {{{{json ...}}}}",
                    e.line(),
                    e.column(),
                    crate::json_error_reason(&e)
                ),
            ));
            return None;
        }
        Some(id)
    }

    fn resolve_address(
        &self,
        address: AddressRef<'_>,
        path: &str,
        secret_namespace: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Redacted> {
        let (url, field) = match address {
            AddressRef::Invalid => {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    path,
                    "set exactly one of url, secretRef",
                ));
                return None;
            }
            AddressRef::Url(url) => (url.to_owned(), format!("{path}.url")),
            AddressRef::Secret(secret) => {
                let field = format!("{path}.secretRef");
                match self
                    .secrets
                    .secret_value(secret_namespace, &secret.name, secret.key())
                {
                    Ok(url) => (url, field),
                    Err(e) => {
                        let reason = match e {
                            SecretError::NotText { .. } => Reason::InvalidSpec,
                            _ => Reason::SecretNotFound,
                        };
                        problems.push(Problem::new(reason, field, e.to_string()));
                        return None;
                    }
                }
            }
        };
        if !is_http_url(&url) {
            // Never echo the value: it is a credential.
            problems.push(Problem::new(
                Reason::InvalidSpec,
                field,
                "must be an http:// or https:// URL with a host",
            ));
            return None;
        }
        Some(Redacted::new(url))
    }

    pub fn build(mut self) -> PolicySet {
        let mut policies: Vec<CompiledPolicy> =
            std::mem::take(&mut self.policies).into_values().collect();
        policies.sort_by(|a, b| a.id.cmp(&b.id));
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

/// Removes the whitespace between JSON tokens, keeping keys in the template's order (a body
/// template is written for people; receivers and `herald render` lines get it compact).
/// Expects valid JSON.
pub fn minify_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

fn template_problem(path: &str, e: &TemplateError) -> Problem {
    Problem::new(Reason::TemplateError, path, e.to_string())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains(char::is_whitespace)
    })
}

/// One notification to send: which policy and receiver, and the exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub policy: u32,
    pub receiver: u32,
    pub body: Vec<u8>,
}

/// A delivery whose template failed at render time (e.g. a variable missing from this event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    pub policy: u32,
    pub receiver: u32,
    pub error: TemplateError,
}

/// All valid policies of one generation, indexed for matching.
pub struct PolicySet {
    engine: TemplateEngine,
    policies: Vec<CompiledPolicy>,
    by_id: HashMap<PolicyId, u32>,
    by_namespace: HashMap<String, Bucket>,
    any_namespace: Bucket,
    rejected: BTreeMap<PolicyId, Vec<Problem>>,
    cluster: String,
}

impl PolicySet {
    pub fn empty() -> PolicySet {
        PolicySetBuilder::new(&crate::SecretStore::default(), "", "default").build()
    }

    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    pub fn policy(&self, index: u32) -> &CompiledPolicy {
        &self.policies[index as usize]
    }

    pub fn receiver(&self, policy: u32, receiver: u32) -> &CompiledReceiver {
        &self.policies[policy as usize].receivers[receiver as usize]
    }

    pub fn find(&self, id: &PolicyId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Policies that failed validation, with every problem found.
    pub fn problems(&self) -> &BTreeMap<PolicyId, Vec<Problem>> {
        &self.rejected
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Indices of the policies that fire for this event, in policy-id order.
    pub fn matching(&self, input: &MatchInput<'_>) -> Vec<u32> {
        let mut candidates = Vec::new();
        if let Some(bucket) = self.by_namespace.get(&input.event.namespace) {
            bucket.candidates(&input.event.name, &mut candidates);
        }
        self.any_namespace
            .candidates(&input.event.name, &mut candidates);
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|i| self.policies[*i as usize].matches(input));
        candidates
    }

    /// Renders the deliveries for an event: through every matching policy, or only through
    /// `only` (a policy index) when given.
    pub fn deliveries(
        &self,
        input: &MatchInput<'_>,
        only: Option<u32>,
    ) -> Vec<Result<Delivery, RenderFailure>> {
        let matched = match only {
            Some(index) => {
                let policy = &self.policies[index as usize];
                if !policy.suspend && policy.matches(input) {
                    vec![index]
                } else {
                    Vec::new()
                }
            }
            None => self.matching(input),
        };
        if matched.is_empty() {
            return Vec::new();
        }
        let mut context = template::event_context(input.event, &self.cluster, input.canary);
        let mut out = Vec::new();
        for policy_index in matched {
            let policy = &self.policies[policy_index as usize];
            let policy_name = policy.id.to_string();
            for (receiver_index, receiver) in policy.receivers.iter().enumerate() {
                template::set_delivery(&mut context, &policy_name, &receiver.name);
                out.push(
                    self.render(receiver, input.event, &context)
                        .map(|body| Delivery {
                            policy: policy_index,
                            receiver: receiver_index as u32,
                            body,
                        })
                        .map_err(|error| RenderFailure {
                            policy: policy_index,
                            receiver: receiver_index as u32,
                            error,
                        }),
                );
            }
        }
        out
    }

    fn render(
        &self,
        receiver: &CompiledReceiver,
        event: &FlaggerEvent,
        context: &Context,
    ) -> Result<Vec<u8>, TemplateError> {
        if let ReceiverKind::Webhook(options) = &receiver.kind {
            return match options.body {
                None => Ok(event.to_json()),
                Some(id) => {
                    let body = self.engine.render(id, context)?;
                    serde_json::from_str::<serde_json::Value>(&body).map_err(|e| {
                        TemplateError {
                            line: None,
                            column: None,
                            reason: format!(
                                "body template rendered invalid JSON: {}",
                                crate::json_error_reason(&e)
                            ),
                        }
                    })?;
                    Ok(minify_json(&body).into_bytes())
                }
            };
        }
        let title = self.engine.render(receiver.title, context)?;
        let text = self.engine.render(receiver.text, context)?;
        let message = Message {
            title: &title,
            text: &text,
            event,
            cluster: &self.cluster,
        };
        Ok(match &receiver.kind {
            ReceiverKind::Slack(options) => payload::slack(options, &message),
            ReceiverKind::Teams(TeamsFormat::MessageCard) => payload::teams_message_card(&message),
            ReceiverKind::Teams(TeamsFormat::AdaptiveCard) => {
                payload::teams_adaptive_card(&message)
            }
            ReceiverKind::Webhook(_) => unreachable!("handled above"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::minify_json;

    #[test]
    fn minify_keeps_strings_and_key_order() {
        assert_eq!(
            minify_json("{\"z\": 1,\n \"a\": \"x y \\\" {\\n}\" , \"b\" : [ 1 , 2 ] }"),
            r#"{"z":1,"a":"x y \" {\n}","b":[1,2]}"#
        );
    }
}
