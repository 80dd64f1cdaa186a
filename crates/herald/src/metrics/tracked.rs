//! The bounded set of canaries `herald_canary_status` has series for (and the durable
//! queue keeps phases for): at most [`MAX_TRACKED_CANARIES`](super::MAX_TRACKED_CANARIES),
//! the longest-finished one making room for a newcomer, failed ones kept.

use std::collections::{BTreeMap, HashMap};

use herald_api::CanaryPhase;

/// How a tracked canary may be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Succeeded or Initialized: evicted first.
    Finished,
    /// Failed: never evicted (a refused newcomer is counted instead).
    Failed,
    /// Anything else (progressing, waiting, promoting...).
    Active,
}

impl Class {
    pub(crate) fn of(phase: CanaryPhase) -> Class {
        match phase {
            CanaryPhase::Failed => Class::Failed,
            CanaryPhase::Succeeded | CanaryPhase::Initialized => Class::Finished,
            _ => Class::Active,
        }
    }
}

/// `(name, namespace)`.
pub(crate) type CanaryKey = (String, String);

/// The canaries `herald_canary_status` has series for, in the order they were last updated
/// (also the durable queue's canaries table, bounded the same way).
#[derive(Default)]
pub(crate) struct Tracked {
    by_key: HashMap<CanaryKey, (u64, Class)>,
    finished: BTreeMap<u64, CanaryKey>,
    active: BTreeMap<u64, CanaryKey>,
    next: u64,
}

impl Tracked {
    fn order(&mut self, class: Class) -> Option<&mut BTreeMap<u64, CanaryKey>> {
        match class {
            Class::Finished => Some(&mut self.finished),
            Class::Active => Some(&mut self.active),
            Class::Failed => None,
        }
    }

    /// Numbers updates from `after + 1` on (to follow updates numbered before a restart).
    pub(crate) fn starting_after(after: u64) -> Self {
        Tracked {
            next: after + 1,
            ..Default::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn contains(&self, key: &CanaryKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Records an update of `key`; returns its number in the update order.
    pub(crate) fn put(&mut self, key: CanaryKey, class: Class) -> u64 {
        let seq = self.next;
        self.next += 1;
        if let Some((old_seq, old_class)) = self.by_key.insert(key.clone(), (seq, class)) {
            if let Some(order) = self.order(old_class) {
                order.remove(&old_seq);
            }
        }
        if let Some(order) = self.order(class) {
            order.insert(seq, key);
        }
        seq
    }

    /// Makes room for a canary of `class`: the evicted canary and why, or `Err` (refused).
    pub(crate) fn make_room(&mut self, class: Class) -> Result<(CanaryKey, &'static str), ()> {
        let (key, reason) = if let Some((_, key)) = self.finished.pop_first() {
            (key, "finished")
        } else if class == Class::Failed {
            match self.active.pop_first() {
                Some((_, key)) => (key, "not_failed"),
                None => return Err(()),
            }
        } else {
            return Err(());
        };
        self.by_key.remove(&key);
        Ok((key, reason))
    }
}
