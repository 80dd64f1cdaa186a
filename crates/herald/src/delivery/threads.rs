//! Where the canaries' rollout threads are kept between their messages.

use std::collections::HashMap;

use herald_core::receivers::{ThreadParent, ThreadRef};
use tracing::warn;

/// Where receivers that thread rollouts keep each canary's current thread, so replies find
/// it, also after a restart when the store persists.
pub trait ThreadStore: Send + Sync {
    fn parent(&self, thread: &ThreadRef) -> Option<ThreadParent>;
    fn remember(&self, thread: &ThreadRef, parent: ThreadParent);
}

/// Threads in memory, the most recently started [`MemoryThreads::CAPACITY`]; written to a
/// JSON file on every change when given one (`herald serve --state-file`).
pub struct MemoryThreads {
    entries: std::sync::Mutex<Remembered>,
    file: Option<std::path::PathBuf>,
}

/// Threads by key, each with its insertion number (the oldest is forgotten first), and the
/// last number given.
type Remembered = (u64, HashMap<String, (u64, ThreadParent)>);

/// The state file: threads oldest first.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedThreads {
    threads: Vec<(String, ThreadParent)>,
}

impl MemoryThreads {
    pub const CAPACITY: usize = 10_000;

    pub fn new() -> Self {
        MemoryThreads {
            entries: Default::default(),
            file: None,
        }
    }

    /// Loads the file if it exists. It is a cache: a file that cannot be read or parsed is
    /// logged, moved aside (`.bad`) and Herald starts with no threads rather than not at all.
    pub fn persisted(path: std::path::PathBuf) -> Self {
        let saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<SavedThreads>(&bytes) {
                Ok(saved) => saved.threads,
                Err(e) => {
                    let aside = path.with_extension("bad");
                    warn!(path = %path.display(), error = %e, moved_to = %aside.display(),
                        "the thread state file is unreadable; starting without threads");
                    let _ = std::fs::rename(&path, &aside);
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn!(path = %path.display(), error = %e,
                    "cannot read the thread state file; starting without threads");
                Vec::new()
            }
        };
        let map: HashMap<String, (u64, ThreadParent)> = saved
            .into_iter()
            .enumerate()
            .map(|(i, (key, parent))| (key, (i as u64, parent)))
            .collect();
        MemoryThreads {
            entries: std::sync::Mutex::new((map.len() as u64, map)),
            file: Some(path),
        }
    }

    /// Writes the file: a temporary file, flushed to disk, then renamed over the old one, so
    /// a crash leaves the old file or the new one, never half of one.
    fn save(path: &std::path::Path, map: &HashMap<String, (u64, ThreadParent)>) {
        let mut threads: Vec<(&String, &(u64, ThreadParent))> = map.iter().collect();
        threads.sort_by_key(|(_, (n, _))| *n);
        let saved = SavedThreads {
            threads: threads
                .into_iter()
                .map(|(key, (_, parent))| (key.clone(), parent.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&saved).expect("threads serialise");
        if let Err(e) = crate::state_file::write_atomically(path, &bytes) {
            warn!(path = %path.display(), error = %e, "could not save the thread state");
        }
    }
}

impl Default for MemoryThreads {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadStore for MemoryThreads {
    fn parent(&self, thread: &ThreadRef) -> Option<ThreadParent> {
        let entries = self.entries.lock().expect("thread lock poisoned");
        entries.1.get(&thread.key()).map(|(_, p)| p.clone())
    }

    fn remember(&self, thread: &ThreadRef, parent: ThreadParent) {
        let mut entries = self.entries.lock().expect("thread lock poisoned");
        let (counter, map) = &mut *entries;
        *counter += 1;
        map.insert(thread.key(), (*counter, parent));
        if map.len() > Self::CAPACITY {
            let oldest = map
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| k.clone())
                .expect("not empty");
            map.remove(&oldest);
        }
        if let Some(path) = &self.file {
            // A new thread starts once per rollout: rare enough to write the file each time.
            Self::save(path, map);
        }
    }
}
