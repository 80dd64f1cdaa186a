//! What the chat kinds' bodies share: the rendered message and its facts, the colours, and
//! cutting texts to a service's limits.

use std::borrow::Cow;

use serde::Serialize;

use crate::escape::Markup;
use crate::event::{FlaggerEvent, Severity};

/// Appended where Herald cut a text to fit a receiver's limit.
pub const TRUNCATION_NOTE: &str = "… (truncated by Herald)";

/// The rendered parts of one notification.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub event: &'a FlaggerEvent,
    pub cluster: &'a str,
}

impl Message<'_> {
    /// The facts every chat body shows: the phase, and the cluster when it has a name.
    /// An iterator rather than a `Vec`: one allocation less per notification.
    pub(crate) fn facts(&self) -> impl Iterator<Item = (&'static str, &str)> + Clone {
        let cluster = (!self.cluster.is_empty()).then_some(("Cluster", self.cluster));
        std::iter::once(("Phase", self.event.phase.as_str())).chain(cluster)
    }

    /// [`Self::facts`] with each value escaped for `markup`: they come from the event and
    /// the cluster's name, not from the policy's templates.
    pub(crate) fn facts_in(
        &self,
        markup: Markup,
    ) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> + Clone {
        self.facts()
            .map(move |(name, value)| (name, markup.escape(value)))
    }

    /// The event time in RFC 3339 (empty when the timestamp is out of range).
    pub(crate) fn time(&self) -> String {
        crate::template::rfc3339(self.event.timestamp_ms())
    }
}

/// The outcome as an RGB colour, for receivers that take any colour (the MessageCard
/// palette).
pub(crate) fn rgb(severity: Severity) -> u32 {
    match severity {
        Severity::Info => 0x0076D7,
        Severity::Success => 0x2EB886,
        Severity::Warning => 0xFFA500,
        Severity::Error => 0xFF0000,
    }
}

/// Serialises a body into a buffer sized for it up front.
pub(crate) fn to_json(body: &impl Serialize, message: &Message<'_>) -> Vec<u8> {
    let mut out = buffer(message);
    serde_json::to_writer(&mut out, body).expect("a payload always serialises");
    out
}

/// A buffer for a body, sized up front so it is not grown while written.
pub(crate) fn buffer(message: &Message<'_>) -> Vec<u8> {
    Vec::with_capacity(512 + 2 * (message.title.len() + message.text.len()))
}

/// [`limit`] for a text that may already be owned (escaped).
pub(crate) fn limit_cow(text: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text;
    }
    Cow::Owned(limit(&text, max).into_owned())
}

/// Cuts `text` to at most `max` bytes, on a character boundary, saying so.
pub(crate) fn limit(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(TRUNCATION_NOTE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATION_NOTE}", &text[..end]))
}

/// The body `build(n)` makes with the text cut to `n` bytes, for the largest `n` (at most
/// `text_len`) whose body is at most `max_body` bytes. JSON escaping can make one byte of
/// text up to six bytes of body, so the cut is found by bisection (only for texts near the
/// limit; otherwise the first build is the answer).
pub(crate) fn fit_body(
    max_body: usize,
    text_len: usize,
    build: impl Fn(usize) -> Vec<u8>,
) -> Vec<u8> {
    let whole = build(text_len);
    if whole.len() <= max_body {
        return whole;
    }
    let (mut fits, mut too_long) = (0, text_len);
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if build(mid).len() <= max_body {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    build(fits)
}

/// The length of `text` in UTF-16 code units: what JavaScript's `length` counts, and never
/// less than the number of characters (code points).
pub(crate) fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Cuts `text` to at most `max` UTF-16 code units (so also at most `max` characters), on a
/// character boundary, saying so. For services whose limits count characters.
pub(crate) fn limit_chars(text: &str, max: usize) -> Cow<'_, str> {
    if utf16_len(text) <= max {
        return Cow::Borrowed(text);
    }
    let budget = max.saturating_sub(utf16_len(TRUNCATION_NOTE));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        if used + c.len_utf16() > budget {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    Cow::Owned(format!("{}{TRUNCATION_NOTE}", &text[..end]))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Message;
    use crate::event::FlaggerEvent;
    use herald_api::EventType;
    use serde_json::Value;

    /// A watched Canary that failed: weight 0, 5 failed checks, revision `7c4d1a2f`.
    pub fn failed_canary() -> crate::CanaryFacts {
        crate::CanaryFacts {
            weight: Some(0),
            failed_checks: Some(5),
            revision: Some("7c4d1a2f".into()),
            ..Default::default()
        }
    }

    /// The body of `set`'s first notification for `event` from the watched `canary`.
    pub fn watched_body(
        set: &crate::PolicySet,
        event: &FlaggerEvent,
        canary: &crate::CanaryFacts,
    ) -> Value {
        let input = crate::MatchInput {
            event,
            canary: Some(canary),
            namespace_labels: None,
        };
        let got = set.notifications(&input, None);
        serde_json::from_slice(&got[0].as_ref().unwrap().body).unwrap()
    }

    /// An event at 2020-01-09T22:07:15.167Z.
    pub fn event(phase: &str, message: &str, event_type: EventType) -> FlaggerEvent {
        FlaggerEvent::new(
            "podinfo",
            "default",
            phase,
            message,
            event_type,
            1_578_607_635_167,
        )
    }

    pub fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Calls `check` with messages covering every severity, with and without a cluster, and
    /// titles and texts with characters JSON escapes, non-ASCII, empty and long ones: for
    /// comparing bodies written directly with their `serde_json` serialisation.
    pub fn messages(mut check: impl FnMut(&Message<'_>)) {
        let events = [
            event(
                "Progressing",
                "New revision detected! Scaling up podinfo.default",
                EventType::Normal,
            ),
            event(
                "Succeeded",
                "Promotion completed! Scaling down podinfo.default",
                EventType::Normal,
            ),
            event(
                "Progressing",
                "Halt advancement no values found",
                EventType::Warning,
            ),
            event(
                "Failed",
                "Canary failed! Scaling down podinfo.default",
                EventType::Warning,
            ),
            FlaggerEvent::new(
                "p\u{e9}-\"q\"",
                "ns\n",
                "Phase\t\u{1}",
                "",
                EventType::Normal,
                0,
            ),
            FlaggerEvent::new("a", "b", "", "x", EventType::Normal, u64::MAX),
        ];
        let long = format!("{}\"\n\u{1F680}", "long text ".repeat(3_000));
        let quoted = "\"\n\\".repeat(12_000);
        let texts = [
            "",
            "New revision detected! Scaling up podinfo.default",
            "Rolling back \u{1F680} <b>\\ \"quoted\"\r\n\ttab \u{0}\u{1f}\u{7f} \u{2028}",
            &long,
            &quoted,
        ];
        let titles = ["", "[prod-eu] podinfo.default", "T\u{e9}\"t\\le\n", &long];
        for event in &events {
            for cluster in ["", "prod-eu", "c\"l"] {
                for title in titles {
                    for text in texts {
                        check(&Message {
                            title,
                            text,
                            event,
                            cluster,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_cuts_bytes_on_a_char_boundary() {
        assert_eq!(limit("short", 10), "short");
        let long = "é".repeat(100);
        let cut = limit(&long, 50);
        assert!(cut.len() <= 50, "{}", cut.len());
        assert!(cut.ends_with(TRUNCATION_NOTE));
        assert_eq!(cut, format!("{}{TRUNCATION_NOTE}", "é".repeat(12)));
    }

    #[test]
    fn limit_chars_counts_utf16_units() {
        assert_eq!(limit_chars("abc", 3), "abc");
        // 30 characters of 2 bytes each fit a limit of 30 characters.
        let accented = "é".repeat(30);
        assert_eq!(limit_chars(&accented, 30), accented);
        let long = "a".repeat(40);
        let cut = limit_chars(&long, 30);
        assert_eq!(cut, format!("{}{TRUNCATION_NOTE}", "a".repeat(7)));
        assert_eq!(utf16_len(&cut), 30);
        // An emoji is two UTF-16 units: never split, never over the limit.
        let long = "😀".repeat(40);
        let cut = limit_chars(&long, 30);
        assert_eq!(cut, format!("{}{TRUNCATION_NOTE}", "😀".repeat(3)));
        assert!(utf16_len(&cut) <= 30);
    }
}
