//! The one gate a watched Event passes before it is sent. In order: it is not handled
//! already (nor being sent), the rollout phase it announces is noted, it was not already sent
//! from Flagger's webhook, and then it is marked in flight, with a completion that records it
//! as handled once every notification has an outcome.

use std::sync::Arc;

use herald_core::FlaggerEvent;

use super::canaries::{announced_phase, ObservedEvent};
use super::leader::Fence;
use super::sources::{EventSources, WatchedEvent};
use super::state::StateStore;
use crate::delivery::EventCompletion;

/// What the gate decided for one watched Event.
pub enum Verdict {
    /// Handled before, or its notifications are being sent: nothing to do.
    Handled,
    /// The same action came over Flagger's webhook first and was sent from there.
    SentByWebhook,
    /// Send `event`; `completion` goes with its notifications.
    Send {
        event: FlaggerEvent,
        completion: Arc<EventCompletion>,
    },
}

/// The checks, over the state they consult.
pub struct EventGate<'a> {
    pub state: &'a Arc<StateStore>,
    pub sources: &'a EventSources,
    /// A replica whose lease may have expired sends nothing.
    pub fence: &'a Fence,
}

impl EventGate<'_> {
    /// Decides for `observed`; `event` makes the Flagger event it would send (only called
    /// when the Event is not handled already, so a re-list of handled Events costs nothing).
    pub fn admit(&self, observed: &ObservedEvent, event: impl FnOnce() -> FlaggerEvent) -> Verdict {
        let (canary, key, time_ms) = (&observed.canary, &observed.key, observed.time_ms);
        if self.state.is_settled(canary, key, time_ms) || self.sources.awaits(canary, key) {
            return Verdict::Handled;
        }
        // Noted even when the webhook sent it: the phase is announced either way, so the
        // phase-change announcer must not announce it again.
        if let Some(phase) = announced_phase(&observed.message) {
            self.state
                .update(canary, |r| r.announced = Some(phase.to_owned()));
        }
        let event = event();
        let watched = WatchedEvent {
            canary: canary.clone(),
            key: key.clone(),
            time_ms,
        };
        if !self.sources.watched(&event, watched) {
            return Verdict::SentByWebhook;
        }
        self.state.begin(canary, key, time_ms);
        let completion = {
            let state = self.state.clone();
            let (canary, key) = (canary.clone(), key.clone());
            EventCompletion::fenced(self.fence.checker(), move || {
                state.complete(&canary, &key, time_ms);
            })
        };
        Verdict::Send { event, completion }
    }
}
