//! Reading the audit log back: `verify` (signatures of one commit's records), `history`
//! (every attempt, newest first) and `status` (per environment: pointer, pending commits, last
//! attempt); `objects` (what an environment manages, from its inventory).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::commands::emit;

use crate::backends::repo::Session;
use crate::record::history;
use crate::record::notes;
use crate::record::payload::{Action, Outcome, Report};
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

/// `verify REV [--allowed-signers FILE] [--json]`: the file given, else `[signing]
/// allowed_signers`.
pub fn verify(
    repo: Option<&Path>,
    rev: &str,
    allowed: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let commit = session.resolve(rev)?;
    let Some(allowed) = allowed.or(session.config.signing.allowed_signers.as_deref()) else {
        bail!(
            "no allowed_signers file to verify against: pass --allowed-signers FILE or set \
             [signing] allowed_signers in {}",
            session.config_path().display()
        );
    };
    let signers = AllowedSigners::load(allowed)?;
    let Some(note) = notes::read(&session.repo, commit)? else {
        bail!("no hookops records on {rev} ({commit})");
    };
    let records = record::parse_note(&note)
        .map_err(|e| anyhow::anyhow!("the note of {rev} is corrupt: {e}"))?;
    let mut bad = 0;
    let mut items = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        let verdict = record::verify(rec, &signers);
        let good = matches!(verdict, Verdict::Good { .. });
        if !good {
            bad += 1;
        }
        if json {
            let mut v: serde_json::Value = serde_json::from_str(&rec.payload).unwrap_or_default();
            v["signature"] = json!(verdict_text(&verdict));
            v["verified"] = json!(good);
            items.push(v);
            continue;
        }
        emit(&format!(
            "record {} ({}): {}",
            i + 1,
            summary(rec),
            verdict_text(&verdict)
        ))?;
    }
    if json {
        emit(&serde_json::Value::Array(items).to_string())?;
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
    // An environment that was configured once has records even after it left the config.
    if let Some(name) = env {
        if list.is_empty() && session.environment(name).is_err() {
            bail!(
                "no environment named {name:?}: configured: {}",
                env_names(&session)
            );
        }
    }
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
        emit(&serde_json::Value::Array(items).to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        emit("no deploy records")?;
    }
    for e in &list {
        let r = &e.report;
        let targets: Vec<String> = r
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.name, t.result.as_str()))
            .collect();
        emit(&format!(
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
        ))?;
        // The cause of each failure, which the summary above only counts.
        for t in r.targets.iter().filter(|t| t.result != Outcome::Succeeded) {
            if let Some(why) = &t.reason {
                emit(&format!(
                    "    {}: {}",
                    crate::config::printable(&t.name),
                    why
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn env_names(session: &Session) -> String {
    let names: Vec<String> = session.environments().into_iter().map(|e| e.name).collect();
    names.join(", ")
}

pub fn status(repo: Option<&Path>, json: bool) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let signers = signers_for(&session, None)?;
    let all = history::entries(&session.repo, None, &signers)?;
    let attempt = |e: &history::Entry| {
        json!({
            "commit": e.commit.to_string(),
            "action": e.report.action.as_str(),
            "result": e.report.result.as_str(),
            "finished_at": e.report.finished_at,
            "reason": failure_cause(&e.report),
            "rolled_back_to": e.report.rolled_back_to,
        })
    };
    let mut rows = Vec::new();
    for env in session.environments() {
        let pointer = session.pointer(&env.name);
        let pending = crate::pipeline::environments::pending_commits(&session, &env)?;
        let last = all.iter().find(|e| e.report.env == env.name);
        // A failed deploy stays visible behind the rollback (or drift check) that followed it.
        let last_deploy = all
            .iter()
            .find(|e| e.report.env == env.name && e.report.action == Action::Deploy);
        let queued = crate::ops::queue::queued(&session, &env.name);
        let lost: Vec<serde_json::Value> = crate::ops::queue::orphaned_for(&session, &env.name)
            .iter()
            .map(|o| json!({"entry": o.name, "queued_at": o.queued_at, "commits": o.commits}))
            .collect();
        rows.push(json!({
            "env": env.name,
            "branch": env.ref_name(),
            "deployed": pointer.map(|p| p.to_string()),
            "pending_commits": pending,
            "queued": queued,
            "lost": lost,
            "last": last.map(attempt),
            "last_deploy": last_deploy.map(attempt),
        }));
    }
    if json {
        emit(&serde_json::Value::Array(rows).to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let env_width = crate::out::column_width(rows.iter().map(|r| r["env"].as_str().unwrap_or("")));
    let branch_width =
        crate::out::column_width(rows.iter().map(|r| r["branch"].as_str().unwrap_or("")));
    for r in &rows {
        let deployed = r["deployed"]
            .as_str()
            .map(|s| &s[..s.len().min(10)])
            .unwrap_or("(never)");
        let last = if r["last"].is_null() {
            "no attempts".to_string()
        } else {
            attempt_text(&r["last"])
        };
        let queued = if r["queued"].as_bool() == Some(true) {
            ", deploy queued"
        } else {
            ""
        };
        emit(&format!(
            "{:<env_width$} {:<branch_width$} deployed {}  pending {}{}  {}",
            r["env"].as_str().unwrap_or(""),
            r["branch"].as_str().unwrap_or(""),
            deployed,
            r["pending_commits"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            queued,
            last
        ))?;
        let (last_deploy, last) = (&r["last_deploy"], &r["last"]);
        if !last_deploy.is_null()
            && last_deploy != last
            && last_deploy["result"].as_str() != Some("succeeded")
        {
            emit(&format!("    before that: {}", attempt_text(last_deploy)))?;
        }
        for lost in r["lost"].as_array().into_iter().flatten() {
            emit(&format!(
                "    LOST: the deploy queued at {} ({}) never ran: its worker died; the next \
                 push, replay or drift run takes it over",
                lost["queued_at"].as_str().unwrap_or("?"),
                lost["entry"].as_str().unwrap_or("?"),
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `last deploy FAILED of abc123 at T (cause); rolled back to def456`.
fn attempt_text(a: &serde_json::Value) -> String {
    let result = a["result"].as_str().unwrap_or("");
    format!(
        "last {} {} of {} at {}{}{}",
        a["action"].as_str().unwrap_or(""),
        if result == "succeeded" {
            result.to_string()
        } else {
            result.to_uppercase()
        },
        &a["commit"].as_str().unwrap_or("")[..a["commit"].as_str().map_or(0, |c| c.len().min(10))],
        a["finished_at"].as_str().unwrap_or(""),
        a["reason"]
            .as_str()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        a["rolled_back_to"]
            .as_str()
            .map(|x| format!("; rolled back to {}", &x[..x.len().min(10)]))
            .unwrap_or_default(),
    )
}

/// Why an attempt failed: its first failed target's reason (the attempt's own reason only
/// counts them), else the attempt's (`history --json` has them all).
fn failure_cause(r: &Report) -> Option<String> {
    r.targets
        .iter()
        .find(|t| t.result == Outcome::Failed)
        .and_then(|t| {
            t.reason
                .as_ref()
                .map(|why| format!("{}: {why}", crate::config::printable(&t.name)))
        })
        .or_else(|| r.reason.clone())
}

/// `objects [--env E] [--json]`: what each environment manages, from its inventory: the objects
/// hookops applied and still declares or keeps, with the target and files that declare them.
pub fn objects(repo: Option<&Path>, env: Option<&str>, json: bool) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let envs = match env {
        Some(name) => vec![session
            .environment(name)
            .with_context(|| format!("configured environments: {}", env_names(&session)))?],
        None => session.environments(),
    };
    let mut rows = Vec::new();
    for e in &envs {
        let mut inv = crate::pipeline::inventory::Inventory::load(&session.repo, &e.name)?;
        for (id, entry) in inv.all()? {
            let files: Vec<String> = entry.declared_by.iter().map(|u| unit_text(u)).collect();
            rows.push(json!({
                "env": e.name,
                "api_version": entry.api_version,
                "kind": id.kind,
                "namespace": id.namespace,
                "name": id.name,
                "target": entry.target,
                "files": files,
                "applied": entry.applied,
                "kept": entry.keep || files.is_empty(),
            }));
        }
    }
    if json {
        emit(&serde_json::Value::Array(rows).to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        emit("no objects: nothing deployed yet")?;
        return Ok(ExitCode::SUCCESS);
    }
    let cell = |r: &serde_json::Value, k: &str| -> String {
        match &r[k] {
            serde_json::Value::String(s) => crate::config::printable(s).into_owned(),
            serde_json::Value::Array(a) if a.is_empty() => "(no longer in git: kept)".into(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|f| f.as_str())
                .map(|f| crate::config::printable(f).into_owned())
                .collect::<Vec<_>>()
                .join(","),
            _ => "-".into(),
        }
    };
    let columns = ["env", "kind", "namespace", "name", "target", "files"];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(r, c)).collect())
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            crate::out::column_width(table.iter().map(|row| row[i].as_str()).chain([columns[i]]))
        })
        .collect();
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    emit(&line(&header))?;
    for row in &table {
        emit(&line(row))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An inventory unit as a user names it: a manifest file, a kustomization, Vault.
fn unit_text(unit: &str) -> String {
    match unit.split_once(':') {
        Some(("f", path)) => path.to_string(),
        Some(("k", dir)) => format!(
            "{}/kustomization.yaml",
            if dir.is_empty() { "." } else { dir }
        ),
        Some(("s", target)) => format!("(vault secrets of {target})"),
        _ => unit.to_string(),
    }
}
