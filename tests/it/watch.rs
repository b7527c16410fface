//! `hookops watch` against real remotes: the World's bare server as the upstream (over
//! `file://` and over a real sshd), a separate mirror with its own server config deploying to
//! the kube sandbox with the real kubectl, webhooks over real TCP, signals to the real process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::https_git::HttpsGitServer;
use crate::sshd::SshServer;
use crate::util::{configmap, hookops_bin, keygen, public_key, tools_present, Run, World};

/// A World whose server is a plain upstream: its own post-receive hook removed, so only the
/// watcher deploys.
fn world() -> Option<World> {
    if !tools_present() {
        return None;
    }
    let mut w = World::new();
    w.start_sandbox();
    // The upstream is a forge where hookops is not installed: no hook, and none of the
    // `receive.hideRefs` that `install` sets (the mirrors push their records to it).
    std::fs::remove_file(w.server.join("hooks/post-receive")).expect("removing the server hook");
    w.git(
        Some(&w.server),
        &["config", "--unset-all", "receive.hideRefs"],
    )
    .assert_ok();
    Some(w)
}

/// A mirror directory holding only its server config; `watch` creates the repository.
fn mirror(w: &World, name: &str, envs: &[&str], tables: &str) -> PathBuf {
    let dir = w.tmp.path().join(name);
    std::fs::create_dir_all(dir.join("hookops")).unwrap();
    let mut text = String::new();
    for env in envs {
        text.push_str(&format!(
            "[[environment]]\nname = \"{env}\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n\n",
            w.kubeconfig.display()
        ));
    }
    text.push_str(&format!(
        "[signing]\nkey = \"{}\"\n\n{tables}\n",
        w.key.display()
    ));
    std::fs::write(dir.join("hookops/config.toml"), text).unwrap();
    dir
}

/// Commits ConfigMap `a` (namespace default) with `value` as k8s/a.yaml and pushes it to the
/// upstream; the commit.
fn push_a(w: &World, value: &str, message: &str) -> String {
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), value))],
        message,
    );
    w.push().assert_ok();
    c
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn command(w: &World, mirror: &Path, args: &[&str]) -> Command {
    let mut c = hookops_on(w, mirror);
    c.arg("watch").args(args);
    c
}

/// hookops on `repo` (a mirror), with the test's environment.
fn hookops_on(w: &World, repo: &Path) -> Command {
    let mut c = w.base_command(hookops_bin());
    c.current_dir(w.tmp.path()).arg("--repo").arg(repo);
    c
}

fn watch_once(w: &World, mirror: &Path, url: &str) -> Run {
    command(w, mirror, &["--remote", url, "--once"])
        .output()
        .expect("hookops watch")
        .into()
}

/// Records (JSON payloads) on `rev` in `repo`.
fn records_in(w: &World, repo: &Path, rev: &str) -> Vec<serde_json::Value> {
    w.git(Some(repo), &["notes", "--ref=hookops", "show", rev])
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("record JSON"))
        .collect()
}

fn value(w: &World, name: &str) -> Option<String> {
    w.configmap("default", name)
        .map(|cm| cm["data"]["value"].as_str().unwrap_or_default().to_string())
}

fn eventually(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A watcher running in the background; its stdout and stderr are collected line by line.
struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    seen: mpsc::Receiver<String>,
}

impl Background {
    fn start(mut c: Command) -> Background {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookops watch");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let (lines, tx) = (Arc::clone(&lines), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Background { child, lines, seen }
    }

    /// The first line (from now on) containing `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}:\n{}",
                    self.output()
                ),
            }
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill");
    }

    /// SIGTERM, then the exit code and everything it printed.
    fn terminate(mut self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "watcher did not stop:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.output())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn file_remote_follows_commits_and_force_pushes() {
    let Some(w) = world() else { return };
    let m = mirror(&w, "mirror.git", &["prod"], "");
    let url = file_url(&w.server);
    let c1 = push_a(&w, "1", "a");
    let out = watch_once(&w, &m, &url);
    out.assert_ok();
    assert_eq!(value(&w, "a").as_deref(), Some("1"), "{}", out.all());
    assert_eq!(
        records_in(&w, &m, &c1).last().unwrap()["result"],
        "succeeded"
    );

    let c2 = w.commit(
        &[("k8s/b.yaml", &configmap("b", Some("default"), "1"))],
        "b",
    );
    w.push().assert_ok();
    watch_once(&w, &m, &url).assert_ok();
    assert!(value(&w, "b").is_some());
    assert_eq!(records_in(&w, &m, &c2).last().unwrap()["from"], c1.as_str());

    // Upstream drops commit b: its object is pruned, the replacement applied.
    w.in_clone(&["reset", "-q", "--hard", &c1]).assert_ok();
    let c3 = w.commit(
        &[("k8s/c.yaml", &configmap("c", Some("default"), "1"))],
        "c",
    );
    w.push_args(&["-f", "origin", "HEAD:main"]).assert_ok();
    let out = watch_once(&w, &m, &url);
    out.assert_ok();
    assert!(value(&w, "b").is_none(), "b was not pruned: {}", out.all());
    assert!(value(&w, "c").is_some());
    let rec = records_in(&w, &m, &c3).pop().unwrap();
    assert_eq!(
        rec["from"],
        c2.as_str(),
        "diffed from the deployed pointer: {rec}"
    );
    assert_eq!(rec["targets"][0]["pruned"], 1, "{rec}");

    // Nothing new: exit 0 and no new record.
    let out = watch_once(&w, &m, &url);
    out.assert_ok();
    assert_eq!(records_in(&w, &m, &c3).len(), 1, "{}", out.all());
    assert!(!out.all().contains("deploying"), "{}", out.all());
}

#[test]
fn ssh_remote_fetches_deploys_and_pushes_records_back() {
    let Some(w) = world() else { return };
    let Some(sshd) = SshServer::start(w.tmp.path()) else {
        return;
    };
    let m = mirror(&w, "mirror.git", &["prod"], &sshd.sync_table(true));
    let url = sshd.url(&w.server);
    let c = push_a(&w, "ssh", "a");
    let out = watch_once(&w, &m, &url);
    assert!(out.ok(), "{}\nsshd log:\n{}", out.all(), sshd.log_text());
    assert_eq!(value(&w, "a").as_deref(), Some("ssh"));
    // The record and the pointer reached the upstream.
    assert_eq!(w.last_record(&c)["result"], "succeeded", "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    assert!(sshd.log_text().contains("Accepted publickey for root"));
}

/// An ssh-agent holding `key`, stopped on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let agent = Agent { child, socket };
        eventually("the ssh-agent socket", Duration::from_secs(10), || {
            agent.socket.exists()
        });
        let added = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()
            .expect("ssh-add");
        assert!(
            added.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_agent_keys_are_used_without_a_configured_key() {
    let Some(w) = world() else { return };
    let Some(sshd) = SshServer::start(w.tmp.path()) else {
        return;
    };
    if !crate::util::require("ssh-agent") {
        return;
    }
    let agent = Agent::start(w.tmp.path(), &sshd.client_key);
    let table = format!("[sync]\nknown_hosts = \"{}\"\n", sshd.known_hosts.display());
    let m = mirror(&w, "mirror.git", &["prod"], &table);
    push_a(&w, "agent", "a");
    let url = sshd.url(&w.server);
    let without: Run = command(&w, &m, &["--remote", &url, "--once"])
        .output()
        .unwrap()
        .into();
    without.assert_fail();
    assert!(without.stderr.contains("ssh-agent"), "{}", without.all());
    let out: Run = command(&w, &m, &["--remote", &url, "--once"])
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap()
        .into();
    assert!(out.ok(), "{}\nsshd log:\n{}", out.all(), sshd.log_text());
    assert_eq!(value(&w, "a").as_deref(), Some("agent"));
}

/// Whether `repo` has `refs/heads/main` (a refused connection fetches nothing).
fn has_main(w: &World, repo: &Path) -> bool {
    w.git(
        Some(repo),
        &["rev-parse", "--verify", "-q", "refs/heads/main"],
    )
    .ok()
}

#[test]
fn ssh_host_keys_are_checked() {
    let Some(w) = world() else { return };
    let Some(sshd) = SshServer::start(w.tmp.path()) else {
        return;
    };
    let url = sshd.url(&w.server);
    push_a(&w, "1", "a");
    let host = format!("[127.0.0.1]:{}", sshd.port);
    let table = |known_hosts: &Path| {
        format!(
            "[sync]\nssh_key = \"{}\"\nknown_hosts = \"{}\"\n",
            sshd.client_key.display(),
            known_hosts.display()
        )
    };
    let refused = |name: &str, known_hosts: &Path, expected: &str| {
        let m = mirror(&w, name, &["prod"], &table(known_hosts));
        let out = watch_once(&w, &m, &url);
        out.assert_fail();
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("hookops: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{}", out.all());
        assert!(
            errors[0].contains(&format!("fetching from {url}: {expected}")),
            "{}",
            out.all()
        );
        assert!(!has_main(&w, &m), "{name}: fetched from a refused host");
        assert!(value(&w, "a").is_none(), "{name}: deployed");
        errors[0].to_string()
    };

    let empty = w.tmp.path().join("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    refused(
        "unknown.git",
        &empty,
        &format!("host {host} is not in known_hosts {}", empty.display()),
    );

    // A different key for the host: refused, naming the key the server offered.
    let scanned = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let listed = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&sshd.known_hosts)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let real_fp = listed.split_whitespace().nth(1).expect("a fingerprint");
    assert!(real_fp.starts_with("SHA256:"), "{listed}");
    let other = w.tmp.path().join("other_host_key");
    keygen(&other, "ed25519", "");
    let impostor = w.tmp.path().join("known_hosts.impostor");
    std::fs::write(&impostor, format!("{host} {}\n", public_key(&other))).unwrap();
    let error = refused(
        "mismatch.git",
        &impostor,
        &format!(
            "host key of {host} does NOT match known_hosts {}",
            impostor.display()
        ),
    );
    assert!(error.contains(&format!("offered {real_fp}")), "{error}");

    // The real key, listed and revoked.
    let revoked = w.tmp.path().join("known_hosts.revoked");
    std::fs::write(&revoked, format!("@revoked {scanned}{scanned}")).unwrap();
    let error = refused("revoked.git", &revoked, &format!("host key of {host} ("));
    assert!(
        error.contains(&format!("is marked @revoked in {}", revoked.display())),
        "{error}"
    );

    // Hashed host names (`HashKnownHosts yes`) and a host CA are what OpenSSH reads.
    let hashed = w.tmp.path().join("known_hosts.hashed");
    std::fs::write(&hashed, &scanned).unwrap();
    let hashing = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(hashing.status.success());
    assert!(!std::fs::read_to_string(&hashed)
        .unwrap()
        .contains("127.0.0.1"));
    let ca = w.tmp.path().join("known_hosts.ca");
    let ca_key = std::fs::read_to_string(&sshd.host_ca).unwrap();
    std::fs::write(&ca, format!("@cert-authority {host} {ca_key}")).unwrap();
    for (name, known_hosts) in [("hashed.git", &hashed), ("ca.git", &ca)] {
        let m = mirror(&w, name, &["prod"], &table(known_hosts));
        let out = watch_once(&w, &m, &url);
        assert!(
            out.ok(),
            "{name}: {}\nsshd log:\n{}",
            out.all(),
            sshd.log_text()
        );
        assert!(has_main(&w, &m), "{name}");
    }
    assert_eq!(value(&w, "a").as_deref(), Some("1"));
}

#[test]
fn without_git_the_error_says_so() {
    let w = World::new();
    let m = mirror(&w, "mirror.git", &["prod"], "");
    let out: Run = command(&w, &m, &["--remote", &file_url(&w.server), "--once"])
        .env("PATH", w.tmp.path().join("no-bin"))
        .output()
        .expect("hookops watch")
        .into();
    out.assert_fail();
    assert_eq!(
        out.stderr.trim(),
        "hookops: error: git not found on PATH: hookops fetches and pushes with the git command",
        "{}",
        out.all()
    );
}

#[test]
fn two_deployers_pushing_to_one_ssh_remote_keep_both_records() {
    let Some(w) = world() else { return };
    let Some(sshd) = SshServer::start(w.tmp.path()) else {
        return;
    };
    let url = sshd.url(&w.server);
    let c = push_a(&w, "1", "a");
    let east = mirror(&w, "east.git", &["east"], &sshd.sync_table(true));
    let west = mirror(&w, "west.git", &["west"], &sshd.sync_table(true));
    // At the same time, so that one of them finds the remote notes moved under it.
    let children: Vec<Child> = [&east, &west]
        .iter()
        .map(|m| {
            command(&w, m, &["--remote", &url, "--once"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out: Run = child.wait_with_output().unwrap().into();
        assert!(out.ok(), "{}\nsshd log:\n{}", out.all(), sshd.log_text());
    }
    let envs: Vec<String> = w
        .records(&c)
        .iter()
        .map(|r| r["env"].as_str().unwrap().to_string())
        .collect();
    assert!(
        envs.contains(&"east".to_string()) && envs.contains(&"west".to_string()),
        "{envs:?}"
    );
    assert_eq!(w.pointer("east").as_deref(), Some(c.as_str()));
    assert_eq!(w.pointer("west").as_deref(), Some(c.as_str()));
    // A later deployer sees both records too: its sync merged them into its mirror.
    let again = watch_once(&w, &east, &url);
    again.assert_ok();
}

/// `[sync] push` shares the records of every command that writes one, not only of hooks and
/// the watcher: a rollback and a replay on a mirror reach the remote too.
#[test]
fn rollback_and_replay_share_their_records() {
    let Some(w) = world() else { return };
    let tables = format!(
        "[sync]\npush = true\nremote = \"{}\"\n",
        file_url(&w.server)
    );
    let m = mirror(&w, "mirror-sync", &["prod"], &tables);
    let url = file_url(&w.server);
    let deploy = |v: &str| {
        let c = push_a(&w, v, v);
        watch_once(&w, &m, &url).assert_ok();
        c
    };
    let (c1, c2) = (deploy("1"), deploy("2"));
    let run = |args: &[&str]| -> Run {
        hookops_on(&w, &m)
            .args(args)
            .output()
            .expect("hookops")
            .into()
    };
    let actions = |rev: &str| -> Vec<String> {
        w.records(rev)
            .iter()
            .map(|r| r["action"].as_str().unwrap_or("deploy").to_string())
            .collect()
    };
    assert_eq!(actions(&c2), vec!["deploy"]);

    run(&["rollback", "--env", "prod"]).assert_ok();
    assert_eq!(value(&w, "a").as_deref(), Some("1"));
    assert!(
        actions(&c1).contains(&"rollback".to_string()),
        "{:?}",
        actions(&c1)
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(c1.as_str()));

    run(&["replay", "main"]).assert_ok();
    assert_eq!(value(&w, "a").as_deref(), Some("2"));
    assert_eq!(actions(&c2), vec!["deploy", "deploy"]);
    assert_eq!(w.pointer("prod").as_deref(), Some(c2.as_str()));
}

#[test]
fn two_clones_deploying_by_post_merge_sync_records_over_ssh() {
    let Some(w) = world() else { return };
    let Some(sshd) = SshServer::start(w.tmp.path()) else {
        return;
    };
    let url = sshd.url(&w.server);
    push_a(&w, "1", "one");
    let clones: Vec<PathBuf> = ["east", "west"]
        .iter()
        .map(|env| {
            let dir = w.tmp.path().join(env);
            w.git(None, &["clone", "-q", w.server.to_str().unwrap(), dir.to_str().unwrap()])
                .assert_ok();
            w.hookops(&["install", dir.to_str().unwrap()]).assert_ok();
            std::fs::create_dir_all(dir.join(".git/hookops")).unwrap();
            std::fs::write(
                dir.join(".git/hookops/config.toml"),
                format!(
                    "[[environment]]\nname = \"{env}\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n\n{}remote = \"{url}\"\n",
                    w.kubeconfig.display(),
                    sshd.sync_table(true)
                ),
            )
            .unwrap();
            dir
        })
        .collect();
    let c = push_a(&w, "2", "two");
    for dir in &clones {
        let out = w.git(Some(dir), &["pull", "--no-rebase", "origin", "main"]);
        out.assert_ok();
        assert!(out.all().contains("deployed"), "{}", out.all());
        assert!(
            !out.all().contains("sync:"),
            "{}\nsshd log:\n{}",
            out.all(),
            sshd.log_text()
        );
    }
    let envs: Vec<String> = w
        .records(&c)
        .iter()
        .map(|r| r["env"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(envs.len(), 2, "{envs:?}");
    assert!(
        envs.contains(&"east".to_string()) && envs.contains(&"west".to_string()),
        "{envs:?}"
    );
    assert_eq!(w.pointer("west").as_deref(), Some(c.as_str()));

    // A sync that fails is one line and a failed hook, and the deploy stands.
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let c3 = push_a(&w, "3", "three");
    let out = w.git(Some(&clones[0]), &["pull", "--no-rebase", "origin", "main"]);
    let all = out.all();
    let sync_lines: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("hookops: sync: "))
        .collect();
    assert_eq!(sync_lines.len(), 1, "{}", out.all());
    assert!(
        sync_lines[0].contains("not in known_hosts"),
        "{}",
        out.all()
    );
    assert_eq!(value(&w, "a").as_deref(), Some("3"));
    assert_eq!(
        w.git(
            Some(&clones[0]),
            &["rev-parse", "refs/hookops/deployed/east"]
        )
        .stdout
        .trim(),
        c3
    );
}

#[test]
fn unreachable_remote_is_reported_once_and_followed_when_back() {
    let Some(w) = world() else { return };
    let m = mirror(&w, "mirror.git", &["prod"], "");
    let url = file_url(&w.server);
    push_a(&w, "1", "a");
    let bg = Background::start(command(&w, &m, &["--remote", &url, "--interval", "200ms"]));
    bg.wait_for("following refs/heads/main", Duration::from_secs(60));
    assert_eq!(value(&w, "a").as_deref(), Some("1"));

    let away = w.tmp.path().join("server.away");
    std::fs::rename(&w.server, &away).unwrap();
    bg.wait_for("unreachable", Duration::from_secs(10));
    let c2 = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "a=2",
    );
    w.in_clone(&["push", "-q", away.to_str().unwrap(), "HEAD:main"])
        .assert_ok();
    // Several failed polls at the capped backoff (2s for a 200ms interval).
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::rename(&away, &w.server).unwrap();
    bg.wait_for("reachable again", Duration::from_secs(10));
    eventually("the new commit deployed", Duration::from_secs(60), || {
        value(&w, "a").as_deref() == Some("2")
    });
    let (code, out) = bg.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("unreachable").count(), 1, "{out}");
    assert_eq!(out.matches("reachable again").count(), 1, "{out}");
    assert_eq!(
        records_in(&w, &m, &c2).last().unwrap()["result"],
        "succeeded"
    );
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn https_remote_with_a_token() {
    let Some(w) = world() else { return };
    let token = "hookops-test-token-5f2c9a71";
    let token_file = w.tmp.path().join("git-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let Some(server) = HttpsGitServer::start(w.tmp.path(), w.tmp.path(), &token_file, false) else {
        return;
    };
    // git trusts the test CA through the user's git config, as an operator would set it up.
    let gitconfig = w.home.join(".gitconfig");
    let mut config = std::fs::read_to_string(&gitconfig).unwrap();
    config.push_str(&format!(
        "[http]\n\tsslCAInfo = {}\n",
        server.cert.display()
    ));
    std::fs::write(&gitconfig, config).unwrap();
    let url = server.url("server.git");
    let c = push_a(&w, "https", "a");
    let token_table = |file: &Path, push: bool| {
        format!(
            "[sync]\npush = {push}\ntoken_file = \"{}\"\n",
            file.display()
        )
    };
    let one_error = |out: &Run| {
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("hookops: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", out.all());
        errors[0].to_string()
    };

    // No token: refused by the server, and said so.
    let m = mirror(&w, "none.git", &["prod"], "");
    let out = watch_once(&w, &m, &url);
    out.assert_fail();
    let error = one_error(&out);
    assert!(
        error.contains(&format!(
            "fetching from {url}: the remote asks for credentials: set [sync] token_file or \
             HOOKOPS_GIT_TOKEN"
        )),
        "{error}"
    );

    // A wrong token: one line, which shows neither token.
    let wrong = "wrong-token-0d1e77aa";
    let wrong_file = w.tmp.path().join("wrong-token");
    std::fs::write(&wrong_file, wrong).unwrap();
    let m = mirror(&w, "wrong.git", &["prod"], &token_table(&wrong_file, true));
    let out = watch_once(&w, &m, &url);
    out.assert_fail();
    let error = one_error(&out);
    assert!(
        error.contains(&format!("fetching from {url}: the token was refused")),
        "{error}"
    );
    assert!(
        !out.all().contains(wrong) && !out.all().contains(token),
        "{}",
        out.all()
    );
    assert!(value(&w, "a").is_none(), "deployed without the token");
    assert!(server
        .log_text()
        .contains("401 auth=bad user=x-access-token"));

    // The right token: fetched, deployed, and the record pushed back, with git's commands
    // logged (RUST_LOG=debug) and the token in none of it.
    let m = mirror(&w, "mirror.git", &["prod"], &token_table(&token_file, true));
    let out: Run = command(&w, &m, &["--remote", &url, "--once"])
        .env("RUST_LOG", "debug")
        .output()
        .expect("hookops watch")
        .into();
    assert!(
        out.ok(),
        "{}\nserver log:\n{}",
        out.all(),
        server.log_text()
    );
    assert_eq!(value(&w, "a").as_deref(), Some("https"));
    assert_eq!(w.last_record(&c)["result"], "succeeded", "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    assert!(out.stderr.contains("running git push"), "{}", out.all());
    assert!(!out.all().contains(token), "{}", out.all());
    let log = server.log_text();
    assert!(
        log.contains("POST /server.git/git-receive-pack 200 auth=ok user=x-access-token"),
        "{log}"
    );
    for dir in [&m, &w.server] {
        let leaked = files_containing(dir, token);
        assert!(leaked.is_empty(), "the token is in {leaked:?}");
    }

    // Plain http: the token is never sent, and the refusal says why.
    let Some(plain) = HttpsGitServer::start(w.tmp.path(), w.tmp.path(), &token_file, true) else {
        return;
    };
    let m = mirror(&w, "plain.git", &["prod"], &token_table(&token_file, false));
    let out = watch_once(&w, &m, &plain.url("server.git"));
    out.assert_fail();
    let error = one_error(&out);
    assert!(
        error.contains(
            "asks for credentials over plain http; hookops only sends a token over https"
        ),
        "{error}"
    );
    let log = plain.log_text();
    assert!(
        !log.is_empty() && log.lines().all(|l| l.contains("auth=none")),
        "{log}"
    );
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One raw HTTP/1.1 request; the response status.
fn http(addr: &str, method: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect to the webhook listener");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} /hooks/push HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {resp:?}"))
}

#[test]
fn webhooks_trigger_a_fetch_only_when_signed() {
    let Some(w) = world() else { return };
    let m = mirror(&w, "mirror.git", &["prod"], "");
    let url = file_url(&w.server);
    let secret = "s3cr3t-hook";
    let secret_file = w.tmp.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    push_a(&w, "0", "a");
    let bg = Background::start(command(
        &w,
        &m,
        &[
            "--remote",
            &url,
            "--interval",
            "1h",
            "--listen",
            "127.0.0.1:0",
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
    ));
    let line = bg.wait_for("listening on", Duration::from_secs(30));
    let addr = line.rsplit(' ').next().unwrap().to_string();
    bg.wait_for("following", Duration::from_secs(60));
    assert_eq!(value(&w, "a").as_deref(), Some("0"));

    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let good = hmac_hex(secret.as_bytes(), &body);
    let bad = hmac_hex(b"wrong", &body);
    type Headers = Vec<(&'static str, String)>;
    let forges: [(&str, Headers, Headers); 3] = [
        (
            "github",
            vec![
                ("X-GitHub-Event", "push".into()),
                ("X-Hub-Signature-256", format!("sha256={good}")),
            ],
            vec![
                ("X-GitHub-Event", "push".into()),
                ("X-Hub-Signature-256", format!("sha256={bad}")),
            ],
        ),
        (
            "gitea",
            vec![
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Signature", good.clone()),
            ],
            vec![
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Signature", bad.clone()),
            ],
        ),
        (
            "gitlab",
            vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Token", secret.into()),
            ],
            vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Token", "guess".into()),
            ],
        ),
    ];
    for (i, (forge, good_headers, bad_headers)) in forges.iter().enumerate() {
        let v = (i + 1).to_string();
        w.commit(
            &[("k8s/a.yaml", &configmap("a", Some("default"), &v))],
            forge,
        );
        w.push().assert_ok();
        assert_eq!(http(&addr, "POST", bad_headers, &body), 401, "{forge}");
        assert_eq!(http(&addr, "POST", &[], &body), 401, "{forge}: unsigned");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            value(&w, "a").as_deref(),
            Some(i.to_string().as_str()),
            "{forge}: deployed without a valid signature"
        );
        let sent = Instant::now();
        assert_eq!(http(&addr, "POST", good_headers, &body), 202, "{forge}");
        eventually(
            &format!("{forge} webhook deploy"),
            Duration::from_secs(30),
            || value(&w, "a").as_deref() == Some(v.as_str()),
        );
        assert!(sent.elapsed() < Duration::from_secs(30));
    }
    // Not a webhook: wrong method, oversized body (refused from the headers alone).
    assert_eq!(http(&addr, "GET", &[], b""), 405);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let (code, out) = bg.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains(secret),
        "the secret leaked into the output:\n{out}"
    );
}

#[test]
fn sigterm_lets_the_running_deploy_finish() {
    let Some(w) = world() else { return };
    let m = mirror(&w, "mirror.git", &["prod"], "");
    let url = file_url(&w.server);
    w.sandbox().stall_path(
        "/api/v1/namespaces/default/configmaps/slow",
        Duration::from_secs(3),
    );
    let c = w.commit(
        &[("k8s/slow.yaml", &configmap("slow", Some("default"), "1"))],
        "slow",
    );
    w.push().assert_ok();
    let bg = Background::start(command(&w, &m, &["--remote", &url, "--interval", "200ms"]));
    bg.wait_for("deploying", Duration::from_secs(60));
    let signalled = Instant::now();
    let (code, out) = bg.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before the stalled apply finished:\n{out}"
    );
    assert_eq!(value(&w, "slow").as_deref(), Some("1"), "{out}");
    assert_eq!(
        records_in(&w, &m, &c).last().unwrap()["result"],
        "succeeded",
        "{out}"
    );
    assert_eq!(
        w.git(Some(&m), &["rev-parse", "refs/hookops/deployed/prod"])
            .stdout
            .trim(),
        c
    );
}

#[test]
fn a_second_watcher_on_the_same_mirror_refuses_to_start() {
    let Some(w) = world() else { return };
    let m = mirror(&w, "mirror.git", &["prod"], "");
    let url = file_url(&w.server);
    push_a(&w, "1", "a");
    let bg = Background::start(command(&w, &m, &["--remote", &url, "--interval", "1h"]));
    bg.wait_for("following", Duration::from_secs(60));
    let out = watch_once(&w, &m, &url);
    out.assert_fail();
    assert!(
        out.stderr.contains(&format!(
            "another hookops watch is running on {}",
            m.display()
        )),
        "{}",
        out.all()
    );
    let (code, _) = bg.terminate();
    assert_eq!(code, Some(0));
}
