//! A generation of compiled policies: matching an event, and rendering its deliveries.

use std::collections::{BTreeMap, HashMap};

use handlebars::Context;

use super::compiled::{Bucket, CompiledPolicy, CompiledReceiver, MatchInput};
use super::{PolicyId, PolicySetBuilder, Problem};
use crate::escape::Markup;
use crate::event::{FlaggerEvent, Severity};
use crate::receivers::{Render as RenderBody, ThreadRef};
use crate::template::{self, TemplateEngine, TemplateError, TemplateId};

/// One notification to send: which policy and receiver, and the exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub policy: u32,
    pub receiver: u32,
    pub body: Vec<u8>,
    /// For receivers that thread rollouts (Slack bots, Google Chat): where this message goes.
    pub thread: Option<ThreadRef>,
    /// Appended to the receiver's URL for this notification ([`ReceiverKind::path`]).
    ///
    /// [`ReceiverKind::path`]: crate::receivers::ReceiverKind::path
    pub path: Option<String>,
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
    pub(super) engine: TemplateEngine,
    pub(super) policies: Vec<CompiledPolicy>,
    pub(super) by_id: HashMap<PolicyId, u32>,
    pub(super) by_namespace: HashMap<String, Bucket>,
    pub(super) any_namespace: Bucket,
    pub(super) rejected: BTreeMap<PolicyId, Vec<Problem>>,
    pub(super) cluster: String,
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
        let mut candidates = self.candidates(input.event);
        candidates.retain(|i| self.policies[*i as usize].matches(input));
        candidates
    }

    /// Indices of the policies the index finds for the event's namespace and canary name,
    /// in policy-id order, each once: a superset of the ones that select it.
    pub(super) fn candidates(&self, event: &FlaggerEvent) -> Vec<u32> {
        // Room for a typical number of candidates, so the list is not regrown as they are
        // found.
        let mut candidates = Vec::with_capacity(16);
        if let Some(bucket) = self.by_namespace.get(&event.namespace) {
            bucket.candidates(&event.name, &mut candidates);
        }
        self.any_namespace.candidates(&event.name, &mut candidates);
        candidates.sort_unstable();
        candidates.dedup();
        candidates
    }

    /// Renders the deliveries for an event: through every matching policy, or only through
    /// `only` (a policy index) when given.
    pub fn notifications(
        &self,
        input: &MatchInput<'_>,
        only: Option<u32>,
    ) -> Vec<Result<Notification, RenderFailure>> {
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
        let mut render = Render::new(self, input);
        let mut out = Vec::with_capacity(
            matched
                .iter()
                .map(|&i| self.policies[i as usize].receivers.len())
                .sum(),
        );
        for policy_index in matched {
            let policy = &self.policies[policy_index as usize];
            for receiver_index in 0..policy.receivers.len() as u32 {
                out.extend(self.render_receiver(&mut render, policy_index, receiver_index));
            }
        }
        out
    }

    /// Renders `input` for one receiver of one policy, whatever the policy matches (a
    /// notification posted again renders the event that opened it with the receiver as it is
    /// now); `None` when the receiver's kind sends nothing for the event.
    pub fn notification_for(
        &self,
        input: &MatchInput<'_>,
        policy: u32,
        receiver: u32,
    ) -> Option<Result<Notification, RenderFailure>> {
        let mut render = Render::new(self, input);
        self.render_receiver(&mut render, policy, receiver)
    }

    fn render_receiver(
        &self,
        render: &mut Render<'_>,
        policy_index: u32,
        receiver_index: u32,
    ) -> Option<Result<Notification, RenderFailure>> {
        let policy = &self.policies[policy_index as usize];
        let receiver = &policy.receivers[receiver_index as usize];
        let input = render.input;
        if !receiver.kind.wants(input.event) {
            return None;
        }
        Some(
            render
                .receiver(&policy.display, receiver)
                .map(|body| Notification {
                    policy: policy_index,
                    receiver: receiver_index,
                    body,
                    path: receiver.kind.path(input.event, &self.cluster),
                    thread: receiver.kind.thread_scope().map(|scope| {
                        crate::receivers::threads::thread_ref(scope, input.event, input.canary)
                    }),
                })
                .map_err(|error| RenderFailure {
                    policy: policy_index,
                    receiver: receiver_index,
                    error,
                }),
        )
    }
}

impl PolicySet {
    /// Renders one receiver's body for `input` with `body` (a kind's method), or `None`
    /// when `body` has nothing for it.
    pub(super) fn render_for(
        &self,
        input: &MatchInput<'_>,
        policy: &CompiledPolicy,
        receiver: &CompiledReceiver,
        body: impl FnOnce(
            &dyn crate::receivers::ReceiverKind,
            &mut dyn RenderBody,
        ) -> Option<Result<Vec<u8>, TemplateError>>,
    ) -> Option<Result<Vec<u8>, TemplateError>> {
        let mut render = Render::new(self, input);
        body(
            receiver.kind.as_ref(),
            &mut ReceiverRender {
                render: &mut render,
                policy: &policy.display,
                receiver,
            },
        )
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

impl<'a> Render<'a> {
    /// Nothing made yet: each costly part is made on first use.
    fn new(set: &'a PolicySet, input: &'a MatchInput<'a>) -> Self {
        Render {
            set,
            input,
            context: None,
            formatted: template::Formatted::default(),
            event_json: None,
        }
    }
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
        receiver.kind.body(&mut ReceiverRender {
            render: self,
            policy,
            receiver,
        })
    }
}

/// [`Render`] for one receiver's kind: its templates, this event.
struct ReceiverRender<'r, 'a> {
    render: &'r mut Render<'a>,
    policy: &'r str,
    receiver: &'r CompiledReceiver,
}

impl RenderBody for ReceiverRender<'_, '_> {
    fn title_and_text(&mut self, markup: Markup) -> Result<(String, String), TemplateError> {
        let (title, text) = (self.receiver.title, self.receiver.text);
        let title = self.template(title, markup)?;
        let text = self.template(text, markup)?;
        Ok((title, text))
    }

    fn template(&mut self, id: TemplateId, markup: Markup) -> Result<String, TemplateError> {
        self.render
            .template(id, self.policy, &self.receiver.name, markup)
    }

    fn event_json(&mut self) -> Vec<u8> {
        let event = self.render.input.event;
        self.render
            .event_json
            .get_or_insert_with(|| event.to_json())
            .clone()
    }

    fn severity(&mut self) -> Severity {
        self.render.formatted.severity(self.render.input.event)
    }

    fn event(&self) -> &FlaggerEvent {
        self.render.input.event
    }

    fn cluster(&self) -> &str {
        &self.render.set.cluster
    }

    fn canary(&self) -> Option<&crate::CanaryFacts> {
        self.render.input.canary
    }
}
