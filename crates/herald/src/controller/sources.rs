//! Where the controller's two sources of Flagger events meet. Flagger reports every action
//! twice, as a Kubernetes Event (watched) and, when its event webhook points at Herald, as a
//! POST to `/events`; each action is sent once (see `herald_core::dedup`). A webhook message
//! that announces a phase ("Canary failed! ...") also counts as Flagger's announcement, so
//! Herald does not announce the phase change itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::dedup::{Source, SourcePairing};
use herald_core::FlaggerEvent;

use super::canaries::announced_phase;
use super::state::{CanaryRef, StateStore};
use crate::server::IncomingEvents;

pub struct EventSources {
    pairing: Mutex<SourcePairing>,
    /// The pairing's clock: milliseconds since this instant.
    started: Instant,
    /// The leader's delivery state (none on a follower); the controller fills it when it
    /// starts leading.
    pub(super) state: Arc<Mutex<Option<Arc<StateStore>>>>,
}

impl EventSources {
    pub fn new(window: Duration, state: Arc<Mutex<Option<Arc<StateStore>>>>) -> Self {
        EventSources {
            pairing: Mutex::new(SourcePairing::new(window.as_millis() as u64)),
            started: Instant::now(),
            state,
        }
    }

    /// Whether to send `event`, arriving now from `source`.
    pub fn admit_from(&self, source: Source, event: &FlaggerEvent) -> bool {
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.pairing
            .lock()
            .expect("pairing lock poisoned")
            .admit(source, event, now_ms)
    }
}

impl IncomingEvents for EventSources {
    fn admit(&self, event: &FlaggerEvent) -> bool {
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
        self.admit_from(Source::Webhook, event)
    }
}
