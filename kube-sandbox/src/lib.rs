//! kube-sandbox: a Kubernetes API emulator that the real kubectl accepts.
//!
//! [`Sandbox`] runs the server on background threads for in-process tests;
//! the `kube-sandbox` binary wraps the same server for demos. See
//! `docs/kube-sandbox.md` for what is and is not emulated.

mod api;
mod builtin;
mod controllers;
mod discovery;
mod http;
mod patch;
mod resources;
mod selector;
mod store;

use resources::{Registry, NAMESPACE_KEY};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use store::{now_rfc3339, Store};

pub use builtin::BUILTIN;
pub use controllers::{FAIL_JOB, FAIL_ROLLOUT, READY_DELAY};
pub use resources::{Builtin, Sub};

/// One served request, as recorded by [`Sandbox::requests`] and `--log`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RequestLog {
    pub method: String,
    /// The request target: path plus query string.
    pub path: String,
    pub content_type: Option<String>,
    pub status: u16,
}

#[derive(Clone)]
enum FaultKind {
    Fail(u16),
    Stall(Duration),
    /// A write is executed, then answered with this status (a lost response).
    FailAfterWrite(u16),
    /// `Fail(status)` for some of the matching requests: the n-th matching request fails when
    /// a hash of (seed, n) lands below `permille` (out of 1000).
    FailRatio {
        status: u16,
        permille: u16,
        seed: u64,
        seen: Arc<AtomicU64>,
    },
}

impl FaultKind {
    /// Whether this request (the next one matching the fault) is hit.
    fn hits(&self) -> bool {
        match self {
            FaultKind::FailRatio {
                permille,
                seed,
                seen,
                ..
            } => {
                let n = seen.fetch_add(1, Ordering::Relaxed);
                splitmix64(seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))) % 1000
                    < u64::from(*permille)
            }
            _ => true,
        }
    }
}

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone)]
struct Fault {
    prefix: String,
    kind: FaultKind,
}

/// Everything behind the one global lock.
struct State {
    store: Store,
    registry: Registry,
    /// Per workload: the template hash last rolled out and when it becomes ready.
    ready_at: HashMap<(String, String, String), (String, Instant)>,
    /// Reconciles to re-run later, collected during a write.
    timers: Vec<controllers::Timer>,
    next_ip: u32,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled after writes, waking watches.
    changed: Condvar,
    shutdown: AtomicBool,
    requests: Mutex<Vec<RequestLog>>,
    faults: Mutex<Vec<Fault>>,
    log_file: Option<Mutex<File>>,
}

impl Shared {
    /// The state lock; a panicking request must not take the sandbox down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn log_request(&self, entry: RequestLog) {
        if let Some(file) = &self.log_file {
            if let Ok(mut line) = serde_json::to_vec(&entry) {
                line.push(b'\n');
                let _ = file
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(&line);
            }
        }
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }
}

/// Re-runs a controller once a readiness delay has passed, then wakes watches.
fn spawn_timer(shared: &Arc<Shared>, t: controllers::Timer) {
    let shared = Arc::clone(shared);
    let _ = std::thread::Builder::new()
        .name("kube-sandbox-timer".into())
        .spawn(move || {
            std::thread::sleep(t.after);
            if shared.is_shutdown() {
                return;
            }
            let timers = {
                let mut st = shared.lock();
                let mut more = controllers::reconcile(&mut st, &t.type_key, &t.namespace, &t.name);
                more.append(&mut st.timers);
                more
            };
            shared.changed.notify_all();
            for next in timers {
                spawn_timer(&shared, next);
            }
        });
}

/// A running API server; dropping it stops the server.
pub struct Sandbox {
    shared: Arc<Shared>,
    server: http::Server,
}

impl Sandbox {
    /// Starts a sandbox on 127.0.0.1 with an OS-chosen port.
    pub fn start() -> std::io::Result<Sandbox> {
        Sandbox::bind("127.0.0.1:0", None)
    }

    /// Starts a sandbox on `addr`, appending a JSON line per request to
    /// `log` when given.
    pub fn bind(addr: &str, log: Option<&Path>) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr)?;
        let log_file = match log {
            Some(p) => Some(Mutex::new(
                File::options().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        let mut state = State {
            store: Store::new(),
            registry: Registry::new(),
            ready_at: HashMap::new(),
            timers: Vec::new(),
            next_ip: 1,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let uid = state.store.new_uid();
            let obj = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": uid, "creationTimestamp": now_rfc3339(),
                    "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            state.store.put(NAMESPACE_KEY, "", ns, obj);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            log_file,
        });
        let server = http::Server::start(listener, Arc::clone(&shared))?;
        Ok(Sandbox { shared, server })
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// Writes a kubeconfig whose cluster, user and context are all named
    /// `context`, with that context current and namespace `default`.
    pub fn write_kubeconfig(&self, path: &Path, context: &str) -> std::io::Result<()> {
        // JSON strings are valid YAML scalars, so quoting via serde_json is safe.
        let name = Value::String(context.to_string()).to_string();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n\
             users:\n- name: {name}\n  user: {{}}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    \
             user: {name}\n    namespace: default\ncurrent-context: {name}\npreferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(path, text)
    }

    /// Every request served so far, in order (watches are logged when they start).
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The stored object, e.g. `object("apps/v1", "Deployment", Some("default"), "web")`.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let st = self.shared.lock();
        let key = type_key(&st.registry, api_version, kind)?;
        st.store
            .get(&key, namespace.unwrap_or_default(), name)
            .cloned()
    }

    /// All stored objects of a kind, across namespaces.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let st = self.shared.lock();
        match type_key(&st.registry, api_version, kind) {
            Some(key) => st.store.list(&key, None).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// Answers `status` (as a Status object) to every request whose path
    /// starts with `path_prefix`.
    pub fn fail_path(&self, path_prefix: &str, status: u16) {
        self.add_fault(path_prefix, FaultKind::Fail(status));
    }

    /// Sleeps `delay` before answering requests whose path starts with `path_prefix`.
    pub fn stall_path(&self, path_prefix: &str, delay: Duration) {
        self.add_fault(path_prefix, FaultKind::Stall(delay));
    }

    /// "500 after the write happened": a write (POST, PUT, PATCH, DELETE) whose path starts
    /// with `path_prefix` is executed as usual (the object changes, watches see it), then
    /// answered with `status` and a Status body instead of its result, as when a server or a
    /// proxy fails after the commit. Reads are not affected.
    pub fn fail_after_write(&self, path_prefix: &str, status: u16) {
        self.add_fault(path_prefix, FaultKind::FailAfterWrite(status));
    }

    /// Like [`fail_path`](Self::fail_path) for about `permille` of every 1000 matching
    /// requests, chosen deterministically from `seed`: the n-th request matching this fault
    /// fails or not by a hash of (seed, n), so a run with the same request order fails the
    /// same requests.
    pub fn fail_path_ratio(&self, path_prefix: &str, status: u16, permille: u16, seed: u64) {
        self.add_fault(
            path_prefix,
            FaultKind::FailRatio {
                status,
                permille: permille.min(1000),
                seed,
                seen: Arc::new(AtomicU64::new(0)),
            },
        );
    }

    fn add_fault(&self, prefix: &str, kind: FaultKind) {
        let fault = Fault {
            prefix: prefix.to_string(),
            kind,
        };
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn stop(self) {
        drop(self);
    }
}

fn type_key(reg: &Registry, api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    reg.all()
        .find(|t| t.group == group && t.version == version && t.kind == kind)
        .map(|t| t.type_key())
}
