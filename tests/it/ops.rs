//! Operations: concurrent pushes, coalescing, crash safety, async deploys, metrics, alerts and
//! doctor, all through the real hook and the real kubectl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{configmap, free_port, hookops_bin, sandboxed, Run, World};

fn world() -> Option<World> {
    sandboxed("")
}

fn env_block(w: &World, name: &str, branch: &str) -> String {
    format!(
        "[[environment]]\nname = \"{name}\"\nbranch = \"{branch}\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n",
        w.kubeconfig.display()
    )
}

fn clone_of(w: &World, name: &str) -> std::path::PathBuf {
    let dir = w.tmp.path().join(name);
    w.git(
        None,
        &[
            "clone",
            "-q",
            w.server.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
    )
    .assert_ok();
    dir
}

#[test]
fn six_environments_pushed_at_once() {
    let Some(w) = world() else { return };
    let mut config = String::new();
    for i in 0..6 {
        config.push_str(&env_block(&w, &format!("env{i}"), &format!("b{i}")));
    }
    config.push_str(&format!("[signing]\nkey = \"{}\"\n", w.key.display()));
    w.write_server_config(&config);
    w.commit(&[("README.md", "x\n")], "root");
    w.push().assert_ok();
    let clones: Vec<_> = (0..6).map(|i| clone_of(&w, &format!("c{i}"))).collect();
    let mut commits = Vec::new();
    for (i, dir) in clones.iter().enumerate() {
        std::fs::create_dir_all(dir.join("k8s")).unwrap();
        std::fs::write(
            dir.join("k8s/cm.yaml"),
            configmap(&format!("cm{i}"), Some("default"), "1"),
        )
        .unwrap();
        w.git(Some(dir), &["add", "-A"]).assert_ok();
        w.git(Some(dir), &["commit", "-q", "-m", &format!("env {i}")])
            .assert_ok();
        commits.push(
            w.git(Some(dir), &["rev-parse", "HEAD"])
                .stdout
                .trim()
                .to_string(),
        );
    }
    std::thread::scope(|s| {
        for (i, dir) in clones.iter().enumerate() {
            let w = &w;
            s.spawn(move || {
                w.git(Some(dir), &["push", "-q", "origin", &format!("HEAD:b{i}")])
                    .assert_ok();
            });
        }
    });
    for (i, c) in commits.iter().enumerate() {
        let recs = w.records(c);
        assert_eq!(recs.len(), 1, "env{i}: {recs:?}");
        assert_eq!(recs[0]["env"], format!("env{i}"));
        assert_eq!(recs[0]["result"], "succeeded");
        assert_eq!(w.pointer(&format!("env{i}")).as_deref(), Some(c.as_str()));
        assert!(w.configmap("default", &format!("cm{i}")).is_some());
    }
}

#[test]
fn waiting_pushes_coalesce_to_the_newest() {
    let Some(w) = world() else { return };
    w.commit(
        &[("k8s/slow.yaml", &configmap("slow", Some("default"), "0"))],
        "base",
    );
    w.push().assert_ok();
    // Every apply of `slow` now takes a while: the first push holds the lock meanwhile.
    w.sandbox().stall_path(
        "/api/v1/namespaces/default/configmaps/slow",
        Duration::from_millis(2500),
    );
    let a = w.commit(
        &[("k8s/slow.yaml", &configmap("slow", Some("default"), "a"))],
        "a",
    );
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let w = &w;
        let tx2 = tx.clone();
        s.spawn(move || {
            let out = w.push();
            tx2.send(("a", out.all())).unwrap();
        });
        // Wait until A's hook runs (its ref moved), then push B and C from other clones.
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.git(Some(&w.server), &["rev-parse", "main"]).stdout.trim() != a {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let cb = clone_of(w, "cb");
        std::fs::write(
            cb.join("k8s/slow.yaml"),
            configmap("slow", Some("default"), "b"),
        )
        .unwrap();
        w.git(Some(&cb), &["commit", "-q", "-am", "b"]).assert_ok();
        let b = w
            .git(Some(&cb), &["rev-parse", "HEAD"])
            .stdout
            .trim()
            .to_string();
        let tx3 = tx.clone();
        s.spawn(move || {
            let out = w.git(Some(&cb), &["push", "-q", "origin", "HEAD:main"]);
            tx3.send(("b", out.all())).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.git(Some(&w.server), &["rev-parse", "main"]).stdout.trim() != b {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        let cc = clone_of(w, "cc");
        std::fs::write(
            cc.join("k8s/slow.yaml"),
            configmap("slow", Some("default"), "c"),
        )
        .unwrap();
        w.git(Some(&cc), &["commit", "-q", "-am", "c"]).assert_ok();
        let c = w
            .git(Some(&cc), &["rev-parse", "HEAD"])
            .stdout
            .trim()
            .to_string();
        let out = w.git(Some(&cc), &["push", "-q", "origin", "HEAD:main"]);
        tx.send(("c", out.all())).unwrap();
        drop(tx);
        let outputs: Vec<_> = rx.iter().collect();
        assert_eq!(outputs.len(), 3);
        let rb = w.last_record(&b);
        assert_eq!(rb["result"], "skipped", "{rb}");
        assert_eq!(rb["reason"], format!("superseded by {c}"));
        assert_eq!(w.last_record(&c)["result"], "succeeded");
        assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
        assert_eq!(
            w.configmap("default", "slow").unwrap()["data"]["value"],
            "c"
        );
    });
}

#[test]
fn sigkill_mid_deploy_then_replay() {
    let Some(w) = world() else { return };
    let base = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "0"))],
        "base",
    );
    w.push().assert_ok();
    w.sandbox().stall_path(
        "/api/v1/namespaces/default/configmaps/a",
        Duration::from_secs(30),
    );
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "one",
    );
    w.push_args(&["origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    let mut child = std::process::Command::new(hookops_bin())
        .args([
            "--repo",
            w.server.to_str().unwrap(),
            "replay",
            "main",
            "--to",
            &c,
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", w.home.join(".gitconfig"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = || crate::crash::journal_entries(&w);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The journal entry appears just before the targets run; give kubectl a moment to reach
    // the (stalled) sandbox, so the kill lands mid-apply.
    while journal().is_empty() {
        assert!(Instant::now() < deadline, "deploy never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the deploy should still be running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    w.sandbox().clear_faults();
    // No stale lock: the next run starts at once, records the interruption, and deploys.
    let started = Instant::now();
    let out = w.hookops(&["replay", "main", "--to", &c]);
    out.assert_ok();
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(out.stdout.contains("was interrupted"), "{}", out.stdout);
    let recs = w.records(&c);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0]["result"], "failed");
    assert!(recs[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("interrupted"));
    assert_eq!(recs[1]["result"], "succeeded");
    assert_eq!(
        recs[1]["from"],
        base.as_str(),
        "redeployed from the pointer"
    );
    assert!(journal().is_empty(), "{:?}", journal());
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict reader of the Prometheus text format: every sample line must be
/// `name{label="value",…} number` with a declared TYPE, and names must be valid.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut typed = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().unwrap().to_string());
            assert!(
                matches!(parts.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "unexpected line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"))),
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line:?}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            typed.contains(name) || typed.contains(base),
            "no TYPE for {name}"
        );
        let mut pairs = Vec::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            assert!(v.starts_with('"') && v.ends_with('"'), "{line:?}");
            pairs.push((k.to_string(), v[1..v.len() - 1].to_string()));
        }
        out.push((name.to_string(), pairs, value));
    }
    out
}

struct Webhook {
    url: String,
    bodies: mpsc::Receiver<serde_json::Value>,
}

/// A webhook receiver on loopback that records the JSON bodies it gets (one thread, stops
/// when the test drops the receiver and the listener is closed by the OS at exit of thread).
fn webhook() -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                break;
            }
        }
    });
    Webhook { url, bodies: rx }
}

#[test]
fn metrics_and_alerts() {
    let Some(w) = world() else { return };
    let hook = webhook();
    let metrics = w.tmp.path().join("textfile/hookops.prom");
    w.configure(
        "on_failure = \"stop\"",
        &format!(
            "[alerts]\nwebhook = \"{}\"\n\n[metrics]\ntextfile = \"{}\"\n",
            hook.url,
            metrics.display()
        ),
    );
    w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "one",
    );
    w.push().assert_ok();
    let m = parse_metrics(&std::fs::read_to_string(&metrics).unwrap());
    let get = |m: &[Sample], name: &str, labels: &[(&str, &str)]| {
        m.iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(
        get(
            &m,
            "hookops_deploys_total",
            &[("env", "prod"), ("target", "k8s"), ("result", "succeeded")]
        ),
        Some(1.0)
    );
    assert!(
        get(
            &m,
            "hookops_last_success_timestamp_seconds",
            &[("env", "prod")]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        get(&m, "hookops_pending_commits", &[("env", "prod")]),
        Some(0.0)
    );
    assert_eq!(
        get(
            &m,
            "hookops_deploy_duration_seconds_count",
            &[("env", "prod")]
        ),
        Some(1.0)
    );
    assert!(
        hook.bodies.try_recv().is_err(),
        "no alert for a plain success"
    );

    // A failure alerts with text and structured fields.
    w.sandbox()
        .fail_path("/api/v1/namespaces/default/configmaps/a", 500);
    let bad = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "two",
    );
    w.push();
    let alert = hook
        .bodies
        .recv_timeout(Duration::from_secs(10))
        .expect("failure alert");
    assert_eq!(alert["event"], "failure");
    assert_eq!(alert["env"], "prod");
    assert_eq!(alert["commit"], bad.as_str());
    assert!(
        alert["text"].as_str().unwrap().contains("failed"),
        "{alert}"
    );
    assert_eq!(alert["targets"][0]["result"], "failed");
    let m = parse_metrics(&std::fs::read_to_string(&metrics).unwrap());
    assert_eq!(
        get(
            &m,
            "hookops_deploys_total",
            &[("target", "k8s"), ("result", "failed")]
        ),
        Some(1.0)
    );

    // Recovery alerts too.
    w.sandbox().clear_faults();
    w.commit(&[("README.md", "r\n")], "retry");
    w.push().assert_ok();
    let alert = hook
        .bodies
        .recv_timeout(Duration::from_secs(10))
        .expect("recovery alert");
    assert_eq!(alert["event"], "recovery");

    // A dead receiver does not fail the deploy.
    let dead = free_port();
    w.configure(
        "",
        &format!("[alerts]\nwebhook = \"http://127.0.0.1:{dead}/x\"\n"),
    );
    w.sandbox()
        .fail_path("/api/v1/namespaces/default/configmaps/a", 500);
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "3"))],
        "three",
    );
    let out = w.push();
    assert!(
        out.all().contains("alert webhook unreachable"),
        "{}",
        out.all()
    );
    assert_eq!(
        w.last_record(&c)["result"],
        "failed",
        "the record says what happened to the deploy"
    );
}

#[test]
fn async_mode_queues_and_deploys() {
    let Some(w) = world() else { return };
    w.configure("", "[deploy]\nmode = \"async\"\n");
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "one",
    );
    let out = w.push();
    out.assert_ok();
    assert!(out.all().contains("deploy queued"), "{}", out.all());
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.pointer("prod").as_deref() != Some(c.as_str()) {
        assert!(Instant::now() < deadline, "the worker never deployed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(w.last_record(&c)["result"], "succeeded");
    // The worker removes its queue entry as its last act: wait for it, so the test leaves no
    // process behind.
    let queue = w.server.join("hookops/queue");
    while std::fs::read_dir(&queue)
        .map(|d| d.count() > 0)
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the worker never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<_> = std::fs::read_dir(w.server.join("hookops/logs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(logs.len(), 1);
    let log = std::fs::read_to_string(logs[0].path()).unwrap();
    assert!(log.contains("prod: deployed"), "{log}");
}

#[test]
fn doctor_passes_then_names_each_broken_part() {
    let Some(w) = world() else { return };
    let out = w.hookops(&["doctor"]);
    assert!(out.ok(), "{}", out.all());
    assert!(
        out.stdout.contains("deploying as kube-sandbox:admin"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("all checks passed"));
    assert!(
        out.stdout.contains("ok    git: git version "),
        "{}",
        out.stdout
    );
    // Unreadable key, missing terraform, unreachable cluster: each named, with a fix.
    let dead = w.dead_kubeconfig();
    w.write_server_config(&format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\n[signing]\nkey = \"{}\"\n[tools]\nterraform = \"/nonexistent/terraform\"\n",
        dead.display(),
        w.tmp.path().join("no-such-key").display()
    ));
    let out = w.hookops(&["doctor"]);
    out.assert_fail();
    let text = out.stdout;
    assert!(text.contains("FAIL  terraform"), "{text}");
    assert!(text.contains("FAIL  signing key"), "{text}");
    assert!(
        text.contains("FAIL  env prod: cluster unreachable"),
        "{text}"
    );
    assert!(text.contains("ok    kubectl"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("FAIL"))
            .all(|l| l.contains("(fix: ")),
        "{text}"
    );
    assert!(text.contains("3 problems found"), "{text}");
}

/// doctor finds the shim wherever the supported servers run it: GitLab's server-wide
/// `custom_hooks_dir`, read from the Gitaly config (`HOOKOPS_GITALY_CONFIG`), and Gitolite's
/// repo-specific hook links.
#[test]
fn doctor_finds_a_gitlab_server_wide_hook() {
    let Some(w) = world() else { return };
    std::fs::remove_file(w.server.join("hooks/post-receive")).unwrap();
    let global = w.tmp.path().join("gitaly-custom-hooks");
    std::fs::create_dir_all(global.join("post-receive.d")).unwrap();
    w.hookops(&["install", "--hooks-dir", global.to_str().unwrap()])
        .assert_ok();
    let gitaly = w.tmp.path().join("gitaly.toml");
    std::fs::write(
        &gitaly,
        format!(
            "bin_dir = \"/opt/gitaly\"\n\n[hooks]\ncustom_hooks_dir = \"{}\"\n",
            global.display()
        ),
    )
    .unwrap();
    let doctor = |gitaly_config: &Path| -> Run {
        w.base_command(hookops_bin())
            .current_dir(w.tmp.path())
            .env("HOOKOPS_GITALY_CONFIG", gitaly_config)
            .args(["--repo", w.server.to_str().unwrap(), "doctor"])
            .output()
            .expect("hookops doctor")
            .into()
    };
    let out = doctor(&gitaly);
    let want = format!(
        "ok    hooks: {}",
        global.join("post-receive.d/hookops").display()
    );
    assert!(out.stdout.contains(&want), "{}", out.all());
    let none = w.tmp.path().join("no-gitaly.toml");
    // Gitolite's repo-specific hooks: a `post-receive.h00-<name>` link its driver runs.
    let link = w.server.join("hooks/post-receive.h00-hookops");
    std::os::unix::fs::symlink(global.join("post-receive.d/hookops"), &link).unwrap();
    let out = doctor(&none);
    let want = format!("ok    hooks: {} installed", link.display());
    assert!(out.stdout.contains(&want), "{}", out.all());
    std::fs::remove_file(&link).unwrap();
    let out = doctor(&none);
    assert!(
        out.stdout
            .contains("FAIL  hooks: no hookops post-receive hook"),
        "{}",
        out.all()
    );
}
