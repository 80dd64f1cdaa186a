//! Turns cluster observations into deliveries: each watched Event once (unless Flagger's
//! webhook already reported the same action), and phase changes no Event announced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_api::flagger::Canary;
use herald_core::{FlaggerEvent, MatchInput};
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::canaries::{
    canary_facts, flagger_event, observe_event, observe_phase, phase_change_event, ObservedEvent,
};
use super::gate::{EventGate, Verdict};
use super::leader::Fence;
use super::sources::EventSources;
use super::state::{CanaryRef, StateStore};
use crate::api::AppState;
use crate::delivery::EventCompletion;
use crate::metrics::SourceLabels;
use crate::pipeline::dispatch;

/// Turns cluster observations into deliveries.
pub struct CanaryNotifier {
    pub app: AppState,
    pub state: Arc<StateStore>,
    pub canaries: Store<Canary>,
    pub namespaces: Store<Namespace>,
    /// How long a terminal phase change waits for Flagger's own Event before Herald announces it.
    pub grace: Duration,
    /// Pairs each Event with the same action POSTed by Flagger's event webhook.
    pub sources: Arc<EventSources>,
    /// Checked before every request for a watched Event: a replica whose lease may have
    /// expired sends nothing (the new leader sends what it did not finish).
    pub fence: Fence,
}

impl CanaryNotifier {
    /// Once the Canary cache is listed: repeated notifications of a canary that is deleted,
    /// or healthy again (a success Herald missed), end.
    pub fn end_repeats_of_healthy_canaries(&self) {
        use crate::reposts::CanaryNow;
        let canaries = self.canaries.clone();
        self.app.open.watch_canaries(move |namespace, name| {
            match canaries.get(&ObjectRef::new(name).within(namespace)) {
                None => CanaryNow::Gone,
                Some(canary) => match canary.status.as_ref().and_then(|s| s.phase.as_deref()) {
                    Some("Succeeded" | "Initialized") => CanaryNow::Healthy,
                    _ => CanaryNow::Other,
                },
            }
        });
    }
}

/// What the notifier reacts to.
pub enum Input {
    /// A Kubernetes Event, as the API server sent it.
    Event(Box<Event>),
    /// A Kubernetes Event about a Canary, already read (the watch reads each one once).
    Observed(Box<ObservedEvent>),
    Canary(Box<Canary>),
    /// The grace period of a phase change ended.
    PhaseDue(CanaryRef, String),
}

impl CanaryNotifier {
    pub fn new(
        app: AppState,
        state: Arc<StateStore>,
        canaries: Store<Canary>,
        namespaces: Store<Namespace>,
        grace: Duration,
        sources: Arc<EventSources>,
    ) -> Self {
        CanaryNotifier {
            app,
            state,
            canaries,
            namespaces,
            grace,
            sources,
            fence: Fence::always(),
        }
    }

    pub fn with_fence(self, fence: Fence) -> Self {
        CanaryNotifier { fence, ..self }
    }

    pub fn canary(&self, canary: &CanaryRef) -> Option<Arc<Canary>> {
        self.canaries
            .get(&ObjectRef::new(&canary.name).within(&canary.namespace))
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.labels().clone())
    }

    /// Handles one input; `later` receives the phase checks to run after the grace period.
    pub fn handle(&self, input: Input, later: &mpsc::UnboundedSender<Input>) {
        match input {
            Input::Event(event) => {
                if let Some(observed) = observe_event(&event) {
                    self.handle_event(observed);
                }
            }
            Input::Observed(observed) => self.handle_event(*observed),
            Input::Canary(canary) => self.handle_canary(&canary, later),
            Input::PhaseDue(canary, phase) => self.handle_phase_due(&canary, &phase),
        }
    }

    pub fn handle_event(&self, observed: ObservedEvent) {
        let canary = self.canary(&observed.canary);
        let gate = EventGate {
            state: &self.state,
            sources: &self.sources,
            fence: &self.fence,
        };
        match gate.admit(&observed, || flagger_event(&observed, canary.as_deref())) {
            Verdict::Handled => {
                debug!(canary = %observed.canary.key(), key = %observed.key, "event already handled");
            }
            Verdict::SentByWebhook => {
                self.app
                    .metrics
                    .events_duplicate
                    .get_or_create(&SourceLabels { source: "watch" })
                    .inc();
                info!(
                    canary = %observed.canary.key(), event_message = %observed.message,
                    "event already sent from Flagger's webhook; not sending it again"
                );
            }
            Verdict::Send { event, completion } => {
                self.deliver(&observed.canary, &event, canary.as_deref(), completion);
            }
        }
    }

    fn handle_canary(&self, canary: &Canary, later: &mpsc::UnboundedSender<Input>) {
        let Some(phase) = canary.status.as_ref().and_then(|s| s.phase.clone()) else {
            return;
        };
        let canary_ref = CanaryRef {
            namespace: canary.namespace().unwrap_or_default(),
            name: canary.name_any(),
        };
        self.app.metrics.observe_canary(
            &canary_ref.name,
            &canary_ref.namespace,
            herald_api::CanaryPhase::parse(&phase),
        );
        let mut due = None;
        self.state
            .update(&canary_ref, |record| due = observe_phase(record, &phase));
        if let Some(phase) = due {
            let later = later.clone();
            let grace = self.grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = later.send(Input::PhaseDue(canary_ref, phase));
            });
        }
    }

    /// Announces a terminal phase no Flagger Event announced. Its record is the canary's
    /// `announced` phase, not the Event watermark: it is no Kubernetes Event.
    fn handle_phase_due(&self, canary_ref: &CanaryRef, phase: &str) {
        let record = self.state.get(canary_ref);
        let Some(canary) = self.canary(canary_ref) else {
            return;
        };
        let current = canary.status.as_ref().and_then(|s| s.phase.as_deref());
        if current != Some(phase) || record.announced.as_deref() == Some(phase) {
            return;
        }
        if !self.fence.holds() {
            return;
        }
        info!(canary = %canary_ref.key(), phase, "phase change without a Flagger event: announcing it");
        self.state
            .update(canary_ref, |r| r.announced = Some(phase.to_owned()));
        let now = jiff::Timestamp::now().as_millisecond();
        let event = phase_change_event(&canary, phase, now);
        let completion = EventCompletion::fenced(self.fence.checker(), || {});
        self.deliver(canary_ref, &event, Some(&canary), completion);
    }

    fn deliver(
        &self,
        canary_ref: &CanaryRef,
        event: &FlaggerEvent,
        canary: Option<&Canary>,
        completion: Arc<EventCompletion>,
    ) {
        let facts = canary.map(canary_facts);
        let namespace_labels = self.namespace_labels(&canary_ref.namespace);
        let input = MatchInput {
            event,
            canary: facts.as_ref(),
            namespace_labels: namespace_labels.as_ref(),
        };
        self.app.metrics.events_received.inc();
        let policies = self.app.policies.load_full();
        let queued = match dispatch(
            &self.app,
            &policies,
            &input,
            None,
            Instant::now(),
            Some(completion),
            None,
        ) {
            Ok(admitted) => admitted.queued,
            Err(refusal) => {
                // The event is not recorded as handled: it is sent again after a restart.
                self.app
                    .metrics
                    .events_refused
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: refusal.as_str(),
                    })
                    .inc();
                warn!(
                    canary = %canary_ref.key(), reason = refusal.as_str(),
                    "canary event not sent: its notifications cannot all be queued now"
                );
                0
            }
        };
        info!(
            canary = %canary_ref.key(), phase = %event.phase, event_message = %event.message(),
            deliveries = queued, "canary event"
        );
    }
}
