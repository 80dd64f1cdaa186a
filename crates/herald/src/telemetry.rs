//! Structured logs with `tracing`: human-readable text, or JSON lines for log pipelines.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Text-log fields with control characters escaped (`\n` as `\\n`), so that a value from an
/// event (a message with a newline) cannot forge a log line.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// Control characters as escapes: `\n`, `\r`, `\t`, others `\u{..}`.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Logs go to stderr, so command output on stdout (`herald render`) stays machine-readable.
/// `RUST_LOG` overrides `level` when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Aggregates repeated log lines: at most one line per key per interval, carrying how many
/// were held back since the previous one. Bounded: at most `MAX_KEYS` keys are tracked (a
/// full table is cleared, which at worst lets one extra line through per key).
pub struct LogLimiter {
    interval: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

impl LogLimiter {
    const MAX_KEYS: usize = 1024;

    pub fn new(interval: std::time::Duration) -> Self {
        LogLimiter {
            interval,
            seen: Default::default(),
        }
    }

    /// One line a second per key.
    pub fn per_second() -> Self {
        Self::new(std::time::Duration::from_secs(1))
    }

    /// `Some(suppressed)` when a line for `key` should be logged now (`suppressed`: how many
    /// were held back since the previous one); `None` when it is held back (and counted).
    pub fn admit(&self, key: &str) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().expect("log limiter lock poisoned");
        if let Some((last, held)) = seen.get_mut(key) {
            if now.duration_since(*last) < self.interval {
                *held += 1;
                return None;
            }
            let suppressed = *held;
            *last = now;
            *held = 0;
            return Some(suppressed);
        }
        if seen.len() >= Self::MAX_KEYS {
            seen.clear();
        }
        seen.insert(key.to_owned(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_aggregates_per_key() {
        let limiter = LogLimiter::new(std::time::Duration::from_millis(50));
        assert_eq!(limiter.admit("a"), Some(0));
        assert_eq!(limiter.admit("a"), None);
        assert_eq!(limiter.admit("a"), None);
        assert_eq!(limiter.admit("b"), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(limiter.admit("a"), Some(2));
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("a\nb\r\u{1b}[31m"), "a\\nb\\r\\u{1b}[31m");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
