//! More hookops scenarios against the real Kubernetes API server (tests/it/cluster.rs), through
//! real `git push`es: `on_failure = "stop"`, the pre-receive gate's server dry run, CRDs with
//! their custom resources, drift under another field manager, strict field validation, and a
//! Namespace re-added while it is still terminating. Every test has namespaces of its own.

use std::time::Duration;

use crate::cluster::{world, world_with};
use crate::util::{
    configmap, deployment_with, namespace, reasons, str_at, which, write_script, FAIL_ROLLOUT,
};

const DEADLINE: &str = "  progressDeadlineSeconds: 10\n";

#[test]
fn failed_rollout_with_stop_is_left_as_applied() {
    let Some((w, c)) = world("on_failure = \"stop\"") else {
        return;
    };
    let ns = c.unique("stop");
    let good = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "web:1", 1, DEADLINE, ""),
            ),
        ],
        "good",
    );
    w.push().assert_ok();
    assert_eq!(w.last_record(&good)["result"], "succeeded");
    let bad = w.commit(
        &[(
            "k8s/app/web.yaml",
            &deployment_with("web", &ns, "web:2", 1, DEADLINE, FAIL_ROLLOUT),
        )],
        "bad",
    );
    let out = w.push();
    let all = out.all();
    assert!(!all.contains("rolling back"), "{all}");
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}\n{all}");
    assert!(rec["rolled_back_to"].is_null(), "{rec}");
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    // No rollback record on the good commit besides its own deploy.
    assert!(
        w.records(&good).iter().all(|r| r["action"] != "rollback"),
        "{:?}",
        w.records(&good)
    );
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(
        str_at(&d, "/spec/template/spec/containers/0/image"),
        "web:2"
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["kube-sandbox.io/fail-rollout"],
        "true"
    );
}

#[test]
fn server_gate_rejects_what_the_real_server_refuses() {
    let Some((w, c)) = world_with("", "[gate]\nmode = \"server\"\n") else {
        return;
    };
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    let ns = c.unique("gate");
    // The namespace first: a server dry run of objects in a namespace not yet there would fail.
    let first = w.commit(&[("k8s/ns/ns.yaml", &namespace(&ns))], "namespace");
    w.push().assert_ok();
    assert_eq!(w.last_record(&first)["result"], "succeeded");
    let tip = || {
        w.git(Some(&w.server), &["rev-parse", "main"])
            .stdout
            .trim()
            .to_string()
    };

    let mismatched = deployment_with("web", &ns, "web:1", 1, "", "").replacen(
        "      app: web\n  template",
        "      app: other\n  template",
        1,
    );
    assert!(mismatched.contains("app: other"));
    w.commit(&[("k8s/app/web.yaml", &mismatched)], "selector mismatch");
    let out = w.push();
    out.assert_fail();
    let all = out.all();
    assert!(all.contains("push rejected"), "{all}");
    assert!(all.contains("server dry run"), "{all}");
    assert!(all.contains("target k8s/app: server dry run"), "{all}");
    assert!(
        all.contains("`selector` does not match template `labels`"),
        "{all}"
    );
    assert_eq!(tip(), first, "the gate keeps the ref where it was");
    assert!(c.get_json("deployment.apps", Some(&ns), "web").is_none());

    w.in_clone(&["reset", "-q", "--hard", &first]).assert_ok();
    let good = w.commit(
        &[(
            "k8s/app/web.yaml",
            &deployment_with("web", &ns, "web:1", 1, "", ""),
        )],
        "valid",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(tip(), good);
    let rec = w.last_record(&good);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert!(c.get_json("deployment.apps", Some(&ns), "web").is_some());
}

#[test]
fn crd_and_its_custom_resources_in_one_push() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("crd");
    let group = format!("{}.example.com", c.unique("w"));
    let crd = format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    kind: Widget\n    plural: widgets\n    singular: widget\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size:\n                type: integer\n");
    let cr = |name: &str, size: u32| {
        format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  size: {size}\n")
    };
    let commit = w.commit(
        &[
            ("k8s/crds/widget.yaml", &crd),
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/widgets/a.yaml", &cr("a", 1)),
            ("k8s/widgets/b.yaml", &cr("b", 2)),
            // Two built-in objects beside the custom resources: they go to kubectl as one
            // List, the Widgets after it in the same stream (oracle finding F15).
            (
                "k8s/widgets/settings.yaml",
                &format!(
                    "{}---\n{}",
                    configmap("one", Some(&ns), "1"),
                    configmap("two", Some(&ns), "2")
                ),
            ),
        ],
        "crd and widgets",
    );
    let out = w.push();
    let rec = w.last_record(&commit);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(commit.as_str()));
    let crd_live = c
        .get_json("crd", None, &format!("widgets.{group}"))
        .expect("CRD");
    assert!(crd_live["metadata"]["deletionTimestamp"].is_null());
    let kind = format!("widgets.{group}");
    let a = c.get_json(&kind, Some(&ns), "a").expect("widget a");
    assert_eq!(a["spec"]["size"], 1, "{a}");
    let b = c.get_json(&kind, Some(&ns), "b").expect("widget b");
    assert_eq!(b["spec"]["size"], 2, "{b}");
    for name in ["one", "two"] {
        assert!(c.get_json("configmap", Some(&ns), name).is_some(), "{name}");
    }
}

#[test]
fn drift_under_another_field_manager_is_seen_and_repaired() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("fmdrift");
    let commit = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/app/cm.yaml", &configmap("settings", Some(&ns), "git")),
            (
                "k8s/app/web.yaml",
                &deployment_with("web", &ns, "nginx:1.27", 1, "", ""),
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
    assert!(w.hookops(&["drift", "--env", "prod"]).ok());

    let patched = c.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        &ns,
        "--field-manager=someone",
        "--type=merge",
        "-p",
        "{\"data\":{\"value\":\"hand\"}}",
    ]);
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    let patched = c.kubectl(&[
        "patch", "deployment", "web", "-n", &ns, "--type=json", "-p",
        "[{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/image\",\"value\":\"nginx:hand\"}]",
    ]);
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    let cm = c.get_json("configmap", Some(&ns), "settings").unwrap();
    assert_eq!(cm["data"]["value"], "hand");
    assert!(
        cm["metadata"]["managedFields"]
            .to_string()
            .contains("someone"),
        "{cm}"
    );

    let out = w.hookops(&["drift", "--env", "prod"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("DRIFTED"), "{}", out.stdout);
    // Both hand edits, the ConfigMap's (manager `someone`) and the Deployment's.
    assert!(
        out.all()
            .contains("k8s/app              kubectl DRIFTED (2)"),
        "{}",
        out.all()
    );

    let out = w.hookops(&["drift", "--env", "prod", "--repair"]);
    assert!(out.ok(), "{}", out.all());
    let cm = c.get_json("configmap", Some(&ns), "settings").unwrap();
    assert_eq!(cm["data"]["value"], "git", "{cm}");
    let d = c.get_json("deployment.apps", Some(&ns), "web").unwrap();
    assert_eq!(
        str_at(&d, "/spec/template/spec/containers/0/image"),
        "nginx:1.27"
    );
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert!(out.ok(), "{}", out.all());

    // A second hand edit, then a deploy of another file of the same target.
    let patched = c.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        &ns,
        "--field-manager=someone",
        "--type=merge",
        "-p",
        "{\"data\":{\"value\":\"hand again\"}}",
    ]);
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    assert_eq!(w.hookops(&["drift", "--env", "prod"]).code, Some(1));
    let next = w.commit(
        &[("k8s/app/other.yaml", &configmap("other", Some(&ns), "1"))],
        "next",
    );
    let out = w.push();
    assert_eq!(w.last_record(&next)["result"], "succeeded", "{}", out.all());
    // A deploy applies only the changed files (docs/architecture.md): the untouched ConfigMap
    // keeps the hand edit, and drift still sees it.
    let cm = c.get_json("configmap", Some(&ns), "settings").unwrap();
    assert_eq!(cm["data"]["value"], "hand again", "{cm}");
    assert_eq!(w.hookops(&["drift", "--env", "prod"]).code, Some(1));
    // A deploy of its file takes the field back from the other manager (--force-conflicts).
    let third = w.commit(
        &[("k8s/app/cm.yaml", &configmap("settings", Some(&ns), "git2"))],
        "third",
    );
    let out = w.push();
    assert_eq!(
        w.last_record(&third)["result"],
        "succeeded",
        "{}",
        out.all()
    );
    let cm = c.get_json("configmap", Some(&ns), "settings").unwrap();
    assert_eq!(cm["data"]["value"], "git2", "{cm}");
    assert!(
        !cm["metadata"]["managedFields"]
            .to_string()
            .contains("someone"),
        "{cm}"
    );
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert!(out.ok(), "{}", out.all());
}

#[test]
fn unknown_field_fails_under_strict_validation() {
    let Some((w, c)) = world("on_failure = \"stop\"") else {
        return;
    };
    let ns = c.unique("strict");
    let first = w.commit(&[("k8s/ns/ns.yaml", &namespace(&ns))], "namespace");
    w.push().assert_ok();
    assert_eq!(w.last_record(&first)["result"], "succeeded");
    let typo = deployment_with("web", &ns, "nginx:1.27", 1, "  replicaz: 1\n", "");
    let bad = w.commit(&[("k8s/app/web.yaml", &typo)], "typo");
    let (out, requests) = push_logging_requests(&w);
    let applied: Vec<&str> = requests
        .lines()
        .filter(|l| l.contains("PATCH ") && l.contains("/deployments/web?"))
        .collect();
    assert!(!applied.is_empty(), "{requests}\n{}", out.all());
    assert!(
        applied.iter().all(|l| l.contains("fieldValidation=Strict")),
        "{applied:?}"
    );
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}\n{}", out.all());
    let why = reasons(&rec);
    assert!(why.contains("replicaz"), "{why}");
    // The real server's strict-validation message (server-side apply).
    assert!(
        why.contains(".spec.replicaz: field not declared in schema"),
        "{why}"
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(first.as_str()));
    assert!(c.get_json("deployment.apps", Some(&ns), "web").is_none());
}

/// Runs `git push` with a kubectl first in PATH that records the real kubectl's requests
/// (`-v=6`) and passes everything else through unchanged; the push's output and the requests.
fn push_logging_requests(w: &crate::util::World) -> (crate::util::Run, String) {
    let real = which("kubectl").expect("kubectl on PATH");
    let bin = w.tmp.path().join("logging-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = w.tmp.path().join("kubectl-requests.log");
    let _ = std::fs::remove_file(&log);
    let wrapper = bin.join("kubectl");
    write_script(
        &wrapper,
        format!(
            "#!/bin/bash\nerr=$(mktemp)\n'{real}' -v=6 \"$@\" 2>\"$err\"\nrc=$?\ncat \"$err\" >> '{}'\ngrep -Ev '^I[0-9]{{4}} ' \"$err\" >&2\nrm -f \"$err\"\nexit $rc\n",
            log.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out: crate::util::Run = w
        .base_command("git")
        .current_dir(&w.clone)
        .env("PATH", path)
        .args(["push", "-q", "origin", "HEAD:main"])
        .output()
        .expect("git push")
        .into();
    (out, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Two or more objects reach kubectl as one `v1` List, which spares kubectl 1.32/1.33 a decode
/// of the server's OpenAPI v3 document per object: kubectl validates the items against the v2
/// schema (an unknown field refuses the whole call: nothing of it is applied) and still asks the
/// server for strict validation of every item.
#[test]
fn unknown_field_among_several_objects_refuses_them_all() {
    let Some((w, c)) = world("on_failure = \"stop\"") else {
        return;
    };
    let ns = c.unique("strictlist");
    let first = w.commit(&[("k8s/ns/ns.yaml", &namespace(&ns))], "namespace");
    w.push().assert_ok();
    assert_eq!(w.last_record(&first)["result"], "succeeded");
    let settings = configmap("settings", Some(&ns), "1");
    let typo = deployment_with("web", &ns, "nginx:1.27", 1, "  replicaz: 1\n", "");
    let bad = w.commit(
        &[("k8s/app/web.yaml", &typo), ("k8s/app/cm.yaml", &settings)],
        "typo",
    );
    let out = w.push();
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed", "{rec}\n{}", out.all());
    let why = reasons(&rec);
    // The refusal names the object (the List's own message does not).
    assert!(
        why.contains("replicaz") && why.contains(&format!("{ns}/web")),
        "{why}"
    );
    assert!(c.get_json("configmap", Some(&ns), "settings").is_none());
    assert!(c.get_json("deployment.apps", Some(&ns), "web").is_none());

    let good = deployment_with("web", &ns, "nginx:1.27", 1, "", "");
    let fixed = w.commit(&[("k8s/app/web.yaml", &good)], "fixed");
    let (out, requests) = push_logging_requests(&w);
    assert_eq!(
        w.last_record(&fixed)["result"],
        "succeeded",
        "{}",
        out.all()
    );
    let patches: Vec<&str> = requests
        .lines()
        .filter(|l| l.contains("PATCH ") && l.contains(&format!("/namespaces/{ns}/")))
        .collect();
    assert_eq!(patches.len(), 2, "{requests}");
    assert!(
        patches.iter().all(|l| l.contains("fieldValidation=Strict")),
        "{patches:?}"
    );
    // The List was validated with the v2 schema, not with a v3 document per object.
    assert!(requests.contains("/openapi/v2"), "{requests}");
    assert!(!requests.contains("/openapi/v3/api/v1"), "{requests}");
}

#[test]
fn namespace_re_added_while_terminating() {
    let Some((w, c)) = world("prune_namespaces = true") else {
        return;
    };
    let ns = c.unique("reborn");
    let files = [
        ("k8s/ns/ns.yaml".to_string(), namespace(&ns)),
        (
            "k8s/app/cm.yaml".to_string(),
            configmap("inside", Some(&ns), "1"),
        ),
    ];
    let as_refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let first = w.commit(&as_refs, "namespace and configmap");
    w.push().assert_ok();
    assert_eq!(w.last_record(&first)["result"], "succeeded");

    let gone = w.remove(&["k8s/ns", "k8s/app"], "drop both");
    let out = w.push();
    out.assert_ok();
    assert_eq!(w.last_record(&gone)["result"], "succeeded", "{}", out.all());
    let live = c
        .get_json("namespace", None, &ns)
        .expect("still terminating");
    assert_eq!(live["status"]["phase"], "Terminating", "{live}");

    let back = w.commit(&as_refs, "re-add both");
    let out = w.push();
    let rec = w.last_record(&back);
    // Observed: the re-add push fails. The Namespace applies (it still exists, terminating),
    // the ConfigMap is refused by the server ("unable to create new content in namespace ...
    // because it is being terminated"), the record is failed with that message, the failed
    // target is rolled back, and the pointer stays on the removal commit.
    let all = out.all();
    assert_eq!(rec["result"], "failed", "{rec}\n{all}");
    let why = reasons(&rec);
    assert!(why.contains("because it is being terminated"), "{why}");
    assert!(why.contains(&ns), "{why}");
    assert_eq!(w.pointer("prod").as_deref(), Some(gone.as_str()));

    // Once the namespace controller has finished, the next push succeeds.
    assert!(
        c.wait_for(Duration::from_secs(90), || c
            .get_json("namespace", None, &ns)
            .is_none()),
        "namespace {ns} still there"
    );
    let again = w.commit(
        &[("k8s/app/cm.yaml", &configmap("inside", Some(&ns), "2"))],
        "again",
    );
    let out = w.push();
    let rec = w.last_record(&again);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(again.as_str()));
    let live = c.get_json("namespace", None, &ns).expect("namespace");
    assert_eq!(live["status"]["phase"], "Active", "{live}");
    let cm = c
        .get_json("configmap", Some(&ns), "inside")
        .expect("configmap");
    assert_eq!(cm["data"]["value"], "2", "{cm}");
}

/// A workload still not ready at the deadline is named with its replica counts and why its
/// newest pod is not ready (not kubectl's "timed out waiting for the condition").
#[test]
fn health_timeout_names_the_replica_counts_and_the_pods_reason() {
    let Some((w, c)) = world("on_failure = \"stop\"\nmax_health_timeout = 5") else {
        return;
    };
    let ns = c.unique("slow");
    let never = deployment_with("web", &ns, "web:1", 1, "", FAIL_ROLLOUT);
    let first = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/app/web.yaml", &never),
        ],
        "never ready",
    );
    let out = w.push();
    let rec = w.last_record(&first);
    assert_eq!(rec["result"], "failed", "{rec}\n{}", out.all());
    let why = reasons(&rec);
    assert!(
        why.contains(&format!(
            "Deployment.apps {ns}/web: not healthy within 5s: 1 of 1 replicas updated, 0 available"
        )),
        "{why}"
    );
    // The fake kubelet's pod: running, never ready.
    assert!(
        why.contains(": Ready is False: ContainersNotReady"),
        "{why}"
    );
    assert!(!why.contains("timed out waiting"), "{why}");
}
