//! Recognising one Flagger action reported twice: once by its event webhook (POSTed to
//! Herald) and once as a Kubernetes Event (seen by Herald's watch). Flagger does both for
//! every action, at the same moment, so when both sources reach one Herald, each arrival of
//! an event from one source cancels one arrival of the same event (canary, type, message)
//! from the other source within a time window, and only the first of the pair is sent.
//!
//! Pairing one to one, rather than "seen recently", keeps Flagger's repeated messages (the
//! same "Halt advancement ..." every analysis interval) all sent once each, and sends an
//! event that only one source reported (the Event recorder's spam filter drops repeats that
//! the webhook still posts).

use std::collections::{HashMap, VecDeque};

use crate::FlaggerEvent;

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Flagger's event webhook, POSTed to `/events`.
    Webhook,
    /// A Kubernetes Event about the canary, from the watch.
    Watch,
}

/// What [`SourcePairing::admit`] decided about an arrival. Each arrival gets an id, so the
/// caller can follow the fate of the first report when the second pairs with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Send it: no unpaired report of the event from the other source. `id` names it.
    First { id: u64 },
    /// Do not send it: it pairs with the other source's report `first`.
    Second { first: u64 },
}

/// Arrivals of one event not yet paired. They are all from one source: an arrival from the
/// other source would have been paired with the oldest of them.
struct Unpaired {
    source: Source,
    /// Arrival times (ms) and ids, oldest first.
    arrivals: VecDeque<(u64, u64)>,
}

/// The pairing state; times are milliseconds on any monotonic clock the caller chooses.
pub struct SourcePairing {
    window_ms: u64,
    unpaired: HashMap<String, Unpaired>,
    /// Arrivals since expired entries were last swept out of the map.
    since_sweep: usize,
    next_id: u64,
}

impl SourcePairing {
    /// Entries are swept once this many arrivals have been admitted, bounding the map to
    /// what arrived within about one window plus this many.
    const SWEEP_EVERY: usize = 1024;

    pub fn new(window_ms: u64) -> Self {
        SourcePairing {
            window_ms,
            unpaired: HashMap::new(),
            since_sweep: 0,
            next_id: 0,
        }
    }

    /// Whether to send `event`, arriving from `source` at `now_ms`: not when it is the
    /// other source's report of an event already admitted within the window.
    pub fn admit(&mut self, source: Source, event: &FlaggerEvent, now_ms: u64) -> Pairing {
        self.since_sweep += 1;
        if self.since_sweep >= Self::SWEEP_EVERY {
            self.sweep(now_ms);
        }
        let oldest_kept = now_ms.saturating_sub(self.window_ms);
        let entry = self
            .unpaired
            .entry(Self::key(event))
            .or_insert_with(|| Unpaired {
                source,
                arrivals: VecDeque::new(),
            });
        while entry
            .arrivals
            .front()
            .is_some_and(|(at, _)| *at < oldest_kept)
        {
            entry.arrivals.pop_front();
        }
        if entry.source != source {
            if let Some((_, first)) = entry.arrivals.pop_front() {
                return Pairing::Second { first };
            }
        }
        entry.source = source;
        self.next_id += 1;
        entry.arrivals.push_back((now_ms, self.next_id));
        Pairing::First { id: self.next_id }
    }

    /// The identity of an event across sources: both carry the canary, the event type and
    /// Flagger's message verbatim (phase, checksum and timestamp may differ between them).
    fn key(event: &FlaggerEvent) -> String {
        format!(
            "{}/{}\n{:?}\n{}",
            event.namespace,
            event.name,
            event.event_type(),
            event.message()
        )
    }

    fn sweep(&mut self, now_ms: u64) {
        let oldest_kept = now_ms.saturating_sub(self.window_ms);
        self.unpaired.retain(|_, entry| {
            entry
                .arrivals
                .back()
                .is_some_and(|(at, _)| *at >= oldest_kept)
        });
        self.since_sweep = 0;
    }

    /// Events with unpaired arrivals.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.unpaired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_api::EventType;

    fn event(name: &str, message: &str) -> FlaggerEvent {
        FlaggerEvent::new(
            name,
            "test",
            "Progressing",
            message,
            EventType::Normal,
            1_578_607_635_167,
        )
    }

    const WINDOW: u64 = 30_000;

    /// Admits and says whether to send.
    fn sends(pairing: &mut SourcePairing, source: Source, event: &FlaggerEvent, at: u64) -> bool {
        matches!(pairing.admit(source, event, at), Pairing::First { .. })
    }

    #[test]
    fn the_second_source_of_one_action_is_not_sent() {
        let mut pairing = SourcePairing::new(WINDOW);
        let e = event("podinfo", "Advance podinfo.test canary weight 10");
        assert!(sends(&mut pairing, Source::Webhook, &e, 1_000));
        assert!(!sends(&mut pairing, Source::Watch, &e, 1_800));
        // Either source may come first.
        let f = event("podinfo", "Advance podinfo.test canary weight 20");
        assert!(sends(&mut pairing, Source::Watch, &f, 2_000));
        assert!(!sends(&mut pairing, Source::Webhook, &f, 2_001));
    }

    #[test]
    fn repeated_messages_are_each_sent_once() {
        let mut pairing = SourcePairing::new(WINDOW);
        let halt = event(
            "podinfo",
            "Halt advancement no values found for metric request-success-rate",
        );
        // Flagger repeats the message every 10 s; both sources report each repetition.
        for k in 0..5u64 {
            let t = 10_000 * k;
            assert!(
                sends(&mut pairing, Source::Webhook, &halt, t),
                "repetition {k}"
            );
            assert!(
                !sends(&mut pairing, Source::Watch, &halt, t + 700),
                "repetition {k}"
            );
        }
        // The same source twice is two actions, not a duplicate.
        assert!(sends(&mut pairing, Source::Webhook, &halt, 60_000));
        assert!(sends(&mut pairing, Source::Webhook, &halt, 60_001));
    }

    #[test]
    fn an_event_only_one_source_reported_is_sent() {
        let mut pairing = SourcePairing::new(WINDOW);
        let halt = event("podinfo", "Halt advancement");
        // The Event recorder's spam filter dropped the second repetition's Event.
        assert!(sends(&mut pairing, Source::Webhook, &halt, 0));
        assert!(!sends(&mut pairing, Source::Watch, &halt, 500));
        assert!(sends(&mut pairing, Source::Webhook, &halt, 10_000));
        assert!(sends(&mut pairing, Source::Webhook, &halt, 20_000));
        // A late Event pairs with one of the unpaired webhook arrivals, not with both.
        assert!(!sends(&mut pairing, Source::Watch, &halt, 20_300));
        assert!(!sends(&mut pairing, Source::Watch, &halt, 20_400));
        assert!(sends(&mut pairing, Source::Watch, &halt, 20_500));
    }

    #[test]
    fn the_second_report_names_the_first() {
        let mut pairing = SourcePairing::new(WINDOW);
        let e = event("podinfo", "Advance podinfo.test canary weight 10");
        let Pairing::First { id } = pairing.admit(Source::Webhook, &e, 0) else {
            panic!("the first report is sent");
        };
        let other = pairing.admit(Source::Webhook, &event("other", "m"), 1);
        assert_ne!(other, Pairing::First { id });
        assert_eq!(
            pairing.admit(Source::Watch, &e, 2),
            Pairing::Second { first: id }
        );
    }

    #[test]
    fn pairs_only_within_the_window() {
        let mut pairing = SourcePairing::new(WINDOW);
        let e = event("podinfo", "New revision detected! Scaling up podinfo.test");
        assert!(sends(&mut pairing, Source::Watch, &e, 0));
        assert!(sends(&mut pairing, Source::Webhook, &e, WINDOW + 1));
    }

    #[test]
    fn different_canaries_types_and_messages_are_different_events() {
        let mut pairing = SourcePairing::new(WINDOW);
        let e = event("podinfo", "Canary failed! Rolling back podinfo.test");
        assert!(sends(&mut pairing, Source::Webhook, &e, 0));
        assert!(sends(
            &mut pairing,
            Source::Watch,
            &event("other", e.message()),
            1
        ));
        assert!(sends(
            &mut pairing,
            Source::Watch,
            &event("podinfo", "Canary failed!"),
            2
        ));
        let warning = FlaggerEvent::new(
            "podinfo",
            "test",
            "Failed",
            e.message(),
            EventType::Warning,
            0,
        );
        assert!(sends(&mut pairing, Source::Watch, &warning, 3));
        // The phase, checksum and timestamp may differ between the two reports.
        let from_cluster = FlaggerEvent::new(
            "podinfo",
            "test",
            "Failed",
            e.message(),
            EventType::Normal,
            9,
        )
        .with_checksum("abc");
        assert!(!sends(&mut pairing, Source::Watch, &from_cluster, 4));
    }

    #[test]
    fn expired_entries_are_swept() {
        let mut pairing = SourcePairing::new(WINDOW);
        let n = SourcePairing::SWEEP_EVERY as u64 - 1;
        for k in 0..n {
            pairing.admit(Source::Webhook, &event(&format!("app-{k}"), "m"), k);
        }
        assert_eq!(pairing.len(), n as usize);
        // The next arrival, a window later, sweeps the expired ones out.
        pairing.admit(Source::Webhook, &event("late", "m"), n + WINDOW + 1);
        assert_eq!(pairing.len(), 1);
    }
}
