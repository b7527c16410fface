//! The audit log read back: every record on every commit's note, parsed and checked against
//! the allowed signers, newest first (`history`, `status`, the status page), and the previous
//! good deploy a rollback returns to.

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::record::notes;
use crate::record::payload::{Action, Outcome, Report};
use crate::record::{self, AllowedSigners, Verdict};

/// A record with where it came from.
pub struct Entry {
    pub commit: Oid,
    pub report: Report,
    pub verdict: Verdict,
}

/// Every readable record, newest first. Unreadable notes are reported, not fatal.
pub fn entries(
    repo: &Repository,
    env: Option<&str>,
    signers: &AllowedSigners,
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (commit, note) in notes::list(repo)? {
        let records = match record::parse_note(&note) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("note of {commit}: {e}");
                continue;
            }
        };
        for rec in records {
            let Ok(report) = serde_json::from_str::<Report>(&rec.payload) else {
                log::warn!(
                    "note of {commit}: record at line {} is unreadable",
                    rec.line
                );
                continue;
            };
            if env.is_some_and(|e| e != report.env) {
                continue;
            }
            let verdict = record::verify(&rec, signers);
            out.push(Entry {
                commit,
                report,
                verdict,
            });
        }
    }
    out.sort_by(|a, b| b.report.finished_at.cmp(&a.report.finished_at));
    Ok(out)
}

/// The newest successful deploy or rollback of `env` to a commit other than `pointer`.
pub fn previous_good(repo: &Repository, env: &str, pointer: Oid) -> Result<Option<Oid>> {
    let signers = AllowedSigners::parse("", "(none)").context("empty allowed signers")?;
    Ok(entries(repo, Some(env), &signers)?
        .into_iter()
        .filter(|e| e.report.result == Outcome::Succeeded)
        .filter(|e| matches!(e.report.action, Action::Deploy | Action::Rollback))
        .map(|e| e.commit)
        .find(|c| *c != pointer))
}
