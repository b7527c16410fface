//! What the pusher sees: git relays a hook's output as `remote: …` lines, so every line is
//! flushed as it is written and carries the `hookops:` prefix. Also the one output sanitiser
//! (`clean`): text hookops did not write itself (tool output, API-server errors, object names,
//! paths, commit subjects, ref names) can carry terminal control sequences, so every place
//! where text leaves hookops for a person (`say`, `error_line`, log lines, the gate's
//! rejections, records, the status page) passes it through `clean`.

use std::borrow::Cow;
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

/// Characters never printed as they are: control characters (ESC starts every terminal
/// sequence; CR and backspace overwrite what was printed; C1 controls act as ESC on some
/// terminals) and the invisible bidirectional controls (which make text read as something
/// else), except the line breaks and tabs hookops itself lays out text with.
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text with every unsafe character (`is_unsafe`) shown as its escape, `\u{1b}`.
pub fn clean(s: &str) -> Cow<'_, str> {
    escape_where(s, is_unsafe)
}

/// Like `clean`, for text that must stay on one line (a name in a column): line breaks and
/// tabs are shown as `\n` and `\t` too.
pub fn clean_line(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| is_unsafe(c) || c == '\n' || c == '\t')
}

fn escape_where(s: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Prints progress for the pusher: one `hookops:` line, cleaned; text that holds line breaks
/// (a tool's message) continues on indented `hookops:` lines, so no line of it can pass for
/// one of hookops' own.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let mut parts = line.split('\n').filter(|l| !l.trim().is_empty());
    let first = parts.next().unwrap_or("");
    let _ = writeln!(out, "hookops: {}", clean(first.trim_end()));
    for more in parts {
        let _ = writeln!(out, "hookops:   {}", clean(more.trim_end()));
    }
    let _ = out.flush();
}

/// How long a wait lasts before it is worth a line.
pub const SLOW: Duration = Duration::from_secs(1);

/// Says `line` only if the returned guard is still alive after `after`: a wait that ends in
/// moments prints nothing, so twenty parallel targets do not fill the pusher's screen.
pub fn say_if_slow(line: String, after: Duration) -> SlowGuard {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(after) == Err(mpsc::RecvTimeoutError::Timeout) {
            say(&line);
        }
    });
    SlowGuard { _tx: tx }
}

/// Dropping it before the time is up cancels the line.
pub struct SlowGuard {
    _tx: mpsc::Sender<()>,
}

/// An error on one line, with its causes (`{e:#}`), whatever the layers below wrote, cleaned.
pub fn error_line(e: &anyhow::Error) -> String {
    one_line(&clean(&format!("{e:#}")))
}

/// Text on one line: its lines trimmed and joined with spaces, blank ones dropped.
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The width of a column of names: its widest cell up to `MAX_COLUMN`. A longer cell does not
/// widen every line of the table: it overflows its own.
pub fn column_width<'a>(cells: impl IntoIterator<Item = &'a str>) -> usize {
    cells
        .into_iter()
        .map(|c| c.chars().count())
        .filter(|&w| w <= MAX_COLUMN)
        .max()
        .unwrap_or(0)
}

/// The widest a column of names grows.
pub const MAX_COLUMN: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_what_a_terminal_would_act_on() {
        assert_eq!(
            clean("plain text: ok\tand tabs\n"),
            "plain text: ok\tand tabs\n"
        );
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(
            clean("a\u{1b}[31mred\u{1b}]0;t\u{7}"),
            "a\\u{1b}[31mred\\u{1b}]0;t\\u{7}"
        );
        assert_eq!(clean("over\rwrite\u{8}"), "over\\rwrite\\u{8}");
        assert_eq!(clean("c1 \u{9b}2J del \u{7f}"), "c1 \\u{9b}2J del \\u{7f}");
        assert_eq!(clean("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(clean_line("a\tb\nc"), "a\\tb\\nc");
        let e = anyhow::anyhow!("line one\n\tx\u{1b}[2J").context("kubectl apply");
        assert_eq!(error_line(&e), "kubectl apply: line one x\\u{1b}[2J");
    }

    #[test]
    fn one_long_name_does_not_widen_the_column() {
        let long = "x".repeat(400);
        assert_eq!(super::column_width(["web", long.as_str(), "infra"]), 5);
        assert_eq!(
            super::column_width(["web", "a-forty-character-name-is-still-aligned!"]),
            40
        );
    }
}
