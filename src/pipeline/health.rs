//! The health stage: a target is deployed when what it applied is healthy. Workloads are
//! followed with `kubectl rollout status`; Jobs are polled until Complete or Failed. One
//! deadline covers the whole target.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::backends::kube::Kubectl;
use crate::pipeline::manifest::{Object, ObjectId};

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

/// Waits for every workload and Job in `objects`; the inner `Err` names the first one that is
/// not healthy, and why.
pub fn wait(
    kubectl: &Kubectl,
    objects: &[&Object],
    timeout: Duration,
    progress: &mut dyn FnMut(&str) -> crate::out::SlowGuard,
) -> Result<std::result::Result<(), Unhealthy>> {
    let deadline = Instant::now() + timeout;
    for o in objects.iter().filter(|o| is_workload(o) || is_job(o)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(Unhealthy::NotInTime {
                object: o.id.clone(),
                secs: timeout.as_secs(),
            }));
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
            return Ok(Err(Unhealthy::Rollout {
                object: o.id.clone(),
                why: reason.to_string(),
            }));
        }
    }
    Ok(Ok(()))
}

fn wait_job(
    kubectl: &Kubectl,
    o: &Object,
    deadline: Instant,
) -> Result<std::result::Result<(), Unhealthy>> {
    let mut pause = Duration::from_millis(200);
    loop {
        let out = kubectl.get_json(&resource_arg(o), o.id.namespace.as_deref())?;
        if out.success() {
            let job: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
            match job_state(&job) {
                JobState::Complete => return Ok(Ok(())),
                JobState::Failed(why) => {
                    return Ok(Err(Unhealthy::JobFailed {
                        object: o.id.clone(),
                        why,
                    }));
                }
                JobState::Running => {}
            }
        }
        if Instant::now() >= deadline {
            return Ok(Err(Unhealthy::JobNotInTime {
                object: o.id.clone(),
            }));
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Where a Job stands, from its JSON (`kubectl get -o json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Complete,
    /// With the condition's message (else its reason).
    Failed(String),
    /// Neither yet, or the JSON says nothing readable: asked again until the deadline.
    Running,
}

/// The first of the Job's `Complete` or `Failed` conditions that is true decides.
pub fn job_state(job: &Value) -> JobState {
    let conditions = job.pointer("/status/conditions").and_then(Value::as_array);
    for c in conditions.into_iter().flatten() {
        let is_true = c.get("status").and_then(Value::as_str) == Some("True");
        match c.get("type").and_then(Value::as_str) {
            Some("Complete") if is_true => return JobState::Complete,
            Some("Failed") if is_true => {
                let why = c.get("message").or(c.get("reason")).and_then(Value::as_str);
                return JobState::Failed(why.unwrap_or("Failed").to_string());
            }
            _ => {}
        }
    }
    JobState::Running
}

/// Why an object is not healthy. Its text is the one-line reason that is printed and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// The target's deadline passed before this object's turn came.
    NotInTime { object: ObjectId, secs: u64 },
    /// `kubectl rollout status` gave up on a workload, saying why.
    Rollout { object: ObjectId, why: String },
    /// A Job reported Failed.
    JobFailed { object: ObjectId, why: String },
    /// A Job neither completed nor failed before the deadline.
    JobNotInTime { object: ObjectId },
}

impl Unhealthy {
    pub fn object(&self) -> &ObjectId {
        match self {
            Unhealthy::NotInTime { object, .. }
            | Unhealthy::Rollout { object, .. }
            | Unhealthy::JobFailed { object, .. }
            | Unhealthy::JobNotInTime { object } => object,
        }
    }
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::NotInTime { object, secs } => {
                write!(f, "{object}: not healthy within {secs}s")
            }
            Unhealthy::Rollout { object, why } => write!(f, "{object}: {why}"),
            Unhealthy::JobFailed { object, why } => write!(f, "{object}: job failed: {why}"),
            Unhealthy::JobNotInTime { object } => {
                write!(f, "{object}: job did not complete in time")
            }
        }
    }
}

impl std::error::Error for Unhealthy {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::mask::Masker;
    use crate::config::Environment;
    use crate::pipeline::manifest::parse;
    use serde_json::json;

    fn object(text: &str) -> Object {
        parse(text, "x.yaml", Some("apps")).unwrap().remove(0)
    }

    fn of_kind(api_version: &str, kind: &str) -> Object {
        object(&format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: web\n"
        ))
    }

    fn job(conditions: Value) -> Value {
        json!({"kind": "Job", "status": {"conditions": conditions}})
    }

    #[test]
    fn a_jobs_conditions_decide_its_state() {
        let complete = json!([{"type": "Complete", "status": "True"}]);
        assert_eq!(job_state(&job(complete)), JobState::Complete);
        let failed = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                             "message": "Job has reached the specified backoff limit"}]);
        assert_eq!(
            job_state(&job(failed)),
            JobState::Failed("Job has reached the specified backoff limit".into())
        );
        let reason_only =
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]);
        assert_eq!(
            job_state(&job(reason_only)),
            JobState::Failed("DeadlineExceeded".into())
        );
        let bare = json!([{"type": "Failed", "status": "True"}]);
        assert_eq!(job_state(&job(bare)), JobState::Failed("Failed".into()));
        // Conditions that are not true yet, or that say something else, decide nothing.
        let pending = json!([
            {"type": "Failed", "status": "False", "message": "not yet"},
            {"type": "Suspended", "status": "True"},
            {"type": "Complete", "status": "Unknown"},
        ]);
        assert_eq!(job_state(&job(pending)), JobState::Running);
        let later = json!([
            {"type": "Failed", "status": "False"},
            {"type": "Complete", "status": "True"},
        ]);
        assert_eq!(job_state(&job(later)), JobState::Complete);
        assert_eq!(
            job_state(&json!({"kind": "Job", "status": {}})),
            JobState::Running
        );
        assert_eq!(job_state(&Value::Null), JobState::Running);
        assert_eq!(job_state(&job(json!("garbage"))), JobState::Running);
    }

    #[test]
    fn workloads_and_their_resource_arguments() {
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            assert!(is_workload(&of_kind("apps/v1", kind)), "{kind}");
        }
        assert!(!is_workload(&of_kind("apps/v1", "ReplicaSet")));
        assert!(!is_workload(&of_kind("example.com/v1", "Deployment")));
        assert!(!is_workload(&of_kind("batch/v1", "Job")));
        assert!(is_job(&of_kind("batch/v1", "Job")));
        assert!(!is_job(&of_kind("example.com/v1", "Job")));

        assert_eq!(
            resource_arg(&of_kind("apps/v1", "StatefulSet")),
            "statefulset.apps/web"
        );
        assert_eq!(resource_arg(&of_kind("v1", "ConfigMap")), "configmap/web");
        assert_eq!(
            resource_arg(&of_kind("example.com/v1", "Widget")),
            "widget.example.com/web"
        );
    }

    /// A stand-in for kubectl: prints `job` for `get`, fails `rollout status` with `rollout`.
    fn fake_kubectl(dir: &std::path::Path, job: &Value, rollout: &str) -> Kubectl {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("kubectl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do\n  case \"$a\" in\n    get) printf '%s' '{job}'; exit 0;;\n    rollout) echo '{rollout}' >&2; exit 1;;\n  esac\ndone\nexit 2\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Kubectl::new(
            script.to_str().unwrap(),
            &Environment::default_for("main"),
            dir,
            Masker::default(),
        )
    }

    fn quiet(_: &str) -> crate::out::SlowGuard {
        crate::out::say_if_slow(String::new(), Duration::from_secs(3600))
    }

    #[test]
    fn wait_reports_the_first_unhealthy_object() {
        let dir = tempfile::tempdir().unwrap();
        let failed = job(json!([{"type": "Failed", "status": "True", "message": "backoff limit"}]));
        let kubectl = fake_kubectl(
            dir.path(),
            &failed,
            "error: deployment \"web\" exceeded its progress deadline",
        );
        let cm = of_kind("v1", "ConfigMap");
        let migrate = of_kind("batch/v1", "Job");
        let web = of_kind("apps/v1", "Deployment");
        let minute = Duration::from_secs(60);
        let why = |r: std::result::Result<(), Unhealthy>| r.unwrap_err();
        // Nothing to wait for: kubectl is not even asked.
        assert_eq!(wait(&kubectl, &[&cm], minute, &mut quiet).unwrap(), Ok(()));

        let u = why(wait(&kubectl, &[&cm, &migrate, &web], minute, &mut quiet).unwrap());
        assert_eq!(
            u,
            Unhealthy::JobFailed {
                object: migrate.id.clone(),
                why: "backoff limit".into()
            }
        );
        assert_eq!(
            u.to_string(),
            "Job.batch apps/web: job failed: backoff limit"
        );

        let u = why(wait(&kubectl, &[&web], minute, &mut quiet).unwrap());
        assert!(matches!(u, Unhealthy::Rollout { .. }), "{u:?}");
        assert_eq!(
            u.to_string(),
            "Deployment.apps apps/web: deployment \"web\" exceeded its progress deadline"
        );

        let u = why(wait(&kubectl, &[&web], Duration::ZERO, &mut quiet).unwrap());
        assert_eq!(u.object(), &web.id);
        assert_eq!(
            u.to_string(),
            "Deployment.apps apps/web: not healthy within 0s"
        );

        // A Job still running when the deadline passes.
        let running = fake_kubectl(dir.path(), &job(json!([])), "");
        let u = why(wait(
            &running,
            &[&migrate],
            Duration::from_millis(300),
            &mut quiet,
        )
        .unwrap());
        assert_eq!(
            u,
            Unhealthy::JobNotInTime {
                object: migrate.id.clone()
            }
        );
        assert_eq!(
            u.to_string(),
            "Job.batch apps/web: job did not complete in time"
        );
    }
}
