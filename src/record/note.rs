//! The record format: a record is a header line, its one-line JSON payload (the signed
//! message) and an optional armored SSHSIG block; records in one note are separated by one
//! blank line. `encode` writes one, `parse_note` reads a whole note strictly.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};

/// First line of every record; the version lets a later format coexist in the same note.
pub const HEADER: &str = "hookops-record v1";

pub(crate) const SIG_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
pub(crate) const SIG_END: &str = "-----END SSH SIGNATURE-----";

/// The record text, without a trailing newline or blank line.
///
/// `payload` must be one line (compact JSON always is). A payload with a line break is a caller
/// bug: debug builds panic; release builds replace the breaks with spaces so the note stays
/// parseable and the record fails verification instead of corrupting its neighbours.
pub fn encode(payload: &str, signature: Option<&str>) -> String {
    debug_assert!(
        !payload.contains(['\n', '\r']),
        "record payload must be a single line"
    );
    let payload: Cow<'_, str> = if payload.contains(['\n', '\r']) {
        Cow::Owned(payload.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(payload)
    };
    let mut out = String::with_capacity(HEADER.len() + payload.len() + 2);
    out.push_str(HEADER);
    out.push('\n');
    out.push_str(&payload);
    if let Some(sig) = signature {
        // A signature read from an ssh-keygen .sig file ends with a newline; the record must not.
        out.push('\n');
        out.push_str(sig.trim());
    }
    out
}

/// One record found in a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRecord {
    /// The JSON line, exactly as signed.
    pub payload: String,
    /// The armored SSHSIG block (BEGIN…END lines, no trailing newline), if signed.
    pub signature: Option<String>,
    /// 1-based line of the record's header in the note.
    pub line: usize,
}

impl ParsedRecord {
    /// The record as `encode` writes it.
    pub fn encode(&self) -> String {
        encode(&self.payload, self.signature.as_deref())
    }
}

/// A note that is not a sequence of well-formed records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line in the note.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn parse_err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// A short, char-safe excerpt of an offending line for error messages.
fn excerpt(line: &str) -> String {
    let mut s: String = line.chars().take(40).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Parses a whole note into its records.
///
/// Strict on purpose (records are machine-written, so anything unexpected means corruption or
/// a foreign writer): every non-blank line must belong to a record; CRLF is rejected. Blank
/// lines between records (one or more) and at the end are accepted, since git itself ends
/// notes with a newline. Never panics.
pub fn parse_note(note: &str) -> Result<Vec<ParsedRecord>, ParseError> {
    let lines: Vec<&str> = note.split('\n').collect();
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        let header_line = i + 1;
        if line != HEADER {
            let hint = if line.trim_end_matches('\r') == HEADER {
                " (CRLF line endings are not accepted)"
            } else {
                ""
            };
            return Err(parse_err(
                header_line,
                format!("expected {HEADER:?}, found {}{hint}", excerpt(line)),
            ));
        }
        let Some(&payload) = lines.get(i + 1) else {
            return Err(parse_err(
                header_line,
                "record header without a payload line",
            ));
        };
        check_payload(payload).map_err(|m| parse_err(i + 2, m))?;
        i += 2;

        let mut signature = None;
        if lines.get(i) == Some(&SIG_BEGIN) {
            let start = i;
            i += 1;
            loop {
                match lines.get(i) {
                    None => {
                        return Err(parse_err(
                            start + 1,
                            "signature block has no -----END SSH SIGNATURE----- line",
                        ))
                    }
                    Some(&SIG_END) => break,
                    Some(&"") => return Err(parse_err(i + 1, "blank line inside signature block")),
                    Some(l) if !l.bytes().all(is_base64_byte) => {
                        return Err(parse_err(
                            i + 1,
                            format!("signature line is not base64: {}", excerpt(l)),
                        ))
                    }
                    Some(_) => i += 1,
                }
            }
            signature = Some(lines[start..=i].join("\n"));
            i += 1;
        }

        match lines.get(i) {
            None => {}
            Some(&"") => {}
            Some(l) => {
                return Err(parse_err(
                    i + 1,
                    format!(
                        "expected a blank line or a signature after the payload, found {}",
                        excerpt(l)
                    ),
                ))
            }
        }
        records.push(ParsedRecord {
            payload: payload.to_string(),
            signature,
            line: header_line,
        });
    }
    Ok(records)
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

/// A payload is one compact JSON object. Checked so that a truncated or hand-edited note is
/// reported where it broke rather than at verification time.
fn check_payload(payload: &str) -> Result<(), String> {
    if payload.is_empty() {
        return Err("empty payload line".into());
    }
    if payload.contains('\r') {
        return Err("carriage return in payload (CRLF line endings are not accepted)".into());
    }
    if payload.trim() != payload {
        return Err("payload has leading or trailing whitespace".into());
    }
    // Validated without building it (every reader of a long history parses every payload).
    match serde_json::from_str::<serde::de::IgnoredAny>(payload) {
        Ok(_) if payload.starts_with('{') => Ok(()),
        Ok(_) => Err("payload is not a JSON object".into()),
        Err(e) => Err(format!("payload is not JSON: {e}")),
    }
}

/// The time a record was made, from its own signed payload: `finished_at`, else `started_at`
/// (RFC 3339). Using the record's time rather than the clock keeps old records verifiable
/// after their key was rotated out.
pub fn record_time(payload: &str) -> Option<DateTime<Utc>> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    ["finished_at", "started_at"].iter().find_map(|field| {
        let s = value.get(field)?.as_str()?;
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}
