//! Crash safety: a journal entry is written before a deploy touches anything and removed once
//! its record is written. An entry found by the next run (which holds the lock, so its writer
//! is dead) is recorded as a failed, interrupted attempt; the pointer never moved, so the next
//! deploy starts again from it. A corrupt entry is reported and discarded, never trusted.

use std::path::PathBuf;

use anyhow::{Context, Result};
use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::deploy::{say, Deployer, Request};
use crate::report::{self, Action, Outcome, Report};
use crate::session::Session;

#[derive(Serialize, Deserialize)]
struct Entry {
    env: String,
    action: Action,
    commit: String,
    from: Option<String>,
    #[serde(rename = "ref")]
    ref_name: String,
    started_at: String,
    pid: u32,
}

fn dir(session: &Session) -> PathBuf {
    session.state_dir().join("journal")
}

pub fn begin(session: &Session, env: &str, req: &Request, from: Option<Oid>) -> Result<()> {
    let dir = dir(session);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let entry = Entry {
        env: env.to_string(),
        action: req.action,
        commit: req.to.to_string(),
        from: from.map(|f| f.to_string()),
        ref_name: req.ref_name.clone(),
        started_at: report::now(),
        pid: std::process::id(),
    };
    let path = dir.join(format!("{env}.json"));
    let tmp = dir.join(format!(".{env}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&entry)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn end(session: &Session, env: &str) -> Result<()> {
    let path = dir(session).join(format!("{env}.json"));
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Records the interrupted attempt of `env`, if any. Call with its deploy lock held (the
/// entries of other environments may belong to runs in progress).
pub fn recover(deployer: &Deployer, env: &str) -> Result<()> {
    let session = deployer.session;
    let Ok(entries) = std::fs::read_dir(dir(session)) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.file_name() != Some(std::ffi::OsStr::new(&format!("{env}.json"))) {
            continue;
        }
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
        say(&format!(
            "{}: the deploy of {} started {} was interrupted; recording it as failed",
            entry.env,
            &entry.commit[..7.min(entry.commit.len())],
            entry.started_at
        ));
        let rep = Report {
            env: entry.env.clone(),
            action: entry.action,
            result: Outcome::Failed,
            commit: entry.commit.clone(),
            from: entry.from.clone(),
            ref_name: entry.ref_name.clone(),
            started_at: entry.started_at.clone(),
            finished_at: report::now(),
            host: report::hostname(),
            signer: deployer.signer.as_ref().map(|s| s.id()),
            targets: Vec::new(),
            reason: Some(format!(
                "interrupted (process {} died mid-deploy)",
                entry.pid
            )),
            rolled_back_to: None,
            kept: Vec::new(),
            hookops_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        };
        if session.repo.find_commit(commit).is_ok() {
            deployer.write_record(commit, &rep)?;
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
