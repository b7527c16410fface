//! The `[vault]` table of the server config and the secret references targets name
//! (`secret/data/db#password`); `backends::vault` is the client that reads them.

use std::fmt;
use std::path::PathBuf;

use anyhow::{anyhow, Result};

/// The `[vault]` table of the trusted server config `<GIT_DIR>/hookops/config.toml`.
/// Paths are used as given (relative ones against the hook's working directory).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Base URL, e.g. `https://vault.internal:8200`.
    pub address: String,
    pub token_file: Option<PathBuf>,
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    /// Where the AppRole auth method is mounted; `approle` when unset.
    pub approle_mount: Option<String>,
    /// Sent as `X-Vault-Namespace` (Vault Enterprise / OpenBao namespaces).
    pub namespace: Option<String>,
    /// PEM bundle of the CA(s) to trust instead of the public web PKI roots.
    pub ca_cert: Option<PathBuf>,
    /// Whole-request timeout in seconds; 10 when unset.
    pub timeout_secs: Option<u64>,
}

/// A reference to one key of a KV v2 secret: `secret/data/db#password`, optionally pinned to a
/// version with `?version=3` after the key (or after the path). `Display` gives the canonical
/// text `PATH#KEY[?version=N]`, which is what error messages show.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// API path below `/v1/`, including the KV v2 `data/` segment.
    pub path: String,
    pub key: String,
    pub version: Option<u64>,
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<SecretRef> {
        let bad = |why: &str| {
            anyhow!(
                "vault: invalid secret reference {s:?}: {why} \
                 (expected PATH#KEY or PATH#KEY?version=N, e.g. secret/data/db#password)"
            )
        };
        let (left, right) = s.split_once('#').ok_or_else(|| bad("missing \"#KEY\""))?;
        if right.contains('#') {
            return Err(bad("more than one '#'"));
        }
        let (path, v1) = split_version(left).map_err(&bad)?;
        let (key, v2) = split_version(right).map_err(&bad)?;
        let version = match (v1, v2) {
            (Some(_), Some(_)) => return Err(bad("version given twice")),
            (a, b) => a.or(b),
        };
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        if path.starts_with('/') || path.ends_with('/') {
            return Err(bad("path must not start or end with '/'"));
        }
        if path.starts_with("v1/") {
            return Err(bad("path is relative to /v1/; drop the \"v1/\" prefix"));
        }
        for seg in path.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("path has an empty, '.' or '..' segment"));
            }
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("path contains whitespace or control characters"));
        }
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        if key.chars().any(char::is_control) {
            return Err(bad("key contains control characters"));
        }
        Ok(SecretRef {
            path: path.to_string(),
            key: key.to_string(),
            version,
        })
    }

    /// `secret/data/db` or `secret/data/db (version 3)`: the secret as a whole.
    pub(crate) fn path_display(&self) -> String {
        match self.version {
            Some(v) => format!("{} (version {v})", self.path),
            None => self.path.clone(),
        }
    }
}

fn split_version(s: &str) -> std::result::Result<(&str, Option<u64>), &'static str> {
    let Some((head, query)) = s.split_once('?') else {
        return Ok((s, None));
    };
    let n = query
        .strip_prefix("version=")
        .ok_or("only \"?version=N\" is supported after the path or key")?;
    match n.parse::<u64>() {
        Ok(0) | Err(_) => Err("version must be a whole number >= 1"),
        Ok(v) => Ok((head, Some(v))),
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.path, self.key)?;
        if let Some(v) = self.version {
            write!(f, "?version={v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for SecretRef {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<SecretRef> {
        SecretRef::parse(s)
    }
}
