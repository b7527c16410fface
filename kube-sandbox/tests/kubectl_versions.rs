//! Smoke test with the oldest and newest bundled kubectl clients (1.27 and
//! 1.33), driven directly rather than through the version dispatcher.

mod common;

use common::Cluster;

fn smoke(kubectl: &str) {
    let Some(c) = Cluster::with_kubectl(kubectl) else {
        return;
    };
    c.apply(&common::deployment("web", "nginx:1", "")).ok();
    c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=hookops",
            "-f",
            "-",
        ],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: \"1\"}\n",
    )
    .ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .ok();
    c.apply(&common::deployment("web", "nginx:2", "")).ok();
    c.kubectl(&["rollout", "undo", "deployment/web"]).ok();
    let d = c.web();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    let diff = c.kubectl_stdin(
        &["diff", "-f", "-"],
        &common::deployment("web", "nginx:3", ""),
    );
    assert_eq!(diff.code, 1, "{}", diff.stderr);
    c.kubectl(&["get", "deploy,rs,cm", "-o", "name"]).ok();
    c.kubectl(&["delete", "deployment", "web", "--wait"]).ok();
}

#[test]
fn kubectl_1_27() {
    smoke("/usr/lib/google-cloud-sdk/bin/kubectl.1.27");
}

#[test]
fn kubectl_1_33() {
    smoke("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
}
