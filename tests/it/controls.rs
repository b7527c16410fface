//! Per-object controls (issue 19) against the real API server: immutable fields and `force`,
//! `prune: disabled`, `apply: create-only`, waves, deploy hooks, and Namespaces and CRDs that
//! are kept unless the server config allows pruning them. Every test has namespaces of its own.

use crate::cluster::{world, Cluster};
use crate::util::{namespace, target};

fn annotated(kind_doc: &str, annotations: &[(&str, &str)]) -> String {
    if annotations.is_empty() {
        return kind_doc.to_string();
    }
    let lines: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    kind_doc.replacen(
        "metadata:\n",
        &format!("metadata:\n  annotations:\n{lines}"),
        1,
    )
}

fn cm(name: &str, ns: &str, value: &str, annotations: &[(&str, &str)]) -> String {
    annotated(
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  value: \"{value}\"\n"),
        annotations,
    )
}

fn job(name: &str, ns: &str, image: &str, annotations: &[(&str, &str)], fail: bool) -> String {
    let fail = if fail {
        "      annotations:\n        kube-sandbox.io/fail-job: \"true\"\n"
    } else {
        ""
    };
    let named = if annotations.iter().any(|(k, _)| *k == "hookops.io/hook") {
        format!("generateName: {name}-")
    } else {
        format!("name: {name}")
    };
    annotated(
        &format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  {named}\n  namespace: {ns}\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n{fail}    spec:\n      restartPolicy: Never\n      containers:\n      - name: task\n        image: {image}\n        command: [\"true\"]\n"),
        annotations,
    )
}

fn deployment(name: &str, ns: &str, image: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 10\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n")
}

fn rv(c: &Cluster, kind: &str, ns: &str, name: &str) -> u64 {
    c.get_json(kind, Some(ns), name)
        .and_then(|o| o["metadata"]["resourceVersion"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("{kind} {ns}/{name} missing"))
}

#[test]
fn an_immutable_field_change_fails_clearly_then_deploys_with_force() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("immut");
    w.commit(
        &[
            ("app/ns.yaml", &namespace(&ns)),
            ("app/job.yaml", &job("once", &ns, "busybox:1", &[], false)),
        ],
        "job",
    );
    w.push().assert_ok();
    let changed = w.commit(
        &[("app/job.yaml", &job("once", &ns, "busybox:2", &[], false))],
        "new template",
    );
    let out = w.push();
    let rec = w.last_record(&changed);
    assert_eq!(rec["result"], "failed", "{}", out.all());
    let why = target(&rec, "app")["reason"].as_str().unwrap().to_string();
    assert!(why.contains("immutable"), "{why}");
    assert!(why.contains("hookops.io/force: enabled"), "{why}");
    let forced = w.commit(
        &[(
            "app/job.yaml",
            &job(
                "once",
                &ns,
                "busybox:2",
                &[("hookops.io/force", "enabled")],
                false,
            ),
        )],
        "force",
    );
    let out = w.push();
    out.assert_ok();
    assert!(out.all().contains("re-creating Job.batch"), "{}", out.all());
    let rec = w.last_record(&forced);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert!(
        target(&rec, "app")["recreated"]
            .to_string()
            .contains("once"),
        "{rec}"
    );
    let live = c.get_json("job", Some(&ns), "once").unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:2"
    );
}

#[test]
fn prune_disabled_survives_removal_and_create_only_is_never_overwritten() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("keep");
    let pvc = format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  namespace: {ns}\n  annotations:\n    hookops.io/prune: disabled\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n");
    let secret = |v: &str| {
        annotated(
            &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: once\n  namespace: {ns}\nstringData:\n  token: \"{v}\"\n"),
            &[("hookops.io/apply", "create-only")],
        )
    };
    w.commit(
        &[
            ("app/ns.yaml", &namespace(&ns)),
            ("app/pvc.yaml", &pvc),
            ("app/secret.yaml", &secret("from-git")),
            ("app/cm.yaml", &cm("c", &ns, "1", &[])),
        ],
        "first",
    );
    w.push().assert_ok();
    assert!(c.get_json("pvc", Some(&ns), "data").is_some());
    // Edited in the cluster, then changed in git: the cluster's value stays.
    let patched = c.kubectl(&[
        "-n",
        &ns,
        "patch",
        "secret",
        "once",
        "-p",
        r#"{"stringData":{"token":"by-hand"}}"#,
    ]);
    assert!(patched.status.success());
    w.commit(&[("app/secret.yaml", &secret("changed-in-git"))], "secret");
    w.push().assert_ok();
    let s = c.get_json("secret", Some(&ns), "once").unwrap();
    assert_eq!(s["data"]["token"], "YnktaGFuZA==", "overwritten: {s}"); // base64("by-hand")
                                                                        // Removed from git: the PVC is kept and the record says so.
    let gone = w.remove(&["app/pvc.yaml"], "drop the pvc");
    let out = w.push();
    out.assert_ok();
    assert!(
        c.get_json("pvc", Some(&ns), "data").is_some(),
        "{}",
        out.all()
    );
    let rec = w.last_record(&gone);
    assert!(
        rec["kept"].to_string().contains("PersistentVolumeClaim"),
        "{rec}"
    );
}

#[test]
fn waves_apply_in_order_and_unknown_annotations_are_refused() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("waves");
    w.commit(&[("base/ns.yaml", &namespace(&ns))], "namespace");
    w.push().assert_ok();
    let bad = w.commit(
        &[
            (
                "app/a.yaml",
                &cm("late", &ns, "1", &[("hookops.io/wave", "2")]),
            ),
            (
                "app/b.yaml",
                &cm("early", &ns, "1", &[("hookops.io/wave", "-1")]),
            ),
            (
                "app/c.yaml",
                &cm("middle", &ns, "1", &[("hookops.io/sync-wave", "0")]),
            ),
        ],
        "waves",
    );
    w.push_args(&["origin", "HEAD:refs/heads/candidate"])
        .assert_ok();
    let plan = w.hookops(&["plan", "main", "--to", "candidate"]);
    assert!(!plan.ok());
    assert!(plan.all().contains("app/c.yaml:1"), "{}", plan.all());
    assert!(
        plan.all()
            .contains("unknown annotation hookops.io/sync-wave"),
        "{}",
        plan.all()
    );
    assert_ne!(bad, "");
    w.commit(&[("app/c.yaml", &cm("middle", &ns, "1", &[]))], "fix");
    let out = w.push();
    out.assert_ok();
    let (e, m, l) = (
        rv(c, "configmap", &ns, "early"),
        rv(c, "configmap", &ns, "middle"),
        rv(c, "configmap", &ns, "late"),
    );
    assert!(
        e < m && m < l,
        "resourceVersions {e} {m} {l}: {}",
        out.all()
    );
}

#[test]
fn hooks_run_before_and_after_and_a_failing_pre_deploy_hook_stops_the_deploy() {
    let Some((w, c)) = world("on_failure = \"stop\"") else {
        return;
    };
    let ns = c.unique("hooks");
    let pre = |fail: bool| {
        job(
            "migrate",
            &ns,
            "busybox:1",
            &[("hookops.io/hook", "pre-deploy")],
            fail,
        )
    };
    let post = job(
        "smoke",
        &ns,
        "busybox:1",
        &[("hookops.io/hook", "post-deploy")],
        false,
    );
    let on_fail = job(
        "page",
        &ns,
        "busybox:1",
        &[("hookops.io/hook", "on-failure")],
        false,
    );
    let first = w.commit(
        &[
            ("base/ns.yaml", &namespace(&ns)),
            ("app/deploy.yaml", &deployment("web", &ns, "web:1")),
            ("app/migrate.yaml", &pre(false)),
            ("app/smoke.yaml", &post),
            ("app/page.yaml", &on_fail),
        ],
        "first",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&first);
    let hooks = target(&rec, "app")["hooks"].to_string();
    assert!(hooks.contains("pre-deploy Job"), "{rec}");
    assert!(hooks.contains("post-deploy Job"), "{rec}");
    assert!(!hooks.contains("on-failure"), "{rec}");
    let jobs = |c: &Cluster| {
        let out = c.kubectl(&["-n", &ns, "get", "jobs", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["items"].as_array().unwrap().clone()
    };
    let by_prefix = |items: &[serde_json::Value], p: &str| -> Vec<u64> {
        items
            .iter()
            .filter(|j| j["metadata"]["name"].as_str().unwrap().starts_with(p))
            .map(|j| {
                j["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let items = jobs(c);
    let deploy_rv = rv(c, "deployment", &ns, "web");
    let pre_rv = by_prefix(&items, "migrate-");
    let post_rv = by_prefix(&items, "smoke-");
    assert_eq!(pre_rv.len(), 1);
    assert_eq!(post_rv.len(), 1);
    assert!(post_rv[0] > pre_rv[0]);
    // Hook Jobs are never in the inventory, so never pruned, and never applied as objects.
    assert!(c.get_json("job", Some(&ns), "migrate-").is_none());

    // A second deploy deletes the earlier runs first (hook-delete: before-run).
    let second = w.commit(
        &[("app/deploy.yaml", &deployment("web", &ns, "web:2"))],
        "v2",
    );
    w.push().assert_ok();
    assert_eq!(w.last_record(&second)["result"], "succeeded");
    c.wait_for(std::time::Duration::from_secs(20), || {
        by_prefix(&jobs(c), "migrate-").len() == 1
    });
    assert_eq!(by_prefix(&jobs(c), "migrate-").len(), 1, "{:?}", jobs(c));
    assert!(rv(c, "deployment", &ns, "web") > deploy_rv);

    // A failing migration stops the deploy before the Deployment changes, and pages.
    let before = c.get_json("deployment", Some(&ns), "web").unwrap();
    let bad = w.commit(
        &[
            ("app/deploy.yaml", &deployment("web", &ns, "web:3")),
            ("app/migrate.yaml", &pre(true)),
        ],
        "bad migration",
    );
    w.push();
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}");
    let t = target(&rec, "app");
    assert!(
        t["reason"].as_str().unwrap().contains("pre-deploy Job"),
        "{rec}"
    );
    assert!(t["hooks"].to_string().contains("on-failure Job"), "{rec}");
    let after = c.get_json("deployment", Some(&ns), "web").unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        before["spec"]["template"]["spec"]["containers"][0]["image"]
    );
}

#[test]
fn namespaces_and_crds_are_kept_unless_the_server_config_allows() {
    for allow in [false, true] {
        let extra = if allow {
            "prune_namespaces = true\nprune_crds = true"
        } else {
            ""
        };
        let Some((w, c)) = world(extra) else { return };
        let ns = c.unique("keepns");
        let group = format!("{}.example.com", c.unique("g"));
        let crd = format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    kind: Gadget\n    plural: gadgets\n    singular: gadget\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n");
        w.commit(
            &[
                ("foundation/ns.yaml", &namespace(&ns)),
                ("foundation/crd.yaml", &crd),
                ("app/cm.yaml", &cm("inside", &ns, "1", &[])),
            ],
            "first",
        );
        w.push().assert_ok();
        let gone = w.remove(&["foundation"], "drop namespace and CRD");
        let out = w.push();
        out.assert_ok();
        let crd_live = c
            .get_json("crd", None, &format!("gadgets.{group}"))
            .is_some_and(|o| o["metadata"]["deletionTimestamp"].is_null());
        let ns_live = c
            .get_json("namespace", None, &ns)
            .is_some_and(|o| o["metadata"]["deletionTimestamp"].is_null());
        let rec = w.last_record(&gone);
        if allow {
            assert!(!crd_live && !ns_live, "{}", out.all());
        } else {
            assert!(crd_live && ns_live, "{}", out.all());
            assert!(out.all().contains("keeping Namespace"), "{}", out.all());
            assert!(
                rec["kept"].to_string().contains("CustomResourceDefinition"),
                "{rec}"
            );
            assert!(c.get_json("configmap", Some(&ns), "inside").is_some());
            // drift names them as kept.
            let drift = w.hookops(&["drift", "--env", "prod"]);
            assert!(
                drift.stdout.contains("kept (no longer in git"),
                "{}",
                drift.all()
            );
            assert!(
                drift.stdout.contains(&format!("Namespace {ns}")),
                "{}",
                drift.all()
            );
        }
    }
}
