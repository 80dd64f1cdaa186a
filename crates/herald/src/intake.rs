//! Authenticated intake: the event token (`--event-token-file`) and the middleware that asks
//! for it on every event endpoint.
//!
//! The token is accepted as `Authorization: Bearer <token>` or as the path prefix
//! `/t/<token>` (Flagger's `eventWebhook` and `type: event` webhooks cannot send headers).
//! It is compared in constant time (`subtle`), and the prefix is cut off the request before
//! anything else sees the path, so no log line or error answer can carry it. `/metrics`,
//! `/healthz` and `/readyz` stay open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{error, info};

use crate::metrics::Metrics;

/// How often the token file is checked for a new token (a rotated Secret).
const RECHECK: Duration = Duration::from_secs(1);

/// The event token, read from a file and re-read when the file changes.
pub struct EventToken {
    path: PathBuf,
    state: Mutex<TokenState>,
}

struct TokenState {
    token: Arc<[u8]>,
    /// The file's modification time and length when last read.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

impl std::fmt::Debug for EventToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventToken")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_token(path: &Path) -> Result<Arc<[u8]>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: the event token file is empty", path.display()));
    }
    if token.len() < 16 {
        return Err(format!(
            "{}: the event token is shorter than 16 characters",
            path.display()
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_graphic()) || *c == '/' || *c == '?' || *c == '#' || *c == '%')
    {
        return Err(format!(
            "{}: the event token must be printable ASCII without '/', '?', '#' or '%' (it goes in a URL path); found {c:?}",
            path.display()
        ));
    }
    Ok(Arc::from(token.as_bytes()))
}

impl EventToken {
    /// Reads the token; fails when the file is missing, empty, shorter than 16 characters or
    /// holds characters that cannot go in a URL path unescaped.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let stamp = stamp(&path);
        let token = read_token(&path)?;
        Ok(EventToken {
            path,
            state: Mutex::new(TokenState {
                token,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The token in force: re-read at most once a second when the file's time or length
    /// changed. A file that became unreadable or invalid keeps the previous token.
    fn current(&self) -> Arc<[u8]> {
        let mut state = self.state.lock().expect("token lock poisoned");
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let now = stamp(&self.path);
            if now != state.stamp {
                state.stamp = now;
                match read_token(&self.path) {
                    Ok(token) => {
                        if *token != *state.token {
                            info!(path = %self.path.display(), "event token changed; the new one is in force");
                        }
                        state.token = token;
                    }
                    Err(e) => {
                        error!(error = %e, "cannot re-read the event token; keeping the previous one")
                    }
                }
            }
        }
        state.token.clone()
    }

    /// Whether `given` is the token, compared in constant time (only the length can leak).
    pub fn verify(&self, given: &[u8]) -> bool {
        let token = self.current();
        bool::from(token.as_ref().ct_eq(given))
    }
}

/// Why an event request was refused (the `reason` label of `herald_events_unauthorized`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token given.
    Missing,
    /// A token given, and not the right one.
    Invalid,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
        }
    }
}

fn is_event_path(path: &str) -> bool {
    path == "/events"
        || path.starts_with("/events/")
        || path == "/cluster-events"
        || path.starts_with("/cluster-events/")
        // Flagger's gate calls and `herald gate` (links and Slack carry signatures instead).
        || path.starts_with("/gates/")
}

fn unauthorized(metrics: &Metrics, refusal: Refusal) -> Response {
    metrics.count_unauthorized(refusal.as_str());
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "error": "a valid event token is required: Authorization: Bearer <token>, or POST to /t/<token>/events"
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"herald\""),
    );
    response
}

/// What the intake middleware needs.
#[derive(Clone)]
pub struct Gate {
    pub token: Option<Arc<EventToken>>,
    pub metrics: Arc<Metrics>,
}

/// Cuts `/t/<token>` off the path (refusing a wrong token) and asks the other event
/// requests for `Authorization: Bearer <token>`. Without a token configured, nothing is
/// asked and `/t/...` is an unknown path.
pub async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let Some(token) = &gate.token else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/t/") {
        let (given, inner) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if given.is_empty() {
            return unauthorized(&gate.metrics, Refusal::Missing);
        }
        if !token.verify(given.as_bytes()) {
            return unauthorized(&gate.metrics, Refusal::Invalid);
        }
        if !is_event_path(inner) {
            // Only event endpoints are served under the token.
            return next.run(request).await;
        }
        let inner = match request.uri().query() {
            Some(query) => format!("{inner}?{query}"),
            None => inner.to_owned(),
        };
        match inner.parse::<Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return unauthorized(&gate.metrics, Refusal::Invalid),
        }
        return next.run(request).await;
    }
    if !is_event_path(path) {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, value) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| value.trim().to_owned())
        });
    match bearer {
        None => unauthorized(&gate.metrics, Refusal::Missing),
        Some(given) if token.verify(given.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized(&gate.metrics, Refusal::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short\n").unwrap();
        assert!(EventToken::from_file(&path)
            .unwrap_err()
            .contains("shorter"));
        std::fs::write(&path, "").unwrap();
        assert!(EventToken::from_file(&path).unwrap_err().contains("empty"));
        std::fs::write(&path, "0123456789abcdef/x").unwrap();
        assert!(EventToken::from_file(&path).unwrap_err().contains("'/'"));
        std::fs::write(&path, "0123456789abcdefXYZ\n").unwrap();
        let token = EventToken::from_file(&path).unwrap();
        assert!(token.verify(b"0123456789abcdefXYZ"));
        assert!(!token.verify(b"0123456789abcdefXY"));
        assert!(!token.verify(b"0123456789abcdefXYZ0"));
        assert!(!token.verify(b""));
    }

    #[test]
    fn event_paths() {
        for p in [
            "/events",
            "/events/a/b",
            "/cluster-events/x",
            "/gates/rollback",
        ] {
            assert!(is_event_path(p), "{p}");
        }
        for p in [
            "/metrics",
            "/healthz",
            "/readyz",
            "/eventsx",
            "/",
            "/links/x",
            "/slack/interactions",
        ] {
            assert!(!is_event_path(p), "{p}");
        }
    }
}
