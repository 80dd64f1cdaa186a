//! Slack's interaction endpoint (`POST /slack/interactions`): a press of an ask's buttons,
//! signed with the app's signing secret. Answered within Slack's 3 seconds; the message is
//! then updated through the press's `response_url` (buttons replaced by the decision), and
//! the decision announced in the rollout's thread.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_api::{Decision, Verdict};
use herald_core::gates::slack::{
    decided_message, ephemeral, parse_interaction, verify_signature, Interaction,
};
use herald_core::gates::Recorded;
use serde_json::json;
use tracing::{debug, warn};

use super::{decide, now_ms, policy_id};
use crate::api::AppState;
use crate::metrics::ReasonLabels;

fn refuse(state: &AppState, reason: &'static str) {
    state
        .metrics
        .gate_refusals
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

pub async fn interaction(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &state.gates.slack_signing_secret else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Slack interactivity is not set up here (--slack-signing-secret-file)"})),
        )
            .into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = verify_signature(
        secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now_ms() / 1000,
    ) {
        refuse(&state, "slack_signature");
        warn!(error = %e, "Slack interaction refused");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": e.to_string()})),
        )
            .into_response();
    }
    let press = match parse_interaction(&body) {
        Ok(Some(press)) => press,
        Ok(None) => return StatusCode::OK.into_response(),
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    };
    // Group membership is read from Slack, which may take longer than Slack waits for the
    // answer: the press is handled after it.
    tokio::spawn(handle(state, press));
    StatusCode::OK.into_response()
}

async fn handle(state: AppState, press: Interaction) {
    let policies = state.policies.load_full();
    let found = policies.find(&policy_id(&press.value.policy));
    let Some((index, gates)) =
        found.and_then(|i| policies.policy(i).gates.as_deref().map(|g| (i, g)))
    else {
        let text = format!("Policy {} no longer answers gates.", press.value.policy);
        reply(&state, &press, ephemeral(&text)).await;
        return;
    };
    let approvers = &gates.approvers;
    let allowed = approvers.slack_users.contains(&press.user)
        || in_user_groups(&state, policies.policy(index), &press).await;
    if !allowed {
        refuse(&state, "not_approver");
        let text = format!(
            "You are not on the approvers list of policy {}: ask {} to decide.",
            press.value.policy,
            herald_core::gates::slack::mentions(
                &approvers.slack_users,
                &approvers.slack_user_groups
            )
        );
        reply(&state, &press, ephemeral(&text)).await;
        return;
    }
    let by = match &press.user_name {
        Some(name) => format!("@{name}"),
        None => press.user.clone(),
    };
    let key = press.value.key();
    let decision = Decision {
        gate: Some(press.value.gate),
        verdict: press.verdict,
        by,
        via: "slack".into(),
        at: herald_core::gates::times::format(now_ms()),
    };
    let outcome = match press.verdict {
        Verdict::Approve => format!(":white_check_mark: Approved by <@{}>", press.user),
        Verdict::Rollback => format!(":rewind: Rollback requested by <@{}>", press.user),
    };
    match decide(&state, &key, decision).await {
        Ok(Recorded::New) => {
            reply(
                &state,
                &press,
                decided_message(&press.message_text, &outcome),
            )
            .await;
        }
        Ok(Recorded::AlreadyDecided(existing)) => {
            let text = format!("Already decided: {}", super::sentence(&key, &existing));
            reply(&state, &press, ephemeral(&text)).await;
        }
        Err(e) => {
            let text = format!("Your decision could not be recorded ({e}); press again.");
            reply(&state, &press, ephemeral(&text)).await;
        }
    }
}

/// Whether the presser is in one of the approvers' user groups, read with the asking
/// receiver's bot token (`usergroups.users.list`).
async fn in_user_groups(
    state: &AppState,
    compiled: &herald_core::policy::CompiledPolicy,
    press: &Interaction,
) -> bool {
    let Some(gates) = &compiled.gates else {
        return false;
    };
    let Some(receiver) = compiled
        .receivers
        .iter()
        .find(|r| r.name == press.value.receiver)
    else {
        return false;
    };
    let (Some(token), Some((api, _))) = (
        receiver.request.bearer_token.as_ref(),
        receiver.url.expose().rsplit_once('/'),
    ) else {
        return false;
    };
    for group in &gates.approvers.slack_user_groups {
        let answer = state
            .gates
            .client()
            // Group IDs are validated as letters and digits: nothing to escape.
            .get(format!("{api}/usergroups.users.list?usergroup={group}"))
            .bearer_auth(token.expose())
            .send()
            .await;
        let members: serde_json::Value = match answer {
            Ok(answer) => answer.json().await.unwrap_or_default(),
            Err(e) => {
                warn!(error = %crate::delivery::redact::redact(&e.to_string()), "cannot read a Slack user group");
                continue;
            }
        };
        if members["ok"] != json!(true) {
            warn!(usergroup = %group, error = %members["error"], "Slack did not list a user group's members");
            continue;
        }
        let listed = members["users"].as_array().is_some_and(|users| {
            users
                .iter()
                .any(|u| u.as_str() == Some(press.user.as_str()))
        });
        if listed {
            return true;
        }
    }
    false
}

/// Posts to the press's `response_url` (valid for 30 minutes, 5 uses).
async fn reply(state: &AppState, press: &Interaction, body: Vec<u8>) {
    let sent = state
        .gates
        .client()
        .post(&press.response_url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) if answer.status().is_success() => debug!("Slack message updated"),
        Ok(answer) => warn!(
            status = answer.status().as_u16(),
            "Slack refused the message update"
        ),
        Err(e) => {
            warn!(error = %crate::delivery::redact::redact(&e.to_string()), "cannot update the Slack message")
        }
    }
}
