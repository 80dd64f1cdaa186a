//! Leader election with a coordination.k8s.io/v1 Lease, with fencing: the leader knows until
//! when its lease is certainly still its own, and Herald sends nothing for the cluster's
//! Events past that instant (a paused or partitioned leader stops on its own), and releases
//! the lease on shutdown so the other replica takes over at once.
//!
//! The algorithm is client-go's `leaderelection` (the one kube-controller-manager uses): the
//! holder renews `renewTime` every [`RETRY`]; a candidate takes the lease over when its record
//! has not changed for `leaseDurationSeconds` by the candidate's own clock, or at once when it
//! has no holder. Writes are merge patches carrying the `resourceVersion` they were based on,
//! so two candidates never both win. kube-lease-manager (used before) exposes no renewal time,
//! so it could not tell a leader when to stop sending.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How long a lease lasts after its last renewal, as written in the Lease.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The leader stops sending this long after the start of its last successful renewal: well
/// inside [`LEASE_DURATION`], so clock-rate differences and the other replica's polling
/// cannot make two replicas send at once.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a candidate looks at the lease.
pub const RETRY: Duration = Duration::from_secs(2);

/// Whether this replica may act for the cluster right now: the fence every watched Event's
/// notification and every state write checks.
#[derive(Clone)]
pub struct Fence {
    /// `None` without leader election: the single replica always holds.
    valid_until: Option<Arc<Mutex<Option<Instant>>>>,
}

impl Fence {
    /// The fence of a replica that runs alone (no leader election).
    pub fn always() -> Self {
        Fence { valid_until: None }
    }

    /// The check in the form the delivery engine takes (it knows nothing of leases).
    pub fn checker(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let fence = self.clone();
        move || fence.holds()
    }

    pub fn holds(&self) -> bool {
        match &self.valid_until {
            None => true,
            Some(until) => until
                .lock()
                .expect("fence lock")
                .is_some_and(|t| Instant::now() < t),
        }
    }
}

/// What the elector reports: whether this replica leads, and its fence.
pub struct Leadership {
    pub leading: watch::Receiver<bool>,
    pub fence: Fence,
    /// Ends the election and releases the lease; `None` without leader election.
    task: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// Keeps the `leading` channel open when there is no election: a closed channel would
    /// make every wait on it end at once.
    _always: Option<watch::Sender<bool>>,
}

impl Leadership {
    /// One replica, no Lease: leads from the start, for good.
    pub fn single() -> Self {
        let (always, leading) = watch::channel(true);
        Leadership {
            leading,
            fence: Fence::always(),
            task: None,
            _always: Some(always),
        }
    }

    /// Starts campaigning for the Lease `name` in `namespace` as `identity`.
    pub fn elect(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        let (leading_tx, leading) = watch::channel(false);
        let valid_until = Arc::new(Mutex::new(None));
        let (stop_tx, stop_rx) = watch::channel(false);
        let elector = Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            valid_until: valid_until.clone(),
            leading: leading_tx,
            observed: None,
            held: None,
        };
        let task = tokio::spawn(elector.run(stop_rx));
        Leadership {
            leading,
            fence: Fence {
                valid_until: Some(valid_until),
            },
            task: Some((stop_tx, task)),
            _always: None,
        }
    }

    /// Stops renewing and gives the lease up, so another replica takes over at once.
    pub async fn release(self) {
        if let Some((stop, task)) = self.task {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    valid_until: Arc<Mutex<Option<Instant>>>,
    leading: watch::Sender<bool>,
    /// The other holder's record as last seen, and when this replica saw it change.
    observed: Option<(String, Instant)>,
    /// While this replica holds the lease: what it last wrote, so a renewal is one
    /// conditional patch (no GET first).
    held: Option<HeldLease>,
}

/// The Lease as this replica last wrote it.
struct HeldLease {
    resource_version: Option<String>,
    acquired: Option<MicroTime>,
    transitions: i32,
}

/// What one look at the Lease found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the lease, renewed by the request that started at this instant.
    Held(Instant),
    /// Another replica holds it.
    Other,
}

impl Elector {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held(renewed_at)) => {
                    *self.valid_until.lock().expect("fence lock") =
                        Some(renewed_at + RENEW_DEADLINE);
                    self.set_leading(true);
                }
                Ok(Attempt::Other) => self.step_down("another replica holds the lease"),
                Err(e) => {
                    warn!(lease = %self.name, error = %e, "cannot renew or acquire the lease");
                    let expired = self
                        .valid_until
                        .lock()
                        .expect("fence lock")
                        .is_none_or(|t| Instant::now() >= t);
                    if expired {
                        self.step_down("the lease could not be renewed in time");
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        if *self.leading.borrow() {
            self.step_down("shutting down");
            match self.release().await {
                Ok(()) => info!(lease = %self.name, "lease released"),
                Err(e) => warn!(lease = %self.name, error = %e, "could not release the lease"),
            }
        }
    }

    fn set_leading(&self, leading: bool) {
        self.leading.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }

    fn step_down(&mut self, why: &str) {
        self.held = None;
        *self.valid_until.lock().expect("fence lock") = None;
        if *self.leading.borrow() {
            info!(lease = %self.name, reason = why, "stepping down");
        }
        self.set_leading(false);
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        if let Some(held) = self.held.take() {
            match self
                .write(held.acquired, held.transitions, held.resource_version)
                .await
            {
                Ok(()) => return Ok(Attempt::Held(started)),
                // Changed (or deleted) meanwhile: look at it.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = self.record(None, 0);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.held = Some(HeldLease {
                        resource_version: created.metadata.resource_version,
                        acquired: created.spec.and_then(|s| s.acquire_time),
                        transitions: 0,
                    });
                    Ok(Attempt::Held(started))
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Other),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder != self.identity && !holder.is_empty() {
            // client-go's rule: the lease is expired when its record has not changed for
            // its duration by this replica's clock (the clocks of two nodes are not compared).
            let record = format!(
                "{holder}/{:?}/{:?}",
                spec.renew_time, lease.metadata.resource_version
            );
            let duration = spec
                .lease_duration_seconds
                .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(1) as u64));
            let seen_since = match &self.observed {
                Some((seen, since)) if *seen == record => *since,
                _ => {
                    self.observed = Some((record, started));
                    started
                }
            };
            if started.duration_since(seen_since) < duration {
                return Ok(Attempt::Other);
            }
            info!(lease = %self.name, previous = %holder, "the lease expired: taking it over");
        }
        let acquired = if holder == self.identity {
            spec.acquire_time.clone()
        } else {
            None
        };
        let next = if holder == self.identity {
            transitions
        } else {
            transitions + 1
        };
        match self
            .write(acquired, next, lease.metadata.resource_version)
            .await
        {
            Ok(()) => {
                if holder != self.identity {
                    info!(lease = %self.name, identity = %self.identity, "acquired the lease");
                }
                self.observed = None;
                Ok(Attempt::Held(started))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                debug!(lease = %self.name, "lease changed meanwhile");
                Ok(Attempt::Other)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes this replica as the holder, on the condition that the Lease is still at
    /// `resource_version` (409 otherwise), and remembers what it wrote.
    async fn write(
        &mut self,
        acquired: Option<MicroTime>,
        transitions: i32,
        resource_version: Option<String>,
    ) -> Result<(), kube::Error> {
        let mut patch = serde_json::to_value(self.record(acquired, transitions)).expect("a Lease");
        patch["metadata"] = json!({ "resourceVersion": resource_version });
        let written = self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.held = Some(HeldLease {
            resource_version: written.metadata.resource_version,
            acquired: written.spec.and_then(|s| s.acquire_time),
            transitions,
        });
        Ok(())
    }

    /// The Lease as this replica writes it when it holds it.
    fn record(&self, acquired: Option<MicroTime>, transitions: i32) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// Gives the lease up the way client-go does: no holder, so candidates take it at once.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let patch = json!({
            "metadata": { "resourceVersion": lease.metadata.resource_version },
            "spec": {
                "holderIdentity": null,
                "leaseDurationSeconds": 1,
                "renewTime": MicroTime(jiff::Timestamp::now()),
            }
        });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_holds_until_the_renewal_deadline_and_never_without_a_renewal() {
        let until = Arc::new(Mutex::new(None));
        let fence = Fence {
            valid_until: Some(until.clone()),
        };
        assert!(!fence.holds(), "never renewed");
        *until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(5));
        assert!(fence.holds());
        let check = fence.checker();
        assert!(check());
        // What a paused process sees when it resumes: the deadline is behind it.
        *until.lock().unwrap() = Some(Instant::now() - Duration::from_millis(1));
        assert!(!fence.holds());
        assert!(!check());
        assert!(Fence::always().holds());
    }

    #[test]
    fn the_deadline_is_well_inside_the_lease() {
        assert!(RENEW_DEADLINE + RETRY * 2 <= LEASE_DURATION);
    }
}
