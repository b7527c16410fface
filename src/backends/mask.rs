//! Masking of secret values in text that leaves hookops: child process output (kubectl,
//! terraform), log lines and error messages.
//!
//! A [`Masker`] is a set of secret values. [`Masker::mask`] replaces every occurrence of every
//! value with `***`; [`Masker::mask_lines`] does the same for a stream, line by line, so a
//! child's output can be relayed as it arrives.
//!
//! # What is caught
//!
//! For each value added (see [`Masker::add`]) the masker also looks for:
//! - the base64 encodings of the value, standard and URL-safe alphabet, padded and unpadded,
//!   and the same for the value followed by a newline (`echo value | base64`): Kubernetes
//!   Secret manifests and `kubectl get secret -o yaml` carry values this way;
//! - the JSON-escaped form, when it differs (a value with `"`, `\` or control characters
//!   printed inside a JSON document);
//! - each line of a multi-line value (a PEM key, say), because [`Masker::mask_lines`] sees one
//!   line at a time and could never match the whole value;
//! - the percent-encoded form, when it differs (a token in a URL's query string or user info,
//!   as HTTP clients and servers print them): every byte but RFC 3986's unreserved characters
//!   encoded, with upper- and lower-case hex digits, and with spaces as `+` (form encoding);
//! - the hex encoding of the value's bytes, lower- and upper-case (`xxd -p`, debug dumps,
//!   some tokens stored as hex).
//!
//! # What is not caught
//!
//! Any other transformation: a value split across two writes that are not
//! on the same line, a value that was truncated, reversed, hashed, upper-cased, wrapped by a
//! terminal, or base64-encoded as part of a larger blob (the encoding of `prefix + value` does
//! not contain the encoding of `value` unless the prefix length is a multiple of 3). Values
//! shorter than [`MIN_SECRET_LEN`] bytes are ignored, since masking `on` or `1` would destroy
//! every line of output while protecting nothing worth protecting.
//!
//! Overlapping occurrences are masked as their union, so no fragment of a value survives next
//! to a `***`, and masking is repeated until no value occurs in the result (a replacement can
//! join text into a new occurrence when values contain `*`).

use std::fmt;
use std::io::{BufRead, Write};
use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Values shorter than this many bytes are not masked (see the module docs).
pub const MIN_SECRET_LEN: usize = 4;

const MASK: &[u8] = b"***";

/// Everything but RFC 3986's unreserved characters, as URL components encode it.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `%2F` → `%2f`: the same percent-encoding with lower-case hex digits.
fn lower_hex_escapes(pct: &str) -> String {
    let mut out = String::with_capacity(pct.len());
    let mut left = 0;
    for c in pct.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A set of secret values to hide from output. Cheap to clone (the patterns live behind an
/// `Arc`); a clone is a snapshot, so values added to one copy afterwards are not seen by the
/// others. Its `Debug` output shows how many patterns it holds, never the patterns.
#[derive(Clone, Default)]
pub struct Masker {
    /// Byte patterns, longest first, without duplicates.
    patterns: Arc<Vec<Vec<u8>>>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Adds a secret value and its encodings. Values shorter than [`MIN_SECRET_LEN`] bytes
    /// (including the empty string) are ignored.
    pub fn add(&mut self, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let mut new: Vec<Vec<u8>> = Vec::new();
        new.push(value.as_bytes().to_vec());
        for raw in [value.to_string(), format!("{value}\n")] {
            for alphabet in [STD_ALPHABET, URL_ALPHABET] {
                let encoded = base64(raw.as_bytes(), alphabet);
                // The unpadded form is a prefix of the padded one; both are listed so a
                // consumer that strips padding is still caught.
                let unpadded = encoded.trim_end_matches('=').as_bytes().to_vec();
                new.push(encoded.into_bytes());
                new.push(unpadded);
            }
        }
        if let Ok(quoted) = serde_json::to_string(value) {
            let inner = &quoted[1..quoted.len() - 1];
            new.push(inner.as_bytes().to_vec());
        }
        let pct = utf8_percent_encode(value, URL_ENCODE).to_string();
        if pct != value {
            new.push(lower_hex_escapes(&pct).into_bytes());
            new.push(pct.replace("%20", "+").into_bytes());
            new.push(pct.into_bytes());
        }
        let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
        new.push(hex.to_ascii_uppercase().into_bytes());
        new.push(hex.into_bytes());
        if value.contains('\n') {
            for line in value.lines() {
                new.push(line.trim_end_matches('\r').as_bytes().to_vec());
            }
        }

        let patterns = Arc::make_mut(&mut self.patterns);
        for p in new {
            if p.len() >= MIN_SECRET_LEN && !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        // Longest first, so that when a short value is part of a longer one the longer one
        // decides where the mask goes (only matters for readability: coverage is a union).
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Number of byte patterns (values plus their encodings) being masked.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Returns `text` with every occurrence of every value (and its encodings) replaced by
    /// `***`.
    pub fn mask(&self, text: &str) -> String {
        let masked = self.mask_bytes(text.as_bytes());
        // Patterns are whole UTF-8 strings, so matches start and end on character
        // boundaries and replacing them with ASCII keeps the text valid UTF-8; the lossy
        // fallback only exists so that no input can make this panic.
        match String::from_utf8(masked) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Byte-level [`Masker::mask`], for output that need not be UTF-8.
    pub fn mask_bytes(&self, input: &[u8]) -> Vec<u8> {
        let mut current = input.to_vec();
        // Each pass shrinks the text (every pattern is longer than the mask), so this ends.
        loop {
            let covered = self.coverage(&current);
            if !covered.iter().any(|&c| c) {
                return current;
            }
            let mut out = Vec::with_capacity(current.len());
            let mut i = 0;
            while i < current.len() {
                if covered[i] {
                    out.extend_from_slice(MASK);
                    while i < current.len() && covered[i] {
                        i += 1;
                    }
                } else {
                    out.push(current[i]);
                    i += 1;
                }
            }
            current = out;
        }
    }

    /// Masks `input` line by line into `out`, flushing after each line so a child's output
    /// shows up as it is produced. Lines need not be UTF-8. A value containing a newline can
    /// only be caught line by line (see the module docs).
    pub fn mask_lines<R: BufRead, W: Write>(
        &self,
        mut input: R,
        mut out: W,
    ) -> std::io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            out.write_all(&self.mask_bytes(&line))?;
            out.flush()?;
        }
        out.flush()
    }

    /// Marks every byte that belongs to some occurrence of some pattern, overlapping
    /// occurrences included.
    fn coverage(&self, text: &[u8]) -> Vec<bool> {
        let mut covered = vec![false; text.len()];
        for p in self.patterns.iter() {
            let mut start = 0;
            while let Some(pos) = find(&text[start..], p) {
                let at = start + pos;
                for c in &mut covered[at..at + p.len()] {
                    *c = true;
                }
                start = at + 1;
            }
        }
        covered
    }
}

/// Position of the first occurrence of `needle` (non-empty) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        let off = hay[i..=last_start].iter().position(|&b| b == first)?;
        i += off;
        if &hay[i + 1..i + needle.len()] == rest {
            return Some(i);
        }
        i += 1;
    }
    None
}

const STD_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Padded base64 (RFC 4648); small enough not to warrant a dependency.
fn base64(input: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(alphabet[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masker(values: &[&str]) -> Masker {
        let mut m = Masker::new();
        for v in values {
            m.add(v);
        }
        m
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes(), STD_ALPHABET), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff], URL_ALPHABET), "-_8=");
    }

    #[test]
    fn masks_every_occurrence() {
        let m = masker(&["hunter22"]);
        assert_eq!(m.mask("pw=hunter22 again hunter22."), "pw=*** again ***.");
    }

    #[test]
    fn short_and_empty_values_are_ignored() {
        let m = masker(&["", "a", "abc"]);
        assert!(m.is_empty());
        assert_eq!(m.mask("abc a"), "abc a");
    }

    #[test]
    fn longest_value_wins_and_overlaps_leave_no_fragment() {
        let m = masker(&["secret", "secretive"]);
        assert_eq!(m.mask("a secretive secret"), "a *** ***");
        let m = masker(&["abcab"]);
        // Two overlapping occurrences: masking only the first would leave "cab" visible.
        assert_eq!(m.mask("xabcabcaby"), "x***y");
    }

    #[test]
    fn masks_base64_forms() {
        let m = masker(&["s3cr3t-value"]);
        let std = base64(b"s3cr3t-value", STD_ALPHABET);
        let with_newline = base64(b"s3cr3t-value\n", STD_ALPHABET);
        let text = format!("data:\n  password: {std}\n  other: {with_newline}\n");
        let out = m.mask(&text);
        assert_eq!(out, "data:\n  password: ***\n  other: ***\n");
        let unpadded = with_newline.trim_end_matches('=');
        assert_eq!(m.mask(unpadded), "***");
    }

    #[test]
    fn masks_percent_encoded_and_hex_forms() {
        let m = masker(&["p@ss w/rd+1"]);
        for text in [
            "https://u:p%40ss%20w%2Frd%2B1@host/r",
            "GET /x?token=p%40ss%20w%2frd%2b1&a=b",
            "body: token=p%40ss+w%2Frd%2B1",
            "dump 7040737320772f72642b31 end",
            "dump 7040737320772F72642B31 end",
        ] {
            let out = m.mask(text);
            assert!(out.contains("***"), "{text} -> {out}");
            for piece in ["p%40ss", "p@ss", "7040737320"] {
                assert!(!out.contains(piece), "{text} -> {out}");
            }
        }
        let plain = masker(&["abcdef12"]);
        assert_eq!(plain.mask("x abcdef12 y"), "x *** y");
        assert_eq!(plain.mask("6162636465663132"), "***");
        assert_eq!(lower_hex_escapes("a%2Fb%3A"), "a%2fb%3a");
    }

    #[test]
    fn masks_json_escaped_form() {
        let m = masker(&["pa\"ss\\word"]);
        assert_eq!(m.mask(r#"{"p":"pa\"ss\\word"}"#), r#"{"p":"***"}"#);
    }

    #[test]
    fn masks_lines_of_multiline_values_in_streams() {
        let key = "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----";
        let m = masker(&[key]);
        assert_eq!(m.mask(&format!("k: {key}!")), "k: ***!");
        let mut out = Vec::new();
        let input = format!("before\n{key}\nafter\n");
        m.mask_lines(input.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "before\n***\n***\n***\nafter\n"
        );
    }

    #[test]
    fn mask_lines_keeps_unterminated_last_line_and_non_utf8() {
        let m = masker(&["token123"]);
        let mut out = Vec::new();
        let input: &[u8] = b"\xff token123\nno newline token123";
        m.mask_lines(input, &mut out).unwrap();
        assert_eq!(out, b"\xff ***\nno newline ***");
    }

    #[test]
    fn replacement_cannot_assemble_a_new_occurrence() {
        // Masking "abcd" turns "abcdxyzw" into "***xyzw", which is itself a value.
        let m = masker(&["***xyzw", "abcd"]);
        assert_eq!(m.mask("abcdxyzw"), "***");
    }

    #[test]
    fn clones_are_snapshots_and_debug_hides_values() {
        let mut a = masker(&["first-secret"]);
        let b = a.clone();
        a.add("second-secret");
        assert_eq!(b.mask("second-secret"), "second-secret");
        assert_eq!(a.mask("second-secret"), "***");
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn masker_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Masker>();
    }

    proptest! {
        #[test]
        fn mask_never_panics_and_hides_values(
            values in proptest::collection::vec(".{0,12}", 0..5),
            fillers in proptest::collection::vec(".{0,6}", 0..8),
            picks in proptest::collection::vec(0usize..8, 0..10),
        ) {
            let mut m = Masker::new();
            for v in &values {
                m.add(v);
            }
            // Interleave values with filler so that occurrences are actually present.
            let mut text = String::new();
            for (i, p) in picks.iter().enumerate() {
                if let Some(f) = fillers.get(i) {
                    text.push_str(f);
                }
                if let Some(v) = values.get(p % values.len().max(1)) {
                    text.push_str(v);
                }
            }
            let out = m.mask(&text);
            for v in values.iter().filter(|v| v.len() >= MIN_SECRET_LEN) {
                prop_assert!(!out.contains(v.as_str()), "{v:?} survives in {out:?}");
            }
            let mut streamed = Vec::new();
            m.mask_lines(text.as_bytes(), &mut streamed).unwrap();
            for v in values.iter().filter(|v| v.len() >= MIN_SECRET_LEN && !v.contains('\n')) {
                prop_assert!(!String::from_utf8_lossy(&streamed).contains(v.as_str()));
            }
        }

        #[test]
        fn mask_of_arbitrary_text_never_panics(values in proptest::collection::vec(any::<String>(), 0..4), text in any::<String>()) {
            let mut m = Masker::new();
            for v in &values {
                m.add(v);
            }
            let _ = m.mask(&text);
        }
    }
}
