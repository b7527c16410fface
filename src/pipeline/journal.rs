//! Crash safety: a write-ahead log of attempts. Every attempt (deploy, rollback, drift repair)
//! writes its own entry before it touches anything, marks it `recorded` the moment its record
//! is in git (with the pointer move it is about to make), and removes it when done. A rollback
//! has an entry of its own and never touches the entry of the deploy it belongs to.
//!
//! The next run (holding the lock, so every writer of an entry is dead) settles each entry it
//! finds exactly once: an attempt that never wrote its record gets a `failed` record with reason
//! `interrupted …`; one that did gets no second record, only the pointer move it had announced.
//! An entry carries its attempt's `started_at`, the record's, so that an attempt killed between
//! its record and the `recorded` mark (or a recovery killed between the `interrupted` record and
//! the entry's removal) is recognised by the record on its commit and not recorded twice.
//! A corrupt entry is reported and discarded, never trusted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::backends::repo::Session;
use crate::out::say;
use crate::record::notes::Recorder;
use crate::record::payload::{Action, Outcome, Report};

/// What the journal knows of one attempt.
#[derive(Serialize, Deserialize)]
pub struct Entry {
    env: String,
    action: Action,
    commit: String,
    from: Option<String>,
    #[serde(rename = "ref")]
    ref_name: String,
    started_at: String,
    pid: u32,
    /// The record is written; recovery must not write another.
    #[serde(default)]
    recorded: bool,
    /// The pointer move announced with the record: (from, to).
    #[serde(default)]
    pointer: Option<(Option<String>, String)>,
}

/// One attempt's journal entry, owned by the attempt that wrote it.
pub struct Attempt {
    path: PathBuf,
    entry: Entry,
}

fn dir(session: &Session) -> PathBuf {
    session.state_dir().join("journal")
}

/// A name no other attempt has: environment, process and a per-process counter.
fn entry_name(env: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{env}.{}.{nanos}.{}.json",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn write(path: &PathBuf, entry: &Entry) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(entry)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

impl Entry {
    /// The entry of an attempt of `action` on `commit` for `env` that started at `started_at`
    /// (its record's `started_at`).
    pub fn new(
        env: &str,
        action: Action,
        commit: Oid,
        from: Option<Oid>,
        ref_name: &str,
        started_at: &str,
    ) -> Entry {
        Entry {
            env: env.to_string(),
            action,
            commit: commit.to_string(),
            from: from.map(|f| f.to_string()),
            ref_name: ref_name.to_string(),
            started_at: started_at.to_string(),
            pid: std::process::id(),
            recorded: false,
            pointer: None,
        }
    }
}

/// Writes the entry of an attempt before it touches anything.
pub fn begin(session: &Session, entry: Entry) -> Result<Attempt> {
    let dir = dir(session);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(entry_name(&entry.env));
    write(&path, &entry)?;
    Ok(Attempt { path, entry })
}

impl Attempt {
    /// The record is in git; `pointer` is the move about to follow (from, to).
    pub fn recorded(&mut self, pointer: Option<(Option<Oid>, Oid)>) -> Result<()> {
        self.entry.recorded = true;
        self.entry.pointer = pointer.map(|(a, b)| (a.map(|a| a.to_string()), b.to_string()));
        write(&self.path, &self.entry)
    }

    pub fn end(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// How old the lock file of a ref must be to count as left by a dead process: libgit2 holds
/// one only while it writes and renames it, microseconds to milliseconds.
const STALE_REF_LOCK: Duration = Duration::from_secs(5);

/// Removes the lock files of hookops' refs (`refs/notes/hookops`, `refs/hookops/…`) that a
/// process killed in the middle of updating one left: git never removes them, and every later
/// update of the ref would fail (the notes ref's as "other writers kept winning"). A young lock
/// may belong to a live writer that does not hold the deploy lock (`[sync]`, a refused
/// unsigned push): it is given until it is `STALE_REF_LOCK` old, and removed only if it is
/// still the same file then. Call with the deploy lock held.
fn clear_stale_ref_locks(session: &Session) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for p in entries.flatten().map(|e| e.path()) {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "lock") {
                out.push(p);
            }
        }
    }
    let refs = session.git_dir.join("refs");
    let mut locks = Vec::new();
    walk(&refs.join("hookops"), &mut locks);
    let notes = refs.join(format!(
        "{}.lock",
        crate::record::notes::NOTES_REF.trim_start_matches("refs/")
    ));
    if notes.is_file() {
        locks.push(notes);
    }
    for lock in locks {
        let stamp = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.modified().ok(),
                    m.len(),
                    std::os::unix::fs::MetadataExt::ino(&m),
                )
            })
        };
        let Some(before) = stamp(&lock) else { continue };
        let age = before.0.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        if age < STALE_REF_LOCK {
            std::thread::sleep(STALE_REF_LOCK - age);
        }
        if stamp(&lock) != Some(before) {
            continue; // gone, or another writer's
        }
        if std::fs::remove_file(&lock).is_ok() {
            say(&format!(
                "removed {}: a stale lock, left by a process killed while it updated the ref",
                lock.strip_prefix(&session.git_dir)
                    .unwrap_or(&lock)
                    .display()
            ));
        }
    }
}

/// Settles every entry a dead attempt of `env` left, and the ref locks and half-written
/// entries dead processes left. Call with `env`'s deploy lock held: the entries of other
/// environments may belong to runs in progress.
pub fn recover(session: &Session, recorder: &Recorder, env: &str) -> Result<()> {
    clear_stale_ref_locks(session);
    let Ok(entries) = std::fs::read_dir(dir(session)) else {
        return Ok(());
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    // `<env>.<pid>.<time>.<n>.json`, or an older version's `<env>.json`.
    let prefix = format!("{env}.");
    for p in entries.flatten().map(|e| e.path()) {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mine = name.strip_prefix(&prefix).is_some_and(|rest| {
            rest == "json"
                || rest
                    .split('.')
                    .next()
                    .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if !mine {
            continue;
        }
        match p.extension().and_then(|x| x.to_str()) {
            Some("json") => paths.push(p),
            // An entry being written by a process that died (entries are written under the
            // deploy lock, so its writer is dead).
            Some("tmp") => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
    }
    paths.sort();
    for path in paths {
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
        let Some(entry) = parsed else {
            log::warn!("{}: corrupt journal entry discarded", path.display());
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let Ok(commit) = Oid::from_str(&entry.commit) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if entry.recorded {
            finish_pointer(session, &entry);
        } else if has_record(session, &entry, commit) {
            // Killed after its record and before the mark: the record stands, alone. The
            // pointer move was not announced; the next deploy starts from where it is.
            say(&format!(
                "{}: the {} of {} started {} was interrupted after its record was written; not recording it again",
                entry.env,
                action_name(entry.action),
                &entry.commit[..7.min(entry.commit.len())],
                entry.started_at
            ));
        } else {
            record_interrupted(session, recorder, &entry, commit)?;
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The pointer move a recorded attempt announced but may not have made.
fn finish_pointer(session: &Session, entry: &Entry) {
    let Some((from, to)) = &entry.pointer else {
        return;
    };
    let name = crate::config::pointer_ref(&entry.env);
    let (Ok(to), from) = (Oid::from_str(to), from.as_deref().map(Oid::from_str)) else {
        return;
    };
    if session.pointer(&entry.env) == Some(to) {
        return;
    }
    let msg = format!("hookops: deployed {to} (completed after an interruption)");
    let moved = match from.transpose() {
        Ok(from) => crate::gitref::swap(&session.repo, &name, to, from, &msg).is_ok(),
        Err(_) => false,
    };
    if moved {
        say(&format!(
            "{}: the deploy of {} was recorded but interrupted before moving {name}; moved it now",
            entry.env,
            &entry.commit[..7.min(entry.commit.len())]
        ));
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Deploy => "deploy",
        Action::Rollback => "rollback",
        Action::Drift => "drift check",
    }
}

/// Whether the note of `commit` holds a record of this entry's attempt (same environment,
/// action and start), written by the attempt itself or by an earlier recovery of it.
fn has_record(session: &Session, entry: &Entry, commit: Oid) -> bool {
    let Ok(Some(note)) = crate::record::notes::read(&session.repo, commit) else {
        return false;
    };
    let Ok(records) = crate::record::parse_note(&note) else {
        return false;
    };
    let action = serde_json::to_value(entry.action).unwrap_or_default();
    records.iter().any(|r| {
        serde_json::from_str::<serde_json::Value>(&r.payload).is_ok_and(|v| {
            v["env"] == entry.env.as_str()
                && v["action"] == action
                && v["started_at"] == entry.started_at.as_str()
        })
    })
}

fn record_interrupted(
    session: &Session,
    recorder: &Recorder,
    entry: &Entry,
    commit: Oid,
) -> Result<()> {
    let what = action_name(entry.action);
    say(&format!(
        "{}: the {what} of {} started {} was interrupted; recording it as failed",
        entry.env,
        &entry.commit[..7.min(entry.commit.len())],
        entry.started_at
    ));
    let rep = recorder.report(
        &entry.env,
        entry.action,
        Outcome::Failed,
        &entry.commit,
        &entry.ref_name,
        &entry.started_at,
    );
    let rep = Report {
        from: entry.from.clone(),
        reason: Some(format!(
            "interrupted (process {} died mid-{what})",
            entry.pid
        )),
        ..rep
    };
    if session.repo.find_commit(commit).is_ok() {
        recorder.write(&session.repo, commit, &rep)?;
    }
    Ok(())
}
