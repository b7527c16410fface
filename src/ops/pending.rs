//! The live diff of a commit waiting to deploy, kept for the status page: the gate (for a
//! push it accepts) and `hookops diff` save what they showed, per environment, in
//! `<GIT_DIR>/hookops/diffs/<env>.json`, and the page shows it beside the environment's
//! pending commits for as long as that commit is pending. The page itself never asks a
//! cluster: it shows when the diff was made, and by what.

use std::path::PathBuf;

use anyhow::{Context, Result};
use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::backends::repo::Session;
use crate::config::Environment;

/// One saved diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The commit it previews.
    pub commit: String,
    /// When it was made (RFC 3339).
    pub at: String,
    /// What made it: `the gate` or `hookops diff`.
    pub by: String,
    /// The change table and diffs, as printed (already cleaned and capped).
    pub lines: Vec<String>,
}

fn path(session: &Session, env: &str) -> PathBuf {
    session
        .state_dir()
        .join("diffs")
        .join(format!("{env}.json"))
}

/// Keeps `lines` as the diff of `commit` for `env` (replacing the one before).
pub fn save(session: &Session, env: &str, commit: Oid, by: &str, lines: &[String]) -> Result<()> {
    let file = path(session, env);
    let dir = file.parent().context("diffs directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let saved = Saved {
        commit: commit.to_string(),
        at: crate::record::payload::now(),
        by: by.to_string(),
        lines: lines.to_vec(),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &serde_json::to_vec(&saved)?)?;
    tmp.persist(&file)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// The saved diff of `env`, if its commit is still pending: on the environment's branch and
/// not deployed (the pointer is neither it nor after it).
pub fn pending(session: &Session, env: &Environment) -> Option<Saved> {
    let saved: Saved =
        serde_json::from_slice(&std::fs::read(path(session, &env.name)).ok()?).ok()?;
    let commit = Oid::from_str(&saved.commit).ok()?;
    let repo = &session.repo;
    let tip = repo.refname_to_id(&env.ref_name()).ok()?;
    let on_branch = tip == commit || repo.graph_descendant_of(tip, commit).unwrap_or(false);
    let deployed = session
        .pointer(&env.name)
        .is_some_and(|p| p == commit || repo.graph_descendant_of(p, commit).unwrap_or(false));
    (on_branch && !deployed).then_some(saved)
}
