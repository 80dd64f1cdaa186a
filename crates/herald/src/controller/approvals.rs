//! Gate decisions in the API server: one `Approval` per canary revision, in the canary's
//! namespace. Every replica reads them from one watch cache (answers to Flagger never wait
//! on the API server) and writes them with a read-modify-write guarded by resourceVersion,
//! so two replicas deciding at once both see the other's decision, and the first counts.
//! Each decision is also a Kubernetes Event on the Canary.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use herald_api::flagger::Canary;
use herald_api::{Approval, ApprovalSpec, Decision, Verdict};
use herald_core::gates::RevisionKey;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use crate::gates::store::{ApprovalStore, Change};
use crate::gates::Audit;

/// Tries before a write gives up on conflicts with other writers.
const ATTEMPTS: usize = 5;

pub struct KubeApprovals {
    client: Client,
    cache: Store<Approval>,
    recorder: Recorder,
}

impl KubeApprovals {
    /// Starts watching Approvals in every namespace.
    pub fn start(
        client: Client,
        identity: String,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (Arc<KubeApprovals>, tokio::task::JoinHandle<()>) {
        let (cache, writer) = reflector::store();
        let watch = super::watches::backoff(watcher(
            Api::<Approval>::all(client.clone()),
            watcher::Config::default(),
        ))
        .reflect(writer)
        .for_each(|event| async move {
            if let Err(e) = event {
                warn!(error = %e, "Approval watch error; retrying");
            }
        });
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = watch => {}
                _ = stop => {}
            }
        });
        let reporter = Reporter {
            controller: super::canaries::HERALD_REPORTER.into(),
            instance: Some(identity),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        (
            Arc::new(KubeApprovals {
                client,
                cache,
                recorder,
            }),
            task,
        )
    }

    /// Resolves once the first list of Approvals is in the cache.
    pub async fn ready(&self) -> Result<(), String> {
        self.cache
            .wait_until_ready()
            .await
            .map_err(|e| format!("the Approval watch ended before its first list: {e}"))
    }

    fn cached(&self, key: &RevisionKey) -> Option<Arc<Approval>> {
        let named = ObjectRef::new(&key.object_name()).within(&key.namespace);
        self.cache.get(&named).or_else(|| {
            // Made with kubectl under another name.
            self.cache.state().into_iter().find(|a| {
                a.namespace().as_deref() == Some(key.namespace.as_str())
                    && a.spec.canary == key.canary
                    && a.spec.revision == key.revision
            })
        })
    }

    async fn write(
        &self,
        key: &RevisionKey,
        change: &mut Change,
    ) -> Result<Option<ApprovalSpec>, String> {
        let api = Api::<Approval>::namespaced(self.client.clone(), &key.namespace);
        for _ in 0..ATTEMPTS {
            // Read from the API server, not the cache: the write must start from the newest.
            let name = self
                .cached(key)
                .map(|a| a.name_any())
                .unwrap_or_else(|| key.object_name());
            let current = api.get_opt(&name).await.map_err(|e| e.to_string())?;
            let written = match current {
                None => {
                    let mut record = key.record();
                    if !change(&mut record) {
                        return Ok(None);
                    }
                    let object = Approval {
                        metadata: ObjectMeta {
                            name: Some(name),
                            namespace: Some(key.namespace.clone()),
                            labels: Some(
                                [("herald.dev/canary".to_owned(), key.canary.clone())].into(),
                            ),
                            ..Default::default()
                        },
                        spec: record,
                    };
                    api.create(&PostParams::default(), &object).await
                }
                Some(mut object) => {
                    if !change(&mut object.spec) {
                        return Ok(None);
                    }
                    // `replace` sends the resourceVersion read: a write since is a conflict.
                    api.replace(&name, &PostParams::default(), &object).await
                }
            };
            match written {
                Ok(object) => return Ok(Some(object.spec)),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!(
            "the Approval of {key} kept changing under Herald; try again"
        ))
    }
}

impl ApprovalStore for KubeApprovals {
    fn get(&self, key: &RevisionKey) -> Option<ApprovalSpec> {
        self.cached(key).map(|a| a.spec.clone())
    }

    fn update<'a>(
        &'a self,
        key: &'a RevisionKey,
        mut change: Change,
    ) -> BoxFuture<'a, Result<Option<ApprovalSpec>, String>> {
        Box::pin(async move { self.write(key, &mut change).await })
    }

    fn all(&self) -> Vec<(RevisionKey, ApprovalSpec)> {
        self.cache
            .state()
            .into_iter()
            .map(|a| {
                let key = RevisionKey {
                    namespace: a.namespace().unwrap_or_default(),
                    canary: a.spec.canary.clone(),
                    revision: a.spec.revision.clone(),
                };
                (key, a.spec.clone())
            })
            .collect()
    }
}

impl Audit for KubeApprovals {
    fn decided(&self, key: &RevisionKey, decision: &Decision) {
        let (client, recorder) = (self.client.clone(), self.recorder.clone());
        let (key, decision) = (key.clone(), decision.clone());
        tokio::spawn(async move { publish(client, recorder, key, decision).await });
    }
}

impl KubeApprovals {
    /// Records the decision as a Kubernetes Event on the Canary, and waits for it.
    pub async fn publish(&self, key: &RevisionKey, decision: &Decision) {
        publish(
            self.client.clone(),
            self.recorder.clone(),
            key.clone(),
            decision.clone(),
        )
        .await
    }
}

async fn publish(client: Client, recorder: Recorder, key: RevisionKey, decision: Decision) {
    // The Canary's uid makes the Event show in `kubectl describe canary`.
    let canaries = Api::<Canary>::namespaced(client, &key.namespace);
    let listed = canaries
        .list(&ListParams::default().fields(&format!("metadata.name={}", key.canary)))
        .await;
    let reference = match listed.map(|l| l.items.into_iter().next()) {
        Ok(Some(canary)) => canary.object_ref(&()),
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "cannot find the Canary to record a gate decision on");
            return;
        }
    };
    let event = KubeEvent {
        type_: match decision.verdict {
            Verdict::Approve => EventType::Normal,
            Verdict::Rollback => EventType::Warning,
        },
        reason: match decision.verdict {
            Verdict::Approve => "GateApproved".into(),
            Verdict::Rollback => "RollbackRequested".into(),
        },
        note: Some(crate::gates::sentence(&key, &decision)),
        action: "Decide".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        warn!(error = %e, "could not record the gate decision as a Kubernetes Event");
    }
}
