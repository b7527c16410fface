//! Real-world repository layouts through real pushes (issue 13): an object is deleted only when
//! no file of the new tree declares it; identity follows the API server's namespace defaulting;
//! the inventory remembers what a failed attempt applied; one failure stays one failure.
//! Discovered targets (no `hookops.toml`) against the kube sandbox.

use crate::util::{configmap, namespace, sandboxed, target, write_script, World};

fn world() -> Option<World> {
    sandboxed("")
}

fn exists(w: &World, ns: &str, name: &str) -> bool {
    w.configmap(ns, name).is_some()
}

#[test]
fn an_object_in_two_directories_survives_the_removal_of_one() {
    let Some(w) = world() else { return };
    let shared = configmap("shared", Some("default"), "1");
    w.commit(
        &[("a/cm.yaml", &shared), ("b/cm.yaml", &shared)],
        "two copies",
    );
    w.push().assert_ok();
    assert!(exists(&w, "default", "shared"));

    let c = w.remove(&["a"], "drop one copy");
    let out = w.push();
    out.assert_ok();
    assert!(exists(&w, "default", "shared"), "pruned: {}", out.all());
    assert_eq!(w.last_record(&c)["result"], "succeeded");

    let c = w.remove(&["b"], "drop the other");
    w.push().assert_ok();
    assert!(!exists(&w, "default", "shared"));
    assert_eq!(target(&w.last_record(&c), "b")["pruned"], 1);
}

#[test]
fn removing_one_file_keeps_what_another_file_of_the_target_declares() {
    let Some(w) = world() else { return };
    let fe = configmap("frontend", Some("default"), "1");
    let other = configmap("other", Some("default"), "1");
    w.commit(
        &[
            ("app/frontend.yaml", &fe),
            ("app/all-in-one.yaml", &format!("{fe}---\n{other}")),
        ],
        "app",
    );
    w.push().assert_ok();
    w.remove(&["app/frontend.yaml"], "drop frontend.yaml");
    let out = w.push();
    out.assert_ok();
    assert!(exists(&w, "default", "frontend"), "{}", out.all());
    assert!(exists(&w, "default", "other"));
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names:\n    kind: Widget\n    plural: widgets\n    singular: widget\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n";

#[test]
fn a_crd_bundle_in_two_directories_and_its_resources_elsewhere() {
    let Some(w) = world() else { return };
    let widget =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 1\n";
    w.commit(
        &[
            ("operator/crds/widgets.yaml", CRD),
            ("charts/operator/crds/widgets.yaml", CRD),
            ("examples/widget.yaml", widget),
        ],
        "bundle",
    );
    let out = w.push();
    out.assert_ok();
    let crd = |w: &World| {
        w.sandbox().object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        )
    };
    assert!(crd(&w).is_some());
    w.remove(&["charts"], "drop the second copy");
    let out = w.push();
    out.assert_ok();
    assert!(crd(&w).is_some(), "CRD deleted: {}", out.all());
    assert!(w
        .sandbox()
        .object("example.com/v1", "Widget", Some("default"), "w1")
        .is_some());
    // Removed everywhere: a CRD is kept all the same (deleting it deletes every Widget).
    let c = w.remove(&["operator"], "drop the CRD");
    let out = w.push();
    out.assert_ok();
    assert!(crd(&w).is_some());
    assert!(
        out.all().contains("keeping CustomResourceDefinition"),
        "{}",
        out.all()
    );
    let rec = w.last_record(&c);
    assert!(
        rec["kept"].to_string().contains("widgets.example.com"),
        "{rec}"
    );
}

#[test]
fn adding_or_removing_an_explicit_namespace_keeps_the_object() {
    let Some(w) = world() else { return };
    w.commit(
        &[("app/cm.yaml", &configmap("settings", None, "1"))],
        "no ns",
    );
    w.push().assert_ok();
    assert!(exists(&w, "default", "settings"));

    w.commit(
        &[("app/cm.yaml", &configmap("settings", Some("default"), "2"))],
        "explicit",
    );
    let plan = w.hookops(&["plan", "main", "--from", "HEAD~1"]);
    assert!(!plan.stdout.contains("prune"), "{}", plan.stdout);
    let c = w.head();
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        w.configmap("default", "settings").unwrap()["data"]["value"],
        "2"
    );
    assert_eq!(target(&w.last_record(&c), "app")["pruned"], 0);

    w.commit(
        &[("app/cm.yaml", &configmap("settings", None, "3"))],
        "implicit again",
    );
    w.push().assert_ok();
    assert_eq!(
        w.configmap("default", "settings").unwrap()["data"]["value"],
        "3"
    );
}

#[test]
fn what_a_failed_first_deploy_created_is_pruned_later() {
    let Some(w) = world() else { return };
    w.sandbox()
        .fail_path("/api/v1/namespaces/other/configmaps", 500);
    w.commit(
        &[
            ("a/cm.yaml", &configmap("a-cm", Some("default"), "1")),
            ("b/ns.yaml", &namespace("other")),
            ("b/cm.yaml", &configmap("b-cm", Some("other"), "1")),
        ],
        "first",
    );
    let out = w.push();
    assert!(out.all().contains("FAILED"), "{}", out.all());
    assert!(exists(&w, "default", "a-cm"));
    assert_eq!(w.pointer("prod"), None);
    w.sandbox().clear_faults();

    w.remove(&["a"], "drop a");
    let out = w.push();
    out.assert_ok();
    assert!(!exists(&w, "default", "a-cm"), "a-cm stays: {}", out.all());
    assert!(exists(&w, "other", "b-cm"), "{}", out.all());
}

#[test]
fn the_first_deploy_applies_the_whole_tree_whatever_the_pushed_old_value() {
    let Some(w) = world() else { return };
    // History pushed before hookops was installed.
    let hook = w.server.join("hooks/post-receive");
    let saved = std::fs::read(&hook).unwrap();
    std::fs::remove_file(&hook).unwrap();
    w.commit(
        &[("old/cm.yaml", &configmap("old", Some("default"), "1"))],
        "before",
    );
    w.push().assert_ok();
    write_script(&hook, saved);
    w.commit(
        &[("new/cm.yaml", &configmap("new", Some("default"), "1"))],
        "after",
    );
    w.push().assert_ok();
    assert!(exists(&w, "default", "new"));
    assert!(
        exists(&w, "default", "old"),
        "untouched target never deployed"
    );
}

#[test]
fn a_failing_namespace_target_skips_only_what_lives_in_it() {
    let Some(w) = world() else { return };
    w.sandbox().fail_path("/api/v1/namespaces/broken", 500);
    let c = w.commit(
        &[
            ("ns-ok/ns.yaml", &namespace("fine")),
            ("ns-bad/ns.yaml", &namespace("broken")),
            ("in-broken/cm.yaml", &configmap("x", Some("broken"), "1")),
            ("in-fine/cm.yaml", &configmap("y", Some("fine"), "1")),
            ("elsewhere/cm.yaml", &configmap("z", Some("default"), "1")),
        ],
        "namespaces",
    );
    let out = w.push();
    assert!(out.all().contains("FAILED"), "{}", out.all());
    let rec = w.last_record(&c);
    assert_eq!(target(&rec, "ns-bad")["result"], "failed", "{rec}");
    assert_eq!(target(&rec, "in-broken")["result"], "skipped", "{rec}");
    assert_eq!(target(&rec, "in-fine")["result"], "succeeded", "{rec}");
    assert_eq!(target(&rec, "elsewhere")["result"], "succeeded", "{rec}");
    assert!(exists(&w, "fine", "y"));
    assert!(exists(&w, "default", "z"));
    assert_eq!(w.pointer("prod"), None);
}

#[test]
fn broken_files_fail_their_targets_only_and_are_all_named_at_once() {
    let Some(w) = world() else { return };
    w.commit(
        &[("good/cm.yaml", &configmap("g", Some("default"), "1"))],
        "good",
    );
    w.push().assert_ok();
    let c = w.commit(
        &[
            ("good/cm.yaml", &configmap("g", Some("default"), "2")),
            ("bad1/ok.yaml", &configmap("ok1", Some("default"), "1")),
            (
                "bad1/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b1\ndata: [\n",
            ),
            (
                "bad2/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b2\n  labels: {a: b\n",
            ),
        ],
        "two broken files",
    );
    // Both files are named by the plan, the gate and the push, in one go.
    w.push_args(&["origin", "HEAD:refs/heads/candidate"])
        .assert_ok();
    let plan = w.hookops(&["plan", "main", "--to", "candidate"]);
    assert!(!plan.ok());
    assert!(plan.all().contains("bad1/cm.yaml:"), "{}", plan.all());
    assert!(plan.all().contains("bad2/cm.yaml:"), "{}", plan.all());
    let out = w.push();
    assert!(out.all().contains("bad1/cm.yaml:"), "{}", out.all());
    assert!(out.all().contains("bad2/cm.yaml:"), "{}", out.all());
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed");
    assert_eq!(target(&rec, "good")["result"], "succeeded", "{rec}");
    assert_eq!(w.configmap("default", "g").unwrap()["data"]["value"], "2");
    assert_ne!(w.pointer("prod").as_deref(), Some(c.as_str()));

    w.hookops(&["install", "--pre-receive"]).assert_ok();
    w.commit(
        &[
            ("bad3/ok.yaml", &configmap("ok3", Some("default"), "1")),
            (
                "bad3/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n",
            ),
        ],
        "more",
    );
    let out = w.push();
    assert!(!out.ok());
    for f in ["bad1/cm.yaml:", "bad2/cm.yaml:", "bad3/cm.yaml:"] {
        assert!(
            out.all().contains(f),
            "gate did not name {f}: {}",
            out.all()
        );
    }
}

#[test]
fn plan_shows_prunes_from_the_inventory_and_replay_from_the_null_id() {
    let Some(w) = world() else { return };
    w.commit(
        &[
            ("a/cm.yaml", &configmap("a1", Some("default"), "1")),
            ("b/cm.yaml", &configmap("b1", Some("default"), "1")),
        ],
        "first",
    );
    w.push().assert_ok();
    w.remove(&["a"], "drop a");
    w.push_args(&["origin", "HEAD:refs/heads/candidate"])
        .assert_ok();
    // The plan asks no cluster: the prune comes from the inventory.
    let plan = w.hookops(&["plan", "main", "--to", "candidate"]);
    plan.assert_ok();
    assert!(
        plan.stdout.contains("prune ConfigMap default/a1"),
        "{}",
        plan.stdout
    );
    let zero = "0".repeat(40);
    let out = w.hookops(&["replay", "main", "--from", &zero]);
    out.assert_ok();
    assert!(exists(&w, "default", "b1"));
}

#[test]
fn a_namespace_removed_from_git_is_kept_unless_the_server_allows() {
    let Some(w) = world() else { return };
    w.commit(
        &[
            ("ns/ns.yaml", &namespace("team")),
            ("ns/cm.yaml", &configmap("c", Some("team"), "1")),
        ],
        "ns",
    );
    w.push().assert_ok();
    w.remove(&["ns/ns.yaml"], "drop the namespace");
    let out = w.push();
    out.assert_ok();
    assert!(
        out.all().contains("keeping Namespace team"),
        "{}",
        out.all()
    );
    assert!(w
        .sandbox()
        .object("v1", "Namespace", None, "team")
        .is_some());
    assert!(exists(&w, "team", "c"));
}

/// A ten-service application against the real API server: manifests without namespaces (the
/// kubeconfig context's namespace applies), one file per service plus an all-in-one copy of
/// two of them; deployed, edited and partly deleted, with the cluster checked after each step.
#[test]
fn a_ten_service_application_on_a_real_cluster() {
    if !crate::util::tools_present() {
        return;
    }
    let Some(c) = crate::cluster::shared() else {
        return;
    };
    let mut w = World::new();
    w.use_cluster();
    let ns = c.unique("shop");
    // The context's namespace is where objects without one land.
    let kc = std::fs::read_to_string(&w.kubeconfig).unwrap();
    std::fs::write(
        &w.kubeconfig,
        kc.replacen("namespace: default", &format!("namespace: {ns}"), 1),
    )
    .unwrap();
    w.configure("", "");
    let service = |name: &str, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: {image}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n"
        )
    };
    let names: Vec<String> = (0..10).map(|i| format!("svc{i}")).collect();
    let mut files: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("shop/{n}.yaml"), service(n, "shop:1")))
        .collect();
    files.push((
        "shop/all-in-one.yaml".into(),
        format!(
            "{}---\n{}",
            service("svc0", "shop:1"),
            service("svc1", "shop:1")
        ),
    ));
    files.push(("ns/ns.yaml".into(), namespace(&ns)));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    w.commit(&refs, "shop");
    let out = w.push();
    out.assert_ok();
    for n in &names {
        assert!(
            c.get_json("deployment", Some(&ns), n).is_some(),
            "{n}: {}",
            out.all()
        );
        assert!(c.get_json("service", Some(&ns), n).is_some(), "{n}");
    }
    // Edit one service; add an explicit namespace to another: nothing is deleted.
    let edited = service("svc5", "shop:2");
    let explicit = service("svc6", "shop:1").replace(
        "metadata:\n  name: svc6\n",
        &format!("metadata:\n  name: svc6\n  namespace: {ns}\n"),
    );
    let c2 = w.commit(
        &[("shop/svc5.yaml", &edited), ("shop/svc6.yaml", &explicit)],
        "edit",
    );
    w.push().assert_ok();
    let rec = w.last_record(&c2);
    assert_eq!(rec["targets"][0]["pruned"], 0, "{rec}");
    let d5 = c.get_json("deployment", Some(&ns), "svc5").unwrap();
    assert_eq!(
        d5["spec"]["template"]["spec"]["containers"][0]["image"],
        "shop:2"
    );
    assert!(c.get_json("deployment", Some(&ns), "svc6").is_some());
    // Remove svc0's own file (all-in-one still declares it) and svc9 (declared nowhere).
    w.remove(&["shop/svc0.yaml", "shop/svc9.yaml"], "remove two");
    let out = w.push();
    out.assert_ok();
    assert!(
        c.get_json("deployment", Some(&ns), "svc0").is_some(),
        "{}",
        out.all()
    );
    assert!(c.get_json("service", Some(&ns), "svc0").is_some());
    let gone = c.wait_for(std::time::Duration::from_secs(20), || {
        c.get_json("deployment", Some(&ns), "svc9").is_none()
    });
    assert!(gone, "svc9 still deployed: {}", out.all());
    assert!(c.get_json("service", Some(&ns), "svc9").is_none());
}
