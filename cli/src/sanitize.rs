//! Making provider-supplied text safe to print. An email, subject or revocation reason comes from
//! an identity provider or another admin; printed as it is, an ESC could move the cursor,
//! recolour or retitle the terminal, and a newline or a bidirectional override could forge a line
//! of the report. Every such character is replaced by U+FFFD before it reaches a terminal.
//! (`-o json` and `-o yaml` are escaped by their serializers instead, and stay exact.)

use std::borrow::Cow;

/// What stands in for a character that is not printed.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether a terminal could act on `c`: C0 and C1 controls (ESC, CR, BEL, backspace, newline…),
/// DEL, and the invisible characters that reorder text (bidirectional marks, embeddings,
/// overrides and isolates).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// One value (a table cell, an email, a subject): every unsafe character replaced, newlines too.
pub fn value(text: &str) -> Cow<'_, str> {
    replace(text, |_| false)
}

/// A whole message of the plugin's own: unsafe characters replaced except the newlines that
/// separate its lines.
pub fn message(text: &str) -> Cow<'_, str> {
    replace(text, |c| c == '\n')
}

fn replace(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if is_unsafe(c) && !keep(c) {
                    REPLACEMENT
                } else {
                    c
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_never_get_through() {
        let evil = "alice\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{8}\u{7f}\u{9b}31m@example.com";
        let clean = value(evil);
        assert!(!clean.chars().any(is_unsafe), "{clean:?}");
        assert_eq!(
            clean,
            "alice\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2J\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}31m@example.com"
        );
        // Reordering characters (a "Trojan Source" reason) are replaced too.
        assert_eq!(value("ok\u{202E}kcab"), "ok\u{FFFD}kcab");
        assert_eq!(value("a\u{2066}b\u{2069}"), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn a_value_cannot_forge_a_line_but_a_message_keeps_its_own() {
        assert_eq!(value("bob\nerror: fake"), "bob\u{FFFD}error: fake");
        assert_eq!(value("tab\there"), "tab\u{FFFD}here");
        assert_eq!(
            message("line one\nline\u{1b}[1m two"),
            "line one\nline\u{FFFD}[1m two"
        );
    }

    #[test]
    fn ordinary_text_is_untouched_and_not_copied() {
        for text in ["alice@example.com", "Zoë Ünïcode 名前", "CiQw=,x", ""] {
            assert!(
                matches!(value(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }
}
