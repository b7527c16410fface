//! The core pipeline through real pushes: a bare server repository with the hook installed,
//! the real kubectl against the kube sandbox, the real terraform offline.

use crate::util::{configmap, namespace, sandboxed, terraform_root, write_script, World};

fn world() -> Option<World> {
    sandboxed("")
}

const TREE: &str = r#"[[target]]
name = "infra"
path = "infra"
type = "terraform"

[[target]]
name = "base"
path = "k8s/base"
type = "kubectl"

[[target]]
name = "web"
path = "k8s/web"
type = "kubectl"
namespace = "web"
depends_on = ["base"]
"#;

/// Commits the first tree: `TREE`'s Terraform root, namespace and three ConfigMaps in two
/// files, and a README no target reads.
pub(crate) fn commit_first_tree(w: &World) -> String {
    w.commit(
        &[
            ("hookops.toml", TREE),
            ("infra/main.tf", &terraform_root("v1")),
            ("k8s/base/ns.yaml", &namespace("web")),
            ("k8s/web/a.yaml", &configmap("a", None, "1")),
            (
                "k8s/web/bc.yaml",
                &format!(
                    "{}---\n{}",
                    configmap("b", None, "1"),
                    configmap("c", None, "1")
                ),
            ),
            ("README.md", "demo\n"),
        ],
        "first",
    )
}

fn first_deploy(w: &World) -> String {
    let c = commit_first_tree(w);
    let out = w.push();
    out.assert_ok();
    assert!(out.all().contains("deployed"), "{}", out.all());
    c
}

#[test]
fn first_deploy_applies_everything_and_signs_a_record() {
    let Some(w) = world() else { return };
    let c = first_deploy(&w);
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    for name in ["a", "b", "c"] {
        let cm = w.configmap("web", name).expect("configmap applied");
        assert_eq!(cm["data"]["value"], "1");
    }
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "succeeded");
    assert_eq!(rec["action"], "deploy");
    assert_eq!(rec["env"], "prod");
    assert_eq!(rec["from"], serde_json::Value::Null);
    let names: Vec<&str> = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{rec}");
    // Dependencies: base (the namespace) before web.
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("base") < pos("web"));
    let web = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "web")
        .unwrap();
    assert_eq!(web["applied"], 3);
    let infra = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "infra")
        .unwrap();
    assert_eq!(infra["applied"], 1, "{rec}");
    // The server-side apply used the hookops field manager, manifests on stdin.
    let ssa: Vec<_> = w
        .sandbox()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(
        ssa.iter().all(|r| r.path.contains("fieldManager=hookops")),
        "{ssa:?}"
    );
    assert!(ssa
        .iter()
        .all(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml")));
    // The record verifies with hookops and with stock ssh-keygen.
    w.hookops(&[
        "verify",
        &c,
        "--allowed-signers",
        w.allowed_signers.to_str().unwrap(),
    ])
    .assert_ok();
    let note = w.note(&c);
    let payload = note.lines().find(|l| l.starts_with('{')).unwrap();
    let sig: String = note
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN SSH SIGNATURE"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    w.ssh_keygen_verify(&w.allowed_signers, "deployer@test", payload, &sig, None)
        .assert_ok();
}

#[test]
fn one_file_change_touches_only_its_objects() {
    let Some(w) = world() else { return };
    first_deploy(&w);
    w.sandbox().clear_requests();
    let c = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", None, "2"))],
        "change a",
    );
    let out = w.push();
    out.assert_ok();
    let writes = w.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(
        writes[0].starts_with("PATCH /api/v1/namespaces/web/configmaps/a?"),
        "{writes:?}"
    );
    assert_eq!(w.configmap("web", "a").unwrap()["data"]["value"], "2");
    let rec = w.last_record(&c);
    assert_eq!(rec["targets"].as_array().unwrap().len(), 1, "{rec}");
    // terraform did not run: its target is not in the output at all.
    assert!(!out.all().contains("infra"), "{}", out.all());
}

#[test]
fn deleted_file_removed_document_and_removed_target_are_pruned() {
    let Some(w) = world() else { return };
    first_deploy(&w);
    // Document c removed from bc.yaml, a.yaml deleted.
    std::fs::write(w.clone.join("k8s/web/bc.yaml"), configmap("b", None, "1")).unwrap();
    let c = w.remove(&["k8s/web/a.yaml"], "prune a and c");
    w.push().assert_ok();
    assert!(w.configmap("web", "a").is_none());
    assert!(w.configmap("web", "c").is_none());
    assert!(w.configmap("web", "b").is_some());
    let rec = w.last_record(&c);
    assert_eq!(rec["targets"][0]["pruned"], 2, "{rec}");
    // A whole target removed from hookops.toml: its objects go too.
    let tree = TREE.replace("[[target]]\nname = \"web\"\npath = \"k8s/web\"\ntype = \"kubectl\"\nnamespace = \"web\"\ndepends_on = [\"base\"]\n", "");
    w.commit(&[("hookops.toml", &tree)], "drop web");
    w.push().assert_ok();
    assert!(w.configmap("web", "b").is_none());
}

#[test]
fn terraform_change_reapplies() {
    let Some(w) = world() else { return };
    first_deploy(&w);
    let c = w.commit(&[("infra/main.tf", &terraform_root("v2"))], "tf v2");
    let out = w.push();
    out.assert_ok();
    assert!(out.all().contains("infra"), "{}", out.all());
    let rec = w.last_record(&c);
    assert_eq!(rec["targets"][0]["name"], "infra");
    assert_eq!(rec["targets"][0]["applied"], 1, "{rec}");
    // The state lives in the persistent work dir and no plan file is left behind.
    let root = w.server.join("hookops/work/prod/terraform/infra/infra");
    let state = std::fs::read_to_string(root.join("terraform.tfstate")).unwrap();
    assert!(state.contains("v2"));
    assert!(!root.join("hookops.tfplan").exists());
}

#[test]
fn several_refs_unmapped_branch_and_deletion() {
    let Some(w) = world() else { return };
    w.configure("", "[[environment]]\nname = \"staging\"\nbranch = \"staging\"\nkubeconfig = \"KUBE\"\ncontext = \"sandbox\"\n".replace("KUBE", w.kubeconfig.to_str().unwrap()).as_str());
    w.commit(
        &[
            ("k8s/base/ns.yaml", &namespace("web")),
            ("k8s/web/a.yaml", &configmap("a", Some("web"), "1")),
        ],
        "one",
    );
    let out = w.push_args(&["origin", "HEAD:main", "HEAD:staging", "HEAD:feature"]);
    out.assert_ok();
    let all = out.all();
    assert!(all.contains("prod: deployed"), "{all}");
    assert!(all.contains("staging: deployed"), "{all}");
    assert!(
        all.contains("refs/heads/feature: not mapped to an environment; ignored"),
        "{all}"
    );
    assert!(w.pointer("prod").is_some() && w.pointer("staging").is_some());
    let out = w.push_args(&["origin", ":staging"]);
    out.assert_ok();
    assert!(
        out.all()
            .contains("refs/heads/staging: deleted; environment staging left as deployed"),
        "{}",
        out.all()
    );
    assert!(w.pointer("staging").is_some());
}

#[test]
fn force_push_diffs_from_the_pointer() {
    let Some(w) = world() else { return };
    first_deploy(&w);
    w.commit(&[("k8s/web/d.yaml", &configmap("d", None, "1"))], "add d");
    w.push().assert_ok();
    assert!(w.configmap("web", "d").is_some());
    // Rewrite history: drop the commit that added d, change a instead.
    w.in_clone(&["reset", "-q", "--hard", "HEAD~1"]).assert_ok();
    let c = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", None, "forced"))],
        "rewrite",
    );
    w.push_args(&["--force", "origin", "HEAD:main"]).assert_ok();
    assert!(
        w.configmap("web", "d").is_none(),
        "d was deployed by the dropped commit and must be pruned"
    );
    assert_eq!(w.configmap("web", "a").unwrap()["data"]["value"], "forced");
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
}

#[test]
fn failed_deploy_keeps_pointer_and_next_push_retries() {
    let Some(w) = world() else { return };
    w.configure("on_failure = \"stop\"", "");
    let good = first_deploy(&w);
    w.sandbox()
        .fail_path("/api/v1/namespaces/web/configmaps/a", 500);
    let bad = w.commit(&[("k8s/web/a.yaml", &configmap("a", None, "2"))], "a2");
    let out = w.push();
    assert!(out.all().contains("FAILED"), "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    let rec = w.last_record(&bad);
    assert_eq!(rec["result"], "failed");
    assert_eq!(rec["targets"][0]["result"], "failed");
    w.sandbox().clear_faults();
    let next = w.commit(&[("README.md", "unrelated\n")], "docs only");
    w.push().assert_ok();
    // The pending change to a came with the next push, though that push only touched a README.
    assert_eq!(w.configmap("web", "a").unwrap()["data"]["value"], "2");
    assert_eq!(w.pointer("prod").as_deref(), Some(next.as_str()));
    assert_eq!(w.last_record(&next)["from"], good.as_str());
}

#[test]
fn post_merge_in_a_clone() {
    let Some(w) = world() else { return };
    let c1 = w.commit(
        &[("k8s/pm/a.yaml", &configmap("pm-a", Some("default"), "1"))],
        "one",
    );
    w.push().assert_ok();
    // The deploying side is a clone that pulls: hook installed there, config in its .git.
    let deployer = w.tmp.path().join("deployer");
    w.git(
        None,
        &[
            "clone",
            "-q",
            w.server.to_str().unwrap(),
            deployer.to_str().unwrap(),
        ],
    )
    .assert_ok();
    let inst = w.hookops(&["install", deployer.to_str().unwrap()]);
    inst.assert_ok();
    assert!(
        deployer.join(".git/hooks/post-merge").exists(),
        "{}",
        inst.all()
    );
    std::fs::create_dir_all(deployer.join(".git/hookops")).unwrap();
    std::fs::write(
        deployer.join(".git/hookops/config.toml"),
        format!(
            "[[environment]]\nname = \"pm\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n",
            w.kubeconfig.display()
        ),
    )
    .unwrap();
    let c2 = w.commit(
        &[("k8s/pm/a.yaml", &configmap("pm-a", Some("default"), "2"))],
        "two",
    );
    w.push().assert_ok();
    w.sandbox().clear_requests();
    let out = w.git(Some(&deployer), &["pull", "--no-rebase", "origin", "main"]);
    out.assert_ok();
    assert!(out.all().contains("pm: deployed"), "{}", out.all());
    // Never deployed before: the whole tree of HEAD, whatever ORIG_HEAD says (issue 13).
    assert_eq!(w.writes().len(), 1, "{:?}", w.writes());
    let pointer = w.git(Some(&deployer), &["rev-parse", "refs/hookops/deployed/pm"]);
    assert_eq!(pointer.stdout.trim(), c2);
    assert_eq!(
        w.last_record_in(&deployer, &c2)["from"],
        serde_json::Value::Null
    );
    assert_ne!(c1, c2);
}

#[test]
fn replay_and_plan() {
    let Some(w) = world() else { return };
    let c = first_deploy(&w);
    let before = w.records(&c).len();
    w.sandbox().clear_requests();
    // Nothing between the pointer and the tip: an empty plan.
    let plan = w.hookops(&["plan", "main", "--json"]);
    plan.assert_ok();
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(p["targets"].as_array().unwrap().len(), 0, "{p}");
    // A commit that is in the clone only: plan it with --to after fetching it into the server.
    let e = w.commit(&[("k8s/web/e.yaml", &configmap("e", None, "1"))], "add e");
    w.push_args(&["origin", "HEAD:refs/heads/side"]).assert_ok();
    let plan = w.hookops(&["plan", "main", "--to", &e, "--json"]);
    plan.assert_ok();
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(p["targets"][0]["name"], "web", "{p}");
    assert_eq!(p["targets"][0]["apply"][0]["name"], "e");
    let human = w.hookops(&["plan", "main", "--to", &e]);
    assert!(
        human
            .stdout
            .contains("apply ConfigMap web/e (k8s/web/e.yaml:1)"),
        "{}",
        human.stdout
    );
    assert!(
        w.sandbox().requests().is_empty(),
        "plan must not contact the cluster"
    );
    assert_eq!(w.records(&c).len(), before, "plan must not write records");
    assert!(w.records(&e).is_empty());
    // Replay that range by hand.
    w.hookops(&["replay", "main", "--to", &e]).assert_ok();
    assert!(w.configmap("web", "e").is_some());
    assert_eq!(w.pointer("prod").unwrap(), e);
    // Replaying from an explicit old revision re-applies the range again.
    w.sandbox().clear_requests();
    w.hookops(&["replay", "main", "--from", &c, "--to", &e])
        .assert_ok();
    assert_eq!(w.writes().len(), 1, "{:?}", w.writes());
}

#[test]
fn tampered_record_fails_verify() {
    let Some(w) = world() else { return };
    let c = first_deploy(&w);
    let note = w.note(&c);
    let tampered = note.replace("\"result\":\"succeeded\"", "\"result\":\"failed\"");
    assert_ne!(note, tampered);
    w.replace_note(&c, &tampered);
    let out = w.hookops(&[
        "verify",
        &c,
        "--allowed-signers",
        w.allowed_signers.to_str().unwrap(),
    ]);
    out.assert_fail();
    assert!(out.all().contains("BAD signature"), "{}", out.all());
    // A key that is not in allowed_signers is named as unknown.
    let other = w.tmp.path().join("other_signers");
    std::fs::write(&other, "").unwrap();
    w.replace_note(&c, &note);
    let out = w.hookops(&["verify", &c, "--allowed-signers", other.to_str().unwrap()]);
    out.assert_fail();
    assert!(out.all().contains("unknown key"), "{}", out.all());
}

#[test]
fn discovered_targets_without_hookops_toml() {
    let Some(w) = world() else { return };
    let c = w.commit(
        &[
            ("apps/ns.yaml", &namespace("disc")),
            ("apps/one/cm.yaml", &configmap("one", Some("disc"), "1")),
            ("apps/two/cm.yaml", &configmap("two", Some("disc"), "1")),
            (".github/workflows/ci.yml", "on: push\njobs: {}\n"),
            ("docs/notes.yaml", "just: data\n"),
        ],
        "discover",
    );
    w.push().assert_ok();
    let rec = w.last_record(&c);
    let mut names: Vec<String> = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["apps", "apps/one", "apps/two"], "{rec}");
    assert!(w.configmap("disc", "two").is_some());
    let c = w.commit(
        &[("apps/two/cm.yaml", &configmap("two", Some("disc"), "2"))],
        "two",
    );
    w.push().assert_ok();
    let rec = w.last_record(&c);
    assert_eq!(rec["targets"].as_array().unwrap().len(), 1);
    assert_eq!(rec["targets"][0]["name"], "apps/two");
}

/// Kubernetes targets that start together share one kubectl apply; when that call fails, each
/// is applied again on its own, so only the target at fault fails. kubectl is the real one, run
/// through a wrapper script that only logs its arguments, to count the calls.
#[test]
fn targets_starting_together_share_one_kubectl_and_failures_stay_with_their_target() {
    let Some(w) = world() else { return };
    let calls = w.tmp.path().join("kubectl-calls");
    let wrapper = w.tmp.path().join("kubectl-logged");
    write_script(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec kubectl \"$@\"\n",
            calls.display()
        ),
    );
    let tools = format!("[tools]\nkubectl = \"{}\"\n", wrapper.display());
    w.configure("on_failure = \"stop\"", &tools);
    let applies = || {
        let text = std::fs::read_to_string(&calls).unwrap_or_default();
        let _ = std::fs::remove_file(&calls);
        text.lines().filter(|l| l.contains(" apply ")).count()
    };
    let files = |v: &str| {
        (1..=3)
            .map(|i| {
                (
                    format!("apps/t{i}/cm.yaml"),
                    configmap(&format!("t{i}"), Some("shared"), v),
                )
            })
            .collect::<Vec<_>>()
    };
    let commit = |files: &[(String, String)], message: &str| {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        w.commit(&refs, message)
    };
    let mut first = files("1");
    first.push(("apps/ns.yaml".into(), namespace("shared")));
    commit(&first, "three targets and their namespace");
    w.push().assert_ok();
    // The namespace's target first, alone; then the three together.
    assert_eq!(applies(), 2);
    for i in 1..=3 {
        let cm = w.configmap("shared", &format!("t{i}")).expect("applied");
        assert_eq!(cm["data"]["value"], "1");
    }

    w.sandbox()
        .fail_path("/api/v1/namespaces/shared/configmaps/t2", 500);
    let second = files("2");
    let c = commit(&second, "change all three; t2 cannot be written");
    let out = w.push();
    assert!(out.all().contains("FAILED"), "{}", out.all());
    // The shared call, then each target on its own.
    assert_eq!(applies(), 4);
    let rec = w.last_record(&c);
    let result = |name: &str| {
        rec["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {rec}"))["result"]
            .clone()
    };
    assert_eq!(result("apps/t1"), "succeeded", "{rec}");
    assert_eq!(result("apps/t2"), "failed", "{rec}");
    assert_eq!(result("apps/t3"), "succeeded", "{rec}");
    assert_eq!(w.configmap("shared", "t1").unwrap()["data"]["value"], "2");
    assert_eq!(w.configmap("shared", "t2").unwrap()["data"]["value"], "1");
    assert_eq!(w.configmap("shared", "t3").unwrap()["data"]["value"], "2");

    // `[deploy] batch = false`: one kubectl per target.
    w.sandbox().clear_faults();
    w.configure(
        "on_failure = \"stop\"",
        &format!("{tools}\n[deploy]\nbatch = false\n"),
    );
    let third = files("3");
    commit(&third, "change all three again");
    w.push().assert_ok();
    assert_eq!(applies(), 3);
    assert_eq!(w.configmap("shared", "t2").unwrap()["data"]["value"], "3");
}

// ---- bad input ------------------------------------------------------------------------------

#[test]
fn malformed_hook_stdin_and_unknown_revisions() {
    let Some(w) = world() else { return };
    let out = w.hookops_stdin(&["post-receive"], "not a valid line\n");
    out.assert_fail();
    assert!(
        out.stderr.contains("post-receive: stdin line 1"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
    let out = w.hookops(&["replay", "main", "--to", "no-such-rev"]);
    out.assert_fail();
    let out = w.hookops(&["replay", "nope"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("unknown ref \"nope\""),
        "{}",
        out.stderr
    );
    let out = w.hookops(&["verify", "deadbeef", "--allowed-signers", "/dev/null"]);
    out.assert_fail();
    assert!(out.stderr.contains("unknown revision"), "{}", out.stderr);
}

fn assert_refused(w: &World, files: &[(&str, &str)], expect: &str) {
    let c = w.commit(files, "bad");
    let out = w.push();
    assert!(
        out.all().contains(expect),
        "expected {expect:?} in:\n{}",
        out.all()
    );
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed", "{rec}");
    assert!(
        rec["reason"].as_str().unwrap_or("").contains(expect) || rec.to_string().contains(expect),
        "{rec}"
    );
    assert_ne!(w.pointer("prod").as_deref(), Some(c.as_str()));
}

#[test]
fn invalid_toml_names_line_and_column() {
    let Some(w) = world() else { return };
    assert_refused(
        &w,
        &[("hookops.toml", "[[target]]\nname = \"x\"\npath = k8s\n")],
        "line 3, column 8",
    );
}

#[test]
fn invalid_yaml_names_file_and_line() {
    let Some(w) = world() else { return };
    assert_refused(
        &w,
        &[
            (
                "hookops.toml",
                "[[target]]\nname = \"web\"\npath = \"k8s\"\ntype = \"kubectl\"\n",
            ),
            (
                "k8s/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n",
            ),
        ],
        "k8s/a.yaml:",
    );
}

/// A discovered target whose only manifest stops parsing is not "removed": pruning its objects
/// would delete what runs because of a typo. The push fails naming the file and line, and
/// nothing is deleted.
#[test]
fn broken_yaml_in_a_discovered_target_does_not_prune_it() {
    let Some(w) = world() else { return };
    let good = w.commit(
        &[("apps/web/cm.yaml", &configmap("web", Some("default"), "1"))],
        "web",
    );
    w.push().assert_ok();
    assert!(w.configmap("default", "web").is_some());
    w.sandbox().clear_requests();
    let bad = w.commit(
        &[(
            "apps/web/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [web\n",
        )],
        "typo",
    );
    let out = w.push();
    assert!(
        out.all().contains("apps/web/cm.yaml:5:1: invalid YAML"),
        "{}",
        out.all()
    );
    assert!(w.writes().is_empty(), "{:?}", w.writes());
    assert!(w.configmap("default", "web").is_some(), "pruned by a typo");
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    assert_eq!(w.last_record(&bad)["result"], "failed");
    // `plan` says the same, and a directory that really stops holding manifests is removed.
    let plan = w.hookops(&["plan", "main"]);
    plan.assert_fail();
    assert!(plan.all().contains("apps/web/cm.yaml:5"), "{}", plan.all());
    w.commit(
        &[("apps/web/cm.yaml", "just: data\n")],
        "no manifest any more",
    );
    w.push().assert_ok();
    assert!(w.configmap("default", "web").is_none());
}

#[test]
fn target_paths_symlinks_duplicates_cycles_and_server_keys() {
    let Some(w) = world() else { return };
    let t = |name: &str, path: &str, extra: &str| {
        format!("[[target]]\nname = \"{name}\"\npath = \"{path}\"\ntype = \"kubectl\"\n{extra}\n")
    };
    assert_refused(
        &w,
        &[("hookops.toml", &t("a", "../etc", ""))],
        "must not contain '..'",
    );
    assert_refused(
        &w,
        &[("hookops.toml", &t("a", "/etc", ""))],
        "must be relative",
    );
    assert_refused(
        &w,
        &[(
            "hookops.toml",
            &format!("{}{}", t("a", "x", ""), t("a", "y", "")),
        )],
        "defined twice",
    );
    assert_refused(
        &w,
        &[(
            "hookops.toml",
            &format!(
                "{}{}",
                t("a", "x", "depends_on = [\"b\"]"),
                t("b", "y", "depends_on = [\"a\"]")
            ),
        )],
        "dependency cycle",
    );
    assert_refused(
        &w,
        &[(
            "hookops.toml",
            &t("a", "x", "kubeconfig = \"/root/.kube/config\""),
        )],
        "unknown field `kubeconfig`",
    );
    // A symlink inside a target is refused, never followed.
    std::fs::create_dir_all(w.clone.join("k8s")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", w.clone.join("k8s/link.yaml")).unwrap();
    assert_refused(&w, &[("hookops.toml", &t("a", "k8s", ""))], "symbolic link");
}

#[test]
fn missing_tools_and_unreachable_cluster() {
    let Some(w) = world() else { return };
    w.write_server_config(&format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n[tools]\nkubectl = \"/nonexistent/kubectl\"\nterraform = \"/nonexistent/terraform\"\n",
        w.kubeconfig.display()
    ));
    let c = w.commit(
        &[
            ("k8s/a.yaml", &configmap("a", Some("default"), "1")),
            ("tf/main.tf", &terraform_root("x")),
        ],
        "tools",
    );
    let out = w.push();
    assert!(
        out.all()
            .contains("/nonexistent/kubectl: command not found"),
        "{}",
        out.all()
    );
    assert!(
        out.all()
            .contains("/nonexistent/terraform: command not found"),
        "{}",
        out.all()
    );
    assert_eq!(w.last_record(&c)["result"], "failed");
    // Unreachable cluster: a kubeconfig pointing at a closed port.
    let dead = w.dead_kubeconfig();
    w.write_server_config(&format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n",
        dead.display()
    ));
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "unreachable",
    );
    let out = w.push();
    assert!(out.all().contains("FAILED"), "{}", out.all());
    assert!(
        out.all().contains("connection refused") || out.all().contains("refused"),
        "{}",
        out.all()
    );
    assert_eq!(w.last_record(&c)["result"], "failed");
}

#[test]
fn kustomize_target_renders_old_and_new() {
    let Some(w) = world() else { return };
    let tree = "[[target]]\nname = \"ns\"\npath = \"ns\"\ntype = \"kubectl\"\n\n[[target]]\nname = \"app\"\npath = \"app/overlays/prod\"\ntype = \"kustomize\"\nwatch = [\"app/base\"]\n";
    let c = w.commit(
        &[
            ("hookops.toml", tree),
            ("ns/ns.yaml", &namespace("kz")),
            (
                "app/base/kustomization.yaml",
                "resources:\n- one.yaml\n- two.yaml\n",
            ),
            ("app/base/one.yaml", &configmap("one", None, "1")),
            ("app/base/two.yaml", &configmap("two", None, "1")),
            (
                "app/overlays/prod/kustomization.yaml",
                "namespace: kz\nnamePrefix: prod-\nresources:\n- ../../base\n",
            ),
        ],
        "kustomize",
    );
    w.push().assert_ok();
    assert!(w.configmap("kz", "prod-one").is_some());
    assert!(w.configmap("kz", "prod-two").is_some());
    assert_eq!(w.last_record(&c)["targets"].as_array().unwrap().len(), 2);
    // A change in the base (a watched path) re-renders the overlay; a resource dropped from
    // the kustomization is pruned.
    let c = w.commit(
        &[
            ("app/base/kustomization.yaml", "resources:\n- one.yaml\n"),
            ("app/base/one.yaml", &configmap("one", None, "2")),
        ],
        "drop two",
    );
    w.push().assert_ok();
    assert_eq!(w.configmap("kz", "prod-one").unwrap()["data"]["value"], "2");
    assert!(w.configmap("kz", "prod-two").is_none());
    let rec = w.last_record(&c);
    assert_eq!(rec["targets"][0]["name"], "app");
    assert_eq!(rec["targets"][0]["pruned"], 1, "{rec}");
    // A broken kustomization fails the deploy with kustomize's reason.
    let c = w.commit(
        &[(
            "app/overlays/prod/kustomization.yaml",
            "resources:\n- ../../missing\n",
        )],
        "broken",
    );
    let out = w.push();
    assert!(out.all().contains("kustomize failed"), "{}", out.all());
    assert_eq!(w.last_record(&c)["result"], "failed");
}

#[test]
fn unreadable_signing_key_refuses_to_deploy_and_says_so() {
    let Some(w) = world() else { return };
    std::fs::write(&w.key, "not a key\n").unwrap();
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "one",
    );
    let out = w.push();
    assert!(out.all().contains("not deploying"), "{}", out.all());
    assert!(out.all().contains("signing key"), "{}", out.all());
    assert!(
        w.configmap("default", "a").is_none(),
        "nothing deploys without the key"
    );
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed");
    assert_eq!(rec["signer"], serde_json::Value::Null);
    assert!(!w.note(&c).contains("BEGIN SSH SIGNATURE"));
    // Planning needs no key.
    w.hookops(&["plan", "main"]).assert_ok();
}
