//! hookops against a real Kubernetes API server (kube-apiserver, etcd, the real workload
//! controllers and a fake kubelet: tests/it/cluster.rs, docs/test-cluster.md), through real
//! `git push`es. One cluster per test binary; every test works in namespaces of its own.

use std::time::Duration;

use crate::cluster::world;
use crate::util::{deployment_with, namespace, reasons, str_at, World, FAIL_ROLLOUT};

fn job(name: &str, ns: &str, image: &str, annotations: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {ns}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        x: \"y\"
{annotations}    spec:
      restartPolicy: Never
      containers:
      - name: task
        image: {image}
        command: [\"true\"]
"
    )
}

const FAIL_JOB: &str = "        kube-sandbox.io/fail-job: \"true\"\n";

#[test]
fn first_deploy_creates_kinds_the_sandbox_lacks() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("kinds");
    let objects = format!(
        "{deploy}---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  level: debug
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: {ns}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: {ns}
spec:
  schedule: \"0 3 * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: task
            image: busybox:1
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: web
  namespace: {ns}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 80
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
  namespace: {ns}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      app: web
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress
  namespace: {ns}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
",
        deploy = deployment_with("web", &ns, "nginx:1.27", 1, "", ""),
    );
    let commit = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/app/all.yaml", &objects),
        ],
        "first deploy",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&commit);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(commit.as_str()));
    for (kind, name) in [
        ("deployment.apps", "web"),
        ("service", "web"),
        ("configmap", "settings"),
        ("persistentvolumeclaim", "data"),
        ("cronjob.batch", "nightly"),
        ("horizontalpodautoscaler.autoscaling", "web"),
        ("poddisruptionbudget.policy", "web"),
        ("networkpolicy.networking.k8s.io", "deny-ingress"),
    ] {
        let o = c.get_json(kind, Some(&ns), name);
        let o = o.unwrap_or_else(|| panic!("{kind} {ns}/{name} was not created"));
        // Server-side apply with hookops' field manager made it.
        let managers: Vec<&str> = o["metadata"]["managedFields"]
            .as_array()
            .map(|m| m.iter().filter_map(|f| f["manager"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            managers.contains(&"hookops"),
            "{kind}: managers {managers:?}"
        );
    }
    // What a real server adds: an allocated cluster IP, the PVC protection finalizer, the
    // HPA's v2 metric round trip, the CronJob's defaults.
    let svc = c.get_json("service", Some(&ns), "web").unwrap();
    assert!(
        str_at(&svc, "/spec/clusterIP").starts_with("10.0.0."),
        "{svc}"
    );
    let pvc = c
        .get_json("persistentvolumeclaim", Some(&ns), "data")
        .unwrap();
    assert!(
        pvc["metadata"]["finalizers"]
            .to_string()
            .contains("kubernetes.io/pvc-protection"),
        "{pvc}"
    );
    let cron = c.get_json("cronjob.batch", Some(&ns), "nightly").unwrap();
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow", "{cron}");
    let hpa = c.get_json("hpa", Some(&ns), "web").unwrap();
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    // The real disruption controller computes the PDB from the running pod.
    assert!(
        c.wait_for(Duration::from_secs(30), || {
            c.get_json("pdb", Some(&ns), "web")
                .is_some_and(|p| p["status"]["currentHealthy"] == 1)
        }),
        "PDB never saw the healthy pod: {:?}",
        c.get_json("pdb", Some(&ns), "web")
    );
}

#[test]
fn deployment_rolls_out_through_the_real_controllers() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("rollout");
    let first = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "nginx:1.26", 2, "", ""),
            ),
        ],
        "web 1.26",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&first);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(d["status"]["readyReplicas"], 2, "{d}");
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    // Real pods, owned by a real ReplicaSet, bound to the fake kubelet's node and Ready.
    let pods = c.kubectl(&["get", "pods", "-n", &ns, "-l", "app=web", "-o", "json"]);
    let pods: serde_json::Value = serde_json::from_slice(&pods.stdout).unwrap();
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{pods}");
    for p in items {
        assert_eq!(p["spec"]["nodeName"], "testenv-node");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }

    let second = w.commit(
        &[(
            "k8s/app/web.yaml",
            &deployment_with("web", &ns, "nginx:1.27", 2, "", ""),
        )],
        "web 1.27",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&second);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(second.as_str()));
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2",
        "{d}"
    );
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d}");
    assert_eq!(d["status"]["readyReplicas"], 2, "{d}");
    let rs = c.kubectl(&["get", "replicasets", "-n", &ns, "-o", "json"]);
    let rs: serde_json::Value = serde_json::from_slice(&rs.stdout).unwrap();
    let mut replicas: Vec<(String, u64)> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                str_at(r, "/spec/template/spec/containers/0/image").to_string(),
                r["spec"]["replicas"].as_u64().unwrap(),
            )
        })
        .collect();
    replicas.sort();
    assert_eq!(
        replicas,
        vec![("nginx:1.26".to_string(), 0), ("nginx:1.27".to_string(), 2)]
    );
}

#[test]
fn failed_rollout_is_rolled_back() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("rollback");
    let deadline = "  progressDeadlineSeconds: 10\n";
    let good = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "web:1", 1, deadline, ""),
            ),
            (
                "k8s/app/cm.yaml",
                &crate::util::configmap("settings", Some(&ns), "1"),
            ),
        ],
        "good",
    );
    w.push().assert_ok();
    assert_eq!(w.last_record(&good)["result"], "succeeded");
    let bad = w.commit(
        &[
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "web:2", 1, deadline, FAIL_ROLLOUT),
            ),
            (
                "k8s/app/cm.yaml",
                &crate::util::configmap("settings", Some(&ns), "2"),
            ),
        ],
        "bad",
    );
    let started = std::time::Instant::now();
    let out = w.push();
    let all = out.all();
    assert!(all.contains("unhealthy"), "{all}");
    assert!(all.contains("rolling back"), "{all}");
    assert!(all.contains("progress deadline"), "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}");
    assert_eq!(rec["rolled_back_to"], good.as_str(), "{rec}");
    let back = w.last_record(&good);
    assert_eq!(back["action"], "rollback", "{back}");
    assert_eq!(back["result"], "succeeded", "{back}");
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    // The cluster runs the good commit again, and the real controllers agree.
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(
        str_at(&d, "/spec/template/spec/containers/0/image"),
        "web:1"
    );
    assert!(d["spec"]["template"]["metadata"]["annotations"]
        .get("kube-sandbox.io/fail-rollout")
        .is_none());
    let cm = c.get_json("configmap", Some(&ns), "settings").unwrap();
    assert_eq!(cm["data"]["value"], "1");
    let status = c.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        &ns,
        "--timeout=60s",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn job_runs_to_completion_and_a_failing_job_fails_the_deploy() {
    let Some((w, c)) = world("on_failure = \"stop\"") else {
        return;
    };
    let ns = c.unique("job");
    let ok = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/jobs/migrate.yaml",
                &job("migrate", &ns, "busybox:1", ""),
            ),
        ],
        "migrate",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&ok);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    let j = c.get_json("job.batch", Some(&ns), "migrate").unwrap();
    assert_eq!(j["status"]["succeeded"], 1, "{j}");
    assert!(
        j["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True"),
        "{j}"
    );

    let bad = w.commit(
        &[(
            "k8s/jobs/broken.yaml",
            &job("broken", &ns, "busybox:1", FAIL_JOB),
        )],
        "broken job",
    );
    w.push();
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}");
    assert!(reasons(&rec).contains("broken"), "{rec}");
    assert_eq!(w.pointer("prod").as_deref(), Some(ok.as_str()));
    let j = c.get_json("job.batch", Some(&ns), "broken").unwrap();
    assert_eq!(j["status"]["failed"], 1, "{j}");
}

#[test]
fn immutable_field_change_fails_with_the_servers_message() {
    let Some((w, c)) = world("on_failure = \"stop\"") else {
        return;
    };
    let ns = c.unique("immutable");
    let first = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/jobs/migrate.yaml",
                &job("migrate", &ns, "busybox:1", ""),
            ),
        ],
        "migrate v1",
    );
    w.push().assert_ok();
    assert_eq!(w.last_record(&first)["result"], "succeeded");
    let second = w.commit(
        &[(
            "k8s/jobs/migrate.yaml",
            &job("migrate", &ns, "busybox:2", ""),
        )],
        "migrate v2",
    );
    let out = w.push();
    let rec = w.last_record(&second);
    assert_eq!(rec["result"], "failed", "{rec}\n{}", out.all());
    let why = reasons(&rec);
    assert!(why.contains("field is immutable"), "{why}");
    assert!(why.contains("migrate"), "{why}");
    assert_eq!(w.pointer("prod").as_deref(), Some(first.as_str()));
    let j = c.get_json("job.batch", Some(&ns), "migrate").unwrap();
    assert_eq!(
        str_at(&j, "/spec/template/spec/containers/0/image"),
        "busybox:1"
    );
}

/// A server config whose environment deploys with `kubeconfig` (context `testenv`) into `ns`.
fn configure_env(w: &World, kubeconfig: &std::path::Path, ns: &str) {
    w.write_server_config(&format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"testenv\"\nallowed_namespaces = [\"{ns}\"]\n\n[signing]\nkey = \"{}\"\n",
        kubeconfig.display(),
        w.key.display()
    ));
}

#[test]
fn deployer_service_account_deploys_with_the_documented_rules() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("deployer");
    let created = c.kubectl(&["create", "namespace", &ns]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    configure_env(&w, &c.deployer_kubeconfig(), &ns);
    let commit = w.commit(
        &[
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "nginx:1.27", 1, "", ""),
            ),
            (
                "k8s/app/cm.yaml",
                &crate::util::configmap("settings", Some(&ns), "1"),
            ),
        ],
        "as the deployer",
    );
    let out = w.push();
    let rec = w.last_record(&commit);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(d["status"]["readyReplicas"], 1, "{d}");
    // RBAC is real: the deployer may not touch what docs/security.md does not grant.
    let denied = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.deployer_kubeconfig())
        .args(["auth", "can-i", "create", "clusterroles"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
}

#[test]
fn doctor_checks_the_deployers_rights() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("doctor");
    let created = c.kubectl(&["create", "namespace", &ns]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    configure_env(&w, &c.deployer_kubeconfig(), &ns);
    let out = w.hookops(&["doctor"]);
    assert!(out.ok(), "{}", out.all());
    assert!(
        out.stdout
            .contains("deploying as system:serviceaccount:hookops-system:hookops-deployer"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "may create, patch and delete configmaps and deployments in namespace {ns}"
        )),
        "{}",
        out.stdout
    );

    // A second service account whose Role lacks `delete`.
    let limited = format!(
        "apiVersion: v1
kind: ServiceAccount
metadata: {{name: limited, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: limited, namespace: {ns}}}
rules:
- apiGroups: [\"\", \"apps\"]
  resources: [configmaps, deployments]
  verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: limited, namespace: {ns}}}
subjects: [{{kind: ServiceAccount, name: limited, namespace: {ns}}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: limited}}
"
    );
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &limited);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let token = c.kubectl(&["create", "token", "limited", "-n", &ns, "--duration=1h"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap();
    let kubeconfig = w.tmp.path().join("limited.kubeconfig");
    std::fs::copy(c.admin_kubeconfig(), &kubeconfig).unwrap();
    let set = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "config",
            "set-credentials",
            "testenv-admin",
            "--token",
            token.trim(),
        ])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    configure_env(&w, &kubeconfig, &ns);
    let out = w.hookops(&["doctor"]);
    out.assert_fail();
    assert!(
        out.stdout
            .contains(&format!("deploying as system:serviceaccount:{ns}:limited")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "FAIL  env prod: may not delete configmaps, delete deployments.apps in namespace {ns}"
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 problem"), "{}", out.stdout);
}

#[test]
fn drift_sees_only_out_of_band_changes_not_server_defaults() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("drift");
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"
    );
    let commit = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "nginx:1.27", 2, "", ""),
            ),
            ("k8s/app/svc.yaml", &service),
            (
                "k8s/app/cm.yaml",
                &crate::util::configmap("settings", Some(&ns), "1"),
            ),
        ],
        "app",
    );
    let out = w.push();
    assert_eq!(
        w.last_record(&commit)["result"],
        "succeeded",
        "{}",
        out.all()
    );
    // Defaults the server filled in, a cluster IP, controllers' status and annotations: none
    // of them is drift.
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert!(out.ok(), "{}", out.all());
    assert!(out.stdout.contains("in sync"), "{}", out.stdout);
    // An out-of-band scale is.
    let scaled = c.kubectl(&["scale", "deployment/web", "-n", &ns, "--replicas=3"]);
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("DRIFTED"), "{}", out.stdout);
    let out = w.hookops(&["drift", "--env", "prod", "--repair"]);
    assert!(out.ok(), "{}", out.all());
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert!(w.hookops(&["drift", "--env", "prod"]).ok());
}

#[test]
fn removed_objects_are_pruned_and_their_pods_garbage_collected() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("prune");
    let first = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "nginx:1.27", 2, "", ""),
            ),
            (
                "k8s/app/cm.yaml",
                &crate::util::configmap("settings", Some(&ns), "1"),
            ),
        ],
        "app",
    );
    w.push().assert_ok();
    assert_eq!(w.last_record(&first)["result"], "succeeded");
    let pods = || {
        let out = c.kubectl(&["get", "pods", "-n", &ns, "-o", "name"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(pods(), 2);
    let second = w.remove(&["k8s/app/web.yaml"], "drop web");
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&second);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert!(c.get_json("deployment.apps", Some(&ns), "web").is_none());
    assert!(c.get_json("configmap", Some(&ns), "settings").is_some());
    // The real garbage collector removes the ReplicaSet, the fake kubelet finishes the pods.
    assert!(
        c.wait_for(Duration::from_secs(60), || pods() == 0),
        "pods left: {}",
        pods()
    );
}

#[test]
fn failed_rollout_with_rollout_undo_uses_the_real_revision_history() {
    let Some((w, c)) = world("on_failure = \"rollout-undo\"") else {
        return;
    };
    let ns = c.unique("undo");
    let deadline = "  progressDeadlineSeconds: 10\n";
    let good = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "web:1", 1, deadline, ""),
            ),
        ],
        "good",
    );
    w.push().assert_ok();
    assert_eq!(w.last_record(&good)["result"], "succeeded");
    let bad = w.commit(
        &[(
            "k8s/app/web.yaml",
            &deployment_with("web", &ns, "web:2", 1, deadline, FAIL_ROLLOUT),
        )],
        "bad",
    );
    let out = w.push();
    assert!(out.all().contains("rollout undo"), "{}", out.all());
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}");
    assert!(reasons(&rec).contains("kubectl rollout undo"), "{rec}");
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    // The deployment controller restored revision 1's template as revision 3.
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(
        str_at(&d, "/spec/template/spec/containers/0/image"),
        "web:1"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "{d}"
    );
    let status = c.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        &ns,
        "--timeout=60s",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}
