//! The health stage: a target is deployed when what it applied is healthy. Workloads are
//! followed with `kubectl rollout status`; Jobs are polled until Complete or Failed. One
//! deadline covers the whole target.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::backends::kube::Kubectl;
use crate::pipeline::manifest::Object;

/// `kind.group/name` as kubectl resource argument.
pub fn resource_arg(o: &Object) -> String {
    let kind = o.id.kind.to_lowercase();
    if o.id.group.is_empty() {
        format!("{kind}/{}", o.id.name)
    } else {
        format!("{kind}.{}/{}", o.id.group, o.id.name)
    }
}

pub fn is_workload(o: &Object) -> bool {
    o.id.group == "apps"
        && matches!(
            o.id.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        )
}

fn is_job(o: &Object) -> bool {
    o.id.group == "batch" && o.id.kind == "Job"
}

/// Waits for every workload and Job in `objects`; `Err` holds the one-line reason.
pub fn wait(
    kubectl: &Kubectl,
    objects: &[&Object],
    timeout: Duration,
    progress: &mut dyn FnMut(&str) -> crate::out::SlowGuard,
) -> Result<std::result::Result<(), String>> {
    let deadline = Instant::now() + timeout;
    for o in objects.iter().filter(|o| is_workload(o) || is_job(o)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(format!(
                "{}: not healthy within {}s",
                o.id,
                timeout.as_secs()
            )));
        }
        let ns = o.id.namespace.as_deref();
        let _slow = progress(&format!("waiting for {}", o.id));
        if is_job(o) {
            if let Err(reason) = wait_job(kubectl, o, deadline)? {
                return Ok(Err(reason));
            }
            continue;
        }
        let out = kubectl.rollout_status(&resource_arg(o), ns, left)?;
        if !out.success() {
            let reason = out.reason();
            let reason = reason.strip_prefix("error: ").unwrap_or(&reason);
            return Ok(Err(format!("{}: {reason}", o.id)));
        }
    }
    Ok(Ok(()))
}

fn wait_job(
    kubectl: &Kubectl,
    o: &Object,
    deadline: Instant,
) -> Result<std::result::Result<(), String>> {
    let mut pause = Duration::from_millis(200);
    loop {
        let out = kubectl.get_json(&resource_arg(o), o.id.namespace.as_deref())?;
        if out.success() {
            let job: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
            let conditions = job.pointer("/status/conditions").and_then(Value::as_array);
            for c in conditions.into_iter().flatten() {
                let is_true = c.get("status").and_then(Value::as_str) == Some("True");
                match c.get("type").and_then(Value::as_str) {
                    Some("Complete") if is_true => return Ok(Ok(())),
                    Some("Failed") if is_true => {
                        let why = c.get("message").or(c.get("reason")).and_then(Value::as_str);
                        return Ok(Err(format!(
                            "{}: job failed: {}",
                            o.id,
                            why.unwrap_or("Failed")
                        )));
                    }
                    _ => {}
                }
            }
        }
        if Instant::now() >= deadline {
            return Ok(Err(format!("{}: job did not complete in time", o.id)));
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
