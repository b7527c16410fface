//! Shared helpers for the kubectl-driven tests: a sandbox plus a private
//! kubeconfig and discovery cache, and a way to run the real kubectl.

#![allow(dead_code)] // each test binary uses a different subset

pub mod raw;

use kube_sandbox::Sandbox;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The kubectl to drive, or None (after printing why) when it is missing.
/// Under CI a missing kubectl is a failure, not a skip.
pub fn kubectl_binary(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{path} is missing and CI is set: the kubectl tests must run");
    }
    eprintln!("skipping: {path} not found (set CI to make this a failure)");
    None
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "kube-sandbox-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sandbox with its own kubeconfig and kubectl cache directory.
pub struct Cluster {
    pub sandbox: Sandbox,
    pub kubectl: PathBuf,
    pub dir: TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with kubectl's output unless it exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "kubectl failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Cluster {
    /// None when kubectl is missing outside CI (the test then returns early).
    pub fn start() -> Option<Cluster> {
        Cluster::with_kubectl("/usr/bin/kubectl")
    }

    pub fn with_kubectl(path: &str) -> Option<Cluster> {
        let kubectl = kubectl_binary(path)?;
        let sandbox = Sandbox::start().expect("start sandbox");
        let dir = TempDir::new();
        sandbox
            .write_kubeconfig(&dir.path().join("kubeconfig"), "sandbox")
            .expect("write kubeconfig");
        Some(Cluster {
            sandbox,
            kubectl,
            dir,
        })
    }

    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_stdin(args, "")
    }

    /// Runs kubectl with `stdin` piped in (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .expect("write kubectl stdin");
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().expect("wait for kubectl");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    pub fn apply(&self, yaml: &str) -> Run {
        self.kubectl_stdin(&["apply", "-f", "-"], yaml)
    }

    /// The stored Deployment default/web, which the rollout tests apply; it must exist.
    pub fn web(&self) -> serde_json::Value {
        self.sandbox
            .object("apps/v1", "Deployment", Some("default"), "web")
            .expect("stored")
    }
}

pub fn deployment(name: &str, image: &str, template_annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{template_annotations}}}
    spec:
      containers:
      - name: main
        image: {image}
        ports: [{{containerPort: 80}}]
"
    )
}
