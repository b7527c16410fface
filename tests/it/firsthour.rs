//! Issue 27, "the first hour and the daily use": a newcomer's `./install.sh` with a real kubectl
//! context configured, the messages a first user meets, `plan` in a pusher's clone, drift that
//! names objects and shows a diff, status and history after a rolled-back failure, `objects`,
//! the lock holder, orphaned async deploys, Terraform summaries and the gate asking the cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster;
use crate::safety::app;
use crate::snapshots::assert_command_output;
use crate::util::{
    configmap, hookops_bin, namespace, require, require_that, run, sandboxed, terraform_root, Run,
    World, FAIL_ROLLOUT,
};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `hookops ARGS` in `dir`, with no `--repo`, no `GIT_DIR`: as a user types it there.
fn hookops_in(w: &World, dir: &Path, args: &[&str]) -> Run {
    let mut c = w.base_command(hookops_bin());
    c.current_dir(dir).args(args);
    run(&mut c)
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Run {
    run(Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args))
}

// ---- the newcomer -------------------------------------------------------------------------

/// The README's first command on a machine whose kubectl points at a real cluster (the shared
/// test cluster, as cluster-admin, with a ConfigMap of the user's there): the demo deploys to a
/// kube-sandbox it starts, the user's context is untouched (their ConfigMap as it was, no
/// namespace `web`), and the man pages and completions land under the prefix.
///
/// install.sh runs with `--profile dev --no-build` on the binaries this test run built, through
/// a CARGO_TARGET_DIR that is not `./target` (a release build would cost CI minutes and test
/// nothing more of the script).
#[test]
fn newcomer_install_demos_on_the_sandbox_and_leaves_the_real_context_alone() {
    if !crate::util::tools_present() || !require("man") {
        return;
    }
    let Some(c) = cluster::shared() else { return };
    let built = Path::new(hookops_bin()).parent().unwrap().to_path_buf();
    if !require_that(
        "the kube-sandbox binary (cargo test --workspace builds it)",
        built.join("kube-sandbox").is_file(),
    ) {
        return;
    }
    let w = World::new();
    // The user's own kubeconfig, current context: the real cluster.
    let kube_dir = w.home.join(".kube");
    std::fs::create_dir_all(&kube_dir).unwrap();
    let user_kubeconfig = kube_dir.join("config");
    std::fs::copy(c.admin_kubeconfig(), &user_kubeconfig).unwrap();
    let theirs = c.unique("newcomer");
    c.kubectl(&["create", "namespace", &theirs]);
    let cm = c.kubectl(&[
        "-n",
        &theirs,
        "create",
        "configmap",
        "web-config",
        "--from-literal=owner=the-user",
    ]);
    assert!(
        cm.status.success(),
        "{}",
        String::from_utf8_lossy(&cm.stderr)
    );
    assert!(
        c.get_json("namespace", None, "web").is_none(),
        "namespace web exists before the demo"
    );
    let before = c
        .get_json("configmap", Some(&theirs), "web-config")
        .unwrap();
    // kubectl's default namespace in that context: the user's, where the demo's ConfigMap
    // name already exists.
    let r = kubectl(
        &user_kubeconfig,
        &["config", "set-context", "--current", "--namespace", &theirs],
    );
    r.assert_ok();

    // A target dir reached through CARGO_TARGET_DIR only: <tmp>/cargo-target/debug → the
    // binaries this test run built.
    let target = w.tmp.path().join("cargo-target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&built, target.join("debug")).unwrap();
    let prefix = w.tmp.path().join("prefix");
    let real_home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let script = repo_root().join("install.sh");
    let mut cmd = w.base_command(script.to_str().unwrap());
    cmd.current_dir(w.tmp.path())
        .args(["--profile", "dev", "--no-build"])
        .env("PREFIX", &prefix)
        .env("CARGO_TARGET_DIR", &target)
        .env("TMPDIR", w.tmp.path())
        .env(
            "CARGO_HOME",
            std::env::var_os("CARGO_HOME").unwrap_or_else(|| real_home.join(".cargo").into()),
        )
        .env(
            "RUSTUP_HOME",
            std::env::var_os("RUSTUP_HOME").unwrap_or_else(|| real_home.join(".rustup").into()),
        );
    if let Some(t) = std::env::var_os("RUSTUP_TOOLCHAIN") {
        cmd.env("RUSTUP_TOOLCHAIN", t);
    }
    let out = run(&mut cmd);
    assert!(out.ok(), "install.sh failed:\n{}", out.all());
    let all = out.all();
    assert!(all.contains("using a kube-sandbox"), "{all}");
    assert!(all.contains("prod: deployed"), "{all}");
    // The demo's pushes reached the sandbox: its request log has the server-side applies.
    let demo_dir = std::fs::read_dir(w.tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("hookops-demo.")
        })
        .expect("the demo's directory");
    let requests = std::fs::read_to_string(demo_dir.join("sandbox.log")).unwrap_or_default();
    assert!(
        requests.contains("/namespaces/web/configmaps/web-config"),
        "the sandbox saw no apply of the demo's ConfigMap:\n{requests}"
    );
    // The user's context: untouched.
    assert!(
        c.get_json("namespace", None, "web").is_none(),
        "the demo created namespace web in the user's cluster"
    );
    let after = c
        .get_json("configmap", Some(&theirs), "web-config")
        .unwrap();
    assert_eq!(after["data"], before["data"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    // Installed: binaries, man pages with exit statuses, completions.
    assert!(prefix.join("bin/hookops").is_file());
    assert!(prefix.join("bin/kube-sandbox").is_file());
    assert!(prefix
        .join("share/bash-completion/completions/hookops")
        .is_file());
    assert!(prefix.join("share/zsh/site-functions/_hookops").is_file());
    assert!(prefix
        .join("share/fish/vendor_completions.d/hookops.fish")
        .is_file());
    let man = run(Command::new("man")
        .env(
            "MANPATH",
            format!("{}:", prefix.join("share/man").display()),
        )
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .args(["-P", "cat", "hookops-drift"]));
    man.assert_ok();
    for section in ["EXIT STATUS", "FILES", "ENVIRONMENT", "EXAMPLES"] {
        assert!(man.stdout.contains(section), "{section}:\n{}", man.stdout);
    }
    assert!(
        man.stdout.contains("Something drifted"),
        "drift's status 1:\n{}",
        man.stdout
    );
    let top = run(Command::new("man")
        .env(
            "MANPATH",
            format!("{}:", prefix.join("share/man").display()),
        )
        .args(["-P", "cat", "hookops"]));
    top.assert_ok();
    assert!(
        top.stdout.contains("1 drifted, 2 could not check"),
        "{}",
        top.stdout
    );
    // No kube-sandbox left running from the demo (its command line names the demo's files).
    let demo = demo_dir.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&demo))
        .collect();
    assert!(left.is_empty(), "processes of the demo still run: {left:?}");
}

/// The page sources build.rs writes: EXIT STATUS with drift's 0/1/2, and the other sections.
#[test]
fn man_pages_say_exit_status_files_environment_and_examples() {
    let man = Path::new(hookops_bin())
        .parent()
        .unwrap()
        .join("assets/man");
    let drift = std::fs::read_to_string(man.join("hookops-drift.1")).expect("hookops-drift.1");
    for needle in [
        ".SH \"EXIT STATUS\"",
        "\\fB0\\fR",
        "\\fB1\\fR",
        "\\fB2\\fR",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
    ] {
        assert!(drift.contains(needle), "{needle} missing:\n{drift}");
    }
    // Before VERSION (only the top page has one), where a reader looks for them.
    let top = std::fs::read_to_string(man.join("hookops.1")).expect("hookops.1");
    let version = top.find(".SH VERSION").expect("the top page's VERSION");
    assert!(
        top.find(".SH \"EXIT STATUS\"").is_some_and(|e| e < version),
        "{top}"
    );
    assert!(top.contains("1 drifted, 2 could not check"), "{top}");
    let objects =
        std::fs::read_to_string(man.join("hookops-objects.1")).expect("hookops-objects.1");
    assert!(
        objects.contains("hookops objects \\-\\-env prod"),
        "{objects}"
    );
}

// ---- errors a newcomer meets --------------------------------------------------------------

#[test]
fn errors_name_the_path_or_revision_never_libgit2() {
    let w = World::new();
    let missing = w.tmp.path().join("no/such/repo.git");
    let out = hookops_in(&w, w.tmp.path(), &["install", missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert_command_output("install_missing_path", &out, &[]);
    let plain = w.tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let out = hookops_in(&w, &plain, &["install"]);
    assert_command_output("install_outside_a_repository", &out, &[]);
    let out = hookops_in(&w, &plain, &["status"]);
    assert_command_output("status_outside_a_repository", &out, &[]);
    w.commit(&[("k8s/a.yaml", &configmap("a", None, "1"))], "a");
    w.in_clone(&["push", "-q", "origin", "HEAD:refs/heads/side"])
        .assert_ok();
    let out = w.hookops(&["plan", "side", "--to", "nope"]);
    assert_command_output("plan_unknown_to", &out, &[]);
    let out = w.hookops(&["plan", "nope"]);
    assert_command_output("plan_unknown_branch", &out, &[]);
    for out in [
        hookops_in(&w, w.tmp.path(), &["install", missing.to_str().unwrap()]),
        w.hookops(&["plan", "side", "--to", "nope"]),
        w.hookops(&["plan", "nope"]),
    ] {
        assert!(!out.all().contains("class="), "{}", out.all());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn install_writes_a_commented_config_and_keeps_an_edited_one() {
    let w = World::new();
    let config = w.server.join("hookops/config.toml");
    let text = std::fs::read_to_string(&config).expect("install wrote hookops/config.toml");
    assert!(text.contains("# terraform = \"off\""), "{text}");
    assert!(text.contains("local-exec"), "{text}");
    assert!(text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')));
    // As written, the defaults apply: the default branch deploys as `default`.
    let out = w.hookops(&["status"]);
    out.assert_ok();
    assert!(out.stdout.starts_with("default"), "{}", out.stdout);
    std::fs::write(&config, "# mine\n").unwrap();
    w.hookops(&["install"]).assert_ok();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
}

// ---- plan in a pusher's clone -------------------------------------------------------------

#[test]
fn plan_in_a_clone_says_which_environment_and_what_it_cannot_know() {
    let w = World::new();
    let out = hookops_in(&w, &w.clone, &["plan", "main"]);
    assert_command_output("plan_before_the_first_commit", &out, &[]);
    let first = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("web"), "1"))],
        "a",
    );
    let out = hookops_in(&w, &w.clone, &["plan", "main"]);
    out.assert_ok();
    assert!(!out.stdout.contains("first deploy"), "{}", out.stdout);
    assert_command_output("plan_in_a_clone", &out, &[(&first, "[first]")]);
    let server_config = w.tmp.path().join("server-config.toml");
    std::fs::write(
        &server_config,
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\n",
    )
    .unwrap();
    let out = hookops_in(
        &w,
        &w.clone,
        &[
            "plan",
            "main",
            "--server-config",
            server_config.to_str().unwrap(),
        ],
    );
    out.assert_ok();
    assert_command_output(
        "plan_in_a_clone_with_the_server_config",
        &out,
        &[(&first, "[first]")],
    );
}

// ---- drift --------------------------------------------------------------------------------

const SECRET_DECLARED: &str = "declared-secret-value";
const SECRET_LIVE: &str = "changed-by-hand-value";

/// Against the real cluster: a ConfigMap edited by hand and a Secret changed by hand are named,
/// each with a unified diff of live against declared; neither Secret value appears anywhere.
#[test]
fn drift_names_the_objects_and_shows_a_unified_diff_without_secret_values() {
    let Some((w, c)) = cluster::world("") else {
        return;
    };
    let ns = c.unique("drift");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: {ns}\nstringData:\n  password: {SECRET_DECLARED}\n"
    );
    let commit = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace(&ns)),
            ("k8s/app/cm.yaml", &configmap("settings", Some(&ns), "1")),
            ("k8s/app/secret.yaml", &secret),
        ],
        "app",
    );
    w.push().assert_ok();
    let out = w.hookops(&["drift"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    kubectl(
        &w.kubeconfig,
        &[
            "-n",
            &ns,
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"value":"edited"}}"#,
        ],
    )
    .assert_ok();
    kubectl(
        &w.kubeconfig,
        &[
            "-n",
            &ns,
            "patch",
            "secret",
            "creds",
            "--type=merge",
            "-p",
            &format!(r#"{{"stringData":{{"password":"{SECRET_LIVE}"}}}}"#),
        ],
    )
    .assert_ok();
    let out = w.hookops(&["drift"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = out.all();
    assert!(
        text.contains(&format!(
            "update ConfigMap {ns}/settings (k8s/app/cm.yaml:1)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("update Secret {ns}/creds")),
        "{text}"
    );
    assert!(
        text.contains(&format!("--- live ConfigMap {ns}/settings")),
        "{text}"
    );
    assert!(text.contains("+++ declared k8s/app/cm.yaml:1"), "{text}");
    assert!(text.contains("-  value: edited"), "{text}");
    assert!(text.contains("+  value: \"1\""), "{text}");
    for value in [SECRET_DECLARED, SECRET_LIVE] {
        assert!(!text.contains(value), "a Secret value is shown:\n{text}");
    }
    assert!(!text.contains("managedFields"), "{text}");
    // The record names them too.
    let rec = w.last_record(&commit);
    assert!(
        rec.to_string()
            .contains(&format!("update ConfigMap {ns}/settings")),
        "{rec}"
    );
    let out = w.hookops(&["drift", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("drift --json");
    let objects: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["objects"].as_array().unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{v}");
    assert!(objects.iter().all(|o| o["change"] == "update"), "{v}");
    assert!(!out.stdout.contains(SECRET_LIVE));
}

// ---- status, history, rollback, verify ----------------------------------------------------

#[test]
fn a_rolled_back_failure_stays_visible_in_status_and_history() {
    let Some(w) = sandboxed("") else { return };
    let good = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let bad = app(&w, "web:2", FAIL_ROLLOUT, "2");
    let out = w.push();
    assert!(
        out.stderr
            .contains(&format!("prod: rolled back to {}", &good[..7]))
            && out.stderr.contains("FAILED"),
        "{}",
        out.stderr
    );
    let last = out
        .stderr
        .lines()
        .rfind(|l| l.contains("hookops: prod:"))
        .unwrap();
    assert!(!last.contains("deployed"), "{last}");
    let status = w.hookops(&["status"]);
    status.assert_ok();
    assert!(
        status.stdout.contains("before that: last deploy FAILED"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("unhealthy"), "{}", status.stdout);
    assert_command_output(
        "status_after_a_rollback",
        &status,
        &[(&good, "[good]"), (&bad, "[bad]")],
    );
    let history = w.hookops(&["history"]);
    history.assert_ok();
    assert!(
        history.stdout.contains("    k8s/app: unhealthy: "),
        "{}",
        history.stdout
    );
}

#[test]
fn rollback_needs_no_env_with_one_and_verify_uses_the_configured_signers() {
    let Some(w) = sandboxed("") else { return };
    let first = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("default"), "1"))],
        "1",
    );
    w.push().assert_ok();
    w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("default"), "2"))],
        "2",
    );
    w.push().assert_ok();
    let out = w.hookops(&["rollback"]);
    assert!(out.ok(), "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(first.as_str()));
    let out = w.hookops(&["verify", &first]);
    assert_command_output(
        "verify_without_allowed_signers",
        &out,
        &[(&first, "[first]")],
    );
    let config = w.server.join("hookops/config.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[signing]\n",
        &format!(
            "[signing]\nallowed_signers = \"{}\"\n",
            w.allowed_signers.display()
        ),
        1,
    );
    w.write_server_config(&text);
    let out = w.hookops(&["verify", &first]);
    assert_command_output(
        "verify_with_the_configured_signers",
        &out,
        &[(&first, "[first]")],
    );
    out.assert_ok();
    // Two environments: which one must be said.
    let text = std::fs::read_to_string(w.server.join("hookops/config.toml")).unwrap();
    w.write_server_config(&format!(
        "{text}\n[[environment]]\nname = \"staging\"\nbranch = \"staging\"\n"
    ));
    let out = w.hookops(&["rollback"]);
    assert_command_output("rollback_with_two_environments", &out, &[]);
}

#[test]
fn history_of_an_unknown_environment_fails_and_a_closed_pipe_is_no_panic() {
    let Some(w) = sandboxed("") else { return };
    w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("default"), "1"))],
        "1",
    );
    w.push().assert_ok();
    let out = w.hookops(&["history", "--env", "nope"]);
    assert_command_output("history_unknown_environment", &out, &[]);
    // `history --json | head`: the reader is gone before hookops writes.
    for args in [
        &["history", "--json"][..],
        &["history"],
        &["status"],
        &["objects"],
        &["plan", "main"],
        &["doctor"],
    ] {
        let mut c = w.base_command(hookops_bin());
        c.current_dir(w.tmp.path())
            .arg("--repo")
            .arg(&w.server)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        drop(child.stdout.take());
        let done = child.wait_with_output().unwrap();
        assert_eq!(
            done.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(
            done.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
}

// ---- objects ------------------------------------------------------------------------------

#[test]
fn objects_lists_what_an_environment_manages() {
    let Some(w) = sandboxed("") else { return };
    let first = w.commit(
        &[
            ("k8s/web/a.yaml", &configmap("a", Some("default"), "1")),
            (
                "k8s/web/bc.yaml",
                &format!(
                    "{}---\n{}",
                    configmap("b", Some("default"), "1"),
                    configmap("c", Some("default"), "1")
                ),
            ),
        ],
        "abc",
    );
    w.push().assert_ok();
    let out = w.hookops(&["objects"]);
    assert_command_output("objects", &out, &[(&first, "[first]")]);
    let json = w.hookops(&["objects", "--json"]);
    json.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(v[1]["files"], serde_json::json!(["k8s/web/bc.yaml"]));
    assert_eq!(v[1]["target"], "k8s/web");
    let out = w.hookops(&["objects", "--env", "nope"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
}

// ---- the lock, the queue ------------------------------------------------------------------

/// A push that waits for the environment's lock says who holds it and since when. The test
/// holds the lock itself (as a long deploy would), on the file a real deploy wrote its holder
/// into.
#[test]
fn a_waiting_run_names_the_lock_holder() {
    let Some(w) = sandboxed("") else { return };
    w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("default"), "1"))],
        "1",
    );
    w.push().assert_ok();
    let lock = w.server.join("hookops/locks/prod.lock");
    let holder = std::fs::read_to_string(&lock).unwrap();
    assert!(holder.contains("post-receive"), "{holder}");
    let file = std::fs::File::open(&lock).unwrap();
    file.lock().unwrap();
    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(file);
    });
    let out = w.hookops(&["replay", "main"]);
    released.join().unwrap();
    out.assert_ok();
    let pid = holder.split_whitespace().next().unwrap();
    assert!(
        out.stdout.contains(&format!(
            "prod: waiting for another hookops run to finish (pid {pid} on "
        )) && out.stdout.contains(", hookops post-receive)"),
        "{}",
        out.stdout
    );
}

/// A queue entry whose async worker died (what a hook leaves when its worker is killed before it
/// locks the entry: written here by hand, backdated past the worker's grace): `status` reports
/// it and writes nothing; the next deploying run (here `drift`) takes it over; an entry the
/// environment is already past is settled with a `skipped` record, as coalescing settles it.
#[test]
fn an_orphaned_async_deploy_is_reported_then_taken_over() {
    let Some(w) = sandboxed("") else { return };
    let first = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("default"), "1"))],
        "1",
    );
    w.push().assert_ok();
    let second = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", Some("default"), "2"))],
        "2",
    );
    // The pushed ref moves without a deploy (the worker that would have run it is dead).
    w.in_clone(&["push", "-q", "origin", "HEAD:refs/heads/parked"])
        .assert_ok();
    w.git(
        Some(&w.server),
        &["update-ref", "refs/heads/main", &second, &first],
    )
    .assert_ok();
    let queue = w.server.join("hookops/queue");
    std::fs::create_dir_all(&queue).unwrap();
    let entry = queue.join("20260102T030405.000000Z-1-0.json");
    std::fs::write(
        &entry,
        format!(r#"{{"updates":[["{first}","{second}","refs/heads/main"]]}}"#),
    )
    .unwrap();
    let backdate = |p: &Path| {
        run(Command::new("touch").args(["-d", "2 minutes ago"]).arg(p)).assert_ok();
    };
    backdate(&entry);
    let status = w.hookops(&["status"]);
    status.assert_ok();
    assert!(
        status.stdout.contains("LOST: the deploy queued at"),
        "{}",
        status.stdout
    );
    assert!(entry.exists(), "status wrote something");
    let json = w.hookops(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v[0]["lost"][0]["commits"][0], second.as_str(), "{v}");
    let out = w.hookops(&["drift"]);
    assert!(
        out.stdout.contains("taking over queued deploy"),
        "{}",
        out.all()
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(second.as_str()));
    assert!(!entry.exists());
    assert_eq!(w.configmap("default", "a").unwrap()["data"]["value"], "2");
    // One the environment is already past: settled as coalescing settles a push, with a
    // `skipped` record (superseded by the tip), and nothing applied.
    let stale = queue.join("20260102T030405.000000Z-1-1.json");
    std::fs::write(
        &stale,
        format!(r#"{{"updates":[[null,"{first}","refs/heads/main"]]}}"#),
    )
    .unwrap();
    backdate(&stale);
    let out = w.hookops(&["replay", "main"]);
    assert!(
        out.stdout.contains("skipped: superseded by"),
        "{}",
        out.all()
    );
    assert!(!stale.exists());
    let rec = w.last_record(&first);
    assert_eq!(rec["result"], "skipped", "{rec}");
    assert_eq!(w.pointer("prod").as_deref(), Some(second.as_str()));
}

// ---- what a push prints -------------------------------------------------------------------

#[test]
fn one_long_target_name_does_not_pad_every_line() {
    let Some(w) = sandboxed("") else { return };
    let long = "x".repeat(120);
    w.commit(
        &[
            (
                "hookops.toml",
                &format!(
                    "[[target]]\nname = \"web\"\npath = \"k8s/web\"\ntype = \"kubectl\"\n\n[[target]]\nname = \"{long}\"\npath = \"k8s/long\"\ntype = \"kubectl\"\n"
                ),
            ),
            ("k8s/web/a.yaml", &configmap("a", Some("default"), "1")),
            ("k8s/long/b.yaml", &configmap("b", Some("default"), "1")),
        ],
        "two targets",
    );
    let out = w.push();
    out.assert_ok();
    let web = out
        .stderr
        .lines()
        .find(|l| l.contains("prod: web "))
        .expect("web's line");
    assert!(web.trim_end().len() < 100, "{web}");
}

/// Terraform's whole output goes to the root's log; the pusher gets the plan's and the apply's
/// summary lines.
#[test]
fn terraform_prints_a_summary_per_root_and_logs_the_rest() {
    let Some(w) = sandboxed("") else { return };
    w.commit(&[("infra/main.tf", &terraform_root("v1"))], "infra");
    let out = w.push();
    out.assert_ok();
    assert!(
        out.stderr.contains("infra: plan: Plan: 1 to add"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Apply complete!"), "{}", out.stderr);
    assert!(!out.stderr.contains("will be created"), "{}", out.stderr);
    assert!(!out.stderr.contains("Initializing"), "{}", out.stderr);
    let log = w.server.join("hookops/work/prod/terraform/infra.log");
    let text = std::fs::read_to_string(&log).expect("the root's log");
    assert!(text.contains("will be created"), "{text}");
}

// ---- messages -----------------------------------------------------------------------------

#[test]
fn broken_manifests_are_named_for_what_they_are() {
    let Some(w) = sandboxed("") else { return };
    let lfs = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    let commit = w.commit(
        &[
            // Declared: discovery does not take a file that is no manifest for one.
            (
                "hookops.toml",
                "[[target]]\nname = \"lfs\"\npath = \"k8s/lfs\"\ntype = \"kubectl\"\n\n[[target]]\nname = \"noname\"\npath = \"k8s/noname\"\ntype = \"kubectl\"\n\n[[target]]\nname = \"wave\"\npath = \"k8s/wave\"\ntype = \"kubectl\"\n\n[[target]]\nname = \"kust\"\npath = \"k8s/kust\"\ntype = \"kustomize\"\n",
            ),
            ("k8s/lfs/big.yaml", lfs),
            (
                "k8s/kust/kustomization.yaml",
                "resources:\n- missing.yaml\n",
            ),
            (
                "k8s/noname/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: default\ndata: {}\n",
            ),
            (
                "k8s/wave/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\n  namespace: default\n  annotations:\n    hookops.io/wave: soon\n",
            ),
        ],
        "broken",
    );
    let out = hookops_in(&w, &w.clone, &["plan", "main"]);
    assert_command_output("broken_manifests", &out, &[(&commit, "[commit]")]);
    let text = out.all();
    assert!(text.contains("Git LFS pointer"), "{text}");
    assert!(!text.contains("generateName"), "{text}");
    assert!(text.contains("\"soon\" is not an integer"), "{text}");
    assert!(text.contains("ERROR: kustomize failed: "), "{text}");
    assert!(!text.contains("target kust"), "{text}");
}

/// The gate asks a reachable cluster's discovery about kinds the tree does not define, as a
/// deploy does: a custom resource whose CRD was installed by hand is accepted.
#[test]
fn the_gate_knows_crds_installed_outside_git() {
    let Some((w, c)) = cluster::world("") else {
        return;
    };
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    let group = format!("{}.example.test", c.unique("gate"));
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
    );
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &crd);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(c.wait_for(Duration::from_secs(30), || {
        c.kubectl(&["get", &format!("widgets.{group}"), "-A"])
            .status
            .success()
    }));
    let ns = c.unique("gate");
    let text = std::fs::read_to_string(w.server.join("hookops/config.toml")).unwrap();
    w.write_server_config(&text.replacen(
        "context = \"sandbox\"\n",
        &format!("context = \"sandbox\"\nallowed_namespaces = [\"{ns}\"]\n"),
        1,
    ));
    c.kubectl(&["create", "namespace", &ns]);
    w.commit(
        &[(
            "k8s/w/widget.yaml",
            &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: {ns}\nspec: {{size: 1}}\n"),
        )],
        "a widget",
    );
    let out = w.push();
    assert!(out.ok(), "{}", out.all());
    assert!(!out.stderr.contains("push rejected"), "{}", out.stderr);
}

/// The README's minimal config names a namespace the cluster does not have, and the policy may
/// not create it: doctor says so (the first push would fail), and passes once it exists.
#[test]
fn doctor_fails_while_the_first_push_would_for_a_missing_namespace() {
    let Some(w) = sandboxed("allowed_namespaces = [\"web\"]") else {
        return;
    };
    let out = w.hookops(&["doctor"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains(
            "FAIL  env prod: namespace web does not exist, and the policy may not create it"
        ),
        "{}",
        out.stdout
    );
    let json = w.hookops(&["doctor", "--json"]);
    assert_eq!(json.code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("doctor --json");
    assert!(
        v.as_array().unwrap().iter().any(
            |c| c["state"] == "fail" && c["detail"].as_str().unwrap().contains("namespace web")
        ),
        "{v}"
    );
    let ns = w.tmp.path().join("ns.yaml");
    std::fs::write(&ns, namespace("web")).unwrap();
    kubectl(
        &w.kubeconfig,
        &["apply", "--server-side", "-f", ns.to_str().unwrap()],
    )
    .assert_ok();
    let out = w.hookops(&["doctor"]);
    assert!(out.ok(), "{}", out.all());
    assert!(
        out.stdout.contains("ok    env prod: namespace web exists"),
        "{}",
        out.stdout
    );
}

/// kubectl names neither file nor object when the manifests went on stdin; the target's
/// failure does (against the real API server, which refuses a missing namespace).
#[test]
fn a_kubectl_refusal_names_the_file_and_object() {
    let Some((w, c)) = cluster::world("") else {
        return;
    };
    let ns = c.unique("nope");
    let commit = w.commit(
        &[("k8s/app/cm.yaml", &configmap("settings", Some(&ns), "1"))],
        "into a namespace that does not exist",
    );
    let out = w.push();
    let rec = w.last_record(&commit);
    let why = rec["targets"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.starts_with("kubectl apply: k8s/app/cm.yaml:1: ")
            && why.ends_with(&format!(
                "namespaces \"{ns}\" not found (ConfigMap {ns}/settings)"
            )),
        "{why}\n{}",
        out.all()
    );
    assert!(!why.contains("E1"), "a klog prefix: {why}");
}
