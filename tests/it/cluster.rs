//! The real Kubernetes API server for tests (testenv/, docs/test-cluster.md): kube-apiserver,
//! etcd, the workload controllers and a fake kubelet in one Go process, started lazily once per
//! test binary and shared by its tests. Each test works in its own namespaces (`unique`).
//!
//! The process is started with `--exit-with-stdin` and its stdin is kept in a static: when the
//! test binary exits, the pipe closes and the cluster stops by itself.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::util::{which, World};

pub struct Cluster {
    dir: PathBuf,
    server: String,
    pid: u32,
    counter: AtomicU64,
    /// Kept open for the life of the test process; its EOF stops the cluster.
    _stdin: Mutex<ChildStdin>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The shared cluster, started by the first caller. `None` (with a printed `SKIPPED:` reason)
/// when it cannot be built or started locally; under CI=true that panics instead.
pub fn shared() -> Option<&'static Cluster> {
    match CLUSTER.get_or_init(start) {
        Ok(c) => Some(c),
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("the test cluster is required (CI is set): {reason}");
            }
            eprintln!("SKIPPED: test cluster unavailable: {reason}");
            None
        }
    }
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/test-cluster.sh build` (a no-op when up to date), or the binary an earlier build
/// left when Go is not installed.
fn binary() -> Result<PathBuf, String> {
    let cached = repo_root().join("target/testenv/hookops-testenv");
    if which("go").is_none() {
        if cached.is_file() {
            return Ok(cached);
        }
        return Err("go is not installed (it builds testenv/)".into());
    }
    if which("kubectl").is_none() {
        return Err("kubectl is not installed".into());
    }
    let out = Command::new(repo_root().join("scripts/test-cluster.sh"))
        .arg("build")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("scripts/test-cluster.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/test-cluster.sh build failed ({})",
            out.status
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(PathBuf::from(path))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run directories of earlier test processes whose cluster has stopped (no `pid` file, or a
/// pid that is gone).
fn clean_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !e.file_name().to_string_lossy().starts_with("testenv-") {
            continue;
        }
        let alive = std::fs::read_to_string(p.join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| {
                // Without /proc (not Linux), a pid file alone counts as alive.
                !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
            });
        if !alive {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

fn start() -> Result<Cluster, String> {
    let bin = binary()?;
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    clean_stale(&base);
    let dir = base.join(format!("testenv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let started = std::time::Instant::now();
    let mut child = Command::new(&bin)
        .arg("--dir")
        .arg(&dir)
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("testenv ready ") {
                let _ = tx.send(Ok(url.trim().to_string()));
            }
        }
        let _ = tx.send(Err("hookops-testenv exited before it was ready".into()));
    });
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        if !text.is_empty() {
            let _ = tx2.send(Err(text.trim().to_string()));
        }
    });
    let log = dir.join("testenv.log");
    let server = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(Ok(url)) => url,
        Ok(Err(why)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{why}; {}:\n{}", log.display(), tail(&log, 30)));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "hookops-testenv not ready after 180 s; {}:\n{}",
                log.display(),
                tail(&log, 30)
            ));
        }
    };
    eprintln!(
        "test cluster ready at {server} in {:.1} s (dir {})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let pid = child.id();
    // The child is not waited for: it outlives this function and stops when stdin closes.
    std::mem::forget(child);
    let c = Cluster {
        dir,
        server,
        pid,
        counter: AtomicU64::new(0),
        _stdin: Mutex::new(stdin),
    };
    // A copy whose context is named `sandbox`, for World::configure.
    std::fs::copy(c.admin_kubeconfig(), c.sandbox_kubeconfig()).map_err(|e| e.to_string())?;
    let out = c.kubectl_with(
        &c.sandbox_kubeconfig(),
        &["config", "rename-context", "testenv", "sandbox"],
    );
    if !out.status.success() {
        return Err(format!(
            "kubectl config rename-context: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(c)
}

impl Cluster {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// cluster-admin (a static token in group system:masters), context `testenv`.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// ServiceAccount hookops-system/hookops-deployer with docs/security.md's rules, context
    /// `testenv`.
    pub fn deployer_kubeconfig(&self) -> PathBuf {
        self.dir.join("deployer.kubeconfig")
    }

    /// The admin kubeconfig with its context named `sandbox` (what `World::configure` names).
    pub fn sandbox_kubeconfig(&self) -> PathBuf {
        self.dir.join("sandbox.kubeconfig")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("testenv.log")
    }

    /// A fresh name for this test (namespace or object): `<prefix>-<pid>-<n>`.
    pub fn unique(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        format!("{prefix}-{}-{n}", std::process::id())
    }

    fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubecache"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl")
    }

    /// kubectl as cluster-admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.admin_kubeconfig(), args)
    }

    /// kubectl as cluster-admin with `input` on stdin (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join("kubecache"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("kubectl")
    }

    /// `kubectl get KIND NAME -o json --show-managed-fields` as admin (`ns` None for cluster-scoped kinds); None when
    /// the object does not exist.
    pub fn get_json(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<serde_json::Value> {
        let mut args = vec!["get", kind, name, "-o", "json", "--show-managed-fields"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let out = self.kubectl(&args);
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).expect("kubectl JSON"));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "kubectl get {kind} {name}: {err}"
        );
        None
    }

    /// Polls `check` every 200 ms until it is true or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A world deploying to the shared real cluster as cluster-admin (environment `prod`, plus
/// `env_extra` keys and `tables`), or None when the cluster or a tool is missing locally.
pub fn world_with(env_extra: &str, tables: &str) -> Option<(World, &'static Cluster)> {
    if !crate::util::tools_present() {
        return None;
    }
    let c = shared()?;
    let mut w = World::new();
    w.use_cluster();
    w.configure(env_extra, tables);
    Some((w, c))
}

pub fn world(env_extra: &str) -> Option<(World, &'static Cluster)> {
    world_with(env_extra, "")
}

impl World {
    /// Points this world at the shared real cluster as cluster-admin: `self.kubeconfig` gets
    /// a kubeconfig whose context is `sandbox`, so `configure` works unchanged. Panics when the
    /// cluster is unavailable (call `cluster::shared()` first to skip).
    pub fn use_cluster(&mut self) -> &'static Cluster {
        let c = shared().expect("test cluster");
        std::fs::copy(c.sandbox_kubeconfig(), &self.kubeconfig).expect("copy kubeconfig");
        c
    }
}
