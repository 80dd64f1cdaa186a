//! The gate endpoints: Flagger's gate calls (`POST /gates/<type>`), and what `herald gate`
//! asks (`GET /gates/status/<namespace>/<canary>`, `POST /gates/decisions`). Both are behind
//! the event token when one is set. Signed links and Slack's interactions are authenticated
//! by their signatures instead (`links`, `slack`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_api::GateType;
use herald_core::gates::{answer, mark_asked, GateCall, Recorded, RevisionKey};
use serde_json::json;
use tracing::{info, warn};

use super::announce::{asks, AskReason};
use super::terminal::{self, DecisionRequest};
use super::{decide, now_ms};
use crate::api::AppState;
use crate::metrics::GateAnswerLabels;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/gates/{gate}", post(gate_call))
        .route("/gates/status/{namespace}/{canary}", get(status))
        .route("/gates/decisions", post(decision))
        .route(
            "/links/{token}",
            get(super::links::show_link).post(super::links::use_link),
        )
        .route("/slack/interactions", post(super::slack::interaction))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn gate_call(
    State(state): State<AppState>,
    Path(gate): Path<String>,
    body: Bytes,
) -> Response {
    let Some(gate) = GateType::parse(&gate) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no gate {gate:?}: Herald answers /gates/confirm-rollout, /gates/confirm-traffic-increase, /gates/confirm-promotion and /gates/rollback"),
        );
    };
    let call = match GateCall::from_json(&body) {
        Ok(call) => call,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string(), "field": e.field})),
            )
                .into_response()
        }
    };
    let key = call.key();
    let matched = super::answering(&state.policies.load(), &key, &call.phase, gate);
    let answer = if matched.is_empty() {
        herald_core::gates::GateAnswer {
            open: false,
            message: format!(
                "closed: no policy answers the {} gate of {}.{} (add spec.gates to a NotificationPolicy that selects it)",
                gate.as_str(), key.canary, key.namespace
            ),
            decision: None,
        }
    } else {
        let record = state.gates.store.get(&key);
        let answer = answer(&key, gate, record.as_ref());
        let asked = record
            .as_ref()
            .is_some_and(|r| r.asked.iter().any(|a| a.gate == gate));
        if !answer.open && gate != GateType::Rollback && !asked {
            // Announced in the background: Flagger's answer does not wait for chat.
            tokio::spawn(ask_once(
                state.clone(),
                key.clone(),
                call.phase,
                gate,
                matched,
            ));
        }
        answer
    };
    state
        .metrics
        .gate_answers
        .get_or_create(&GateAnswerLabels {
            gate: gate.as_str(),
            answer: if answer.open { "open" } else { "closed" },
        })
        .inc();
    let status = StatusCode::from_u16(answer.status()).expect("200 or 403");
    let mut body = json!({
        "gate": gate.as_str(),
        "canary": format!("{}/{}", key.namespace, key.canary),
        "revision": key.revision,
        "open": answer.open,
        "message": answer.message,
    });
    if let Some(decision) = &answer.decision {
        body["decision"] = json!(decision);
    }
    (status, Json(body)).into_response()
}

/// Marks the gate asked and, when this replica was first, asks the receivers.
async fn ask_once(
    state: AppState,
    key: RevisionKey,
    phase: String,
    gate: GateType,
    matched: Vec<u32>,
) {
    let at = herald_core::gates::times::format(now_ms());
    let marked = state
        .gates
        .store
        .update(&key, Box::new(move |record| mark_asked(record, gate, &at)))
        .await;
    match marked {
        Ok(Some(_)) => {
            info!(canary = %key.canary, namespace = %key.namespace, revision = %key.revision,
                gate = gate.as_str(), "gate waits for a decision; asking");
            let policies = state.policies.load_full();
            asks(
                &state,
                &policies,
                &key,
                &phase,
                gate,
                &matched,
                AskReason::First,
            );
        }
        Ok(None) => {}
        Err(e) => warn!(canary = %key.canary, namespace = %key.namespace, error = %e,
            "cannot record that a gate was asked; asking at the next call"),
    }
}

/// The records of one canary, newest first, with how each gate answers.
async fn status(
    State(state): State<AppState>,
    Path((namespace, canary)): Path<(String, String)>,
) -> Response {
    Json(terminal::status(
        state.gates.store.as_ref(),
        &namespace,
        &canary,
    ))
    .into_response()
}

/// `herald gate approve|rollback`: a decision made from a terminal.
async fn decision(State(state): State<AppState>, body: Bytes) -> Response {
    if !state.gates.decisions_over_http {
        return error(
            StatusCode::FORBIDDEN,
            "in a cluster, decide with `herald gate approve --kube` or kubectl: whoever may write Approvals (RBAC) may decide",
        );
    }
    let request: DecisionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("decision: {e}")),
    };
    let (key, decided) = match terminal::choose(state.gates.store.as_ref(), request, "cli") {
        Ok(chosen) => chosen,
        Err((status, message)) => {
            return error(StatusCode::from_u16(status).expect("a status"), message)
        }
    };
    match decide(&state, &key, decided.clone()).await {
        Ok(Recorded::New) => Json(json!({
            "recorded": true,
            "revision": key.revision,
            "message": super::sentence(&key, &decided),
        }))
        .into_response(),
        Ok(Recorded::AlreadyDecided(existing)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "recorded": false,
                "revision": key.revision,
                "message": format!("already decided: {}", super::sentence(&key, &existing)),
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the decision was not recorded: {e}"),
        ),
    }
}
