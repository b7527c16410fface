//! The Prometheus textfile (`[metrics] textfile`): deploy counts per target and result,
//! durations, the last success, pending commits and drift, from counters kept between runs in
//! hookops' state directory. Best effort: metrics never change a deploy's outcome.

use std::collections::BTreeMap;
use std::fs;

use serde::{Deserialize, Serialize};

use crate::backends::repo::Session;
use crate::record::payload::{Action, Outcome, Report};

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
        if let Ok(Some(n)) = crate::pipeline::environments::pending_commits(session, &env) {
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

/// Called after every attempt: updates the counters and writes the textfile; returns the
/// environment's previous deploy result (what a recovery alert is judged against).
pub fn after_attempt(session: &Session, rep: &Report) -> Option<Outcome> {
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
        let _ = super::write_atomic(&state_path, &bytes);
    }
    if let Some(path) = &session.config.metrics.textfile {
        let text = render(session, &state);
        if let Err(e) = super::write_atomic(path, text.as_bytes()) {
            log::warn!("metrics: {}: {e:#}", path.display());
        }
    }
    previous
}
