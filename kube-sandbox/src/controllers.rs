//! Stand-ins for the workload controllers: they run synchronously after each
//! write (and again when a readiness delay expires) and produce the
//! ReplicaSets and status fields that `kubectl rollout` reads. No pods run.

use crate::store::{now_rfc3339, Store};
use crate::State;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const FAIL_ROLLOUT: &str = "kube-sandbox.io/fail-rollout";
pub const READY_DELAY: &str = "kube-sandbox.io/ready-delay";
pub const FAIL_JOB: &str = "kube-sandbox.io/fail-job";

const DEPLOYMENTS: &str = "apps/deployments";
const REPLICASETS: &str = "apps/replicasets";
const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

/// A reconcile to run again after a readiness delay.
pub struct Timer {
    pub after: Duration,
    pub type_key: String,
    pub namespace: String,
    pub name: String,
}

/// Brings the dependents and status of one object up to date with its spec.
pub fn reconcile(st: &mut State, type_key: &str, ns: &str, name: &str) -> Vec<Timer> {
    let Some(obj) = st.store.get(type_key, ns, name).cloned() else {
        return Vec::new();
    };
    match type_key {
        DEPLOYMENTS | "apps/statefulsets" | "apps/daemonsets" | "batch/jobs" => {}
        _ => return Vec::new(),
    }
    let template = &obj["spec"]["template"];
    let hash = template_hash(template);
    let (ready, timer) = readiness(st, type_key, ns, name, template, &hash);
    let status = match type_key {
        DEPLOYMENTS => {
            let revision = sync_replicasets(&mut st.store, &obj, &hash, ready);
            let mut d = obj.clone();
            d["metadata"]["annotations"][REVISION] = json!(revision.to_string());
            let status = deployment_status(&obj, &hash, ready, failing(template, FAIL_ROLLOUT));
            d["status"] = status;
            if d != obj {
                st.store.put(type_key, ns, name, d);
            }
            return timer.into_iter().collect();
        }
        "apps/statefulsets" => statefulset_status(&obj, &hash, ready),
        "apps/daemonsets" => daemonset_status(&obj, ready),
        _ => job_status(&obj, ready, failing(template, FAIL_JOB)),
    };
    let mut updated = obj.clone();
    updated["status"] = merge_condition_times(&obj["status"], status);
    if updated != obj {
        st.store.put(type_key, ns, name, updated);
    }
    timer.into_iter().collect()
}

fn annotation<'a>(template: &'a Value, key: &str) -> Option<&'a str> {
    template["metadata"]["annotations"][key].as_str()
}

fn failing(template: &Value, key: &str) -> bool {
    annotation(template, key) == Some("true")
}

/// Whether the current template counts as ready: never with fail-rollout,
/// otherwise once its ready-delay (restarted by every new template) is over.
fn readiness(
    st: &mut State,
    type_key: &str,
    ns: &str,
    name: &str,
    template: &Value,
    hash: &str,
) -> (bool, Option<Timer>) {
    if failing(template, FAIL_ROLLOUT) {
        return (false, None);
    }
    let delay = annotation(template, READY_DELAY)
        .and_then(parse_duration)
        .unwrap_or_default();
    let key = (type_key.to_string(), ns.to_string(), name.to_string());
    let now = Instant::now();
    let ready_at = match st.ready_at.get(&key) {
        Some((h, at)) if h == hash => *at,
        _ => {
            st.ready_at.insert(key, (hash.to_string(), now + delay));
            if delay > Duration::ZERO {
                let timer = Timer {
                    after: delay,
                    type_key: type_key.into(),
                    namespace: ns.into(),
                    name: name.into(),
                };
                return (false, Some(timer));
            }
            now
        }
    };
    (now >= ready_at, None)
}

/// "2s", "500ms", "1m", "1.5s".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let n: f64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(n * unit).ok()
}

/// A stable hash of a pod template. Nulls and empty objects/lists are
/// skipped because kubectl's typed round trip (as in `rollout undo`) adds
/// `creationTimestamp: null` and `resources: {}`, which the real server
/// would normalise away in the same way; keys are hashed in sorted order.
fn template_hash(template: &Value) -> String {
    fn feed(h: &mut u64, bytes: &[u8]) {
        for b in bytes {
            *h ^= u64::from(*b);
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn walk(h: &mut u64, v: &Value) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().filter(|k| !is_empty(&m[*k])).collect();
                keys.sort();
                feed(h, b"{");
                for k in keys {
                    feed(h, k.as_bytes());
                    feed(h, b":");
                    walk(h, &m[k]);
                }
                feed(h, b"}");
            }
            Value::Array(a) => {
                feed(h, b"[");
                for x in a {
                    walk(h, x);
                    feed(h, b",");
                }
                feed(h, b"]");
            }
            other => feed(h, other.to_string().as_bytes()),
        }
    }
    fn is_empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.values().all(is_empty),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    let mut h = 0xcbf2_9ce4_8422_2325;
    walk(&mut h, template);
    // Kubernetes renders hashes with this alphabet to avoid vowels and lookalikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn revision(rs: &Value) -> u64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn owned_by(obj: &Value, uid: &Value) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == *uid && r["controller"] == json!(true))
        })
}

/// Makes sure the ReplicaSet for `hash` exists with the newest revision and
/// all the others are scaled to zero; prunes beyond revisionHistoryLimit.
/// Returns the revision of the current ReplicaSet.
fn sync_replicasets(store: &mut Store, d: &Value, hash: &str, ready: bool) -> u64 {
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = d["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = &d["metadata"]["uid"];
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let owned: Vec<Value> = store
        .list(REPLICASETS, Some(&ns))
        .filter(|rs| owned_by(rs, uid))
        .cloned()
        .collect();
    let max_rev = owned.iter().map(revision).max().unwrap_or(0);
    let current_name = format!("{name}-{hash}");
    let existing = owned
        .iter()
        .find(|rs| rs["metadata"]["name"] == json!(current_name));
    let rev = match existing {
        Some(rs) if revision(rs) == max_rev => max_rev,
        _ => max_rev + 1,
    };

    let mut annotations = serde_json::Map::new();
    if let Some(a) = d["metadata"]["annotations"].as_object() {
        for (k, v) in a {
            if k != REVISION && k != "kubectl.kubernetes.io/last-applied-configuration" {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    annotations.insert(REVISION.into(), json!(rev.to_string()));
    annotations.insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        json!(replicas.to_string()),
    );

    let mut rs = match existing {
        Some(rs) => rs.clone(),
        None => {
            let mut template = d["spec"]["template"].clone();
            template["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut labels = template["metadata"]["labels"].clone();
            labels[HASH_LABEL] = json!(hash);
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": current_name, "namespace": ns, "uid": store.new_uid(),
                    "creationTimestamp": now_rfc3339(), "generation": 1, "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": replicas, "selector": selector, "template": template}})
        }
    };
    rs["metadata"]["annotations"] = Value::Object(annotations);
    let was = rs.clone();
    if rs["spec"]["replicas"] != json!(replicas) {
        rs["spec"]["replicas"] = json!(replicas);
        bump_generation(&mut rs);
    }
    rs["status"] = replicaset_status(&rs, replicas, if ready { replicas } else { 0 });
    if existing != Some(&was) || rs != was {
        store.put(REPLICASETS, &ns, &current_name, rs);
    }

    let mut old: Vec<Value> = owned
        .into_iter()
        .filter(|rs| rs["metadata"]["name"] != json!(current_name))
        .collect();
    for rs in &mut old {
        if rs["spec"]["replicas"] != json!(0) {
            rs["spec"]["replicas"] = json!(0);
            bump_generation(rs);
            rs["status"] = replicaset_status(rs, 0, 0);
            let rs_name = rs["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            store.put(REPLICASETS, &ns, &rs_name, rs.clone());
        }
    }
    let limit = d["spec"]["revisionHistoryLimit"].as_u64().unwrap_or(10) as usize;
    old.sort_by_key(revision);
    let excess = old.len().saturating_sub(limit);
    for rs in &old[..excess] {
        if let Some(n) = rs["metadata"]["name"].as_str() {
            store.remove(REPLICASETS, &ns, n);
        }
    }
    rev
}

fn bump_generation(obj: &mut Value) {
    let g = obj["metadata"]["generation"].as_u64().unwrap_or(0);
    obj["metadata"]["generation"] = json!(g + 1);
}

fn replicaset_status(rs: &Value, replicas: u64, ready: u64) -> Value {
    json!({"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]})
}

fn condition(kind: &str, status: bool, reason: &str, message: String) -> Value {
    let now = now_rfc3339();
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
        "message": message, "lastUpdateTime": now, "lastTransitionTime": now})
}

/// Keeps the timestamps of conditions whose status and reason did not
/// change, so reconciling an unchanged object produces no new event.
fn merge_condition_times(old: &Value, mut new: Value) -> Value {
    if let Some(conds) = new["conditions"].as_array_mut() {
        for c in conds.iter_mut() {
            let prev = old["conditions"]
                .as_array()
                .and_then(|o| o.iter().find(|p| p["type"] == c["type"]));
            if let Some(p) =
                prev.filter(|p| p["status"] == c["status"] && p["reason"] == c["reason"])
            {
                *c = p.clone();
            }
        }
    }
    new
}

fn deployment_status(d: &Value, hash: &str, ready: bool, failed: bool) -> Value {
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let rs = format!("{name}-{hash}");
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let available = if ready { replicas } else { 0 };
    let avail_cond = if available >= replicas {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progress = if failed {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs}\" has timed out progressing."),
        )
    } else if ready {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs}\" has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs}\" is progressing."),
        )
    };
    let mut status = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": available, "availableReplicas": available,
        "conditions": [avail_cond, progress]});
    if available < replicas {
        status["unavailableReplicas"] = json!(replicas - available);
    }
    merge_condition_times(&d["status"], status)
}

fn statefulset_status(s: &Value, hash: &str, ready: bool) -> Value {
    let replicas = s["spec"]["replicas"].as_u64().unwrap_or(1);
    let ready_n = if ready { replicas } else { 0 };
    let revision = format!(
        "{}-{hash}",
        s["metadata"]["name"].as_str().unwrap_or_default()
    );
    json!({"observedGeneration": s["metadata"]["generation"], "replicas": replicas, "readyReplicas": ready_n,
        "availableReplicas": ready_n, "currentReplicas": replicas, "updatedReplicas": replicas,
        "currentRevision": revision, "updateRevision": revision, "collisionCount": 0})
}

fn daemonset_status(d: &Value, ready: bool) -> Value {
    let n = u64::from(ready);
    json!({"observedGeneration": d["metadata"]["generation"], "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": n, "updatedNumberScheduled": 1,
        "numberAvailable": n, "numberUnavailable": 1 - n})
}

fn job_status(j: &Value, done: bool, failed: bool) -> Value {
    let start = j["status"]["startTime"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(now_rfc3339);
    if failed {
        return json!({"startTime": start, "failed": 1, "active": 0, "conditions": [
            condition("Failed", true, "BackoffLimitExceeded", "Job has reached the specified backoff limit".into())]});
    }
    if !done {
        return json!({"startTime": start, "active": 1, "ready": 0});
    }
    let end = j["status"]["completionTime"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(now_rfc3339);
    json!({"startTime": start, "completionTime": end, "succeeded": 1, "active": 0, "ready": 0, "conditions": [
        condition("Complete", true, "", String::new())]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn template_hash_ignores_typed_round_trip_noise() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "x"}},
            "spec": {"containers": [{"image": "i", "name": "c", "resources": {}}]}});
        assert_eq!(template_hash(&a), template_hash(&b));
        let c = json!({"metadata": {"labels": {"app": "y"}}});
        assert_ne!(template_hash(&a), template_hash(&c));
    }
}
