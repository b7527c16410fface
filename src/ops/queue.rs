//! The asynchronous deploy queue (`[deploy] mode = "async"`): the hook writes the pushed ref
//! updates as an entry in `<GIT_DIR>/hookops/queue/`, starts a detached `hookops worker` on it
//! and answers the pusher at once. A worker holds its entry locked while it runs, so an entry
//! nobody holds past a grace period belongs to a dead worker and the next worker takes it over.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::backends::repo::Session;
use crate::config::DeployMode;
use crate::out::say;
use crate::pipeline::refs::RefUpdate;

#[derive(Serialize, Deserialize)]
struct QueueEntry {
    updates: Vec<(Option<String>, Option<String>, String)>,
}

fn queue_dir(session: &Session) -> PathBuf {
    session.state_dir().join("queue")
}

fn logs_dir(session: &Session) -> PathBuf {
    session.state_dir().join("logs")
}

/// How long a queued entry may wait for its worker to lock it before it counts as orphaned.
const WORKER_GRACE: Duration = Duration::from_secs(30);

/// A queue entry's base name, unique across pushes and processes: time, pid and a counter
/// (two pushes in one microsecond once shared a log).
fn entry_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a worker holds `entry` (it locks the entry file for as long as it runs); the kernel
/// drops the lock when the worker dies, however it dies.
fn owned(entry: &Path) -> bool {
    match fs::File::open(entry) {
        Ok(f) => f.try_lock_shared().is_err(),
        Err(_) => false,
    }
}

fn age(entry: &Path) -> Duration {
    fs::metadata(entry)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
}

/// Queue entries whose worker died (or never started): nobody holds them and they are older
/// than the grace a new worker gets to lock its entry.
pub fn orphaned(session: &Session) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(queue_dir(session)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("json"))
        .filter(|p| !owned(p) && age(p) > WORKER_GRACE)
        .collect();
    out.sort();
    out
}

/// An orphaned entry as `status` reports it.
pub struct Orphan {
    pub path: PathBuf,
    /// The entry's file name.
    pub name: String,
    /// When the push was queued (the entry's modification time).
    pub queued_at: String,
    /// The pushed commits it holds.
    pub commits: Vec<String>,
}

/// The orphaned entries (see `orphaned`) holding a push for `env`. Reads only: `status`
/// reports them, a deploying run takes them over.
pub fn orphaned_for(session: &Session, env: &str) -> Vec<Orphan> {
    orphaned(session)
        .into_iter()
        .filter_map(|path| {
            let entry: QueueEntry = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
            let mine = entry
                .updates
                .iter()
                .any(|(_, _, name)| session.environments_for(name).iter().any(|x| x.name == env));
            if !mine {
                return None;
            }
            let queued_at = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
                .unwrap_or_default();
            Some(Orphan {
                name: path.file_name()?.to_string_lossy().into_owned(),
                queued_at,
                commits: entry
                    .updates
                    .into_iter()
                    .filter_map(|(_, new, _)| new)
                    .collect(),
                path,
            })
        })
        .collect()
}

/// In async mode: queue the updates, start a detached worker, and tell the pusher.
pub fn queue_if_async(session: &Session, updates: &[RefUpdate]) -> Result<bool> {
    if session.config.deploy.mode != DeployMode::Async {
        return Ok(false);
    }
    if updates
        .iter()
        .all(|u| session.environments_for(&u.name).is_empty())
    {
        return Ok(false);
    }
    let dir = queue_dir(session);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = entry_name();
    let entry = QueueEntry {
        updates: updates
            .iter()
            .map(|u| {
                (
                    u.old.map(|o| o.to_string()),
                    u.new.map(|o| o.to_string()),
                    u.name.clone(),
                )
            })
            .collect(),
    };
    let path = dir.join(format!("{stamp}.json"));
    fs::write(&path, serde_json::to_vec(&entry)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let logs = logs_dir(session);
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{stamp}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let (worker, entry) = (std::ffi::OsStr::new("worker"), path.as_os_str());
    crate::backends::process::spawn_detached(
        &session.git_dir,
        &[worker, entry],
        log.try_clone()?.into(),
        log,
        "the deploy worker",
    )?;
    say(&format!(
        "deploy queued: see `hookops status` (log: {})",
        log_path.display()
    ));
    Ok(true)
}

/// A queue entry this worker holds: its ref updates, and the entry's lock, held until `done`.
pub struct Claimed {
    path: PathBuf,
    _held: fs::File,
    pub updates: Vec<RefUpdate>,
}

impl Claimed {
    /// The push is deployed: the entry goes, then its lock.
    pub fn done(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Locks `entry` for this worker; None when another worker finished or runs it, or when the
/// entry is not whole.
pub fn claim(entry: &Path) -> Result<Option<Claimed>> {
    let Ok(held) = fs::File::open(entry) else {
        return Ok(None); // another worker finished it
    };
    if held.try_lock().is_err() {
        return Ok(None); // another worker runs it
    }
    let text = fs::read(entry).with_context(|| format!("reading {}", entry.display()))?;
    let Some(updates) = parse_entry(&text) else {
        // What a hook killed while writing its entry leaves (an empty or cut file): that push
        // was never queued (its pusher saw no "deploy queued"); discarded, never retried for
        // ever. The next push deploys from the pointer anyway.
        say(&format!(
            "{}: corrupt queue entry discarded",
            entry.display()
        ));
        let _ = fs::remove_file(entry);
        return Ok(None);
    };
    Ok(Some(Claimed {
        path: entry.to_path_buf(),
        _held: held,
        updates,
    }))
}

/// The ref updates of a queue entry; None when it is not a whole entry.
fn parse_entry(text: &[u8]) -> Option<Vec<RefUpdate>> {
    let parsed: QueueEntry = serde_json::from_slice(text).ok()?;
    let id = |s: Option<String>| -> Option<Option<git2::Oid>> {
        match s {
            None => Some(None),
            Some(s) => git2::Oid::from_str(&s).ok().map(Some),
        }
    };
    parsed
        .updates
        .into_iter()
        .map(|(old, new, name)| {
            Some(RefUpdate {
                old: id(old)?,
                new: id(new)?,
                name,
            })
        })
        .collect()
}

pub fn prune_logs(session: &Session) {
    let keep = Duration::from_secs(session.config.logs.keep_days * 86_400);
    let Ok(entries) = fs::read_dir(logs_dir(session)) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > keep);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Whether a deploy for `env` is waiting in the queue or running: an entry a live worker holds,
/// or one young enough that its worker may not have locked it yet. An orphaned entry does not
/// count (the next push's worker takes it over).
pub fn queued(session: &Session, env: &str) -> bool {
    let Ok(entries) = fs::read_dir(queue_dir(session)) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if !owned(&p) && age(&p) > WORKER_GRACE {
            return false;
        }
        fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<QueueEntry>(&b).ok())
            .is_some_and(|q| {
                q.updates.iter().any(|(_, _, name)| {
                    session.environments_for(name).iter().any(|x| x.name == env)
                })
            })
    })
}
