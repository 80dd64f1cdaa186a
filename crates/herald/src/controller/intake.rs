//! The controller's HTTP intake (Flagger's event webhook) with the durable queue
//! (`--state-dir`): an event answered `202` is on disk first, and what it still owes after a
//! crash (`kill -9`, an OOM kill) is sent when the process is back on the same directory.
//!
//! How it meets leadership and the watched Events:
//! - Every replica stores what it answers `202`, and sends it again after its own restart,
//!   leader or not. A webhook call reaches one replica only, and every replica sends what it
//!   receives (as without `--state-dir`): no other replica has these events, and a follower
//!   might never lead, so waiting for the lease could hold them back for good.
//! - The stored events are rendered again with the policies, so they are queued once the
//!   policy set is loaded, and before anything else: the intake answers `503` with
//!   `Retry-After` until then (also without `--state-dir`: a `202` given before the policies
//!   are loaded would match none), and watched Events wait too. So per canary a recovered
//!   event goes before any newer one, and a recovered report is paired with its Kubernetes
//!   Event re-listed after the restart, as if it had just been POSTed: sent once between them.
//! - On the leader, also once its delivery state is loaded (for at most [`STATE_WAIT`]), so
//!   that a recovered "Canary failed!" counts as Flagger's announcement of the phase.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::policy_set::PoliciesKnown;
use super::sources::EventSources;
use crate::api::{AppState, IncomingEvents, RETRY_AFTER_SECONDS};
use crate::durable::{Opened, Recovered, Store};
use crate::metrics::{Metrics, ReasonLabels};
use crate::{Error, Result};

/// How long a leader's recovery waits for its delivery state before it goes ahead without.
pub const STATE_WAIT: Duration = Duration::from_secs(10);

/// Opens the durable queue in `dir`. The canaries' phases it keeps are not restored: the
/// controller takes them from the watched Canaries.
pub(super) fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Opened> {
    Store::open(dir, metrics)
        .map_err(|message| Error::State(format!("cannot open the durable queue: {message}")))
}

/// What the intake waits for before it opens.
pub(super) struct Opening {
    pub(super) app: AppState,
    /// The store and what it held at start-up (`None` without `--state-dir`).
    pub(super) stored: Option<(Store, Vec<Recovered>)>,
    pub(super) sources: Arc<EventSources>,
    pub(super) known: Arc<PoliciesKnown>,
    pub(super) leading: watch::Receiver<bool>,
}

/// Waits for the policies (and on the leader its state), queues the stored events again
/// through the pairing, and opens the intake.
pub(super) async fn open_when_ready(opening: Opening, stop: impl std::future::Future<Output = ()>) {
    let Opening {
        app,
        stored,
        sources,
        known,
        leading,
    } = opening;
    tokio::pin!(stop);
    let started = Instant::now();
    loop {
        let policies = app.ready.load(std::sync::atomic::Ordering::Acquire) && known.known();
        let state = !*leading.borrow()
            || sources.state.lock().expect("state slot").is_some()
            || started.elapsed() >= STATE_WAIT;
        // Without stored events there is nothing the leader's state would change.
        let empty = stored.as_ref().is_none_or(|(_, events)| events.is_empty());
        if policies && (state || empty) {
            break;
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    if let Some((store, events)) = stored {
        let done = crate::requeue::requeue(&app, &store, events, |event| sources.admit(event));
        info!(
            path = %store.path().display(), events = done.events,
            notifications = done.notifications, forgotten = done.forgotten,
            "durable queue recovered: the events received over HTTP before the restart are queued again"
        );
    }
    sources.mark_recovered();
}

/// Event requests (every `POST`) are answered `503` with `Retry-After` until the intake is
/// open; metrics and probes are served meanwhile.
pub(super) fn gate(router: Router, sources: Arc<EventSources>, metrics: Arc<Metrics>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        (sources, metrics),
        refuse_until_open,
    ))
}

async fn refuse_until_open(
    State((sources, metrics)): State<(Arc<EventSources>, Arc<Metrics>)>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || sources.recovered() {
        return next.run(request).await;
    }
    metrics
        .events_refused
        .get_or_create(&ReasonLabels { reason: "starting" })
        .inc();
    warn_limited();
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": "Herald is starting (loading its policies, queueing stored events again); retry later"
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

fn warn_limited() {
    static LOGS: std::sync::OnceLock<crate::telemetry::LogLimiter> = std::sync::OnceLock::new();
    let logs = LOGS.get_or_init(crate::telemetry::LogLimiter::per_second);
    if let Some(suppressed) = logs.admit("starting") {
        warn!(
            suppressed,
            "event refused with 503: the intake opens once the policies are loaded"
        );
    }
}
