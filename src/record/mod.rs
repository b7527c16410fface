//! Signed status records: the text hookops appends to a deployed commit's git note, the SSHSIG
//! signature over a record's JSON line, and verification against an ssh-keygen
//! `allowed_signers` file.
//!
//! Everything here is pure (no git, no clock, no environment) so it can be unit-tested and
//! fuzzed; `notes` does the git side effects. The format is a public interface (see
//! docs/records.md) and stock `ssh-keygen -Y verify` must accept what `Signer::sign` produces,
//! so the byte layout below is deliberate:
//!
//! ```text
//! hookops-record v1
//! {"env":"prod",...}                      <- the signed message, without its newline
//! -----BEGIN SSH SIGNATURE-----           <- optional
//! ...
//! -----END SSH SIGNATURE-----
//! ```
//!
//! Records in one note are separated by one blank line.

pub mod notes;
pub mod payload;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// First line of every record; the version lets a later format coexist in the same note.
pub const HEADER: &str = "hookops-record v1";

/// SSHSIG namespace: a signature made for another purpose (git commits use "git", files "file")
/// can never be replayed as a hookops record, and vice versa.
pub const NAMESPACE: &str = "hookops";

const SIG_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const SIG_END: &str = "-----END SSH SIGNATURE-----";

/// An OpenSSH private key (ed25519, ecdsa p256/p384/p521, rsa) that signs records.
///
/// `Debug` shows only the fingerprint so the key can never end up in a log by accident.
pub struct Signer {
    key: PrivateKey,
    /// RSA keys are signed with the `rsa` crate directly: ssh-key 0.6.7's own RSA signing
    /// rebuilds the key from the wrong primes (p twice) and always fails.
    rsa: Option<rsa::RsaPrivateKey>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("id", &self.id()).finish()
    }
}

impl Signer {
    /// Reads an unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    /// Errors name the path and never contain key material.
    pub fn load(path: &Path) -> anyhow::Result<Signer> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading signing key {shown}"))?;
        let trimmed = text.trim_start();
        // Common mistakes get a message that says what to do instead of a decoder error.
        if trimmed.starts_with("ssh-")
            || trimmed.starts_with("ecdsa-")
            || trimmed.starts_with("sk-")
        {
            bail!("{shown}: this is a public key; hookops needs the private key file");
        }
        if trimmed.contains("Proc-Type: 4,ENCRYPTED") || trimmed.contains("BEGIN ENCRYPTED PRIVATE")
        {
            bail!("{shown}: key is passphrase-protected; hookops signs unattended, give it an unencrypted key");
        }
        if !trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            bail!(
                "{shown}: not an OpenSSH private key (expected -----BEGIN OPENSSH PRIVATE KEY-----; \
                 `ssh-keygen -p -f FILE` rewrites older PEM keys in that format)"
            );
        }
        // ssh_key's errors are enum messages, never the decoded bytes.
        let key = PrivateKey::from_openssh(trimmed)
            .map_err(|e| anyhow::anyhow!("{shown}: cannot decode OpenSSH private key: {e}"))?;
        drop(text);
        Signer::from_key(key).with_context(|| format!("signing key {shown}"))
    }

    /// Wraps an already decoded key (tests, or keys that come from somewhere other than a file).
    pub fn from_key(key: PrivateKey) -> anyhow::Result<Signer> {
        if key.is_encrypted() {
            bail!(
                "key is passphrase-protected; hookops signs unattended, give it an unencrypted key"
            );
        }
        let rsa = match key.key_data() {
            KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) => None,
            KeypairData::Rsa(pair) => Some(rsa_key(pair)?),
            _ => bail!(
                "unsupported key type {} (use ed25519, ecdsa or rsa)",
                key.algorithm()
            ),
        };
        let signer = Signer { key, rsa };
        // Sign once now so a key that cannot sign fails at load time, not after a deploy.
        signer.sign("{}").context("test signature failed")?;
        Ok(signer)
    }

    /// The public key fingerprint as ssh-keygen prints it, e.g. `SHA256:…` (the record's
    /// `signer` field).
    pub fn id(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The public half, e.g. to print an allowed_signers line.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs `payload` (one line, signed without a newline) as SSHSIG, namespace `hookops`,
    /// sha512, and returns the armored block without a trailing newline.
    pub fn sign(&self, payload: &str) -> anyhow::Result<String> {
        if payload.contains(['\n', '\r']) {
            bail!("record payload must be a single line");
        }
        let sig = match &self.rsa {
            Some(rsa) => sign_rsa(rsa, self.key.public_key().key_data(), payload.as_bytes()),
            None => self
                .key
                .sign(NAMESPACE, HashAlg::Sha512, payload.as_bytes())
                .map_err(anyhow::Error::from),
        }
        .context("signing record")?;
        let pem = sig
            .to_pem(LineEnding::LF)
            .context("armoring record signature")?;
        Ok(pem.trim_end().to_string())
    }
}

/// The `rsa` crate's key from the OpenSSH key's components (n, e, d, p, q); `from_components`
/// validates them, so a corrupt key file fails here.
fn rsa_key(pair: &RsaKeypair) -> anyhow::Result<rsa::RsaPrivateKey> {
    let big = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .context("RSA key component is not a positive integer")
    };
    let key = rsa::RsaPrivateKey::from_components(
        big(&pair.public.n)?,
        big(&pair.public.e)?,
        big(&pair.private.d)?,
        vec![big(&pair.private.p)?, big(&pair.private.q)?],
    )
    .map_err(|e| anyhow::anyhow!("invalid RSA key: {e}"))?;
    // ssh-keygen refuses to verify with keys below 1024 bits; OpenSSH's own floor for new
    // keys is 2048 bits, so hold signers to that.
    if rsa::traits::PublicKeyParts::size(&key) * 8 < 2048 {
        bail!("RSA key is shorter than 2048 bits");
    }
    Ok(key)
}

/// SSHSIG with RSA, sha512 (`rsa-sha2-512`), as ssh-keygen makes it.
fn sign_rsa(key: &rsa::RsaPrivateKey, public: &KeyData, msg: &[u8]) -> anyhow::Result<SshSig> {
    use rsa::sha2::{Digest, Sha512};
    let signed_data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, msg)?;
    let digest = Sha512::digest(&signed_data);
    let raw = key
        .sign(rsa::Pkcs1v15Sign::new::<Sha512>(), &digest)
        .map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
    let signature = ssh_key::Signature::new(
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        raw,
    )?;
    Ok(SshSig::new(
        public.clone(),
        NAMESPACE,
        HashAlg::Sha512,
        signature,
    )?)
}

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

/// One usable line of an allowed_signers file.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    principals: String,
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
    entries: Vec<Entry>,
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
    principals: String,
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
fn parse_ssh_time(s: &str) -> Result<DateTime<Utc>, String> {
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
fn match_pattern_list(s: &str, list: &str) -> Option<bool> {
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
fn match_pattern(s: &str, pat: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> Signer {
        let pair = Ed25519Keypair::from_seed(&[seed; 32]);
        let key = PrivateKey::new(KeypairData::Ed25519(pair), "test").expect("test key");
        Signer::from_key(key).expect("signer")
    }

    fn publine(s: &Signer) -> String {
        s.public_key().to_openssh().expect("openssh public key")
    }

    fn payload(finished_at: &str) -> String {
        format!(
            r#"{{"env":"prod","action":"deploy","result":"succeeded","commit":"abc","started_at":"2025-05-31T23:59:00Z","finished_at":"{finished_at}","targets":[]}}"#
        )
    }

    fn signed(s: &Signer, payload: &str) -> ParsedRecord {
        let sig = s.sign(payload).expect("sign");
        let note = encode(payload, Some(&sig));
        let mut recs = parse_note(&note).expect("parse");
        assert_eq!(recs.len(), 1);
        recs.remove(0)
    }

    fn signers(text: &str) -> AllowedSigners {
        AllowedSigners::parse(text, "test").expect("allowed signers")
    }

    #[test]
    fn sign_verify_roundtrip() {
        let a = key(1);
        assert!(a.id().starts_with("SHA256:"));
        let rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        let allowed = signers(&format!("ops@example.com {}\n", publine(&a)));
        assert_eq!(
            verify(&rec, &allowed),
            Verdict::Good {
                principal: "ops@example.com".into()
            }
        );
    }

    #[test]
    fn encode_layout_is_byte_exact() {
        let a = key(1);
        let p = payload("2025-06-01T00:00:00Z");
        let sig = a.sign(&p).expect("sign");
        assert!(sig.starts_with(SIG_BEGIN) && sig.ends_with(SIG_END));
        let text = encode(&p, Some(&format!("{sig}\n")));
        assert_eq!(text, format!("{HEADER}\n{p}\n{sig}"));
        assert_eq!(encode(&p, None), format!("{HEADER}\n{p}"));
        assert!(a.sign("two\nlines").is_err());
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let a = key(1);
        let mut rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        rec.payload = rec.payload.replace("succeeded", "failed");
        let allowed = signers(&format!("ops@example.com {}", publine(&a)));
        assert_eq!(verify(&rec, &allowed), Verdict::BadSignature);
    }

    #[test]
    fn malformed_signature_is_bad_signature() {
        let a = key(1);
        let mut rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        rec.signature = Some(format!("{SIG_BEGIN}\nAAAA\n{SIG_END}"));
        let allowed = signers(&format!("ops@example.com {}", publine(&a)));
        assert_eq!(verify(&rec, &allowed), Verdict::BadSignature);
    }

    #[test]
    fn other_namespace_signature_is_bad() {
        let a = key(1);
        let p = payload("2025-06-01T00:00:00Z");
        let sig = a
            .key
            .sign("git", HashAlg::Sha512, p.as_bytes())
            .expect("sign")
            .to_pem(LineEnding::LF)
            .expect("pem");
        let rec = ParsedRecord {
            payload: p,
            signature: Some(sig),
            line: 1,
        };
        let allowed = signers(&format!("ops@example.com {}", publine(&a)));
        assert_eq!(verify(&rec, &allowed), Verdict::BadSignature);
    }

    #[test]
    fn unknown_key_and_unsigned() {
        let (a, b) = (key(1), key(2));
        let rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        let allowed = signers(&format!("ops@example.com {}", publine(&b)));
        assert_eq!(
            verify(&rec, &allowed),
            Verdict::UnknownKey {
                fingerprint: a.id()
            }
        );
        let unsigned = ParsedRecord {
            signature: None,
            ..rec
        };
        assert_eq!(verify(&unsigned, &allowed), Verdict::Unsigned);
    }

    #[test]
    fn namespaces_option_must_match_hookops() {
        let a = key(1);
        let rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        let only_git = signers(&format!("ops@x namespaces=\"git,file\" {}", publine(&a)));
        assert_eq!(
            verify(&rec, &only_git),
            Verdict::UnknownKey {
                fingerprint: a.id()
            }
        );
        let pattern = signers(&format!("ops@x namespaces=\"git,hook*\" {}", publine(&a)));
        assert!(matches!(verify(&rec, &pattern), Verdict::Good { .. }));
        let negated = signers(&format!("ops@x namespaces=\"*,!hookops\" {}", publine(&a)));
        assert!(matches!(verify(&rec, &negated), Verdict::UnknownKey { .. }));
    }

    #[test]
    fn validity_windows_use_record_time() {
        let (a, b) = (key(1), key(2));
        let allowed = signers(&format!(
            "# rotation\nops@x valid-before=\"20260101\" {}\nops@x valid-after=\"20260101\",namespaces=\"hookops\" {}\n",
            publine(&a),
            publine(&b)
        ));
        let good = Verdict::Good {
            principal: "ops@x".into(),
        };
        let expired = Verdict::Expired {
            principal: "ops@x".into(),
        };
        assert_eq!(
            verify(&signed(&a, &payload("2025-12-31T23:59:59Z")), &allowed),
            good
        );
        assert_eq!(
            verify(&signed(&a, &payload("2026-06-01T00:00:00Z")), &allowed),
            expired
        );
        assert_eq!(
            verify(&signed(&b, &payload("2026-06-01T00:00:00Z")), &allowed),
            good
        );
        assert_eq!(
            verify(&signed(&b, &payload("2025-06-01T00:00:00Z")), &allowed),
            expired
        );
        // Offsets are honoured: 2026-01-01T00:30+01:00 is still 2025 in UTC.
        assert_eq!(
            verify(&signed(&a, &payload("2026-01-01T00:30:00+01:00")), &allowed),
            good
        );
        // Boundaries are inclusive, like ssh-keygen.
        assert_eq!(
            verify(&signed(&a, &payload("2026-01-01T00:00:00Z")), &allowed),
            good
        );
        // No usable finished_at: fall back to started_at (2025-05-31).
        assert_eq!(verify(&signed(&a, &payload("soon")), &allowed), good);
        // No timestamp at all: a windowed key cannot be checked.
        assert_eq!(verify(&signed(&a, r#"{"env":"prod"}"#), &allowed), expired);
    }

    #[test]
    fn rotated_key_listed_twice_any_window_wins() {
        let a = key(1);
        let allowed = signers(&format!(
            "ops@x valid-before=\"20250101\" {k}\nops@x valid-after=\"202506010000\",valid-before=\"20250701000000Z\" {k}\n",
            k = publine(&a)
        ));
        assert!(matches!(
            verify(&signed(&a, &payload("2025-06-15T00:00:00Z")), &allowed),
            Verdict::Good { .. }
        ));
        assert!(matches!(
            verify(&signed(&a, &payload("2025-03-01T00:00:00Z")), &allowed),
            Verdict::Expired { .. }
        ));
    }

    #[test]
    fn multiple_records_in_one_note() {
        let a = key(1);
        let p1 = payload("2025-06-01T00:00:00Z");
        let p2 = payload("2025-06-02T00:00:00Z");
        let note = format!(
            "{}\n\n{}\n\n{}\n",
            encode(&p1, Some(&a.sign(&p1).expect("sign"))),
            encode(&p2, None),
            encode(&p2, Some(&a.sign(&p2).expect("sign")))
        );
        let recs = parse_note(&note).expect("parse");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].line, 1);
        assert!(recs[0].signature.is_some());
        assert_eq!(recs[1].payload, p2);
        assert_eq!(recs[1].signature, None);
        assert_eq!(
            recs[1].line,
            recs[0]
                .signature
                .as_deref()
                .map_or(0, |s| s.lines().count())
                + 4
        );
        assert_eq!(recs[2].encode(), encode(&p2, recs[2].signature.as_deref()));
        assert_eq!(parse_note("").expect("empty"), vec![]);
        assert_eq!(parse_note("\n\n").expect("blank"), vec![]);
    }

    #[test]
    fn garbage_notes_error_with_line_numbers() {
        let p = payload("2025-06-01T00:00:00Z");
        let cases: Vec<(String, usize)> = vec![
            ("deployed by hand".into(), 1),
            (format!("{HEADER}\n{p}\n\nrandom text"), 4),
            (HEADER.to_string(), 1),
            (format!("{HEADER}\nnot json"), 2),
            (format!("{HEADER}\n[1,2]"), 2),
            (format!("{HEADER}\n{p}\ntrailing junk"), 3),
            (format!("{HEADER}\n{p}\n{SIG_BEGIN}\nAAAA"), 3),
            (format!("{HEADER}\n{p}\n{SIG_BEGIN}\nAA AA\n{SIG_END}"), 4),
            (format!("{HEADER}\n{p}\n{SIG_BEGIN}\n\n{SIG_END}"), 4),
            (format!("{HEADER}\r\n{p}\r\n"), 1),
            (format!("{HEADER}\n{p}\r\n"), 2),
        ];
        for (note, line) in cases {
            let err = parse_note(&note).expect_err(&note);
            assert_eq!(err.line, line, "{note:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn allowed_signers_syntax() {
        let a = key(1);
        let k = publine(&a);
        let ok = signers(&format!(
            "\n# comment\n  ops@x,ci@* {k} a comment here\r\n\
             ci@x cert-authority {k}\n\
             ci@x NAMESPACES=\"hookops\",Valid-After=\"20250101UTC\" {k}\n"
        ));
        assert_eq!(ok.len(), 2, "cert-authority line skipped");
        assert_eq!(ok.entries[0].principals, "ops@x,ci@*");
        // The quoted principals form.
        let quoted = signers(&format!("\"ops team@x,ci@x\" {k}"));
        assert_eq!(quoted.entries[0].principals, "ops team@x,ci@x");

        for (text, needle) in [
            ("ops@x".to_string(), "missing public key"),
            (format!("ops@x bogus=\"1\" {k}"), "unsupported option"),
            (format!("ops@x valid-after=20250101 {k}"), "double-quoted"),
            (format!("ops@x valid-after=\"2025\" {k}"), "invalid time"),
            (
                format!("ops@x valid-after=\"20251301\" {k}"),
                "invalid time",
            ),
            (
                format!("ops@x valid-after=\"20260101\",valid-before=\"20250101\" {k}"),
                "not after",
            ),
            (
                format!("ops@x namespaces=\"a\",namespaces=\"b\" {k}"),
                "multiple",
            ),
            (
                "ops@x ssh-ed25519 AAAAnotakey".to_string(),
                "invalid public key",
            ),
            (format!("ops@x namespaces=\"a {k}"), "unterminated"),
            (format!("\"ops@x {k}"), "unterminated"),
        ] {
            let err = AllowedSigners::parse(&format!("# c\n{text}\n"), "signers.txt")
                .expect_err(&text)
                .to_string();
            assert!(err.starts_with("signers.txt:2: "), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn ssh_times() {
        let t = |s| parse_ssh_time(s).map(|d| d.to_rfc3339());
        assert_eq!(t("20260101"), Ok("2026-01-01T00:00:00+00:00".into()));
        assert_eq!(t("202601011230Z"), Ok("2026-01-01T12:30:00+00:00".into()));
        assert_eq!(t("20260101123045"), Ok("2026-01-01T12:30:45+00:00".into()));
        for bad in [
            "",
            "Z",
            "2026010",
            "2026-01-01",
            "20260230",
            "20260101250000",
            "２０２６０１０１",
        ] {
            assert!(parse_ssh_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        assert!(match_pattern("hookops", "hook*"));
        assert!(match_pattern("hookops", "h?okops"));
        assert!(match_pattern("hookops", "*"));
        assert!(match_pattern("hookops", "*o*s"));
        assert!(!match_pattern("hookops", "hook"));
        assert!(!match_pattern("hookops", "*x*"));
        assert_eq!(match_pattern_list("hookops", "git,file"), None);
        assert_eq!(match_pattern_list("hookops", "git,hookops"), Some(true));
        assert_eq!(match_pattern_list("hookops", "*,!hook*"), Some(false));
    }

    #[test]
    fn signer_load_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_hookops");
        let err = Signer::load(&path).expect_err("missing").to_string();
        assert!(err.contains("id_hookops"), "{err}");
        let a = key(3);
        std::fs::write(&path, publine(&a)).expect("write");
        let err = Signer::load(&path).expect_err("public").to_string();
        assert!(
            err.contains("id_hookops") && err.contains("public key"),
            "{err}"
        );
        let private = a.key.to_openssh(LineEnding::LF).expect("openssh");
        std::fs::write(&path, private.as_bytes()).expect("write");
        let loaded = Signer::load(&path).expect("load");
        assert_eq!(loaded.id(), a.id());
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    /// Inputs built from the format's own tokens reach far deeper than random bytes.
    fn note_like() -> impl Strategy<Value = String> {
        let a = key(7);
        let p = payload("2025-06-01T00:00:00Z");
        let sig = a.sign(&p).expect("sign");
        let tokens: Vec<String> = vec![
            HEADER.into(),
            p,
            sig,
            SIG_BEGIN.into(),
            SIG_END.into(),
            "\n".into(),
            "\r\n".into(),
            "{}".into(),
            "AAAA".into(),
            "é".into(),
        ];
        proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(tokens),
                any::<String>(),
                "[\n{}\"a-zA-Z0-9+/= ]{0,20}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn signers_like() -> impl Strategy<Value = String> {
        let k = publine(&key(7));
        let tokens: Vec<String> = vec![
            k.clone(),
            k[..20].to_string(),
            "ops@x ".into(),
            "\"ops x\" ".into(),
            "namespaces=\"hook*,!git\" ".into(),
            "valid-after=\"20250101Z\",".into(),
            "valid-before=\"2025\" ".into(),
            "cert-authority ".into(),
            "\"".into(),
            ",".into(),
            "\n".into(),
            "#".into(),
            "\t".into(),
        ];
        proptest::collection::vec(
            prop_oneof![proptest::sample::select(tokens), any::<String>()],
            0..10,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn parse_note_never_panics(s in any::<String>()) {
            let _ = parse_note(&s);
        }

        #[test]
        fn parse_note_structured_never_panics(s in note_like()) {
            if let Ok(recs) = parse_note(&s) {
                // Whatever parses re-encodes to something that parses the same way.
                let again: Vec<String> = recs.iter().map(ParsedRecord::encode).collect();
                let reparsed = parse_note(&again.join("\n\n")).map(|r| r.len());
                prop_assert_eq!(reparsed, Ok(recs.len()));
                let allowed = signers(&publine(&key(7)).replace("ssh-", "ops@x ssh-"));
                for r in &recs {
                    let _ = verify(r, &allowed);
                }
            }
        }

        #[test]
        fn allowed_signers_never_panics(s in any::<String>()) {
            let _ = AllowedSigners::parse(&s, "fuzz");
        }

        #[test]
        fn allowed_signers_structured_never_panics(s in signers_like()) {
            let _ = AllowedSigners::parse(&s, "fuzz");
        }
    }
}
