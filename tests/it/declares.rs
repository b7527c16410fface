//! Issue 25, "what a tree declares": each reproduction of the issue through a real `git push`
//! into the real test cluster (tests/it/cluster.rs), against the definition in
//! docs/architecture.md (rules D1–D10). The randomized model-based check of the same
//! definition is tests/it/oracle/.

use crate::cluster::{world, Cluster};
use crate::util::{configmap, namespace, World};

fn value(c: &Cluster, ns: &str, name: &str) -> Option<String> {
    c.get_json("configmap", Some(ns), name)
        .and_then(|o| o["data"]["value"].as_str().map(str::to_string))
}

fn kustomization(resources: &[&str]) -> String {
    let mut s = String::from("resources:\n");
    for r in resources {
        s.push_str(&format!("- {r}\n"));
    }
    s
}

/// The newest record's target entry named `name`.
fn target(w: &World, rev: &str, name: &str) -> serde_json::Value {
    let rec = w.last_record(rev);
    rec["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no target {name} in {rec}"))
}

#[test]
fn deleting_a_bases_last_overlay_keeps_the_bases_objects() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("lastoverlay");
    w.commit(
        &[
            ("ns.yaml", &namespace(&ns)),
            ("base/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("base/cm.yaml", &configmap("kept", Some(&ns), "1")),
            ("overlay/kustomization.yaml", &kustomization(&["../base"])),
        ],
        "base and its only overlay",
    );
    w.push().assert_ok();
    assert_eq!(value(c, &ns, "kept").as_deref(), Some("1"));
    let uid = c.get_json("configmap", Some(&ns), "kept").unwrap()["metadata"]["uid"].clone();

    let head = w.remove(&["overlay"], "the last overlay goes");
    let out = w.push();
    out.assert_ok();
    // The base is a target of its own now: its ConfigMap is the same object, never deleted.
    let live = c
        .get_json("configmap", Some(&ns), "kept")
        .expect("the base's ConfigMap stays");
    assert_eq!(live["metadata"]["uid"], uid, "{}", out.all());
    assert_eq!(w.last_record(&head)["result"], "succeeded");
    assert_eq!(target(&w, &head, "overlay")["pruned"], 0, "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(head.as_str()));
    let drift = w.hookops(&["drift"]);
    assert!(drift.ok(), "{}", drift.all());
}

#[test]
fn manifests_beside_a_base_are_deployed_and_redeployed() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("beside");
    w.commit(
        &[
            ("ns.yaml", &namespace(&ns)),
            ("m/install.yaml", &configmap("install", Some(&ns), "1")),
            ("m/base/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("m/base/cm.yaml", &configmap("from-base", Some(&ns), "1")),
            ("ov/kustomization.yaml", &kustomization(&["../m/base"])),
        ],
        "install.yaml above a base",
    );
    w.push().assert_ok();
    assert_eq!(value(c, &ns, "install").as_deref(), Some("1"));
    assert_eq!(value(c, &ns, "from-base").as_deref(), Some("1"));

    w.commit(
        &[("m/install.yaml", &configmap("install", Some(&ns), "2"))],
        "edit",
    );
    let out = w.push();
    out.assert_ok();
    assert!(
        !out.all().contains("no deploy targets changed"),
        "{}",
        out.all()
    );
    assert_eq!(value(c, &ns, "install").as_deref(), Some("2"));
}

#[test]
fn removing_an_object_of_an_unserved_version_does_not_wedge_the_environment() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("unserved");
    let pdb = format!(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels: {{app: web}}\n"
    );
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("app/pdb.yaml", &pdb),
            ("app/cm.yaml", &configmap("app", Some(&ns), "1")),
        ],
        "a PodDisruptionBudget of a version the server no longer serves",
    );
    let out = w.push();
    assert!(out.all().contains("policy/v1beta1"), "{}", out.all());
    assert_eq!(w.pointer("prod"), None);

    let head = w.remove(&["app/pdb.yaml"], "drop it");
    let out = w.push();
    out.assert_ok();
    assert_eq!(w.last_record(&head)["result"], "succeeded", "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(head.as_str()));
    assert_eq!(target(&w, &head, "app")["pruned"], 0, "{}", out.all());
    // And the next push is an ordinary one.
    let next = w.commit(
        &[("app/cm.yaml", &configmap("app", Some(&ns), "2"))],
        "edit",
    );
    w.push().assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(next.as_str()));
    assert_eq!(value(c, &ns, "app").as_deref(), Some("2"));
}

#[test]
fn the_same_object_in_two_files_follows_the_last_declaration_on_every_push() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("twice");
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("app/a.yaml", &configmap("k8s", Some(&ns), "1.29")),
            ("app/b.yaml", &configmap("k8s", Some(&ns), "1.30")),
        ],
        "one object, two files",
    );
    let out = w.push();
    out.assert_ok();
    assert!(
        out.all()
            .contains("app/a.yaml:1, app/b.yaml:1): their contents differ; app/b.yaml:1 wins"),
        "{}",
        out.all()
    );
    assert_eq!(value(c, &ns, "k8s").as_deref(), Some("1.30"));

    // A comment-only edit of the losing file changes nothing live.
    w.commit(
        &[(
            "app/a.yaml",
            &format!("# reviewed\n{}", configmap("k8s", Some(&ns), "1.29")),
        )],
        "comment",
    );
    w.push().assert_ok();
    assert_eq!(value(c, &ns, "k8s").as_deref(), Some("1.30"));
    let drift = w.hookops(&["drift"]);
    assert!(drift.ok(), "{}", drift.all());

    // Deleting the winning file applies the next declaration in order.
    w.remove(&["app/b.yaml"], "the winner goes");
    w.push().assert_ok();
    assert_eq!(value(c, &ns, "k8s").as_deref(), Some("1.29"));
}

#[test]
fn typed_lists_are_deployed_like_kubectl_deploys_them() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("lists");
    let bindings = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBindingList\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: RoleBinding\n  metadata: {{name: readers, namespace: {ns}}}\n  roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}\n  subjects:\n  - {{kind: ServiceAccount, name: default, namespace: {ns}}}\n"
    );
    let maps = format!(
        "apiVersion: v1\nkind: ConfigMapList\nitems:\n- metadata: {{name: one, namespace: {ns}}}\n  data: {{value: \"1\"}}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: two, namespace: {ns}}}\n  data: {{value: \"2\"}}\n"
    );
    let head = w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("app/bindings.yaml", &bindings),
            ("app/maps.yaml", &maps),
        ],
        "typed lists",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(target(&w, &head, "app")["applied"], 3, "{}", out.all());
    assert!(c.get_json("rolebinding", Some(&ns), "readers").is_some());
    assert_eq!(value(c, &ns, "one").as_deref(), Some("1"));
    assert_eq!(value(c, &ns, "two").as_deref(), Some("2"));
}

#[test]
fn counts_are_what_the_server_did() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("counts");
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("app/a.yaml", &configmap("a", Some(&ns), "1")),
            ("app/b.yaml", &configmap("b", Some(&ns), "1")),
        ],
        "two objects",
    );
    w.push().assert_ok();
    // Someone deletes one by hand; then git stops declaring both.
    let out = c.kubectl(&["delete", "configmap", "a", "-n", &ns]);
    assert!(out.status.success());
    w.remove(&["app/a.yaml", "app/b.yaml"], "both go");
    let head2 = w.commit(
        &[("app/c.yaml", &configmap("c", Some(&ns), "1"))],
        "and one comes",
    );
    let out = w.push();
    out.assert_ok();
    // One object existed to delete: pruned 1, not 2.
    assert_eq!(target(&w, &head2, "app")["pruned"], 1, "{}", out.all());
    assert!(out.all().contains("pruned 1"), "{}", out.all());

    // An object declared by two targets is applied and counted by the winning one only.
    let bad = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: {ns}\ndata:\n  value: 1\n"
    );
    let head = w.commit(
        &[
            ("x/shared.yaml", &configmap("shared", Some(&ns), "1")),
            ("y/shared.yaml", &bad),
        ],
        "the winning copy is invalid",
    );
    let out = w.push();
    assert_eq!(w.last_record(&head)["result"], "failed", "{}", out.all());
    let x = target(&w, &head, "x");
    assert_eq!(x["applied"], 0, "{}", out.all());
    assert_eq!(target(&w, &head, "y")["result"], "failed", "{}", out.all());
}

#[test]
fn oversized_and_unnamable_manifests_fail_their_target() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("silent");
    let first = w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("app/cm.yaml", &configmap("app", Some(&ns), "1")),
        ],
        "start",
    );
    w.push().assert_ok();

    // Over 8 MiB, in a new directory: the push fails naming it, the pointer stays.
    let huge = format!(
        "# {}\n{}",
        "x".repeat(9 << 20),
        configmap("huge", Some(&ns), "1")
    );
    w.commit(&[("new/huge.yaml", &huge)], "huge");
    let out = w.push();
    assert!(out.all().contains("new/huge.yaml"), "{}", out.all());
    assert!(out.all().contains("too large"), "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(first.as_str()));
    w.remove(&["new"], "not that");
    let back = w.head();
    w.push().assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(back.as_str()));

    // A name that is not UTF-8, in an existing target.
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
        std::fs::write(
            w.clone.join("app").join(name),
            configmap("cafe", Some(&ns), "1"),
        )
        .unwrap();
        // And in a new directory (read whole), beside a YAML file that is no manifest: both
        // are named in one go (the oracle's F19).
        std::fs::create_dir_all(w.clone.join("fresh")).unwrap();
        std::fs::write(
            w.clone.join("fresh").join(name),
            configmap("fresh", Some(&ns), "1"),
        )
        .unwrap();
        std::fs::write(
            w.clone.join("fresh/values.yaml"),
            "replicas: 3
",
        )
        .unwrap();
        w.in_clone(&["add", "-A"]).assert_ok();
        w.in_clone(&["commit", "-q", "-m", "latin-1 name"])
            .assert_ok();
    }
    let out = w.push();
    assert!(out.all().contains("app/caf\\xe9.yaml"), "{}", out.all());
    assert!(out.all().contains("not UTF-8"), "{}", out.all());
    assert!(out.all().contains("fresh/caf\\xe9.yaml"), "{}", out.all());
    assert!(out.all().contains("fresh/values.yaml:1"), "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(back.as_str()));
}

#[test]
fn files_no_target_reads_are_named_on_the_push() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("unread");
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("app/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("app/cm.yaml", &configmap("listed", Some(&ns), "1")),
            (
                "app/forgotten.yaml",
                &configmap("forgotten", Some(&ns), "1"),
            ),
        ],
        "a file the kustomization does not list",
    );
    let out = w.push();
    out.assert_ok();
    assert!(
        out.all().contains(
            "app/forgotten.yaml looks like a Kubernetes manifest, but no target deploys it"
        ),
        "{}",
        out.all()
    );
    assert_eq!(value(c, &ns, "forgotten"), None);
}

#[test]
fn what_a_failed_attempt_declared_is_reconciled_with_the_tip() {
    // The oracle's F9 and F10: after a failed first deploy, a push deleting what that attempt
    // applied must prune it, and a deleted overlay must stop winning over its base.
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("reconcile");
    let patch = configmap("shared", Some(&ns), "patched");
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            (
                "broken/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
            ),
            ("base/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("base/cm.yaml", &configmap("shared", Some(&ns), "base")),
            (
                "ov/kustomization.yaml",
                "resources:\n- ../base\npatches:\n- path: patch.yaml\n",
            ),
            ("ov/patch.yaml", &patch),
            ("app/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("app/cm.yaml", &configmap("app", Some(&ns), "1")),
        ],
        "a first deploy that fails in one target",
    );
    let out = w.push();
    assert!(out.all().contains("broken/cm.yaml"), "{}", out.all());
    assert_eq!(w.pointer("prod"), None);
    assert_eq!(value(c, &ns, "shared").as_deref(), Some("patched"));
    assert_eq!(value(c, &ns, "app").as_deref(), Some("1"));

    w.remove(
        &["broken", "ov", "app"],
        "fix it, drop the overlay and the app",
    );
    let head = w.head();
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        w.pointer("prod").as_deref(),
        Some(head.as_str()),
        "{}",
        out.all()
    );
    // The base is a target now, and its content wins: nothing else declares the ConfigMap.
    assert_eq!(
        value(c, &ns, "shared").as_deref(),
        Some("base"),
        "{}",
        out.all()
    );
    // What the failed attempt applied and the tip no longer declares is pruned.
    assert_eq!(value(c, &ns, "app"), None, "{}", out.all());
}

/// The oracle's F17 and F18, one class: a failed push must not leave a base's objects to be
/// deleted while the tip still declares them. F18: a push adds an overlay over a deployed base
/// and fails elsewhere; the next push deletes the overlay, so the base is a target again,
/// although from the pointer it looks unchanged. F17: a push adds a user of a deployed overlay
/// that fails to render; the overlay stops being a target, but what its failing user would
/// declare is unknown, so its objects stay (D9); the push deleting that user deploys the
/// overlay again. The same live object throughout (its uid), never a DELETE.
#[test]
fn a_failed_push_never_costs_a_base_its_objects() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("failedbase");
    let uid = |name: &str| {
        c.get_json("configmap", Some(&ns), name)
            .map(|o| o["metadata"]["uid"].clone())
    };
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("base/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("base/cm.yaml", &configmap("base", Some(&ns), "1")),
            ("app/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("app/cm.yaml", &configmap("app", Some(&ns), "1")),
            ("ov/kustomization.yaml", &kustomization(&["../app"])),
        ],
        "a base deployed alone, and an overlay over app",
    );
    w.push().assert_ok();
    let (base0, app0) = (uid("base"), uid("app"));
    assert!(base0.is_some() && app0.is_some());

    // F18: an overlay over the base, in a push that fails on another target.
    w.commit(
        &[
            ("over/kustomization.yaml", &kustomization(&["../base"])),
            (
                "broken/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n",
            ),
        ],
        "an overlay over the base, and a broken file",
    );
    let out = w.push();
    assert!(out.all().contains("broken/cm.yaml"), "{}", out.all());
    w.remove(&["over"], "the overlay goes again");
    let out = w.push();
    assert!(out.all().contains("broken/cm.yaml"), "{}", out.all());
    assert_eq!(
        uid("base"),
        base0,
        "the base's object was deleted\n{}",
        out.all()
    );

    // F17: a user of the deployed overlay `ov` that fails to render.
    w.remove(&["broken"], "fixed");
    w.push().assert_ok();
    w.commit(
        &[(
            "ov2/kustomization.yaml",
            "resources:\n- ../ov\ncomponents:\n- ../missing\n",
        )],
        "a user of ov that cannot render",
    );
    let out = w.push();
    assert!(out.all().contains("ov2"), "{}", out.all());
    assert!(
        out.all().contains("ov is now used by ov2, which fails"),
        "{}",
        out.all()
    );
    assert_eq!(uid("app"), app0, "ov's object was deleted\n{}", out.all());
    let head = w.remove(&["ov2"], "not that");
    let out = w.push();
    out.assert_ok();
    assert_eq!(uid("app"), app0, "{}", out.all());
    assert_eq!(uid("base"), base0, "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(head.as_str()));
    // Both stay in the inventory: drift sees them, and removing their targets prunes them.
    let drift = w.hookops(&["drift"]);
    assert!(drift.ok(), "{}", drift.all());
    w.remove(&["ov", "app", "base"], "all gone");
    w.push().assert_ok();
    assert_eq!(uid("app"), None);
    assert_eq!(uid("base"), None);
}

/// The oracle's long run (seeds 4266, 4271): a manifest moved into a target that fails was
/// pruned from its old place although the tip still declares it. D9: nothing a failing target
/// declares is pruned, as far as its files can be read; for a kustomization that does not
/// render, every manifest of its closure counts. Then the fixed target deploys the same object.
#[test]
fn a_manifest_moved_into_a_failing_target_is_kept() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("moved");
    let uid = |name: &str| {
        c.get_json("configmap", Some(&ns), name)
            .map(|o| o["metadata"]["uid"].clone())
    };
    let cm = |name: &str| configmap(name, Some(&ns), "1");
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("old/a.yaml", &cm("a")),
            ("old/b.yaml", &cm("b")),
        ],
        "two ConfigMaps",
    );
    w.push().assert_ok();
    let (a0, b0) = (uid("a"), uid("b"));
    assert!(a0.is_some() && b0.is_some());

    w.remove(&["old/a.yaml", "old/b.yaml"], "moved away");
    w.commit(
        &[
            ("plain/a.yaml", &cm("a")),
            (
                "plain/broken.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n",
            ),
            (
                "kust/kustomization.yaml",
                "resources:\n- b.yaml\ncomponents:\n- ../missing\n",
            ),
            ("kust/b.yaml", &cm("b")),
        ],
        "into a target with a broken file, and a kustomization that cannot render",
    );
    let out = w.push();
    assert!(out.all().contains("plain/broken.yaml"), "{}", out.all());
    assert!(
        out.all()
            .contains("plain/a.yaml:1 declares it, in target plain, which fails"),
        "{}",
        out.all()
    );
    assert_eq!(uid("a"), a0, "{}", out.all());
    assert_eq!(uid("b"), b0, "{}", out.all());

    w.remove(&["plain/broken.yaml"], "fixed");
    w.commit(
        &[("kust/kustomization.yaml", "resources:\n- b.yaml\n")],
        "fixed",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(uid("a"), a0, "{}", out.all());
    assert_eq!(uid("b"), b0, "{}", out.all());
    let drift = w.hookops(&["drift"]);
    assert!(drift.ok(), "{}", drift.all());
}

/// The oracle's seeds 5010 and 5014: what a failing kustomization might declare wins nothing.
/// A component shared by a kustomization that fails (namespace b) and one that deploys
/// (namespace a): the good one applies its copy. A base that wins an object over a plain file,
/// once a failing overlay uses it, is kept declared (nothing pruned) but its old copy wins no
/// more: the plain file's copy is applied.
#[test]
fn what_a_failing_kustomization_might_declare_wins_nothing() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("mightwin");
    let value_of = |name: &str| value(c, &ns, name);
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            (
                "comp/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- cm.yaml\n",
            ),
            ("comp/cm.yaml", &configmap("shared", None, "comp")),
            (
                "good/kustomization.yaml",
                &format!("namespace: {ns}\nresources:\n- cm.yaml\ncomponents:\n- ../comp\n"),
            ),
            ("good/cm.yaml", &configmap("good", None, "1")),
            (
                "zbad/kustomization.yaml",
                "namespace: other\nresources:\n- ../missing\ncomponents:\n- ../comp\n",
            ),
            ("base/kustomization.yaml", &kustomization(&["cm.yaml"])),
            ("base/cm.yaml", &configmap("won", Some(&ns), "base")),
            ("a/cm.yaml", &configmap("won", Some(&ns), "plain")),
        ],
        "a good and a failing user of one component; a base winning over a plain file",
    );
    let out = w.push();
    assert!(out.all().contains("zbad"), "{}", out.all());
    assert_eq!(value_of("shared").as_deref(), Some("comp"), "{}", out.all());
    assert_eq!(value_of("won").as_deref(), Some("base"), "{}", out.all());

    w.commit(
        &[("zbad/kustomization.yaml", &kustomization(&["../missing"]))],
        "zbad alone",
    );
    w.commit(
        &[(
            "over/kustomization.yaml",
            "resources:\n- ../base\ncomponents:\n- ../nowhere\n",
        )],
        "a failing user of the base",
    );
    let out = w.push();
    assert!(out.all().contains("over"), "{}", out.all());
    assert_eq!(value_of("won").as_deref(), Some("plain"), "{}", out.all());
    assert_eq!(value_of("shared").as_deref(), Some("comp"), "{}", out.all());
}
