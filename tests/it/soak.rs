//! The soak test of issue 17: crash safety under faults. N pushes from P concurrent pushers
//! across E environments (env `eI` on branch `bI`, namespace `soak-eI`, all on one kube
//! sandbox), while the sandbox's faults are toggled (500s, stalls, 500 after the write, a
//! share of failing requests) and running hookops processes (post-receive hooks and async
//! workers) are SIGKILLed at random moments. Then: faults cleared, kills stopped, workers
//! drained, one `hookops replay` per environment, and the invariants checked.
//!
//! Parameters (environment): `HOOKOPS_SOAK_PUSHES` (default 60, in all), `HOOKOPS_SOAK_PUSHERS`
//! (3), `HOOKOPS_SOAK_ENVS` (3), `HOOKOPS_SOAK_SEED` (default: from the clock, printed).
//! `scripts/soak.sh N` runs a long one; docs/operations.md ("Soak test") has the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::{configmap, hookops_bin, namespace, tools_present, Run, World};

// ---- parameters and randomness ---------------------------------------------------------------

struct Params {
    pushes: usize,
    pushers: usize,
    envs: usize,
    seed: u64,
}

fn param(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn params() -> Params {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    Params {
        pushes: param("HOOKOPS_SOAK_PUSHES", 60) as usize,
        pushers: param("HOOKOPS_SOAK_PUSHERS", 3).max(1) as usize,
        envs: param("HOOKOPS_SOAK_ENVS", 3).max(1) as usize,
        seed: param("HOOKOPS_SOAK_SEED", clock % 1_000_000),
    }
}

/// SplitMix64: small, deterministic, good enough to pick moments and changes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---- processes -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PostReceive,
    Worker,
    Other,
}

/// A running hookops of this test's server: its pid, kind and command line.
#[derive(Clone, Debug)]
struct Proc {
    pid: u32,
    kind: Kind,
    cmdline: Vec<String>,
}

/// The hookops processes working on `server`, found through /proc: the command line runs the
/// hookops binary and names the server (`--repo`, async workers) or the process runs in it (a
/// post-receive hook runs in the bare repository, its shim passes no path).
fn hookops_procs(server: &Path) -> Vec<Proc> {
    let bin = hookops_bin();
    let server_s = server.to_string_lossy().into_owned();
    let canonical = std::fs::canonicalize(server).unwrap_or_else(|_| server.to_path_buf());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A zombie's command line is empty: it is dead already.
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if cmdline.first().map(String::as_str) != Some(bin) {
            continue;
        }
        let names_server = cmdline.iter().any(|a| a.contains(&server_s))
            || std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == canonical);
        if !names_server {
            continue;
        }
        let kind = if cmdline.iter().any(|a| a == "post-receive") {
            Kind::PostReceive
        } else if cmdline.iter().any(|a| a == "worker") {
            Kind::Worker
        } else {
            Kind::Other
        };
        out.push(Proc { pid, kind, cmdline });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Command lines of the processes (hookops' kubectl children) naming `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut p = pid;
    while let Some(pp) = parent(p) {
        if pp <= 1 || out.contains(&pp) {
            break;
        }
        out.push(pp);
        p = pp;
    }
    out
}

// ---- the run's log -----------------------------------------------------------------------------

struct Push {
    env: usize,
    commit: String,
    /// The `git push` process: a killed post-receive hook descends from it.
    git_pid: u32,
}

struct Kill {
    pid: u32,
    kind: Kind,
    ancestors: Vec<u32>,
    cmdline: Vec<String>,
}

#[derive(Default)]
struct Log {
    pushes: Vec<Push>,
    rejected: usize,
    kills: Vec<Kill>,
    faults: BTreeMap<&'static str, usize>,
}

// ---- the world ---------------------------------------------------------------------------------

fn ns(env: usize) -> String {
    format!("soak-e{env}")
}

fn server_config(w: &World, envs: usize, mode: &str) -> String {
    let mut text = String::new();
    for i in 0..envs {
        text.push_str(&format!(
            "[[environment]]\nname = \"e{i}\"\nbranch = \"b{i}\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n\n",
            w.kubeconfig.display()
        ));
    }
    text.push_str(&format!(
        "[signing]\nkey = \"{}\"\n\n[deploy]\nmode = \"{mode}\"\n",
        w.key.display()
    ));
    text
}

fn clone_of(w: &World, name: &str) -> PathBuf {
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

/// `git push` from `dir`, its process id kept (a hook it runs descends from it).
fn push(w: &World, dir: &Path, refspec: &str) -> (u32, Run) {
    let child = w
        .base_command("git")
        .current_dir(dir)
        .args(["push", "-q", "origin", refspec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git push");
    let pid = child.id();
    (pid, child.wait_with_output().expect("git push").into())
}

/// The ConfigMap files of a tree in a work tree: path → (name, value).
fn declared_in_dir(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for sub in ["k8s/a", "k8s/b"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            out.insert(format!("{sub}/{name}"), name);
        }
    }
    out
}

/// One pusher's change to its checkout of an environment's branch: adds, changes and removes
/// ConfigMaps (sometimes the last of a directory, which removes a whole target), or touches
/// only a file no target holds.
fn mutate(dir: &Path, env: usize, pusher: usize, serial: &mut usize, rng: &mut Rng) -> String {
    let mut what = Vec::new();
    if rng.percent(5) {
        std::fs::write(dir.join("README.md"), format!("{}\n", rng.next())).unwrap();
        return "readme".into();
    }
    for _ in 0..rng.between(1, 3) {
        let files: Vec<String> = declared_in_dir(dir).into_keys().collect();
        let roll = rng.below(100);
        if files.is_empty() || roll < 45 {
            *serial += 1;
            let sub = if rng.percent(50) { "a" } else { "b" };
            let name = format!("cm-p{pusher}-{serial}");
            let path = dir.join(format!("k8s/{sub}/{name}.yaml"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let value = format!("v{}", rng.below(1_000_000));
            std::fs::write(&path, configmap(&name, Some(&ns(env)), &value)).unwrap();
            what.push(format!("add {name}"));
        } else if roll < 80 {
            let file = rng.pick(&files).clone();
            let name = file.rsplit('/').next().unwrap().trim_end_matches(".yaml");
            let value = format!("v{}", rng.below(1_000_000));
            std::fs::write(dir.join(&file), configmap(name, Some(&ns(env)), &value)).unwrap();
            what.push(format!("change {name}"));
        } else {
            let file = rng.pick(&files).clone();
            std::fs::remove_file(dir.join(&file)).unwrap();
            what.push(format!("remove {file}"));
        }
    }
    what.join(", ")
}

fn rev_parse(w: &World, dir: &Path, rev: &str) -> String {
    let r = w.git(Some(dir), &["rev-parse", rev]);
    r.assert_ok();
    r.stdout.trim().to_string()
}

/// One pusher: until the shared budget of pushes is spent, picks an environment, commits a
/// change on top of its branch's tip and pushes it; a push that lost the race to another
/// pusher (non-fast-forward) is redone on the new tip.
fn pusher(
    w: &World,
    id: usize,
    p: &Params,
    budget: &AtomicUsize,
    log: &Mutex<Log>,
    deadline: Instant,
) {
    let dir = clone_of(w, &format!("pusher{id}"));
    let mut rng = Rng::new(p.seed, 100 + id as u64);
    let mut serial = 0;
    while budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        loop {
            assert!(
                Instant::now() < deadline,
                "pusher {id}: the soak ran out of time"
            );
            let env = rng.below(p.envs as u64) as usize;
            let branch = format!("b{env}");
            w.git(Some(&dir), &["fetch", "-q", "origin"]).assert_ok();
            w.git(
                Some(&dir),
                &[
                    "checkout",
                    "-q",
                    "-f",
                    "-B",
                    &branch,
                    &format!("origin/{branch}"),
                ],
            )
            .assert_ok();
            w.git(Some(&dir), &["clean", "-q", "-fdx"]).assert_ok();
            let what = mutate(&dir, env, id, &mut serial, &mut rng);
            w.git(Some(&dir), &["add", "-A"]).assert_ok();
            w.git(
                Some(&dir),
                &[
                    "commit",
                    "-q",
                    "--allow-empty",
                    "-m",
                    &format!("p{id}: {what}"),
                ],
            )
            .assert_ok();
            let commit = rev_parse(w, &dir, "HEAD");
            let (git_pid, out) = push(w, &dir, &format!("HEAD:refs/heads/{branch}"));
            if out.ok() {
                log.lock().unwrap().pushes.push(Push {
                    env,
                    commit,
                    git_pid,
                });
                break;
            }
            let text = out.all();
            assert!(
                text.contains("rejected") || text.contains("fetch first"),
                "pusher {id}: push failed for another reason than a race:\n{text}"
            );
            log.lock().unwrap().rejected += 1;
        }
    }
}

/// Kills a random hookops process of the server every 0.3–1.5 s.
fn killer(server: &Path, seed: u64, stop: &AtomicBool, log: &Mutex<Log>) {
    let mut rng = Rng::new(seed, 1);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.between(300, 1500)));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Now and then a hunt for a post-receive hook, killed a few milliseconds after it
        // appears (in async mode a hook lives for a few milliseconds only), else any hookops.
        let victim = if rng.percent(35) {
            let until = Instant::now() + Duration::from_millis(1500);
            let mut found = None;
            while found.is_none() && Instant::now() < until && !stop.load(Ordering::SeqCst) {
                let hooks: Vec<Proc> = hookops_procs(server)
                    .into_iter()
                    .filter(|p| p.kind == Kind::PostReceive)
                    .collect();
                if hooks.is_empty() {
                    std::thread::sleep(Duration::from_millis(2));
                } else {
                    std::thread::sleep(Duration::from_millis(rng.below(30)));
                    found = Some(rng.pick(&hooks).clone());
                }
            }
            found
        } else {
            let procs = hookops_procs(server);
            (!procs.is_empty()).then(|| rng.pick(&procs).clone())
        };
        let Some(victim) = victim else { continue };
        let ancestors = ancestors(victim.pid);
        // SAFETY: kill(2) with a pid read from /proc a moment ago.
        if unsafe { libc::kill(victim.pid as i32, libc::SIGKILL) } == 0 {
            log.lock().unwrap().kills.push(Kill {
                pid: victim.pid,
                kind: victim.kind,
                ancestors,
                cmdline: victim.cmdline,
            });
        }
    }
}

/// Toggles the sandbox's faults every 0.4–1.5 s: cleared, or one more of a 500 on an
/// environment's ConfigMaps, a share of failing requests on every soak namespace, a stall, or
/// a 500 answered after the write happened.
fn faults(w: &World, p: &Params, stop: &AtomicBool, log: &Mutex<Log>) {
    let sb = w.sandbox();
    let mut rng = Rng::new(p.seed, 2);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.between(400, 1500)));
        if rng.percent(40) {
            sb.clear_faults();
        }
        let env = rng.below(p.envs as u64) as usize;
        let cms = format!("/api/v1/namespaces/{}/configmaps", ns(env));
        n += 1;
        let kind = match rng.below(100) {
            0..=19 => {
                sb.clear_faults();
                "cleared"
            }
            20..=39 => {
                sb.fail_path(&cms, 500);
                "500"
            }
            40..=54 => {
                sb.fail_path_ratio(
                    "/api/v1/namespaces/soak-",
                    500,
                    rng.between(100, 300) as u16,
                    p.seed.wrapping_add(n),
                );
                "500 on a share"
            }
            55..=74 => {
                sb.stall_path(&cms, Duration::from_millis(rng.between(200, 1500)));
                "stall"
            }
            _ => {
                sb.fail_after_write(&cms, 500);
                "500 after the write"
            }
        };
        *log.lock().unwrap().faults.entry(kind).or_default() += 1;
    }
    sb.clear_faults();
}

// ---- invariants --------------------------------------------------------------------------------

/// Every record on every annotated commit of the server, with the commit it is on.
fn all_records(w: &World) -> Vec<(String, hookops::record::ParsedRecord)> {
    let list = w.git(Some(&w.server), &["notes", "--ref=hookops", "list"]);
    list.assert_ok();
    let mut out = Vec::new();
    for line in list.stdout.lines() {
        let commit = line.split(' ').nth(1).expect("notes list line").to_string();
        let note = w.note(&commit);
        let recs = hookops::record::parse_note(&note)
            .unwrap_or_else(|e| panic!("the note of {commit} does not parse: {e}\n{note}"));
        out.extend(recs.into_iter().map(|r| (commit.clone(), r)));
    }
    out
}

/// Stock `ssh-keygen -Y verify` of one record, with the world's signing key.
fn ssh_keygen_verifies(w: &World, rec: &hookops::record::ParsedRecord) -> bool {
    rec.signature.as_deref().is_some_and(|sig| {
        w.ssh_keygen_verify(&w.allowed_signers, "deployer@test", &rec.payload, sig, None)
            .ok()
    })
}

/// What the tip of `branch` declares for its namespace: ConfigMap name → value.
fn declared_at(w: &World, branch: &str) -> BTreeMap<String, String> {
    let files = w.git(
        Some(&w.server),
        &[
            "ls-tree",
            "-r",
            "--name-only",
            branch,
            "--",
            "k8s/a",
            "k8s/b",
        ],
    );
    files.assert_ok();
    let mut out = BTreeMap::new();
    for path in files.stdout.lines() {
        let text = w.git(Some(&w.server), &["show", &format!("{branch}:{path}")]);
        text.assert_ok();
        let doc: serde_json::Value = serde_yaml_ng::from_str(&text.stdout).expect("manifest");
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let value = doc["data"]["value"].as_str().unwrap().to_string();
        assert!(
            out.insert(name, value).is_none(),
            "{path}: a duplicate name"
        );
    }
    out
}

/// What the sandbox holds in `namespace`: ConfigMap name → data.
fn cluster_in(w: &World, namespace: &str) -> BTreeMap<String, serde_json::Value> {
    w.sandbox()
        .objects("v1", "ConfigMap")
        .into_iter()
        .filter(|o| o["metadata"]["namespace"] == namespace)
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["data"].clone(),
            )
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Stale git lock files (`*.lock`) anywhere under the server's refs, and beside its config
/// and packed-refs: what a process killed mid-update would leave.
fn git_locks(server: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for p in files_in(dir) {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "lock") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&server.join("refs"), &mut out);
    for f in ["packed-refs.lock", "config.lock", "HEAD.lock", "index.lock"] {
        if server.join(f).exists() {
            out.push(server.join(f));
        }
    }
    out
}

fn wait_for_no_hookops(server: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = hookops_procs(server);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "hookops processes still running after {limit:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the soak ----------------------------------------------------------------------------------

fn soak(mode: &str) {
    if !tools_present() {
        return;
    }
    let p = params();
    let started = Instant::now();
    eprintln!(
        "soak ({mode}): {} pushes, {} pushers, {} environments, seed {} (HOOKOPS_SOAK_SEED)",
        p.pushes, p.pushers, p.envs, p.seed
    );
    let mut w = World::new();
    w.start_sandbox();
    w.write_server_config(&server_config(&w, p.envs, mode));
    // Every branch starts with its namespace and one ConfigMap, pushed before the chaos.
    for i in 0..p.envs {
        let branch = format!("b{i}");
        w.in_clone(&["checkout", "-q", "--orphan", &branch])
            .assert_ok();
        w.in_clone(&["rm", "-q", "-r", "-f", "--ignore-unmatch", "."])
            .assert_ok();
        w.commit(
            &[
                ("k8s/ns/ns.yaml", &namespace(&ns(i))),
                (
                    "k8s/a/cm-init.yaml",
                    &configmap("cm-init", Some(&ns(i)), "0"),
                ),
            ],
            &format!("{branch}: start"),
        );
        w.push_args(&["origin", &format!("HEAD:refs/heads/{branch}")])
            .assert_ok();
    }
    let log = Mutex::new(Log::default());
    let budget = AtomicUsize::new(p.pushes);
    let stop = AtomicBool::new(false);
    let deadline = started + Duration::from_secs(60 + 10 * p.pushes as u64);
    std::thread::scope(|s| {
        let (w, p, log, stop, budget) = (&w, &p, &log, &stop, &budget);
        let chaos = [
            s.spawn(move || killer(&w.server, p.seed, stop, log)),
            s.spawn(move || faults(w, p, stop, log)),
        ];
        let pushers: Vec<_> = (0..p.pushers)
            .map(|id| s.spawn(move || pusher(w, id, p, budget, log, deadline)))
            .collect();
        let mut panicked = None;
        for h in pushers {
            if let Err(e) = h.join() {
                panicked = Some(e);
            }
        }
        stop.store(true, Ordering::SeqCst);
        for h in chaos {
            h.join().unwrap();
        }
        if let Some(e) = panicked {
            std::panic::resume_unwind(e);
        }
    });
    let chaos_done = started.elapsed();
    w.sandbox().clear_faults();
    let log = log.into_inner().unwrap();

    // Drain: every worker ends; an entry left in the queue belongs to a worker we killed (or
    // to a hook killed before it started one), which the next worker would take over once
    // the entry is older than its grace; run those now, by hand, as that takeover does.
    wait_for_no_hookops(&w.server, Duration::from_secs(180));
    let queue = w.server.join("hookops/queue");
    let mut taken_over = 0;
    let mut violations: Vec<String> = Vec::new();
    for entry in files_in(&queue) {
        if entry.exists() && entry.extension().is_some_and(|x| x == "json") {
            taken_over += 1;
            let out = w.hookops(&["worker", entry.to_str().unwrap()]);
            if !out.ok() {
                violations.push(format!(
                    "taking over the queue entry {}: {}",
                    entry.display(),
                    out.all()
                ));
            }
        }
    }
    wait_for_no_hookops(&w.server, Duration::from_secs(60));
    // Converge: one replay per environment.
    for i in 0..p.envs {
        let out = w.hookops(&["replay", &format!("b{i}")]);
        if !out.ok() {
            violations.push(format!("replay b{i} failed:\n{}", out.all()));
        }
    }
    let duration = started.elapsed();

    // ---- invariants ----
    // Pointer = branch tip; cluster = tip.
    for i in 0..p.envs {
        let branch = format!("b{i}");
        let tip = rev_parse(&w, &w.server, &branch);
        let pointer = w.pointer(&format!("e{i}"));
        if pointer.as_deref() != Some(tip.as_str()) {
            violations.push(format!("e{i}: pointer {pointer:?}, tip {tip}"));
        }
        let want: BTreeMap<String, serde_json::Value> = declared_at(&w, &branch)
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!({ "value": v })))
            .collect();
        let have = cluster_in(&w, &ns(i));
        for (name, data) in &want {
            match have.get(name) {
                None => violations.push(format!("e{i}: {name} missing from the cluster")),
                Some(d) if d != data => {
                    violations.push(format!("e{i}: {name} is {d}, the tip says {data}"))
                }
                _ => {}
            }
        }
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            violations.push(format!(
                "e{i}: {name} is in the cluster, the tip removed it"
            ));
        }
    }
    // Records: every one verifies with stock ssh-keygen; one record per attempt.
    let records = all_records(&w);
    let mut by_attempt: BTreeMap<(String, String, String, String), Vec<String>> = BTreeMap::new();
    let mut parsed = Vec::new();
    let mut unverified = 0;
    for (commit, rec) in &records {
        if !ssh_keygen_verifies(&w, rec) {
            unverified += 1;
            violations.push(format!(
                "a record on {commit} does not verify with ssh-keygen: {}",
                rec.payload
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&rec.payload).expect("record JSON");
        if v["commit"] != commit.as_str() {
            violations.push(format!("a record on {commit} names {}", v["commit"]));
        }
        let key = (
            v["env"].as_str().unwrap_or_default().to_string(),
            v["action"].as_str().unwrap_or_default().to_string(),
            commit.clone(),
            v["started_at"].as_str().unwrap_or_default().to_string(),
        );
        by_attempt.entry(key).or_default().push(rec.payload.clone());
        parsed.push((commit.clone(), v));
    }
    for ((env, action, commit, started_at), recs) in &by_attempt {
        if recs.len() > 1 {
            violations.push(format!(
                "{env}: the {action} of {commit} started {started_at} has {} records:\n  {}",
                recs.len(),
                recs.join("\n  ")
            ));
        }
    }
    // An `interrupted` record is for an attempt we killed, and for one that did not record
    // itself: recovery must not write it for a process we did not kill, nor for an attempt
    // whose own record (started at or before the journal entry, finished after) is there.
    let killed: BTreeSet<u32> = log.kills.iter().map(|k| k.pid).collect();
    let when = |v: &serde_json::Value, f: &str| v[f].as_str().unwrap_or_default().to_string();
    let mut interrupted = 0;
    for (commit, v) in &parsed {
        let reason = v["reason"].as_str().unwrap_or_default();
        let Some(rest) = reason.strip_prefix("interrupted (process ") else {
            continue;
        };
        interrupted += 1;
        let pid: u32 = rest.split(' ').next().unwrap().parse().unwrap();
        if !killed.contains(&pid) {
            violations.push(format!(
                "{commit}: an interrupted record for process {pid}, which the soak did not kill: {v}"
            ));
        }
        let at = when(v, "started_at");
        for (c2, other) in &parsed {
            if c2 == commit
                && other != v
                && other["env"] == v["env"]
                && other["action"] == v["action"]
                && when(other, "started_at") <= at
                && at <= when(other, "finished_at")
            {
                violations.push(format!(
                    "{commit}: one attempt recorded twice (its own record and an interrupted one):\n  {other}\n  {v}"
                ));
            }
        }
    }
    // Every pushed commit has a record, unless we killed its hook (the killed post-receive
    // descends from the push's git process) before it wrote one.
    let killed_pushes: BTreeSet<u32> = log
        .kills
        .iter()
        .filter(|k| k.kind == Kind::PostReceive)
        .flat_map(|k| k.ancestors.iter().copied())
        .collect();
    let recorded: BTreeSet<&str> = parsed.iter().map(|(c, _)| c.as_str()).collect();
    let mut unrecorded_killed = 0;
    for push in &log.pushes {
        if recorded.contains(push.commit.as_str()) {
            continue;
        }
        if killed_pushes.contains(&push.git_pid) {
            unrecorded_killed += 1;
        } else {
            violations.push(format!(
                "e{}: {} was pushed, its hook was not killed, and it has no record",
                push.env, push.commit
            ));
        }
    }
    // Nothing left behind.
    // One deploy lock per environment (locks/<env>.lock): none may still be held.
    for entry in std::fs::read_dir(w.server.join("hookops/locks"))
        .expect("the deploy locks")
        .flatten()
    {
        let lock = std::fs::File::open(entry.path()).expect("a deploy lock file");
        if lock.try_lock().is_err() {
            violations.push(format!("{} is still held", entry.path().display()));
        }
    }
    for p in git_locks(&w.server) {
        violations.push(format!("a stale git lock: {}", p.display()));
    }
    for p in files_in(&w.server.join("hookops/journal")) {
        violations.push(format!("a journal entry left: {}", p.display()));
    }
    for p in files_in(&queue) {
        violations.push(format!("a queue entry left: {}", p.display()));
    }
    let left = hookops_procs(&w.server);
    if !left.is_empty() {
        violations.push(format!("hookops processes left: {left:?}"));
    }
    let kubeconfig = w.kubeconfig.to_string_lossy().into_owned();
    for kid in processes_naming(&kubeconfig) {
        violations.push(format!("a hookops child left: {kid}"));
    }
    let fsck = w.git(Some(&w.server), &["fsck", "--full", "--no-dangling"]);
    // The server's HEAD names `main`, which the soak never pushes: git says so in a notice.
    let complaints: Vec<&str> = fsck
        .stderr
        .lines()
        .chain(fsck.stdout.lines())
        .filter(|l| {
            !l.starts_with("Checking") && !l.starts_with("notice: HEAD points to an unborn branch")
        })
        .collect();
    if !fsck.ok() || !complaints.is_empty() {
        violations.push(format!("git fsck: {}", fsck.all()));
    }

    // ---- summary ----
    let count = |k: Kind| log.kills.iter().filter(|x| x.kind == k).count();
    let result_count = |r: &str| parsed.iter().filter(|(_, v)| v["result"] == r).count();
    eprintln!(
        "soak ({mode}) summary: seed {seed}; {pushes} pushes ({rejected} rejected and redone) by {pushers} pushers to {envs} environments in {chaos:.1}s, converged in {total:.1}s, checked in {checked:.1}s\n\
         kills: {kills} ({pr} post-receive, {wk} workers, {ot} other); {unrec} killed pushes without a record; {taken} queue entries taken over by hand\n\
         faults: {faults:?}\n\
         records: {nrec} ({ok} succeeded, {failed} failed, of which {interrupted} interrupted, {skipped} skipped, {rb} rollbacks), {unverified} not verified by ssh-keygen\n\
         violations: {nv}",
        seed = p.seed,
        pushes = log.pushes.len(),
        rejected = log.rejected,
        pushers = p.pushers,
        envs = p.envs,
        chaos = chaos_done.as_secs_f64(),
        total = duration.as_secs_f64(),
        checked = (started.elapsed() - duration).as_secs_f64(),
        kills = log.kills.len(),
        pr = count(Kind::PostReceive),
        wk = count(Kind::Worker),
        ot = count(Kind::Other),
        unrec = unrecorded_killed,
        taken = taken_over,
        faults = log.faults,
        nrec = parsed.len(),
        ok = result_count("succeeded"),
        failed = result_count("failed"),
        skipped = result_count("skipped"),
        rb = parsed.iter().filter(|(_, v)| v["action"] == "rollback").count(),
        nv = violations.len(),
    );
    if !violations.is_empty() {
        for k in &log.kills {
            eprintln!("killed {} ({:?}): {}", k.pid, k.kind, k.cmdline.join(" "));
        }
    }
    if !violations.is_empty() && std::env::var_os("HOOKOPS_SOAK_KEEP").is_some() {
        eprintln!(
            "HOOKOPS_SOAK_KEEP: the world stays in {}",
            w.tmp.path().display()
        );
        std::mem::forget(w);
    }
    assert!(
        violations.is_empty(),
        "soak ({mode}, seed {}): {} invariant violations:\n{}",
        p.seed,
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn soak_sync() {
    soak("sync");
}

#[test]
fn soak_async() {
    soak("async");
}
