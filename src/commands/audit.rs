//! Reading the audit log back: `verify` (signatures of one commit's records), `history`
//! (every attempt, newest first) and `status` (per environment: pointer, pending commits, last
//! attempt).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde_json::json;

use crate::backends::repo::Session;
use crate::record::history;
use crate::record::notes;
use crate::record::payload::Report;
use crate::record::{self, AllowedSigners, ParsedRecord, Verdict};

pub fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Good { principal } => format!("good signature by {principal}"),
        Verdict::BadSignature => {
            "BAD signature (the record was altered or the signature is not a hookops SSHSIG)".into()
        }
        Verdict::UnknownKey { fingerprint } => format!("signed by unknown key {fingerprint}"),
        Verdict::Expired { principal } => {
            format!("signed by {principal}, but outside the key's validity window")
        }
        Verdict::Unsigned => "unsigned".into(),
    }
}

/// `verify REV --allowed-signers FILE`.
pub fn verify(repo: Option<&Path>, rev: &str, allowed: &Path) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let commit = session.resolve(rev)?;
    let signers = AllowedSigners::load(allowed)?;
    let Some(note) = notes::read(&session.repo, commit)? else {
        bail!("no hookops records on {rev} ({commit})");
    };
    let records = record::parse_note(&note)
        .map_err(|e| anyhow::anyhow!("the note of {rev} is corrupt: {e}"))?;
    let mut bad = 0;
    for (i, rec) in records.iter().enumerate() {
        let verdict = record::verify(rec, &signers);
        if !matches!(verdict, Verdict::Good { .. }) {
            bad += 1;
        }
        println!(
            "record {} ({}): {}",
            i + 1,
            summary(rec),
            verdict_text(&verdict)
        );
    }
    if bad > 0 {
        eprintln!(
            "hookops: {bad} of {} records on {rev} did not verify",
            records.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(rec: &ParsedRecord) -> String {
    match serde_json::from_str::<Report>(&rec.payload) {
        Ok(r) => format!(
            "{} {} {} {}",
            r.env,
            r.action.as_str(),
            r.result.as_str(),
            r.finished_at
        ),
        Err(_) => format!("line {}: unreadable payload", rec.line),
    }
}

fn signers_for(session: &Session, path: Option<&Path>) -> Result<AllowedSigners> {
    match path.or(session.config.signing.allowed_signers.as_deref()) {
        Some(p) => AllowedSigners::load(p),
        None => AllowedSigners::parse("", "(none)"),
    }
}

/// Without an allowed_signers file a signature can only be checked against its own key.
fn signature_state(v: &Verdict, have_signers: bool) -> String {
    match (v, have_signers) {
        (Verdict::UnknownKey { .. }, false) => "signed (key not checked)".into(),
        (v, _) => verdict_text(v),
    }
}

pub fn history(
    repo: Option<&Path>,
    env: Option<&str>,
    json: bool,
    allowed: Option<&Path>,
) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let have = allowed.is_some() || session.config.signing.allowed_signers.is_some();
    let signers = signers_for(&session, allowed)?;
    let list = history::entries(&session.repo, env, &signers)?;
    if json {
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e.report).unwrap_or_default();
                v["duration_ms"] = json!(e.report.duration_ms());
                v["signature"] = json!(signature_state(&e.verdict, have));
                v["verified"] = json!(matches!(e.verdict, Verdict::Good { .. }));
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no deploy records");
    }
    for e in &list {
        let r = &e.report;
        let targets: Vec<String> = r
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.name, t.result.as_str()))
            .collect();
        println!(
            "{}  {:<10} {:<8} {:<11} {}  {:>7}  [{}]  {}{}",
            r.finished_at,
            r.env,
            r.action.as_str(),
            r.result.as_str(),
            &r.commit[..r.commit.len().min(10)],
            r.duration_ms()
                .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                .unwrap_or_default(),
            targets.join(" "),
            signature_state(&e.verdict, have),
            r.reason
                .as_deref()
                .map(|x| format!("  ({x})"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(repo: Option<&Path>, json: bool) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let signers = signers_for(&session, None)?;
    let all = history::entries(&session.repo, None, &signers)?;
    let mut rows = Vec::new();
    for env in session.environments() {
        let pointer = session.pointer(&env.name);
        let pending = crate::pipeline::environments::pending_commits(&session, &env)?;
        let last = all.iter().find(|e| e.report.env == env.name);
        let queued = crate::ops::queue::queued(&session, &env.name);
        rows.push(json!({
            "env": env.name,
            "branch": env.ref_name(),
            "deployed": pointer.map(|p| p.to_string()),
            "pending_commits": pending,
            "queued": queued,
            "last": last.map(|e| json!({
                "commit": e.commit.to_string(),
                "action": e.report.action.as_str(),
                "result": e.report.result.as_str(),
                "finished_at": e.report.finished_at,
                "reason": e.report.reason,
            })),
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        let deployed = r["deployed"]
            .as_str()
            .map(|s| &s[..10])
            .unwrap_or("(never)");
        let last = if r["last"].is_null() {
            "no attempts".to_string()
        } else {
            format!(
                "last {} {} of {} at {}{}",
                r["last"]["action"].as_str().unwrap_or(""),
                r["last"]["result"].as_str().unwrap_or(""),
                &r["last"]["commit"].as_str().unwrap_or("")[..10],
                r["last"]["finished_at"].as_str().unwrap_or(""),
                r["last"]["reason"]
                    .as_str()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            )
        };
        let queued = if r["queued"].as_bool() == Some(true) {
            ", deploy queued"
        } else {
            ""
        };
        println!(
            "{:<12} {:<20} deployed {}  pending {}{}  {}",
            r["env"].as_str().unwrap_or(""),
            r["branch"].as_str().unwrap_or(""),
            deployed,
            r["pending_commits"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            queued,
            last
        );
    }
    Ok(ExitCode::SUCCESS)
}
