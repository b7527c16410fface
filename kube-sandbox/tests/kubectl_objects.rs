//! The real kubectl against the sandbox: apply (client- and server-side),
//! get, diff, delete, error reporting, and custom resources.

mod common;

use common::Cluster;
use serde_json::Value;

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: demo}
data:
  color: blue
  size: large
";

#[test]
fn client_side_apply_creates_then_patches() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(CONFIGMAP).ok();
    assert!(
        out.stdout.contains("configmap/settings created"),
        "{}",
        out.stdout
    );
    let created = c
        .sandbox
        .object("v1", "ConfigMap", Some("default"), "settings")
        .expect("stored");
    assert!(
        created["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    c.apply(&CONFIGMAP.replace("blue", "green")).ok();
    let cm = c
        .sandbox
        .object("v1", "ConfigMap", Some("default"), "settings")
        .expect("stored");
    assert_eq!(cm["data"]["color"], "green");
    assert_eq!(cm["metadata"]["uid"], created["metadata"]["uid"]);
    let patches: Vec<_> = c
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );

    let out = c.apply(&CONFIGMAP.replace("blue", "green")).ok();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
}

#[test]
fn client_side_apply_merges_containers_by_name() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&common::deployment("web", "nginx:1", "")).ok();
    c.apply(&common::deployment("web", "nginx:2", "")).ok();
    let d = c.web();
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], "nginx:2");
    assert_eq!(d["metadata"]["generation"], 2);
}

#[test]
fn server_side_apply_creates_modifies_and_removes_fields() {
    let Some(c) = Cluster::start() else { return };
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=hookops",
        "-f",
        "-",
    ];
    let out = c.kubectl_stdin(&ssa, CONFIGMAP).ok();
    assert!(
        out.stdout.contains("configmap/settings serverside-applied"),
        "{}",
        out.stdout
    );
    let create = c
        .sandbox
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_eq!(
        create.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(create.status, 201);
    assert!(
        create.path.contains("fieldManager=hookops"),
        "{}",
        create.path
    );

    c.kubectl_stdin(&ssa, &CONFIGMAP.replace("blue", "red"))
        .ok();
    let cm = c
        .sandbox
        .object("v1", "ConfigMap", Some("default"), "settings")
        .expect("stored");
    assert_eq!(cm["data"]["color"], "red");
    let managers: Vec<&Value> = cm["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .collect();
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "hookops" && m["operation"] == "Apply"),
        "{managers:?}"
    );

    c.kubectl_stdin(&ssa, &CONFIGMAP.replace("  size: large\n", ""))
        .ok();
    let cm = c
        .sandbox
        .object("v1", "ConfigMap", Some("default"), "settings")
        .expect("stored");
    assert_eq!(cm["data"], serde_json::json!({"color": "blue"}));
}

#[test]
fn get_json_lists_and_selects() {
    let Some(c) = Cluster::start() else { return };
    c.apply(CONFIGMAP).ok();
    c.apply(
        &CONFIGMAP
            .replace("settings", "other")
            .replace("app: demo", "app: else"),
    )
    .ok();
    let out = c
        .kubectl(&["get", "configmap", "settings", "-o", "json"])
        .ok();
    let cm: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(cm["data"]["size"], "large");
    assert!(cm["metadata"]["resourceVersion"].is_string());

    let out = c
        .kubectl(&["get", "cm", "-l", "app in (demo)", "-o", "name"])
        .ok();
    assert_eq!(out.stdout.trim(), "configmap/settings");
    let out = c
        .kubectl(&[
            "get",
            "cm",
            "-A",
            "--field-selector",
            "metadata.name=other",
            "-o",
            "name",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "configmap/other");
    let out = c.kubectl(&["get", "cm"]).ok();
    assert!(
        out.stdout.contains("settings") && out.stdout.contains("other"),
        "{}",
        out.stdout
    );
}

#[test]
fn diff_reports_changes_without_writing() {
    let Some(c) = Cluster::start() else { return };
    c.apply(CONFIGMAP).ok();
    let before = c
        .sandbox
        .object("v1", "ConfigMap", Some("default"), "settings")
        .expect("stored");

    let same = c.kubectl_stdin(&["diff", "-f", "-"], CONFIGMAP);
    assert_eq!(same.code, 0, "{} {}", same.stdout, same.stderr);

    let changed = c.kubectl_stdin(&["diff", "-f", "-"], &CONFIGMAP.replace("blue", "purple"));
    assert_eq!(changed.code, 1, "{} {}", changed.stdout, changed.stderr);
    assert!(
        changed.stdout.contains("+  color: purple"),
        "{}",
        changed.stdout
    );
    assert!(c
        .sandbox
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.path.contains("dryRun=All")));
    let after = c
        .sandbox
        .object("v1", "ConfigMap", Some("default"), "settings")
        .expect("stored");
    assert_eq!(before, after, "dry run must not write");
}

#[test]
fn delete_and_wait() {
    let Some(c) = Cluster::start() else { return };
    c.apply(&common::deployment("web", "nginx:1", "")).ok();
    assert_eq!(c.sandbox.objects("apps/v1", "ReplicaSet").len(), 1);
    let out = c
        .kubectl(&["delete", "deployment", "web", "--wait", "--timeout=20s"])
        .ok();
    assert!(
        out.stdout.contains("deployment.apps \"web\" deleted"),
        "{}",
        out.stdout
    );
    assert!(c
        .sandbox
        .object("apps/v1", "Deployment", Some("default"), "web")
        .is_none());
    assert!(
        c.sandbox.objects("apps/v1", "ReplicaSet").is_empty(),
        "replica sets are garbage collected"
    );

    let missing = c.kubectl(&["delete", "configmap", "nope"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("configmaps \"nope\" not found"),
        "{}",
        missing.stderr
    );
}

#[test]
fn namespace_deletion_removes_its_objects() {
    let Some(c) = Cluster::start() else { return };
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n")
        .ok();
    c.kubectl_stdin(&["apply", "-n", "team", "-f", "-"], CONFIGMAP)
        .ok();
    assert_eq!(c.sandbox.objects("v1", "ConfigMap").len(), 1);
    c.kubectl(&["delete", "namespace", "team", "--wait"]).ok();
    assert!(c.sandbox.objects("v1", "ConfigMap").is_empty());
}

#[test]
fn unknown_kind_is_rejected() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply("apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g}\n");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Gizmo") && out.stderr.contains("no matches for kind"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_namespace_is_rejected() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(&CONFIGMAP.replace(
        "  name: settings\n",
        "  name: settings\n  namespace: ghost\n",
    ));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("namespaces \"ghost\" not found"),
        "{}",
        out.stderr
    );
    let ssa = c.kubectl_stdin(
        &["apply", "--server-side", "-n", "ghost", "-f", "-"],
        CONFIGMAP,
    );
    assert_ne!(ssa.code, 0);
    assert!(
        ssa.stderr.contains("namespaces \"ghost\" not found"),
        "{}",
        ssa.stderr
    );
}

#[test]
fn invalid_name_is_rejected() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(&CONFIGMAP.replace("name: settings", "name: Not_Valid"));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("metadata.name: Invalid value"),
        "{}",
        out.stderr
    );
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

#[test]
fn custom_resources_after_their_crd() {
    let Some(c) = Cluster::start() else { return };
    c.apply(CRD).ok();
    let out = c
        .apply("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n")
        .ok();
    assert!(
        out.stdout.contains("widget.example.com/w1 created"),
        "{}",
        out.stdout
    );
    let ssa = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 4}\n";
    c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], ssa)
        .ok();
    let out = c.kubectl(&["get", "widgets"]).ok();
    assert!(
        out.stdout.contains("w1") && out.stdout.contains("w2"),
        "{}",
        out.stdout
    );
    let out = c
        .kubectl(&["get", "wd", "w2", "-o", "jsonpath={.spec.size}"])
        .ok();
    assert_eq!(out.stdout, "4");
    assert_eq!(c.sandbox.objects("example.com/v1", "Widget").len(), 2);

    c.kubectl(&["delete", "crd", "widgets.example.com"]).ok();
    assert!(c.sandbox.objects("example.com/v1", "Widget").is_empty());
}

#[test]
fn auth_commands() {
    let Some(c) = Cluster::start() else { return };
    let out = c.kubectl(&["auth", "can-i", "create", "deployments"]).ok();
    assert_eq!(out.stdout.trim(), "yes");
    let out = c.kubectl(&["auth", "whoami"]).ok();
    assert!(out.stdout.contains("kube-sandbox:admin"), "{}", out.stdout);
}

#[test]
fn injected_faults_reach_kubectl() {
    let Some(c) = Cluster::start() else { return };
    c.sandbox
        .fail_path("/api/v1/namespaces/default/configmaps", 503);
    let out = c.apply(CONFIGMAP);
    assert_ne!(out.code, 0);
    assert!(c.sandbox.requests().iter().any(|r| r.status == 503));
    c.sandbox.clear_faults();
    c.sandbox.clear_requests();
    c.apply(CONFIGMAP).ok();
    assert!(c
        .sandbox
        .requests()
        .iter()
        .all(|r| r.status < 400 || r.status == 404));
}
