//! Deploy safety through real pushes: health gates, automatic rollback (both strategies),
//! history, status, manual rollback (also to a deploy tag), drift and its repair, the
//! pre-receive gate, and removed Terraform roots.

use crate::util::{
    configmap, deployment, namespace, sandboxed, terraform_root, World, FAIL_ROLLOUT,
};

fn world(env_extra: &str) -> Option<World> {
    sandboxed(env_extra)
}

/// Commits namespace `app` with Deployment `web` (`image`, pod `annotations`) and ConfigMap
/// `settings` (`cm`); the commit's id.
pub(crate) fn app(w: &World, image: &str, annotations: &str, cm: &str) -> String {
    w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace("app")),
            (
                "k8s/app/deploy.yaml",
                &deployment("web", "app", image, annotations),
            ),
            ("k8s/app/cm.yaml", &configmap("settings", Some("app"), cm)),
        ],
        &format!("app {image}"),
    )
}

fn template_image(w: &World) -> String {
    let d = w
        .sandbox()
        .object("apps/v1", "Deployment", Some("app"), "web")
        .expect("deployment");
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn has_fail_annotation(w: &World) -> bool {
    let d = w
        .sandbox()
        .object("apps/v1", "Deployment", Some("app"), "web")
        .unwrap();
    d["spec"]["template"]["metadata"]["annotations"]
        .get("kube-sandbox.io/fail-rollout")
        .is_some()
}

#[test]
fn failed_rollout_is_rolled_back_git_natively() {
    let Some(w) = world("") else { return };
    let good = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let bad = app(&w, "web:2", FAIL_ROLLOUT, "2");
    let out = w.push();
    let all = out.all();
    assert!(all.contains("unhealthy"), "{all}");
    assert!(all.contains("rolling back"), "{all}");
    // The cluster is back at the deployed commit's objects.
    assert_eq!(template_image(&w), "web:1");
    assert!(!has_fail_annotation(&w));
    assert_eq!(
        w.configmap("app", "settings").unwrap()["data"]["value"],
        "1"
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed");
    assert_eq!(rec["rolled_back_to"], good.as_str());
    let back = w.last_record(&good);
    assert_eq!(back["action"], "rollback");
    assert_eq!(back["result"], "succeeded");
    assert_eq!(back["from"], bad.as_str());
}

#[test]
fn failed_rollout_with_rollout_undo() {
    let Some(w) = world("on_failure = \"rollout-undo\"") else {
        return;
    };
    let good = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let bad = app(&w, "web:2", FAIL_ROLLOUT, "2");
    let out = w.push();
    assert!(out.all().contains("rollout undo"), "{}", out.all());
    // The cluster's own history restored the previous template; the ConfigMap is not a
    // workload and stays at the new value.
    assert_eq!(template_image(&w), "web:1");
    assert!(!has_fail_annotation(&w));
    assert_eq!(
        w.configmap("app", "settings").unwrap()["data"]["value"],
        "2"
    );
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("kubectl rollout undo"),
        "{rec}"
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
}

#[test]
fn stop_leaves_the_failure_in_place() {
    let Some(w) = world("on_failure = \"stop\"") else {
        return;
    };
    app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let bad = app(&w, "web:2", FAIL_ROLLOUT, "2");
    w.push();
    assert_eq!(template_image(&w), "web:2");
    assert_eq!(w.last_record(&bad)["result"], "failed");
    assert!(w.last_record(&bad).get("rolled_back_to").is_none());
}

#[test]
fn history_status_and_manual_rollback() {
    let Some(w) = world("tag_deploys = true") else {
        return;
    };
    let c1 = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let c2 = app(&w, "web:2", "", "2");
    w.push().assert_ok();
    let c3 = app(&w, "web:3", "", "3");
    w.push().assert_ok();
    // Pending commits: one pushed to the branch but not deployed (a replay target).
    let h = w.hookops(&[
        "history",
        "--json",
        "--allowed-signers",
        w.allowed_signers.to_str().unwrap(),
    ]);
    h.assert_ok();
    let items: Vec<serde_json::Value> = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(items.len(), 3, "{}", h.stdout);
    assert_eq!(items[0]["commit"], c3.as_str(), "newest first");
    assert!(items.iter().all(|i| i["verified"] == true));
    assert!(items[0]["duration_ms"].as_i64().is_some());
    let text = w.hookops(&["history"]).stdout;
    assert!(
        text.contains("deploy") && text.contains("succeeded"),
        "{text}"
    );

    let s = w.hookops(&["status", "--json"]);
    let st: Vec<serde_json::Value> = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(st[0]["env"], "prod");
    assert_eq!(st[0]["deployed"], c3.as_str());
    assert_eq!(st[0]["pending_commits"], 0);
    assert_eq!(st[0]["last"]["result"], "succeeded");

    // Default: back to the previous good deploy.
    let out = w.hookops(&["rollback", "--env", "prod"]);
    out.assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(c2.as_str()));
    assert_eq!(
        w.configmap("app", "settings").unwrap()["data"]["value"],
        "2"
    );
    let rec = w.last_record(&c2);
    assert_eq!(rec["action"], "rollback");
    assert_eq!(rec["from"], c3.as_str());

    // Deploy tags: one per good deploy (and the rollback); roll back to the first one.
    let tags = w
        .git(Some(&w.server), &["tag", "--list", "deploy/prod/*"])
        .stdout;
    let tags: Vec<&str> = tags.lines().collect();
    assert_eq!(tags.len(), 4, "{tags:?}");
    let first = tags
        .iter()
        .find(|t| {
            w.git(Some(&w.server), &["rev-parse", &format!("{t}^{{commit}}")])
                .stdout
                .trim()
                == c1
        })
        .unwrap();
    w.hookops(&["rollback", "--env", "prod", "--to", first])
        .assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(c1.as_str()));
    assert_eq!(template_image(&w), "web:1");

    let s = w.hookops(&["status", "--json"]);
    let st: Vec<serde_json::Value> = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(
        st[0]["pending_commits"], 2,
        "c2 and c3 are on the branch but not deployed"
    );
    let out = w.hookops(&["rollback", "--env", "nope"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("no environment named \"nope\""),
        "{}",
        out.stderr
    );
}

#[test]
fn drift_is_detected_recorded_and_repaired() {
    let Some(w) = world("") else { return };
    let c = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert!(out.ok(), "{}", out.all());
    assert!(out.stdout.contains("in sync"), "{}", out.stdout);
    // An out-of-band edit with the real kubectl.
    let k = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            w.kubeconfig.to_str().unwrap(),
            "-n",
            "app",
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"value":"edited"}}"#,
        ])
        .output()
        .unwrap();
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("DRIFTED"), "{}", out.stdout);
    let rec = w.last_record(&c);
    assert_eq!(rec["action"], "drift");
    assert!(
        rec["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["drifted"].as_u64().unwrap_or(0) > 0),
        "{rec}"
    );
    let out = w.hookops(&["drift", "--env", "prod", "--repair"]);
    assert!(out.ok(), "{}", out.all());
    assert_eq!(
        w.configmap("app", "settings").unwrap()["data"]["value"],
        "1"
    );
    assert!(w.hookops(&["drift"]).ok());
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    // Could not check (the cluster is unreachable): 2, like `git diff --exit-code` on error.
    let dead = w.dead_kubeconfig();
    let text = std::fs::read_to_string(w.server.join("hookops/config.toml"))
        .unwrap()
        .replace(w.kubeconfig.to_str().unwrap(), dead.to_str().unwrap());
    w.write_server_config(&text);
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
}

#[test]
fn pre_receive_gate_rejects_broken_pushes() {
    let Some(w) = world("allowed_namespaces = [\"app\"]\nallow_cluster_scoped = true") else {
        return;
    };
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    let good = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let tip = || {
        w.git(Some(&w.server), &["rev-parse", "main"])
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(tip(), good);

    w.commit(
        &[(
            "k8s/app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\n",
        )],
        "broken yaml",
    );
    let out = w.push();
    out.assert_fail();
    assert!(out.all().contains("push rejected"), "{}", out.all());
    assert!(
        out.all().contains("k8s/app/cm.yaml:5:1: invalid YAML"),
        "{}",
        out.all()
    );
    assert_eq!(tip(), good, "the gate keeps the ref where it was");
    w.in_clone(&["reset", "-q", "--hard", &good]).assert_ok();

    w.commit(
        &[("hookops.toml", "[[target]]\nname = \"a\"\npath = \"k8s/app\"\ntype = \"kubectl\"\ndepends_on = [\"b\"]\n[[target]]\nname = \"b\"\npath = \"k8s/ns\"\ntype = \"kubectl\"\ndepends_on = [\"a\"]\n")],
        "cycle",
    );
    let out = w.push();
    out.assert_fail();
    assert!(
        out.all().contains("dependency cycle: a -> b -> a"),
        "{}",
        out.all()
    );
    w.in_clone(&["reset", "-q", "--hard", &good]).assert_ok();

    w.commit(
        &[(
            "k8s/app/other.yaml",
            &configmap("x", Some("kube-system"), "1"),
        )],
        "policy",
    );
    let out = w.push();
    out.assert_fail();
    assert!(
        out.all()
            .contains("namespace \"kube-system\" is not allowed"),
        "{}",
        out.all()
    );
    w.in_clone(&["reset", "-q", "--hard", &good]).assert_ok();

    let ok = w.commit(
        &[("k8s/app/cm.yaml", &configmap("settings", Some("app"), "2"))],
        "fine",
    );
    w.push().assert_ok();
    assert_eq!(tip(), ok);
    assert_eq!(
        w.configmap("app", "settings").unwrap()["data"]["value"],
        "2"
    );
}

#[test]
fn removed_terraform_root_is_skipped_unless_allowed() {
    let Some(w) = world("") else { return };
    w.commit(
        &[
            ("infra/main.tf", &terraform_root("v1")),
            ("k8s/a.yaml", &configmap("a", Some("default"), "1")),
        ],
        "tf",
    );
    w.push().assert_ok();
    let state = w
        .server
        .join("hookops/work/prod/terraform/infra/infra/terraform.tfstate");
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .contains("terraform_data"));
    let c = w.remove(&["infra"], "drop infra");
    w.push().assert_ok();
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert_eq!(rec["targets"][0]["result"], "skipped");
    assert!(
        rec["targets"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("allow_destroy"),
        "{rec}"
    );
    assert!(
        std::fs::read_to_string(&state)
            .unwrap()
            .contains("terraform_data"),
        "not destroyed"
    );

    // Allowed: the root is destroyed from its last deployed revision.
    w.configure("allow_destroy = true", "");
    w.commit(&[("infra/main.tf", &terraform_root("v2"))], "infra again");
    w.push().assert_ok();
    let c = w.remove(&["infra"], "drop infra for good");
    w.push().assert_ok();
    let rec = w.last_record(&c);
    assert_eq!(rec["targets"][0]["result"], "succeeded", "{rec}");
    assert_eq!(rec["targets"][0]["pruned"], 1, "{rec}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        state["resources"].as_array().map(|r| r.len()).unwrap_or(0),
        0
    );
}

#[test]
fn health_timeout_from_the_tree_is_capped_by_the_server() {
    let Some(w) = world("on_failure = \"stop\"\nmax_health_timeout = 2") else {
        return;
    };
    let slow = "        kube-sandbox.io/ready-delay: \"30s\"\n";
    let tree = "[[target]]\nname = \"app\"\npath = \"k8s\"\ntype = \"kubectl\"\ntimeout = 600\n";
    let c = w.commit(
        &[
            ("hookops.toml", tree),
            ("k8s/ns.yaml", &namespace("app")),
            ("k8s/deploy.yaml", &deployment("web", "app", "web:1", slow)),
        ],
        "slow",
    );
    let started = std::time::Instant::now();
    let out = w.push();
    let waited = started.elapsed();
    assert!(
        out.all().contains("waiting for Deployment.apps app/web"),
        "{}",
        out.all()
    );
    assert!(out.all().contains("unhealthy"), "{}", out.all());
    assert!(
        waited < std::time::Duration::from_secs(25),
        "the server cap (2 s) applies, not the tree's 600 s"
    );
    assert_eq!(w.last_record(&c)["result"], "failed");
}
