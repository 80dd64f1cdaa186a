//! Where the controller's two sources of Flagger events meet. Flagger reports every action
//! twice, as a Kubernetes Event (watched) and, when its event webhook points at Herald, as a
//! POST to `/events`; each action is sent once (see `herald_core::dedup`). A webhook message
//! that announces a phase ("Canary failed! ...") also counts as Flagger's announcement, so
//! Herald does not announce the phase change itself.
//!
//! When the webhook's report came first, the watched Event is recorded as handled (so a
//! restart does not send it) only once the webhook report's notifications all reached an
//! outcome without being dropped; if they were dropped, the Event stays unrecorded and is
//! sent after a restart, as any Event Herald could not finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::dedup::{Pairing, Source, SourcePairing};
use herald_core::FlaggerEvent;
use tracing::debug;

use super::canaries::announced_phase;
use super::state::{CanaryRef, StateStore};
use crate::api::{Admission, IncomingEvents};
use crate::delivery::EventCompletion;

/// A watched Event, as the delivery state records it.
#[derive(Clone, Debug)]
pub struct WatchedEvent {
    pub canary: CanaryRef,
    /// `<Event uid>:<count>`.
    pub key: String,
    pub time_ms: i64,
}

/// A webhook report that was sent first, by its pairing id.
enum FirstReport {
    /// Its notifications are not all finished; `paired` is the watched Event that pairs with
    /// it, to record once they are.
    Sending {
        since: Instant,
        paired: Option<WatchedEvent>,
    },
    /// All its notifications reached an outcome, none dropped.
    Sent { since: Instant },
}

type Slot = Arc<Mutex<Option<Arc<StateStore>>>>;

pub struct EventSources {
    pairing: Mutex<SourcePairing>,
    window: Duration,
    /// The pairing's clock: milliseconds since this instant.
    started: Instant,
    /// The leader's delivery state (none on a follower); the controller fills it when it
    /// starts leading.
    pub(super) state: Slot,
    first_reports: Arc<Mutex<HashMap<u64, FirstReport>>>,
    /// Set once the webhook reports kept in the durable queue (`--state-dir`) are admitted
    /// again after a restart (at once without one): until then the intake answers 503 and
    /// watched Events wait, so a recovered report comes first and pairs with its Event.
    recovered: AtomicBool,
}

impl EventSources {
    /// First reports are forgotten after this many windows (a pair is at most one apart).
    const KEEP_WINDOWS: u32 = 2;
    /// How long a first report whose notifications are still being sent keeps the watched
    /// Event paired with it: longer than any delivery with its retries and queueing takes.
    /// Its notifications were dropped if it is still sending then.
    const KEEP_SENDING_PAIRED: Duration = Duration::from_secs(3600);

    pub fn new(window: Duration, state: Slot) -> Self {
        EventSources {
            pairing: Mutex::new(SourcePairing::new(window.as_millis() as u64)),
            window,
            started: Instant::now(),
            state,
            first_reports: Arc::default(),
            recovered: AtomicBool::new(false),
        }
    }

    /// Whether the reports kept in the durable queue have been admitted again.
    pub fn recovered(&self) -> bool {
        self.recovered.load(Ordering::Acquire)
    }

    pub(super) fn mark_recovered(&self) {
        self.recovered.store(true, Ordering::Release);
    }

    fn pair(&self, source: Source, event: &FlaggerEvent) -> Pairing {
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.pairing
            .lock()
            .expect("pairing lock poisoned")
            .admit(source, event, now_ms)
    }

    /// True while `key` is a watched Event that waits for its webhook report's
    /// notifications: it is as good as handled (a re-list must not send it).
    pub fn awaits(&self, canary: &CanaryRef, key: &str) -> bool {
        self.first_reports
            .lock()
            .expect("first reports lock")
            .values()
            .any(|report| {
                matches!(report, FirstReport::Sending { paired: Some(w), .. }
                    if w.key == key && &w.canary == canary)
            })
    }

    /// Whether to send a watched Event. When it is the second report of an action whose
    /// webhook report was sent, it is recorded as handled (now, or when that report's
    /// notifications finish) and not sent.
    pub fn watched(&self, event: &FlaggerEvent, watched: WatchedEvent) -> bool {
        let Pairing::Second { first } = self.pair(Source::Watch, event) else {
            return true;
        };
        let mut reports = self.first_reports.lock().expect("first reports lock");
        match reports.get_mut(&first) {
            Some(FirstReport::Sending { paired, .. }) => {
                // Being sent by the webhook report: pending, so the watermark waits for it.
                if let Some(state) = self.state.lock().expect("state slot").clone() {
                    state.begin(&watched.canary, &watched.key, watched.time_ms);
                }
                *paired = Some(watched);
            }
            Some(FirstReport::Sent { .. }) | None => {
                reports.remove(&first);
                drop(reports);
                record(&self.state, &watched);
            }
        }
        false
    }
}

fn record(state: &Slot, watched: &WatchedEvent) {
    let state = state.lock().expect("state slot").clone();
    if let Some(state) = state {
        state.complete(&watched.canary, &watched.key, watched.time_ms);
    }
}

impl IncomingEvents for EventSources {
    fn admit(&self, event: &FlaggerEvent) -> Admission {
        if let Some(phase) = announced_phase(event.message()) {
            let state = self.state.lock().expect("state slot").clone();
            if let Some(state) = state {
                let canary = CanaryRef {
                    namespace: event.namespace.clone(),
                    name: event.name.clone(),
                };
                state.update(&canary, |record| record.announced = Some(phase.to_owned()));
            }
        }
        let now = Instant::now();
        let id = {
            // Held across the pairing, so a watched Event pairing with this report finds it.
            let mut reports = self.first_reports.lock().expect("first reports lock");
            let id = match self.pair(Source::Webhook, event) {
                Pairing::Second { .. } => return Admission::Duplicate,
                Pairing::First { id } => id,
            };
            let keep = self.window * Self::KEEP_WINDOWS;
            reports.retain(|_, report| match report {
                FirstReport::Sending {
                    since,
                    paired: Some(_),
                } => now.duration_since(*since) < Self::KEEP_SENDING_PAIRED,
                FirstReport::Sending { since, .. } | FirstReport::Sent { since } => {
                    now.duration_since(*since) < keep
                }
            });
            reports.insert(
                id,
                FirstReport::Sending {
                    since: now,
                    paired: None,
                },
            );
            id
        };
        let reports = self.first_reports.clone();
        let state = self.state.clone();
        let completion = EventCompletion::new(move || {
            let mut reports = reports.lock().expect("first reports lock");
            match reports.remove(&id) {
                Some(FirstReport::Sending {
                    paired: Some(watched),
                    ..
                }) => {
                    drop(reports);
                    debug!(canary = %watched.canary.key(), key = %watched.key, "webhook report sent: its Event is handled");
                    record(&state, &watched);
                }
                _ => {
                    reports.insert(id, FirstReport::Sent { since: now });
                }
            }
        });
        Admission::Send(Some(completion))
    }
}
