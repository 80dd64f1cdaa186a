//! What receivers answer, made safe and short for logs, and `Retry-After`.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;

/// `Retry-After` as seconds (Discord sends fractions, e.g. `0.35`) or an HTTP date.
pub(super) fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of a response body, on one line, for logs, with anything that looks like a
/// credential redacted (see [`redact`]): a receiver or proxy may echo the request.
pub(super) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut line = redact(&line);
    if body.len() > MAX {
        line.push('…');
    }
    line
}

/// `text` with every word that may be a credential replaced by `[redacted]`: URLs and paths
/// (webhook URLs carry their token), query strings and `key=value` pairs, Slack tokens
/// (`xox.-`), the word after `Bearer`, `Basic` or `token`, and long runs of letters and
/// digits (API keys, signatures). What remains is the receiver's own wording.
pub fn redact(text: &str) -> String {
    const REDACTED: &str = "[redacted]";
    let mut out = String::with_capacity(text.len());
    let mut redact_next = false;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| "\"'`,;()[]{}<>".contains(c));
        let lower = bare.to_ascii_lowercase();
        let secret = redact_next
            || bare.contains("://")
            || (bare.starts_with('/') && bare.len() > 1)
            || bare.contains('?')
            || bare.contains('=')
            || bare.contains('@')
            || lower.starts_with("xox")
            || lower.contains("hooks.")
            || looks_like_key(bare);
        redact_next = matches!(
            lower.trim_end_matches(':'),
            "bearer" | "basic" | "token" | "authorization" | "apikey" | "api-key" | "secret"
        );
        if secret && !bare.is_empty() {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
    }
    out
}

/// 16 or more characters of letters, digits, `-` and `_`, with both letters and digits.
pub(super) fn looks_like_key(word: &str) -> bool {
    word.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .any(|run| {
            run.len() >= 16
                && run.chars().any(|c| c.is_ascii_digit())
                && run.chars().any(|c| c.is_ascii_alphabetic())
        })
}

/// A transport error without its URL (reqwest puts the full URL, credentials included, in
/// its messages).
pub(super) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.contains("://") && !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_redacted() {
        let echoed = "invalid_payload: POST /services/T000/B000/XXXXsecret HTTP/1.1 Authorization: Bearer abc.def token=xoxb-1111-2222-abcdefABCDEF url https://hooks.slack.com/services/T/B/C?x=1 key 0123456789abcdefABCD";
        let redacted = redact(echoed);
        for secret in [
            "/services",
            "abc.def",
            "xoxb",
            "hooks.slack",
            "0123456789abcdef",
        ] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(
            redacted.starts_with("invalid_payload: POST [redacted] HTTP/1.1"),
            "{redacted}"
        );
        assert_eq!(redact("channel_not_found"), "channel_not_found");
        assert_eq!(
            redact("Bad Request: missing text"),
            "Bad Request: missing text"
        );
        assert_eq!(snippet(b"{\"error\":\"nope\"}"), "{\"error\":\"nope\"}");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let parsed = parse_retry_after(&HeaderValue::from_str(&soon).unwrap()).unwrap();
        assert!(
            parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("0.35")),
            Some(Duration::from_millis(350))
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("-1.5")), None);
    }

    #[test]
    fn snippets_are_one_bounded_line() {
        assert_eq!(snippet(b"no_service\n"), "no_service ");
        let long = vec![b'x'; 500];
        assert_eq!(snippet(&long).chars().count(), 201);
    }
}
