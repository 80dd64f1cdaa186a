//! What Herald remembers of one canary, and the watermark rule that keeps it small.
//!
//! A canary's Kubernetes Events are handled in the order they happened (re-lists are sorted
//! by time), so what was handled is summed up by a watermark: every Event older than `floor`
//! is handled, and of the Events at or after it, those in `seen` (by `<uid>:<count>`). The
//! floor moves up to the newest handled Event's time, but never past an Event still being
//! sent: a crash then resends that Event (at-least-once) instead of losing it. Usually `seen`
//! holds the one or two Events of the latest second, so a record stays near 100 bytes
//! however long the canary's history.

use std::collections::BTreeMap;

use herald_core::receivers::ThreadParent;
use serde::{Deserialize, Serialize};

/// Keys kept in `seen` at most (reached only while many Events wait behind a stuck one);
/// beyond it the oldest fold into the floor.
pub const MAX_SEEN: usize = 100;

/// What was handled for one canary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRecord {
    /// Events older than this (unix ms) count as handled.
    #[serde(default)]
    pub floor: i64,
    /// Handled Events at or after the floor: `<uid>:<count>` and the Event's time (unix ms).
    /// (`handled` is the name the first state format used, with the same shape.)
    #[serde(default, alias = "handled", skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: BTreeMap<String, i64>,
    /// The last canary phase Herald saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The terminal phase (Initialized, Succeeded, Failed) already announced for the current
    /// transition, by a Flagger Event or by Herald itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
    /// The canary's current rollout thread per threading receiver (Slack bot, Google Chat),
    /// by the receiver's thread scope.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threads: BTreeMap<String, ThreadParent>,
}

impl CanaryRecord {
    pub fn is_handled(&self, key: &str, time_ms: i64) -> bool {
        time_ms < self.floor || self.seen.contains_key(key)
    }

    /// Records a handled Event. `oldest_pending` is the time of this canary's oldest Event
    /// still being sent, if any: the floor stays at or below it.
    pub fn record(&mut self, key: &str, time_ms: i64, oldest_pending: Option<i64>) {
        if time_ms < self.floor {
            return;
        }
        self.seen.insert(key.to_owned(), time_ms);
        let newest = self.seen.values().copied().max().unwrap_or(time_ms);
        let floor = oldest_pending.map_or(newest, |pending| pending.min(newest));
        if floor > self.floor {
            self.floor = floor;
            self.seen.retain(|_, t| *t >= floor);
        }
        while self.seen.len() > MAX_SEEN {
            let (oldest_key, oldest_time) = self
                .seen
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, t)| (k.clone(), *t))
                .expect("not empty");
            self.seen.remove(&oldest_key);
            self.floor = self.floor.max(oldest_time + 1);
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_follows_the_newest_handled_event() {
        let mut record = CanaryRecord::default();
        assert!(!record.is_handled("a:1", 10));
        record.record("a:1", 10, None);
        assert!(record.is_handled("a:1", 10));
        assert!(
            !record.is_handled("a:2", 10),
            "the same Event seen again (count 2) is new"
        );
        record.record("b:1", 10, None);
        assert!(
            !record.is_handled("c:1", 10),
            "another Event of the same second"
        );
        for i in 0..1000 {
            record.record(&format!("k{i}:1"), 1000 + i, None);
        }
        assert_eq!(record.floor, 1999);
        assert_eq!(record.seen.len(), 1, "a long history keeps one key");
        assert!(record.is_handled("unknown:1", 1998), "older than the floor");
        assert!(!record.is_handled("unknown:1", 1999));
    }

    #[test]
    fn the_floor_never_passes_an_event_still_being_sent() {
        let mut record = CanaryRecord::default();
        // Event p (time 5) is being sent; later Events finish first.
        record.record("x:1", 7, Some(5));
        record.record("y:1", 9, Some(5));
        assert_eq!(record.floor, 5);
        assert!(!record.is_handled("p:1", 5), "resent after a crash");
        assert!(record.is_handled("y:1", 9));
        record.record("p:1", 5, None);
        assert_eq!(record.floor, 9);
        assert_eq!(record.seen, BTreeMap::from([("y:1".to_owned(), 9)]));
    }

    #[test]
    fn a_stuck_event_bounds_the_keys() {
        let mut record = CanaryRecord::default();
        for i in 0..=MAX_SEEN as i64 {
            record.record(&format!("k{i}:1"), 100 + i, Some(50));
        }
        assert_eq!(record.seen.len(), MAX_SEEN);
        assert_eq!(record.floor, 101, "the oldest key folds into the floor");
    }

    #[test]
    fn the_first_state_format_still_reads() {
        let old = r#"{"handled":{"uid-1:3":1700000000000},"floor":0,"phase":"Progressing"}"#;
        let record: CanaryRecord = serde_json::from_str(old).unwrap();
        assert!(record.is_handled("uid-1:3", 1_700_000_000_000));
        assert_eq!(
            record.to_json(),
            r#"{"floor":0,"seen":{"uid-1:3":1700000000000},"phase":"Progressing"}"#
        );
    }
}
