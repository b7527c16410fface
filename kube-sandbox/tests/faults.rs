//! Fault injection beyond plain failures: a write that happens although the client is told
//! it failed (`fail_after_write`), and failures of a deterministic share of requests
//! (`fail_path_ratio`). The first is driven by the real kubectl.

mod common;

use common::{raw, Cluster};

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: lost
  namespace: default
data:
  value: one
";

fn value(c: &Cluster) -> Option<String> {
    c.sandbox
        .object("v1", "ConfigMap", Some("default"), "lost")
        .map(|o| o["data"]["value"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_write_answered_500_afterwards_still_changed_the_object() {
    let Some(c) = Cluster::start() else { return };
    c.sandbox
        .fail_after_write("/api/v1/namespaces/default/configmaps", 500);
    // Server-side apply (a PATCH that creates): kubectl reports the 500...
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=hookops",
        "-f",
        "-",
    ];
    let out = c.kubectl_stdin(&ssa, CM);
    assert_ne!(
        out.code, 0,
        "kubectl should report the error: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("injected failure after the write"),
        "{}",
        out.stderr
    );
    // ...and yet the object exists.
    assert_eq!(value(&c).as_deref(), Some("one"));
    // Reads are not affected: kubectl get works under the fault.
    let got = c
        .kubectl(&["get", "configmap", "lost", "-o", "jsonpath={.data.value}"])
        .ok();
    assert_eq!(got.stdout, "one");
    // An update: reported failed, applied.
    let out = c.kubectl_stdin(&ssa, &CM.replace("one", "two"));
    assert_ne!(out.code, 0);
    assert_eq!(value(&c).as_deref(), Some("two"));
    // A delete: reported failed, deleted.
    let out = c.kubectl(&["delete", "configmap", "lost", "--wait=false"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_eq!(value(&c), None);
    let statuses: Vec<(String, u16)> = c
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v1/namespaces/default/configmaps"))
        .map(|r| (r.method, r.status))
        .collect();
    assert!(
        statuses
            .iter()
            .filter(|(m, _)| m != "GET")
            .all(|(_, s)| *s == 500),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(m, s)| m == "GET" && *s == 200),
        "{statuses:?}"
    );
    // Cleared, the next apply is answered normally.
    c.sandbox.clear_faults();
    c.kubectl_stdin(&ssa, CM).ok();
    assert_eq!(value(&c).as_deref(), Some("one"));
}

#[test]
fn a_plain_failure_wins_over_a_failure_after_the_write() {
    let Some(c) = Cluster::start() else { return };
    c.sandbox
        .fail_after_write("/api/v1/namespaces/default/configmaps", 500);
    c.sandbox
        .fail_path("/api/v1/namespaces/default/configmaps/lost", 503);
    let out = c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=hookops",
            "-f",
            "-",
        ],
        CM,
    );
    assert_ne!(out.code, 0);
    assert_eq!(value(&c), None, "a plain failure must not write");
}

/// Which of `n` GETs of one path fail under `fail_path_ratio(…, permille, seed)`.
fn pattern(permille: u16, seed: u64, n: usize) -> Vec<bool> {
    let sandbox = kube_sandbox::Sandbox::start().expect("sandbox");
    sandbox.fail_path_ratio("/api/v1/namespaces/default/configmaps", 500, permille, seed);
    (0..n)
        .map(|_| {
            let (status, _) = raw::request(
                sandbox.port(),
                "GET",
                "/api/v1/namespaces/default/configmaps",
                None,
            );
            assert!(status == 200 || status == 500, "{status}");
            status == 500
        })
        .collect()
}

#[test]
fn a_failure_ratio_is_deterministic_per_seed() {
    let a = pattern(300, 7, 200);
    let failed = a.iter().filter(|f| **f).count();
    assert!(
        (30..=90).contains(&failed),
        "{failed} of 200 failed at 30 %"
    );
    assert_eq!(a, pattern(300, 7, 200), "same seed, same failures");
    assert_ne!(a, pattern(300, 8, 200), "another seed, other failures");
    assert!(pattern(0, 7, 50).iter().all(|f| !f));
    assert!(pattern(1000, 7, 50).iter().all(|f| *f));
    // Other paths are untouched.
    let sandbox = kube_sandbox::Sandbox::start().expect("sandbox");
    sandbox.fail_path_ratio("/api/v1/namespaces/default/configmaps", 500, 1000, 1);
    let (status, _) = raw::request(sandbox.port(), "GET", "/api/v1/namespaces", None);
    assert_eq!(status, 200);
}
