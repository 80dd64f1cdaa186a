//! Rollout threads (Slack's `thread_ts`, Google Chat's thread keys) kept in the state
//! ConfigMaps with the canary's record, so a restarted or newly elected Herald still threads
//! a rollout's replies under its first message.

use std::sync::{Arc, Mutex};

use herald_core::receivers::{ThreadParent, ThreadRef};

use super::{CanaryRef, StateStore};
use crate::delivery::{MemoryThreads, ThreadStore};

/// Rollout threads in the state ConfigMap, with the canary's record, so a restarted or newly
/// elected Herald still threads a rollout's replies. Until the state is loaded (before
/// leadership) they are kept in memory.
pub struct StateThreads {
    pub slot: Arc<Mutex<Option<Arc<StateStore>>>>,
    pub fallback: MemoryThreads,
}

impl StateThreads {
    fn store(&self) -> Option<Arc<StateStore>> {
        self.slot.lock().expect("state slot").clone()
    }
}

fn canary_of(thread: &ThreadRef) -> CanaryRef {
    CanaryRef {
        namespace: thread.namespace.clone(),
        name: thread.canary.clone(),
    }
}

impl ThreadStore for StateThreads {
    fn parent(&self, thread: &ThreadRef) -> Option<ThreadParent> {
        if let Some(store) = self.store() {
            if let Some(found) = store.get(&canary_of(thread)).threads.get(&thread.scope) {
                return Some(found.clone());
            }
        }
        self.fallback.parent(thread)
    }

    fn remember(&self, thread: &ThreadRef, parent: ThreadParent) {
        self.fallback.remember(thread, parent.clone());
        if let Some(store) = self.store() {
            // One entry per threading receiver of the canary: bounded by the policies.
            store.update(&canary_of(thread), |record| {
                record.threads.insert(thread.scope.clone(), parent);
            });
        }
    }
}
