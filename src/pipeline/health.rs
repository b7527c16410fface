//! The health stage: a target is deployed when what it applied is healthy. All the objects a
//! target waits for are polled together: each round is one `kubectl get` per namespace that
//! lists every kind concerned once (Deployments, StatefulSets, DaemonSets, Jobs, custom
//! resources), judged by kstatus-like rules (`status_of`). One deadline covers the whole
//! target; an object that fails or is still not ready at the deadline is reported with its
//! replica counts and the reason its newest unready pod gives (`ImagePullBackOff`, …).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::backends::kube::Kubectl;
use crate::pipeline::kinds;
use crate::pipeline::manifest::{Object, ObjectId};

/// `kind.group/name` as kubectl resource argument.
pub fn resource_arg(o: &Object) -> String {
    format!("{}/{}", kind_arg(&o.id), o.id.name)
}

/// `kind.group` (or `kind` for the core group) as kubectl resource type.
fn kind_arg(id: &ObjectId) -> String {
    let kind = id.kind.to_lowercase();
    if id.group.is_empty() {
        kind
    } else {
        format!("{kind}.{}", id.group)
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

/// A custom resource: its status may carry conditions (`Ready`, `Stalled`, `Reconciling`).
fn is_custom(o: &Object) -> bool {
    kinds::builtin_scope(&o.id.group, &o.id.kind).is_none()
        && o.id.kind != "CustomResourceDefinition"
}

fn watched(o: &Object) -> bool {
    is_workload(o) || is_job(o) || is_custom(o)
}

/// Waits for every workload, Job and custom resource in `objects`; the inner `Err` names the
/// first one that failed, or at the deadline the first one not yet healthy, and why.
pub fn wait(
    kubectl: &Kubectl,
    objects: &[&Object],
    timeout: Duration,
    progress: &mut dyn FnMut(&str) -> crate::out::SlowGuard,
) -> Result<std::result::Result<(), Unhealthy>> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&Object> = objects.iter().copied().filter(|o| watched(o)).collect();
    if pending.is_empty() {
        return Ok(Ok(()));
    }
    let _slow = progress(&match pending.len() {
        1 => format!("waiting for {}", pending[0].id),
        n => format!("waiting for {} and {} more", pending[0].id, n - 1),
    });
    let mut pause = Duration::from_millis(100);
    let mut last: BTreeMap<ObjectId, State> = BTreeMap::new();
    let (begun, since) = (Instant::now(), chrono::Utc::now());
    loop {
        let live = fetch(kubectl, &pending)?;
        let mut still = Vec::new();
        for o in pending {
            let state = match live.objects.get(&o.id) {
                Some(body) => status_of(o, body),
                None if live
                    .unlisted
                    .iter()
                    .any(|(ns, kind)| *ns == o.id.namespace && *kind == kind_arg(&o.id)) =>
                {
                    State::Current
                }
                None if live.unreadable.contains_key(&o.id.namespace) => {
                    State::InProgress(live.unreadable[&o.id.namespace].clone())
                }
                // A Job the TTL controller already removed has finished.
                None if is_job(o) && o.body.pointer("/spec/ttlSecondsAfterFinished").is_some() => {
                    State::Current
                }
                None => State::InProgress("not found".into()),
            };
            match state {
                State::Current => {}
                // A progress deadline the previous rollout exceeded, until the controller has
                // had a moment to start this one (it may count the new generation as observed
                // before it rewrites the condition).
                State::Failed(why)
                    if begun.elapsed() < GRACE
                        && live
                            .objects
                            .get(&o.id)
                            .is_some_and(|b| stale_deadline(b, since)) =>
                {
                    last.insert(o.id.clone(), State::InProgress(why));
                    still.push(o);
                }
                State::Failed(why) => {
                    let detail = detail(kubectl, o, live.objects.get(&o.id));
                    return Ok(Err(Unhealthy::Failed {
                        object: o.id.clone(),
                        why: with_detail(why, detail),
                    }));
                }
                other => {
                    last.insert(o.id.clone(), other);
                    still.push(o);
                }
            }
        }
        pending = still;
        let Some(first) = pending.first() else {
            return Ok(Ok(()));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = match last.remove(&first.id) {
                Some(State::InProgress(why)) => why,
                _ => String::new(),
            };
            let detail = detail(kubectl, first, live.objects.get(&first.id));
            return Ok(Err(Unhealthy::NotInTime {
                object: first.id.clone(),
                secs: timeout.as_secs(),
                status: with_detail(why, detail),
            }));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// How long a failure condition older than the wait is taken for the previous rollout's.
const GRACE: Duration = Duration::from_secs(3);

/// Whether a Deployment's `ProgressDeadlineExceeded` was written before `since` (the condition's
/// times have whole seconds, hence the second of slack).
fn stale_deadline(body: &Value, since: chrono::DateTime<chrono::Utc>) -> bool {
    condition(body, "Progressing")
        .filter(|c| str_at(c, "/reason") == "ProgressDeadlineExceeded")
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(str_at(c, "/lastUpdateTime")).ok())
        .is_some_and(|t| t < since - chrono::Duration::seconds(1))
}

fn with_detail(why: String, detail: Option<String>) -> String {
    match detail {
        Some(d) if why.is_empty() => d,
        Some(d) => format!("{why}; {d}"),
        None => why,
    }
}

/// What one round of polling saw.
#[derive(Default)]
struct Live {
    objects: BTreeMap<ObjectId, Value>,
    /// Namespaces whose listing failed, with kubectl's reason: asked again next round.
    unreadable: BTreeMap<Option<String>, String>,
    /// Custom kinds (`kind.group`, by namespace) kubectl cannot list (a CRD whose singular
    /// name is not its kind's, one removed meanwhile): not waited for, as before there was a
    /// wait for custom resources at all.
    unlisted: Vec<(Option<String>, String)>,
}

/// The live objects among `objects`: one `kubectl get` per namespace, listing each kind once;
/// when that fails, one per kind, so a custom kind kubectl cannot list spoils nothing else.
fn fetch(kubectl: &Kubectl, objects: &[&Object]) -> Result<Live> {
    let mut by_ns: BTreeMap<Option<&str>, Vec<(String, bool)>> = BTreeMap::new();
    for o in objects {
        let kinds = by_ns.entry(o.id.namespace.as_deref()).or_default();
        let k = kind_arg(&o.id);
        if !kinds.iter().any(|(have, _)| *have == k) {
            kinds.push((k, is_custom(o)));
        }
    }
    let mut live = Live::default();
    for (ns, kinds) in by_ns {
        let all: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        let out = kubectl.get_json(&all.join(","), ns)?;
        if out.success() {
            read_items(&out.stdout, ns, &mut live.objects);
            continue;
        }
        let why = format!("kubectl get {}: {}", all.join(","), out.reason());
        if !kinds.iter().any(|(_, custom)| *custom) {
            live.unreadable.insert(ns.map(str::to_string), why);
            continue;
        }
        for (kind, custom) in &kinds {
            let out = kubectl.get_json(kind, ns)?;
            if out.success() {
                read_items(&out.stdout, ns, &mut live.objects);
            } else if *custom {
                log::info!("not waiting for {kind}: kubectl get: {}", out.reason());
                live.unlisted.push((ns.map(str::to_string), kind.clone()));
            } else {
                live.unreadable.insert(ns.map(str::to_string), why.clone());
            }
        }
    }
    Ok(live)
}

fn read_items(stdout: &str, ns: Option<&str>, into: &mut BTreeMap<ObjectId, Value>) {
    let list: Value = serde_json::from_str(stdout).unwrap_or(Value::Null);
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| std::slice::from_ref(&list));
    for item in items {
        let api_version = item.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let id = ObjectId {
            group: kinds::group_of(api_version).to_string(),
            kind: str_at(item, "/kind").to_string(),
            namespace: ns.map(str::to_string),
            name: str_at(item, "/metadata/name").to_string(),
        };
        into.insert(id, item.clone());
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// Where an object stands (kstatus' vocabulary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Current,
    /// Not yet, and what it is waiting for (replica counts, a condition's message).
    InProgress(String),
    /// It will not get there by waiting.
    Failed(String),
}

fn condition<'a>(body: &'a Value, kind: &str) -> Option<&'a Value> {
    body.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn condition_is(body: &Value, kind: &str, status: &str) -> bool {
    condition(body, kind).is_some_and(|c| str_at(c, "/status") == status)
}

fn condition_text(c: &Value) -> String {
    let (reason, message) = (str_at(c, "/reason"), str_at(c, "/message"));
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_string(),
        _ => message.to_string(),
    }
}

/// The rules `kubectl rollout status` and kstatus apply, for the live `body` of `o`.
pub fn status_of(o: &Object, body: &Value) -> State {
    let generation = int_at(body, "/metadata/generation").unwrap_or(0);
    let observed = int_at(body, "/status/observedGeneration");
    let behind = observed.is_some_and(|g| g < generation)
        || (observed.is_none() && (is_workload(o) || is_job(o)));
    if is_job(o) {
        return match job_state(body) {
            JobState::Complete => State::Current,
            JobState::Failed(why) => State::Failed(format!("job failed: {why}")),
            JobState::Running => State::InProgress(format!(
                "{} active, {} succeeded, {} failed",
                int_at(body, "/status/active").unwrap_or(0),
                int_at(body, "/status/succeeded").unwrap_or(0),
                int_at(body, "/status/failed").unwrap_or(0)
            )),
        };
    }
    if behind {
        return State::InProgress("the controller has not seen the new generation yet".into());
    }
    let n = |p: &str| int_at(body, p).unwrap_or(0);
    let want = int_at(body, "/spec/replicas").unwrap_or(1);
    match (o.id.group.as_str(), o.id.kind.as_str()) {
        ("apps", "Deployment") => {
            if condition(body, "Progressing")
                .is_some_and(|c| str_at(c, "/reason") == "ProgressDeadlineExceeded")
            {
                return State::Failed(format!(
                    "deployment {:?} exceeded its progress deadline ({} of {want} updated replicas available)",
                    o.id.name,
                    n("/status/availableReplicas").min(n("/status/updatedReplicas"))
                ));
            }
            let (updated, total, available) = (
                n("/status/updatedReplicas"),
                n("/status/replicas"),
                n("/status/availableReplicas"),
            );
            if updated < want || total > updated || available < updated {
                return State::InProgress(format!(
                    "{updated} of {want} replicas updated, {available} available, {} old pending termination",
                    (total - updated).max(0)
                ));
            }
            State::Current
        }
        ("apps", "StatefulSet") => {
            if str_at(body, "/spec/updateStrategy/type") == "OnDelete" {
                return State::Current;
            }
            let ready = n("/status/readyReplicas");
            let updated = n("/status/updatedReplicas");
            let counts = format!("{ready} of {want} replicas ready, {updated} updated");
            if ready < want {
                return State::InProgress(counts);
            }
            let partition =
                int_at(body, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
            if partition > 0 {
                return if updated < want - partition {
                    State::InProgress(counts)
                } else {
                    State::Current
                };
            }
            if str_at(body, "/status/updateRevision") != str_at(body, "/status/currentRevision") {
                return State::InProgress(counts);
            }
            State::Current
        }
        ("apps", "DaemonSet") => {
            if str_at(body, "/spec/updateStrategy/type") == "OnDelete" {
                return State::Current;
            }
            let desired = n("/status/desiredNumberScheduled");
            let updated = n("/status/updatedNumberScheduled");
            let available = n("/status/numberAvailable");
            if updated < desired || available < desired {
                return State::InProgress(format!(
                    "{updated} of {desired} scheduled pods updated, {available} available"
                ));
            }
            State::Current
        }
        _ => {
            if let Some(c) = condition(body, "Stalled").filter(|c| str_at(c, "/status") == "True") {
                return State::Failed(condition_text(c));
            }
            if condition_is(body, "Reconciling", "True") {
                let c = condition(body, "Reconciling").unwrap_or(&Value::Null);
                return State::InProgress(condition_text(c));
            }
            match condition(body, "Ready") {
                Some(c) if str_at(c, "/status") != "True" => State::InProgress(format!(
                    "Ready is {}: {}",
                    str_at(c, "/status"),
                    condition_text(c)
                )),
                _ => State::Current,
            }
        }
    }
}

/// Why a workload's pods are not ready: the newest pod that is not, with its container's
/// waiting or termination reason, else its failing condition. None for other kinds, or when
/// the pods cannot be read (the reason is only a detail).
fn detail(kubectl: &Kubectl, o: &Object, live: Option<&Value>) -> Option<String> {
    if !is_workload(o) && !is_job(o) {
        return None;
    }
    let labels = live?.pointer("/spec/selector/matchLabels")?.as_object()?;
    let selector: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    if selector.is_empty() {
        return None;
    }
    let out = kubectl
        .get_selected_json("pods", &selector.join(","), o.id.namespace.as_deref())
        .ok()?;
    let pods: Value = serde_json::from_str(&out.stdout).ok()?;
    let mut pods: Vec<&Value> = pods.get("items")?.as_array()?.iter().collect();
    pods.sort_by_key(|p| std::cmp::Reverse(str_at(p, "/metadata/creationTimestamp").to_string()));
    pods.into_iter().find_map(pod_reason)
}

/// Why one pod is not ready, or None when it is.
pub fn pod_reason(pod: &Value) -> Option<String> {
    if condition_is(pod, "Ready", "True") || str_at(pod, "/status/phase") == "Succeeded" {
        return None;
    }
    let name = str_at(pod, "/metadata/name");
    let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"];
    for c in statuses
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
    {
        for state in [
            "/state/waiting",
            "/state/terminated",
            "/lastState/terminated",
        ] {
            let Some(s) = c.pointer(state) else { continue };
            let reason = str_at(s, "/reason");
            if reason.is_empty() || reason == "Completed" {
                continue;
            }
            let message = str_at(s, "/message");
            let container = str_at(c, "/name");
            return Some(if message.is_empty() {
                format!("pod {name}: container {container}: {reason}")
            } else {
                format!("pod {name}: container {container}: {reason}: {message}")
            });
        }
    }
    // `Ready` says it best; else the failing condition that changed last (`PodScheduled`…).
    let failing = condition(pod, "Ready")
        .filter(|c| str_at(c, "/status") != "True")
        .or_else(|| {
            pod.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| str_at(c, "/status") != "True")
                .max_by_key(|c| str_at(c, "/lastTransitionTime").to_string())
        });
    Some(match failing {
        Some(c) => format!(
            "pod {name}: {} is {}: {}",
            str_at(c, "/type"),
            str_at(c, "/status"),
            condition_text(c)
        ),
        None => format!("pod {name}: {}", str_at(pod, "/status/phase")),
    })
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
    /// The target's deadline passed with this object not healthy yet: where it stood.
    NotInTime {
        object: ObjectId,
        secs: u64,
        status: String,
    },
    /// The object will not become healthy (a Deployment past its progress deadline, a
    /// failed Job, a stalled custom resource), and why.
    Failed { object: ObjectId, why: String },
}

impl Unhealthy {
    pub fn object(&self) -> &ObjectId {
        match self {
            Unhealthy::NotInTime { object, .. } | Unhealthy::Failed { object, .. } => object,
        }
    }
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::NotInTime {
                object,
                secs,
                status,
            } if status.is_empty() => write!(f, "{object}: not healthy within {secs}s"),
            Unhealthy::NotInTime {
                object,
                secs,
                status,
            } => write!(f, "{object}: not healthy within {secs}s: {status}"),
            Unhealthy::Failed { object, why } => write!(f, "{object}: {why}"),
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

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "apps", "generation": generation},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
               "status": status})
    }

    #[test]
    fn workloads_follow_the_rules_of_rollout_status() {
        let web = of_kind("apps/v1", "Deployment");
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                          "availableReplicas": 2});
        assert_eq!(status_of(&web, &deployment(2, done)), State::Current);
        let old = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                         "availableReplicas": 2});
        assert!(matches!(
            status_of(&web, &deployment(2, old)),
            State::InProgress(_)
        ));
        let rolling = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
                             "availableReplicas": 2});
        assert_eq!(
            status_of(&web, &deployment(2, rolling)),
            State::InProgress(
                "2 of 2 replicas updated, 2 available, 1 old pending termination".into()
            )
        );
        let stuck = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
                           "availableReplicas": 0, "conditions": [{"type": "Progressing",
                           "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        assert_eq!(
            status_of(&web, &deployment(2, stuck)),
            State::Failed(
                "deployment \"web\" exceeded its progress deadline (0 of 2 updated replicas available)"
                    .into()
            )
        );

        let sts = of_kind("apps/v1", "StatefulSet");
        let body = |status: Value, strategy: Value| {
            json!({"metadata": {"generation": 1},
                   "spec": {"replicas": 3, "updateStrategy": strategy}, "status": status})
        };
        let rolling = json!({"type": "RollingUpdate"});
        let ready = json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 3,
                           "currentRevision": "a", "updateRevision": "a"});
        assert_eq!(
            status_of(&sts, &body(ready.clone(), rolling.clone())),
            State::Current
        );
        let mut revising = ready.clone();
        revising["updateRevision"] = json!("b");
        assert!(matches!(
            status_of(&sts, &body(revising.clone(), rolling)),
            State::InProgress(_)
        ));
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        revising["updatedReplicas"] = json!(1);
        assert_eq!(
            status_of(&sts, &body(revising, partitioned)),
            State::Current
        );
        let unready = json!({"observedGeneration": 1, "readyReplicas": 1});
        assert_eq!(
            status_of(
                &sts,
                &body(unready.clone(), json!({"type": "RollingUpdate"}))
            ),
            State::InProgress("1 of 3 replicas ready, 0 updated".into())
        );
        assert_eq!(
            status_of(&sts, &body(unready, json!({"type": "OnDelete"}))),
            State::Current
        );

        let ds = of_kind("apps/v1", "DaemonSet");
        let body = |available: i64| {
            json!({"metadata": {"generation": 4}, "spec": {},
                   "status": {"observedGeneration": 4, "desiredNumberScheduled": 2,
                              "updatedNumberScheduled": 2, "numberAvailable": available}})
        };
        assert_eq!(status_of(&ds, &body(2)), State::Current);
        assert_eq!(
            status_of(&ds, &body(1)),
            State::InProgress("2 of 2 scheduled pods updated, 1 available".into())
        );
    }

    #[test]
    fn custom_resources_by_their_conditions() {
        let widget = of_kind("example.com/v1", "Widget");
        assert!(is_custom(&widget) && watched(&widget));
        assert!(!watched(&of_kind("v1", "ConfigMap")));
        let body = |conditions: Value| {
            json!({"metadata": {"generation": 3},
                   "status": {"observedGeneration": 3, "conditions": conditions}})
        };
        assert_eq!(status_of(&widget, &json!({})), State::Current);
        assert_eq!(
            status_of(&widget, &body(json!([{"type": "Ready", "status": "True"}]))),
            State::Current
        );
        assert_eq!(
            status_of(
                &widget,
                &body(
                    json!([{"type": "Ready", "status": "False", "reason": "Waiting",
                              "message": "dependency not ready"}])
                )
            ),
            State::InProgress("Ready is False: Waiting: dependency not ready".into())
        );
        assert_eq!(
            status_of(
                &widget,
                &body(
                    json!([{"type": "Stalled", "status": "True", "reason": "InvalidSpec",
                              "message": "spec.size must be positive"}])
                )
            ),
            State::Failed("InvalidSpec: spec.size must be positive".into())
        );
        let behind = json!({"metadata": {"generation": 4},
                            "status": {"observedGeneration": 3, "conditions":
                                       [{"type": "Ready", "status": "True"}]}});
        assert!(matches!(status_of(&widget, &behind), State::InProgress(_)));
    }

    #[test]
    fn a_pods_reason_is_its_containers_or_its_condition() {
        let pod = |statuses: Value, conditions: Value| {
            json!({"metadata": {"name": "web-1"},
                   "status": {"phase": "Pending", "containerStatuses": statuses,
                              "conditions": conditions}})
        };
        let pulling = json!([{"name": "web", "state": {"waiting": {"reason": "ImagePullBackOff",
                              "message": "Back-off pulling image \"web:9\""}}}]);
        assert_eq!(
            pod_reason(&pod(pulling, json!([]))).unwrap(),
            "pod web-1: container web: ImagePullBackOff: Back-off pulling image \"web:9\""
        );
        let crashing = json!([{"name": "web", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                               "lastState": {"terminated": {"reason": "Error"}}}]);
        assert_eq!(
            pod_reason(&pod(crashing, json!([]))).unwrap(),
            "pod web-1: container web: CrashLoopBackOff"
        );
        let unready = json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                              "message": "containers with unready status: [web]",
                              "lastTransitionTime": "2026-01-01T00:00:01Z"},
                             {"type": "PodScheduled", "status": "True"}]);
        assert_eq!(
            pod_reason(&pod(
                json!([{"name": "web", "state": {"running": {}}}]),
                unready
            ))
            .unwrap(),
            "pod web-1: Ready is False: ContainersNotReady: containers with unready status: [web]"
        );
        let ready = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(pod_reason(&pod(json!([]), ready)), None);
    }

    /// A stand-in for kubectl's `get -o json`: prints the file `live.json` (a List), or for
    /// pods `pods.json`, and records its arguments in `calls`.
    fn fake_kubectl(dir: &std::path::Path) -> Kubectl {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("kubectl");
        let d = dir.display();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{d}/calls'\ncase \"$*\" in\n  *gadget.example.com*) echo 'error: the server does not have a resource type \"gadget\"' >&2; exit 1;;\n  *' pods '*) cat '{d}/pods.json';;\n  *' get '*) cat '{d}/live.json';;\n  *) exit 2;;\nesac\n"
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
    fn one_get_per_namespace_for_all_objects_and_the_first_failure_named() {
        let dir = tempfile::tempdir().unwrap();
        let kubectl = fake_kubectl(dir.path());
        let list = |items: Vec<Value>| json!({"kind": "List", "items": items}).to_string();
        let web = object(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n",
        );
        let api = object(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 2\n",
        );
        let migrate = object("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n");
        let cm = of_kind("v1", "ConfigMap");
        let done = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                          "availableReplicas": 2});
        let named = |mut d: Value, name: &str| {
            d["metadata"]["name"] = json!(name);
            d["metadata"]["generation"] = json!(1);
            d
        };
        let complete = json!({"apiVersion": "batch/v1", "kind": "Job",
                              "metadata": {"name": "migrate", "generation": 1},
                              "status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        std::fs::write(
            dir.path().join("live.json"),
            list(vec![
                named(deployment(1, done.clone()), "web"),
                named(deployment(1, done.clone()), "api"),
                complete,
            ]),
        )
        .unwrap();
        let minute = Duration::from_secs(60);
        let all = [&cm, &web, &api, &migrate];
        assert_eq!(wait(&kubectl, &all, minute, &mut quiet).unwrap(), Ok(()));
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(calls.lines().count(), 1, "{calls}");
        assert!(
            calls.contains("get deployment.apps,job.batch -o json --namespace apps"),
            "{calls}"
        );

        // Nothing to wait for: kubectl is not even asked.
        std::fs::remove_file(dir.path().join("calls")).unwrap();
        assert_eq!(wait(&kubectl, &[&cm], minute, &mut quiet).unwrap(), Ok(()));
        assert!(!dir.path().join("calls").exists());

        // One Deployment past its progress deadline: named at once, with its pod's reason.
        let stuck = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                           "availableReplicas": 0, "conditions": [{"type": "Progressing",
                           "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        std::fs::write(
            dir.path().join("live.json"),
            list(vec![
                named(deployment(1, done), "web"),
                named(deployment(1, stuck.clone()), "api"),
            ]),
        )
        .unwrap();
        let pods = json!({"items": [{"metadata": {"name": "api-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "api",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}]}}]});
        std::fs::write(dir.path().join("pods.json"), pods.to_string()).unwrap();
        let u = wait(&kubectl, &[&web, &api], minute, &mut quiet)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            u.to_string(),
            "Deployment.apps apps/api: deployment \"api\" exceeded its progress deadline (0 of 2 updated replicas available); pod api-1: container api: ImagePullBackOff: no such image"
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert!(
            calls.contains("get pods -l app=web -o json --namespace apps"),
            "{calls}"
        );

        // Still rolling at the deadline: its counts and its pod's reason.
        let mut rolling = stuck;
        rolling["conditions"] = json!([]);
        std::fs::write(
            dir.path().join("live.json"),
            list(vec![named(deployment(1, rolling), "api")]),
        )
        .unwrap();
        let u = wait(&kubectl, &[&api], Duration::from_millis(250), &mut quiet)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            u.to_string(),
            "Deployment.apps apps/api: not healthy within 0s: 2 of 2 replicas updated, 0 available, 0 old pending termination; pod api-1: container api: ImagePullBackOff: no such image"
        );

        // A Job that failed, and one that is still running at the deadline.
        let failed = json!({"apiVersion": "batch/v1", "kind": "Job",
                            "metadata": {"name": "migrate", "generation": 1},
                            "status": {"failed": 1, "conditions": [{"type": "Failed",
                            "status": "True", "message": "backoff limit"}]}});
        std::fs::write(dir.path().join("live.json"), list(vec![failed])).unwrap();
        std::fs::write(
            dir.path().join("pods.json"),
            json!({"items": []}).to_string(),
        )
        .unwrap();
        let u = wait(&kubectl, &[&migrate], minute, &mut quiet)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            u.to_string(),
            "Job.batch apps/migrate: job failed: backoff limit"
        );
        let running = json!({"apiVersion": "batch/v1", "kind": "Job",
                             "metadata": {"name": "migrate", "generation": 1},
                             "status": {"active": 1}});
        std::fs::write(dir.path().join("live.json"), list(vec![running])).unwrap();
        let u = wait(&kubectl, &[&migrate], Duration::ZERO, &mut quiet)
            .unwrap()
            .unwrap_err();
        assert_eq!(u.object(), &migrate.id);
        assert_eq!(
            u.to_string(),
            "Job.batch apps/migrate: not healthy within 0s: 1 active, 0 succeeded, 0 failed"
        );
    }

    #[test]
    fn a_custom_kind_kubectl_cannot_list_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let kubectl = fake_kubectl(dir.path());
        let web = object(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n",
        );
        let gadget = of_kind("example.com/v1", "Gadget");
        let mut done = deployment(
            1,
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                   "availableReplicas": 2}),
        );
        done["metadata"]["generation"] = json!(1);
        std::fs::write(
            dir.path().join("live.json"),
            json!({"kind": "List", "items": [done]}).to_string(),
        )
        .unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            wait(&kubectl, &[&web, &gadget], minute, &mut quiet).unwrap(),
            Ok(())
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        let gets: Vec<&str> = calls
            .lines()
            .map(|l| l.split(" get ").nth(1).unwrap_or(l))
            .collect();
        assert_eq!(
            gets,
            [
                "deployment.apps,gadget.example.com -o json --namespace apps",
                "deployment.apps -o json --namespace apps",
                "gadget.example.com -o json --namespace apps",
            ]
        );
    }
}
