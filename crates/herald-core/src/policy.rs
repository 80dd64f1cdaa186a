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
use crate::payload::{
    self, DiscordOptions, Message, ReceiverKind, RocketChatOptions, SlackOptions, WebhookOptions,
};
use crate::request::{
    is_header_name, is_header_value, RequestSpec, Signature, SlackApi, ThreadRef,
};
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
    /// The globs that are plain wildcards, matched directly.
    wildcards: Vec<Wildcard>,
    /// The other globs (classes, alternatives, escapes).
    glob_set: Option<GlobSet>,
}

impl NameFilter {
    fn build(patterns: &[String], path: &str, problems: &mut Vec<Problem>) -> NameFilter {
        let mut filter = NameFilter::default();
        let mut builder = GlobSetBuilder::new();
        let mut complex = false;
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
                        match Wildcard::new(pattern) {
                            Some(wildcard) => filter.wildcards.push(wildcard),
                            None => {
                                builder.add(glob);
                                complex = true;
                            }
                        }
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
        if complex {
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
            || self.wildcards.iter().any(|w| w.is_match(name))
            || self.glob_set.as_ref().is_some_and(|set| set.is_match(name))
    }
}

/// A glob of literal characters, `*` and `?` only (what canary and namespace patterns nearly
/// always are), matched without a regular expression. Same answers as globset, which matches
/// bytes: `?` is any one byte, `*` any bytes (newlines and `/` included, as Herald builds its
/// globs with the default options).
#[derive(Debug, Clone)]
struct Wildcard(Box<str>);

impl Wildcard {
    /// `None` for a pattern with anything else globset gives a meaning to.
    fn new(pattern: &str) -> Option<Wildcard> {
        let plain = !pattern.contains(['[', ']', '{', '}', '\\', '/']) && !pattern.contains("**");
        plain.then(|| Wildcard(pattern.into()))
    }

    /// The literal text before the first wildcard.
    fn prefix(&self) -> &str {
        &self.0[..self.0.find(['*', '?']).unwrap_or(self.0.len())]
    }

    /// The literal text after the last wildcard.
    fn suffix(&self) -> &str {
        &self.0[self.0.rfind(['*', '?']).map_or(0, |i| i + 1)..]
    }

    fn is_match(&self, name: &str) -> bool {
        wildcard_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// Whole-text wildcard matching: `*` any bytes, `?` one byte, the rest literally. Greedy with
/// backtracking to the last `*`, which is complete for these two wildcards.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
    /// Method, headers, credentials; for Slack bots the Web API details.
    pub request: RequestSpec,
    /// Set when the receiver threads rollouts: names its threads (see `ThreadRef::scope`).
    pub thread_scope: Option<String>,
    title: TemplateId,
    text: TemplateId,
}

/// A policy that passed validation.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    /// `id` as templates see it (`{{policy}}`), formatted once.
    display: String,
    pub generation: Option<i64>,
    pub suspend: bool,
    /// `spec.repeatInterval` in milliseconds: a repeated message is sent at most once per
    /// interval (see `repeats`). `None` (or zero) sends every repeat.
    pub repeat_interval_ms: Option<u64>,
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
struct Bucket {
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
    fn add(&mut self, index: u32, policy: &CompiledPolicy) {
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

    fn finish(&mut self) {
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

    fn candidates(&self, canary: &str, out: &mut Vec<u32>) {
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
        check_label_keys(rules.match_labels, "spec.matchLabels", &mut problems);
        let namespaces = object.namespace_selector().map(|selector| {
            check_label_keys(
                &selector.match_labels,
                "spec.namespaceSelector.matchLabels",
                &mut problems,
            );
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
        let repeat_interval_ms =
            rules
                .repeat_interval
                .and_then(|text| match crate::repeats::parse_interval(text) {
                    Ok(0) => {
                        // Zero would hold nothing back: say so rather than ignore it.
                        problems.push(Problem::new(
                            Reason::InvalidSpec,
                            "spec.repeatInterval",
                            format!("{text:?} is zero: give a longer interval, or leave repeatInterval unset to send every repeat"),
                        ));
                        None
                    }
                    Ok(ms) => Some(ms),
                    Err(e) => {
                        problems.push(Problem::new(Reason::InvalidSpec, "spec.repeatInterval", e));
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
            if let Some((kind, url, request)) =
                self.compile_kind(receiver, &path, &secret_namespace, &mut problems)
            {
                let thread_scope = match &kind {
                    ReceiverKind::GoogleChat { threads: true } => Some(format!(
                        "googlechat/{}",
                        crate::request::fingerprint(url.expose())
                    )),
                    _ => request
                        .slack_api
                        .as_ref()
                        .filter(|api| api.threads)
                        .map(SlackApi::thread_scope),
                };
                receivers.push(CompiledReceiver {
                    name: receiver.name.clone(),
                    kind,
                    url,
                    request,
                    thread_scope,
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
    ) -> Option<(ReceiverKind, Redacted, RequestSpec)> {
        if receiver.kinds_set().len() != 1 {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                path,
                "a receiver sets exactly one of slack, msteams, webhook, discord, googlechat, rocketchat",
            ));
            return None;
        }
        let mut request = RequestSpec::default();
        let (kind, address, field) = if let Some(slack) = &receiver.slack {
            let options = SlackOptions {
                channel: slack.channel.clone(),
                username: slack.username.clone(),
                icon_emoji: slack.icon_emoji.clone(),
                icon_url: slack.icon_url.clone(),
            };
            let field = format!("{path}.slack");
            if let Some(token) = &slack.token_secret_ref {
                return self.compile_slack_bot(
                    slack,
                    token,
                    options,
                    &field,
                    secret_namespace,
                    problems,
                );
            }
            for (set, option) in [
                (slack.api_url.is_some(), "apiUrl"),
                (slack.threads.is_some(), "threads"),
            ] {
                if set {
                    problems.push(Problem::new(
                        Reason::InvalidSpec,
                        format!("{field}.{option}"),
                        "only applies to a bot token (tokenSecretRef); an incoming webhook cannot thread",
                    ));
                }
            }
            if matches!(slack.address(), AddressRef::Invalid) {
                // Slack has a third address, the bot token: name it too.
                problems.push(Problem::new(Reason::InvalidSpec, field, SLACK_ONE_ADDRESS));
                return None;
            }
            (ReceiverKind::Slack(options), slack.address(), field)
        } else if let Some(teams) = &receiver.msteams {
            // An unset format is detected from the URL once it is resolved, below.
            (
                ReceiverKind::Teams(teams.format.unwrap_or_default()),
                teams.address(),
                format!("{path}.msteams"),
            )
        } else if let Some(discord) = &receiver.discord {
            check_discord(discord, &format!("{path}.discord"), problems);
            let options = DiscordOptions {
                username: discord.username.clone(),
                avatar_url: discord.avatar_url.clone(),
            };
            (
                ReceiverKind::Discord(options),
                discord.address(),
                format!("{path}.discord"),
            )
        } else if let Some(googlechat) = &receiver.googlechat {
            (
                ReceiverKind::GoogleChat {
                    threads: googlechat.threads.unwrap_or(true),
                },
                googlechat.address(),
                format!("{path}.googlechat"),
            )
        } else if let Some(rocketchat) = &receiver.rocketchat {
            let options = RocketChatOptions {
                channel: rocketchat.channel.clone(),
                username: rocketchat.username.clone(),
                icon_emoji: rocketchat.icon_emoji.clone(),
                icon_url: rocketchat.icon_url.clone(),
            };
            (
                ReceiverKind::RocketChat(options),
                rocketchat.address(),
                format!("{path}.rocketchat"),
            )
        } else {
            let webhook = receiver.webhook.as_ref().expect("exactly one kind is set");
            let field = format!("{path}.webhook");
            let body = match &webhook.body {
                Some(source) => {
                    Some(self.compile_json_body(source, &format!("{field}.body"), problems)?)
                }
                None => None,
            };
            request = self.compile_webhook_request(webhook, &field, secret_namespace, problems)?;
            (
                ReceiverKind::Webhook(WebhookOptions { body }),
                webhook.address(),
                field,
            )
        };
        let url = self.resolve_address(address, &field, secret_namespace, problems)?;
        let url = match &kind {
            ReceiverKind::GoogleChat { threads: true } => with_reply_option(url),
            _ => url,
        };
        let kind = match (&receiver.msteams, kind) {
            (Some(teams), ReceiverKind::Teams(_)) if teams.format.is_none() => {
                ReceiverKind::Teams(TeamsFormat::detect(url.expose()))
            }
            (_, kind) => kind,
        };
        Some((kind, url, request))
    }

    /// A Slack bot: the token from its Secret, the Web API's URLs, the thread settings.
    fn compile_slack_bot(
        &self,
        slack: &herald_api::SlackReceiver,
        token: &herald_api::SecretKeyRef,
        options: SlackOptions,
        path: &str,
        secret_namespace: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<(ReceiverKind, Redacted, RequestSpec)> {
        let mut valid = true;
        if slack.url.is_some() || slack.secret_ref.is_some() {
            problems.push(Problem::new(Reason::InvalidSpec, path, SLACK_ONE_ADDRESS));
            valid = false;
        }
        let channel = slack.channel.clone().unwrap_or_default();
        if channel.is_empty() {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                format!("{path}.channel"),
                "a bot token (tokenSecretRef) needs a channel",
            ));
            valid = false;
        }
        let api = slack
            .api_url
            .as_deref()
            .unwrap_or(herald_api::SLACK_API_URL)
            .trim_end_matches('/')
            .to_owned();
        if !is_http_url(&api) {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                format!("{path}.apiUrl"),
                "must be an http:// or https:// URL with a host",
            ));
            valid = false;
        }
        let token = self.token_value(
            token,
            &format!("{path}.tokenSecretRef"),
            secret_namespace,
            problems,
        )?;
        if !valid {
            return None;
        }
        let request = RequestSpec {
            slack_api: Some(SlackApi {
                update_url: format!("{api}/chat.update"),
                channel,
                threads: slack.threads.unwrap_or(true),
                rate_limit_group: crate::request::fingerprint(&format!(
                    "{api}\n{}",
                    token.expose()
                )),
            }),
            bearer_token: Some(token),
            ..RequestSpec::default()
        };
        Some((
            ReceiverKind::Slack(options),
            Redacted::new(format!("{api}/chat.postMessage")),
            request,
        ))
    }

    /// A webhook's method, headers, bearer token and signing key.
    fn compile_webhook_request(
        &self,
        webhook: &herald_api::WebhookReceiver,
        path: &str,
        secret_namespace: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<RequestSpec> {
        let before = problems.len();
        // Headers the HTTP client sets itself, or that would garble the request.
        const MANAGED: [&str; 5] = [
            "content-length",
            "host",
            "transfer-encoding",
            "connection",
            "te",
        ];
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in &webhook.headers {
            let lower = name.to_ascii_lowercase();
            let conflict = if MANAGED.contains(&lower.as_str()) {
                Some(format!("{name:?} is set by Herald's HTTP client"))
            } else if seen.contains(&lower) {
                Some(format!(
                    "{name:?} is given twice (header names ignore case)"
                ))
            } else if lower == "authorization" && webhook.bearer_token_secret_ref.is_some() {
                Some("Authorization is set by bearerTokenSecretRef".to_owned())
            } else {
                None
            };
            seen.push(lower);
            if let Some(conflict) = conflict {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.headers.{name}"),
                    conflict,
                ));
                continue;
            }
            if !is_header_name(name) {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.headers"),
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            } else if !is_header_value(value) {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.headers.{name}"),
                    "a header value must be one line of visible ASCII",
                ));
            }
        }
        let bearer_token = webhook.bearer_token_secret_ref.as_ref().and_then(|secret| {
            self.token_value(
                secret,
                &format!("{path}.bearerTokenSecretRef"),
                secret_namespace,
                problems,
            )
        });
        let signature = webhook.signature.as_ref().and_then(|signature| {
            let header = signature.header.as_deref().unwrap_or("X-Signature");
            let lower = header.to_ascii_lowercase();
            let taken = seen.contains(&lower)
                || MANAGED.contains(&lower.as_str())
                || lower == "content-type"
                || (lower == "authorization" && webhook.bearer_token_secret_ref.is_some());
            if !is_header_name(header) || taken {
                let why = if taken {
                    format!("{header:?} is already sent with another value")
                } else {
                    format!("{header:?} is not a valid HTTP header name")
                };
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.signature.header"),
                    why,
                ));
                return None;
            }
            let key = self.secret_value(
                &signature.secret_ref,
                herald_api::DEFAULT_SIGNING_KEY,
                &format!("{path}.signature.secretRef"),
                secret_namespace,
                problems,
            )?;
            if key.expose().is_empty() {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}.signature.secretRef"),
                    "the signing key is empty",
                ));
                return None;
            }
            Some(Signature {
                header: header.to_owned(),
                key,
            })
        });
        if problems.len() > before {
            return None;
        }
        Some(RequestSpec {
            method: webhook.method.unwrap_or_default(),
            headers: webhook
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            bearer_token,
            signature,
            slack_api: None,
        })
    }

    /// A token sent in an `Authorization` header (key `token` unless the reference names
    /// one): it must be one non-empty line of visible ASCII.
    fn token_value(
        &self,
        secret: &herald_api::SecretKeyRef,
        path: &str,
        secret_namespace: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Redacted> {
        let token = self.secret_value(
            secret,
            herald_api::DEFAULT_TOKEN_KEY,
            path,
            secret_namespace,
            problems,
        )?;
        if token.expose().is_empty() || !is_header_value(token.expose()) {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                path,
                "the token must be one line of visible ASCII",
            ));
            return None;
        }
        Some(token)
    }

    /// A value from a Secret key (`default_key` when the reference names none), without the
    /// line break `kubectl create secret --from-file` keeps at the end of a file.
    fn secret_value(
        &self,
        secret: &herald_api::SecretKeyRef,
        default_key: &str,
        path: &str,
        secret_namespace: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Redacted> {
        match self
            .secrets
            .secret_value(secret_namespace, &secret.name, secret.key_or(default_key))
        {
            Ok(value) => Some(Redacted::new(value.trim_end_matches(['\n', '\r']))),
            Err(e) => {
                let reason = match e {
                    SecretError::NotText { .. } => Reason::InvalidSpec,
                    _ => Reason::SecretNotFound,
                };
                problems.push(Problem::new(reason, path, e.to_string()));
                None
            }
        }
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
        if let Err(e) = check_json(&rendered) {
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
                let url = self.secret_value(
                    secret,
                    herald_api::DEFAULT_SECRET_KEY,
                    &field,
                    secret_namespace,
                    problems,
                )?;
                (url.expose().to_owned(), field)
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
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            // A string, copied whole through its closing quote (or to the end).
            let start = i;
            i += 1;
            while i < bytes.len() {
                // Eight bytes without a quote or a backslash are passed over at once;
                // otherwise the next eight are looked at one by one.
                if let Some(chunk) = bytes.get(i..i + 8) {
                    let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                    if !crate::payload::json::may_need_escape(word) {
                        i += 8;
                        continue;
                    }
                }
                let window = i + 8;
                while i < window.min(bytes.len()) {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if bytes.get(i) == Some(&b'"') {
                    i += 1;
                    break;
                }
            }
            out.push_str(&json[start..i.min(bytes.len())]);
        } else if b.is_ascii() {
            if !char::from(b).is_whitespace() {
                out.push(char::from(b));
            }
            i += 1;
        } else {
            let c = json[i..].chars().next().expect("i is on a char boundary");
            if !c.is_whitespace() {
                out.push(c);
            }
            i += c.len_utf8();
        }
    }
    out
}

fn check_label_keys(labels: &BTreeMap<String, String>, path: &str, problems: &mut Vec<Problem>) {
    for key in labels.keys() {
        if let Some(why) = crate::labels::label_key_error(key) {
            problems.push(Problem::new(Reason::InvalidSpec, path, why));
        }
    }
}

/// A Slack receiver's address: an incoming webhook (inline or from a Secret) or a bot token.
const SLACK_ONE_ADDRESS: &str = "set exactly one of url, secretRef, tokenSecretRef";

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

/// What Discord refuses (with `400 Invalid Form Body`, on every message) in a webhook's
/// overrides: a user name of 1 to 80 characters without "discord" or "clyde" in it and not
/// "everyone" or "here"; an avatar that is not a web URL.
fn check_discord(discord: &herald_api::DiscordReceiver, path: &str, problems: &mut Vec<Problem>) {
    if let Some(username) = &discord.username {
        let lower = username.to_lowercase();
        let length = username.chars().count();
        let why = if length == 0 || length > 80 {
            Some(format!("must be 1 to 80 characters, not {length}"))
        } else if let Some(word) = ["discord", "clyde"].into_iter().find(|w| lower.contains(w)) {
            Some(format!("Discord refuses user names containing {word:?}"))
        } else if lower == "everyone" || lower == "here" {
            Some(format!("Discord refuses the user name {username:?}"))
        } else {
            None
        };
        if let Some(why) = why {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                format!("{path}.username"),
                why,
            ));
        }
    }
    if let Some(avatar) = &discord.avatar_url {
        if !is_http_url(avatar) {
            problems.push(Problem::new(
                Reason::InvalidSpec,
                format!("{path}.avatarUrl"),
                "must be an http:// or https:// URL with a host",
            ));
        }
    }
}

/// A Google Chat webhook URL that replies in the thread a message names (by default Chat
/// starts a new thread and ignores the key). Left as it is if it already says.
fn with_reply_option(url: Redacted) -> Redacted {
    let address = url.expose();
    if address.contains("messageReplyOption=") {
        return url;
    }
    let (base, fragment) = match address.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (address, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut out =
        format!("{base}{separator}messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Redacted::new(out)
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
    /// For receivers that thread rollouts (Slack bots, Google Chat): where this message goes.
    pub thread: Option<ThreadRef>,
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
        // Room for a typical number of candidates, so the list is not regrown as they are
        // found.
        let mut candidates = Vec::with_capacity(16);
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
        let mut render = Render {
            set: self,
            input,
            context: None,
            formatted: template::Formatted::default(),
            event_json: None,
        };
        let mut out = Vec::with_capacity(
            matched
                .iter()
                .map(|&i| self.policies[i as usize].receivers.len())
                .sum(),
        );
        for policy_index in matched {
            let policy = &self.policies[policy_index as usize];
            for (receiver_index, receiver) in policy.receivers.iter().enumerate() {
                out.push(
                    render
                        .receiver(&policy.display, receiver)
                        .map(|body| Delivery {
                            policy: policy_index,
                            receiver: receiver_index as u32,
                            body,
                            thread: receiver.thread_scope.as_deref().map(|scope| {
                                crate::request::thread_ref(scope, input.event, input.canary)
                            }),
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
}

/// Renders the notifications of one event. What is costly and the same for all of them is
/// made once, and only when needed: the handlebars context (templates that only use the
/// event's own variables are rendered without it), the formatted variables (`time`...) and
/// the severity, and Flagger's event JSON.
struct Render<'a> {
    set: &'a PolicySet,
    input: &'a MatchInput<'a>,
    context: Option<Context>,
    /// The event's formatted template variables, made once for all its templates.
    formatted: template::Formatted,
    event_json: Option<Vec<u8>>,
}

impl Render<'_> {
    fn template(
        &mut self,
        id: TemplateId,
        policy: &str,
        receiver: &str,
        markup: template::Markup,
    ) -> Result<String, TemplateError> {
        let engine = &self.set.engine;
        let vars = template::Vars {
            event: self.input.event,
            cluster: &self.set.cluster,
            policy,
            receiver,
        };
        if let Some(out) = engine.render_direct_with(id, &vars, &self.formatted, markup) {
            return Ok(out);
        }
        let context = self.context.get_or_insert_with(|| {
            template::event_context(self.input.event, &self.set.cluster, self.input.canary)
        });
        template::set_delivery(context, policy, receiver);
        engine.render_as(id, context, markup)
    }

    fn receiver(
        &mut self,
        policy: &str,
        receiver: &CompiledReceiver,
    ) -> Result<Vec<u8>, TemplateError> {
        let event = self.input.event;
        if let ReceiverKind::Webhook(options) = &receiver.kind {
            return match options.body {
                None => Ok(self
                    .event_json
                    .get_or_insert_with(|| event.to_json())
                    .clone()),
                Some(id) => {
                    let body =
                        self.template(id, policy, &receiver.name, template::Markup::Plain)?;
                    check_json(&body).map_err(|e| {
                        let reason = crate::json_error_reason(&e);
                        TemplateError {
                            line: None,
                            column: None,
                            reason: if reason.starts_with(DUPLICATE_KEY) {
                                format!(
                                    "body template rendered an object with a {reason}: refused (a value inside a JSON string can add keys; insert values with {{{{json ...}}}})"
                                )
                            } else {
                                format!("body template rendered invalid JSON: {reason}")
                            },
                        }
                    })?;
                    Ok(minify_json(&body).into_bytes())
                }
            };
        }
        // What the event puts in the title and text is escaped for the receiver's markup.
        let markup = template::Markup::for_kind(&receiver.kind);
        let title = self.template(receiver.title, policy, &receiver.name, markup)?;
        let text = self.template(receiver.text, policy, &receiver.name, markup)?;
        let message = Message {
            title: &title,
            text: &text,
            event,
            cluster: &self.set.cluster,
        };
        let severity = self.formatted.severity(event);
        Ok(match &receiver.kind {
            ReceiverKind::Slack(options) => payload::slack_as(options, &message, severity),
            ReceiverKind::Teams(TeamsFormat::MessageCard) => {
                payload::teams_message_card_as(&message, severity)
            }
            ReceiverKind::Teams(TeamsFormat::AdaptiveCard) => {
                payload::teams_adaptive_card_as(&message, severity)
            }
            ReceiverKind::Discord(options) => payload::discord(options, &message),
            // The thread is added when the message is sent: it depends on the canary's
            // current thread.
            ReceiverKind::GoogleChat { .. } => payload::google_chat(&message),
            ReceiverKind::RocketChat(options) => payload::rocket_chat(options, &message),
            ReceiverKind::Webhook(_) => unreachable!("handled above"),
        })
    }
}

/// Checks that `text` is one JSON value, accepting and rejecting exactly what parsing it into
/// a `serde_json::Value` does (same parser, same errors), without building the value.
fn check_json(text: &str) -> Result<(), serde_json::Error> {
    // With serde_json's `raw_value` feature a `Value` treats this one object key specially;
    // leave such (odd) bodies to `Value` itself.
    // (Looking for the `$` first is quicker, and a text without one cannot have the key.)
    if text.contains('$') && text.contains("$serde_json::private::") {
        serde_json::from_str::<serde_json::Value>(text)?;
    }
    serde_json::from_str::<AnyJson>(text).map(drop)
}

/// The start of [`check_json`]'s error for an object with a key twice.
const DUPLICATE_KEY: &str = "duplicate key ";

/// An object key, borrowed from the text when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, read and dropped; an object with a key twice is an error (receivers
/// disagree on which one wins, and a value that adds a key can override the template's).
struct AnyJson;

impl<'de> serde::Deserialize<'de> for AnyJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJsonVisitor)
    }
}

struct AnyJsonVisitor;

impl<'de> serde::de::Visitor<'de> for AnyJsonVisitor {
    type Value = AnyJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyJson, A::Error> {
        // A few keys are compared one by one; a larger object gets a hash set, so a value
        // that adds thousands of keys costs linear time.
        let mut few: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        let mut many: std::collections::HashSet<std::borrow::Cow<'de, str>> =
            std::collections::HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let duplicate = if many.is_empty() && few.len() < 16 {
                few.contains(&key)
            } else {
                many.extend(few.drain(..));
                many.contains(&key)
            };
            if duplicate {
                return Err(serde::de::Error::custom(format_args!(
                    "{DUPLICATE_KEY}{key:?}"
                )));
            }
            if many.is_empty() {
                few.push(key);
            } else {
                many.insert(key);
            }
            map.next_value::<AnyJson>()?;
        }
        Ok(AnyJson)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_json, minify_json, Wildcard};
    use globset::Glob;

    /// Plain wildcards are matched as globset matches them.
    #[test]
    fn wildcards_match_like_globset() {
        let patterns = [
            "team-*-api",
            "team-*",
            "*-api",
            "*",
            "?",
            "??",
            "a?c",
            "*a*",
            "a*b*c",
            "*a*a",
            "app-1-*",
            "svc-1-?",
            "pay*",
            "*é*",
            "p?ay",
            "é?",
            "x*",
            "*x",
            "-*-",
        ];
        let names = [
            "",
            "a",
            "ac",
            "abc",
            "abbc",
            "aXbYc",
            "aa",
            "aaa",
            "team-payments-api",
            "team-api",
            "team--api",
            "team-a-api-x",
            "x-api",
            "api",
            "app-1-",
            "app-1-x",
            "app-10",
            "svc-1-a",
            "svc-1-ab",
            "payments",
            "pay",
            "é",
            "éa",
            "aé",
            "p\u{e9}ay",
            "pxay",
            "a\nb",
            "x\ny",
            "-a-",
            "--",
            "---",
        ];
        for pattern in patterns {
            let wildcard = Wildcard::new(pattern).expect("a plain wildcard");
            let glob = Glob::new(pattern).unwrap().compile_matcher();
            for name in names {
                assert_eq!(
                    wildcard.is_match(name),
                    glob.is_match(name),
                    "{pattern:?} on {name:?}"
                );
            }
        }
        for complex in ["[ab]*", "{a,b}*", "a\\*", "a/**", "**", "a**"] {
            assert!(Wildcard::new(complex).is_none(), "{complex}");
        }
        let w = Wildcard::new("team-*-api").unwrap();
        assert_eq!((w.prefix(), w.suffix()), ("team-", "-api"));
        let w = Wildcard::new("*x?").unwrap();
        assert_eq!((w.prefix(), w.suffix()), ("", ""));
    }

    /// The JSON check accepts and rejects what parsing into a `Value` does, with the same
    /// error.
    #[test]
    fn json_check_is_value_parsing() {
        for text in [
            "{}",
            "[]",
            "1",
            "-1.5e3",
            "1e400",
            "18446744073709551616",
            "\"x\"",
            "null",
            "true",
            "{\"a\": [1, {\"b\": null}], \"b\": 2}",
            "{\"a\" 1}",
            "{\"a\": 1,}",
            "[1 2]",
            "",
            " ",
            "{\"a\": 1} x",
            "\"\\q\"",
            "\"\u{1}\"",
            "{1: 2}",
            "[",
            "nul",
            "{\"$serde_json::private::RawValue\": \"1\"}",
            "{\"$serde_json::private::RawValue\": \"x\"}",
        ] {
            let by_value = serde_json::from_str::<serde_json::Value>(text)
                .map(drop)
                .map_err(|e| e.to_string());
            assert_eq!(
                check_json(text).map_err(|e| e.to_string()),
                by_value,
                "{text:?}"
            );
        }
        // Unlike `Value` (where the last one wins), a key twice in one object is refused, at
        // any depth, however it is escaped; the same key in different objects is not.
        for text in [
            "{\"a\": [1, {\"b\": null}], \"a\": 2}",
            "[{\"x\": {\"k\": 1, \"k\": 2}}]",
            "{\"\\u0061\": 1, \"a\": 2}",
        ] {
            let err = check_json(text).unwrap_err().to_string();
            assert!(err.starts_with(super::DUPLICATE_KEY), "{text}: {err}");
        }
        assert_eq!(
            check_json("{\"a\": {\"a\": {\"a\": 1}}, \"b\": [{\"a\": 1}, {\"a\": 2}]}")
                .map_err(|e| e.to_string()),
            Ok(())
        );
        // Many keys: compared through a set, and a duplicate far in is still found.
        let many: Vec<String> = (0..1000).map(|i| format!("\"k{i}\": {i}")).collect();
        let object = format!("{{{}}}", many.join(","));
        assert!(check_json(&object).is_ok());
        let object = format!("{{{}, \"k500\": 0}}", many.join(","));
        assert!(check_json(&object)
            .unwrap_err()
            .to_string()
            .starts_with("duplicate key \"k500\""));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            check_json(&deep).map_err(|e| e.to_string()),
            serde_json::from_str::<serde_json::Value>(&deep)
                .map(drop)
                .map_err(|e| e.to_string())
        );
    }

    /// The first, char-by-char minifier: the faster one must give the same output.
    fn reference_minify(json: &str) -> String {
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

    #[test]
    fn minify_is_the_reference_minify() {
        for json in [
            "",
            " { \"a\" : [ 1 ,\t2 ] ,\r\n \"b\\\"c\" : \"x y\" } ",
            "{\"é\": \"\\é ü \",\u{a0}\"k\":\u{2003}1\u{3000}}",
            "\"unterminated \\",
            "\"ends in escape\\",
            "[\"a\\\\\", \"b\"]\u{b}\u{c}\u{85}x",
        ] {
            assert_eq!(minify_json(json), reference_minify(json), "{json:?}");
        }
    }

    /// Long strings (passed over eight bytes at a time) with quotes, escapes and multi-byte
    /// characters at every position.
    #[test]
    fn minify_is_the_reference_minify_for_long_strings() {
        for special in [
            "\\\"", "\\\\", "\\n", "\\u00e9", "é", "\\é", " ", "\u{3000}",
        ] {
            for len in 0..20 {
                for at in 0..=len {
                    let mut text = "x".repeat(len);
                    text.insert_str(at, special);
                    for json in [
                        format!("{{ \"{text}\" : [ \"{text}\" ,\n\"{text}\" ] }}"),
                        format!("\"{text}"),
                        format!("[ \"{text}\\"),
                    ] {
                        assert_eq!(minify_json(&json), reference_minify(&json), "{json:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn minify_keeps_strings_and_key_order() {
        assert_eq!(
            minify_json("{\"z\": 1,\n \"a\": \"x y \\\" {\\n}\" , \"b\" : [ 1 , 2 ] }"),
            r#"{"z":1,"a":"x y \" {\n}","b":[1,2]}"#
        );
    }
}
