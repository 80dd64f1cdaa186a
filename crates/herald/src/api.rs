//! The HTTP API: Flagger's event webhook in, metrics and probes out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use herald_core::{FlaggerEvent, MatchInput, PolicyId, PolicySet};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::delivery::{Admitted, Dispatcher, EventCompletion, Refusal};
use crate::durable::Store;
use crate::intake::{gate, EventToken, Gate};
use crate::metrics::{Metrics, SourceLabels};
use crate::pipeline::{dispatch, Repeats};

/// Default limit on an event body. Flagger's are a few hundred bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub policies: Arc<ArcSwap<PolicySet>>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub body_limit: usize,
    /// False until policies are loaded; `/readyz` answers 503 until then.
    pub ready: Arc<AtomicBool>,
    /// Consulted for each event POSTed to `/events` (the controller: pairs it with the same
    /// action seen as a Kubernetes Event); `None` sends every event.
    pub incoming: Option<Arc<dyn IncomingEvents>>,
    /// Repeated messages held back (`spec.repeatInterval`).
    pub repeats: Arc<Repeats>,
    /// Notifications posted again while their canary stays failed (see [`crate::reposts`]).
    pub open: Arc<crate::reposts::OpenNotifications>,
    /// When set, every event endpoint asks for this token (see [`crate::intake`]).
    pub event_token: Option<Arc<EventToken>>,
    /// How long an event body may take to arrive once its headers have (`408` after).
    pub body_timeout: Duration,
    /// The durable queue (`--state-dir`): events received over HTTP are answered `202` only
    /// once stored.
    pub store: Option<Store>,
    /// Flagger's gates: decisions, links, Slack's interactions.
    pub gates: Arc<crate::gates::Gates>,
}

/// Default [`AppState::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides whether an event received over HTTP is sent.
pub trait IncomingEvents: Send + Sync {
    fn admit(&self, event: &FlaggerEvent) -> Admission;
}

/// What to do with an event received over HTTP.
pub enum Admission {
    /// Send it; the completion, if any, learns when its notifications have finished.
    Send(Option<Arc<EventCompletion>>),
    /// It was already sent from another source.
    Duplicate,
}

pub fn router(state: AppState) -> Router {
    let gate_state = Gate {
        token: state.event_token.clone(),
        metrics: state.metrics.clone(),
    };
    let routes = Router::new()
        .route("/events", post(post_event))
        .route("/events/{namespace}/{policy}", post(post_event_to_policy))
        // Not `/events/cluster/...`: that would hide a namespace named "cluster".
        .route(
            "/cluster-events/{policy}",
            post(post_event_to_cluster_policy),
        )
        .merge(crate::gates::endpoints::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; events go to POST /events",
            )
        })
        .with_state(state);
    // The gate is outside the routes, so that `/t/<token>/...` is cut down to the route's
    // path before routing (a layer on the routes themselves would run after it).
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(gate_state, gate))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn post_event(State(state): State<AppState>, request: Request) -> Response {
    accept_event(&state, None, request).await
}

async fn post_event_to_policy(
    State(state): State<AppState>,
    Path((namespace, policy)): Path<(String, String)>,
    request: Request,
) -> Response {
    accept_event(
        &state,
        Some(PolicyId::namespaced(namespace, policy)),
        request,
    )
    .await
}

async fn post_event_to_cluster_policy(
    State(state): State<AppState>,
    Path(policy): Path<String>,
    request: Request,
) -> Response {
    accept_event(&state, Some(PolicyId::cluster(policy)), request).await
}

async fn accept_event(state: &AppState, only: Option<PolicyId>, request: Request) -> Response {
    let received_at = Instant::now();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json_media_type(content_type) {
        state.metrics.events_rejected.inc();
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let read = tokio::time::timeout(
        state.body_timeout,
        read_body(request.into_body(), state.body_limit),
    );
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(response)) => {
            state.metrics.events_rejected.inc();
            return response;
        }
        Err(_) => {
            state.metrics.events_rejected.inc();
            let mut response = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the event body did not arrive within {}",
                    humantime::format_duration(state.body_timeout)
                ),
            );
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let event = match FlaggerEvent::from_json(&body) {
        Ok(event) => event,
        Err(e) => {
            state.metrics.events_rejected.inc();
            debug!(error = %e, "rejected event body");
            let mut answer = json!({ "error": e.to_string() });
            if let Some(field) = e.field_path() {
                answer["field"] = json!(field);
            }
            return (StatusCode::BAD_REQUEST, Json(answer)).into_response();
        }
    };
    let policies = state.policies.load_full();
    let only_index = match &only {
        None => None,
        Some(id) => match policies.find(id) {
            Some(index) => Some(index),
            None => {
                state.metrics.events_rejected.inc();
                let kind = if id.namespace.is_some() {
                    "NotificationPolicy"
                } else {
                    "ClusterNotificationPolicy"
                };
                return error(StatusCode::NOT_FOUND, format!("no valid {kind} {id}"));
            }
        },
    };
    state.metrics.events_received.inc();
    // An event addressed to one policy is not paired: the other source's report goes to
    // every policy, so suppressing either would lose a notification.
    let mut completion = None;
    if let (None, Some(incoming)) = (&only, &state.incoming) {
        match incoming.admit(&event) {
            Admission::Send(watcher) => completion = watcher,
            Admission::Duplicate => {
                state
                    .metrics
                    .events_duplicate
                    .get_or_create(&SourceLabels { source: "webhook" })
                    .inc();
                info!(
                    canary = %event.name, namespace = %event.namespace, event_message = %event.message(),
                    "event already sent from its Kubernetes Event; not sending it again"
                );
                return (
                    StatusCode::ACCEPTED,
                    Json(json!({ "deliveries": 0, "duplicate": true })),
                )
                    .into_response();
            }
        }
    }
    if event.known_phase().is_none() {
        warn!(canary = %event.name, namespace = %event.namespace, phase = %event.phase, "event has a phase Herald does not know; only policies without a phase filter match it");
    }
    let admitted = dispatch(
        state,
        &policies,
        &MatchInput::event(&event),
        only_index,
        received_at,
        completion,
        Some(&body),
    );
    let queued = match admitted {
        Ok(Admitted { queued, committed }) => {
            if let Some(committed) = committed {
                if !crate::durable::committed(committed).await {
                    return refused(state, Refusal::State);
                }
            }
            queued
        }
        Err(refusal) => return refused(state, refusal),
    };
    let phase = event.rollout_phase();
    state
        .metrics
        .observe_canary(&event.name, &event.namespace, phase);
    if let (Some(store), Some(phase)) = (&state.store, phase) {
        store.canary(&event.namespace, &event.name, phase.as_str());
    }
    info!(
        canary = %event.name, namespace = %event.namespace, phase = %event.phase,
        event_message = %event.message(), deliveries = queued, "event received"
    );
    accepted(queued)
}

/// `202` with `{"deliveries":N}`, the bytes `Json(json!(..))` writes, without a JSON value.
fn accepted(queued: usize) -> Response {
    let body = format!("{{\"deliveries\":{queued}}}");
    let json = header::HeaderValue::from_static("application/json");
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, json)], body).into_response()
}

/// Seconds a refused sender is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// `503` with `Retry-After`: none of the event's notifications were queued.
fn refused(state: &AppState, refusal: Refusal) -> Response {
    state
        .metrics
        .events_refused
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: refusal.as_str(),
        })
        .inc();
    static LOGS: std::sync::OnceLock<crate::telemetry::LogLimiter> = std::sync::OnceLock::new();
    let logs = LOGS.get_or_init(crate::telemetry::LogLimiter::per_second);
    if let Some(suppressed) = logs.admit(refusal.as_str()) {
        warn!(
            reason = refusal.as_str(),
            suppressed, "event refused with 503: its notifications cannot all be queued now"
        );
    }
    let message = match refusal {
        Refusal::QueueFull => "a receiver's queue is full; retry later",
        Refusal::QueueBytes => "the notification queues are full (--queue-bytes); retry later",
        Refusal::Shutdown => "Herald is shutting down; retry later",
        Refusal::State => "the durable queue could not store the event; retry later",
    };
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    response
}

/// `application/json`, in any case, with optional parameters (`; charset=utf-8`); not
/// `application/jsonfoo` nor `application/json-seq`.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("event body exceeds {limit} bytes"),
            )
        } else {
            error(StatusCode::BAD_REQUEST, "could not read the request body")
        }
    })
}

/// OpenMetrics, or the Prometheus text format when the scraper asks for it.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = state.metrics.encode();
    if crate::metrics_text::wants_prometheus_text(accept) {
        (
            [(header::CONTENT_TYPE, crate::metrics_text::PROMETHEUS_TEXT)],
            crate::metrics_text::to_prometheus_text(&openmetrics),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, crate::metrics_text::OPENMETRICS_TEXT)],
            openmetrics,
        )
            .into_response()
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        "ok".into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "policies not loaded yet")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_media_type_is_exact() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(super::is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "application/jsonfoo",
            "application/json-seq",
            "text/json",
            "",
            "application/",
        ] {
            assert!(!super::is_json_media_type(bad), "{bad}");
        }
    }
}
