//! Vault (or OpenBao) client for the secrets a deploy needs: login with a token file or
//! AppRole, KV v2 reads cached for the length of one deploy, token renewal and re-login, and
//! errors that name the secret reference but never a value or a credential.
//!
//! Everything a server sends back that ends up in an error message is passed through a
//! [`Masker`] holding the credentials and every value read, so even a server that echoes a
//! secret_id cannot leak it through us. Secrets travel only in headers and request bodies,
//! never in URLs or process arguments. See `docs/vault.md` for the operator's view.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::backends::mask::Masker;

const DEFAULT_APPROLE_MOUNT: &str = "approle";
const DEFAULT_TIMEOUT_SECS: u64 = 10;

pub use crate::config::vault::{SecretRef, VaultConfig};

/// A secret value. `Debug` and `Display` print `***`; [`Secret::expose`] is the one way to
/// the value, so every use of it is easy to find. Not zeroed on drop: copies also live in
/// HTTP and JSON buffers we do not control, so zeroing this one would promise too much.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
enum Method {
    TokenFile(PathBuf),
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
}

/// What we know about the current token's lifetime.
#[derive(Debug, Clone, Copy)]
struct Lease {
    obtained: Instant,
    /// `None`: the token does not expire (a root token, or a TTL of 0).
    ttl: Option<Duration>,
    renewable: bool,
}

impl Lease {
    fn new(ttl_secs: u64, renewable: bool) -> Lease {
        Lease {
            obtained: Instant::now(),
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            renewable,
        }
    }

    fn remaining(&self) -> Option<Duration> {
        self.ttl
            .map(|ttl| ttl.saturating_sub(self.obtained.elapsed()))
    }
}

/// A status code and the parsed JSON body (`Null` when the body was not JSON).
struct Reply {
    status: u16,
    body: Value,
    location: Option<String>,
}

#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
}

/// A logged-in Vault client. Reads are cached for the client's lifetime, which is meant to be
/// one deploy: create a new client per push so that rotated secrets are picked up.
pub struct Client {
    agent: ureq::Agent,
    address: String,
    namespace: Option<String>,
    method: Method,
    token: Secret,
    lease: Lease,
    /// (path, version) → every key of that secret version.
    cache: HashMap<(String, Option<u64>), HashMap<String, Secret>>,
    masker: Masker,
    requests: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("method", &self.method)
            .field("token", &self.token)
            .field("lease", &self.lease)
            .field("cached_secrets", &self.cache.len())
            .field("requests", &self.requests)
            .finish()
    }
}

impl Client {
    /// Logs in with the one method `cfg` configures: `token_file` (the token is checked with
    /// a lookup-self, which also tells its TTL) or AppRole (`role_id_file` + `secret_id_file`).
    pub fn login(cfg: &VaultConfig) -> Result<Client> {
        let method = match (&cfg.token_file, &cfg.role_id_file, &cfg.secret_id_file) {
            (Some(t), None, None) => Method::TokenFile(t.clone()),
            (None, Some(r), Some(s)) => Method::AppRole {
                mount: cfg
                    .approle_mount
                    .as_deref()
                    .unwrap_or(DEFAULT_APPROLE_MOUNT)
                    .trim_matches('/')
                    .to_string(),
                role_id_file: r.clone(),
                secret_id_file: s.clone(),
            },
            (None, None, None) => bail!(
                "vault config: no login method; set token_file, or role_id_file and secret_id_file"
            ),
            (Some(_), _, _) => bail!(
                "vault config: set either token_file or role_id_file + secret_id_file, not both"
            ),
            (None, Some(_), None) => {
                bail!("vault config: role_id_file is set but secret_id_file is missing")
            }
            (None, None, Some(_)) => {
                bail!("vault config: secret_id_file is set but role_id_file is missing")
            }
        };
        if cfg.approle_mount.is_some() && matches!(method, Method::TokenFile(_)) {
            bail!("vault config: approle_mount is set but AppRole is not the login method");
        }
        let address = cfg.address.trim_end_matches('/').to_string();
        let plain = address.strip_prefix("http://");
        if plain.is_none() && !address.starts_with("https://") {
            bail!(
                "vault config: address {:?} must start with https:// or http://",
                cfg.address
            );
        }
        if let Some(rest) = plain {
            let host = rest.split([':', '/']).next().unwrap_or_default();
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                log::warn!(
                    "vault: {address} is plain http; the token crosses the network unencrypted"
                );
            }
        }

        let mut client = Client {
            agent: build_agent(cfg)?,
            address,
            namespace: cfg.namespace.clone().filter(|n| !n.is_empty()),
            method,
            token: Secret::new(String::new()),
            lease: Lease::new(0, false),
            cache: HashMap::new(),
            masker: Masker::new(),
            requests: 0,
        };
        client.authenticate()?;
        Ok(client)
    }

    /// Reads one key of a KV v2 secret. The first read of a path (and version) fetches all of
    /// its keys; later reads of any key of it are served from memory.
    pub fn read(&mut self, r: &SecretRef) -> Result<Secret> {
        let cache_key = (r.path.clone(), r.version);
        if !self.cache.contains_key(&cache_key) {
            let data = self.fetch(r)?;
            self.cache.insert(cache_key.clone(), data);
        } else {
            log::debug!("vault: {r} served from cache");
        }
        self.cache
            .get(&cache_key)
            .and_then(|data| data.get(&r.key))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "vault: key {:?} not found in {} (reading {r})",
                    r.key,
                    r.path_display()
                )
            })
    }

    /// A one-line description of the current token for `hookops doctor`: display name, role,
    /// policies and TTL. Never includes the token or its accessor.
    pub fn whoami(&mut self) -> Result<String> {
        let reply = self.authed(Verb::Get, "auth/token/lookup-self", None)?;
        if reply.status != 200 {
            bail!("vault: token lookup-self failed: {}", self.describe(&reply));
        }
        let d = &reply.body["data"];
        let mut out = d["display_name"].as_str().unwrap_or("?").to_string();
        if let Some(role) = d["meta"]["role_name"].as_str() {
            out.push_str(&format!(" (role {role})"));
        }
        let policies: Vec<&str> = d["policies"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!("; policies: {}", policies.join(", ")));
        match d["ttl"].as_u64() {
            Some(0) | None => out.push_str("; no expiry"),
            Some(ttl) => {
                out.push_str(&format!("; ttl {ttl}s"));
                if d["renewable"].as_bool() == Some(true) {
                    out.push_str(" (renewable)");
                }
            }
        }
        if let Some(ns) = &self.namespace {
            out.push_str(&format!("; namespace {ns}"));
        }
        Ok(self.masker.mask(&out))
    }

    /// A masker that knows the credentials and every value read so far; hand it to whatever
    /// relays child process output. A snapshot: later reads are not added to it.
    pub fn masker(&self) -> Masker {
        self.masker.clone()
    }

    /// HTTP requests sent so far (login, renewal and lookups included): for diagnostics and
    /// for tests of the cache.
    pub fn requests_sent(&self) -> u64 {
        self.requests
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn fetch(&mut self, r: &SecretRef) -> Result<HashMap<String, Secret>> {
        let mut api_path = encode_path(&r.path);
        if let Some(v) = r.version {
            api_path.push_str(&format!("?version={v}"));
        }
        let reply = self.authed(Verb::Get, &api_path, None)?;
        match reply.status {
            200 => {}
            403 => bail!("vault: permission denied reading {r}"),
            404 => {
                let meta = &reply.body["data"]["metadata"];
                let why = if meta["destroyed"].as_bool() == Some(true) {
                    " (that version was destroyed)"
                } else if meta["deletion_time"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
                {
                    " (that version was deleted)"
                } else if !r.path.contains("/data/") {
                    " (KV v2 paths look like MOUNT/data/NAME)"
                } else {
                    ""
                };
                bail!("vault: {r} not found{why}");
            }
            _ => bail!("vault: reading {r} failed: {}", self.describe(&reply)),
        }
        let Some(data) = reply.body["data"]["data"].as_object() else {
            // A 200 without data.data is a soft-deleted latest version, or not KV v2 at all.
            bail!("vault: {r} not found (no KV v2 data at {})", r.path);
        };
        let mut out = HashMap::new();
        for (k, v) in data {
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                // Numbers, booleans and nested JSON are passed on as their JSON text.
                other => other.to_string(),
            };
            self.masker.add(&text);
            out.insert(k.clone(), Secret::new(text));
        }
        log::debug!("vault: fetched {} ({} keys)", r.path_display(), out.len());
        Ok(out)
    }

    /// Sends a request with the token, renewing or replacing the token first when it is
    /// close to expiry, and once more after a re-login when a 403 turns out to be a dead
    /// token rather than a policy decision.
    fn authed(&mut self, verb: Verb, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.refresh_if_needed()?;
        let reply = self.send(verb, path, true, body)?;
        if reply.status == 403 && self.token_is_dead()? {
            log::info!("vault: token rejected (expired or revoked); logging in again");
            self.relogin()?;
            return self.send(verb, path, true, body);
        }
        Ok(reply)
    }

    /// Renews the token once less than a third of its TTL is left; if it cannot be renewed,
    /// or renewal no longer extends it (max TTL reached), logs in again with AppRole. A token
    /// file's token can only be renewed, so it is used until it expires.
    fn refresh_if_needed(&mut self) -> Result<()> {
        let (Some(ttl), Some(remaining)) = (self.lease.ttl, self.lease.remaining()) else {
            return Ok(());
        };
        if remaining > ttl / 3 {
            return Ok(());
        }
        // Tried even when our estimate says the token has run out: TTLs come in whole
        // seconds, so the server may still honour it.
        if self.lease.renewable {
            match self.renew() {
                Ok(lease) => {
                    let extended = lease
                        .remaining()
                        .is_some_and(|r| r > remaining + Duration::from_secs(1));
                    if extended || lease.ttl.is_none() {
                        log::debug!("vault: token renewed");
                        self.lease = lease;
                        return Ok(());
                    }
                    log::debug!("vault: token renewal capped by its max TTL");
                    self.lease = Lease {
                        renewable: false,
                        ..lease
                    };
                }
                Err(e) => log::warn!("{e:#}"),
            }
        }
        match self.method {
            Method::AppRole { .. } => self.relogin(),
            Method::TokenFile(_) => match self.lease.remaining() {
                Some(r) if r.is_zero() => self.relogin(),
                _ => Ok(()),
            },
        }
    }

    fn renew(&mut self) -> Result<Lease> {
        let reply = self.send(
            Verb::Post,
            "auth/token/renew-self",
            true,
            Some(&serde_json::json!({})),
        )?;
        if reply.status != 200 {
            bail!("vault: token renewal failed: {}", self.describe(&reply));
        }
        let auth = &reply.body["auth"];
        Ok(Lease::new(
            auth["lease_duration"].as_u64().unwrap_or(0),
            auth["renewable"].as_bool().unwrap_or(false),
        ))
    }

    /// After a 403: is the token itself dead (expired, revoked) rather than lacking a policy?
    fn token_is_dead(&mut self) -> Result<bool> {
        let reply = self.send(Verb::Get, "auth/token/lookup-self", true, None)?;
        Ok(reply.status == 403)
    }

    /// Replaces a dead token: AppRole logs in again; a token file is read again in case
    /// something (vault agent, an operator) put a fresh token there.
    fn relogin(&mut self) -> Result<()> {
        if let Method::TokenFile(file) = &self.method {
            let fresh = read_credential(file, "token_file")?;
            if fresh.expose() == self.token.expose() {
                bail!("vault: token from {} expired", file.display());
            }
        }
        self.authenticate()
    }

    fn authenticate(&mut self) -> Result<()> {
        match self.method.clone() {
            Method::TokenFile(file) => {
                let token = read_credential(&file, "token_file")?;
                self.masker.add(token.expose());
                self.token = token;
                let reply = self.send(Verb::Get, "auth/token/lookup-self", true, None)?;
                match reply.status {
                    200 => {}
                    // Also what a token without the default policy gets; said so because
                    // the two cannot be told apart from here.
                    403 => bail!(
                        "vault: token from {} expired or is invalid \
                         (or may not look itself up: attach the default policy)",
                        file.display()
                    ),
                    _ => bail!(
                        "vault: checking the token from {} failed: {}",
                        file.display(),
                        self.describe(&reply)
                    ),
                }
                let d = &reply.body["data"];
                self.lease = Lease::new(
                    d["ttl"].as_u64().unwrap_or(0),
                    d["renewable"].as_bool().unwrap_or(false),
                );
                log::debug!("vault: using token from {}", file.display());
            }
            Method::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_credential(&role_id_file, "role_id_file")?;
                let secret_id = read_credential(&secret_id_file, "secret_id_file")?;
                self.masker.add(role_id.expose());
                self.masker.add(secret_id.expose());
                let body = serde_json::json!({
                    "role_id": role_id.expose(),
                    "secret_id": secret_id.expose(),
                });
                let path = format!("auth/{}/login", encode_path(&mount));
                let reply = self.send(Verb::Post, &path, false, Some(&body))?;
                let files = format!("{} / {}", role_id_file.display(), secret_id_file.display());
                match reply.status {
                    200 => {}
                    400 => bail!(
                        "vault: AppRole login failed (invalid role_id or secret_id from {files}): {}",
                        self.describe(&reply)
                    ),
                    // What OpenBao answers for a login path where nothing is mounted.
                    403 | 404 => bail!(
                        "vault: AppRole login failed: {} at auth/{mount}/login on {} \
                         (is AppRole enabled at auth/{mount}/? see approle_mount)",
                        self.describe(&reply),
                        self.address
                    ),
                    _ => bail!(
                        "vault: AppRole login failed (credentials from {files}): {}",
                        self.describe(&reply)
                    ),
                }
                let auth = &reply.body["auth"];
                let Some(token) = auth["client_token"].as_str().filter(|t| !t.is_empty()) else {
                    bail!("vault: AppRole login at auth/{mount}/login returned no client token");
                };
                self.token = Secret::new(token);
                self.masker.add(token);
                self.lease = Lease::new(
                    auth["lease_duration"].as_u64().unwrap_or(0),
                    auth["renewable"].as_bool().unwrap_or(false),
                );
                log::debug!("vault: logged in with AppRole at auth/{mount}");
            }
        }
        Ok(())
    }

    /// One HTTP exchange. Transport failures become the "cannot reach" error; every status is
    /// returned for the caller to interpret.
    fn send(
        &mut self,
        verb: Verb,
        path: &str,
        with_token: bool,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let url = format!("{}/v1/{path}", self.address);
        self.requests += 1;
        let result = match verb {
            Verb::Get => {
                let mut req = self.agent.get(&url);
                if with_token {
                    req = req.header("X-Vault-Token", self.token.expose());
                }
                if let Some(ns) = &self.namespace {
                    req = req.header("X-Vault-Namespace", ns);
                }
                req.call()
            }
            Verb::Post => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if with_token {
                    req = req.header("X-Vault-Token", self.token.expose());
                }
                if let Some(ns) = &self.namespace {
                    req = req.header("X-Vault-Namespace", ns);
                }
                req.send(body.map(Value::to_string).unwrap_or_default())
            }
        };
        let mut resp = result.map_err(|e| {
            anyhow!(
                "vault: cannot reach {}: {}",
                self.address,
                self.masker.mask(&e.to_string())
            )
        })?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.body_mut().read_to_string().map_err(|e| {
            anyhow!(
                "vault: cannot reach {}: reading the response failed: {}",
                self.address,
                self.masker.mask(&e.to_string())
            )
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            body,
            location,
        })
    }

    /// "HTTP 503: Vault is sealed": the status and Vault's `errors`, masked.
    fn describe(&self, reply: &Reply) -> String {
        let errors: Vec<String> = reply.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|e| {
                        // "1 error occurred:\n\t* permission denied\n\n" → "permission denied"
                        e.split(['\n', '\t'])
                            .map(|p| p.trim().trim_start_matches("* ").trim())
                            .filter(|p| !p.is_empty() && !p.ends_with("error occurred:"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut out = format!("HTTP {}", reply.status);
        if (300..400).contains(&reply.status) {
            out.push_str(&format!(
                " redirect to {} (redirects are not followed, so the token is only sent to \
                 `address`; point it at the active node or its load balancer)",
                reply.location.as_deref().unwrap_or("?")
            ));
        }
        if !errors.is_empty() {
            out.push_str(": ");
            out.push_str(&errors.join("; "));
        }
        self.masker.mask(&out)
    }
}

fn build_agent(cfg: &VaultConfig) -> Result<ureq::Agent> {
    let timeout = Duration::from_secs(cfg.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1));
    crate::backends::http::agent(timeout, cfg.ca_cert.as_deref(), "vault config")
}

/// Reads a credential file, trimmed. Errors name the file, never its content.
fn read_credential(path: &Path, what: &str) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("vault: cannot read {what} {}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        bail!("vault: {what} {} is empty", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!(
                    "vault: {what} {} is readable by group or others; chmod 600 it",
                    path.display()
                );
            }
        }
    }
    Ok(Secret::new(value))
}

/// Percent-encodes each segment of an API path, keeping the `/` separators.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SecretRef {
        SecretRef::parse(s).unwrap()
    }

    #[test]
    fn parses_references() {
        let r = parse("secret/data/db#password");
        assert_eq!(
            (r.path.as_str(), r.key.as_str(), r.version),
            ("secret/data/db", "password", None)
        );
        let r = parse("secret/data/db#password?version=3");
        assert_eq!(r.version, Some(3));
        assert_eq!(r.key, "password");
        let r2 = parse("secret/data/db?version=3#password");
        assert_eq!(r, r2);
        assert_eq!(r2.to_string(), "secret/data/db#password?version=3");
        assert_eq!(
            parse("kv/data/a/b-c_d.e#key").to_string(),
            "kv/data/a/b-c_d.e#key"
        );
    }

    #[test]
    fn rejects_bad_references_naming_them() {
        for bad in [
            "secret/data/db",
            "secret/data/db#",
            "#password",
            "secret/data/db#a#b",
            "/secret/data/db#k",
            "secret/data/db/#k",
            "secret//db#k",
            "secret/../db#k",
            "v1/secret/data/db#k",
            "secret/data/db#k?version=0",
            "secret/data/db#k?version=x",
            "secret/data/db#k?ver=1",
            "secret/data/db?version=1#k?version=2",
            "secret/data/my db#k",
        ] {
            let err = SecretRef::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.starts_with("vault: invalid secret reference"), "{err}");
        }
    }

    #[test]
    fn secret_hides_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(
            encode_path("secret/data/a b?c#d"),
            "secret/data/a%20b%3Fc%23d"
        );
        assert_eq!(
            encode_path("secret/data/ok-1_2.3~"),
            "secret/data/ok-1_2.3~"
        );
    }

    fn cfg(toml_text: &str) -> VaultConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = toml::from_str::<VaultConfig>("address = \"http://x\"\ntoken = \"t\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn login_requires_exactly_one_method() {
        let cases = [
            ("address = \"http://127.0.0.1:1\"", "no login method"),
            (
                "address = \"http://127.0.0.1:1\"\ntoken_file = \"/t\"\nrole_id_file = \"/r\"\nsecret_id_file = \"/s\"",
                "not both",
            ),
            (
                "address = \"http://127.0.0.1:1\"\nrole_id_file = \"/r\"",
                "secret_id_file is missing",
            ),
            (
                "address = \"http://127.0.0.1:1\"\nsecret_id_file = \"/s\"",
                "role_id_file is missing",
            ),
            (
                "address = \"127.0.0.1:8200\"\ntoken_file = \"/t\"",
                "must start with https:// or http://",
            ),
            (
                "address = \"http://127.0.0.1:1\"\ntoken_file = \"/t\"\napprole_mount = \"x\"",
                "approle_mount is set",
            ),
        ];
        for (text, want) in cases {
            let err = Client::login(&cfg(text)).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn credential_file_errors_name_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("token");
        std::fs::write(&empty, "  \n").unwrap();
        let c = VaultConfig {
            address: "http://127.0.0.1:1".into(),
            token_file: Some(empty.clone()),
            role_id_file: None,
            secret_id_file: None,
            approle_mount: None,
            namespace: None,
            ca_cert: None,
            timeout_secs: Some(1),
        };
        let err = Client::login(&c).unwrap_err().to_string();
        assert!(
            err.contains("is empty") && err.contains(&empty.display().to_string()),
            "{err}"
        );

        let missing = dir.path().join("nope");
        let c = VaultConfig {
            token_file: Some(missing.clone()),
            ..c
        };
        let err = format!("{:#}", Client::login(&c).unwrap_err());
        assert!(err.contains("cannot read token_file"), "{err}");
    }

    #[test]
    fn ca_cert_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "not a pem").unwrap();
        let c = VaultConfig {
            address: "https://127.0.0.1:1".into(),
            token_file: Some(dir.path().join("t")),
            role_id_file: None,
            secret_id_file: None,
            approle_mount: None,
            namespace: None,
            ca_cert: Some(pem),
            timeout_secs: None,
        };
        let err = Client::login(&c).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn lease_without_ttl_never_expires() {
        let l = Lease::new(0, true);
        assert!(l.remaining().is_none());
        let l = Lease::new(60, false);
        assert!(l.remaining().is_some_and(|r| r > Duration::from_secs(58)));
    }
}
