//! Finds the block a template leaves open. Handlebars' grammar only notices an unclosed
//! `{{#if}}` when the input runs out, and reports that as a list of the grammar rules it
//! expected at the end: this names the block and where it was opened instead.

/// A block (`{{#name}}`, `{{^name}}`, `{{#> partial}}`, `{{#*inline}}`) with no closing tag.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnclosedBlock {
    pub name: String,
    /// 1-based, in characters, of the opening `{{` (as handlebars counts).
    pub line: usize,
    pub column: usize,
}

/// The innermost block `source` opens and never closes, if any.
pub(crate) fn unclosed_block(source: &str) -> Option<UnclosedBlock> {
    let mut open: Vec<UnclosedBlock> = Vec::new();
    let mut rest = source;
    let mut consumed = 0;
    while let Some(at) = rest.find("{{") {
        let start = consumed + at;
        let escaped = source[..start].ends_with('\\');
        let tag = &source[start + 2..];
        let end = if let Some(comment) = tag.strip_prefix("!--") {
            comment.find("--}}").map(|e| start + 2 + 3 + e + 4)
        } else {
            tag.find("}}").map(|e| start + 2 + e + 2)
        };
        let Some(end) = end else { break };
        if !escaped {
            let tag = tag.trim_start_matches('{').trim_start_matches('~');
            if let Some(opened) = tag.strip_prefix(['#', '^']) {
                let (line, column) = line_column(source, start);
                let name = tag_name(opened.trim_start_matches(['>', '*']));
                // `{{^}}` alone is an `else`, not a block.
                if !name.is_empty() {
                    open.push(UnclosedBlock { name, line, column });
                }
            } else if let Some(closed) = tag.strip_prefix('/') {
                let name = tag_name(closed);
                if let Some(i) = open.iter().rposition(|b| b.name == name) {
                    open.truncate(i);
                }
            }
        }
        consumed = end;
        rest = &source[end..];
    }
    open.pop()
}

fn tag_name(tag: &str) -> String {
    tag.trim_start()
        .split(|c: char| c.is_whitespace() || matches!(c, '}' | '~' | '('))
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The 1-based line and character column of byte `offset`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where handlebars reports running out of input: one character past the end.
pub(crate) fn end_position(source: &str) -> (usize, usize) {
    line_column(&format!("{source} "), source.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(source: &str) -> Option<(String, usize, usize)> {
        unclosed_block(source).map(|b| (b.name, b.line, b.column))
    }

    #[test]
    fn names_the_innermost_open_block_and_where_it_opened() {
        assert_eq!(found("a {{#if x}}y"), Some(("if".into(), 1, 3)));
        assert_eq!(
            found("{{#each xs}}\n  é {{~#if y}}z{{else}}w"),
            Some(("if".into(), 2, 5))
        );
        assert_eq!(
            found("{{#each xs}}{{#if y}}z{{/if}}"),
            Some(("each".into(), 1, 1))
        );
        assert_eq!(found("{{^ missing }}x"), Some(("missing".into(), 1, 1)));
        assert_eq!(found("{{#> layout}}x"), Some(("layout".into(), 1, 1)));
    }

    #[test]
    fn closed_commented_and_escaped_blocks_are_not_open() {
        for source in [
            "{{#if x}}y{{/if}}",
            "{{#if x}}{{#unless y}}z{{/unless}}{{else}}w{{/if}}",
            "{{!-- {{#if x}} --}}text",
            "{{! {{#if x}} }}",
            r"\{{#if x}}",
            "{{#if x}}{{^}}y{{/if}}",
            "plain {{name}}",
        ] {
            assert_eq!(found(source), None, "{source}");
        }
    }

    #[test]
    fn the_end_position_is_one_past_the_last_character() {
        assert_eq!(end_position("abc"), (1, 4));
        assert_eq!(end_position("ab\nçd"), (2, 3));
        assert_eq!(end_position(""), (1, 1));
    }
}
