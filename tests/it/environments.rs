//! Environments as directories (issue 18): several environments follow one branch, each
//! deploying only the targets under its `paths`, in parallel, each with its own lock, pointer,
//! inventory and record. Two kube sandboxes stand for two clusters; real pushes throughout.

use kube_sandbox::Sandbox;

use crate::util::{configmap, deployment, namespace, tools_present, World};

/// `staging` on the world's sandbox, `production` on a second one; both on `main`, each with
/// its cluster directory and the shared one.
struct Clusters {
    w: World,
    production: Sandbox,
}

fn clusters(staging_extra: &str, production_extra: &str) -> Option<Clusters> {
    if !tools_present() {
        return None;
    }
    let mut w = World::new();
    w.start_sandbox();
    let production = Sandbox::start().expect("second kube sandbox");
    let production_kubeconfig = w.tmp.path().join("production.kubeconfig");
    production
        .write_kubeconfig(&production_kubeconfig, "production")
        .unwrap();
    w.write_server_config(&format!(
        "[[environment]]\nname = \"staging\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n\
         context = \"sandbox\"\npaths = [\"clusters/staging\", \"shared\"]\n{staging_extra}\n\n\
         [[environment]]\nname = \"production\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n\
         context = \"production\"\npaths = [\"clusters/production\", \"shared\"]\n{production_extra}\n\n\
         [signing]\nkey = \"{}\"\n",
        w.kubeconfig.display(),
        production_kubeconfig.display(),
        w.key.display()
    ));
    Some(Clusters { w, production })
}

fn value(sb: &Sandbox, name: &str) -> Option<String> {
    sb.object("v1", "ConfigMap", Some("default"), name)
        .and_then(|o| o["data"]["value"].as_str().map(str::to_string))
}

fn envs_of(w: &World, rev: &str) -> Vec<String> {
    w.records(rev)
        .iter()
        .map(|r| r["env"].as_str().unwrap_or("").to_string())
        .collect()
}

fn record_of(w: &World, rev: &str, env: &str) -> serde_json::Value {
    w.records(rev)
        .into_iter()
        .rfind(|r| r["env"] == env)
        .unwrap_or_else(|| panic!("no {env} record on {rev}"))
}

fn writes(sb: &Sandbox) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn a_change_under_one_environment_deploys_only_that_one() {
    let Some(c) = clusters("", "") else { return };
    let w = &c.w;
    let c1 = w.commit(
        &[
            (
                "clusters/staging/app/cm.yaml",
                &configmap("app", Some("default"), "s1"),
            ),
            (
                "clusters/production/app/cm.yaml",
                &configmap("app", Some("default"), "p1"),
            ),
        ],
        "two clusters",
    );
    let out = w.push();
    out.assert_ok();
    let all = out.all();
    assert_eq!(w.pointer("staging").as_deref(), Some(c1.as_str()), "{all}");
    assert_eq!(
        w.pointer("production").as_deref(),
        Some(c1.as_str()),
        "{all}"
    );
    // Each cluster got its own directory, not the other's.
    assert_eq!(value(w.sandbox(), "app").as_deref(), Some("s1"));
    assert_eq!(value(&c.production, "app").as_deref(), Some("p1"));
    assert!(all.contains("summary: staging"), "{all}");
    assert!(all.contains("summary: production"), "{all}");

    c.production.clear_requests();
    let c2 = w.commit(
        &[(
            "clusters/staging/app/cm.yaml",
            &configmap("app", Some("default"), "s2"),
        )],
        "staging only",
    );
    let out = w.push();
    out.assert_ok();
    let all = out.all();
    assert_eq!(w.pointer("staging").as_deref(), Some(c2.as_str()), "{all}");
    assert_eq!(
        w.pointer("production").as_deref(),
        Some(c1.as_str()),
        "{all}"
    );
    assert_eq!(envs_of(w, &c2), ["staging"], "{all}");
    assert_eq!(value(w.sandbox(), "app").as_deref(), Some("s2"));
    assert!(writes(&c.production).is_empty(), "{all}");
    assert!(
        all.contains("production: ")
            && all.contains("not started: nothing under clusters/production, shared changed"),
        "{all}"
    );

    // Read back per environment, as for branch-mapped ones.
    let status = w.hookops(&["status", "--json"]);
    status.assert_ok();
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["pending_commits"], 0, "{row}");
    }
    let plan = w.hookops(&["plan", "main", "--env", "production"]);
    plan.assert_ok();
    assert!(plan.stdout.contains(", 0 targets"), "{}", plan.stdout);
    let history = w.hookops(&["history", "--env", "production", "--json"]);
    history.assert_ok();
    let list: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let drift = w.hookops(&["drift", "--env", "staging"]);
    drift.assert_ok();
    assert!(
        drift.stdout.contains("clusters/staging/app"),
        "{}",
        drift.stdout
    );
}

/// Start and finish of a record, in milliseconds since the epoch.
fn span(rec: &serde_json::Value) -> (i64, i64) {
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(rec[k].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    (at("started_at"), at("finished_at"))
}

#[test]
fn a_change_to_a_shared_directory_deploys_both_in_parallel() {
    let Some(c) = clusters("", "") else { return };
    let w = &c.w;
    w.commit(
        &[
            (
                "shared/web.yaml",
                &deployment("web", "default", "web:1", ""),
            ),
            (
                "clusters/staging/app/cm.yaml",
                &configmap("app", Some("default"), "s"),
            ),
            (
                "clusters/production/app/cm.yaml",
                &configmap("app", Some("default"), "p"),
            ),
        ],
        "shared web",
    );
    w.push().assert_ok();
    let slow = "        kube-sandbox.io/ready-delay: \"2s\"\n";
    let c2 = w.commit(
        &[(
            "shared/web.yaml",
            &deployment("web", "default", "web:2", slow),
        )],
        "web 2, slow to become ready",
    );
    let out = w.push();
    out.assert_ok();
    let all = out.all();
    let staging = record_of(w, &c2, "staging");
    let production = record_of(w, &c2, "production");
    assert_eq!(staging["result"], "succeeded", "{all}");
    assert_eq!(production["result"], "succeeded", "{all}");
    let (s0, s1) = span(&staging);
    let (p0, p1) = span(&production);
    assert!(
        s1 - s0 >= 1000 && p1 - p0 >= 1000,
        "{staging}\n{production}"
    );
    assert!(
        s0.max(p0) < s1.min(p1),
        "the two deploys did not overlap: staging {s0}..{s1}, production {p0}..{p1}\n{all}"
    );
    for sb in [w.sandbox(), &c.production] {
        let web = sb
            .object("apps/v1", "Deployment", Some("default"), "web")
            .unwrap();
        assert_eq!(
            web["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );
    }
    // Lines of parallel environments never interleave mid-line.
    for line in all.lines().filter(|l| l.contains("hookops:")) {
        assert_eq!(line.matches("hookops:").count(), 1, "{line}");
    }

    // With one environment at a time they follow each other.
    let text = std::fs::read_to_string(w.server.join("hookops/config.toml")).unwrap();
    w.write_server_config(&format!("{text}\n[deploy]\nenvironments_parallel = 1\n"));
    let c3 = w.commit(
        &[(
            "shared/web.yaml",
            &deployment("web", "default", "web:3", slow),
        )],
        "web 3",
    );
    w.push().assert_ok();
    let (s0, s1) = span(&record_of(w, &c3, "staging"));
    let (p0, p1) = span(&record_of(w, &c3, "production"));
    assert!(
        s0.max(p0) >= s1.min(p1),
        "overlapped with environments_parallel = 1"
    );
}

#[test]
fn one_failing_cluster_leaves_the_other_deployed() {
    let Some(c) = clusters("", "on_failure = \"stop\"") else {
        return;
    };
    let w = &c.w;
    let c1 = w.commit(
        &[
            ("shared/cm.yaml", &configmap("shared", Some("default"), "1")),
            (
                "clusters/staging/app/cm.yaml",
                &configmap("app", Some("default"), "s"),
            ),
            (
                "clusters/production/app/cm.yaml",
                &configmap("app", Some("default"), "p"),
            ),
        ],
        "both",
    );
    w.push().assert_ok();
    c.production
        .fail_path("/api/v1/namespaces/default/configmaps", 500);
    let c2 = w.commit(
        &[("shared/cm.yaml", &configmap("shared", Some("default"), "2"))],
        "shared 2",
    );
    let out = w.push();
    let all = out.all();
    assert_eq!(record_of(w, &c2, "staging")["result"], "succeeded", "{all}");
    assert_eq!(record_of(w, &c2, "production")["result"], "failed", "{all}");
    assert_eq!(w.pointer("staging").as_deref(), Some(c2.as_str()), "{all}");
    assert_eq!(
        w.pointer("production").as_deref(),
        Some(c1.as_str()),
        "{all}"
    );
    assert_eq!(value(w.sandbox(), "shared").as_deref(), Some("2"));
    let summary: Vec<&str> = all.lines().filter(|l| l.contains("summary: ")).collect();
    assert_eq!(summary.len(), 2, "{all}");
    assert!(
        summary
            .iter()
            .any(|l| l.contains("staging") && l.contains("deployed")),
        "{all}"
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("production") && l.contains("FAILED")),
        "{all}"
    );

    // The next push that concerns production retries it from its pointer.
    c.production.clear_faults();
    let c3 = w.commit(
        &[(
            "clusters/staging/app/cm.yaml",
            &configmap("app", Some("default"), "s3"),
        )],
        "staging again",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        w.pointer("production").as_deref(),
        Some(c3.as_str()),
        "{}",
        out.all()
    );
    assert_eq!(value(&c.production, "shared").as_deref(), Some("2"));
}

#[test]
fn a_target_under_no_environment_is_reported_not_skipped_silently() {
    let Some(c) = clusters("", "") else { return };
    let w = &c.w;
    w.commit(
        &[
            (
                "clusters/staging/app/cm.yaml",
                &configmap("app", Some("default"), "s"),
            ),
            (
                "apps/orphan/cm.yaml",
                &configmap("orphan", Some("default"), "o"),
            ),
        ],
        "an orphan directory",
    );
    let out = w.push();
    out.assert_ok();
    let all = out.all();
    assert_eq!(
        all.matches("apps/orphan: not deployed anywhere").count(),
        1,
        "{all}"
    );
    assert!(all.contains("staging, production"), "{all}");
    assert!(value(w.sandbox(), "orphan").is_none());
    assert!(value(&c.production, "orphan").is_none());

    let null = "0000000000000000000000000000000000000000";
    let plan = w.hookops(&["plan", "main", "--from", null]);
    plan.assert_ok();
    assert_eq!(
        plan.stdout
            .matches("warning: apps/orphan: not deployed anywhere")
            .count(),
        1,
        "{}",
        plan.stdout
    );
    let doctor = w.hookops(&["doctor"]);
    assert!(
        doctor
            .stdout
            .contains("warn  paths: apps/orphan: not deployed anywhere"),
        "{}",
        doctor.all()
    );
}

#[test]
fn environments_on_one_api_server_never_prune_what_the_other_declares() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    w.start_sandbox();
    let env = |name: &str| {
        format!(
            "[[environment]]\nname = \"{name}\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n\
             context = \"sandbox\"\npaths = [\"{name}\"]\n\n",
            w.kubeconfig.display()
        )
    };
    w.write_server_config(&format!(
        "{}{}[signing]\nkey = \"{}\"\n",
        env("blue"),
        env("green"),
        w.key.display()
    ));
    let common = configmap("common", Some("default"), "1");
    let blue_only = configmap("blue-only", Some("default"), "1");
    w.commit(
        &[
            ("blue/cm.yaml", &format!("{common}---\n{blue_only}")),
            ("green/cm.yaml", &common),
        ],
        "one object in both environments",
    );
    let out = w.push();
    out.assert_ok();
    assert!(w.configmap("default", "common").is_some(), "{}", out.all());

    let plan = w.hookops(&["plan", "main"]);
    plan.assert_ok();
    assert!(
        plan.stdout
            .contains("environments blue, green deploy to the same API server"),
        "{}",
        plan.stdout
    );

    let c2 = w.commit(&[("blue/cm.yaml", &blue_only)], "blue drops common");
    let out = w.push();
    out.assert_ok();
    let all = out.all();
    assert!(w.configmap("default", "common").is_some(), "pruned: {all}");
    let rec = record_of(&w, &c2, "blue");
    assert_eq!(rec["result"], "succeeded", "{all}");
    assert!(
        rec["kept"].to_string().contains("common")
            && rec["kept"]
                .to_string()
                .contains("environment green still declares it"),
        "{rec}"
    );
    assert!(all.contains("blue: keeping ConfigMap"), "{all}");

    // Once green stops declaring it too, green prunes it.
    let c3 = w.remove(&["green/cm.yaml"], "green drops common");
    let out = w.push();
    out.assert_ok();
    assert!(w.configmap("default", "common").is_none(), "{}", out.all());
    assert_eq!(record_of(&w, &c3, "green")["result"], "succeeded");
    assert!(w.configmap("default", "blue-only").is_some());
}

#[test]
fn policy_and_the_gate_are_per_environment() {
    let Some(c) = clusters("allowed_namespaces = [\"default\"]", "") else {
        return;
    };
    let w = &c.w;
    w.commit(
        &[(
            "clusters/staging/app/cm.yaml",
            &configmap("app", Some("default"), "s"),
        )],
        "staging",
    );
    w.push().assert_ok();
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    // Another namespace is fine where production deploys it...
    let c2 = w.commit(
        &[
            ("clusters/production/ns/ns.yaml", &namespace("other")),
            (
                "clusters/production/app/cm.yaml",
                &configmap("app", Some("other"), "p"),
            ),
        ],
        "production app in its own namespace",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        w.pointer("production").as_deref(),
        Some(c2.as_str()),
        "{}",
        out.all()
    );
    // ...and refused where staging would.
    w.commit(
        &[(
            "clusters/staging/other/cm.yaml",
            &configmap("x", Some("other"), "s"),
        )],
        "staging outside its namespaces",
    );
    let out = w.push();
    out.assert_fail();
    assert!(
        out.all().contains("push rejected")
            && out.all().contains("not allowed in environment staging"),
        "{}",
        out.all()
    );
}

#[test]
fn narrowing_paths_deletes_nothing_and_deleting_the_files_does() {
    let Some(c) = clusters("", "") else { return };
    let w = &c.w;
    let app = |v: &str| configmap("app", Some("default"), v);
    w.commit(
        &[
            ("shared/cm.yaml", &configmap("shared", Some("default"), "1")),
            ("clusters/staging/app/cm.yaml", &app("1")),
        ],
        "shared and staging",
    );
    w.push().assert_ok();
    assert_eq!(value(w.sandbox(), "shared").as_deref(), Some("1"));
    let config = std::fs::read_to_string(w.server.join("hookops/config.toml")).unwrap();
    w.write_server_config(&config.replacen(
        "paths = [\"clusters/staging\", \"shared\"]",
        "paths = [\"clusters/staging\"]",
        1,
    ));
    w.commit(
        &[
            ("shared/cm.yaml", &configmap("shared", Some("default"), "2")),
            ("clusters/staging/app/cm.yaml", &app("2")),
        ],
        "both change; shared is no longer staging's",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        value(w.sandbox(), "app").as_deref(),
        Some("2"),
        "{}",
        out.all()
    );
    assert_eq!(
        value(w.sandbox(), "shared").as_deref(),
        Some("1"),
        "{}",
        out.all()
    );
    assert_eq!(value(&c.production, "shared").as_deref(), Some("2"));

    w.remove(&["shared"], "shared goes");
    w.commit(&[("clusters/staging/app/cm.yaml", &app("3"))], "staging 3");
    let out = w.push();
    out.assert_ok();
    assert!(value(w.sandbox(), "shared").is_none(), "{}", out.all());
    assert!(value(&c.production, "shared").is_none(), "{}", out.all());
    assert_eq!(value(w.sandbox(), "app").as_deref(), Some("3"));
}

#[test]
fn moving_from_a_branch_per_environment_prunes_nothing() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    w.start_sandbox();
    let config = |branch: &str, paths: &str| {
        format!(
            "[[environment]]\nname = \"staging\"\nbranch = \"{branch}\"\nkubeconfig = \"{}\"\n\
             context = \"sandbox\"\n{paths}\n\n[signing]\nkey = \"{}\"\n",
            w.kubeconfig.display(),
            w.key.display()
        )
    };
    w.write_server_config(&config("staging", ""));
    let web = format!(
        "{}---\n{}",
        configmap("web", Some("default"), "1"),
        configmap("web-env", Some("default"), "staging")
    );
    w.commit(&[("k8s/web/cm.yaml", &web)], "staging branch layout");
    w.push_args(&["origin", "HEAD:staging", "HEAD:main"])
        .assert_ok();
    assert!(w.pointer("staging").is_some());

    // One branch: staging's tree moves under clusters/staging/ on main.
    w.remove(&["k8s"], "move");
    let moved = w.commit(
        &[("clusters/staging/k8s/web/cm.yaml", &web)],
        "staging as a directory",
    );
    // Pushed where no environment follows, to plan it before it deploys.
    w.push_args(&["origin", "HEAD:migrate"]).assert_ok();
    w.write_server_config(&config("main", "paths = [\"clusters/staging\"]"));
    let plan = w.hookops(&["plan", "main", "--env", "staging", "--to", "migrate"]);
    plan.assert_ok();
    assert!(
        plan.stdout.contains("deploy clusters/staging/k8s/web") && !plan.stdout.contains("prune"),
        "{}",
        plan.stdout
    );
    w.sandbox().clear_requests();
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        w.pointer("staging").as_deref(),
        Some(moved.as_str()),
        "{}",
        out.all()
    );
    assert!(
        !w.writes().iter().any(|r| r.starts_with("DELETE")),
        "{:?}\n{}",
        w.writes(),
        out.all()
    );
    assert!(w.configmap("default", "web").is_some());
    assert!(w.configmap("default", "web-env").is_some());
}
