//! Signed links (`/links/<token>`): a GET shows what the link would decide and a button;
//! only the POST that button makes decides. Link previews, mail scanners and chat unfurlers
//! fetch URLs with GET, so they decide nothing.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_api::{Decision, Verdict};
use herald_core::gates::links::{verify, LinkClaims, LinkError};
use herald_core::gates::{answer, Recorded};

use super::{decide, now_ms, policy_id};
use crate::api::AppState;
use crate::metrics::ReasonLabels;

/// Values on the pages go in element text, where HTML's entities are all it takes.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    herald_core::Markup::Html.escape(text)
}

/// A small page; never cached, never sent on as a referrer (the URL is a credential).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>Herald: {title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        html,
    )
        .into_response()
}

fn refused(state: &AppState, reason: &'static str, message: &str) -> Response {
    state
        .metrics
        .gate_refusals
        .get_or_create(&ReasonLabels { reason })
        .inc();
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        &format!("<p>{}</p>", escape(message)),
    )
}

/// The claims of a valid link, or the page that refuses it.
fn claims(state: &AppState, token: &str) -> Result<LinkClaims, Box<Response>> {
    let Some(key) = &state.gates.link_key else {
        return Err(Box::new(page(
            StatusCode::NOT_FOUND,
            "No signed links here",
            "<p>This Herald does not sign links (no --gate-link-key-file).</p>",
        )));
    };
    verify(token, key, now_ms() / 1000).map_err(|e| {
        let reason = match e {
            LinkError::Expired => "link_expired",
            LinkError::Malformed | LinkError::BadSignature => "link_invalid",
        };
        Box::new(refused(state, reason, &e.to_string()))
    })
}

fn what(claims: &LinkClaims) -> String {
    let key = claims.key();
    match claims.verdict {
        Verdict::Approve => format!(
            "approve the {} of {key}",
            claims.gate.map(|g| g.waiting()).unwrap_or("rollout")
        ),
        Verdict::Rollback => format!("roll back {key}"),
    }
}

pub async fn show_link(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let claims = match claims(&state, &token) {
        Ok(claims) => claims,
        Err(response) => return *response,
    };
    let key = claims.key();
    let record = state.gates.store.get(&key);
    let now = claims
        .gate
        .map(|gate| answer(&key, gate, record.as_ref()).message)
        .unwrap_or_default();
    let label = match claims.verdict {
        Verdict::Approve => "Approve",
        Verdict::Rollback => "Roll back",
    };
    page(
        StatusCode::OK,
        &format!("{label}?"),
        &format!(
            "<p>This link will {what}.</p><p>Now: {now}.</p>\
             <form method=\"post\"><button type=\"submit\">{label}</button></form>",
            what = escape(&what(&claims)),
            now = escape(&now),
        ),
    )
}

pub async fn use_link(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let claims = match claims(&state, &token) {
        Ok(claims) => claims,
        Err(response) => return *response,
    };
    let policies = state.policies.load_full();
    let Some(gates) = policies
        .find(&policy_id(&claims.policy))
        .and_then(|index| policies.policy(index).gates.as_deref())
    else {
        return refused(
            &state,
            "no_policy",
            &format!("policy {} no longer answers gates", claims.policy),
        );
    };
    let identity = state
        .gates
        .identity_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    let approvers = &gates.approvers;
    let by = match identity {
        Some(who) if approvers.identities.iter().any(|i| i == who) => who.to_owned(),
        Some(who) if approvers.link_holders => who.to_owned(),
        None if approvers.link_holders => "link holder".to_owned(),
        Some(who) => {
            return refused(
                &state,
                "not_approver",
                &format!("{who} is not on the approvers list of policy {}", claims.policy),
            )
        }
        None => {
            return refused(
                &state,
                "not_approver",
                "this gate takes decisions from named approvers only, and no identity came with the request",
            )
        }
    };
    let key = claims.key();
    let decision = Decision {
        gate: claims.gate,
        verdict: claims.verdict,
        by,
        via: "link".into(),
        at: herald_core::gates::times::format(now_ms()),
    };
    match decide(&state, &key, decision.clone()).await {
        Ok(Recorded::New) => page(
            StatusCode::OK,
            "Done",
            &format!("<p>{}</p>", escape(&super::sentence(&key, &decision))),
        ),
        Ok(Recorded::AlreadyDecided(existing)) => page(
            StatusCode::CONFLICT,
            "Already decided",
            &format!("<p>{}</p>", escape(&super::sentence(&key, &existing))),
        ),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not recorded",
            &format!(
                "<p>The decision could not be kept: {}. Try again.</p>",
                escape(&e)
            ),
        ),
    }
}
