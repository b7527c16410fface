//! What the pusher sees: git relays a hook's output as `remote: …` lines, so every line is
//! flushed as it is written and carries the `hookops:` prefix.

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

/// Prints one progress line for the pusher.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "hookops: {line}");
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

/// An error on one line, with its causes (`{e:#}`), whatever the layers below wrote.
pub fn error_line(e: &anyhow::Error) -> String {
    one_line(&format!("{e:#}"))
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
