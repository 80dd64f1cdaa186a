//! Receiver kinds. Each kind is one file (or folder) holding everything about it: how its
//! settings are validated and compiled, its body, the plan of requests that deliver one
//! notification, and how its service's answer reads. They all implement [`ReceiverKind`];
//! the delivery engine runs plans and knows no kind. [`compile`] is the one place that maps
//! the list of kinds (`herald_api::RECEIVER_KINDS`) to their files.
//!
//! Adding a kind: its settings in `herald-api/src/receivers/<kind>.rs` and one line in that
//! crate's list; its behaviour in `<kind>.rs` here and one arm in [`compile`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use herald_api::{Receiver, ReceiverKindSpec};

use crate::escape::Markup;
use crate::event::{FlaggerEvent, Severity};
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::{TemplateError, TemplateId};

pub mod alertmanager;
pub mod discord;
pub mod googlechat;
pub mod grafana;
pub mod http;
pub(crate) mod json;
pub mod lifecycle;
pub mod mattermost;
mod message;
pub mod msteams;
pub mod opsgenie;
pub mod pagerduty;
pub mod rocketchat;
pub mod slack;
pub mod telegram;
pub mod threads;
pub mod webex;
pub mod webhook;

pub use http::{Header, RequestSpec, Signature};
#[cfg(test)]
pub(crate) use message::test_support;
pub(crate) use message::{
    buffer, fit_body, limit, limit_chars, limit_cow, rgb, to_json, utf16_len,
};
pub use message::{Message, TRUNCATION_NOTE};
pub use threads::{ThreadAction, ThreadParent, ThreadRef};

/// One receiver kind, compiled from a receiver's settings.
pub trait ReceiverKind: fmt::Debug + Send + Sync + 'static {
    /// Whether this event gets a notification at all. The policy picks the events; a kind
    /// with a lifecycle (an incident opened by a failure, resolved by the next success) has
    /// nothing to say about the events in between, and sends nothing for them rather than a
    /// request its service would misread (see [`lifecycle::transition`]). Consulted before
    /// the body is rendered.
    fn wants(&self, _event: &FlaggerEvent) -> bool {
        true
    }

    /// A path (and query) appended to the receiver's URL for this event's notification, for
    /// a kind whose service takes different notifications at different URLs (Opsgenie closes
    /// an alert at `/<alias>/close`). `None`: the receiver's URL. Never a credential: `herald
    /// render` shows it. The request stays in the receiver's queue, so it keeps its order.
    fn path(&self, _event: &FlaggerEvent, _cluster: &str) -> Option<String> {
        None
    }

    /// The body of one notification.
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError>;

    /// For a kind whose service forgets what it was told unless told again (Alertmanager
    /// ends an alert `resolve_timeout` after it last heard of it): whether this event's
    /// notification is to be posted again, unchanged, while the canary's rollout stays open,
    /// or ends such repeats. Most kinds say each thing once.
    fn keeps_open(&self, _event: &FlaggerEvent) -> KeepOpen {
        KeepOpen::Leave
    }

    /// Names the receiver's rollout threads when it keeps one per rollout (see
    /// [`ThreadRef::scope`]).
    fn thread_scope(&self) -> Option<&str> {
        None
    }

    /// The requests that deliver one notification with this `body`, given the message's
    /// thread and the canary's current one (for kinds with a
    /// [`thread_scope`](Self::thread_scope)). Most kinds post the body as it is.
    fn plan(
        &self,
        _body: &[u8],
        _thread: Option<&ThreadRef>,
        _current: Option<&ThreadParent>,
    ) -> Plan {
        Plan::post("message")
    }

    /// Reads the service's answer to a request that got a `2xx` status, for kinds whose
    /// service says more than the status does (see [`reads_answer`](Self::reads_answer)).
    fn read_answer(&self, _body: &[u8]) -> Answer {
        Answer::Delivered { posted: None }
    }

    /// How long a `429` asks to wait, for a service that says so in the answer's body rather
    /// than a `Retry-After` header (a `retry_after` field). The header wins.
    fn retry_after(&self, _body: &[u8]) -> Option<std::time::Duration> {
        None
    }

    /// Whether a `2xx` answer's body is read ([`read_answer`](Self::read_answer)).
    fn reads_answer(&self) -> bool {
        false
    }

    /// The `Content-Type` of every request.
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    /// Requests to one URL are queued, in order, by URL; a kind whose receivers share a URL
    /// (a Web API) queues by URL and this.
    fn queue(&self) -> Option<&str> {
        None
    }

    /// Who a `429` pauses: the receivers sharing this group, else the queue.
    fn rate_limit_group(&self) -> Option<&str> {
        None
    }

    /// The body of an ask for a gate decision, for a kind that puts buttons on it (Slack
    /// bots). `None`: the kind renders the ask as any event, whose message carries signed
    /// links.
    fn ask_body(
        &self,
        _render: &mut dyn Render,
        _buttons: &AskButtons<'_>,
    ) -> Option<Result<Vec<u8>, TemplateError>> {
        None
    }

    /// For tests and tools that inspect a compiled kind.
    fn as_any(&self) -> &dyn Any;
}

/// What a notification does to the repeats of the canary's open one (see
/// [`ReceiverKind::keeps_open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepOpen {
    /// Post this notification again every interval until a later one closes it; it replaces
    /// the one repeated so far.
    Repeat(std::time::Duration),
    /// The canary's open notification is closed: stop repeating it.
    Close,
    /// Nothing to do with repeats.
    Leave,
}

/// What the buttons of an ask decide, and who may press them.
pub struct AskButtons<'a> {
    pub value: crate::gates::slack::ButtonValue,
    pub approvers: &'a herald_api::Approvers,
    /// What waits: "promotion".
    pub what: &'static str,
}

/// What a kind renders its body from: the event, and the receiver's templates rendered on
/// demand (what is the same for every notification of the event is made once).
pub trait Render {
    /// The receiver's title and text, with the event's values escaped for `markup`.
    fn title_and_text(&mut self, markup: Markup) -> Result<(String, String), TemplateError>;
    /// Another template of the receiver's (e.g. a webhook's body), escaped for `markup`.
    fn template(&mut self, id: TemplateId, markup: Markup) -> Result<String, TemplateError>;
    /// Flagger's event JSON.
    fn event_json(&mut self) -> Vec<u8>;
    /// The event's severity.
    fn severity(&mut self) -> Severity;
    fn event(&self) -> &FlaggerEvent;
    /// The cluster's name, empty when it has none.
    fn cluster(&self) -> &str;
    /// The Canary's status as a watched cluster shows it (weight, failed checks); `None`
    /// for an event that came over HTTP alone.
    fn canary(&self) -> Option<&crate::CanaryFacts>;
}

/// The body of a chat kind: the receiver's title and text in `markup`, laid out by `build`.
pub fn chat_body(
    render: &mut dyn Render,
    markup: Markup,
    build: impl FnOnce(&Message<'_>, Severity) -> Vec<u8>,
) -> Result<Vec<u8>, TemplateError> {
    let (title, text) = render.title_and_text(markup)?;
    let severity = render.severity();
    let message = Message {
        title: &title,
        text: &text,
        event: render.event(),
        cluster: render.cluster(),
    };
    Ok(build(&message, severity))
}

/// The requests that deliver one notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The notification itself: its outcome is the notification's.
    pub request: Request,
    /// What becomes the canary's thread once the request is delivered.
    pub keep: KeepThread,
    /// Sent once the notification is delivered; a failure is only logged (the notification
    /// was delivered).
    pub follow_up: Option<Request>,
}

impl Plan {
    /// The rendered body, posted to the receiver's URL.
    pub fn post(name: &'static str) -> Plan {
        Plan {
            request: Request {
                name,
                url: None,
                body: None,
                method: None,
            },
            keep: KeepThread::Nothing,
            follow_up: None,
        }
    }
}

/// One HTTP request of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Names the request in logs (`message`, `chat.update`).
    pub name: &'static str,
    /// `None`: the receiver's URL.
    pub url: Option<Redacted>,
    /// `None`: the notification's body as rendered.
    pub body: Option<Vec<u8>>,
    /// `None`: the receiver's method (`POST` unless a webhook says otherwise).
    pub method: Option<herald_api::HttpMethod>,
}

/// What a delivered request makes the canary's thread.
#[derive(Debug, Clone, PartialEq)]
pub enum KeepThread {
    Nothing,
    /// This parent.
    Parent(ThreadParent),
    /// The message the service's answer names ([`Answer::Delivered::posted`]).
    Posted,
}

/// What a service answered to a request with a `2xx` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Delivered; `posted` names the message when the service says which it is.
    Delivered { posted: Option<Posted> },
    /// A `2xx` with a body that is not the service's answer: the message may well be posted,
    /// so it is not sent again.
    Unreadable,
    /// Refused, but may succeed if sent again.
    Retry { detail: String },
    /// Refused for good.
    Refused { detail: String },
}

/// A message a service posted: where it is (a channel ID) and its ID there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// A receiver's kind, URL and request settings, compiled from its spec.
pub struct Compiled {
    /// The kind's field name (`slack`): the `type` in `herald render` output and the
    /// `receiver_type` metric label. Filled in by [`compile`] from the list of kinds, so a
    /// kind's own `compile` leaves it empty and never spells its name twice.
    pub type_name: &'static str,
    pub kind: Arc<dyn ReceiverKind>,
    pub url: Redacted,
    pub request: RequestSpec,
}

/// Compiles one receiver's kind: exactly one must be set. Problems go to `cx` (with paths
/// under `path`); `None` when there are any.
pub(crate) fn compile(receiver: &Receiver, path: &str, cx: &mut Compiler<'_>) -> Option<Compiled> {
    let kinds = receiver.kinds();
    let [(field, spec)] = kinds.as_slice() else {
        cx.invalid(path, herald_api::exactly_one_kind_message());
        return None;
    };
    let path = format!("{path}.{field}");
    let compiled = match *spec {
        ReceiverKindSpec::Slack(spec) => slack::compile(spec, &path, cx),
        ReceiverKindSpec::Teams(spec) => msteams::compile(spec, &path, cx),
        ReceiverKindSpec::Webhook(spec) => webhook::compile(spec, &path, cx),
        ReceiverKindSpec::Discord(spec) => discord::compile(spec, &path, cx),
        ReceiverKindSpec::GoogleChat(spec) => googlechat::compile(spec, &path, cx),
        ReceiverKindSpec::RocketChat(spec) => rocketchat::compile(spec, &path, cx),
        ReceiverKindSpec::Mattermost(spec) => mattermost::compile(spec, &path, cx),
        ReceiverKindSpec::PagerDuty(spec) => pagerduty::compile(spec, &path, cx),
        ReceiverKindSpec::Opsgenie(spec) => opsgenie::compile(spec, &path, cx),
        ReceiverKindSpec::Alertmanager(spec) => alertmanager::compile(spec, &path, cx),
        ReceiverKindSpec::Telegram(spec) => telegram::compile(spec, &path, cx),
        ReceiverKindSpec::Webex(spec) => webex::compile(spec, &path, cx),
        ReceiverKindSpec::Grafana(spec) => grafana::compile(spec, &path, cx),
    }?;
    Some(Compiled {
        type_name: field,
        ..compiled
    })
}

/// A kind with plain settings: the URL from `url`/`secretRef`, the default request.
pub(crate) fn compile_plain(
    spec: &dyn herald_api::ReceiverSpec,
    path: &str,
    cx: &mut Compiler<'_>,
    kind: impl ReceiverKind,
) -> Option<Compiled> {
    let url = cx.resolve_address(spec.address(), path)?;
    Some(Compiled {
        type_name: "",
        kind: Arc::new(kind),
        url,
        request: RequestSpec::default(),
    })
}
