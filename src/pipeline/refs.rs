//! The first stage: which refs moved. Parses `post-receive`/`pre-receive` standard input
//! (githooks(5): one `<old-value> SP <new-value> SP <ref-name> LF` per updated ref).

use std::io::Read;

use anyhow::{bail, Context, Result};
use git2::Oid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// `None` for the null id: the ref did not exist before.
    pub old: Option<Oid>,
    /// `None` for the null id: the ref was deleted.
    pub new: Option<Oid>,
    pub name: String,
}

fn parse_id(word: &str) -> Option<Option<Oid>> {
    // SHA-1 (40) and SHA-256 (64) repositories.
    if (word.len() != 40 && word.len() != 64) || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if word.bytes().all(|b| b == b'0') {
        return Some(None);
    }
    Oid::from_str(word).ok().map(Some)
}

/// Hook input is a handful of lines; anything near this size is not from git.
const MAX_STDIN: u64 = 4 * 1024 * 1024;

/// The ref updates git passes a hook on stdin (at most `MAX_STDIN` bytes).
pub fn read_stdin(hook: &str) -> Result<Vec<RefUpdate>> {
    let mut input = String::new();
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_string(&mut input)
        .with_context(|| format!("{hook}: reading stdin"))?;
    parse_updates(&input, hook)
}

/// Parses the whole of a hook's standard input. `hook` names the hook in errors.
pub fn parse_updates(input: &str, hook: &str) -> Result<Vec<RefUpdate>> {
    let mut updates = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let shown: String = line.chars().take(120).collect();
        let mut words = line.split(' ');
        let (Some(old), Some(new), Some(name), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bail!(
                "{hook}: stdin line {}: expected '<old> <new> <ref>', got {shown:?}",
                i + 1
            );
        };
        let (Some(old), Some(new)) = (parse_id(old), parse_id(new)) else {
            bail!(
                "{hook}: stdin line {}: not an object id in {shown:?}",
                i + 1
            );
        };
        if !name.starts_with("refs/") || !git2::Reference::is_valid_name(name) {
            bail!("{hook}: stdin line {}: invalid ref name {name:?}", i + 1);
        }
        updates.push(RefUpdate {
            old,
            new,
            name: name.to_string(),
        });
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn several_refs() {
        let input =
            format!("{Z} {A} refs/heads/main\n{A} {B} refs/heads/dev\n{B} {Z} refs/heads/old\n");
        let u = parse_updates(&input, "post-receive").unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].old, None);
        assert_eq!(u[1].new, Some(Oid::from_str(B).unwrap()));
        assert_eq!(u[2].new, None);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for bad in [
            format!("{A} {B}"),
            format!("{A} {B} refs/heads/x extra"),
            format!("{A}x {B} refs/heads/main"),
            format!("{A} {B} main"),
            format!("{A} {B} refs/heads/a..b"),
        ] {
            let input = format!("{Z} {A} refs/heads/main\n{bad}\n");
            let err = parse_updates(&input, "post-receive")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("post-receive: stdin line 2:"), "{err}");
        }
    }

    #[test]
    fn empty_input_is_no_updates() {
        assert!(parse_updates("", "post-receive").unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_updates(&s, "post-receive");
        }
    }

    /// Hook stdin as git writes it and as it could be garbled: what parses is a list of
    /// valid ref names under refs/ with ids of the right length, and prints back as it came.
    #[test]
    fn fuzz_hook_stdin() {
        let tokens: Vec<String> = [
            "0".repeat(40),
            "a1".repeat(20),
            "b2".repeat(32),
            "A".repeat(40),
            " ".into(),
            "\n".into(),
            "\r\n".into(),
            "\t".into(),
            "refs/heads/main".into(),
            "refs/notes/hookops".into(),
            "refs/heads/a..b".into(),
            "refs/".into(),
            "HEAD".into(),
            "\u{1b}[2J".into(),
        ]
        .to_vec();
        crate::fuzz::run("hook stdin", crate::fuzz::assembled(tokens, 14), |s| {
            if let Ok(updates) = parse_updates(s, "post-receive") {
                for u in &updates {
                    assert!(u.name.starts_with("refs/"), "{u:?}");
                    assert!(git2::Reference::is_valid_name(&u.name), "{u:?}");
                    assert!(!u.name.chars().any(|c| c.is_control() || c == ' '), "{u:?}");
                }
                assert!(updates.len() <= s.lines().count());
            }
        });
    }
}
