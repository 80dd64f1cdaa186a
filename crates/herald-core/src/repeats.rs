//! Holding back repeated messages (`spec.repeatInterval`). Flagger repeats some messages every
//! analysis interval for as long as a condition lasts ("Halt advancement ...", "waiting for
//! approval"); a policy may ask to send each at most once per interval. The key includes the
//! canary's revision, so the same message in the next rollout is not held back, and the
//! receiver, so one receiver's interval does not silence another.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::{FlaggerEvent, PolicyId};

/// When each repeated message may next be sent; times are milliseconds on the caller's
/// monotonic clock.
#[derive(Default)]
pub struct RepeatFilter {
    /// Message key to the time before which a repeat is held back.
    held_until: HashMap<u64, u64>,
    /// Decisions since expired entries were last swept out.
    since_sweep: usize,
}

impl RepeatFilter {
    const SWEEP_EVERY: usize = 1024;

    /// Whether the message with `key` went out less than its interval ago.
    pub fn is_held(&self, key: u64, now_ms: u64) -> bool {
        self.held_until
            .get(&key)
            .is_some_and(|until| *until > now_ms)
    }

    /// Records that the message with `key` went out now: repeats are held back for
    /// `interval_ms`. Only a message actually sent (queued) starts an interval, so one that
    /// was dropped does not silence the next.
    pub fn mark_sent(&mut self, key: u64, interval_ms: u64, now_ms: u64) {
        self.since_sweep += 1;
        if self.since_sweep >= Self::SWEEP_EVERY {
            self.held_until.retain(|_, until| *until > now_ms);
            self.since_sweep = 0;
        }
        self.held_until
            .insert(key, now_ms.saturating_add(interval_ms));
    }

    /// Takes back [`mark_sent`](Self::mark_sent)`(key, interval_ms, marked_at_ms)`: the
    /// message was not queued after all (its event could not be stored and was refused), so
    /// the sender's retry must not be held back. A later mark of the key is left alone.
    pub fn unmark(&mut self, key: u64, interval_ms: u64, marked_at_ms: u64) {
        let until = marked_at_ms.saturating_add(interval_ms);
        if self.held_until.get(&key) == Some(&until) {
            self.held_until.remove(&key);
        }
    }

    /// Checks and marks in one: whether to send now, counting it as sent if so.
    pub fn should_send(&mut self, key: u64, interval_ms: u64, now_ms: u64) -> bool {
        if self.is_held(key, now_ms) {
            return false;
        }
        self.mark_sent(key, interval_ms, now_ms);
        true
    }

    /// Messages currently held back.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held_until.len()
    }
}

/// What makes two notifications the same message: the policy and receiver, the canary, its
/// revision (`checksum`), the event type and the text.
pub fn repeat_key(policy: &PolicyId, receiver: &str, event: &FlaggerEvent) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    policy.hash(&mut hasher);
    receiver.hash(&mut hasher);
    event.namespace.hash(&mut hasher);
    event.name.hash(&mut hasher);
    event.checksum.hash(&mut hasher);
    event.event_type().as_str().hash(&mut hasher);
    event.message().hash(&mut hasher);
    hasher.finish()
}

/// Parses a duration written as `spec.repeatInterval` allows: one or more `<digits><unit>`
/// with units `ms`, `s`, `m`, `h` (Go's notation without fractions), e.g. `1h30m`.
pub fn parse_interval(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a duration such as 30s, 10m or 1h30m");
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(invalid());
        };
        rest = &rest[unit_len..];
        total = amount
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(invalid)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_api::EventType;

    fn halt(checksum: &str) -> FlaggerEvent {
        FlaggerEvent::new(
            "podinfo",
            "test",
            "Progressing",
            "Halt podinfo.test advancement waiting for approval confirm-rollout",
            EventType::Normal,
            0,
        )
        .with_checksum(checksum)
    }

    #[test]
    fn a_repeat_is_held_back_until_the_interval_has_passed() {
        let mut filter = RepeatFilter::default();
        let key = repeat_key(&PolicyId::namespaced("test", "team"), "chat", &halt("r1"));
        assert!(filter.should_send(key, 600_000, 0));
        assert!(!filter.should_send(key, 600_000, 60_000));
        assert!(!filter.should_send(key, 600_000, 599_999));
        assert!(filter.should_send(key, 600_000, 600_000));
        assert!(!filter.should_send(key, 600_000, 660_000));
    }

    #[test]
    fn only_a_message_marked_sent_starts_an_interval() {
        let mut filter = RepeatFilter::default();
        // Checked, then dropped from a full queue: not marked, so not held back.
        assert!(!filter.is_held(7, 0));
        assert!(!filter.is_held(7, 1_000));
        filter.mark_sent(7, 60_000, 1_000);
        assert!(filter.is_held(7, 2_000));
        assert!(!filter.is_held(7, 61_000));
    }

    #[test]
    fn a_mark_taken_back_holds_nothing_but_a_later_mark_stays() {
        let mut filter = RepeatFilter::default();
        filter.mark_sent(7, 60_000, 1_000);
        filter.unmark(7, 60_000, 1_000);
        assert!(
            !filter.is_held(7, 1_500),
            "the refused message's retry is sent"
        );
        filter.mark_sent(7, 60_000, 2_000);
        filter.unmark(7, 60_000, 1_000);
        assert!(filter.is_held(7, 2_500), "the retry's own mark is kept");
    }

    #[test]
    fn the_key_tells_revisions_receivers_policies_and_messages_apart() {
        let team = PolicyId::namespaced("test", "team");
        let base = repeat_key(&team, "chat", &halt("r1"));
        assert_eq!(base, repeat_key(&team, "chat", &halt("r1")));
        assert_ne!(base, repeat_key(&team, "chat", &halt("r2")));
        assert_ne!(base, repeat_key(&team, "pager", &halt("r1")));
        assert_ne!(
            base,
            repeat_key(&PolicyId::cluster("team"), "chat", &halt("r1"))
        );
        let other = FlaggerEvent::new(
            "podinfo",
            "test",
            "Progressing",
            "Advance",
            EventType::Normal,
            0,
        )
        .with_checksum("r1");
        assert_ne!(base, repeat_key(&team, "chat", &other));
        // The phase and the timestamp are not part of a message's identity.
        let mut later = halt("r1");
        later.phase = "Waiting".into();
        assert_eq!(base, repeat_key(&team, "chat", &later));
    }

    #[test]
    fn expired_entries_are_swept() {
        let mut filter = RepeatFilter::default();
        for key in 0..RepeatFilter::SWEEP_EVERY as u64 - 1 {
            filter.should_send(key, 1_000, 0);
        }
        assert_eq!(filter.len(), RepeatFilter::SWEEP_EVERY - 1);
        filter.should_send(u64::MAX, 1_000, 5_000);
        assert_eq!(filter.len(), 1);
    }

    #[test]
    fn intervals_parse_like_go_durations_without_fractions() {
        assert_eq!(parse_interval("30s"), Ok(30_000));
        assert_eq!(parse_interval("10m"), Ok(600_000));
        assert_eq!(parse_interval("1h30m"), Ok(5_400_000));
        assert_eq!(parse_interval("250ms"), Ok(250));
        assert_eq!(parse_interval("0s"), Ok(0));
        for bad in [
            "",
            "10",
            "m",
            "1.5h",
            "10 m",
            "1d",
            "-5s",
            "99999999999999999999h",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_interval("1d"),
            Err("\"1d\" is not a duration such as 30s, 10m or 1h30m".to_owned())
        );
    }
}
