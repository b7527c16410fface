//! Talking to other repositories: fetch and push through libgit2 with the credentials of the
//! server config's `[sync]` table, and `sync`, which shares deploy records and pointers with a
//! remote so that several deployers (clones, watchers, the server itself) see one history.
//!
//! SSH host keys are always checked against a known_hosts file, never accepted on first use: a
//! deployer holds cluster credentials, so talking to an impostor remote would let it choose
//! what gets deployed. HTTPS certificates are left to libgit2's own verification (system CAs).
//! Tokens travel only inside libgit2's credential callback: never in a URL, a log line or an
//! error message.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use git2::cert::Cert;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorCode, FetchOptions,
    FetchPrune, ProxyOptions, PushOptions, RemoteCallbacks, Repository,
};
use hmac::{Hmac, Mac};
use ssh_key::known_hosts::{HostPatterns, KnownHosts, Marker};
use ssh_key::HashAlg;

use crate::config;
use crate::notes::{self, NOTES_REF};
use crate::session::Session;

/// Where `sync` fetches the remote's notes before merging them into ours.
pub const REMOTE_NOTES_REF: &str = "refs/hookops/remote-notes";

/// Environment variable holding an HTTPS token when `[sync] token_file` is not set.
pub const TOKEN_ENV: &str = "HOOKOPS_GIT_TOKEN";

/// Fetch–merge–push rounds before `sync` gives up on a remote whose notes keep moving.
const SYNC_TRIES: u32 = 5;

/// Credentials for remotes, from the `[sync]` table.
#[derive(Clone, Default)]
pub struct Creds {
    /// Private key for SSH; without it, the ssh-agent.
    pub ssh_key: Option<PathBuf>,
    /// known_hosts for SSH host keys; without it, `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// HTTPS token (sent as the password, see `https_username`).
    token: Option<String>,
}

impl fmt::Debug for Creds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Creds")
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Creds {
    /// Reads the token file (or `HOOKOPS_GIT_TOKEN`) now, so that a missing file is reported
    /// at start-up rather than in the middle of a push.
    pub fn from_config(sync: &config::Sync) -> Result<Creds> {
        let token = match &sync.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading [sync] token_file {}", path.display()))?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    bail!("[sync] token_file {} is empty", path.display());
                }
                Some(token)
            }
            None => std::env::var(TOKEN_ENV)
                .ok()
                .filter(|t| !t.trim().is_empty()),
        };
        Ok(Creds {
            ssh_key: sync.ssh_key.clone(),
            known_hosts: sync.known_hosts.clone(),
            token: token.map(|t| t.trim().to_string()),
        })
    }

    fn known_hosts_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.known_hosts {
            return Ok(p.clone());
        }
        let home = std::env::var_os("HOME")
            .context("no [sync] known_hosts configured and HOME is not set")?;
        Ok(Path::new(&home).join(".ssh").join("known_hosts"))
    }
}

/// How a URL is reached, as far as credentials and host keys are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    Ssh {
        host: String,
        port: u16,
    },
    Https,
    /// Plain `http://`: a token is never offered over it.
    Http,
    /// `file://`, plain paths and `git://`: nothing to authenticate.
    Plain,
}

fn transport(url: &str) -> Transport {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = ["ssh://", "git+ssh://", "ssh+git://"]
        .iter()
        .find_map(|s| lower.starts_with(s).then(|| &url[s.len()..]))
    {
        let authority = rest.split('/').next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(hostport);
        return Transport::Ssh {
            host,
            port: port.unwrap_or(22),
        };
    }
    if lower.starts_with("https://") {
        return Transport::Https;
    }
    if lower.starts_with("http://") {
        return Transport::Http;
    }
    if lower.contains("://") {
        return Transport::Plain;
    }
    // scp-like `[user@]host:path`, which git reads as SSH when the colon comes before any slash.
    match url.find(':') {
        Some(colon) if !url[..colon].contains('/') && colon > 1 => {
            let authority = &url[..colon];
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            Transport::Ssh {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: 22,
            }
        }
        _ => Transport::Plain,
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> (String, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host.to_string(), port);
        }
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.parse().ok()),
        _ => (s.to_string(), None),
    }
}

/// The URL as it may appear in messages: any password in it is replaced.
pub fn display_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end + 3],
                &rest[authority_end..]
            )
        }
        _ => url.to_string(),
    }
}

/// The name a known_hosts file uses for a host: bare on port 22, `[host]:port` otherwise.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HostKeyVerdict {
    Known,
    /// The host is listed with a different key of the same type.
    Mismatch,
    /// The key is listed as `@revoked`.
    Revoked,
    /// The host is not listed, or only with other key types (the key types listed).
    Unknown(Vec<String>),
}

/// Checks an offered host key (its algorithm name and SHA-256 fingerprint bytes) against the
/// text of a known_hosts file, the way OpenSSH reads it: plain and hashed host names,
/// wildcards, negations, `@revoked`. `@cert-authority` lines are skipped (libssh2 does not
/// present host certificates).
fn check_known_hosts(text: &str, name: &str, algorithm: &str, sha256: &[u8]) -> HostKeyVerdict {
    let mut listed_types = Vec::new();
    let mut same_type = false;
    for entry in KnownHosts::new(text) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                log::debug!("known_hosts: skipping a line ssh-key cannot parse: {e}");
                continue;
            }
        };
        if !host_matches(entry.host_patterns(), name) {
            continue;
        }
        let key = entry.public_key();
        let matches = key.fingerprint(HashAlg::Sha256).as_bytes() == sha256;
        match entry.marker() {
            Some(Marker::Revoked) if matches => return HostKeyVerdict::Revoked,
            Some(_) => continue,
            None => {}
        }
        if matches {
            return HostKeyVerdict::Known;
        }
        let t = key.algorithm().as_str().to_string();
        same_type |= t == algorithm;
        listed_types.push(t);
    }
    if same_type {
        HostKeyVerdict::Mismatch
    } else {
        HostKeyVerdict::Unknown(listed_types)
    }
}

fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let name = name.to_ascii_lowercase();
            let mut positive = false;
            for p in list {
                let p = p.to_ascii_lowercase();
                if let Some(negated) = p.strip_prefix('!') {
                    if glob(negated.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob(p.as_bytes(), name.as_bytes()) {
                    positive = true;
                }
            }
            positive
        }
    }
}

/// `*` and `?` wildcards, as in ssh_config(5) patterns.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// `SHA256:…`, as `ssh-keygen -l` shows it.
fn fingerprint(sha256: &[u8]) -> String {
    match <[u8; 32]>::try_from(sha256) {
        Ok(bytes) => ssh_key::Fingerprint::Sha256(bytes).to_string(),
        Err(_) => "(unknown fingerprint)".to_string(),
    }
}

/// Callbacks for one operation on `url`. Errors raised inside callbacks are kept in `failure`
/// because libgit2 may replace them with a generic message on the way out.
struct Op<'c> {
    url: &'c str,
    creds: &'c Creds,
    transport: Transport,
    failure: RefCell<Option<String>>,
    tried: RefCell<Vec<&'static str>>,
}

impl<'c> Op<'c> {
    fn new(url: &'c str, creds: &'c Creds) -> Op<'c> {
        Op {
            url,
            creds,
            transport: transport(url),
            failure: RefCell::new(None),
            tried: RefCell::new(Vec::new()),
        }
    }

    fn fail(&self, message: String) -> git2::Error {
        let e = git2::Error::from_str(&message);
        *self.failure.borrow_mut() = Some(message);
        e
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        cb.credentials(|_url, username, allowed| self.credentials(username, allowed));
        cb.certificate_check(|cert, host| self.certificate_check(cert, host));
        cb
    }

    fn credentials(
        &self,
        username: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let shown = display_url(self.url);
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            let mut tried = self.tried.borrow_mut();
            // libgit2 asks again after every refusal; each source is offered once.
            if let Some(key) = &self.creds.ssh_key {
                if !tried.contains(&"key") {
                    tried.push("key");
                    return Cred::ssh_key(user, None, key, None);
                }
                return Err(self.fail(format!(
                    "{shown}: SSH authentication as {user} with [sync] ssh_key {} was refused",
                    key.display()
                )));
            }
            if !tried.contains(&"agent") {
                tried.push("agent");
                return Cred::ssh_key_from_agent(user).map_err(|e| {
                    self.fail(format!(
                        "{shown}: no usable ssh-agent ({}); set [sync] ssh_key",
                        e.message()
                    ))
                });
            }
            return Err(self.fail(format!(
                "{shown}: SSH authentication as {user} with the ssh-agent's keys was refused"
            )));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if self.transport == Transport::Http {
                return Err(self.fail(format!(
                    "{shown} asks for credentials over plain http; hookops only sends a token over https"
                )));
            }
            let Some(token) = &self.creds.token else {
                return Err(self.fail(format!(
                    "{shown} asks for credentials: set [sync] token_file or {TOKEN_ENV}"
                )));
            };
            let mut tried = self.tried.borrow_mut();
            if tried.contains(&"token") {
                return Err(self.fail(format!("{shown}: the token was refused")));
            }
            tried.push("token");
            return Cred::userpass_plaintext(https_username(username), token);
        }
        Err(self.fail(format!(
            "{shown} asks for an authentication method hookops does not offer"
        )))
    }

    fn certificate_check(
        &self,
        cert: &Cert<'_>,
        host: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has already verified the chain against the system CAs.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let (host, port) = match &self.transport {
            Transport::Ssh { host, port } => (host.as_str(), *port),
            _ => (host, 22),
        };
        let name = known_hosts_name(host, port);
        let sha256: Vec<u8> = match (hostkey.hash_sha256(), hostkey.hostkey()) {
            (Some(h), _) => h.to_vec(),
            (None, Some(raw)) => {
                use sha2::Digest;
                sha2::Sha256::digest(raw).to_vec()
            }
            (None, None) => {
                return Err(self.fail(format!(
                    "{name}: the SSH library did not expose the host key; refusing to connect"
                )))
            }
        };
        let algorithm = hostkey
            .hostkey_type()
            .map(|t| t.name().to_string())
            .unwrap_or_default();
        let path = self
            .creds
            .known_hosts_path()
            .map_err(|e| self.fail(format!("{e:#}")))?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return Err(self.fail(format!(
                    "host key of {name} cannot be checked: reading known_hosts {}: {e}",
                    path.display()
                )))
            }
        };
        let fp = fingerprint(&sha256);
        match check_known_hosts(&text, &name, &algorithm, &sha256) {
            HostKeyVerdict::Known => Ok(CertificateCheckStatus::CertificateOk),
            HostKeyVerdict::Mismatch => Err(self.fail(format!(
                "host key of {name} does NOT match known_hosts {} (offered {algorithm} {fp}): \
                 refusing to connect; if the key was rotated, replace the entry after checking \
                 the new fingerprint",
                path.display()
            ))),
            HostKeyVerdict::Revoked => Err(self.fail(format!(
                "host key of {name} ({algorithm} {fp}) is marked @revoked in {}",
                path.display()
            ))),
            HostKeyVerdict::Unknown(types) => {
                let listed = if types.is_empty() {
                    String::new()
                } else {
                    format!(" (it lists only {} keys for it)", types.join(", "))
                };
                Err(self.fail(format!(
                    "host {name} is not in known_hosts {}{listed}: offered {algorithm} {fp}; \
                     add it with `ssh-keyscan{} {host}` after checking the fingerprint",
                    path.display(),
                    if port == 22 {
                        String::new()
                    } else {
                        format!(" -p {port}")
                    },
                )))
            }
        }
    }

    /// The error to report for a failed operation: ours from a callback if there was one.
    fn error(&self, e: git2::Error, doing: &str) -> anyhow::Error {
        let shown = display_url(self.url);
        match self.failure.borrow_mut().take() {
            Some(message) => anyhow!("{doing} {shown}: {message}"),
            // The message only (git2's Display appends class and code numbers), and with the
            // URL masked in case libgit2 quoted it.
            None => anyhow!("{doing} {shown}: {}", e.message().replace(self.url, &shown)),
        }
    }
}

/// The user name sent with an HTTPS token: the URL's, else `x-access-token`, which GitHub
/// requires for app and fine-grained tokens and which GitLab (any name with a token) and
/// Gitea (any name) accept.
fn https_username(from_url: Option<&str>) -> &str {
    from_url
        .filter(|u| !u.is_empty())
        .unwrap_or("x-access-token")
}

fn proxy() -> ProxyOptions<'static> {
    let mut p = ProxyOptions::new();
    p.auto();
    p
}

/// Fetches `refspecs` from `url` into `repo`; refs that vanished from the remote are pruned
/// from their destinations.
pub fn fetch(repo: &Repository, url: &str, refspecs: &[&str], creds: &Creds) -> Result<()> {
    let s = Op::new(url, creds);
    let mut remote = repo
        .remote_anonymous(url)
        .with_context(|| format!("invalid remote URL {}", display_url(url)))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(s.callbacks())
        .proxy_options(proxy())
        .prune(FetchPrune::On)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    remote
        .fetch(refspecs, Some(&mut opts), Some("hookops: fetch"))
        .map_err(|e| s.error(e, "fetching from"))
}

/// The branch the remote's HEAD names (`refs/heads/main`), if it advertises one.
pub fn remote_head(repo: &Repository, url: &str, creds: &Creds) -> Result<Option<String>> {
    let s = Op::new(url, creds);
    let mut remote = repo
        .remote_anonymous(url)
        .with_context(|| format!("invalid remote URL {}", display_url(url)))?;
    let connection = remote
        .connect_auth(git2::Direction::Fetch, Some(s.callbacks()), Some(proxy()))
        .map_err(|e| s.error(e, "connecting to"))?;
    match connection.default_branch() {
        Ok(buf) => Ok(buf.as_str().map(str::to_string)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(s.error(e, "reading HEAD of")),
    }
}

/// A push the remote refused (or libgit2 refused before sending, as not a fast-forward).
/// Callers branch on it: a rejected notes ref is retried after merging.
#[derive(Debug)]
pub struct Rejected {
    /// (ref, reason); the ref is empty when libgit2 did not say which one.
    pub refs: Vec<(String, String)>,
    url: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .refs
            .iter()
            .map(|(r, why)| {
                if r.is_empty() {
                    why.clone()
                } else {
                    format!("{r} ({why})")
                }
            })
            .collect();
        write!(f, "{} rejected the push: {}", self.url, parts.join(", "))
    }
}

impl std::error::Error for Rejected {}

/// Pushes `refspecs` to `url`; a refused ref is a `Rejected` error.
pub fn push(repo: &Repository, url: &str, refspecs: &[&str], creds: &Creds) -> Result<()> {
    let s = Op::new(url, creds);
    let rejected: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
    let mut remote = repo
        .remote_anonymous(url)
        .with_context(|| format!("invalid remote URL {}", display_url(url)))?;
    let mut cb = s.callbacks();
    cb.push_update_reference(|name, status| {
        if let Some(why) = status {
            rejected
                .borrow_mut()
                .push((name.to_string(), why.to_string()));
        }
        Ok(())
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb).proxy_options(proxy());
    match remote.push(refspecs, Some(&mut opts)) {
        Ok(()) => {}
        Err(e) if e.code() == ErrorCode::NotFastForward => {
            return Err(Rejected {
                refs: vec![(String::new(), e.message().to_string())],
                url: display_url(url),
            }
            .into())
        }
        Err(e) => return Err(s.error(e, "pushing to")),
    }
    drop(opts);
    let refs = rejected.into_inner();
    if refs.is_empty() {
        return Ok(());
    }
    Err(Rejected {
        refs,
        url: display_url(url),
    }
    .into())
}

/// The URL of a configured remote, or `name` itself when it already is a URL or a path.
pub fn remote_url(repo: &Repository, name: &str) -> Result<String> {
    match repo.find_remote(name) {
        Ok(r) => r
            .url()
            .map(str::to_string)
            .with_context(|| format!("remote {name:?} has no URL (or one that is not UTF-8)")),
        Err(_) if name.contains('/') || name.contains(':') => Ok(name.to_string()),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "[sync] remote {name:?} is not configured in {}",
            repo.path().display()
        ))),
    }
}

/// `[sync] push = true`: shares records and pointers with the configured remote (default
/// `origin`).
pub fn sync(session: &Session) -> Result<()> {
    let name = session.config.sync.remote.as_deref().unwrap_or("origin");
    let url = remote_url(&session.repo, name)?;
    let creds = Creds::from_config(&session.config.sync)?;
    sync_to(&session.repo, &url, &creds)
}

/// Fetches the remote's notes, union-merges them into ours, then pushes our notes (a
/// fast-forward of theirs by construction) and our deployed pointers (forced: a rollback
/// legitimately moves a pointer backwards). When another deployer pushed notes in between,
/// the push is refused as non-fast-forward, and the round repeats.
pub fn sync_to(repo: &Repository, url: &str, creds: &Creds) -> Result<()> {
    let shown = display_url(url);
    for attempt in 1..=SYNC_TRIES {
        if let Ok(mut r) = repo.find_reference(REMOTE_NOTES_REF) {
            r.delete()
                .with_context(|| format!("deleting {REMOTE_NOTES_REF}"))?;
        }
        let spec = format!("+{NOTES_REF}:{REMOTE_NOTES_REF}");
        fetch(repo, url, &[spec.as_str()], creds)?;
        if let Ok(theirs) = repo.refname_to_id(REMOTE_NOTES_REF) {
            notes::merge_union(repo, theirs)
                .with_context(|| format!("merging the notes of {shown} into {NOTES_REF}"))?;
        }
        let mut specs = Vec::new();
        if repo.refname_to_id(NOTES_REF).is_ok() {
            specs.push(format!("{NOTES_REF}:{NOTES_REF}"));
        }
        let pointers = repo
            .references_glob(&config::pointer_ref("*"))
            .context("listing deployed pointers")?;
        for r in pointers {
            let r = r.context("reading a deployed pointer")?;
            if let Some(name) = r.name() {
                specs.push(format!("+{name}:{name}"));
            }
        }
        if specs.is_empty() {
            return Ok(());
        }
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        match push(repo, url, &specs, creds) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let retry = e.downcast_ref::<Rejected>().is_some_and(|r| {
                    r.refs
                        .iter()
                        .all(|(name, _)| name.is_empty() || name == NOTES_REF)
                });
                if !retry || attempt == SYNC_TRIES {
                    return Err(e).with_context(|| format!("syncing records with {shown}"));
                }
                log::info!("{shown}: notes moved during sync (round {attempt}); merging again");
            }
        }
    }
    bail!("syncing records with {shown}: the remote's notes kept moving")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(
            transport("ssh://git@example.com:2222/srv/repo.git"),
            Transport::Ssh {
                host: "example.com".into(),
                port: 2222
            }
        );
        assert_eq!(
            transport("ssh://[::1]:2200/r"),
            Transport::Ssh {
                host: "::1".into(),
                port: 2200
            }
        );
        assert_eq!(
            transport("git@github.com:org/repo.git"),
            Transport::Ssh {
                host: "github.com".into(),
                port: 22
            }
        );
        assert_eq!(transport("https://github.com/o/r"), Transport::Https);
        assert_eq!(transport("http://h/r"), Transport::Http);
        assert_eq!(transport("file:///srv/r.git"), Transport::Plain);
        assert_eq!(transport("/srv/r.git"), Transport::Plain);
        assert_eq!(transport("./a:b"), Transport::Plain);
    }

    #[test]
    fn urls_never_show_passwords() {
        assert_eq!(
            display_url("https://user:s3cret@host/r.git"),
            "https://user:***@host/r.git"
        );
        assert_eq!(display_url("ssh://git@host/r"), "ssh://git@host/r");
        assert!(!format!(
            "{:?}",
            Creds {
                token: Some("s3cret".into()),
                ..Creds::default()
            }
        )
        .contains("s3cret"));
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJKDMNRfle3c2L0Tw+r7DpOdaMCGsIZN6lUWSFBiv2ZN";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAClqYMZKX1kJfPTBFLr1NgtgQYvQAUFZwI7ujYyYOp/";

    fn sha(key: &str) -> Vec<u8> {
        ssh_key::PublicKey::from_openssh(key)
            .unwrap()
            .fingerprint(HashAlg::Sha256)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn known_hosts_plain_wildcards_ports_and_negation() {
        let text =
            format!("# comment\n[127.0.0.1]:2222 {KEY}\n*.example.com,!bad.example.com {KEY}\n");
        let fp = sha(KEY);
        let check = |name: &str| check_known_hosts(&text, name, "ssh-ed25519", &fp);
        assert_eq!(check("[127.0.0.1]:2222"), HostKeyVerdict::Known);
        assert_eq!(check("127.0.0.1"), HostKeyVerdict::Unknown(vec![]));
        assert_eq!(check("git.EXAMPLE.com"), HostKeyVerdict::Known);
        assert_eq!(check("bad.example.com"), HostKeyVerdict::Unknown(vec![]));
        let other = sha(OTHER);
        assert_eq!(
            check_known_hosts(&text, "[127.0.0.1]:2222", "ssh-ed25519", &other),
            HostKeyVerdict::Mismatch
        );
        assert_eq!(
            check_known_hosts(&text, "[127.0.0.1]:2222", "ssh-rsa", &other),
            HostKeyVerdict::Unknown(vec!["ssh-ed25519".into()])
        );
    }

    #[test]
    fn known_hosts_hashed_and_revoked() {
        // What `ssh-keygen -H` writes for "github.com": HMAC-SHA1 of the name under a salt.
        let salt = b"0123456789abcdefghij".to_vec();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"github.com");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let hashed = HostPatterns::HashedName { salt, hash };
        assert!(host_matches(&hashed, "github.com"));
        assert!(!host_matches(&hashed, "gitlab.com"));
        let text = format!("{} {KEY}\n@revoked * {OTHER}\n", hashed.to_string());
        assert_eq!(
            check_known_hosts(&text, "github.com", "ssh-ed25519", &sha(KEY)),
            HostKeyVerdict::Known
        );
        assert_eq!(
            check_known_hosts(&text, "github.com", "ssh-ed25519", &sha(OTHER)),
            HostKeyVerdict::Revoked
        );
    }

    #[test]
    fn sync_unions_the_records_of_two_deployers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
        let upstream = Repository::init_bare(path("up.git")).unwrap();
        let a = Repository::init_bare(path("a.git")).unwrap();
        let b = Repository::init_bare(path("b.git")).unwrap();
        let creds = Creds::default();
        let sig = git2::Signature::now("t", "t@example.test").unwrap();
        let tree = a
            .find_tree(a.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let commit = a
            .commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        push(
            &a,
            &path("up.git"),
            &["refs/heads/main:refs/heads/main"],
            &creds,
        )
        .unwrap();
        fetch(
            &b,
            &path("up.git"),
            &["+refs/heads/main:refs/heads/main"],
            &creds,
        )
        .unwrap();
        let record = |env: &str| crate::record::encode(&format!("{{\"env\":\"{env}\"}}"), None);
        notes::append(&a, commit, &record("a")).unwrap();
        notes::append(&b, commit, &record("b")).unwrap();
        a.reference(&config::pointer_ref("a"), commit, true, "t")
            .unwrap();

        sync_to(&a, &path("up.git"), &creds).unwrap();
        // b has not merged a's notes yet: a plain push is refused, as a typed error.
        let e = push(
            &b,
            &path("up.git"),
            &[&format!("{NOTES_REF}:{NOTES_REF}")],
            &creds,
        )
        .unwrap_err();
        assert!(e.downcast_ref::<Rejected>().is_some(), "{e:#}");
        sync_to(&b, &path("up.git"), &creds).unwrap();

        let note = notes::read(&upstream, commit).unwrap().unwrap();
        assert!(
            note.contains("\"env\":\"a\"") && note.contains("\"env\":\"b\""),
            "{note}"
        );
        assert_eq!(
            upstream.refname_to_id(&config::pointer_ref("a")).unwrap(),
            commit
        );
        // Syncing again is a no-op, not an error.
        sync_to(&a, &path("up.git"), &creds).unwrap();
        assert!(notes::read(&a, commit)
            .unwrap()
            .unwrap()
            .contains("\"env\":\"b\""));
    }

    #[test]
    fn token_username() {
        assert_eq!(https_username(None), "x-access-token");
        assert_eq!(https_username(Some("oauth2")), "oauth2");
    }
}
