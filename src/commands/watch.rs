//! `hookops watch`: GitOps for repositories whose server cannot run hooks (GitHub, GitLab,
//! Gitea). A bare mirror at `--repo` follows branches of `--remote` by polling (and, with
//! `--listen`, on push webhooks); every followed branch whose tip moved goes through the same
//! pipeline as a post-receive hook, so records, pointers and self-healing behave the same.
//!
//! Which tip was last handed to the pipeline is kept per branch in
//! `refs/hookops/watch/<branch>` (written after the deploy attempt), not inferred from the
//! fetch, so a watcher killed between fetch and deploy picks the commit up when it restarts,
//! and a rollback done by hand in the mirror is not undone by the next poll.

use std::fs::{File, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use git2::{ErrorCode, Oid, Repository};

use crate::backends::remote::{self, display_url, Creds};
use crate::backends::repo::Session;
use crate::cli::WatchArgs;
use crate::config::STATE_DIR;
use crate::out::say;
use crate::pipeline::refs::RefUpdate;

/// Longest wait between attempts while the remote is unreachable (unless the interval itself
/// is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Sleeps are cut into slices this long so that signals and webhooks are noticed promptly.
const SLICE: Duration = Duration::from_millis(50);

pub fn run(repo: Option<&Path>, args: &WatchArgs) -> Result<ExitCode> {
    let mirror = match repo {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("GIT_DIR")
            .map(PathBuf::from)
            .context("watch needs --repo MIRROR: the bare mirror it keeps and deploys from")?,
    };
    let interval = parse_duration(&args.interval)
        .with_context(|| format!("--interval {:?}", args.interval))?;
    let secret = match (&args.listen, &args.webhook_secret_file) {
        (Some(_), None) => bail!("--listen needs --webhook-secret-file"),
        (_, Some(path)) => Some(read_secret(path)?),
        (None, None) => None,
    };
    let _lock = lock(&mirror)?;
    init_mirror(&mirror, &args.remote)?;
    let session = Session::open(Some(&mirror))?;
    let creds = Creds::from_config(&session.config.sync)?;
    // A dead connection does not hang the watcher: remote.rs runs git with HTTP low-speed limits
    // and ssh with a connect timeout and keepalives.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The first signal asks for a clean stop after the current deploy; a second one exits
        // at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("installing a signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing a signal handler")?;
    }
    let wake = Arc::new(AtomicBool::new(false));
    if let (Some(addr), Some(secret)) = (&args.listen, secret) {
        // `[web] serve`: GET / answers with the status page.
        let page = session.config.web.serve.then(|| session.git_dir.clone());
        let bound = crate::commands::webhook::serve(addr, secret, Arc::clone(&wake), page)?;
        say(&format!("watch: listening on {bound}"));
    }
    let mut w = Watcher {
        session,
        creds,
        url: args.remote.clone(),
        explicit: args.branch.iter().map(|b| full_branch(b)).collect(),
        head: None,
        sync_pending: false,
        stop: Arc::clone(&stop),
    };
    if args.once {
        return w.poll().map(|p| match p {
            Polled::Failed => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        });
    }
    w.run_loop(interval, &args.interval, &wake);
    say("watch: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `30s`, `5m`, `1h`, `500ms`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("expected a duration like 30s, 5m, 1h or 500ms, got {text:?}"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => bail!("unknown unit {unit:?} in {text:?} (use ms, s, m or h)"),
    };
    if d < Duration::from_millis(100) {
        bail!("{text:?} is too short: at least 100ms");
    }
    Ok(d)
}

/// The wait after `failures` consecutive failed fetches: the interval while the remote
/// answers, doubling while it does not, up to ten intervals or five minutes (never below the
/// interval).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max((interval * 10).min(MAX_BACKOFF));
    interval.saturating_mul(1u32 << failures.min(20)).min(cap)
}

/// ±10%, so that many watchers started together do not poll a forge in lockstep.
fn jitter(d: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let permille = 900 + r % 201;
    d * permille as u32 / 1000
}

fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path)
        .with_context(|| format!("reading --webhook-secret-file {}", path.display()))?;
    let secret = text.trim_ascii_end().to_vec();
    if secret.is_empty() {
        bail!("--webhook-secret-file {} is empty", path.display());
    }
    Ok(secret)
}

/// One watcher per mirror: two would fetch over each other and deploy every commit twice.
fn lock(mirror: &Path) -> Result<File> {
    let (file, path) = crate::backends::repo::lock_file(&mirror.join(STATE_DIR), "watch.lock")?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            bail!("another hookops watch is running on {}", mirror.display())
        }
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Creates the bare mirror if needed and points its `origin` at `url`, so that `[sync]` (and
/// an operator's `git fetch`) reach the same remote.
fn init_mirror(mirror: &Path, url: &str) -> Result<()> {
    if mirror.join(".git").exists() {
        bail!(
            "{} is a working clone; watch keeps a bare mirror (use a new directory)",
            mirror.display()
        );
    }
    let repo = match Repository::open_bare(mirror) {
        Ok(r) => r,
        Err(e) if e.code() == ErrorCode::NotFound => Repository::init_bare(mirror)
            .with_context(|| format!("creating the mirror {}", mirror.display()))?,
        Err(e) => {
            return Err(e).with_context(|| format!("opening the mirror {}", mirror.display()))
        }
    };
    let current = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().map(str::to_string));
    match current {
        Some(u) if u == url => {}
        Some(u) => {
            say(&format!(
                "watch: mirror origin was {}; now {}",
                display_url(&u),
                display_url(url)
            ));
            repo.remote_set_url("origin", url)
                .context("setting the mirror's origin URL")?;
        }
        None => {
            // No fetch refspec: watch fetches exactly the branches it follows.
            repo.remote_with_fetch("origin", url, "+refs/heads/*:refs/heads/*")
                .context("adding the mirror's origin remote")?;
        }
    }
    Ok(())
}

fn full_branch(b: &str) -> String {
    if b.starts_with("refs/") {
        b.to_string()
    } else {
        format!("refs/heads/{b}")
    }
}

/// Where the tip last handed to the pipeline is kept for `branch`.
fn seen_ref(branch: &str) -> String {
    format!(
        "refs/hookops/watch/{}",
        branch.strip_prefix("refs/").unwrap_or(branch)
    )
}

enum Polled {
    Nothing,
    Deployed,
    Failed,
}

struct Watcher {
    session: Session,
    creds: Creds,
    url: String,
    /// `--branch` values as full ref names.
    explicit: Vec<String>,
    /// The remote's HEAD branch, once learned (used when nothing else names branches).
    head: Option<String>,
    /// A deploy failed with `[sync] push`: its records may not have reached the remote yet.
    sync_pending: bool,
    /// Set by SIGTERM/SIGINT: a deploy that has started finishes, no new one starts.
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn repo(&self) -> &Repository {
        &self.session.repo
    }

    /// `--branch`, else the environments' branches, else the remote's HEAD branch (which the
    /// mirror's HEAD then follows, so the implicit `default` environment deploys it).
    fn branches(&mut self) -> Result<Vec<String>> {
        if !self.explicit.is_empty() {
            return Ok(self.explicit.clone());
        }
        if !self.session.config.environment.is_empty() {
            let mut refs: Vec<String> = self
                .session
                .config
                .environment
                .iter()
                .map(|e| e.ref_name())
                .collect();
            refs.sort();
            refs.dedup();
            return Ok(refs);
        }
        if self.head.is_none() {
            let head = remote::remote_head(self.repo(), &self.url, &self.creds)?;
            if let Some(h) = &head {
                self.repo()
                    .set_head(h)
                    .with_context(|| format!("pointing the mirror's HEAD at {h}"))?;
            }
            self.head = head;
        }
        Ok(self.head.iter().cloned().collect())
    }

    /// Fetches the followed branches; an error means the remote could not be reached.
    fn fetch(&mut self) -> Result<Vec<String>> {
        let branches = self.branches()?;
        if branches.is_empty() {
            return Ok(branches);
        }
        let specs: Vec<String> = branches.iter().map(|b| format!("+{b}:{b}")).collect();
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        remote::fetch(self.repo(), &self.url, &specs, &self.creds)?;
        Ok(branches)
    }

    /// One round: fetch, then deploy every branch whose tip moved since it was last handled.
    fn poll(&mut self) -> Result<Polled> {
        let branches = self.fetch()?;
        if self.stop.load(Ordering::SeqCst) {
            // Not marked handled: the next start deploys what this fetch brought.
            return Ok(Polled::Nothing);
        }
        let mut updates = Vec::new();
        for b in &branches {
            let tip = self.repo().refname_to_id(b).ok();
            let seen = self.repo().refname_to_id(&seen_ref(b)).ok();
            if tip != seen {
                updates.push(RefUpdate {
                    old: seen,
                    new: tip,
                    name: b.clone(),
                });
            }
        }
        if updates.is_empty() {
            self.retry_sync();
            return Ok(Polled::Nothing);
        }
        let ok = match crate::commands::hooks::deploy_updates(
            &self.session,
            &updates,
            false,
            &Default::default(),
        ) {
            Ok(code) => code == ExitCode::SUCCESS,
            Err(e) => {
                // Nothing was attempted (e.g. an unreadable signing key): try again next round
                // rather than marking the commits handled.
                say(&format!("watch: error: {}", crate::out::error_line(&e)));
                return Ok(Polled::Failed);
            }
        };
        for u in &updates {
            self.mark_seen(&u.name, u.new)?;
        }
        self.sync_pending = !ok && self.session.config.sync.push;
        Ok(if ok { Polled::Deployed } else { Polled::Failed })
    }

    fn mark_seen(&self, branch: &str, tip: Option<Oid>) -> Result<()> {
        let name = seen_ref(branch);
        match tip {
            Some(oid) => {
                self.repo()
                    .reference(&name, oid, true, "hookops watch: handled")
                    .with_context(|| format!("updating {name}"))?;
            }
            None => {
                if let Ok(mut r) = self.repo().find_reference(&name) {
                    r.delete().with_context(|| format!("deleting {name}"))?;
                }
            }
        }
        Ok(())
    }

    /// Records written while the remote refused them are pushed once it accepts again.
    fn retry_sync(&mut self) {
        if !self.sync_pending {
            return;
        }
        match remote::sync(&self.session) {
            Ok(()) => {
                self.sync_pending = false;
                say("watch: sync: records pushed");
            }
            Err(e) => log::info!("sync retry failed: {}", crate::out::error_line(&e)),
        }
    }

    fn run_loop(&mut self, interval: Duration, shown: &str, wake: &AtomicBool) {
        let stop = Arc::clone(&self.stop);
        let url = display_url(&self.url);
        let mut failures: u32 = 0;
        let mut announced = false;
        while !stop.load(Ordering::SeqCst) {
            wake.store(false, Ordering::SeqCst);
            match self.poll() {
                Ok(_) => {
                    if failures > 0 {
                        say(&format!("watch: {url} is reachable again"));
                    }
                    failures = 0;
                }
                Err(e) => {
                    if failures == 0 {
                        say(&format!(
                            "watch: {url} is unreachable: {}; retrying with backoff (at most every {:?})",
                            crate::out::error_line(&e),
                            backoff(interval, u32::MAX)
                        ));
                    } else {
                        log::debug!("{url} still unreachable: {e:#}");
                    }
                    failures = failures.saturating_add(1);
                }
            }
            if !announced && failures == 0 {
                announced = true;
                let branches = self.branches().unwrap_or_default().join(", ");
                say(&format!(
                    "watch: following {branches} on {url} every {shown}"
                ));
            }
            sleep(jitter(backoff(interval, failures)), &stop, wake);
        }
    }
}

/// Sleeps until `d` passed, a stop was asked for, or a webhook arrived.
fn sleep(d: Duration, stop: &AtomicBool, wake: &AtomicBool) {
    let deadline = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) || wake.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(SLICE.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "s", "5d", "-1s", "10ms", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let i = Duration::from_secs(30);
        assert_eq!(backoff(i, 0), i);
        assert_eq!(backoff(i, 1), Duration::from_secs(60));
        assert_eq!(backoff(i, 30), MAX_BACKOFF);
        let short = Duration::from_millis(200);
        assert_eq!(backoff(short, 30), Duration::from_secs(2));
        let long = Duration::from_secs(3600);
        assert_eq!(backoff(long, 5), long);
        for _ in 0..100 {
            let j = jitter(i);
            assert!(
                j >= Duration::from_secs(27) && j <= Duration::from_secs(33),
                "{j:?}"
            );
        }
    }

    #[test]
    fn seen_refs() {
        assert_eq!(seen_ref("refs/heads/main"), "refs/hookops/watch/heads/main");
        assert_eq!(full_branch("main"), "refs/heads/main");
    }
}
