//! Escaping what comes from an event for the markup of the receiver it goes to.
//!
//! A template's own text is written as the policy author wrote it (links and mentions an
//! author adds on purpose still work); every value inserted into it (`{{message}}`,
//! `{{name}}`, `{{metadata.x}}`, helper results...) and every fact a payload adds (the phase,
//! the cluster) is escaped with the receiver's [`Markup`]. The triple-stash form
//! (`{{{message}}}`) inserts a value unescaped, for values the author trusts.

use std::borrow::Cow;

/// The zero-width space Rocket.Chat and Mattermost get after each `@` of a value, so
/// `@all`, `@here` or `@user` in an event is shown as written but is not a mention: their
/// mention patterns need a username character right after the `@`.
pub const ZERO_WIDTH_SPACE: char = '\u{200B}';

/// How values are escaped for one receiver's markup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Markup {
    /// No markup: values as they are (generic webhooks' JSON bodies, `herald render` of the
    /// context, load-time checks).
    Plain,
    /// Slack's `mrkdwn` and its control sequences (`<!channel>`, `<@U123>`, `<url|text>`):
    /// `&`, `<` and `>` as `&amp;`, `&lt;` and `&gt;`, as Slack's formatting rules ask.
    Slack,
    /// Rocket.Chat: Slack's three entities, and a zero-width space after each `@`.
    RocketChat,
    /// Teams (Adaptive Card TextBlocks and MessageCards): a CommonMark subset, so the
    /// markdown specials are escaped with a backslash (CommonMark's backslash escapes).
    Teams,
    /// Discord's markdown: its specials escaped with a backslash (mentions are also turned
    /// off by the body's `allowed_mentions`).
    Discord,
    /// Google Chat card text, a small HTML subset: `&`, `<`, `>` and `"` as entities.
    Html,
    /// CommonMark in a service with `@`-mentions (Mattermost): Teams' backslash escapes, and
    /// a zero-width space after each `@`, so `@channel` or `@all` is shown but mentions no
    /// one.
    MarkdownWithMentions,
}

/// The characters Teams' and Discord's markdown give a meaning to: emphasis, code, links,
/// quotes, headings, tables/spoilers and HTML-like tags. All are ASCII punctuation, which
/// CommonMark (and Discord) lets a backslash escape.
const TEAMS_SPECIALS: &[u8] = b"\\`*_~[]()<>#|";
const DISCORD_SPECIALS: &[u8] = TEAMS_SPECIALS;

/// Which bytes each markup escapes, one table per variant (in declaration order), so the
/// check that runs over every value is one lookup per byte whatever the markup.
const SPECIALS: [[bool; 256]; 7] = [
    specials(b""),
    specials(b"&<>"),
    specials(b"&<>@"),
    specials(TEAMS_SPECIALS),
    specials(DISCORD_SPECIALS),
    specials(b"&<>\""),
    specials(b"\\`*_~[]()<>#|@"),
];

const fn specials(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

impl Markup {
    fn is_special(self, b: u8) -> bool {
        SPECIALS[self as usize][b as usize]
    }

    /// `text` escaped; borrowed when nothing needed escaping (most names and messages).
    pub fn escape(self, text: &str) -> Cow<'_, str> {
        if !self.needs_escape(text) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 16);
        self.push_escaped_slow(&mut out, text);
        Cow::Owned(out)
    }

    /// Appends `text` escaped to `out`.
    pub fn push_escaped(self, out: &mut String, text: &str) {
        if self.needs_escape(text) {
            self.push_escaped_slow(out, text);
        } else {
            out.push_str(text);
        }
    }

    fn needs_escape(self, text: &str) -> bool {
        let table = &SPECIALS[self as usize];
        self != Markup::Plain && text.bytes().any(|b| table[b as usize])
    }

    fn push_escaped_slow(self, out: &mut String, text: &str) {
        // Every special is ASCII, so the runs copied between them are whole characters.
        let mut start = 0;
        for (i, b) in text.bytes().enumerate() {
            if !self.is_special(b) {
                continue;
            }
            out.push_str(&text[start..i]);
            start = i + 1;
            match (self, b) {
                (Markup::MarkdownWithMentions, b'@') => {
                    out.push('@');
                    out.push(ZERO_WIDTH_SPACE);
                }
                (Markup::Teams | Markup::Discord | Markup::MarkdownWithMentions, _) => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                (_, b'&') => out.push_str("&amp;"),
                (_, b'<') => out.push_str("&lt;"),
                (_, b'>') => out.push_str("&gt;"),
                (_, b'"') => out.push_str("&quot;"),
                (_, b'@') => {
                    out.push('@');
                    out.push(ZERO_WIDTH_SPACE);
                }
                _ => unreachable!("every special is handled"),
            }
        }
        out.push_str(&text[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<!channel> <@U123> <http://evil.example|approve> @all [click](http://evil) <a href=x> @everyone & *b* _i_ ~s~ `c` # h \\ \"q\"";

    #[test]
    fn each_markup_escapes_its_specials() {
        assert_eq!(Markup::Plain.escape(HOSTILE), HOSTILE);
        assert_eq!(
            Markup::Slack.escape(HOSTILE),
            "&lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|approve&gt; @all [click](http://evil) &lt;a href=x&gt; @everyone &amp; *b* _i_ ~s~ `c` # h \\ \"q\""
        );
        assert_eq!(
            Markup::RocketChat.escape(HOSTILE),
            "&lt;!channel&gt; &lt;@\u{200B}U123&gt; &lt;http://evil.example|approve&gt; @\u{200B}all [click](http://evil) &lt;a href=x&gt; @\u{200B}everyone &amp; *b* _i_ ~s~ `c` # h \\ \"q\""
        );
        assert_eq!(
            Markup::Teams.escape(HOSTILE),
            "\\<!channel\\> \\<@U123\\> \\<http://evil.example\\|approve\\> @all \\[click\\]\\(http://evil\\) \\<a href=x\\> @everyone & \\*b\\* \\_i\\_ \\~s\\~ \\`c\\` \\# h \\\\ \"q\""
        );
        assert_eq!(
            Markup::Discord.escape(HOSTILE),
            "\\<!channel\\> \\<@U123\\> \\<http://evil.example\\|approve\\> @all \\[click\\]\\(http://evil\\) \\<a href=x\\> @everyone & \\*b\\* \\_i\\_ \\~s\\~ \\`c\\` \\# h \\\\ \"q\""
        );
        assert_eq!(
            Markup::Html.escape(HOSTILE),
            "&lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|approve&gt; @all [click](http://evil) &lt;a href=x&gt; @everyone &amp; *b* _i_ ~s~ `c` # h \\ &quot;q&quot;"
        );
        assert_eq!(
            Markup::MarkdownWithMentions.escape(HOSTILE),
            "\\<!channel\\> \\<@\u{200B}U123\\> \\<http://evil.example\\|approve\\> @\u{200B}all \\[click\\]\\(http://evil\\) \\<a href=x\\> @\u{200B}everyone & \\*b\\* \\_i\\_ \\~s\\~ \\`c\\` \\# h \\\\ \"q\""
        );
    }

    #[test]
    fn plain_text_is_borrowed() {
        for markup in [
            Markup::Plain,
            Markup::Slack,
            Markup::RocketChat,
            Markup::Teams,
            Markup::Discord,
            Markup::Html,
            Markup::MarkdownWithMentions,
        ] {
            let text = "New revision detected! Scaling up podinfo.default é 🚀";
            assert!(
                matches!(markup.escape(text), Cow::Borrowed(_)),
                "{markup:?}"
            );
            let mut out = String::from("x");
            markup.push_escaped(&mut out, "a<b");
            assert_eq!(out, format!("x{}", markup.escape("a<b")));
        }
    }
}
