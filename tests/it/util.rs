//! The shared harness: a scratch server (bare repository with the real hook installed), a clone
//! to push from, the kube sandbox on loopback, and the real `git`, `kubectl`, `terraform` and
//! `ssh-keygen`, isolated from the user's configuration. Also the one way every module makes
//! an SSH key, picks a free port and writes an executable script (the one sshd is `crate::sshd`).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kube_sandbox::Sandbox;
use tempfile::TempDir;

pub fn hookops_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookops")
}

/// Where `tool` is on PATH (what `command -v` says), if it is.
pub fn which(tool: &str) -> Option<String> {
    let out = run(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
    out.ok().then(|| out.stdout.trim().to_string())
}

/// A tool the test needs: CI fails without it, a local run skips with a reason.
pub fn require(tool: &str) -> bool {
    require_that(tool, which(tool).is_some())
}

/// Like [`require`], for a need that is not a plain command name.
pub fn require_that(what: &str, present: bool) -> bool {
    if !present {
        if std::env::var_os("CI").is_some() {
            panic!("{what} is required by this test (CI is set, so it fails instead of skipping)");
        }
        eprintln!("SKIPPED: {what} is not available");
    }
    present
}

/// Root, for the tests whose sshd logs keys in as root: a non-root sshd can only log in as its
/// own user, and their URLs name root.
pub fn require_root() -> bool {
    require_that("root (for sshd)", unsafe { libc::geteuid() } == 0)
}

/// Runs `cmd` with stdin from /dev/null and collects its exit status and output.
pub fn run(cmd: &mut Command) -> Run {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program()))
        .into()
}

/// `ssh-keygen -t KIND` with `passphrase` ("" for none): the private key at `path`, the public
/// key at `path.pub`, commented with the file name.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let comment = path.file_name().unwrap().to_string_lossy().into_owned();
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", &comment, "-f"])
        .arg(path));
    assert!(out.ok(), "ssh-keygen -t {kind}: {}", out.all());
}

/// The public key line (`path.pub`, without its newline) of the key pair `keygen` made at `key`.
pub fn public_key(key: &Path) -> String {
    let mut path = key.as_os_str().to_owned();
    path.push(".pub");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display()));
    text.trim_end().to_string()
}

/// A port on 127.0.0.1 that was free when asked. Someone else may take it before the caller
/// binds it: a caller that starts a server on it retries with a fresh one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Writes an executable (mode 0755) file, creating its directory.
pub fn write_script(path: &Path, text: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "command failed ({:?}):\n{}",
            self.code,
            self.all()
        );
        self
    }

    #[track_caller]
    pub fn assert_fail(&self) -> &Self {
        assert!(
            !self.ok(),
            "command unexpectedly succeeded:\n{}",
            self.all()
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` with `input` on its stdin and collects its exit status and output.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program()));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    child
        .wait_with_output()
        .expect("waiting for the child")
        .into()
}

/// One test's world.
pub struct World {
    pub tmp: TempDir,
    pub home: PathBuf,
    pub server: PathBuf,
    pub clone: PathBuf,
    pub sandbox: Option<Sandbox>,
    pub kubeconfig: PathBuf,
    pub key: PathBuf,
    pub allowed_signers: PathBuf,
}

impl World {
    /// A bare server repository with the hook installed and a clone of it.
    pub fn new() -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = Test Pusher\n\temail = pusher@example.test\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        )
        .unwrap();
        let server = tmp.path().join("server.git");
        let clone = tmp.path().join("work");
        let mut w = World {
            kubeconfig: tmp.path().join("kubeconfig"),
            key: tmp.path().join("signing_ed25519"),
            allowed_signers: tmp.path().join("allowed_signers"),
            tmp,
            home,
            server,
            clone,
            sandbox: None,
        };
        w.git(
            None,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                w.server.to_str().unwrap(),
            ],
        )
        .assert_ok();
        w.git(
            None,
            &[
                "clone",
                "-q",
                w.server.to_str().unwrap(),
                w.clone.to_str().unwrap(),
            ],
        )
        .assert_ok();
        w.hookops(&["install"]).assert_ok();
        w.sign_key();
        w
    }

    fn sign_key(&mut self) {
        keygen(&self.key, "ed25519", "");
        std::fs::write(
            &self.allowed_signers,
            format!(
                "deployer@test namespaces=\"hookops\" {}\n",
                public_key(&self.key)
            ),
        )
        .unwrap();
    }

    /// Starts the kube sandbox and writes a kubeconfig for it (context `sandbox`).
    pub fn start_sandbox(&mut self) -> &Sandbox {
        let sb = Sandbox::start().expect("kube sandbox");
        sb.write_kubeconfig(&self.kubeconfig, "sandbox").unwrap();
        self.sandbox = Some(sb);
        self.sandbox.as_ref().unwrap()
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("sandbox started")
    }

    /// A server config with one environment `prod` on `main`, the sandbox and the signing key,
    /// plus `extra` TOML (environment keys first, then tables).
    pub fn configure(&self, env_extra: &str, tables: &str) {
        let text = format!(
            "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n{env_extra}\n\n[signing]\nkey = \"{}\"\n\n{tables}\n",
            self.kubeconfig.display(),
            self.key.display()
        );
        self.write_server_config(&text);
    }

    pub fn write_server_config(&self, text: &str) {
        let dir = self.server.join("hookops");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }

    pub fn base_command(&self, program: &str) -> Command {
        let mut c =
            crate::isolated::command(program, &self.home, &self.tmp.path().join("kubecache"));
        c.env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
            .stdin(Stdio::null());
        c
    }

    pub fn git(&self, dir: Option<&Path>, args: &[&str]) -> Run {
        let mut c = self.base_command("git");
        c.current_dir(dir.unwrap_or(self.tmp.path()));
        run(c.args(args))
    }

    pub fn in_clone(&self, args: &[&str]) -> Run {
        self.git(Some(&self.clone.clone()), args)
    }

    /// `hookops --repo server.git ARGS`.
    pub fn hookops(&self, args: &[&str]) -> Run {
        let mut c = self.base_command(hookops_bin());
        c.current_dir(self.tmp.path())
            .arg("--repo")
            .arg(&self.server)
            .args(args);
        run(&mut c)
    }

    pub fn hookops_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut c = self.base_command(hookops_bin());
        c.current_dir(self.tmp.path())
            .arg("--repo")
            .arg(&self.server)
            .args(args);
        run_with_stdin(&mut c, input)
    }

    /// Stock `ssh-keygen -Y verify` (namespace `hookops`, TZ=UTC) of `payload`, fed on stdin
    /// as it was signed (no trailing newline), against the armored `signature`, for
    /// `principal` in `allowed_signers`; `at` is a `-Overify-time` (`YYYYMMDDhhmmssZ`).
    pub fn ssh_keygen_verify(
        &self,
        allowed_signers: &Path,
        principal: &str,
        payload: &str,
        signature: &str,
        at: Option<&str>,
    ) -> Run {
        let sig_path = self.tmp.path().join("record.sig");
        std::fs::write(&sig_path, format!("{}\n", signature.trim_end())).unwrap();
        let mut c = self.base_command("ssh-keygen");
        c.current_dir(self.tmp.path())
            .args(["-Y", "verify", "-f"])
            .arg(allowed_signers)
            .args(["-I", principal, "-n", "hookops", "-s"])
            .arg(&sig_path);
        if let Some(at) = at {
            c.arg(format!("-Overify-time={at}"));
        }
        run_with_stdin(&mut c, payload)
    }

    /// Writes files in the clone (creating directories) and commits them.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, text) in files {
            let p = self.clone.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        self.in_clone(&["add", "-A"]).assert_ok();
        self.in_clone(&["commit", "-q", "--allow-empty", "-m", message])
            .assert_ok();
        self.head()
    }

    pub fn remove(&self, paths: &[&str], message: &str) -> String {
        for p in paths {
            self.in_clone(&["rm", "-q", "-r", p]).assert_ok();
        }
        self.in_clone(&["add", "-A"]).assert_ok();
        self.in_clone(&["commit", "-q", "-m", message]).assert_ok();
        self.head()
    }

    pub fn head(&self) -> String {
        self.in_clone(&["rev-parse", "HEAD"])
            .stdout
            .trim()
            .to_string()
    }

    /// `git push origin main` from the clone: the hook's output comes back as `remote:` lines.
    pub fn push(&self) -> Run {
        self.in_clone(&["push", "-q", "origin", "HEAD:main"])
    }

    pub fn push_args(&self, args: &[&str]) -> Run {
        let mut all = vec!["push", "-q"];
        all.extend_from_slice(args);
        self.in_clone(&all)
    }

    /// The note on a commit in the server repository.
    pub fn note(&self, rev: &str) -> String {
        self.git(
            Some(&self.server.clone()),
            &["notes", "--ref=hookops", "show", rev],
        )
        .stdout
    }

    /// Replaces the note on `commit` in the server repository wholesale, as someone with push
    /// access to the notes ref could.
    pub fn replace_note(&self, commit: &str, text: &str) {
        let path = self.tmp.path().join("note.txt");
        std::fs::write(&path, text).unwrap();
        self.git(
            Some(&self.server),
            &[
                "notes",
                "--ref=hookops",
                "add",
                "-f",
                "-F",
                path.to_str().unwrap(),
                commit,
            ],
        )
        .assert_ok();
    }

    /// Parsed JSON payloads of the records on a commit, oldest first.
    pub fn records(&self, rev: &str) -> Vec<serde_json::Value> {
        self.note(rev)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("record JSON"))
            .collect()
    }

    /// The newest record on a commit in another repository (a deploying clone).
    pub fn last_record_in(&self, repo: &Path, rev: &str) -> serde_json::Value {
        let note = self
            .git(Some(repo), &["notes", "--ref=hookops", "show", rev])
            .stdout;
        let line = note.lines().rfind(|l| l.starts_with('{')).expect("record");
        serde_json::from_str(line).expect("record JSON")
    }

    pub fn last_record(&self, rev: &str) -> serde_json::Value {
        self.records(rev)
            .pop()
            .unwrap_or_else(|| panic!("no record on {rev}"))
    }

    pub fn pointer(&self, env: &str) -> Option<String> {
        let r = self.git(
            Some(&self.server.clone()),
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/hookops/deployed/{env}"),
            ],
        );
        r.ok().then(|| r.stdout.trim().to_string())
    }

    /// A kubeconfig like the sandbox's, pointing at a loopback port nobody listens on.
    pub fn dead_kubeconfig(&self) -> PathBuf {
        let port = free_port();
        let dead = self.tmp.path().join("dead-kubeconfig");
        let live = std::fs::read_to_string(&self.kubeconfig).unwrap();
        std::fs::write(
            &dead,
            live.replace(&self.sandbox().port().to_string(), &port.to_string()),
        )
        .unwrap();
        dead
    }

    pub fn configmap(&self, ns: &str, name: &str) -> Option<serde_json::Value> {
        self.sandbox().object("v1", "ConfigMap", Some(ns), name)
    }

    /// Write requests (anything but GET) the sandbox saw since the last clear.
    pub fn writes(&self) -> Vec<String> {
        self.sandbox()
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

pub fn configmap(name: &str, ns: Option<&str>, value: &str) -> String {
    let ns = ns
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{ns}data:\n  value: \"{value}\"\n")
}

pub fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A pod annotation that makes the kube sandbox and the test cluster's fake kubelet fail the
/// rollout of the Deployment it is on.
pub const FAIL_ROLLOUT: &str = "        kube-sandbox.io/fail-rollout: \"true\"\n";

pub fn deployment(name: &str, ns: &str, image: &str, annotations: &str) -> String {
    deployment_with(name, ns, image, 1, "", annotations)
}

/// A Deployment of `replicas`, with `extra_spec` lines in its spec and `annotations` lines on
/// its pods.
pub fn deployment_with(
    name: &str,
    ns: &str,
    image: &str,
    replicas: u32,
    extra_spec: &str,
    annotations: &str,
) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n{extra_spec}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n      annotations:\n        x: \"y\"\n{annotations}    spec:\n      containers:\n      - name: app\n        image: {image}\n"
    )
}

/// The string at `pointer` in `v`, or "".
pub fn str_at<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(|x| x.as_str()).unwrap_or("")
}

/// The record's reason and its targets' reasons, joined.
pub fn reasons(rec: &serde_json::Value) -> String {
    let mut all = vec![rec["reason"].as_str().unwrap_or("").to_string()];
    if let Some(targets) = rec["targets"].as_array() {
        for t in targets {
            all.push(t["reason"].as_str().unwrap_or("").to_string());
        }
    }
    all.join(" | ")
}

/// A Terraform root with only built-ins: a `terraform_data` whose input is `value`.
pub fn terraform_root(value: &str) -> String {
    format!(
        "terraform {{\n  required_version = \">= 1.4\"\n}}\n\nresource \"terraform_data\" \"marker\" {{\n  input = \"{value}\"\n}}\n\noutput \"marker\" {{\n  value = terraform_data.marker.output\n}}\n"
    )
}

/// A world with the kube sandbox and environment `prod` (plus `env_extra` keys), or None when
/// a required tool is missing (a local run skips; CI fails in `require`).
pub fn sandboxed(env_extra: &str) -> Option<World> {
    if !tools_present() {
        return None;
    }
    let mut w = World::new();
    w.start_sandbox();
    w.configure(env_extra, "");
    Some(w)
}

pub fn tools_present() -> bool {
    require("kubectl") && require("terraform") && require("ssh-keygen")
}

/// A target's entry in a record.
pub fn target<'a>(rec: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {rec}"))
}
