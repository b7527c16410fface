//! Issue 30: the gate shows what a push would change in the live cluster before it lands,
//! refuses what the environment's diff policies forbid (with a signed override), and push
//! options shape the deploy. Against the real test cluster (tests/it/cluster.rs) through real
//! `git push`es into a bare repository with the gate installed; the kube sandbox stands in
//! only for the slow cluster, since the real API server cannot be slowed on demand.

use std::time::{Duration, Instant};

use crate::cluster::{world_with, Cluster};
use crate::snapshots::assert_pusher_sees;
use crate::util::{
    configmap, deployment, keygen, namespace, public_key, sandboxed, terraform_root, World,
};

/// A world on the real cluster with the gate installed in mode "server" (plus `env_extra`
/// keys for environment `prod` and `gate_extra` keys for `[gate]`).
fn gated(env_extra: &str, gate_extra: &str) -> Option<(World, &'static Cluster)> {
    let (w, c) = world_with(
        env_extra,
        &format!("[gate]\nmode = \"server\"\n{gate_extra}\n"),
    )?;
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    Some((w, c))
}

/// `git push ARGS origin HEAD:main`, not quiet, so git's own lines are seen too.
fn push(w: &World, args: &[&str]) -> crate::util::Run {
    let mut all = vec!["push"];
    all.extend_from_slice(args);
    all.extend(["origin", "HEAD:main"]);
    w.in_clone(&all)
}

fn secret(name: &str, ns: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\ntype: Opaque\nstringData:\n  password: {value}\n"
    )
}

fn server_tip(w: &World) -> String {
    w.git(Some(&w.server), &["rev-parse", "refs/heads/main"])
        .stdout
        .trim()
        .to_string()
}

/// The first tree of the diff tests: a namespace, target `k8s/web` (a Deployment, a ConfigMap
/// to remove, one left alone) and target `k8s/other`, deployed.
fn deployed_app(w: &World, ns: &str) -> String {
    let first = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(ns)),
            (
                "k8s/web/deploy.yaml",
                &deployment("web", ns, "nginx:1.26", ""),
            ),
            (
                "k8s/web/old.yaml",
                &configmap("old-settings", Some(ns), "1"),
            ),
            ("k8s/web/kept.yaml", &configmap("left-alone", Some(ns), "1")),
            ("k8s/other/cm.yaml", &configmap("elsewhere", Some(ns), "1")),
        ],
        "first",
    );
    let out = push(w, &[]);
    out.assert_ok();
    assert_eq!(
        w.last_record(&first)["result"],
        "succeeded",
        "{}",
        out.all()
    );
    first
}

#[test]
fn the_gate_prints_an_image_change_and_a_removal_and_nothing_untouched() {
    let Some((w, c)) = gated("", "") else { return };
    // A fixed name (this test alone uses it on the cluster of its test process): the table's
    // columns are as wide in every run, for the snapshot.
    let ns = "gd-snapshot".to_string();
    let first = deployed_app(&w, &ns);
    w.commit(
        &[(
            "k8s/web/deploy.yaml",
            &deployment("web", &ns, "nginx:1.27", ""),
        )],
        "new image",
    );
    let change = w.remove(&["k8s/web/old.yaml"], "drop the old settings");
    let out = push(&w, &[]);
    out.assert_ok();
    let text = out.stderr.clone();
    // The table: the Deployment updated, the ConfigMap pruned; no other object.
    let row = |op: &str, kind: &str, name: &str| {
        text.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() >= 7
                && cells[2] == op
                && cells[3] == kind
                && cells[4] == ns
                && cells[5] == name
                && cells[6] == "k8s/web"
        })
    };
    assert!(row("update", "Deployment", "web"), "{text}");
    assert!(row("prune", "ConfigMap", "old-settings"), "{text}");
    assert!(
        text.contains("Op: 0 create, 1 update, 1 prune, 0 unchanged"),
        "{text}"
    );
    // The diffs: the image line both ways, the removed ConfigMap's lines.
    assert!(text.contains("-      - image: nginx:1.26"), "{text}");
    assert!(text.contains("+      - image: nginx:1.27"), "{text}");
    assert!(text.contains("+++ declared (no longer in git)"), "{text}");
    assert!(text.contains("-  value: '1'"), "{text}");
    // Untouched objects (another file, another target) are not named at all.
    for untouched in ["left-alone", "elsewhere", "k8s/other"] {
        assert!(!text.contains(untouched), "{untouched} in:\n{text}");
    }
    // The diff is shown before the push lands; then the push deploys as usual.
    let shown = text
        .find("what it changes in the cluster")
        .expect("the preview");
    let deployed = text.find("prod: deployed").expect("the deploy");
    assert!(shown < deployed, "{text}");
    assert_eq!(w.last_record(&change)["result"], "succeeded");
    assert!(c.get_json("configmap", Some(&ns), "old-settings").is_none());
    assert_pusher_sees(
        "gate_live_diff",
        &out,
        &[(&first, "[first]"), (&change, "[change]")],
    );
}

#[test]
fn a_secret_change_prints_no_value() {
    let Some((w, c)) = gated("", "") else { return };
    let ns = c.unique("gds");
    w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/db/secret.yaml", &secret("db", &ns, "hunter2-old")),
        ],
        "first",
    );
    let out = push(&w, &[]);
    out.assert_ok();
    assert!(!out.all().contains("hunter2-old"), "{}", out.all());
    w.commit(
        &[("k8s/db/secret.yaml", &secret("db", &ns, "hunter2-new"))],
        "rotate",
    );
    let out = push(&w, &["-o", "hookops.dry-run"]);
    let text = out.all();
    assert!(
        text.lines()
            .any(|l| l.contains("update") && l.contains("Secret") && l.contains(" db ")),
        "{text}"
    );
    for value in ["hunter2", "aHVudGVyMi", "b2xk", "bmV3"] {
        assert!(!text.contains(value), "{value} in:\n{text}");
    }
    assert!(
        text.contains("password: '***"),
        "a masked value line:\n{text}"
    );
}

#[test]
fn dry_run_prints_the_diff_and_lands_nothing() {
    let Some((w, c)) = gated("", "") else { return };
    let ns = "gd-dry-run".to_string();
    let first = deployed_app(&w, &ns);
    let before = server_tip(&w);
    let change = w.commit(
        &[(
            "k8s/web/kept.yaml",
            &configmap("left-alone", Some(&ns), "2"),
        )],
        "change a value",
    );
    let out = push(&w, &["-o", "hookops.dry-run"]);
    out.assert_fail();
    assert_pusher_sees(
        "push_option_dry_run",
        &out,
        &[(&first, "[first]"), (&change, "[change]")],
    );
    let text = out.stderr.clone();
    assert!(text.contains("+  value: \"2\""), "{text}");
    assert!(
        text.contains("hookops: dry run (hookops.dry-run): nothing was pushed"),
        "{text}"
    );
    assert_eq!(server_tip(&w), before, "the branch moved");
    assert!(w.records(&change).is_empty(), "a record on the dry run");
    let live = c.get_json("configmap", Some(&ns), "left-alone").unwrap();
    assert_eq!(live["data"]["value"], "1");
    // An unknown hookops option refuses the push too, naming it.
    let out = push(&w, &["-o", "hookops.dryrun"]);
    out.assert_fail();
    assert!(
        out.stderr
            .contains("push rejected: unknown push option hookops.dryrun"),
        "{}",
        out.stderr
    );
    assert_eq!(server_tip(&w), before);
}

/// A pusher's SSH key that signs pushes (`git push --signed`), and a push signers file of the
/// server listing it for namespace `git`.
fn signing_pusher(w: &World) -> std::path::PathBuf {
    let key = w.tmp.path().join("pusher_ed25519");
    keygen(&key, "ed25519", "");
    let signers = w.tmp.path().join("push_signers");
    std::fs::write(
        &signers,
        format!(
            "alice@example.test namespaces=\"git\" {}\n",
            public_key(&key)
        ),
    )
    .unwrap();
    w.in_clone(&["config", "gpg.format", "ssh"]).assert_ok();
    w.in_clone(&["config", "user.signingkey", key.to_str().unwrap()])
        .assert_ok();
    signers
}

#[test]
fn a_prune_limit_refuses_a_push_and_a_signed_override_lets_it_through() {
    let Some((w, c)) = gated("", "") else { return };
    let signers = signing_pusher(&w);
    let own = w.tmp.path().join("alice_signers");
    std::fs::copy(&signers, &own).unwrap();
    w.configure(
        &format!("max_prune = 1\npush_signers = \"{}\"", signers.display()),
        "[gate]\nmode = \"server\"\n",
    );
    let ns = "gd-prune".to_string();
    let files: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                format!("k8s/cms/c{i}.yaml"),
                configmap(&format!("c{i}"), Some(&ns), "1"),
            )
        })
        .collect();
    let mut all: Vec<(&str, &str)> = vec![];
    let ns_file = namespace(&ns);
    all.push(("k8s/ns/ns.yaml", &ns_file));
    all.extend(files.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    w.commit(&all, "three");
    push(&w, &[]).assert_ok();
    let before = server_tip(&w);
    let change = w.remove(&["k8s/cms/c1.yaml", "k8s/cms/c2.yaml"], "two go");
    // Refused, with the reason and the override.
    let out = push(&w, &[]);
    out.assert_fail();
    assert_pusher_sees("gate_prune_limit", &out, &[(&change, "[change]")]);
    assert!(
        out.stderr
            .contains("prod: would prune 2 objects, more than max_prune = 1 of environment prod")
            && out
                .stderr
                .contains("override: git push --signed -o hookops.allow-prune"),
        "{}",
        out.stderr
    );
    assert_eq!(server_tip(&w), before);
    // The override alone does not count on an unsigned push.
    let out = push(&w, &["-o", "hookops.allow-prune"]);
    out.assert_fail();
    assert!(
        out.stderr
            .contains("hookops.allow-prune does not count: the push is not signed"),
        "{}",
        out.stderr
    );
    // Nor signed by a key that is not among the push signers.
    std::fs::write(&signers, "bob@example.test namespaces=\"git\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOn+YJvOJZsqDYiNyCnYc9w9MpTmYlx6gyc1V0nKvSXa\n").unwrap();
    let out = push(&w, &["--signed", "-o", "hookops.allow-prune"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("is not among the allowed signers"),
        "{}",
        out.stderr
    );
    assert_eq!(server_tip(&w), before);
    // Signed by an allowed key: through, deployed, and the record names who allowed it.
    std::fs::copy(&own, &signers).unwrap();
    let out = push(&w, &["--signed", "-o", "hookops.allow-prune"]);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("prod: allowed by alice@example.test (hookops.allow-prune on a signed push)"),
        "{}",
        out.stderr
    );
    let rec = w.last_record(&change);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert_eq!(rec["allowed_by"], "alice@example.test", "{rec}");
    assert!(c.get_json("configmap", Some(&ns), "c2").is_none());
}

#[test]
fn target_option_deploys_only_that_target_and_the_next_push_the_rest() {
    let Some((w, c)) = gated("", "") else { return };
    let ns = "gd-target".to_string();
    let toml =
        "[[target]]\nname = \"ns\"\npath = \"k8s/ns\"\ntype = \"kubectl\"\n\n\
         [[target]]\nname = \"web\"\npath = \"k8s/web\"\ntype = \"kubectl\"\ndepends_on = [\"ns\"]\n\n\
         [[target]]\nname = \"api\"\npath = \"k8s/api\"\ntype = \"kubectl\"\ndepends_on = [\"ns\"]\n";
    let first = w.commit(
        &[
            ("hookops.toml", toml),
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/web/cm.yaml", &configmap("web", Some(&ns), "1")),
            ("k8s/api/cm.yaml", &configmap("api", Some(&ns), "1")),
        ],
        "first",
    );
    push(&w, &[]).assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(first.as_str()));
    let both = w.commit(
        &[
            ("k8s/web/cm.yaml", &configmap("web", Some(&ns), "2")),
            ("k8s/api/cm.yaml", &configmap("api", Some(&ns), "2")),
        ],
        "change both",
    );
    // A name the push does not change is refused by the gate, listing what it changes.
    let out = push(&w, &["-o", "hookops.target=wbe"]);
    out.assert_fail();
    assert!(
        out.stderr.contains(
            "push option hookops.target: no target wbe changed by this push (it changes api, web)"
        ),
        "{}",
        out.stderr
    );
    let out = push(
        &w,
        &[
            "-o",
            "hookops.target=web",
            "-o",
            "hookops.message=web first",
        ],
    );
    out.assert_ok();
    assert_pusher_sees(
        "push_option_target",
        &out,
        &[(&first, "[first]"), (&both, "[both]")],
    );
    let value = |name: &str| {
        c.get_json("configmap", Some(&ns), name).unwrap()["data"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(value("web"), "2");
    assert_eq!(value("api"), "1", "api deployed:\n{}", out.stderr);
    // The pointer stays before the pending target; the record says what waits.
    assert_eq!(w.pointer("prod").as_deref(), Some(first.as_str()));
    let rec = w.last_record(&both);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert_eq!(rec["pending"], serde_json::json!(["api"]), "{rec}");
    assert_eq!(rec["message"], "web first", "{rec}");
    assert_eq!(rec["targets"].as_array().unwrap().len(), 1, "{rec}");
    assert!(
        out.stderr.contains(
            "prod: deploying only web (hookops.target); pending until a push without it: api"
        ),
        "{}",
        out.stderr
    );
    let status = w.hookops(&["status"]);
    assert!(status.stdout.contains("pending 1"), "{}", status.stdout);
    // From the operator's side: what deploying the tip would change now (api; web is live).
    let diff = w.hookops(&["diff", "main"]);
    assert_eq!(diff.code, Some(1), "{}", diff.all());
    let row = |op: &str, name: &str| {
        diff.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() == 5 && cells[0] == op && cells[3] == name
        })
    };
    assert!(
        row("update", "api") && row("unchanged", "web"),
        "{}",
        diff.stdout
    );
    let json = w.hookops(&["diff", "main", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("diff --json");
    assert_eq!(v[0]["env"], "prod", "{v}");
    // The status page shows it beside the pending commit, without asking the cluster.
    let page = w.hookops(&["status", "--html"]);
    page.assert_ok();
    assert!(
        page.stdout.contains("hookops diff") && page.stdout.contains("+  value: &quot;2&quot;"),
        "{}",
        page.stdout
    );
    // The next push, without the option, deploys from the pointer: api too.
    let next = w.commit(
        &[("k8s/web/more.yaml", &configmap("web-more", Some(&ns), "1"))],
        "more",
    );
    let out = push(&w, &[]);
    out.assert_ok();
    assert_eq!(value("api"), "2", "{}", out.stderr);
    assert_eq!(w.pointer("prod").as_deref(), Some(next.as_str()));
    let rec = w.last_record(&next);
    assert!(rec.get("pending").is_none(), "{rec}");
    let names: Vec<&str> = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"api") && names.contains(&"web"), "{rec}");
}

#[test]
fn no_wait_is_recorded_and_options_survive_async() {
    let Some((w, c)) = gated("", "") else { return };
    w.configure(
        "",
        "[gate]\nmode = \"server\"\n\n[deploy]\nmode = \"async\"\n",
    );
    let ns = c.unique("gdw");
    let commit = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            (
                "k8s/web/deploy.yaml",
                &deployment("web", &ns, "nginx:1.27", ""),
            ),
        ],
        "first",
    );
    let out = push(
        &w,
        &[
            "-o",
            "hookops.no-wait",
            "-o",
            "hookops.message=fast \u{1b}[31mred",
        ],
    );
    out.assert_ok();
    assert!(out.stderr.contains("deploy queued"), "{}", out.stderr);
    let done = c.wait_for(Duration::from_secs(120), || {
        w.records(&commit).iter().any(|r| r["result"] != "skipped")
    });
    assert!(done, "the queued deploy did not finish");
    let rec = w.last_record(&commit);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert_eq!(rec["no_wait"], true, "{rec}");
    assert_eq!(rec["message"], "fast \\u{1b}[31mred", "{rec}");
}

#[test]
fn a_slow_cluster_stops_the_gate_at_its_budget_and_says_so() {
    // The one fake: the kube sandbox stalls the dry-run requests of one path, which a real
    // API server cannot be made to do on demand.
    let Some(w) = sandboxed("protect_kinds = [\"ConfigMap\"]") else {
        return;
    };
    let mut text = std::fs::read_to_string(w.server.join("hookops/config.toml")).unwrap();
    text.push_str("\n[gate]\nmode = \"server\"\ntime_budget = 2\n");
    w.write_server_config(&text);
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace("slow")),
            ("k8s/app/a.yaml", &configmap("a", Some("slow"), "1")),
        ],
        "first",
    );
    push(&w, &[]).assert_ok();
    w.sandbox().stall_path(
        "/api/v1/namespaces/slow/configmaps",
        Duration::from_secs(30),
    );
    w.commit(
        &[("k8s/app/a.yaml", &configmap("a", Some("slow"), "2"))],
        "change",
    );
    let clock = Instant::now();
    let out = push(&w, &["-o", "hookops.dry-run"]);
    let took = clock.elapsed();
    w.sandbox().clear_faults();
    out.assert_fail();
    let text = out.stderr.clone();
    assert!(
        text.contains(
            "stopped comparing at the time budget (2 s, [gate] time_budget): 1 object not compared"
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("apply") && l.contains("ConfigMap") && l.contains(" a ")),
        "{text}"
    );
    // The policy is decided from the whole plan: the object not compared counts as changed.
    assert!(
        text.contains("may change ConfigMap slow/a: not compared with the live object"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(20),
        "the gate took {took:?}:\n{text}"
    );
}

#[test]
fn the_gate_shows_terraform_plans_against_the_deployed_state() {
    let Some(w) = sandboxed("") else { return };
    w.configure("", "[gate]\nmode = \"server\"\n");
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    w.commit(&[("infra/main.tf", &terraform_root("one"))], "root");
    let out = push(&w, &[]);
    out.assert_ok();
    assert!(
        out.stderr.contains(
            "hookops:   Terraform root infra: Plan: 1 to add, 0 to change, 0 to destroy."
        ),
        "{}",
        out.stderr
    );
    // Planned against the state the deploy left: the resource is there, and changes.
    w.commit(&[("infra/main.tf", &terraform_root("two"))], "change");
    let out = push(&w, &["-o", "hookops.dry-run"]);
    assert!(
        out.stderr.contains(
            "hookops:   Terraform root infra: Plan: 0 to add, 1 to change, 0 to destroy."
        ),
        "{}",
        out.stderr
    );
    // A root terraform refuses is the push's refusal, naming the root.
    w.commit(
        &[(
            "infra/main.tf",
            "resource \"terraform_data\" \"x\" {\n  input = var.missing\n}\n",
        )],
        "broken",
    );
    let out = push(&w, &[]);
    out.assert_fail();
    assert!(
        out.stderr
            .contains("push rejected: refs/heads/main: target infra: terraform plan: Error: Reference to undeclared input variable"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_the_gate_dry_run_and_unknown_options_deploy_nothing() {
    let Some(w) = sandboxed("") else { return };
    // Push options advertised, but no pre-receive hook to refuse anything.
    w.git(
        Some(&w.server),
        &["config", "receive.advertisePushOptions", "true"],
    )
    .assert_ok();
    let first = w.commit(&[("k8s/a.yaml", &configmap("a", None, "1"))], "first");
    let out = push(&w, &["-o", "hookops.dry-run"]);
    out.assert_ok();
    assert!(
        out.stderr.contains(&format!(
            "prod: not deploying {}: hookops.dry-run: the push landed (no pre-receive gate \
             refused it), but nothing was deployed; the next push",
            &first[..7]
        )),
        "{}",
        out.stderr
    );
    assert!(
        w.configmap("default", "a").is_none(),
        "deployed on a dry run"
    );
    let rec = w.last_record(&first);
    assert_eq!(rec["result"], "skipped", "{rec}");
    assert_eq!(w.pointer("prod"), None);
    let second = w.commit(&[("k8s/a.yaml", &configmap("a", None, "2"))], "second");
    let out = push(&w, &["-o", "hookops.no-wiat"]);
    assert!(
        out.stderr
            .contains("hookops: error: unknown push option hookops.no-wiat"),
        "{}",
        out.stderr
    );
    assert!(w.configmap("default", "a").is_none());
    assert_eq!(w.last_record(&second)["result"], "skipped");
    // Options of other tools are not hookops' business: this push deploys.
    w.commit(&[("k8s/b.yaml", &configmap("b", None, "1"))], "third");
    push(&w, &["-o", "ci.skip"]).assert_ok();
    assert!(w.configmap("default", "a").is_some());
}

#[test]
fn doctor_checks_what_the_gate_and_its_policies_need() {
    let Some(w) = sandboxed("max_prune = 3") else {
        return;
    };
    let out = w.hookops(&["doctor"]);
    assert!(
        out.stdout.contains(
            "FAIL  gate: environment prod has diff policies (max_prune, protect_kinds) but no pre-receive gate enforces them"
        ),
        "{}",
        out.stdout
    );
    let install = w.hookops(&["install", "--pre-receive"]);
    install.assert_ok();
    assert!(
        install
            .stdout
            .contains("receive.advertisePushOptions = true")
            && install.stdout.contains("receive.certNonceSeed set"),
        "{}",
        install.stdout
    );
    let out = w.hookops(&["doctor"]);
    assert!(
        out.stdout
            .contains("ok    gate: pre-receive installed; push options advertised"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("warn  gate: environment prod: no push signers"),
        "{}",
        out.stdout
    );
    w.git(
        Some(&w.server),
        &["config", "--unset", "receive.certNonceSeed"],
    )
    .assert_ok();
    let out = w.hookops(&["doctor"]);
    assert!(
        out.stdout
            .contains("FAIL  gate: receive.certNonceSeed is not set"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_first_push_with_its_namespace_and_crd_is_shown_as_created() {
    let Some((w, c)) = gated("", "") else { return };
    let ns = c.unique("gdc");
    let group = format!("{}.example.com", c.unique("g"));
    let crd = format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    kind: Gadget\n    plural: gadgets\n    singular: gadget\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n");
    // In a namespace that exists, so that only its kind is missing from the server.
    let gadget = format!(
        "apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: g1\n  namespace: default\nspec:\n  size: 3\n"
    );
    let first = w.commit(
        &[
            ("k8s/crds/gadget.yaml", &crd),
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/app/cm.yaml", &configmap("settings", Some(&ns), "1")),
            ("k8s/app/gadget.yaml", &gadget),
        ],
        "first",
    );
    let out = push(&w, &[]);
    out.assert_ok();
    let text = out.stderr.clone();
    for (kind, name) in [
        ("CustomResourceDefinition", format!("gadgets.{group}")),
        ("Namespace", ns.clone()),
        ("ConfigMap", "settings".to_string()),
        ("Gadget", "g1".to_string()),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("create") && l.contains(kind) && l.contains(&name)),
            "{kind} {name} not created in:\n{text}"
        );
    }
    assert!(text.contains("+  size: 3"), "{text}");
    // Creations show what the push declares, not the server's bookkeeping.
    for noise in ["uid:", "creationTimestamp", "status:"] {
        assert!(!text.contains(noise), "{noise} in:\n{text}");
    }
    assert_eq!(w.last_record(&first)["result"], "succeeded", "{text}");
}

#[test]
fn an_existing_create_only_object_is_shown_unchanged() {
    let Some((w, c)) = gated("", "") else { return };
    let ns = c.unique("gdo");
    let once = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: once\n  namespace: {ns}\n  annotations:\n    hookops.io/apply: create-only\ndata:\n  value: \"{value}\"\n"
        )
    };
    w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/app/once.yaml", &once("1")),
            ("k8s/app/cm.yaml", &configmap("cm", Some(&ns), "1")),
        ],
        "first",
    );
    push(&w, &[]).assert_ok();
    w.commit(
        &[
            ("k8s/app/once.yaml", &once("2")),
            ("k8s/app/cm.yaml", &configmap("cm", Some(&ns), "2")),
        ],
        "change",
    );
    let out = push(&w, &["-o", "hookops.dry-run"]);
    let text = out.stderr.clone();
    // The deploy leaves it as it is, so the gate does not announce an update of it.
    assert!(
        text.contains("Op: 0 create, 1 update, 0 prune, 1 unchanged"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("update") && l.contains(" once ")),
        "{text}"
    );
    assert!(text.contains("nothing was pushed"), "{text}");
}
