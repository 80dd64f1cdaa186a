//! A load-time lint for JSON body templates: values written inside a JSON string are not
//! JSON-escaped, so an event's quote would break the body.

/// The value expressions (`{{message}}`, `{{{name}}}`, `{{json x}}`...) that a JSON body
/// template puts inside a JSON string, as written in the template. Inside quotes a value is
/// not JSON-escaped: one with a quote breaks the body, or adds keys to it; `{{json value}}`
/// in place of the quoted string is safe. Blocks, `else` and comments are not values.
pub fn values_in_json_strings(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"{{") {
            // `\{{` is handlebars' escaped mustache: literal braces (handlebars drops the
            // backslash), unless the backslash is itself escaped.
            if i > 0 && bytes[i - 1] == b'\\' && !(i > 1 && bytes[i - 2] == b'\\') {
                escaped = false;
                i += 2;
                continue;
            }
            let triple = bytes[i..].starts_with(b"{{{");
            let close: &str = if triple { "}}}" } else { "}}" };
            let end = source[i..]
                .find(close)
                .map_or(bytes.len(), |at| i + at + close.len());
            let tag = &source[i..end];
            let inner = tag
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim_matches('~')
                .trim();
            let not_a_value = inner.is_empty()
                || inner.starts_with(['!', '#', '/', '^', '>', '*'])
                || inner == "else"
                || inner.starts_with("else ");
            if in_string && !not_a_value {
                found.push(tag.to_owned());
            }
            i = end;
            escaped = false;
            continue;
        }
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        i += 1;
    }
    found
}
