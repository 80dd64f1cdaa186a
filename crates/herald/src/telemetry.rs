//! Structured logs with `tracing`: human-readable text, or JSON lines for log pipelines.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Text-log fields with control characters escaped (`\n` as `\\n`), so that a value from an
/// event (a message with a newline) cannot forge a log line. Values are escaped as they are
/// formatted, straight into the line (no string per field: two info lines per event).
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() != "message" {
            write!(writer, "{}=", field.name())?;
        }
        std::fmt::Write::write_fmt(&mut Escaping(writer), format_args!("{value:?}"))
    })
    .delimited(" ")
}

/// Writes through to `W` with control characters escaped as [`escape_controls`] does.
struct Escaping<'a, W: std::fmt::Write>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            self.0
                .write_str(&escape_controls(c.encode_utf8(&mut [0; 4])))?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
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
    // Colours only for a terminal (as before, `NO_COLOR` turns them off there too): in a
    // file or a log pipeline they are noise, and cost formatting on every line.
    use std::io::IsTerminal;
    let colours =
        std::io::stderr().is_terminal() && std::env::var("NO_COLOR").map_or(true, |v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
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

    #[test]
    fn fields_are_escaped_as_they_are_written() {
        use std::fmt::Write;
        for text in ["plain", "a\nb\r\u{1b}[31m", "\t", "é\u{85}ü\n", ""] {
            let mut out = String::new();
            write!(Escaping(&mut out), "{text:?} {text}").unwrap();
            let whole = format!("{text:?} {text}");
            assert_eq!(out, escape_controls(&whole), "{text:?}");
        }
    }
}
