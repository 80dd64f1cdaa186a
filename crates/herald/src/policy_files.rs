//! Standalone policies: YAML files and directories on disk, reloaded when they change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use herald_core::{load_sources, LoadProblem, Loaded, PolicySet};
use tracing::{error, info};

use crate::metrics::{Metrics, ResultLabels};
use crate::{Error, Result};

/// Where standalone policies come from and how they are compiled.
#[derive(Clone, Debug)]
pub struct PolicyFiles {
    pub paths: Vec<PathBuf>,
    pub cluster: String,
    /// Where cluster policies' Secret references are resolved.
    pub namespace: String,
}

/// The state of the policy files, compared to notice edits.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Policies that could not all be loaded.
#[derive(Debug)]
pub struct Rejected {
    pub problems: Vec<LoadProblem>,
}

/// The policy files read and compiled.
pub struct Compiled {
    /// How many files were read.
    pub files: usize,
    /// Every document found: policies, Secrets, problems, skipped documents.
    pub loaded: Loaded,
    /// The valid policies.
    pub set: PolicySet,
}

impl PolicyFiles {
    /// The YAML files named, directories expanded to their `*.yaml`/`*.yml` files (sorted,
    /// not recursive).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for path in &self.paths {
            let meta = std::fs::metadata(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    })?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|ext| ext == "yaml" || ext == "yml")
                            && p.is_file()
                    })
                    .collect();
                found.sort();
                files.extend(found);
            } else {
                files.push(path.clone());
            }
        }
        Ok(files)
    }

    /// Reads and compiles every policy. Any problem rejects the whole set, so a bad edit
    /// never half-applies.
    pub fn load(&self) -> Result<std::result::Result<PolicySet, Rejected>> {
        let (_, loaded) = self.read()?;
        // Only the set is kept: compiled dropping each parsed policy on the way.
        let (set, problems) = loaded.into_set(&self.cluster, &self.namespace);
        if problems.is_empty() {
            Ok(Ok(set))
        } else {
            Ok(Err(Rejected { problems }))
        }
    }

    /// Reads and compiles every policy, keeping all that was found on the way: `herald check`
    /// reports it, [`Self::load`] keeps only the set, and only when nothing is wrong.
    pub fn compile(&self) -> Result<Compiled> {
        let (files, mut loaded) = self.read()?;
        let set = loaded.build(&self.cluster, &self.namespace);
        Ok(Compiled { files, loaded, set })
    }

    /// Reads and parses every file: how many there were, and what they hold.
    fn read(&self) -> Result<(usize, Loaded)> {
        let files = self.files()?;
        let mut texts = Vec::with_capacity(files.len());
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
                path: file.clone(),
                source,
            })?;
            texts.push((file.display().to_string(), text));
        }
        let loaded = load_sources(
            texts
                .iter()
                .map(|(name, text)| (name.as_str(), text.as_str())),
        );
        Ok((files.len(), loaded))
    }

    /// What identifies the current state of the files: paths, sizes and modification times.
    /// Taken before a load, so an edit made during the load is seen as a change.
    pub fn fingerprint(&self) -> Fingerprint {
        self.files()
            .unwrap_or_default()
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (path, len, modified)
            })
            .collect()
    }
}

/// Loads once; on success swaps the policies in, on failure keeps the current ones and logs
/// every problem. Returns whether the new policies are in effect.
pub fn reload(files: &PolicyFiles, current: &ArcSwap<PolicySet>, metrics: &Metrics) -> bool {
    let outcome = files.load();
    match outcome {
        Ok(Ok(set)) if set.policies().is_empty() && !current.load().policies().is_empty() => {
            error!(
                policies_in_effect = current.load().policies().len(),
                "the policy files hold no policies now; keeping the policies in effect (restart Herald to run with none)"
            );
            metrics
                .policy_reloads
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            false
        }
        Ok(Ok(set)) => {
            info!(policies = set.policies().len(), "policies loaded");
            metrics.policies_loaded.set(set.policies().len() as i64);
            metrics
                .policy_reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            current.store(Arc::new(set));
            true
        }
        Ok(Err(rejected)) => {
            for problem in &rejected.problems {
                error!(problem = %problem, "invalid policy; keeping the policies in effect");
            }
            metrics
                .policy_reloads
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            false
        }
        Err(e) => {
            error!(error = %e, "cannot read policies; keeping the policies in effect");
            metrics
                .policy_reloads
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            false
        }
    }
}

/// Reloads when the files differ from `last` (polled: robust to the symlink swaps of mounted
/// ConfigMaps) or on SIGHUP, until `stop` resolves.
pub async fn watch(
    files: PolicyFiles,
    mut last: Fingerprint,
    current: Arc<ArcSwap<PolicySet>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = hangup_signal();
    tokio::pin!(stop);
    loop {
        let forced = tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => false,
            _ = hangup.recv() => true,
        };
        let now = files.fingerprint();
        if forced || now != last {
            if forced {
                info!("SIGHUP: reloading policies");
            } else {
                info!("policy files changed: reloading");
            }
            reload(&files, &current, &metrics);
            last = now;
        }
    }
}

/// A stream of SIGHUPs; never yields where there are none (non-Unix).
fn hangup_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send(()).await.is_err() {
                        break;
                    }
                }
            });
            return rx;
        }
    }
    // Keep the sender alive so `recv` pends instead of returning None in a loop.
    std::mem::forget(tx);
    rx
}
