//! While this replica leads: the delivery state is loaded, canary events are notified and
//! the state is saved every second; when it stops leading, all of that stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::canaries::{self, CanaryNotifier};
use super::leader::Fence;
use super::policy_set::PoliciesKnown;
use super::sources::EventSources;
use super::state::StateStore;
use super::{stopped, ControllerOptions};
use crate::api::AppState;

/// This replica's standing: whether it leads, and until when it may act.
pub(super) struct Leaders {
    pub(super) leading: watch::Receiver<bool>,
    pub(super) fence: Fence,
}

/// While this replica leads: load the delivery state, notify on canary events, save the
/// state every second.
#[allow(clippy::too_many_arguments)]
pub(super) async fn lead(
    client: Client,
    options: ControllerOptions,
    app: AppState,
    leaders: Leaders,
    reconcile_all: Vec<futures::channel::mpsc::UnboundedSender<()>>,
    sources: Arc<EventSources>,
    known: Arc<PoliciesKnown>,
    stop: watch::Receiver<bool>,
) {
    let Leaders {
        leading: mut leader,
        fence,
    } = leaders;
    // On a first install, Events older than Herald's start are history and not replayed.
    // Event times have whole seconds: round down and allow one more, so an Event recorded
    // while Herald was starting (or electing a leader) is not mistaken for history.
    let now = jiff::Timestamp::now().as_millisecond();
    let history_before = now - now.rem_euclid(1000) - 1000;
    loop {
        tokio::select! {
            _ = stopped(stop.clone()) => return,
            res = leader.wait_for(|l| *l) => if res.is_err() { return },
        }
        info!("leading: writing policy status, notifying on canary events");
        // Followers skip status writes: catch up now.
        for trigger in &reconcile_all {
            let _ = trigger.unbounded_send(());
        }
        let state = match StateStore::load(
            client.clone(),
            &options.namespace,
            &options.state_configmap,
            history_before,
            fence.clone(),
        )
        .await
        {
            Ok(state) => Arc::new(state),
            Err(e) => {
                error!(error = %e, "cannot load the delivery state; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        // Shared with the delivery threads and the webhook side of the event pairing.
        *sources.state.lock().expect("state slot") = Some(state.clone());
        let lost = {
            let mut leader = leader.clone();
            let stop = stopped(stop.clone());
            async move {
                tokio::select! {
                    _ = stop => {}
                    _ = leader.wait_for(|l| !*l) => {}
                }
            }
        };
        let (done_tx, done_rx) = watch::channel(false);
        let flusher = {
            let state = state.clone();
            let done = stopped(done_rx);
            tokio::spawn(async move {
                tokio::pin!(done);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut marker = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = &mut done => return,
                        _ = tick.tick() => { let _ = state.flush().await; }
                        _ = marker.tick() => { let _ = state.keep_first_shard().await; }
                    }
                }
            })
        };
        let grace = options.phase_grace;
        let notifier_app = app.clone();
        let notifier_state = state.clone();
        let notifier_sources = sources.clone();
        let notifier_fence = fence.clone();
        let policies_app = app.clone();
        let policies_known = known.clone();
        let gate_sources = sources.clone();
        canaries::run(
            client.clone(),
            move |canaries, namespaces| {
                CanaryNotifier::new(
                    notifier_app,
                    notifier_state,
                    canaries,
                    namespaces,
                    grace,
                    notifier_sources,
                )
                .with_fence(notifier_fence)
            },
            // After the intake reopened: reports recovered from the durable queue come first.
            move || {
                policies_app.ready.load(Ordering::Acquire)
                    && policies_known.known()
                    && gate_sources.recovered()
            },
            lost,
        )
        .await;
        let _ = done_tx.send(true);
        let _ = flusher.await;
        if *stop.borrow() {
            return;
        }
        // Nothing is saved now: the fence is down, and the new leader owns the state.
        warn!("lost leadership: no longer notifying on canary events");
        *sources.state.lock().expect("state slot") = None;
    }
}
