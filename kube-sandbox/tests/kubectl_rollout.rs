//! Rollouts through the real kubectl: status (succeeding, failing, delayed),
//! history and undo for Deployments, and the StatefulSet, DaemonSet and Job
//! stand-in controllers.

mod common;

use common::{deployment, Cluster};
use std::time::Instant;

const FAIL: &str = "kube-sandbox.io/fail-rollout: \"true\"";

#[test]
fn rollout_status_succeeds_for_a_healthy_deployment() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&deployment("web", "nginx:1", "")).ok();
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .ok();
    assert!(
        out.stdout.contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    let d = c.web();
    assert_eq!(d["status"]["observedGeneration"], 1);
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
}

#[test]
fn rollout_status_fails_with_fail_rollout_annotation() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&deployment("web", "nginx:1", FAIL)).ok();
    let out = c.kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("exceeded its progress deadline"),
        "{}",
        out.stderr
    );
}

#[test]
fn ready_delay_holds_rollout_status_until_ready() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&deployment(
        "web",
        "nginx:1",
        "kube-sandbox.io/ready-delay: 1500ms",
    ))
    .ok();
    let d = c.web();
    assert_eq!(d["status"]["availableReplicas"], 0);
    let started = Instant::now();
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .ok();
    assert!(
        out.stdout.contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    assert!(
        started.elapsed().as_millis() >= 700,
        "returned after {:?}",
        started.elapsed()
    );
}

#[test]
fn rollout_undo_restores_the_previous_template() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&deployment("web", "nginx:1", "")).ok();
    c.apply(&deployment("web", "nginx:2", FAIL)).ok();
    assert_ne!(
        c.kubectl(&["rollout", "status", "deployment/web", "--timeout=10s"])
            .code,
        0
    );

    let history = c.kubectl(&["rollout", "history", "deployment/web"]).ok();
    assert!(
        history.stdout.contains('1') && history.stdout.contains('2'),
        "{}",
        history.stdout
    );
    let out = c.kubectl(&["rollout", "undo", "deployment/web"]).ok();
    assert!(out.stdout.contains("rolled back"), "{}", out.stdout);

    let d = c.web();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    // The revision-1 ReplicaSet is reused, as the real controller does.
    let replica_sets = c.sandbox.objects("apps/v1", "ReplicaSet");
    assert_eq!(replica_sets.len(), 2);
    let active: Vec<_> = replica_sets
        .iter()
        .filter(|rs| rs["spec"]["replicas"] == 2)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(
        active[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .ok();

    let out = c
        .kubectl(&["rollout", "undo", "deployment/web", "--to-revision=2"])
        .ok();
    assert!(out.stdout.contains("rolled back"), "{}", out.stdout);
    let d = c.web();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
}

#[test]
fn reapplying_the_previous_manifest_heals() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&deployment("web", "nginx:1", FAIL)).ok();
    assert_ne!(
        c.kubectl(&["rollout", "status", "deployment/web", "--timeout=10s"])
            .code,
        0
    );
    c.apply(&deployment("web", "nginx:1", "")).ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .ok();
}

#[test]
fn scale_updates_replicas_and_status() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&deployment("web", "nginx:1", "")).ok();
    c.kubectl(&["scale", "deployment/web", "--replicas=5"]).ok();
    let d = c.web();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["status"]["readyReplicas"], 5);
}

#[test]
fn statefulset_daemonset_and_job_complete() {
    let Some(c) = Cluster::start() else { return };
    let sts = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: agent}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec: {restartPolicy: Never, containers: [{name: m, image: migrate}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  template:
    metadata: {annotations: {kube-sandbox.io/fail-job: \"true\"}}
    spec: {restartPolicy: Never, containers: [{name: m, image: migrate}]}
";
    c.apply(sts).ok();
    let out = c
        .kubectl(&["rollout", "status", "statefulset/db", "--timeout=20s"])
        .ok();
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    let out = c
        .kubectl(&["rollout", "status", "daemonset/agent", "--timeout=20s"])
        .ok();
    assert!(
        out.stdout.contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/migrate",
        "--timeout=20s",
    ])
    .ok();
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/broken",
        "--timeout=20s",
    ])
    .ok();
}

#[test]
fn server_side_reapply_of_the_previous_manifest_heals() {
    let Some(c) = Cluster::start() else { return };
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=hookops",
        "--force-conflicts",
        "-f",
        "-",
    ];
    c.kubectl_stdin(&ssa, &deployment("web", "web:1", "")).ok();
    c.kubectl_stdin(&ssa, &deployment("web", "web:2", FAIL))
        .ok();
    assert_ne!(
        c.kubectl(&["rollout", "status", "deployment/web", "--timeout=10s"])
            .code,
        0
    );
    c.kubectl_stdin(&ssa, &deployment("web", "web:1", "")).ok();
    let d = c.web();
    let template = &d["spec"]["template"];
    assert!(
        template["metadata"]["annotations"]
            .get("kube-sandbox.io/fail-rollout")
            .is_none(),
        "{template}"
    );
    assert_eq!(template["spec"]["containers"][0]["image"], "web:1");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    c.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "--watch=true",
        "--timeout=20s",
    ])
    .ok();

    let diff = [
        "diff",
        "--server-side",
        "--field-manager=hookops",
        "--force-conflicts",
        "-f",
        "-",
    ];
    assert_eq!(
        c.kubectl_stdin(&diff, &deployment("web", "web:1", "")).code,
        0
    );
    let changed = c.kubectl_stdin(&diff, &deployment("web", "web:3", ""));
    assert_eq!(changed.code, 1, "{}", changed.stderr);
    assert!(
        changed.stdout.contains("+      - image: web:3"),
        "{}",
        changed.stdout
    );
}
