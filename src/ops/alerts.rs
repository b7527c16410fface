//! The alert webhook (`[alerts] webhook`): failures, rollbacks, recoveries and drift, posted as
//! Slack/Mattermost-compatible JSON with structured fields, retried three times. Best effort:
//! an unreachable webhook is reported to the pusher and never changes a deploy's outcome.

use std::time::Duration;

use serde_json::json;

use crate::backends::repo::Session;
use crate::out::say;
use crate::record::payload::{Action, Outcome, Report};

/// Called after every attempt with the environment's previous deploy result: posts the alert
/// the record calls for, if any.
pub fn after_attempt(session: &Session, rep: &Report, previous: Option<Outcome>) {
    if let Some(url) = &session.config.alerts.webhook {
        if let Some(kind) = alert_kind(rep, previous) {
            send_alert(url, kind, rep);
        }
    }
}

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
    let agent = match crate::backends::http::agent(Duration::from_secs(5), None, "alerts") {
        Ok(agent) => agent,
        Err(e) => {
            log::warn!("alert webhook: {e:#}");
            return;
        }
    };
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
