//! The bounded set of canaries `herald_canary_status` has series for (and the durable
//! queue keeps phases for): at most [`MAX_TRACKED_CANARIES`](super::MAX_TRACKED_CANARIES),
//! the longest-finished one making room for a newcomer, failed ones kept.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

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

/// A canary's key as borrowed strings, so that a tracked canary is found without building
/// a `CanaryKey` (two `String`s) for every event.
trait Pair {
    fn pair(&self) -> (&str, &str);
}

impl Pair for CanaryKey {
    fn pair(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Pair for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        *self
    }
}

impl<'a> Borrow<dyn Pair + 'a> for CanaryKey {
    fn borrow(&self) -> &(dyn Pair + 'a) {
        self
    }
}

// As `(String, String)` hashes and compares (a tuple hashes its fields in order, a `String`
// as its `str`), which `Borrow` requires.
impl Hash for dyn Pair + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pair().hash(state)
    }
}

impl PartialEq for dyn Pair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn Pair + '_ {}

/// The canaries `herald_canary_status` has series for, in the order they were last updated
/// (also the durable queue's canaries table, bounded the same way). Each holds a `V`: the
/// metric keeps its series' gauge there, so an update needs no lookup by labels.
pub(crate) struct Tracked<V = ()> {
    by_key: HashMap<CanaryKey, (u64, Class, V)>,
    finished: BTreeMap<u64, CanaryKey>,
    active: BTreeMap<u64, CanaryKey>,
    next: u64,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked {
            by_key: HashMap::new(),
            finished: BTreeMap::new(),
            active: BTreeMap::new(),
            next: 0,
        }
    }
}

fn order<'a>(
    finished: &'a mut BTreeMap<u64, CanaryKey>,
    active: &'a mut BTreeMap<u64, CanaryKey>,
    class: Class,
) -> Option<&'a mut BTreeMap<u64, CanaryKey>> {
    match class {
        Class::Finished => Some(finished),
        Class::Active => Some(active),
        Class::Failed => None,
    }
}

impl Tracked<()> {
    /// Records an update of `key`; returns its number in the update order.
    pub(crate) fn put(&mut self, key: CanaryKey, class: Class) -> u64 {
        self.insert(key, class, ())
    }
}

impl<V> Tracked<V> {
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

    /// Records an update of `key`, holding `value`; returns its number in the update order.
    pub(crate) fn insert(&mut self, key: CanaryKey, class: Class, value: V) -> u64 {
        let seq = self.next;
        self.next += 1;
        if let Some((old_seq, old_class, _)) = self.by_key.insert(key.clone(), (seq, class, value))
        {
            if let Some(order) = order(&mut self.finished, &mut self.active, old_class) {
                order.remove(&old_seq);
            }
        }
        if let Some(order) = order(&mut self.finished, &mut self.active, class) {
            order.insert(seq, key);
        }
        seq
    }

    /// Records an update of a canary already tracked, as [`Self::insert`] would (it becomes
    /// the last updated), without allocating: its key moves from its old place in the order
    /// to the new one. `None` if the canary is not tracked.
    pub(crate) fn update(&mut self, name: &str, namespace: &str, class: Class) -> Option<&V> {
        let Tracked {
            by_key,
            finished,
            active,
            next,
        } = self;
        let entry = by_key.get_mut(&(name, namespace) as &dyn Pair)?;
        let seq = *next;
        *next += 1;
        let (old_seq, old_class) = (entry.0, entry.1);
        (entry.0, entry.1) = (seq, class);
        let key = order(finished, active, old_class).and_then(|order| order.remove(&old_seq));
        if let Some(order) = order(finished, active, class) {
            order.insert(
                seq,
                key.unwrap_or_else(|| (name.to_owned(), namespace.to_owned())),
            );
        }
        Some(&entry.2)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `update` of a tracked canary leaves the order exactly as `put` does: the same canaries
    /// are evicted in the same order afterwards.
    #[test]
    fn update_orders_as_put_does() {
        let classes = [Class::Finished, Class::Active, Class::Failed];
        let (mut by_put, mut by_update) = (Tracked::default(), Tracked::default());
        for i in 0..400u32 {
            let name = format!("c{}", i * 7 % 13);
            let class = classes[(i * 5 % 7 % 3) as usize];
            let a = by_put.put((name.clone(), "ns".to_owned()), class);
            let b = match by_update.update(&name, "ns", class) {
                Some(&()) => by_update.next - 1,
                None => by_update.put((name, "ns".to_owned()), class),
            };
            assert_eq!(a, b);
        }
        assert_eq!(by_put.len(), by_update.len());
        loop {
            let (a, b) = (
                by_put.make_room(Class::Failed),
                by_update.make_room(Class::Failed),
            );
            assert_eq!(a, b);
            if a.is_err() {
                break;
            }
        }
        assert_eq!(by_put.len(), by_update.len());
    }
}
