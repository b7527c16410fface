//! The status page: what is deployed where, at a glance. One self-contained HTML file (no
//! external scripts, fonts or styles) rendered only from what git already holds: the records
//! under `refs/notes/hookops`, the deployed pointers, the inventories and the branches.
//!
//! `collect` reads the repository into a `Page` (the only part that touches git), `html`
//! renders it (pure), `refresh` rewrites `[web] page` after deploys, rollbacks and drift
//! checks, `status_html` is `hookops status --html`, and `serve` answers `GET /` for
//! `watch --listen`. docs/status-page.md describes the page and what it costs.

mod html;
pub mod serve;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

pub use html::render;

use crate::backends::repo::Session;
use crate::record::notes;
use crate::record::payload::{Action, Report};
use crate::record::{self, AllowedSigners, ParsedRecord, Verdict};
use std::ffi::OsStr;

/// Everything the page shows, read from the repository.
#[derive(Debug, Clone)]
pub struct Page {
    /// The repository's name (its directory), for the title.
    pub title: String,
    pub generated_at: String,
    pub envs: Vec<EnvView>,
    /// `[web] commit_url`.
    pub commit_url: Option<String>,
    /// Whether signatures were checked against an allowed_signers file.
    pub signers: bool,
    /// Readable records in the repository, all environments.
    pub records: usize,
    /// Notes or records that could not be read (corrupt notes, foreign text).
    pub unreadable: usize,
}

/// One environment's row and timeline.
#[derive(Debug, Clone)]
pub struct EnvView {
    pub name: String,
    /// The full ref name it follows.
    pub branch: String,
    pub tip: Option<Oid>,
    pub deployed: Option<CommitInfo>,
    /// Commits on the branch not reachable from the pointer.
    pub pending: Option<usize>,
    /// The live diff the gate or `hookops diff` last showed for a pending commit.
    pub pending_diff: Option<crate::ops::pending::Saved>,
    pub queued: bool,
    /// Objects in the inventory (`refs/hookops/inventory/<env>`).
    pub objects: Option<usize>,
    /// The newest deploy or rollback.
    pub last: Option<Summary>,
    /// The newest drift check.
    pub drift: Option<Summary>,
    /// The newest attempts (every action), newest first, at most `[web] timeline`.
    pub timeline: Vec<Attempt>,
    /// All attempts on record for this environment.
    pub attempts: usize,
}

#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: Oid,
    pub subject: String,
    pub author: String,
    /// Author time, RFC 3339 UTC.
    pub time: String,
}

/// A record named outside the timeline (the environment row).
#[derive(Debug, Clone)]
pub struct Summary {
    pub commit: Oid,
    pub report: Report,
    /// Its timeline entry, when it is in the timeline.
    pub anchor: Option<String>,
}

/// One timeline entry.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The entry's `id` in the page.
    pub anchor: String,
    /// The commit whose note holds the record.
    pub commit: Oid,
    pub subject: Option<String>,
    pub author: Option<String>,
    pub report: Report,
    pub signature: Signature,
    /// A rollback and what it rolled back, both ways.
    pub related: Option<Related>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Good(String),
    Bad,
    UnknownKey(String),
    Expired(String),
    Unsigned,
    /// Signed, but no allowed_signers file is configured to check the key against.
    NotChecked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    /// A failed deploy's `rolled_back_to`: the rollback that followed it.
    RolledBackTo,
    /// A rollback's `from`: the attempt it undid.
    RolledBackFrom,
}

#[derive(Debug, Clone)]
pub struct Related {
    pub relation: Relation,
    /// The commit as the record names it (untrusted text: checked before it becomes a link).
    pub commit: String,
    /// The related entry, when it is in the timeline.
    pub anchor: Option<String>,
}

/// One readable record with the commit whose note holds it. Only the fields that choose what
/// the page shows are read from every record; the few shown are read in full (`report`).
struct Stored {
    commit: Oid,
    head: Head,
    record: ParsedRecord,
}

#[derive(serde::Deserialize)]
struct Head {
    env: String,
    action: Action,
    finished_at: String,
    #[serde(default)]
    from: Option<String>,
}

impl Stored {
    fn report(&self) -> Result<Report> {
        serde_json::from_str(&self.record.payload).with_context(|| {
            format!(
                "record at line {} of the note of {}",
                self.record.line, self.commit
            )
        })
    }
}

/// Reads what the page shows. Signatures are checked only for the entries shown: the
/// timeline is capped, the history is not (`hookops history` checks them all).
pub fn collect(session: &Session) -> Result<Page> {
    let web = &session.config.web;
    let checked = session.config.signing.allowed_signers.is_some();
    let signers = match &session.config.signing.allowed_signers {
        Some(path) => AllowedSigners::load(path)?,
        None => AllowedSigners::parse("", "(none)")?,
    };
    let (records, mut unreadable) = read_records(&session.repo)?;
    let mut commits = Commits::new(&session.repo);
    let mut envs = Vec::new();
    for env in session.environments() {
        let mut mine: Vec<&Stored> = records.iter().filter(|r| r.head.env == env.name).collect();
        let mut used = HashSet::new();
        let mut timeline = Vec::new();
        let mut i = 0;
        while i < mine.len() && timeline.len() < web.timeline {
            let s = mine[i];
            let report = match s.report() {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("{e:#}");
                    unreadable += 1;
                    mine.remove(i);
                    continue;
                }
            };
            let info = commits.info(s.commit);
            timeline.push(Attempt {
                anchor: anchor(&env.name, s, &mut used),
                commit: s.commit,
                subject: info.as_ref().map(|c| c.subject.clone()),
                author: info.map(|c| c.author),
                report,
                signature: signature(&s.record, &signers, checked),
                related: None,
            });
            i += 1;
        }
        for i in 0..timeline.len() {
            timeline[i].related = related(&mine, i, &timeline);
        }
        // The newest of a kind: in the timeline, else the first readable one beyond it.
        let summary = |pick: &dyn Fn(Action) -> bool| {
            if let Some(a) = timeline.iter().find(|a| pick(a.report.action)) {
                return Some(Summary {
                    commit: a.commit,
                    report: a.report.clone(),
                    anchor: Some(a.anchor.clone()),
                });
            }
            mine[timeline.len()..]
                .iter()
                .filter(|s| pick(s.head.action))
                .find_map(|s| {
                    s.report().ok().map(|report| Summary {
                        commit: s.commit,
                        report,
                        anchor: None,
                    })
                })
        };
        let last = summary(&|a| a != Action::Drift);
        let drift = summary(&|a| a == Action::Drift);
        let pointer = session.pointer(&env.name);
        envs.push(EnvView {
            name: env.name.clone(),
            branch: env.ref_name(),
            tip: session.repo.refname_to_id(&env.ref_name()).ok(),
            deployed: pointer.map(|p| commits.info(p).unwrap_or_else(|| missing(p))),
            pending: crate::pipeline::environments::pending_commits(session, &env).unwrap_or(None),
            pending_diff: crate::ops::pending::pending(session, &env),
            queued: crate::ops::queue::queued(session, &env.name),
            objects: object_count(&session.repo, &env.name),
            last,
            drift,
            timeline,
            attempts: mine.len(),
        });
    }
    Ok(Page {
        title: repo_name(&session.git_dir),
        generated_at: crate::record::payload::now(),
        envs,
        commit_url: web.commit_url.clone(),
        signers: checked,
        records: records.len(),
        unreadable,
    })
}

/// Every readable record, newest first (by `finished_at`, as `history` orders them), and how
/// many notes or records could not be read.
fn read_records(repo: &Repository) -> Result<(Vec<Stored>, usize)> {
    let mut out = Vec::new();
    let mut unreadable = 0;
    for (commit, note) in notes::list(repo)? {
        let Ok(parsed) = record::parse_note(&note) else {
            unreadable += 1;
            continue;
        };
        for rec in parsed {
            match serde_json::from_str::<Head>(&rec.payload).ok() {
                Some(head) => out.push(Stored {
                    commit,
                    head,
                    record: rec,
                }),
                None => unreadable += 1,
            }
        }
    }
    out.sort_by(|a, b| b.head.finished_at.cmp(&a.head.finished_at));
    Ok((out, unreadable))
}

/// Without an allowed_signers file a signature can only be checked against its own key.
fn signature(rec: &ParsedRecord, signers: &AllowedSigners, checked: bool) -> Signature {
    match record::verify(rec, signers) {
        Verdict::Good { principal } => Signature::Good(principal),
        Verdict::BadSignature => Signature::Bad,
        Verdict::UnknownKey { .. } if !checked => Signature::NotChecked,
        Verdict::UnknownKey { fingerprint } => Signature::UnknownKey(fingerprint),
        Verdict::Expired { principal } => Signature::Expired(principal),
        Verdict::Unsigned => Signature::Unsigned,
    }
}

/// A stable, unique element id: environment, commit and time (letters and digits only).
fn anchor(env: &str, s: &Stored, used: &mut HashSet<String>) -> String {
    let hex = s.commit.to_string();
    let when: String = s
        .head
        .finished_at
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    let env: String = env
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let base = format!("a-{env}-{}-{when}", &hex[..12]);
    let mut id = base.clone();
    let mut n = 1;
    while !used.insert(id.clone()) {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// The rollback a failed deploy led to (the first rollback to its `rolled_back_to` from its
/// commit after it), or the attempt a rollback undid (the newest attempt on its `from` before
/// it). `mine` is newest first and `timeline` its head.
fn related(mine: &[&Stored], i: usize, timeline: &[Attempt]) -> Option<Related> {
    let me = &timeline[i].report;
    let here = mine[i].commit.to_string();
    let anchor_of = |j: usize| timeline.get(j).map(|a| a.anchor.clone());
    if let Some(to) = &me.rolled_back_to {
        let j = (0..i).rev().find(|&j| {
            let r = &mine[j].head;
            r.action == Action::Rollback
                && mine[j].commit.to_string() == *to
                && r.from.as_deref() == Some(here.as_str())
        });
        return Some(Related {
            relation: Relation::RolledBackTo,
            commit: to.clone(),
            anchor: j.and_then(anchor_of),
        });
    }
    if me.action == Action::Rollback {
        let from = me.from.as_ref()?;
        let j = (i + 1..mine.len())
            .find(|&j| mine[j].head.action != Action::Drift && mine[j].commit.to_string() == *from);
        return Some(Related {
            relation: Relation::RolledBackFrom,
            commit: from.clone(),
            anchor: j.and_then(anchor_of),
        });
    }
    None
}

/// Commit subjects, authors and times, each commit read once.
struct Commits<'r> {
    repo: &'r Repository,
    seen: HashMap<Oid, Option<CommitInfo>>,
}

impl<'r> Commits<'r> {
    fn new(repo: &'r Repository) -> Self {
        Commits {
            repo,
            seen: HashMap::new(),
        }
    }

    fn info(&mut self, id: Oid) -> Option<CommitInfo> {
        let repo = self.repo;
        self.seen
            .entry(id)
            .or_insert_with(|| {
                let c = repo.find_commit(id).ok()?;
                let author = c.author();
                let time = chrono::DateTime::from_timestamp(author.when().seconds(), 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                Some(CommitInfo {
                    id,
                    subject: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default())
                        .into_owned(),
                    author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
                    time,
                })
            })
            .clone()
    }
}

fn missing(id: Oid) -> CommitInfo {
    CommitInfo {
        id,
        subject: "(commit not in this repository)".into(),
        author: String::new(),
        time: String::new(),
    }
}

/// Objects in an environment's inventory: the entries of its `objects/` shards, counted
/// without building them (serde skips the values).
fn object_count(repo: &Repository, env: &str) -> Option<usize> {
    let head = repo
        .refname_to_id(&crate::config::inventory_ref(env))
        .ok()?;
    let tree = repo.find_commit(head).ok()?.tree().ok()?;
    let Ok(objects) = tree.get_path(Path::new("objects")) else {
        return Some(0);
    };
    let shards = repo.find_tree(objects.id()).ok()?;
    let mut n = 0;
    for shard in shards.iter() {
        let blob = repo.find_blob(shard.id()).ok()?;
        let mut de = serde_json::Deserializer::from_slice(blob.content());
        n += serde::Deserializer::deserialize_map(&mut de, CountEntries).ok()?;
    }
    Some(n)
}

struct CountEntries;

impl<'de> serde::de::Visitor<'de> for CountEntries {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an inventory shard (a JSON object)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {
            n += 1;
        }
        Ok(n)
    }
}

fn repo_name(git_dir: &Path) -> String {
    let dir = if git_dir.file_name().is_some_and(|n| n == ".git") {
        git_dir.parent().unwrap_or(git_dir)
    } else {
        git_dir
    };
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".into())
}

/// The page as HTML.
pub fn render_session(session: &Session) -> Result<String> {
    Ok(render(&collect(session)?))
}

/// Set by the hooks git waits for (post-receive, post-merge): see `detach_refreshes`.
static DETACHED: AtomicBool = AtomicBool::new(false);

/// Called before the hooks that git waits for (post-receive, post-merge): from then on
/// `refresh` hands the page to a detached `hookops status --html FILE`, so that the pusher's
/// wait does not include the render (figure 6b of docs/performance.md).
pub fn detach_refreshes() {
    DETACHED.store(true, Ordering::Relaxed);
}

/// After a deploy, rollback or drift check (outside the deploy lock): rewrites `[web] page`
/// atomically. Best effort, like metrics: a page that cannot be written never changes an
/// attempt's outcome.
pub fn refresh(session: &Session) {
    let Some(path) = &session.config.web.page else {
        return;
    };
    // A relative path is taken from the git directory, wherever the hook runs from.
    let path = session.git_dir.join(path);
    if DETACHED.load(Ordering::Relaxed) {
        match spawn_refresh(session, &path) {
            Ok(()) => return,
            Err(e) => {
                log::info!("status page: cannot start a detached render ({e:#}); rendering here")
            }
        }
    }
    let started = Instant::now();
    match write_page(session, &path) {
        Ok(bytes) => log::info!(
            "status page {} rewritten ({bytes} bytes) in {} ms",
            path.display(),
            started.elapsed().as_millis()
        ),
        Err(e) => log::warn!(
            "status page {}: {}",
            path.display(),
            crate::out::error_line(&e)
        ),
    }
}

/// Renders and writes the page, one writer at a time: renders started later (after newer
/// records) always finish later, so the file never goes back to an older state.
fn write_page(session: &Session, path: &Path) -> Result<usize> {
    let (lock, lock_path) = crate::backends::repo::lock_file(&session.state_dir(), "page.lock")?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let html = render_session(session)?;
    crate::ops::write_atomic(path, html.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(html.len())
}

/// `hookops --repo GIT_DIR status --html PATH` in its own session, its output in
/// `<GIT_DIR>/hookops/page.log`; not waited for (the hook exits, init reaps it).
fn spawn_refresh(session: &Session, path: &Path) -> Result<()> {
    let state = session.state_dir();
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let log = std::fs::File::create(state.join("page.log"))?;
    let args = [OsStr::new("status"), OsStr::new("--html"), path.as_os_str()];
    crate::backends::process::spawn_detached(
        &session.git_dir,
        &args,
        std::process::Stdio::null(),
        log,
        "the page render",
    )?;
    Ok(())
}

/// `hookops status --html [FILE]`: the page on stdout, or written atomically to FILE.
pub fn status_html(repo: Option<&Path>, file: Option<&Path>) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    match file {
        Some(f) if f != Path::new("-") => {
            write_page(&session, f)?;
        }
        _ => {
            let html = render_session(&session)?;
            let mut out = std::io::stdout().lock();
            out.write_all(html.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::payload::Outcome;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    fn stored(
        commit: u8,
        action: Action,
        from: Option<u8>,
        back_to: Option<u8>,
        at: &str,
    ) -> Stored {
        let report = Report {
            env: "prod".into(),
            action,
            result: if back_to.is_some() {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            },
            commit: oid(commit).to_string(),
            from: from.map(|f| oid(f).to_string()),
            ref_name: "refs/heads/main".into(),
            started_at: at.into(),
            finished_at: at.into(),
            host: "h".into(),
            signer: None,
            targets: Vec::new(),
            reason: None,
            rolled_back_to: back_to.map(|b| oid(b).to_string()),
            kept: Vec::new(),
            message: None,
            no_wait: false,
            pending: Vec::new(),
            allowed_by: None,
            hookops_version: None,
        };
        Stored {
            commit: oid(commit),
            head: serde_json::from_str(&report.payload()).unwrap(),
            record: ParsedRecord {
                payload: report.payload(),
                signature: None,
                line: 1,
            },
        }
    }

    fn timeline(mine: &[&Stored], n: usize) -> Vec<Attempt> {
        let mut used = HashSet::new();
        mine.iter()
            .take(n)
            .map(|s| Attempt {
                anchor: anchor("prod", s, &mut used),
                commit: s.commit,
                subject: None,
                author: None,
                report: s.report().unwrap(),
                signature: Signature::Unsigned,
                related: None,
            })
            .collect()
    }

    #[test]
    fn rollbacks_link_both_ways() {
        // Newest first: the rollback to 1, the failed deploy of 2, the good deploy of 1.
        let back = stored(1, Action::Rollback, Some(2), None, "2026-01-01T00:00:03Z");
        let failed = stored(2, Action::Deploy, Some(1), Some(1), "2026-01-01T00:00:02Z");
        let good = stored(1, Action::Deploy, None, None, "2026-01-01T00:00:01Z");
        let mine = [&back, &failed, &good];
        let t = timeline(&mine, 3);
        let to = related(&mine, 1, &t).expect("failed deploy");
        assert_eq!(to.relation, Relation::RolledBackTo);
        assert_eq!(to.anchor.as_deref(), Some(t[0].anchor.as_str()));
        let from = related(&mine, 0, &t).expect("rollback");
        assert_eq!(from.relation, Relation::RolledBackFrom);
        assert_eq!(from.anchor.as_deref(), Some(t[1].anchor.as_str()));
        assert!(related(&mine, 2, &t).is_none());
        // Beyond the timeline: the commit, no anchor.
        let short = timeline(&mine, 1);
        let from = related(&mine, 0, &short).expect("rollback");
        assert_eq!(from.anchor, None);
        assert_eq!(from.commit, oid(2).to_string());
    }

    #[test]
    fn anchors_are_plain_and_unique() {
        let a = stored(1, Action::Deploy, None, None, "2026-01-01T00:00:01.123Z");
        let mut used = HashSet::new();
        let first = anchor("prod.eu", &a, &mut used);
        assert_eq!(first, "a-prod_eu-010101010101-20260101T000001123Z");
        assert_eq!(anchor("prod.eu", &a, &mut used), format!("{first}-2"));
        let odd = stored(1, Action::Deploy, None, None, "\"><script>");
        assert!(anchor("x", &odd, &mut used)
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
