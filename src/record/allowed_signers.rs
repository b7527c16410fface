//! Checking records: an ssh-keygen ALLOWED SIGNERS file (principals, namespaces, validity
//! windows) and the verdict on one record's signature.

use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::note::{record_time, ParsedRecord};
use super::signature::NAMESPACE;

/// One usable line of an allowed_signers file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    line: usize,
    pub(crate) principals: String,
    namespaces: Option<String>,
    valid_after: Option<DateTime<Utc>>,
    valid_before: Option<DateTime<Utc>>,
    key: KeyData,
}

impl Entry {
    fn allows_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(list) => match_pattern_list(namespace, list) == Some(true),
        }
    }

    /// Inclusive at both ends, like ssh-keygen. A window that cannot be checked because the
    /// record carries no usable timestamp does not match.
    fn valid_at(&self, when: Option<DateTime<Utc>>) -> bool {
        if self.valid_after.is_none() && self.valid_before.is_none() {
            return true;
        }
        let Some(t) = when else { return false };
        self.valid_after.is_none_or(|a| t >= a) && self.valid_before.is_none_or(|b| t <= b)
    }
}

/// The keys allowed to sign records, from an ssh-keygen ALLOWED SIGNERS file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    origin: String,
    pub(crate) entries: Vec<Entry>,
}

impl AllowedSigners {
    /// Parses the ssh-keygen allowed_signers format. `origin` (usually the path) prefixes
    /// errors as `origin:line: …`. `cert-authority` lines are skipped with a warning.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<AllowedSigners> {
        let mut entries = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim_matches([' ', '\t', '\r']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = match parse_signers_line(line) {
                Ok(p) => p,
                Err(msg) => bail!("{origin}:{lineno}: {msg}"),
            };
            if parsed.cert_authority {
                log::warn!(
                    "{origin}:{lineno}: cert-authority lines are not supported (records are \
                     signed with plain keys); line skipped"
                );
                continue;
            }
            entries.push(Entry {
                line: lineno,
                principals: parsed.principals,
                namespaces: parsed.namespaces,
                valid_after: parsed.valid_after,
                valid_before: parsed.valid_before,
                key: parsed.key,
            });
        }
        Ok(AllowedSigners {
            origin: origin.to_string(),
            entries,
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<AllowedSigners> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading allowed signers {}", path.display()))?;
        AllowedSigners::parse(&text, &path.display().to_string())
    }

    /// Number of usable key lines (skipped cert-authority lines not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where the lines came from, as given to `parse`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

struct SignersLine {
    pub(crate) principals: String,
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<DateTime<Utc>>,
    valid_before: Option<DateTime<Utc>>,
    key: KeyData,
}

/// `principals [options] keytype base64 [comment]`, following OpenSSH's sshsig.c: the
/// principals may be double-quoted; the field after them is tried as a key first and only
/// read as options if that fails. All splitting happens at ASCII bytes, so slicing is
/// char-boundary safe.
fn parse_signers_line(line: &str) -> Result<SignersLine, String> {
    let is_ws = |c: char| c == ' ' || c == '\t';
    let (principals, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let end = quoted.find('"').ok_or("unterminated quote in principals")?;
        let rest = &quoted[end + 1..];
        if !rest.is_empty() && !rest.starts_with(is_ws) {
            return Err("expected whitespace after quoted principals".into());
        }
        (&quoted[..end], rest)
    } else {
        match line.find(is_ws) {
            Some(end) => (&line[..end], &line[end..]),
            None => (line, ""),
        }
    };
    if principals.is_empty() {
        return Err("empty principals field".into());
    }
    let rest = rest.trim_start_matches(is_ws);
    if rest.is_empty() {
        return Err("missing public key".into());
    }

    if let Ok(key) = parse_key(rest) {
        return Ok(SignersLine::plain(principals, key));
    }

    // Options run to the first whitespace outside double quotes.
    let mut in_quote = false;
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            c if is_ws(c) && !in_quote => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    if in_quote {
        return Err("unterminated quote in options".into());
    }
    let (opts, key_text) = (&rest[..end], rest[end..].trim_start_matches(is_ws));
    let looks_like_key = !opts.contains('=')
        && (opts.starts_with("ssh-") || opts.starts_with("ecdsa-") || opts.starts_with("sk-"));
    if looks_like_key {
        let e = parse_key(rest).err().unwrap_or_default();
        return Err(format!("invalid public key: {e}"));
    }
    if key_text.is_empty() {
        return Err("missing public key after options".into());
    }
    let key = parse_key(key_text).map_err(|e| format!("invalid public key: {e}"))?;
    let mut out = SignersLine::plain(principals, key);
    parse_options(opts, &mut out)?;
    Ok(out)
}

impl SignersLine {
    fn plain(principals: &str, key: KeyData) -> SignersLine {
        SignersLine {
            principals: principals.to_string(),
            cert_authority: false,
            namespaces: None,
            valid_after: None,
            valid_before: None,
            key,
        }
    }
}

/// `keytype base64 [comment]`; the comment is ignored.
fn parse_key(text: &str) -> Result<KeyData, String> {
    let mut fields = text.split([' ', '\t']).filter(|f| !f.is_empty());
    let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
        return Err("expected `keytype base64`".into());
    };
    PublicKey::from_openssh(&format!("{kind} {b64}"))
        .map(KeyData::from)
        .map_err(|e| e.to_string())
}

fn parse_options(opts: &str, out: &mut SignersLine) -> Result<(), String> {
    // Split at commas outside quotes.
    let mut parts = Vec::new();
    let mut in_quote = false;
    let mut start = 0;
    for (i, c) in opts.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ',' if !in_quote => {
                parts.push(&opts[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&opts[start..]);

    for opt in parts {
        let (name, value) = match opt.find('=') {
            Some(eq) => (&opt[..eq], Some(&opt[eq + 1..])),
            None => (opt, None),
        };
        let name_lc = name.to_ascii_lowercase();
        let quoted = |v: Option<&str>| -> Result<String, String> {
            v.and_then(|v| v.strip_prefix('"'))
                .and_then(|v| v.strip_suffix('"'))
                .filter(|v| !v.contains('"'))
                .map(str::to_string)
                .ok_or_else(|| {
                    format!("option {name} needs a double-quoted value, e.g. {name}=\"…\"")
                })
        };
        match (name_lc.as_str(), value) {
            ("", _) => return Err("empty option".into()),
            ("cert-authority", None) => out.cert_authority = true,
            ("namespaces", v) => {
                if out.namespaces.is_some() {
                    return Err("multiple namespaces options".into());
                }
                out.namespaces = Some(quoted(v)?);
            }
            ("valid-after", v) => {
                if out.valid_after.is_some() {
                    return Err("multiple valid-after options".into());
                }
                out.valid_after = Some(parse_ssh_time(&quoted(v)?)?);
            }
            ("valid-before", v) => {
                if out.valid_before.is_some() {
                    return Err("multiple valid-before options".into());
                }
                out.valid_before = Some(parse_ssh_time(&quoted(v)?)?);
            }
            _ => return Err(format!("unsupported option {:?}", excerpt_plain(opt))),
        }
    }
    if let (Some(a), Some(b)) = (out.valid_after, out.valid_before) {
        if b <= a {
            return Err("valid-before is not after valid-after".into());
        }
    }
    Ok(())
}

fn excerpt_plain(s: &str) -> String {
    s.chars().take(40).collect()
}

/// ssh-keygen's `YYYYMMDD[HHMM[SS]]` with an optional `Z`/`UTC` suffix. ssh-keygen reads times
/// without the suffix as local time; hookops always reads them as UTC (a deploy host's time
/// zone must not change a verdict).
pub(crate) fn parse_ssh_time(s: &str) -> Result<DateTime<Utc>, String> {
    let bytes = s.as_bytes();
    let digits = if bytes.last().is_some_and(|b| b.eq_ignore_ascii_case(&b'z')) {
        &s[..s.len() - 1]
    } else if bytes.len() > 3 && bytes[bytes.len() - 3..].eq_ignore_ascii_case(b"UTC") {
        &s[..s.len() - 3]
    } else {
        s
    };
    let bad = || format!("invalid time {s:?} (expected YYYYMMDD[HHMM[SS]][Z])");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // All ASCII digits from here on, so byte slicing is safe.
    let num = |r: std::ops::Range<usize>| digits[r].parse::<u32>().map_err(|_| bad());
    let (h, mi, sec) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8..10)?, num(10..12)?, 0),
        14 => (num(8..10)?, num(10..12)?, num(12..14)?),
        _ => return Err(bad()),
    };
    let year = i32::try_from(num(0..4)?).map_err(|_| bad())?;
    NaiveDate::from_ymd_opt(year, num(4..6)?, num(6..8)?)
        .and_then(|d| d.and_hms_opt(h, mi, sec))
        .map(|n| Utc.from_utc_datetime(&n))
        .ok_or_else(bad)
}

/// OpenSSH `match_pattern_list`: comma-separated `*`/`?` patterns, `!` negates. `Some(true)`
/// on a positive match, `Some(false)` when a negated pattern matched (which always wins),
/// `None` when nothing matched.
pub(crate) fn match_pattern_list(s: &str, list: &str) -> Option<bool> {
    let mut positive = false;
    for pat in list.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if match_pattern(s, neg) {
                return Some(false);
            }
        } else if match_pattern(s, pat) {
            positive = true;
        }
    }
    positive.then_some(true)
}

/// Glob with `*` (any run) and `?` (one char); linear-time backtracking on the last `*`.
pub(crate) fn match_pattern(s: &str, pat: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pat.chars().collect();
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The outcome of checking one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid signature by a key allowed for namespace `hookops` at the record's time.
    /// `principal` is the principals field of the allowed_signers line that matched.
    Good { principal: String },
    /// Signature malformed, made for another namespace, or not matching the payload.
    BadSignature,
    /// Valid signature, but the key is on no allowed_signers line for namespace `hookops`.
    UnknownKey { fingerprint: String },
    /// Valid signature by an allowed key, but the record's time is outside every validity
    /// window listed for that key (or the record has no usable timestamp to check one).
    Expired { principal: String },
    /// The record has no signature.
    Unsigned,
}

/// The principals of the line of `signers` whose key made `armored` (an SSHSIG) over
/// `payload` for `namespace`, allowed for that namespace now; or why none is. For signatures
/// other than records' (a signed push's certificate: namespace `git`).
pub fn signer_of(
    payload: &[u8],
    armored: &str,
    namespace: &str,
    signers: &AllowedSigners,
) -> Result<String, String> {
    let sig =
        SshSig::from_pem(armored.trim()).map_err(|_| "the signature is malformed".to_string())?;
    if sig.namespace() != namespace {
        return Err(format!(
            "the signature is for namespace {:?}, not {namespace:?}",
            crate::out::clean_line(sig.namespace())
        ));
    }
    let key = PublicKey::from(sig.public_key().clone());
    if key.verify(namespace, payload, &sig).is_err() {
        return Err("the signature does not match what it signs".into());
    }
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256);
    let now = Some(Utc::now());
    signers
        .entries
        .iter()
        .filter(|e| &e.key == sig.public_key() && e.allows_namespace(namespace))
        .find(|e| e.valid_at(now))
        .map(|e| e.principals.clone())
        .ok_or_else(|| {
            format!(
                "key {fingerprint} is not among the allowed signers for namespace {namespace:?}"
            )
        })
}

/// Checks one record against `signers`; see docs/records.md for the semantics.
pub fn verify(rec: &ParsedRecord, signers: &AllowedSigners) -> Verdict {
    let Some(armored) = rec.signature.as_deref() else {
        return Verdict::Unsigned;
    };
    let Ok(sig) = SshSig::from_pem(armored) else {
        return Verdict::BadSignature;
    };
    if sig.namespace() != NAMESPACE {
        return Verdict::BadSignature;
    }
    let key = PublicKey::from(sig.public_key().clone());
    if key.verify(NAMESPACE, rec.payload.as_bytes(), &sig).is_err() {
        return Verdict::BadSignature;
    }
    // A key listed only for other namespaces is, for hookops, not an allowed key at all.
    let lines: Vec<&Entry> = signers
        .entries
        .iter()
        .filter(|e| &e.key == sig.public_key() && e.allows_namespace(NAMESPACE))
        .collect();
    let Some(first) = lines.first() else {
        return Verdict::UnknownKey {
            fingerprint: sig.public_key().fingerprint(HashAlg::Sha256).to_string(),
        };
    };
    let when = record_time(&rec.payload);
    match lines.iter().find(|e| e.valid_at(when)) {
        Some(e) => {
            log::debug!(
                "record at line {}: good signature, {}:{}",
                rec.line,
                signers.origin,
                e.line
            );
            Verdict::Good {
                principal: e.principals.clone(),
            }
        }
        None => Verdict::Expired {
            principal: first.principals.clone(),
        },
    }
}
