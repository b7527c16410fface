//! Issue 26: what a hostile pusher tried, each through a real `git push` into a bare repository
//! with the real hook (and the real kube-apiserver test cluster where something deploys).
//! docs/security.md's table points at these tests.

use crate::cluster::world;
use crate::util::{configmap, namespace, Run, World};

/// hookops' refs, one of each kind it writes.
const HOOKOPS_REFS: [&str; 5] = [
    "refs/notes/hookops",
    "refs/hookops/deployed/prod",
    "refs/hookops/inventory/prod",
    "refs/hookops/references",
    "refs/hookops/remote-notes",
];

/// Every hookops ref in the server repository with its target (`for-each-ref`).
fn hookops_refs(w: &World) -> String {
    w.git(
        Some(&w.server),
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/hookops",
            "refs/notes/hookops",
        ],
    )
    .stdout
}

/// A deploy of one ConfigMap, so that records, a pointer, an inventory and a reference index
/// exist; returns the deployed commit.
fn deployed(w: &World, ns: &str) -> String {
    let c = w.commit(
        &[
            ("app/ns.yaml", &namespace(ns)),
            ("app/cm.yaml", &configmap("settings", Some(ns), "1")),
        ],
        "app",
    );
    w.push().assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    c
}

/// `git push origin +SRC:DST` (forced: a pusher rewriting history would force).
fn push_to(w: &World, src: &str, dst: &str) -> Run {
    w.push_args(&["origin", &format!("+{src}:{dst}")])
}

/// The first case: `git push origin +X:refs/notes/hookops` (and the pointer, the
/// inventory, the reference index) was accepted, so a pusher could delete every record, move
/// the pointer and forge the inventory that decides what is pruned. `hookops install` sets
/// `receive.hideRefs`: git itself refuses, no gate installed.
#[test]
fn a_push_cannot_write_hookops_refs_without_the_gate() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("refs");
    let good = deployed(&w, &ns);
    assert!(!w.records(&good).is_empty());
    let before = hookops_refs(&w);
    // Something else to point the refs at: an unrelated commit of the pusher's.
    let forged = w.commit(&[("README", "forged\n")], "forged");
    for r in HOOKOPS_REFS {
        let out = push_to(&w, &forged, r);
        assert!(
            !out.ok() && out.stderr.contains("hidden ref"),
            "push to {r} was accepted:\n{}",
            out.all()
        );
        let out = w.push_args(&["origin", &format!(":{r}")]);
        assert!(!out.ok(), "deleting {r} was accepted:\n{}", out.all());
    }
    assert_eq!(hookops_refs(&w), before, "hookops' refs moved");
    assert_eq!(w.records(&good).len(), 1);
    // The branch itself still deploys.
    w.push().assert_ok();
    assert_eq!(w.pointer("prod").as_deref(), Some(forged.as_str()));
}

/// Where the host's config lacks `receive.hideRefs` (an install from before, a host whose
/// config hookops cannot write), the gate refuses the update with its own line, and `doctor`
/// fails with the exact command that fixes it; after that command git refuses on its own.
#[test]
fn the_gate_and_doctor_cover_a_repository_without_hide_refs() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("gate-refs");
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    deployed(&w, &ns);
    // Exit 5: there was none to unset (an install from before hookops set it).
    let unset = w.git(
        Some(&w.server),
        &["config", "--unset-all", "receive.hideRefs"],
    );
    assert!(matches!(unset.code, Some(0) | Some(5)), "{}", unset.all());
    let before = hookops_refs(&w);
    let forged = w.commit(&[("README", "forged\n")], "forged");
    let out = push_to(&w, &forged, "refs/hookops/deployed/prod");
    assert!(!out.ok(), "{}", out.all());
    assert!(
        out.stderr.contains(
            "hookops: push rejected: refs/hookops/deployed/prod: hookops' own ref: records, \
             deployed pointers and inventories are written by hookops alone, never by a push"
        ),
        "{}",
        out.all()
    );
    assert_eq!(hookops_refs(&w), before);

    let doctor = w.hookops(&["doctor"]);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains(" pushes: "))
        .unwrap_or_else(|| panic!("no pushes check:\n{}", doctor.all()))
        .to_string();
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(!doctor.ok());
    let fix = line
        .rsplit_once("(fix: ")
        .map(|(_, f)| f.trim_end_matches(')'))
        .unwrap_or_else(|| panic!("no fix in {line}"));
    let mut sh = w.base_command("sh");
    crate::util::run(sh.args(["-c", fix])).assert_ok();
    let doctor = w.hookops(&["doctor"]);
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains(" pushes: ")),
        "{}",
        doctor.all()
    );
    // Now git refuses before the gate runs.
    let out = push_to(&w, &forged, "refs/notes/hookops");
    assert!(out.stderr.contains("hidden ref"), "{}", out.all());
}

/// A directory on the server outside the repository, holding a kustomization that turns a
/// secret file into a ConfigMap (the issue's `/srv/secret-dir`); returns its path.
fn outside_secret(w: &World, ns: &str) -> std::path::PathBuf {
    let dir = w.tmp.path().join("srv-secret-dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), "server-only-value\n").unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!("namespace: {ns}\nconfigMapGenerator:\n- name: leaked\n  files: [secret.txt]\ngeneratorOptions:\n  disableNameSuffixHash: true\n"),
    )
    .unwrap();
    dir
}

/// `../` repeated enough to climb from the materialised copy of `app/` to the filesystem
/// root, then `dir`.
fn climbing_to(dir: &std::path::Path) -> String {
    format!(
        "{}{}",
        "../".repeat(24),
        dir.display().to_string().trim_start_matches('/')
    )
}

/// The second case: `Resources:` (capital R) was not read by hookops' checks but is by
/// kustomize, so a ConfigMap built from a directory outside the repository landed in the
/// cluster, and the gate passed it. Now the field is read as kustomize reads it: the target is
/// refused naming file and line, by the deploy and by the gate, and nothing lands.
#[test]
fn kustomization_fields_in_any_case_cannot_climb_out() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("kcase");
    let outside = outside_secret(&w, &ns);
    w.commit(&[("ns/ns.yaml", &namespace(&ns))], "namespace");
    w.push().assert_ok();
    w.commit(
        &[(
            "app/kustomization.yaml",
            &format!("Resources:\n- {}\n", climbing_to(&outside)),
        )],
        "capital R",
    );
    let out = w.push();
    let all = out.all();
    assert!(
        all.contains("app/kustomization.yaml:2: Resources")
            && all.contains("climbs out of the repository"),
        "{all}"
    );
    assert!(
        c.get_json("configmap", Some(&ns), "leaked").is_none(),
        "the secret landed"
    );
    assert!(!all.contains("server-only-value"), "{all}");
    // The gate refuses it too.
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    w.commit(&[("app/other.yaml", "# retry\n")], "again");
    let gated = w.push();
    assert!(!gated.ok(), "{}", gated.all());
    assert!(
        gated
            .stderr
            .contains("hookops: push rejected: refs/heads/main: target app:")
            && gated.stderr.contains("app/kustomization.yaml:2: Resources"),
        "{}",
        gated.all()
    );
}

/// Pids in an `strace -f` log that ran `kubectl kustomize`, and every thread or child they
/// started.
fn kustomize_pids(log: &str) -> std::collections::BTreeSet<String> {
    let mut pids = std::collections::BTreeSet::new();
    for line in log.lines() {
        // strace pads the pid column (`812  execve(`): the call starts after the spaces.
        let Some((pid, call)) = line.split_once(' ').map(|(p, c)| (p, c.trim_start())) else {
            continue;
        };
        // The program itself, not bubblewrap, whose arguments name it too.
        let program = call
            .strip_prefix("execve(")
            .and_then(|c| c.split('"').nth(1))
            .unwrap_or("");
        if program.contains("kubectl") && call.contains("\"kustomize\"") {
            pids.insert(pid.to_string());
        }
        let forks = ["clone", "fork", "vfork"]
            .iter()
            .any(|f| call.starts_with(f) || call.starts_with(&format!("<... {f}")));
        if pids.contains(pid) && forks {
            if let Some(child) = call
                .rsplit("= ")
                .next()
                .map(str::trim)
                .filter(|c| !c.is_empty() && c.chars().all(|x| x.is_ascii_digit()))
            {
                pids.insert(child.to_string());
            }
        }
    }
    pids
}

/// The files `pids` opened successfully, from an `strace -f` log (a call interrupted by
/// another thread's line is matched with its `resumed` line).
fn opened_by(log: &str, pids: &std::collections::BTreeSet<String>) -> Vec<String> {
    let mut pending: std::collections::BTreeMap<String, String> = Default::default();
    let mut opened = Vec::new();
    for line in log.lines() {
        // strace pads the pid column (`812  execve(`): the call starts after the spaces.
        let Some((pid, call)) = line.split_once(' ').map(|(p, c)| (p, c.trim_start())) else {
            continue;
        };
        if !pids.contains(pid) {
            continue;
        }
        let (path, result) = if call.starts_with("open") {
            let path = call.split('"').nth(1).unwrap_or("").to_string();
            if call.contains("<unfinished") {
                pending.insert(pid.to_string(), path);
                continue;
            }
            (path, call)
        } else if call.starts_with("<... open") {
            match pending.remove(pid) {
                Some(path) => (path, call),
                None => continue,
            }
        } else {
            continue;
        };
        if !result.contains("= -1") {
            opened.push(path);
        }
    }
    opened
}

/// The done-when case: a kustomization with every file-reading field, in odd spellings
/// (any case, KELVIN SIGN, LONG S) and with escaping paths (`../../../etc`, absolute paths, a
/// directory outside the repository) and remote URLs (a listener on loopback) reads nothing
/// outside the repository and opens no connection, through a real `git push` under strace.
/// Its target is refused naming every field's line; a good kustomization beside it is
/// rendered, in the sandbox: every file its kubectl opened is its own copy or the system's
/// (`/usr`, `/proc`, `/dev`), and it connected nowhere.
#[test]
fn a_hostile_kustomization_reads_nothing_outside_and_opens_no_connection() {
    if !crate::util::require("strace") || !crate::util::require("bwrap") {
        return;
    }
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("strace");
    let outside = outside_secret(&w, &ns);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/cm.yaml");
    let up = climbing_to(&outside);
    let abs = outside.display().to_string();
    let hostile = format!(
        "RESOURCES:\n- {up}\n- {url}\n\
         \u{212a}ind: Kustomization\n\
         cOmponents: [{abs}]\n\
         CRDs: [../../../etc/passwd]\n\
         Configurations: [{abs}/secret.txt]\n\
         GENERATORS: [{up}]\n\
         transformerS: [{up}]\n\
         Validators: [{up}]\n\
         patcheSStrategicMerge: [{abs}/secret.txt]\n\
         Patches:\n- Path: {abs}/secret.txt\n\
         PatchesJson6902:\n- PATH: ../../../etc/passwd\n  target: {{kind: ConfigMap, name: x}}\n\
         re\u{17f}ources2: []\n\
         Replacements:\n- Path: {abs}/secret.txt\n\
         openapi:\n  path: {abs}/secret.txt\n\
         ConfigMapGenerator:\n- name: a\n  FILES: [k={abs}/secret.txt]\n  Envs: [../../../etc/environment]\n\
         secretGenerator:\n- name: b\n  Env: {abs}/secret.txt\n\
         helmCharts:\n- name: c\n  Repo: {url}\n  ValuesFile: {abs}/secret.txt\n\
         helmGlobals:\n  ChartHome: {up}\n"
    );
    // One key kustomize would refuse anyway (`re\u{17f}ources2`) is left out: every line must
    // be one kustomize accepts.
    let hostile = hostile.replace("re\u{17f}ources2: []\n", "");
    w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("hostile/kustomization.yaml", &hostile),
            (
                "good/kustomization.yaml",
                &format!("namespace: {ns}\nresources: [cm.yaml]\n"),
            ),
            ("good/cm.yaml", &configmap("rendered", None, "ok")),
        ],
        "hostile and good kustomizations",
    );
    let log = w.tmp.path().join("strace.log");
    let mut cmd = w.base_command("strace");
    cmd.current_dir(&w.clone)
        .args(["-f", "-qq", "-s", "256", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=open,openat,openat2,connect,execve,clone,clone3,fork,vfork",
            "git",
            "push",
            "-q",
            "origin",
            "HEAD:main",
        ]);
    let out = crate::util::run(&mut cmd);
    let all = out.all();
    // The hostile target: refused before any tool ran, every line that names a path or a
    // URL refused with its line number.
    let mut named = 0;
    for (i, line) in hostile.lines().enumerate() {
        let reaches_out = [abs.as_str(), up.as_str(), url.as_str(), "../../../etc"]
            .iter()
            .any(|v| line.contains(v));
        if !reaches_out {
            continue;
        }
        named += 1;
        let at = format!("hostile/kustomization.yaml:{}: ", i + 1);
        assert!(
            all.contains(&at),
            "line {} ({line}) not refused:\n{all}",
            i + 1
        );
    }
    assert!(named >= 19, "{named}");
    // The good target deployed.
    assert_eq!(
        c.get_json("configmap", Some(&ns), "rendered")
            .map(|cm| cm["data"]["value"].clone()),
        Some(serde_json::json!("ok")),
        "{all}"
    );
    assert!(c.get_json("configmap", Some(&ns), "leaked").is_none());
    // No connection reached the listener, and nobody tried.
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(
        !trace.contains(&format!("htons({port})")),
        "something connected to {port}"
    );
    // Nothing outside the repository was opened by anyone.
    let secret = outside.join("secret.txt").display().to_string();
    assert!(
        !trace
            .lines()
            .any(|l| l.contains(&secret) && !l.contains("ENOENT")),
        "{secret} was opened"
    );
    // The good kustomization was rendered in the sandbox: its kubectl opened only its own
    // copy of the target and the system's files, and made no connection out of it.
    let pids = kustomize_pids(&trace);
    assert!(!pids.is_empty(), "no kubectl kustomize in the trace");
    let render_root = w.server.join("hookops/work/prod").display().to_string();
    let allowed = |path: &str| {
        ["/usr/", "/proc/", "/dev/", "/lib/", "/lib64/", "/bin/"]
            .iter()
            .any(|p| path.starts_with(p))
            || path.starts_with(&render_root)
            || [
                "/", "/usr", "/proc", "/dev", "/tmp", "/bin", "/sbin", "/lib", "/lib64", ".",
            ]
            .contains(&path)
            || !path.starts_with('/')
    };
    for path in opened_by(&trace, &pids) {
        assert!(allowed(&path), "kubectl kustomize opened {path}");
    }
}

/// The third case: a Terraform root whose module comes from a `git::` URL failed under
/// the hook (`fatal: not a git repository: '.'`: the hook's `GIT_DIR` reached terraform's git)
/// and worked under `replay`. Children now get an explicit environment without git's hook
/// variables. The module is served over plain HTTP by `git http-backend` on loopback.
#[test]
fn a_git_module_source_works_under_the_hook() {
    if !crate::util::tools_present() {
        return;
    }
    let w = World::new();
    w.configure("", "");
    let served = w.tmp.path().join("served");
    let module = served.join("module.git");
    std::fs::create_dir_all(&served).unwrap();
    w.git(None, &["init", "-q", "--bare", module.to_str().unwrap()])
        .assert_ok();
    let work = w.tmp.path().join("module-work");
    w.git(
        None,
        &[
            "clone",
            "-q",
            module.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    )
    .assert_ok();
    std::fs::write(
        work.join("main.tf"),
        "resource \"terraform_data\" \"from_module\" {\n  input = \"m\"\n}\n",
    )
    .unwrap();
    w.git(Some(&work), &["add", "-A"]).assert_ok();
    w.git(Some(&work), &["commit", "-q", "-m", "module"])
        .assert_ok();
    w.git(Some(&work), &["push", "-q", "origin", "HEAD:main"])
        .assert_ok();
    w.git(Some(&module), &["symbolic-ref", "HEAD", "refs/heads/main"])
        .assert_ok();
    let token = w.tmp.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let Some(server) = crate::https_git::HttpsGitServer::start(&served, w.tmp.path(), &token, true)
    else {
        return;
    };
    let source = server
        .url("module.git")
        .replace("http://", "git::http://x:t0ken@");
    let c = w.commit(
        &[(
            "infra/main.tf",
            &format!("module \"m\" {{\n  source = \"{source}\"\n}}\n"),
        )],
        "git module",
    );
    let out = w.push();
    assert!(!out.all().contains("not a git repository"), "{}", out.all());
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "succeeded", "{}\n{rec}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
}

/// A Secret key that the real API server quotes back in its refusal: raw ESC sequences in it
/// reached the pusher's terminal (and, with the commit pending, the next pusher's), the
/// operator's `replay` and the record. Now every such string is cleaned on its way out.
#[test]
fn control_characters_from_the_server_reach_no_terminal() {
    let Some((w, c)) = world("") else { return };
    let ns = c.unique("esc");
    w.commit(&[("ns/ns.yaml", &namespace(&ns))], "namespace");
    w.push().assert_ok();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: {ns}\nstringData:\n  \"k\\e[31m\\e]0;pwned\\a\\e[2J\": v\n"
    );
    let bad = w.commit(&[("app/secret.yaml", &secret)], "esc");
    let out = w.push();
    let has_esc = |s: &str| s.contains('\u{1b}') || s.contains('\u{7}');
    assert!(
        out.all().contains("\\u{1b}[31m"),
        "the refusal is not shown:\n{}",
        out.all()
    );
    assert!(!has_esc(&out.all()), "raw ESC reached the pusher");
    assert_eq!(w.last_record(&bad)["result"], "failed");
    // The commit stays pending: an unrelated push deploys (and reports) it again.
    w.commit(&[("README", "unrelated\n")], "unrelated");
    let again = w.push();
    assert!(again.all().contains("\\u{1b}[31m"), "{}", again.all());
    assert!(!has_esc(&again.all()), "raw ESC reached the next pusher");
    let replay = w.hookops(&["replay", "main"]);
    assert!(replay.all().contains("\\u{1b}[31m"), "{}", replay.all());
    assert!(!has_esc(&replay.all()), "raw ESC reached replay's output");
    assert!(!has_esc(&w.note(&bad)), "raw ESC in the record");
    let history = w.hookops(&["history"]);
    assert!(!has_esc(&history.all()), "raw ESC in history");
}

/// The fifth case: a pushed Terraform root's `local-exec` runs as the hook user.
/// `terraform = "off"` refuses the root without running anything (the gate refuses it too);
/// `plan-only` plans, records the summary and applies nothing.
#[test]
fn terraform_off_and_plan_only_run_no_pushed_code() {
    if !crate::util::tools_present() {
        return;
    }
    let w = World::new();
    let marker = w.tmp.path().join("local-exec-ran");
    let root = format!(
        "resource \"terraform_data\" \"x\" {{\n  provisioner \"local-exec\" {{\n    command = \"touch {}\"\n  }}\n}}\n",
        marker.display()
    );
    w.configure("terraform = \"off\"", "");
    let c = w.commit(&[("infra/main.tf", &root)], "local-exec");
    let out = w.push();
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed", "{}", out.all());
    let reason = crate::util::target(&rec, "infra")["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        reason.contains("terraform = \"off\" for environment prod in the server config"),
        "{reason}"
    );
    assert!(!marker.exists(), "local-exec ran");
    assert_eq!(w.pointer("prod"), None);
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    w.commit(&[("infra/more.tf", "# more\n")], "more");
    let gated = w.push();
    assert!(
        !gated.ok() && gated.stderr.contains("Terraform roots are not run here"),
        "{}",
        gated.all()
    );

    w.configure("terraform = \"plan-only\"", "");
    let planned = w.push();
    let head = w.head();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "succeeded", "{}", planned.all());
    let t = crate::util::target(&rec, "infra");
    assert!(
        t["reason"]
            .as_str()
            .unwrap_or("")
            .contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "{t}"
    );
    assert_eq!(t["applied"], 0);
    assert!(!marker.exists(), "local-exec ran under plan-only");
    assert_eq!(w.pointer("prod").as_deref(), Some(head.as_str()));
}
