//! Writing JSON bodies directly, byte for byte as `serde_json`'s compact serialiser writes
//! them.
//!
//! The chat payloads have fixed layouts: their keys and most values are constants. Through
//! `serde_json` every key and constant was escaped again for every notification, and string
//! escaping was the largest single cost of rendering. Here the constant parts are written as
//! literal JSON text and only the event's own strings are escaped, with a scan that skips
//! eight bytes at a time when nothing needs escaping. The payload tests compare every body
//! with the `serde_json` serialisation it replaces.

/// Where escaped JSON text goes: a body's bytes, or a template's output.
pub(crate) trait Sink {
    fn push_text(&mut self, text: &str);
}

impl Sink for Vec<u8> {
    fn push_text(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

impl Sink for String {
    fn push_text(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// Appends `s` as a JSON string (quoted and escaped) exactly as `serde_json` writes it.
pub(crate) fn push_str(out: &mut impl Sink, s: &str) {
    out.push_text("\"");
    push_escaped(out, s);
    out.push_text("\"");
}

/// Appends the escaped contents of a JSON string, without the quotes, so several strings can
/// be written as one JSON string: escaping is per character, so escaping `a` then `b` gives
/// the escaping of `a + b`.
pub(crate) fn push_escaped(out: &mut impl Sink, s: &str) {
    // Most strings (names, phases, messages) have nothing to escape: one quick scan, then one
    // copy.
    if !needs_escape(s.as_bytes()) {
        out.push_text(s);
        return;
    }
    // Every byte escaped is ASCII, so the pieces copied between them are whole characters.
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if let Some(escaped) = escape(b) {
            out.push_text(&s[start..i]);
            out.push_text(escaped);
            start = i + 1;
        }
    }
    out.push_text(&s[start..]);
}

/// Whether a byte of `bytes` needs escaping, looking at eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| escape(b).is_some());
    }
    let mut chunks = bytes.chunks_exact(8);
    if chunks.by_ref().any(|chunk| may_need_escape(word(chunk))) {
        return true;
    }
    // The last eight bytes cover the remainder (looking at some bytes twice).
    !chunks.remainder().is_empty() && may_need_escape(word(&bytes[bytes.len() - 8..]))
}

/// Whether one of the eight bytes of `word` is a control character (below 0x20), `"` or
/// `\`. Never false when one is (a true answer may be a false alarm, which costs only the
/// byte-by-byte path).
pub(crate) fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of a byte is set in `(x - n*ONES) & !x & HIGH` when some byte of x is below
    // n (n <= 0x80): the classic "has a byte less than n" test.
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGH;
    let control = below(word, 0x20);
    // A byte equal to c is a zero byte of `word ^ c*ONES`, i.e. below 1.
    let quote = below(word ^ (u64::from(b'"') * ONES), 1);
    let backslash = below(word ^ (u64::from(b'\\') * ONES), 1);
    (control | quote | backslash) != 0
}

/// How `serde_json` escapes a byte of a string; `None` when it is written as is (all other
/// bytes, including every byte of a multi-byte character).
fn escape(b: u8) -> Option<&'static str> {
    /// Each control character's escape, by value: the short form where JSON has one, else
    /// `\u00XX`.
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019",
        "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    match b {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        0x00..=0x1F => Some(CONTROL[usize::from(b)]),
        _ => None,
    }
}

/// Appends name/value pairs as the elements of a JSON array (without its brackets):
/// `{"<name_key>":name,"value":value<rest>}`, comma-separated, where `rest` is any further
/// constant members. The chat layouts write their facts this way, each with its own key.
pub(crate) fn push_pairs<N: AsRef<str>, V: AsRef<str>>(
    out: &mut Vec<u8>,
    pairs: impl Iterator<Item = (N, V)>,
    name_key: &str,
    rest: &str,
) {
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(name_key.as_bytes());
        out.extend_from_slice(b"\":");
        push_str(out, name.as_ref());
        out.extend_from_slice(b",\"value\":");
        push_str(out, value.as_ref());
        out.extend_from_slice(rest.as_bytes());
        out.push(b'}');
    }
}

/// Appends `n` in decimal, as `serde_json` writes an integer.
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, s);
        let mut text = String::new();
        push_str(&mut text, s);
        assert_eq!(text.as_bytes(), out);
        text
    }

    /// Every character class at every position of a word, and strings of every length around
    /// the word size, against `serde_json`.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "New revision detected! Scaling up team-payments-api.payments".into(),
            "Rolling back \u{1F680} <b>\\ \"quoted\"".into(),
            "é".repeat(17),
            "\u{7f}\u{80}\u{ff}\u{2028}\u{2029}/".into(),
        ];
        // Each ASCII character, alone and in every position of 1 to 17 bytes of text.
        for b in 0u8..=0x7F {
            let c = char::from(b);
            samples.push(c.to_string());
            for len in 1..=17 {
                for at in 0..len {
                    let mut s: String = "a".repeat(len);
                    s.replace_range(at..=at, &c.to_string());
                    samples.push(s);
                }
            }
        }
        // Several escapes in one word, and across words.
        samples.push("\"\"\\\\\n\n\r\t\u{0}\u{1f}\u{8}\u{c}x".repeat(3));
        samples.push(format!("{}\"{}\\", "x".repeat(15), "y".repeat(7)));
        for s in &samples {
            assert_eq!(quoted(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        let mut joined = Vec::new();
        push_escaped(&mut joined, "a\"b ");
        push_escaped(&mut joined, "c\nd");
        assert_eq!(joined, br#"a\"b c\nd"#);
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        for n in [0, 1, 9, 10, 99, 1_578_607_635, 1_764_072_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }
}
