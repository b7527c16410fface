//! Talking to other repositories: fetch, `ls-remote` and push through the `git` command with the
//! credentials of the server config's `[sync]` table, and `sync`, which shares deploy records
//! and pointers with a remote so that several deployers (clones, watchers, the server itself)
//! see one history.
//!
//! Network transports are git's and OpenSSH's, not libgit2's: libgit2 is built without them, so
//! no hookops process loads OpenSSL or libssh2 (about 5 ms of every start-up, more than the
//! change detection of a push; see docs/performance.md). Local remotes (paths, `file://`) go
//! through `git` too.
//!
//! SSH host keys are always checked by OpenSSH against a known_hosts file
//! (`StrictHostKeyChecking=yes`), never accepted on first use: a deployer holds cluster
//! credentials, so talking to an impostor remote would let it choose what gets deployed. HTTPS
//! certificates are verified by git (its TLS library, the system CAs or `http.sslCAInfo`).
//! Tokens reach git only through the environment of one child, read back by a one-shot
//! credential helper: never in an argument, a URL, a log line, an error message or a file.
//!
//! The user's git configuration applies (`url.*.insteadOf`, `http.sslCAInfo`, proxies), as it
//! does to a hand-run `git fetch`; settings that would change what these commands do to the
//! repository (tag pruning, maintenance, pre-push hooks, followed tags) are overridden.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use git2::Repository;

use crate::backends::mask::Masker;
use crate::backends::process;
use crate::backends::repo::Session;
use crate::config;
use crate::record::notes::{self, NOTES_REF};

/// Where `sync` fetches the remote's notes before merging them into ours.
pub const REMOTE_NOTES_REF: &str = "refs/hookops/remote-notes";

/// Environment variable holding an HTTPS token when `[sync] token_file` is not set.
pub const TOKEN_ENV: &str = "HOOKOPS_GIT_TOKEN";

/// Fetch–merge–push rounds before `sync` gives up on a remote whose notes keep moving.
const SYNC_TRIES: u32 = 5;

/// What git is needed for, in the error for a machine without it.
const GIT_NEEDED_FOR: &str = "hookops fetches and pushes with the git command";

/// The credential helper that hands git the token: it answers `get` from the two variables set
/// in that git child's environment only, and ignores `store` and `erase`.
const CREDENTIAL_HELPER: &str = "credential.helper=!f() { test \"$1\" = get || exit 0; \
    printf \"username=%s\\npassword=%s\\n\" \"${HOOKOPS_GIT_USERNAME}\" \"${HOOKOPS_GIT_TOKEN}\"; }; f";

/// Settings for every git run: no gc or maintenance inside a hook, never an interactive
/// credential prompt, and an HTTP transfer slower than 1 KB/s for two minutes is dead.
const GIT_SETTINGS: &[&str] = &[
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "credential.interactive=false",
    "-c",
    "http.lowSpeedLimit=1000",
    "-c",
    "http.lowSpeedTime=120",
];

/// Lines git adds to every failed connection; they never say what went wrong.
const BOILERPLATE: &[&str] = &[
    "fatal: Could not read from remote repository.",
    "Please make sure you have the correct access rights",
    "and the repository exists.",
    "Host key verification failed.",
];

/// What git says when a server asks for credentials that nothing provides (prompts are off;
/// the last one is `credential.interactive=false`, git 2.46 and later).
const PROMPTS: &[&str] = &[
    "could not read Username",
    "could not read Password",
    "unable to get password from user",
];

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

const SSH_SCHEMES: [&str; 3] = ["ssh://", "git+ssh://", "ssh+git://"];

fn transport(url: &str) -> Transport {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = SSH_SCHEMES
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

/// The user and password in a URL's authority, if any.
fn userinfo(url: &str) -> (Option<&str>, Option<&str>) {
    let Some(scheme_end) = url.find("://") else {
        return (None, None);
    };
    let rest = &url[scheme_end + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rsplit_once('@') {
        Some((info, _)) => match info.split_once(':') {
            Some((user, password)) => (Some(user), Some(password)),
            None => (Some(info), None),
        },
        None => (None, None),
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

/// An SSH URL as handed to git: with the user `git` when it names none (OpenSSH would log in
/// as the local user; forges all expect `git`, and hookops always defaulted to it).
fn with_ssh_user(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    if let Some(scheme) = SSH_SCHEMES.iter().find(|s| lower.starts_with(*s)) {
        let rest = &url[scheme.len()..];
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return url.to_string();
        }
        return format!("{}git@{rest}", &url[..scheme.len()]);
    }
    let colon = url.find(':').unwrap_or(0);
    if url[..colon].contains('@') {
        url.to_string()
    } else {
        format!("git@{url}")
    }
}

/// `'…'` for sh (`GIT_SSH_COMMAND` is run by a shell).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A file name as one ssh_config value: double-quoted (ssh splits values at spaces) with `%`
/// doubled (ssh expands `%` tokens in file names).
fn ssh_file_value(p: &Path) -> String {
    let s = p
        .to_string_lossy()
        .replace('%', "%%")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("\"{s}\"")
}

/// `-o Key="value"`, quoted for sh.
fn ssh_file_option(key: &str, p: &Path) -> String {
    format!("-o {}", sh_quote(&format!("{key}={}", ssh_file_value(p))))
}

/// The OpenSSH command git runs for SSH remotes: batch mode (no prompt of any kind), host keys
/// only from `known_hosts` and checked strictly, a connect timeout and keepalives (a dead
/// connection fails within about two minutes), and either `[sync] ssh_key` alone or the agent.
fn ssh_command(known_hosts: &Path, key: Option<&Path>) -> String {
    let mut c = format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes {} -o GlobalKnownHostsFile=/dev/null \
         -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=8",
        ssh_file_option("UserKnownHostsFile", known_hosts)
    );
    if let Some(key) = key {
        c.push_str(&format!(
            " {} -o IdentitiesOnly=yes -o IdentityAgent=none",
            ssh_file_option("IdentityFile", key)
        ));
    }
    c
}

/// The user name sent with an HTTPS token: the URL's, else `x-access-token`, which GitHub
/// requires for app and fine-grained tokens and which GitLab (any name with a token) and
/// Gitea (any name) accept.
fn https_username(from_url: Option<&str>) -> &str {
    from_url
        .filter(|u| !u.is_empty())
        .unwrap_or("x-access-token")
}

/// `git --version`, for `hookops doctor`.
pub fn git_version() -> Result<String> {
    let out = process::Command::from_path("git", GIT_NEEDED_FOR)
        .arg("--version")
        .env("LC_ALL", "C")
        .run(&Masker::new())?;
    if !out.success() {
        bail!("git --version: {}", out.reason());
    }
    Ok(process::first_line(&out.stdout).unwrap_or_default())
}

/// One network operation on `url`: how git is run for it, and how its failures are told.
struct Git<'a> {
    repo: &'a Repository,
    /// The URL as configured.
    url: &'a str,
    /// The URL handed to git (an SSH URL gets a user, see `with_ssh_user`).
    target: String,
    shown: String,
    creds: &'a Creds,
    transport: Transport,
    known_hosts: PathBuf,
    masker: Masker,
}

impl<'a> Git<'a> {
    fn new(repo: &'a Repository, url: &'a str, creds: &'a Creds) -> Result<Git<'a>> {
        let transport = transport(url);
        let shown = display_url(url);
        let ssh = matches!(transport, Transport::Ssh { .. });
        let known_hosts = match creds.known_hosts_path() {
            Ok(p) => p,
            Err(e) if ssh => return Err(e.context(format!("connecting to {shown}"))),
            // Only an `insteadOf` rewrite could make this an SSH URL: then nothing is trusted.
            Err(_) => PathBuf::from("/dev/null"),
        };
        if let (true, Some(key)) = (ssh, &creds.ssh_key) {
            std::fs::File::open(key)
                .with_context(|| format!("reading [sync] ssh_key {}", key.display()))?;
        }
        let mut masker = Masker::new();
        if let Some(token) = &creds.token {
            masker.add(token);
        }
        if let (_, Some(password)) = userinfo(url) {
            masker.add(password);
        }
        Ok(Git {
            repo,
            url,
            target: if ssh {
                with_ssh_user(url)
            } else {
                url.to_string()
            },
            shown,
            creds,
            transport,
            known_hosts,
            masker,
        })
    }

    /// The token, when this operation sends one (HTTPS only).
    fn token(&self) -> Option<&str> {
        match self.transport {
            Transport::Https => self.creds.token.as_deref(),
            _ => None,
        }
    }

    fn command(&self, args: &[&str]) -> process::Command {
        let mut c = process::Command::from_path("git", GIT_NEEDED_FOR)
            .arg("--git-dir")
            .arg(self.repo.path())
            .args(GIT_SETTINGS);
        if self.token().is_some() {
            // Only ours: a helper from the user's config could store the token on disk.
            c = c.args(["-c", "credential.helper=", "-c", CREDENTIAL_HELPER]);
        }
        let key = self.creds.ssh_key.as_deref();
        c = c
            .args(args)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env("GIT_SSH_COMMAND", &ssh_command(&self.known_hosts, key))
            .env("GIT_SSH_VARIANT", "ssh");
        match self.token() {
            Some(token) => c
                .env("HOOKOPS_GIT_USERNAME", https_username(userinfo(self.url).0))
                .env(TOKEN_ENV, token),
            // Not inherited either (it may be where the token came from).
            None => c.env("HOOKOPS_GIT_USERNAME", "").env(TOKEN_ENV, ""),
        }
    }

    /// Runs `git ARGS`; the output comes back masked, with the URL as `display_url` shows it.
    fn run(&self, args: &[&str]) -> Result<process::Output> {
        let shown_args = self.clean(&args.join(" "));
        log::debug!("running git {shown_args}");
        let mut out = self.command(args).run(&self.masker)?;
        out.stdout = self.clean(&out.stdout);
        out.stderr = self.clean(&out.stderr);
        log::debug!(
            "git {}: exit {:?} in {:?}{}{}",
            args.first().unwrap_or(&""),
            out.code,
            out.elapsed,
            if out.stderr.trim().is_empty() {
                ""
            } else {
                ": "
            },
            crate::out::one_line(&out.stderr)
        );
        Ok(out)
    }

    fn clean(&self, text: &str) -> String {
        let text = self.masker.mask(text);
        let text = if self.target != self.url {
            text.replace(&self.target, &self.shown)
        } else {
            text
        };
        if self.shown != self.url {
            text.replace(self.url, &self.shown)
        } else {
            text
        }
    }

    /// The one-line error for a failed git run: what ssh or git said, in hookops' words when
    /// hookops knows better (host keys, credentials), else git's last meaningful line.
    fn error(&self, out: &process::Output, doing: &str) -> anyhow::Error {
        let shown = &self.shown;
        if let Some(why) = self.ssh_problem(&out.stderr) {
            return anyhow!("{doing} {shown}: {why}");
        }
        let text = &out.stderr;
        if PROMPTS.iter().any(|p| text.contains(p)) {
            if self.transport == Transport::Http {
                return anyhow!(
                    "{doing} {shown}: the remote asks for credentials over plain http; hookops \
                     only sends a token over https"
                );
            }
            if self.token().is_none() {
                return anyhow!(
                    "{doing} {shown}: the remote asks for credentials: set [sync] token_file or \
                     {TOKEN_ENV}"
                );
            }
        }
        if text.contains("Authentication failed for") && self.token().is_some() {
            return anyhow!("{doing} {shown}: the token was refused");
        }
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| {
                !l.is_empty()
                    && !l.starts_with("hint:")
                    && !l.starts_with("error: failed to push some refs")
                    && !BOILERPLATE.contains(l)
            })
            .map(|l| {
                l.strip_prefix("fatal: ")
                    .or_else(|| l.strip_prefix("error: "))
                    .unwrap_or(l)
                    .to_string()
            })
            .unwrap_or_else(|| format!("git exited with status {:?}", out.code));
        anyhow!("{doing} {shown}: {line}")
    }

    /// What OpenSSH refused, from its messages (`LC_ALL=C`): host keys and authentication.
    fn ssh_problem(&self, text: &str) -> Option<String> {
        let kh = self.known_hosts.display();
        let missing = if self.known_hosts.exists() {
            ""
        } else {
            " (the file does not exist)"
        };
        // `No ED25519 host key is known for [h]:2222 and you have requested strict checking.`
        if let Some(line) = text.lines().find(|l| l.contains(" host key is known for ")) {
            let (kind, rest) = line.split_once(" host key is known for ")?;
            let kind = kind.trim().strip_prefix("No ").unwrap_or(kind.trim());
            let name = rest.split(" and you have").next().unwrap_or(rest).trim();
            return Some(format!(
                "host {name} is not in known_hosts {kh}{missing} (offered key type {kind}); \
                 add it with `{}` after checking the fingerprint",
                keyscan(name)
            ));
        }
        if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            // `Host key for [h]:2222 has changed and you have requested strict checking.`
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Host key for "))
                .and_then(|r| r.split(" has changed").next())
                .map(str::to_string)
                .unwrap_or_else(|| self.host_name());
            let fp = text
                .split_whitespace()
                .find(|w| w.starts_with("SHA256:"))
                .map(|w| format!(" (offered {})", w.trim_end_matches('.')))
                .unwrap_or_default();
            return Some(format!(
                "host key of {name} does NOT match known_hosts {kh}{fp}: refusing to connect; \
                 if the key was rotated, replace the entry after checking the new fingerprint"
            ));
        }
        if text.contains("REVOKED HOST KEY") || text.contains("is marked as revoked") {
            // `The ED25519 host key for [h]:2222 is marked as revoked.`
            let (kind, name) = text
                .lines()
                .find_map(|l| {
                    let rest = l.trim().strip_prefix("The ")?;
                    let (kind, rest) = rest.split_once(" host key for ")?;
                    let name = rest.split(" is marked as revoked").next()?;
                    Some((kind.to_string(), name.to_string()))
                })
                .unwrap_or_else(|| ("its".to_string(), self.host_name()));
            return Some(format!(
                "host key of {name} ({kind}) is marked @revoked in {kh}: refusing to connect"
            ));
        }
        if text.contains("Host key verification failed.") {
            let said = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('@'))
                .unwrap_or("Host key verification failed.");
            return Some(format!(
                "host key of {} not verified against known_hosts {kh}: {said}",
                self.host_name()
            ));
        }
        let key = self.creds.ssh_key.as_deref();
        if let (true, Some(key)) = (text.contains("UNPROTECTED PRIVATE KEY FILE"), key) {
            return Some(format!(
                "[sync] ssh_key {} is readable by other users, so ssh will not use it \
                 (chmod 600 it)",
                key.display()
            ));
        }
        if let (Some(line), Some(key)) = (text.lines().find(|l| l.starts_with("Load key ")), key) {
            let why = line.rsplit_once(": ").map_or(line, |(_, w)| w);
            return Some(format!(
                "[sync] ssh_key {} cannot be loaded: {why}",
                key.display()
            ));
        }
        // `root@127.0.0.1: Permission denied (publickey).`
        let denied = text.lines().find(|l| l.contains(": Permission denied ("))?;
        let user = denied
            .split(": Permission denied")
            .next()
            .and_then(|who| who.rsplit_once('@'))
            .map(|(user, _)| user.trim().to_string())
            .unwrap_or_else(|| userinfo(&self.target).0.unwrap_or("git").to_string());
        Some(match key {
            Some(key) => format!(
                "SSH authentication as {user} with [sync] ssh_key {} was refused",
                key.display()
            ),
            None if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty()) => format!(
                "SSH authentication as {user} was refused: no [sync] ssh_key and no ssh-agent \
                 (SSH_AUTH_SOCK is not set)"
            ),
            None => format!("SSH authentication as {user} with the ssh-agent's keys was refused"),
        })
    }

    /// The remote's name as known_hosts spells it: bare on port 22, `[host]:port` otherwise.
    fn host_name(&self) -> String {
        match &self.transport {
            Transport::Ssh { host, port: 22 } => host.clone(),
            Transport::Ssh { host, port } => format!("[{host}]:{port}"),
            _ => self.shown.clone(),
        }
    }
}

/// The command that prints the key of a host named as in known_hosts.
fn keyscan(name: &str) -> String {
    match name.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((host, port)) => format!("ssh-keyscan -p {port} {host}"),
        None => format!("ssh-keyscan {name}"),
    }
}

/// `[+]src:dst` split into its sides.
fn refspec_sides(spec: &str) -> (&str, &str) {
    let spec = spec.strip_prefix('+').unwrap_or(spec);
    spec.split_once(':').unwrap_or((spec, spec))
}

/// Fetches `refspecs` from `url` into `repo`; refs that vanished from the remote are pruned
/// from their destinations.
pub fn fetch(repo: &Repository, url: &str, refspecs: &[&str], creds: &Creds) -> Result<()> {
    let git = Git::new(repo, url, creds)?;
    let mut specs: Vec<&str> = refspecs.to_vec();
    while !specs.is_empty() {
        let mut args = vec![
            "fetch",
            "--quiet",
            "--prune",
            "--no-prune-tags",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--end-of-options",
            &git.target,
        ];
        args.extend(&specs);
        let out = git.run(&args)?;
        if out.success() {
            return Ok(());
        }
        // git fails the whole fetch when a named ref does not exist on the remote (libgit2
        // skipped it): that ref's destination goes, as a pruned ref would, and the rest is
        // fetched again.
        let Some(missing) = out
            .stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("fatal: couldn't find remote ref "))
        else {
            return Err(git.error(&out, "fetching from"));
        };
        let before = specs.len();
        let mut gone = Vec::new();
        specs.retain(|s| {
            let (src, dst) = refspec_sides(s);
            if src == missing {
                gone.push(dst.to_string());
            }
            src != missing
        });
        if specs.len() == before {
            return Err(git.error(&out, "fetching from"));
        }
        for dst in gone {
            if let Ok(mut r) = repo.find_reference(&dst) {
                r.delete()
                    .with_context(|| format!("deleting {dst}, gone from {}", git.shown))?;
            }
        }
    }
    Ok(())
}

/// The branch the remote's HEAD names (`refs/heads/main`), if it advertises one.
pub fn remote_head(repo: &Repository, url: &str, creds: &Creds) -> Result<Option<String>> {
    let git = Git::new(repo, url, creds)?;
    let out = git.run(&[
        "ls-remote",
        "--symref",
        "--end-of-options",
        &git.target,
        "HEAD",
    ])?;
    if !out.success() {
        return Err(git.error(&out, "connecting to"));
    }
    // `ref: refs/heads/main<TAB>HEAD`
    Ok(out.stdout.lines().find_map(|l| {
        l.strip_prefix("ref: ")?
            .strip_suffix("\tHEAD")
            .map(str::to_string)
    }))
}

/// A push the remote refused (or git refused before sending, as not a fast-forward).
/// Callers branch on it: a rejected notes ref is retried after merging.
#[derive(Debug)]
pub struct Rejected {
    /// (ref, reason); the ref is empty when git did not say which one.
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

/// The refused refs in `git push --porcelain` output: `!<TAB>src:dst<TAB>[rejected] (why)`.
fn rejected_refs(porcelain: &str) -> Vec<(String, String)> {
    porcelain
        .lines()
        .filter_map(|l| {
            let mut fields = l.split('\t');
            if fields.next()? != "!" {
                return None;
            }
            let (_, dst) = refspec_sides(fields.next()?);
            let summary = fields.next().unwrap_or("").trim();
            // `[rejected] (fetch first)`, `[remote rejected] (pre-receive hook declined)`
            let (kind, why) = match summary.split_once("] ") {
                Some((k, w)) => (
                    k.trim_start_matches('['),
                    w.trim_start_matches('(').trim_end_matches(')'),
                ),
                None => (summary.trim_matches(['[', ']']), ""),
            };
            let reason = match (kind, why) {
                ("rejected", w) if !w.is_empty() => w.to_string(),
                (k, "") => k.to_string(),
                (k, w) => format!("{k}: {w}"),
            };
            Some((dst.to_string(), reason))
        })
        .collect()
}

/// Pushes `refspecs` to `url`; a refused ref is a `Rejected` error.
pub fn push(repo: &Repository, url: &str, refspecs: &[&str], creds: &Creds) -> Result<()> {
    let git = Git::new(repo, url, creds)?;
    // Nothing but the refs asked for: no pre-push hook of a clone, no followed tags, no
    // submodules, no signing, whatever the user's config says.
    let mut args = vec![
        "push",
        "--porcelain",
        "--no-verify",
        "--no-follow-tags",
        "--no-signed",
        "--recurse-submodules=no",
        "--end-of-options",
        &git.target,
    ];
    args.extend(refspecs);
    let out = git.run(&args)?;
    let refs = rejected_refs(&out.stdout);
    if !refs.is_empty() {
        return Err(Rejected {
            refs,
            url: git.shown.clone(),
        }
        .into());
    }
    if !out.success() {
        return Err(git.error(&out, "pushing to"));
    }
    Ok(())
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

/// Where a peer's refs are fetched to: `refs/hookops/peers/<12 hex of its URL>/`.
fn peer_prefix(url: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("refs/hookops/peers/{hex}")
}

/// The refs holding the peers' deployed pointers of `env` (glob patterns).
pub fn peer_pointer_globs(env: &str) -> Vec<String> {
    vec![format!("refs/hookops/peers/*/deployed/{env}")]
}

/// `[sync] peers`: fetches every peer's records and deployed pointers (never pushes: hookops
/// refuses pushes to its refs) and union-merges the records into ours. The pointers land
/// under `refs/hookops/peers/`, for `pipeline::hosts::follow_pointer`.
pub fn fetch_peers(session: &Session) -> Result<()> {
    let creds = Creds::from_config(&session.config.sync)?;
    let repo = &session.repo;
    for peer in &session.config.sync.peers {
        let url = remote_url(repo, peer)?;
        let prefix = peer_prefix(&url);
        let notes = format!("{prefix}/notes");
        let specs = [
            format!("+{NOTES_REF}:{notes}"),
            format!("+{}:{prefix}/deployed/*", config::pointer_ref("*")),
        ];
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        fetch(repo, &url, &specs, &creds)
            .with_context(|| format!("fetching records from peer {}", display_url(&url)))?;
        if let Ok(theirs) = repo.refname_to_id(&notes) {
            notes::merge_union(repo, theirs).with_context(|| {
                format!(
                    "merging the notes of {} into {NOTES_REF}",
                    display_url(&url)
                )
            })?;
        }
    }
    Ok(())
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
        // Pointers and inventories (forced: a rollback legitimately moves a pointer back).
        for glob in [config::pointer_ref("*"), crate::config::inventory_ref("*")] {
            for r in repo
                .references_glob(&glob)
                .with_context(|| format!("listing {glob}"))?
            {
                let r = r.with_context(|| format!("reading {glob}"))?;
                if let Some(name) = r.name() {
                    specs.push(format!("+{name}:{name}"));
                }
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
        assert_eq!(userinfo("https://oauth2@h/r"), (Some("oauth2"), None));
        assert_eq!(userinfo("https://u:pw@h/r"), (Some("u"), Some("pw")));
        assert_eq!(userinfo("https://h/r@x"), (None, None));
    }

    #[test]
    fn ssh_urls_get_a_user() {
        assert_eq!(with_ssh_user("ssh://h:2222/r"), "ssh://git@h:2222/r");
        assert_eq!(with_ssh_user("ssh://me@h/r"), "ssh://me@h/r");
        assert_eq!(
            with_ssh_user("github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(with_ssh_user("me@h:r@x"), "me@h:r@x");
    }

    #[test]
    fn ssh_command_survives_the_shell_and_ssh_config_parsing() {
        let c = ssh_command(
            Path::new("/k h/it's 100%/known_hosts"),
            Some(Path::new("/k h/id \"x\"")),
        );
        // What sh hands ssh: one argument per option, values quoted for ssh_config(5).
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '%s\\n' {}", &c["ssh ".len()..])])
            .output()
            .unwrap();
        let args: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            args.contains(&r#"UserKnownHostsFile="/k h/it's 100%%/known_hosts""#.to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&r#"IdentityFile="/k h/id \"x\"""#.to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"StrictHostKeyChecking=yes".to_string()));
        assert!(args.contains(&"IdentityAgent=none".to_string()));
        assert!(!ssh_command(Path::new("/kh"), None).contains("Identit"));
    }

    #[test]
    fn porcelain_rejections() {
        let out =
            "To /srv/up.git\n*\trefs/hookops/deployed/a:refs/hookops/deployed/a\t[new reference]\n\
                   !\trefs/notes/hookops:refs/notes/hookops\t[rejected] (fetch first)\n\
                   !\trefs/heads/x:refs/heads/y\t[remote rejected] (pre-receive hook declined)\n\
                   !\t:refs/heads/z\t[rejected] (non-fast-forward)\nDone\n";
        assert_eq!(
            rejected_refs(out),
            vec![
                ("refs/notes/hookops".into(), "fetch first".into()),
                (
                    "refs/heads/y".into(),
                    "remote rejected: pre-receive hook declined".into()
                ),
                ("refs/heads/z".into(), "non-fast-forward".into()),
            ]
        );
        assert!(rejected_refs("To x\n=\ta:a\t[up to date]\nDone\n").is_empty());
    }

    fn failed(stderr: &str) -> process::Output {
        process::Output {
            code: Some(128),
            stdout: String::new(),
            stderr: stderr.to_string(),
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn errors_in_our_words() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path().join("r.git")).unwrap();
        let kh = tmp.path().join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        let creds = Creds {
            ssh_key: Some(tmp.path().join("r.git/HEAD")),
            known_hosts: Some(kh.clone()),
            token: Some("s3cret-token".into()),
        };
        let url = "ssh://127.0.0.1:2222/srv/r.git";
        let git = Git::new(&repo, url, &creds).unwrap();
        assert_eq!(git.target, "ssh://git@127.0.0.1:2222/srv/r.git");
        let e = |stderr: &str| format!("{:#}", git.error(&failed(stderr), "fetching from"));
        let kh = kh.display();

        let unknown = e("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\n\
                         Host key verification failed.\r\nfatal: Could not read from remote repository.\n\n\
                         Please make sure you have the correct access rights\nand the repository exists.\n");
        assert_eq!(
            unknown,
            format!(
                "fetching from {url}: host [127.0.0.1]:2222 is not in known_hosts {kh} (offered \
                 key type ED25519); add it with `ssh-keyscan -p 2222 127.0.0.1` after checking \
                 the fingerprint"
            )
        );
        let changed = e("@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                         The fingerprint for the ED25519 key sent by the remote host is\n\
                         SHA256:FkHScdSmhnpH6oI4kmb5N08/xtcHeGKLFSv32OU28EA.\n\
                         Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n\
                         Host key verification failed.\n");
        assert!(
            changed.contains(&format!(
                "host key of [127.0.0.1]:2222 does NOT match known_hosts {kh} (offered \
                 SHA256:FkHScdSmhnpH6oI4kmb5N08/xtcHeGKLFSv32OU28EA)"
            )),
            "{changed}"
        );
        let revoked = e(
            "@       WARNING: REVOKED HOST KEY DETECTED!               @\n\
                         The ED25519 host key for [127.0.0.1]:2222 is marked as revoked.\n\
                         Host key verification failed.\n",
        );
        assert!(
            revoked.contains(&format!(
                "host key of [127.0.0.1]:2222 (ED25519) is marked @revoked in {kh}"
            )),
            "{revoked}"
        );
        let denied = e("root@127.0.0.1: Permission denied (publickey).\r\n\
                        fatal: Could not read from remote repository.\n");
        assert!(
            denied.ends_with(&format!(
                "{url}: SSH authentication as root with [sync] ssh_key {} was refused",
                tmp.path().join("r.git/HEAD").display()
            )),
            "{denied}"
        );
        assert_eq!(
            e(
                "ssh: connect to host 127.0.0.1 port 2222: Connection refused\r\n\
               fatal: Could not read from remote repository.\n\n\
               Please make sure you have the correct access rights\nand the repository exists.\n"
            ),
            format!(
                "fetching from {url}: ssh: connect to host 127.0.0.1 port 2222: Connection refused"
            )
        );

        let url = "https://u:pw-in-url@git.example.com/r.git";
        let git = Git::new(&repo, url, &creds).unwrap();
        let e =
            |stderr: &str| format!("{:#}", git.error(&failed(&git.clean(stderr)), "pushing to"));
        let shown = "https://u:***@git.example.com/r.git";
        assert_eq!(
            e("fatal: Authentication failed for 'https://u:pw-in-url@git.example.com/r.git/'\n"),
            format!("pushing to {shown}: the token was refused")
        );
        let other = e("remote: s3cret-token is wrong\nfatal: unable to access 'https://u:pw-in-url@git.example.com/r.git/': \
                       The requested URL returned error: 500\n");
        assert_eq!(
            other,
            format!("pushing to {shown}: unable to access '{shown}/': The requested URL returned error: 500")
        );
        let no_token = Creds::default();
        let git = Git::new(&repo, "http://h/r", &no_token).unwrap();
        let e = format!(
            "{:#}",
            git.error(
                &failed(
                    "fatal: could not read Username for 'http://h': terminal prompts disabled\n"
                ),
                "fetching from"
            )
        );
        assert!(
            e.ends_with(
                "asks for credentials over plain http; hookops only sends a token over https"
            ),
            "{e}"
        );
        let git = Git::new(&repo, "https://h/r", &no_token).unwrap();
        let e = format!(
            "{:#}",
            git.error(
                &failed("fatal: unable to get password from user\n"),
                "fetching from"
            )
        );
        assert!(
            e.ends_with("asks for credentials: set [sync] token_file or HOOKOPS_GIT_TOKEN"),
            "{e}"
        );
    }

    #[test]
    fn fetch_skips_and_prunes_refs_the_remote_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let path = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
        let up = Repository::init_bare(path("up.git")).unwrap();
        let local = Repository::init_bare(path("local.git")).unwrap();
        let sig = git2::Signature::now("t", "t@example.test").unwrap();
        let tree = up
            .find_tree(up.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let c = up
            .commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        let blob = local.blob(b"x").unwrap();
        let ltree = {
            let mut b = local.treebuilder(None).unwrap();
            b.insert("x", blob, 0o100644).unwrap();
            local.find_tree(b.write().unwrap()).unwrap()
        };
        let stale = local
            .commit(Some("refs/heads/gone"), &sig, &sig, "s", &ltree, &[])
            .unwrap();
        assert_ne!(stale, c);
        fetch(
            &local,
            &path("up.git"),
            &[
                "+refs/heads/gone:refs/heads/gone",
                "+refs/heads/main:refs/heads/main",
                "+refs/notes/none:refs/hookops/none",
            ],
            &Creds::default(),
        )
        .unwrap();
        assert_eq!(local.refname_to_id("refs/heads/main").unwrap(), c);
        assert!(local.find_reference("refs/heads/gone").is_err());
        up.set_head("refs/heads/main").unwrap();
        assert_eq!(
            remote_head(&local, &path("up.git"), &Creds::default()).unwrap(),
            Some("refs/heads/main".to_string())
        );
        Repository::init_bare(path("empty.git")).unwrap();
        assert_eq!(
            remote_head(&local, &path("empty.git"), &Creds::default()).unwrap(),
            None
        );
        // Nothing left to fetch is not an error either.
        fetch(
            &local,
            &path("up.git"),
            &["+refs/notes/none:refs/hookops/none"],
            &Creds::default(),
        )
        .unwrap();
        let e = fetch(
            &local,
            &path("nowhere.git"),
            &["+refs/heads/main:refs/heads/main"],
            &Creds::default(),
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "fetching from {}: '{}' does not appear to be a git repository",
                path("nowhere.git"),
                path("nowhere.git")
            )
        );
    }
}
