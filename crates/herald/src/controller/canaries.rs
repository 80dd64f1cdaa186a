//! Canary events from the cluster: the Kubernetes Events Flagger records on Canaries, and
//! Canary phase changes that no Event announces. Each becomes Herald's event model and goes
//! through the policies, once.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_api::flagger::Canary;
use herald_api::EventType;
use herald_core::{CanaryFacts, FlaggerEvent, MatchInput};
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::sources::{EventSources, WatchedEvent};
use super::state::{CanaryRef, StateStore};
use crate::delivery::EventCompletion;
use crate::metrics::SourceLabels;
use crate::server::{dispatch, AppState};

/// A Kubernetes Event about a Canary, reduced to what Herald needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEvent {
    pub canary: CanaryRef,
    /// `<Event uid>:<count>`: a repeated Event (Flagger aggregates identical messages) is new.
    pub key: String,
    pub time_ms: i64,
    pub message: String,
    pub event_type: EventType,
}

/// Reads a core/v1 Event; `None` when it is not about a Flagger Canary.
pub fn observe_event(event: &Event) -> Option<ObservedEvent> {
    let involved = &event.involved_object;
    if involved.kind.as_deref() != Some("Canary") {
        return None;
    }
    if involved
        .api_version
        .as_deref()
        .is_some_and(|v| !v.starts_with("flagger.app/"))
    {
        return None;
    }
    let namespace = involved
        .namespace
        .clone()
        .or_else(|| event.metadata.namespace.clone())?;
    let name = involved.name.clone()?;
    let uid = event
        .metadata
        .uid
        .clone()
        .or_else(|| event.metadata.name.clone())?;
    let count = event
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(event.count)
        .unwrap_or(1);
    let time = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    Some(ObservedEvent {
        canary: CanaryRef { namespace, name },
        key: format!("{uid}:{count}"),
        time_ms: time.as_millisecond(),
        message: event.message.clone().unwrap_or_default(),
        event_type: if event.type_.as_deref() == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        },
    })
}

/// What the Canary object adds to an event: labels for matching, progress for templates.
pub fn canary_facts(canary: &Canary) -> CanaryFacts {
    let status = canary.status.clone().unwrap_or_default();
    CanaryFacts {
        labels: canary.labels().clone(),
        weight: status.canary_weight,
        failed_checks: status.failed_checks,
        iterations: status.iterations,
        revision: status.last_applied_spec,
    }
}

/// The event Flagger's webhook would have sent for this Kubernetes Event: the phase is the
/// Canary's current phase, the checksum its revision (`status.lastAppliedSpec`).
pub fn flagger_event(observed: &ObservedEvent, canary: Option<&Canary>) -> FlaggerEvent {
    let status = canary.and_then(|c| c.status.as_ref());
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let event = FlaggerEvent::new(
        &observed.canary.name,
        &observed.canary.namespace,
        phase,
        &observed.message,
        observed.event_type,
        u64::try_from(observed.time_ms).unwrap_or_default(),
    );
    match status.and_then(|s| s.last_applied_spec.clone()) {
        Some(revision) => event.with_checksum(revision),
        None => event,
    }
}

/// The terminal phase a Flagger message announces, if any.
pub fn announced_phase(message: &str) -> Option<&'static str> {
    if message.starts_with("Initialization done!") {
        Some("Initialized")
    } else if message.starts_with("Promotion completed!") {
        Some("Succeeded")
    } else if message.starts_with("Canary failed!") || message.starts_with("Rolling back") {
        Some("Failed")
    } else {
        None
    }
}

fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Initialized" | "Succeeded" | "Failed")
}

/// Records a phase seen on the Canary. Returns the phase to announce (after a grace period,
/// unless a Flagger Event announces it first) when the canary moved into a terminal phase.
/// The first phase Herald ever sees for a canary is only recorded: it is not a transition.
pub fn observe_phase(record: &mut super::state::CanaryRecord, phase: &str) -> Option<String> {
    let previous = record.phase.replace(phase.to_owned());
    match previous {
        None => None,
        Some(previous) if previous == phase => None,
        Some(_) if is_terminal(phase) => {
            (record.announced.as_deref() != Some(phase)).then(|| phase.to_owned())
        }
        Some(_) => {
            record.announced = None;
            None
        }
    }
}

/// The event Herald sends for a phase change no Flagger Event announced. Its message starts
/// like Flagger's own, so message patterns written for Flagger's messages match it.
pub fn phase_change_event(canary: &Canary, phase: &str, now_ms: i64) -> (FlaggerEvent, String) {
    let target = format!(
        "{}.{}",
        canary.name_any(),
        canary.namespace().unwrap_or_default()
    );
    let (message, event_type) = match phase {
        "Initialized" => (
            format!("Initialization done! {target} (phase change seen by Herald)"),
            EventType::Normal,
        ),
        "Succeeded" => (
            format!("Promotion completed! {target} (phase change seen by Herald)"),
            EventType::Normal,
        ),
        _ => (
            format!("Canary failed! {target} (phase change seen by Herald)"),
            EventType::Warning,
        ),
    };
    let status = canary.status.clone().unwrap_or_default();
    let key = format!(
        "phase:{phase}:{}",
        status.last_transition_time.unwrap_or_default()
    );
    let mut event = FlaggerEvent::new(
        canary.name_any(),
        canary.namespace().unwrap_or_default(),
        phase,
        message,
        event_type,
        u64::try_from(now_ms).unwrap_or_default(),
    );
    if let Some(revision) = status.last_applied_spec {
        event = event.with_checksum(revision);
    }
    (event, key)
}

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
    /// Events whose notifications are queued but not finished, so a re-list does not queue
    /// them twice.
    in_flight: Arc<Mutex<HashSet<(CanaryRef, String)>>>,
}

/// What the notifier reacts to.
pub enum Input {
    Event(Box<Event>),
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
            in_flight: Arc::default(),
        }
    }

    fn canary(&self, canary: &CanaryRef) -> Option<Arc<Canary>> {
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
            Input::Canary(canary) => self.handle_canary(&canary, later),
            Input::PhaseDue(canary, phase) => self.handle_phase_due(&canary, &phase),
        }
    }

    pub fn handle_event(&self, observed: ObservedEvent) {
        let record = self.state.get(&observed.canary);
        let flight_key = (observed.canary.clone(), observed.key.clone());
        if record.is_handled(&observed.key, observed.time_ms)
            || self.in_flight.lock().expect("lock").contains(&flight_key)
            || self.sources.awaits(&observed.canary, &observed.key)
        {
            debug!(canary = %observed.canary.key(), key = %observed.key, "event already handled");
            return;
        }
        if let Some(phase) = announced_phase(&observed.message) {
            self.state
                .update(&observed.canary, |r| r.announced = Some(phase.to_owned()));
        }
        let canary = self.canary(&observed.canary);
        let event = flagger_event(&observed, canary.as_deref());
        let watched = WatchedEvent {
            canary: observed.canary.clone(),
            key: observed.key.clone(),
            time_ms: observed.time_ms,
        };
        if !self.sources.watched(&event, watched) {
            self.app
                .metrics
                .events_duplicate
                .get_or_create(&SourceLabels { source: "watch" })
                .inc();
            info!(
                canary = %observed.canary.key(), message = %observed.message,
                "event already sent from Flagger's webhook; not sending it again"
            );
            return;
        }
        self.deliver(
            &observed.canary,
            &event,
            canary.as_deref(),
            observed.key,
            observed.time_ms,
        );
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

    fn handle_phase_due(&self, canary_ref: &CanaryRef, phase: &str) {
        let record = self.state.get(canary_ref);
        let Some(canary) = self.canary(canary_ref) else {
            return;
        };
        let current = canary.status.as_ref().and_then(|s| s.phase.as_deref());
        if current != Some(phase) || record.announced.as_deref() == Some(phase) {
            return;
        }
        info!(canary = %canary_ref.key(), phase, "phase change without a Flagger event: announcing it");
        self.state
            .update(canary_ref, |r| r.announced = Some(phase.to_owned()));
        let now = jiff_now_ms();
        let (event, key) = phase_change_event(&canary, phase, now);
        self.deliver(canary_ref, &event, Some(&canary), key, now);
    }

    fn deliver(
        &self,
        canary_ref: &CanaryRef,
        event: &FlaggerEvent,
        canary: Option<&Canary>,
        key: String,
        time_ms: i64,
    ) {
        let facts = canary.map(canary_facts);
        let namespace_labels = self.namespace_labels(&canary_ref.namespace);
        let input = MatchInput {
            event,
            canary: facts.as_ref(),
            namespace_labels: namespace_labels.as_ref(),
        };
        let flight_key = (canary_ref.clone(), key.clone());
        self.in_flight
            .lock()
            .expect("lock")
            .insert(flight_key.clone());
        let completion = {
            let state = self.state.clone();
            let in_flight = self.in_flight.clone();
            let canary_ref = canary_ref.clone();
            EventCompletion::new(move || {
                state.update(&canary_ref, |r| r.record(&key, time_ms));
                in_flight.lock().expect("lock").remove(&flight_key);
            })
        };
        self.app.metrics.events_received.inc();
        let policies = self.app.policies.load_full();
        let queued = dispatch(
            &self.app,
            &policies,
            &input,
            None,
            Instant::now(),
            Some(completion),
        );
        info!(
            canary = %canary_ref.key(), phase = %event.phase, message = %event.message(),
            deliveries = queued, "canary event"
        );
    }
}

fn jiff_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Watches Canaries, their Events and Namespaces, and feeds the notifier until `stop`.
pub async fn run(
    client: Client,
    notifier_parts: impl FnOnce(Store<Canary>, Store<Namespace>) -> CanaryNotifier,
    stop: impl std::future::Future<Output = ()>,
) {
    let (canary_reader, canary_writer) = reflector::store();
    let (namespace_reader, namespace_writer) = reflector::store();
    let notifier = notifier_parts(canary_reader.clone(), namespace_reader.clone());
    let (inputs, mut received) = mpsc::unbounded_channel();
    let canaries = reflector(
        canary_writer,
        watcher(
            Api::<Canary>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects();
    let namespaces = reflector(
        namespace_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects();
    let events = watcher(
        Api::<Event>::all(client),
        watcher::Config::default().fields("involvedObject.kind=Canary"),
    )
    .default_backoff()
    .applied_objects();
    let tasks = [
        forward(canaries, inputs.clone(), |c| Input::Canary(Box::new(c))),
        forward(events, inputs.clone(), |e| Input::Event(Box::new(e))),
        tokio::spawn(namespaces.for_each(|_| async {})),
    ];
    tokio::pin!(stop);
    // Events are handled once the Canaries and Namespaces they refer to are known.
    tokio::select! {
        _ = &mut stop => {}
        _ = async {
            let _ = canary_reader.wait_until_ready().await;
            let _ = namespace_reader.wait_until_ready().await;
            // An event handled before the policies are loaded would match nothing and be
            // recorded as handled: wait for them.
            while !notifier.app.ready.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            while let Some(input) = received.recv().await {
                notifier.handle(input, &inputs);
            }
        } => {}
    }
    for task in tasks {
        task.abort();
    }
}

/// Sends a watch stream's objects into the notifier's channel, logging watch errors (the
/// stream retries with backoff).
fn forward<K, S>(
    stream: S,
    inputs: mpsc::UnboundedSender<Input>,
    wrap: fn(K) -> Input,
) -> tokio::task::JoinHandle<()>
where
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(object) => {
                    if inputs.send(wrap(object)).is_err() {
                        break;
                    }
                }
                Err(e) => warn!(error = %e, "watch error; retrying"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::CanaryRecord;

    #[test]
    fn the_first_phase_seen_is_not_a_transition() {
        let mut record = CanaryRecord::default();
        assert_eq!(observe_phase(&mut record, "Succeeded"), None);
        assert_eq!(record.phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn terminal_transitions_are_announced_once() {
        let mut record = CanaryRecord {
            phase: Some("Progressing".into()),
            ..Default::default()
        };
        assert_eq!(observe_phase(&mut record, "Progressing"), None);
        assert_eq!(
            observe_phase(&mut record, "Failed").as_deref(),
            Some("Failed")
        );
        record.announced = Some("Failed".into());
        assert_eq!(observe_phase(&mut record, "Failed"), None, "no change");
        assert_eq!(observe_phase(&mut record, "Progressing"), None);
        assert_eq!(
            record.announced, None,
            "a new rollout resets the announcement"
        );
        record.announced = Some("Failed".into()); // Flagger's "Canary failed!" Event came first
        assert_eq!(observe_phase(&mut record, "Failed"), None);
        assert_eq!(observe_phase(&mut record, "Promoting"), None);
        assert_eq!(
            observe_phase(&mut record, "Succeeded").as_deref(),
            Some("Succeeded")
        );
    }

    #[test]
    fn flagger_messages_announce_their_phase() {
        assert_eq!(
            announced_phase("Initialization done! podinfo.test"),
            Some("Initialized")
        );
        assert_eq!(
            announced_phase("Promotion completed! Scaling down podinfo.test"),
            Some("Succeeded")
        );
        assert_eq!(
            announced_phase("Rolling back podinfo.test failed checks threshold reached 5"),
            Some("Failed")
        );
        assert_eq!(
            announced_phase("Canary failed! Scaling down podinfo.test"),
            Some("Failed")
        );
        assert_eq!(
            announced_phase("Advance podinfo.test canary weight 10"),
            None
        );
    }

    #[test]
    fn reads_a_flagger_event() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo.1", "namespace": "test", "uid": "u1"},
            "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "namespace": "test"},
            "message": "Halt advancement podinfo.test", "type": "Warning", "count": 4,
            "lastTimestamp": "2020-01-09T22:07:15Z"
        }))
        .unwrap();
        assert_eq!(
            observe_event(&event),
            Some(ObservedEvent {
                canary: CanaryRef {
                    namespace: "test".into(),
                    name: "podinfo".into()
                },
                key: "u1:4".into(),
                time_ms: 1_578_607_635_000,
                message: "Halt advancement podinfo.test".into(),
                event_type: EventType::Warning,
            })
        );
        let mut other = event.clone();
        other.involved_object.api_version = Some("argoproj.io/v1alpha1".into());
        assert_eq!(observe_event(&other), None, "a Canary of another project");
    }
}
