//! What operators watch and how deploys leave the push: the asynchronous queue (the hook answers
//! at once and a detached worker deploys), the Prometheus textfile, and the alert webhook.
//! Metrics and alerts are best effort: they never change a deploy's outcome.

pub mod page;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backends::repo::Session;
use crate::config::DeployMode;
use crate::pipeline::deploy::say;
use crate::pipeline::refs::RefUpdate;
use crate::record::payload::{Action, Outcome, Report};

// ---- async queue ---------------------------------------------------------------------------

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
fn orphaned(session: &Session) -> Vec<PathBuf> {
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
    let exe = std::env::current_exe().context("locating the hookops binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--repo")
        .arg(&session.git_dir)
        .arg("worker")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env_remove("GIT_DIR")
        .env_remove("GIT_QUARANTINE_PATH");
    // The worker must outlive the hook (and git's wait for it): its own session, no parent
    // death signal.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    cmd.spawn().context("starting the deploy worker")?;
    say(&format!(
        "deploy queued: see `hookops status` (log: {})",
        log_path.display()
    ));
    Ok(true)
}

/// The detached worker: runs its queued push while holding the entry's lock, then every entry
/// a dead worker left behind, then removes old logs.
pub fn worker(repo: Option<&Path>, entry: &Path) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let mut code = run_entry(&session, entry)?;
    for orphan in orphaned(&session) {
        say(&format!(
            "taking over {} (its worker died)",
            orphan.file_name().unwrap_or_default().to_string_lossy()
        ));
        // One entry that cannot run must not keep the others queued for ever.
        match run_entry(&session, &orphan) {
            Ok(ExitCode::SUCCESS) => {}
            Ok(_) => code = ExitCode::FAILURE,
            Err(e) => {
                say(&format!("{}: {e:#}", orphan.display()));
                code = ExitCode::FAILURE;
            }
        }
    }
    // The page was last rendered while this worker's entry still counted as queued.
    crate::ops::page::refresh(&session);
    prune_logs(&session);
    Ok(code)
}

fn run_entry(session: &Session, entry: &Path) -> Result<ExitCode> {
    let Ok(held) = fs::File::open(entry) else {
        return Ok(ExitCode::SUCCESS); // another worker finished it
    };
    if held.try_lock().is_err() {
        return Ok(ExitCode::SUCCESS); // another worker runs it
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
        return Ok(ExitCode::SUCCESS);
    };
    let code = crate::commands::hooks::deploy_updates(session, &updates, true);
    let _ = fs::remove_file(entry);
    drop(held);
    code
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

fn prune_logs(session: &Session) {
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

// ---- metrics -------------------------------------------------------------------------------

const BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Counters survive between runs in hookops' state directory.
#[derive(Default, Serialize, Deserialize)]
struct MetricsState {
    /// "env\ttarget\tresult" → count
    deploys: BTreeMap<String, u64>,
    /// env → (bucket counts, sum, count)
    durations: BTreeMap<String, (Vec<u64>, f64, u64)>,
    last_success: BTreeMap<String, i64>,
    /// "env\ttarget" → 0/1
    drift: BTreeMap<String, u8>,
    /// env → last deploy result, for recovery alerts
    last_result: BTreeMap<String, Outcome>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Called after every attempt: update counters, write the textfile, send alerts.
pub fn after_attempt(session: &Session, rep: &Report) {
    // Environments deploy in parallel: one read-modify-write of the counters at a time (best
    // effort, like the metrics themselves).
    let _guard = crate::backends::repo::lock_file(&session.state_dir(), "metrics.lock")
        .ok()
        .filter(|(file, _)| file.lock().is_ok());
    let state_path = session.state_dir().join("metrics-state.json");
    let mut state: MetricsState = fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let previous = state.last_result.get(&rep.env).copied();
    update(&mut state, rep);
    if let Ok(bytes) = serde_json::to_vec(&state) {
        let _ = write_atomic(&state_path, &bytes);
    }
    if let Some(path) = &session.config.metrics.textfile {
        let text = render(session, &state);
        if let Err(e) = write_atomic(path, text.as_bytes()) {
            log::warn!("metrics: {}: {e:#}", path.display());
        }
    }
    if let Some(url) = &session.config.alerts.webhook {
        if let Some(kind) = alert_kind(rep, previous) {
            send_alert(url, kind, rep);
        }
    }
}

fn update(state: &mut MetricsState, rep: &Report) {
    if rep.action == Action::Drift {
        for t in &rep.targets {
            let drifted = u8::from(t.drifted.unwrap_or(0) > 0);
            state
                .drift
                .insert(format!("{}\t{}", rep.env, t.name), drifted);
        }
        return;
    }
    if rep.targets.is_empty() {
        *state
            .deploys
            .entry(format!("{}\t\t{}", rep.env, rep.result.as_str()))
            .or_default() += 1;
    }
    for t in &rep.targets {
        *state
            .deploys
            .entry(format!("{}\t{}\t{}", rep.env, t.name, t.result.as_str()))
            .or_default() += 1;
    }
    if let Some(ms) = rep.duration_ms() {
        let secs = ms as f64 / 1000.0;
        let h = state
            .durations
            .entry(rep.env.clone())
            .or_insert_with(|| (vec![0; BUCKETS.len()], 0.0, 0));
        h.0.resize(BUCKETS.len(), 0);
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += secs;
        h.2 += 1;
    }
    if rep.action == Action::Deploy {
        state.last_result.insert(rep.env.clone(), rep.result);
    }
    if rep.result == Outcome::Succeeded && rep.action != Action::Drift {
        state
            .last_success
            .insert(rep.env.clone(), chrono::Utc::now().timestamp());
    }
}

fn render(session: &Session, state: &MetricsState) -> String {
    let mut out = String::new();
    out.push_str("# HELP hookops_deploys_total Deploy attempts per target and result.\n# TYPE hookops_deploys_total counter\n");
    for (key, n) in &state.deploys {
        // A discovered target's name may hold a tab; environment names and results cannot.
        let (env, rest) = key.split_once('\t').unwrap_or((key, ""));
        let (target, result) = rest.rsplit_once('\t').unwrap_or(("", rest));
        out.push_str(&format!(
            "hookops_deploys_total{{env=\"{}\",target=\"{}\",result=\"{}\"}} {n}\n",
            escape(env),
            escape(target),
            escape(result)
        ));
    }
    out.push_str("# HELP hookops_deploy_duration_seconds Wall time of deploy attempts.\n# TYPE hookops_deploy_duration_seconds histogram\n");
    for (env, (buckets, sum, count)) in &state.durations {
        let env = escape(env);
        for (b, n) in BUCKETS.iter().zip(buckets) {
            out.push_str(&format!(
                "hookops_deploy_duration_seconds_bucket{{env=\"{env}\",le=\"{b}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "hookops_deploy_duration_seconds_bucket{{env=\"{env}\",le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "hookops_deploy_duration_seconds_sum{{env=\"{env}\"}} {sum}\n"
        ));
        out.push_str(&format!(
            "hookops_deploy_duration_seconds_count{{env=\"{env}\"}} {count}\n"
        ));
    }
    out.push_str("# HELP hookops_last_success_timestamp_seconds Time of the last successful deploy.\n# TYPE hookops_last_success_timestamp_seconds gauge\n");
    for (env, t) in &state.last_success {
        out.push_str(&format!(
            "hookops_last_success_timestamp_seconds{{env=\"{}\"}} {t}\n",
            escape(env)
        ));
    }
    out.push_str("# HELP hookops_pending_commits Commits on the branch not yet deployed.\n# TYPE hookops_pending_commits gauge\n");
    for env in session.environments() {
        if let Ok(Some(n)) = crate::commands::audit::pending_for(session, &env) {
            out.push_str(&format!(
                "hookops_pending_commits{{env=\"{}\"}} {n}\n",
                escape(&env.name)
            ));
        }
    }
    out.push_str("# HELP hookops_drift Whether the last drift check found the target drifted.\n# TYPE hookops_drift gauge\n");
    for (key, v) in &state.drift {
        let (env, target) = key.split_once('\t').unwrap_or((key, ""));
        out.push_str(&format!(
            "hookops_drift{{env=\"{}\",target=\"{}\"}} {v}\n",
            escape(env),
            escape(target)
        ));
    }
    out
}

/// Temp file in the same directory, then rename: readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

// ---- alerts --------------------------------------------------------------------------------

fn alert_kind(rep: &Report, previous: Option<Outcome>) -> Option<&'static str> {
    match (rep.action, rep.result) {
        (Action::Drift, _) if rep.targets.iter().any(|t| t.drifted.unwrap_or(0) > 0) => {
            Some("drift")
        }
        (Action::Drift, _) => None,
        (_, Outcome::Failed) if rep.rolled_back_to.is_some() => Some("rollback"),
        (_, Outcome::Failed) => Some("failure"),
        (Action::Rollback, Outcome::Succeeded) => Some("rollback"),
        (Action::Deploy, Outcome::Succeeded) if previous == Some(Outcome::Failed) => {
            Some("recovery")
        }
        _ => None,
    }
}

/// The webhook body: Slack/Mattermost `text` plus structured fields.
pub fn alert_body(kind: &str, rep: &Report) -> serde_json::Value {
    let short = &rep.commit[..rep.commit.len().min(10)];
    let failed: Vec<&str> = rep
        .targets
        .iter()
        .filter(|t| t.result == Outcome::Failed)
        .map(|t| t.name.as_str())
        .collect();
    let text = match kind {
        "recovery" => format!("hookops: {} recovered: {short} deployed", rep.env),
        "drift" => format!(
            "hookops: {} drifted from {short}: {}",
            rep.env,
            failed.join(", ")
        ),
        "rollback" => format!(
            "hookops: {} rolled back{}: {}",
            rep.env,
            rep.rolled_back_to
                .as_deref()
                .map(|t| format!(" to {}", &t[..t.len().min(10)]))
                .unwrap_or_default(),
            rep.reason.clone().unwrap_or_default()
        ),
        _ => format!(
            "hookops: {} deploy of {short} failed: {}",
            rep.env,
            rep.reason.clone().unwrap_or_default()
        ),
    };
    json!({
        "text": text,
        "event": kind,
        "env": rep.env,
        "commit": rep.commit,
        "ref": rep.ref_name,
        "action": rep.action,
        "result": rep.result,
        "reason": rep.reason,
        "rolled_back_to": rep.rolled_back_to,
        "targets": rep.targets.iter().map(|t| json!({"name": t.name, "result": t.result, "reason": t.reason})).collect::<Vec<_>>(),
        "record": format!("git notes --ref=hookops show {}", rep.commit),
        "host": rep.host,
    })
}

fn send_alert(url: &str, kind: &str, rep: &Report) {
    let body = alert_body(kind, rep).to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut pause = Duration::from_millis(250);
    for attempt in 1..=3 {
        match agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
        {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => log::warn!(
                "alert webhook answered {} (attempt {attempt})",
                resp.status()
            ),
            Err(e) => log::warn!("alert webhook: {e} (attempt {attempt})"),
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    say("alert webhook unreachable; the deploy result stands (see the record)");
}
