//! Repositories laid out as people lay them out (issue 15, issue 13 §4), through real pushes and
//! without `hookops.toml`: Terraform environment roots sharing local modules, and kustomize
//! overlays over a base and a component. Bases and modules are never targets of their own; a
//! change in one re-deploys exactly the targets that use it; a reference that leaves the
//! repository (or reaches the network) is refused naming its file and line, and no message
//! shows a server path.

use crate::util::{configmap, namespace, sandboxed, write_script, World};

/// Target names of the newest record on `rev`, sorted.
fn deployed(w: &World, rev: &str) -> Vec<String> {
    let rec = w.last_record(rev);
    let mut names: Vec<String> = rec["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("{rec}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// No server-side path in what hookops says (git's own "To <url>" names the server on purpose).
#[track_caller]
fn no_server_path(w: &World, text: &str) {
    let tmp = w.tmp.path().display().to_string();
    for line in text.lines().filter(|l| l.contains("hookops")) {
        assert!(!line.contains(&tmp), "server path in:\n{text}");
        assert!(!line.contains("/hookops/work/"), "server path in:\n{text}");
    }
}

// ---- Terraform ------------------------------------------------------------------------------

const THING: &str = "variable \"v\" {}\n\nresource \"terraform_data\" \"t\" {\n  input = var.v\n}\n\noutput \"value\" {\n  value = terraform_data.t.output\n}\n";

fn thing(suffix: &str) -> String {
    THING.replace("var.v\n", &format!("\"${{var.v}}{suffix}\"\n"))
}

/// A module that calls `modules/inner` (nested modules).
const OUTER: &str = "variable \"v\" {}\n\nmodule \"inner\" {\n  source = \"../inner\"\n  v      = \"${var.v}-inner\"\n}\n";

/// An environment root calling `modules/thing` (and `modules/outer` when `outer`), with its
/// variable set by a tfvars file.
fn env_root(outer: bool) -> String {
    let mut text = "variable \"name\" {}\n\nmodule \"thing\" {\n  source = \"../../modules/thing\"\n  v      = var.name\n}\n".to_string();
    if outer {
        text.push_str(
            "\nmodule \"outer\" {\n  source = \"../../modules/outer\"\n  v      = var.name\n}\n",
        );
    }
    text
}

fn state(w: &World, root: &str) -> String {
    let dir = w
        .server
        .join("hookops/work/prod/terraform")
        .join(root.replace('/', "__"))
        .join(root);
    std::fs::read_to_string(dir.join("terraform.tfstate")).unwrap_or_default()
}

fn tf_world() -> Option<World> {
    let w = sandboxed("")?;
    w.configure("on_failure = \"stop\"", "");
    Some(w)
}

fn tf_layout(w: &World) -> String {
    w.commit(
        &[
            ("modules/thing/main.tf", THING),
            ("modules/outer/main.tf", OUTER),
            ("modules/inner/main.tf", THING),
            ("envs/prod/main.tf", &env_root(false)),
            ("envs/prod/terraform.tfvars", "name = \"prod-one\"\n"),
            ("envs/staging/main.tf", &env_root(true)),
            ("envs/staging/env.auto.tfvars", "name = \"staging-one\"\n"),
        ],
        "two environments over shared modules",
    )
}

/// Plans `rev` (pushed to a branch no environment deploys) against the deployed pointer. A
/// plan with a refused target exits non-zero; its output is returned all the same.
fn plan_of(w: &World, rev: &str) -> (String, serde_json::Value) {
    w.push_args(&["-f", "origin", &format!("{rev}:refs/heads/side")])
        .assert_ok();
    let human = w.hookops(&["plan", "main", "--to", rev]);
    let json = w.hookops(&["plan", "main", "--to", rev, "--json"]);
    assert_eq!(human.ok(), json.ok(), "{}{}", human.all(), json.all());
    (human.stdout, serde_json::from_str(&json.stdout).unwrap())
}

#[test]
fn terraform_roots_share_modules_and_a_module_change_reapplies_its_users_only() {
    let Some(w) = tf_world() else { return };
    let first = tf_layout(&w);
    let out = w.push();
    out.assert_ok();
    assert!(out.all().contains("prod: deployed"), "{}", out.all());
    // The roots are deployed; the modules are not roots.
    assert_eq!(deployed(&w, &first), ["envs/prod", "envs/staging"]);
    // terraform.tfvars and *.auto.tfvars were materialised and used as terraform uses them.
    assert!(state(&w, "envs/prod").contains("prod-one"));
    assert!(state(&w, "envs/staging").contains("staging-one-inner"));

    // A change in the shared module: plan says which roots and why, the push re-applies both
    // (in place: the state followed them), and nothing else.
    let c = w.commit(&[("modules/thing/main.tf", &thing("-2"))], "thing v2");
    let (human, json) = plan_of(&w, &c);
    assert!(
        human.contains("deploy envs/prod (terraform, envs/prod)"),
        "{human}"
    );
    assert!(human.contains("uses modules/thing"), "{human}");
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{json}");
    for t in targets {
        assert_eq!(t["uses"], serde_json::json!(["modules/thing"]), "{json}");
        assert_eq!(
            t["files"],
            serde_json::json!(["modules/thing/main.tf"]),
            "{json}"
        );
    }
    let out = w.push();
    out.assert_ok();
    assert_eq!(deployed(&w, &c), ["envs/prod", "envs/staging"]);
    assert_eq!(
        out.all()
            .matches("Plan: 0 to add, 1 to change, 0 to destroy")
            .count(),
        2,
        "{}",
        out.all()
    );
    assert!(state(&w, "envs/prod").contains("prod-one-2"));

    // A module used through another module: only the root that reaches it.
    let c = w.commit(&[("modules/inner/main.tf", &thing("-3"))], "inner v3");
    let (human, _) = plan_of(&w, &c);
    assert!(human.contains("uses modules/inner"), "{human}");
    w.push().assert_ok();
    assert_eq!(deployed(&w, &c), ["envs/staging"]);
    assert!(state(&w, "envs/staging").contains("staging-one-inner-3"));

    // A change in one root: that root only.
    let c = w.commit(
        &[("envs/prod/terraform.tfvars", "name = \"prod-two\"\n")],
        "prod tfvars",
    );
    w.push().assert_ok();
    assert_eq!(deployed(&w, &c), ["envs/prod"]);
    assert!(state(&w, "envs/prod").contains("prod-two-2"));

    // The index of references is kept in git, describing the deployed commit.
    let index = w.git(
        Some(&w.server),
        &["log", "-1", "--format=%B", "refs/hookops/references"],
    );
    assert!(
        index.stdout.contains(&format!("describes {c}")),
        "{}",
        index.stdout
    );
}

#[test]
fn a_removed_module_fails_its_users_and_a_source_leaving_the_repository_is_refused() {
    let Some(w) = tf_world() else { return };
    let good = tf_layout(&w);
    w.push().assert_ok();

    // modules/inner removed while modules/outer (used by envs/staging) still calls it.
    let c = w.remove(&["modules/inner"], "drop inner");
    let out = w.push();
    let all = out.all();
    assert!(all.contains("envs/staging"), "{all}");
    assert!(
        all.contains(
            "modules/outer/main.tf:4: module \"inner\": source \"../inner\": modules/inner is not in the tree"
        ),
        "{all}"
    );
    no_server_path(&w, &all);
    assert_eq!(w.last_record(&c)["result"], "failed");
    assert_eq!(deployed(&w, &c), ["envs/staging"]);
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    w.in_clone(&["reset", "-q", "--hard", &good]).assert_ok();
    w.push_args(&["-f", "origin", "HEAD:main"]).assert_ok();

    // A source that climbs out of the repository: refused by plan and by the push, with file
    // and line.
    let bad = env_root(false).replace("../../modules/thing", "../../../outside");
    let c = w.commit(&[("envs/prod/main.tf", &bad)], "outside");
    let expect = "envs/prod/main.tf:4: module \"thing\": source \"../../../outside\" climbs out of the repository";
    let (human, json) = plan_of(&w, &c);
    assert!(human.contains(expect), "{human}");
    assert!(
        json["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains(expect),
        "{json}"
    );
    let out = w.push();
    let all = out.all();
    assert!(all.contains(expect), "{all}");
    no_server_path(&w, &all);
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed");
    // envs/staging too: the failed attempt before touched it (modules/inner), so this deploy
    // reconciles it from the tip (architecture.md: a failed attempt is reconciled).
    assert_eq!(deployed(&w, &c), ["envs/prod", "envs/staging"]);
}

/// A `.terraform.lock.hcl` in git is materialised and enforced; without one, init runs as
/// usual. terraform is the real one, through a wrapper that logs its arguments.
#[test]
fn a_dependency_lock_file_in_git_is_enforced() {
    let Some(w) = tf_world() else { return };
    let calls = w.tmp.path().join("terraform-calls");
    let wrapper = w.tmp.path().join("terraform-logged");
    write_script(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$PWD $*\" >> '{}'\nexec terraform \"$@\"\n",
            calls.display()
        ),
    );
    w.configure(
        "on_failure = \"stop\"",
        &format!("[tools]\nterraform = \"{}\"\n", wrapper.display()),
    );
    tf_layout(&w);
    w.commit(
        &[(
            "envs/prod/.terraform.lock.hcl",
            "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n",
        )],
        "lock prod",
    );
    w.push().assert_ok();
    let log = std::fs::read_to_string(&calls).unwrap();
    let inits: Vec<&str> = log.lines().filter(|l| l.contains(" init ")).collect();
    assert_eq!(inits.len(), 2, "{log}");
    for l in inits {
        let locked = l.contains("-lockfile=readonly");
        assert_eq!(locked, l.contains("/envs/prod "), "{l}");
    }
}

// ---- kustomize ------------------------------------------------------------------------------

fn overlay(env: &str) -> String {
    format!(
        "namespace: {env}\nnamePrefix: {env}-\nresources:\n- ../../base\ncomponents:\n- ../../components/extra\n"
    )
}

const BASE: &str = "resources:\n- cm.yaml\nconfigMapGenerator:\n- name: app\n  files:\n  - app.properties\ngeneratorOptions:\n  disableNameSuffixHash: true\n";

const COMPONENT: &str =
    "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- extra.yaml\n";

fn kustomize_layout(w: &World) -> String {
    w.commit(
        &[
            (
                "namespaces/ns.yaml",
                &format!("{}---\n{}", namespace("staging"), namespace("prod")),
            ),
            ("base/kustomization.yaml", BASE),
            ("base/cm.yaml", &configmap("settings", None, "1")),
            ("base/app.properties", "colour=blue\n"),
            ("components/extra/kustomization.yaml", COMPONENT),
            (
                "components/extra/extra.yaml",
                &configmap("extra", None, "1"),
            ),
            ("overlays/staging/kustomization.yaml", &overlay("staging")),
            ("overlays/prod/kustomization.yaml", &overlay("prod")),
        ],
        "base, component and two overlays",
    )
}

fn value(w: &World, ns: &str, name: &str) -> String {
    let cm = w
        .configmap(ns, name)
        .unwrap_or_else(|| panic!("{ns}/{name} missing"));
    cm["data"]["value"].as_str().unwrap_or_default().to_string()
}

#[test]
fn kustomize_overlays_deploy_and_follow_their_base_component_and_generator() {
    let Some(w) = sandboxed("on_failure = \"stop\"") else {
        return;
    };
    let first = kustomize_layout(&w);
    w.push().assert_ok();
    // Both overlays, not the base nor the component.
    assert_eq!(
        deployed(&w, &first),
        ["namespaces", "overlays/prod", "overlays/staging"]
    );
    for env in ["staging", "prod"] {
        assert_eq!(value(&w, env, &format!("{env}-settings")), "1");
        assert_eq!(value(&w, env, &format!("{env}-extra")), "1");
        let app = w.configmap(env, &format!("{env}-app")).expect("generated");
        assert_eq!(app["data"]["app.properties"], "colour=blue\n");
    }

    // A change in the base, in its generator input, in the component: both overlays.
    for (path, text) in [
        ("base/cm.yaml", configmap("settings", None, "2")),
        ("base/app.properties", "colour=green\n".to_string()),
        ("components/extra/extra.yaml", configmap("extra", None, "2")),
    ] {
        let c = w.commit(&[(path, &text)], &format!("change {path}"));
        let out = w.push();
        out.assert_ok();
        assert_eq!(
            deployed(&w, &c),
            ["overlays/prod", "overlays/staging"],
            "{path}: {}",
            out.all()
        );
    }
    for env in ["staging", "prod"] {
        assert_eq!(value(&w, env, &format!("{env}-settings")), "2");
        assert_eq!(value(&w, env, &format!("{env}-extra")), "2");
        let app = w.configmap(env, &format!("{env}-app")).unwrap();
        assert_eq!(app["data"]["app.properties"], "colour=green\n");
    }

    // A change in one overlay: that overlay only.
    let c = w.commit(
        &[(
            "overlays/prod/kustomization.yaml",
            &format!("{}commonLabels:\n  tier: prod\n", overlay("prod")),
        )],
        "label prod",
    );
    w.push().assert_ok();
    assert_eq!(deployed(&w, &c), ["overlays/prod"]);

    // A missing base: kustomize's own reason, with repository paths only.
    let c = w.commit(
        &[(
            "overlays/staging/kustomization.yaml",
            "resources:\n- ../../missing\n",
        )],
        "missing base",
    );
    let out = w.push();
    assert!(out.all().contains("kustomize failed"), "{}", out.all());
    no_server_path(&w, &out.all());
    assert_eq!(w.last_record(&c)["result"], "failed");
}

#[test]
fn kustomize_remote_and_climbing_references_are_refused_with_file_and_line() {
    let Some(w) = sandboxed("on_failure = \"stop\"") else {
        return;
    };
    let good = kustomize_layout(&w);
    w.push().assert_ok();

    let remote = overlay("prod").replace(
        "- ../../base\n",
        "- ../../base\n- https://example.com/remote.yaml\n",
    );
    let c = w.commit(
        &[("overlays/prod/kustomization.yaml", &remote)],
        "remote resource",
    );
    let line = 5;
    let out = w.push();
    let all = out.all();
    let expect = format!(
        "overlays/prod/kustomization.yaml:{line}: remote resource \"https://example.com/remote.yaml\" refused"
    );
    assert!(all.contains(&expect), "{expect:?} in:\n{all}");
    assert!(all.contains("allow_remote"), "{all}");
    assert_eq!(w.last_record(&c)["result"], "failed");
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));
    w.in_clone(&["reset", "-q", "--hard", &good]).assert_ok();
    w.push_args(&["-f", "origin", "HEAD:main"]).assert_ok();

    let c = w.commit(
        &[(
            "overlays/staging/kustomization.yaml",
            "resources:\n- ../../base\n- ../../../../etc\n",
        )],
        "climb",
    );
    let out = w.push();
    let all = out.all();
    assert!(
        all.contains(
            "overlays/staging/kustomization.yaml:3: resources \"../../../../etc\" climbs out of the repository"
        ),
        "{all}"
    );
    no_server_path(&w, &all);
    assert_eq!(w.last_record(&c)["result"], "failed");
}

#[test]
fn the_gate_accepts_overlays_over_a_base_and_rejects_a_climb() {
    let Some(w) = sandboxed("") else { return };
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    let good = kustomize_layout(&w);
    let out = w.push();
    out.assert_ok();
    assert!(!out.all().contains("push rejected"), "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));

    w.commit(
        &[(
            "base/kustomization.yaml",
            &format!("{BASE}patches:\n- path: ../../../../etc/patch.yaml\n"),
        )],
        "climb in the base",
    );
    let out = w.push();
    out.assert_fail();
    let all = out.all();
    assert!(all.contains("push rejected"), "{all}");
    // Refused through each overlay that uses the base, naming the base's file and line.
    assert!(
        all.contains("base/kustomization.yaml:10: patches \"../../../../etc/patch.yaml\" climbs out of the repository"),
        "{all}"
    );
    no_server_path(&w, &all);
    let tip = w.git(Some(&w.server), &["rev-parse", "main"]);
    assert_eq!(tip.stdout.trim(), good);
}

/// A kustomization deployed on its own that an overlay starts to use becomes a base: it is
/// removed as a target (what only it declared is pruned) and the overlay deploys.
#[test]
fn a_target_that_becomes_a_base_is_removed_and_its_user_deploys() {
    let Some(w) = sandboxed("on_failure = \"stop\"") else {
        return;
    };
    let first = w.commit(
        &[
            ("namespaces/ns.yaml", &namespace("prod")),
            (
                "app/kustomization.yaml",
                "namespace: prod\nresources:\n- cm.yaml\n",
            ),
            ("app/cm.yaml", &configmap("settings", None, "1")),
        ],
        "app on its own",
    );
    w.push().assert_ok();
    assert_eq!(deployed(&w, &first), ["app", "namespaces"]);
    assert_eq!(value(&w, "prod", "settings"), "1");
    let c = w.commit(
        &[(
            "overlays/prod/kustomization.yaml",
            "namePrefix: prod-\nresources:\n- ../../app\n",
        )],
        "an overlay over app",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(deployed(&w, &c), ["app", "overlays/prod"], "{}", out.all());
    let rec = w.last_record(&c);
    let app = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app")
        .unwrap();
    assert_eq!(app["pruned"], 1, "{rec}");
    assert!(w.configmap("prod", "settings").is_none());
    assert_eq!(value(&w, "prod", "prod-settings"), "1");
}
