//! The status page: what is deployed where, at a glance. One self-contained HTML file (no
//! external scripts, fonts or styles) rendered only from what git already holds: the records
//! under `refs/notes/hookops`, the deployed pointers, the inventories and the branches.
//!
//! `collect` reads the repository into a `Page` (the only part that touches git), `html`
//! renders it (pure), `refresh` rewrites `[web] page` after deploys, rollbacks and drift
//! checks, `status_html` is `hookops status --html`, and `serve` answers `GET /` for
//! `watch --listen`. docs/status-page.md describes the page and what it costs.

pub mod config;
mod html;
pub mod serve;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

pub use html::{escape, render, SCRIPT};

use crate::notes;
use crate::record::{self, AllowedSigners, ParsedRecord, Verdict};
use crate::report::{Action, Report};
use crate::session::Session;

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

/// One readable record with the commit whose note holds it.
struct Stored {
    commit: Oid,
    report: Report,
    record: ParsedRecord,
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
    let (records, unreadable) = read_records(&session.repo)?;
    let mut commits = Commits::new(&session.repo);
    let mut envs = Vec::new();
    for env in session.environments() {
        let mine: Vec<&Stored> = records
            .iter()
            .filter(|r| r.report.env == env.name)
            .collect();
        let mut used = HashSet::new();
        let mut timeline: Vec<Attempt> = mine
            .iter()
            .take(web.timeline)
            .map(|s| {
                let info = commits.info(s.commit);
                Attempt {
                    anchor: anchor(&env.name, s, &mut used),
                    commit: s.commit,
                    subject: info.as_ref().map(|c| c.subject.clone()),
                    author: info.map(|c| c.author),
                    report: s.report.clone(),
                    signature: signature(&s.record, &signers, checked),
                    related: None,
                }
            })
            .collect();
        for i in 0..timeline.len() {
            timeline[i].related = related(&mine, i, &timeline);
        }
        let summary = |pick: &dyn Fn(&Report) -> bool| {
            mine.iter().position(|s| pick(&s.report)).map(|i| Summary {
                commit: mine[i].commit,
                report: mine[i].report.clone(),
                anchor: timeline.get(i).map(|a| a.anchor.clone()),
            })
        };
        let last = summary(&|r| r.action != Action::Drift);
        let drift = summary(&|r| r.action == Action::Drift);
        let pointer = session.pointer(&env.name);
        envs.push(EnvView {
            name: env.name.clone(),
            branch: env.ref_name(),
            tip: session.repo.refname_to_id(&env.ref_name()).ok(),
            deployed: pointer.map(|p| commits.info(p).unwrap_or_else(|| missing(p))),
            pending: crate::verify::pending_for(session, &env).unwrap_or(None),
            queued: crate::ops::queued(session, &env.name),
            objects: object_count(&session.repo, &env.name),
            last,
            drift,
            timeline,
            attempts: mine.len(),
        });
    }
    Ok(Page {
        title: repo_name(&session.git_dir),
        generated_at: crate::report::now(),
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
            match serde_json::from_str::<Report>(&rec.payload) {
                Ok(report) => out.push(Stored {
                    commit,
                    report,
                    record: rec,
                }),
                Err(_) => unreadable += 1,
            }
        }
    }
    out.sort_by(|a, b| b.report.finished_at.cmp(&a.report.finished_at));
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
        .report
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
    let me = mine[i];
    let here = me.commit.to_string();
    let anchor_of = |j: usize| timeline.get(j).map(|a| a.anchor.clone());
    if let Some(to) = &me.report.rolled_back_to {
        let j = (0..i).rev().find(|&j| {
            let r = &mine[j].report;
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
    if me.report.action == Action::Rollback {
        let from = me.report.from.as_ref()?;
        let j = (i + 1..mine.len()).find(|&j| {
            mine[j].report.action != Action::Drift && mine[j].commit.to_string() == *from
        });
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
        .refname_to_id(&crate::inventory::inventory_ref(env))
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

/// After a deploy, rollback or drift check (outside the deploy lock): rewrites `[web] page`
/// atomically. Best effort, like metrics: a page that cannot be written never changes an
/// attempt's outcome.
pub fn refresh(session: &Session) {
    let Some(path) = &session.config.web.page else {
        return;
    };
    // A relative path is taken from the git directory, wherever the hook runs from.
    let path = session.git_dir.join(path);
    let started = Instant::now();
    let written = render_session(session)
        .and_then(|html| crate::ops::write_atomic(&path, html.as_bytes()).map(|()| html.len()));
    match written {
        Ok(bytes) => log::info!(
            "status page {} rewritten ({bytes} bytes) in {} ms",
            path.display(),
            started.elapsed().as_millis()
        ),
        Err(e) => log::warn!(
            "status page {}: {}",
            path.display(),
            crate::one_line(&format!("{e:#}"))
        ),
    }
}

/// `hookops status --html [FILE]`: the page on stdout, or written atomically to FILE.
pub fn status_html(repo: Option<&Path>, file: Option<&Path>) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let html = render_session(&session)?;
    match file {
        Some(f) if f != Path::new("-") => crate::ops::write_atomic(f, html.as_bytes())
            .with_context(|| format!("writing {}", f.display()))?,
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(html.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
