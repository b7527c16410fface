//! Push-to-deployed benchmarks (issue 7): every figure of docs/performance.md, each measured
//! against its baseline in the same run, alternating the two so that load from other processes
//! hits both alike, and reported as medians and their ratio. Not a timed test: it prints figures
//! and a PASS/MISS table, and always exits 0 unless the setup itself fails.
//!
//! Run through `scripts/bench.sh` (or `cargo bench --bench pipeline -- [--runs N] [--only 1,2]`).
//! Figure 6 (issue 18) fans one push out to ten environments, each on a kube sandbox of its own.
//! Fixtures are generated with `git fast-import` in a temporary directory that is removed at the
//! end; the kube sandbox runs in this process and stops with it.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kube_sandbox::Sandbox;

#[path = "../tests/it/isolated.rs"]
mod isolated;

const HOOKOPS: &str = env!("CARGO_BIN_EXE_hookops");
const KUBECTL: &str = "kubectl";

/// Figure 1/5 fixture: 2,000 directories × 50 manifests.
const BIG_DIRS: usize = 2000;
const BIG_FILES: usize = 50;
/// Notes already on the big repository (a long-lived deploy history).
const BIG_NOTES: usize = 5000;

// ---------------------------------------------------------------------------------------------
// Measuring children

/// One finished child: wall time, peak RSS (KiB, getrusage via wait4), status and stdout.
struct Measured {
    wall: Duration,
    max_rss_kib: i64,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd` to completion with `input` on stdin and measures it with wait4.
// The child is reaped by wait4 (which also reports its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command, input: Option<&[u8]>) -> Measured {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let mut stdout = Vec::new();
    let _ = out.read_to_end(&mut stdout);
    let stderr = reader.join().unwrap_or_default();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; the rusage struct is zeroed and owned here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let wall = started.elapsed();
    Measured {
        wall,
        max_rss_kib: usage.ru_maxrss,
        status: ExitStatus::from_raw(status),
        stdout,
        stderr,
    }
}

/// Like `measure`, failing loudly when the child failed.
#[track_caller]
fn measure_ok(cmd: &mut Command, input: Option<&[u8]>) -> Measured {
    let m = measure(cmd, input);
    if !m.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            m.status,
            String::from_utf8_lossy(&m.stdout),
            String::from_utf8_lossy(&m.stderr)
        );
    }
    m
}

fn median(xs: &[Duration]) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 1000.0 {
        format!("{:.2} s", m / 1000.0)
    } else {
        format!("{m:.1} ms")
    }
}

fn list(xs: &[Duration]) -> String {
    xs.iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// The world: an isolated git configuration and helpers

struct Bench {
    tmp: tempfile::TempDir,
    home: PathBuf,
    runs: usize,
    rows: Vec<Row>,
}

struct Row {
    figure: String,
    hookops: String,
    baseline: String,
    ratio: String,
    target: String,
    pass: bool,
}

impl Bench {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A command with the user's configuration shut out (like the test harness).
    fn command(&self, program: &str) -> Command {
        let mut c = isolated::command(program, &self.home, &self.path("kubecache-default"));
        c.current_dir(self.tmp.path());
        c
    }

    #[track_caller]
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let m = measure_ok(self.command("git").arg("-C").arg(dir).args(args), None);
        String::from_utf8_lossy(&m.stdout).trim().to_string()
    }

    fn hookops(&self, repo: &Path) -> Command {
        let mut c = self.command(HOOKOPS);
        c.arg("--repo").arg(repo);
        c
    }

    /// Streams a fast-import script into `repo`.
    fn fast_import(&self, repo: &Path, script: &[u8]) {
        measure_ok(
            self.command("git")
                .arg("-C")
                .arg(repo)
                .args(["fast-import", "--quiet", "--done"]),
            Some(script),
        );
    }

    fn signing_key(&self) -> PathBuf {
        let key = self.path("signing_ed25519");
        if !key.exists() {
            measure_ok(
                self.command("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench@hookops", "-f"])
                    .arg(&key),
                None,
            );
        }
        key
    }

    /// A row comparing two medians: hookops ÷ baseline, which passes at or below `max`.
    fn ratio_row(
        &mut self,
        figure: &str,
        hookops: Duration,
        baseline: Duration,
        baseline_label: &str,
        target: &str,
        max: f64,
    ) {
        let ratio = hookops.as_secs_f64() / baseline.as_secs_f64();
        self.row(
            figure,
            ms(hookops),
            format!("{} ({baseline_label})", ms(baseline)),
            ratio,
            target,
            ratio <= max,
        );
    }

    fn row(
        &mut self,
        figure: &str,
        hookops: String,
        baseline: String,
        ratio: f64,
        target: &str,
        pass: bool,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            hookops,
            baseline,
            ratio: format!("{ratio:.3}"),
            target: target.into(),
            pass,
        });
    }
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/part-of: bench\ndata:\n  value: \"{value}\"\n  payload: \"{}\"\n",
        "x".repeat(64)
    )
}

/// fast-import text for one inline file modification.
fn inline_file(out: &mut Vec<u8>, path: &str, text: &str) {
    out.extend_from_slice(format!("M 100644 inline {path}\ndata {}\n", text.len()).as_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

fn commit_header(
    out: &mut Vec<u8>,
    reference: &str,
    mark: usize,
    time: u64,
    message: &str,
    from: Option<usize>,
) {
    out.extend_from_slice(
        format!(
            "commit {reference}\nmark :{mark}\ncommitter Bench <bench@example.test> {time} +0000\ndata {}\n{message}\n",
            message.len()
        )
        .as_bytes(),
    );
    if let Some(f) = from {
        out.extend_from_slice(format!("from :{f}\n").as_bytes());
    }
}

/// A server-side kubeconfig whose context's default namespace is `namespace`.
fn write_kubeconfig(path: &Path, url: &str, namespace: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: \"{url}\"\nusers:\n- name: sandbox\n  user: {{}}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: {namespace}\ncurrent-context: sandbox\n"
    );
    std::fs::write(path, text).expect("writing kubeconfig");
}

fn server_config(kubeconfig: &Path, key: &Path, extra_tables: &str) -> String {
    format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n\n[signing]\nkey = \"{}\"\n\n{extra_tables}\n",
        kubeconfig.display(),
        key.display()
    )
}

fn write_server_config(repo: &Path, text: &str) {
    let dir = repo.join("hookops");
    std::fs::create_dir_all(&dir).expect("creating hookops dir");
    std::fs::write(dir.join("config.toml"), text).expect("writing server config");
}

// ---------------------------------------------------------------------------------------------
// Figures 1 and 5: the 100,000-file repository

struct BigRepo {
    repo: PathBuf,
    a: String,
    b: String,
    changed: String,
}

fn big_repo(b: &Bench) -> BigRepo {
    let repo = b.path("big.git");
    b.git(
        b.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    let started = Instant::now();
    let mut s = Vec::with_capacity(40 << 20);
    commit_header(
        &mut s,
        "refs/heads/main",
        1,
        1_700_000_000,
        "100,000 manifests",
        None,
    );
    for d in 0..BIG_DIRS {
        for f in 0..BIG_FILES {
            let name = format!("d{d:04}-cm{f:02}");
            inline_file(
                &mut s,
                &format!("apps/d{d:04}/cm{f:02}.yaml"),
                &configmap(&name, "v1"),
            );
        }
    }
    s.push(b'\n');
    let changed = format!("apps/d{:04}/cm{:02}.yaml", BIG_DIRS / 2 + 7, 17);
    commit_header(
        &mut s,
        "refs/heads/main",
        2,
        1_700_000_100,
        "one change",
        Some(1),
    );
    inline_file(
        &mut s,
        &changed,
        &configmap(&format!("d{:04}-cm17", BIG_DIRS / 2 + 7), "v2"),
    );
    s.push(b'\n');
    // A deploy history: many annotated commits, so a record append works on a realistic,
    // fanned-out notes tree.
    for i in 0..BIG_NOTES {
        let from = if i == 0 { 2 } else { 10 + i - 1 };
        commit_header(
            &mut s,
            "refs/bench/history",
            10 + i,
            1_600_000_000 + i as u64,
            &format!("history {i}"),
            Some(from),
        );
        s.push(b'\n');
    }
    commit_header(
        &mut s,
        "refs/notes/hookops",
        9,
        1_700_000_200,
        "history notes",
        None,
    );
    for i in 0..BIG_NOTES {
        let record = format!("hookops-record v1\n{{\"env\":\"prod\",\"action\":\"deploy\",\"result\":\"succeeded\",\"n\":{i}}}\n");
        s.extend_from_slice(format!("N inline :{}\ndata {}\n", 10 + i, record.len()).as_bytes());
        s.extend_from_slice(record.as_bytes());
        s.push(b'\n');
    }
    s.extend_from_slice(b"\ndone\n");
    b.fast_import(&repo, &s);
    let a = b.git(&repo, &["rev-parse", "main~1"]);
    let bb = b.git(&repo, &["rev-parse", "main"]);
    let seeded = Instant::now();
    seed_inventory(&repo, &a);
    println!(
        "fixture: a deployed 100,000-object inventory for environments default and prod in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    println!(
        "fixture: {} files in {BIG_DIRS} directories, {BIG_NOTES} notes, built in {:.1} s",
        BIG_DIRS * BIG_FILES,
        started.elapsed().as_secs_f64()
    );
    BigRepo {
        repo,
        a,
        b: bb,
        changed,
    }
}

/// The inventory of an environment that has deployed commit `a` (every object applied), as
/// hookops writes it when it adopts a cluster: the plan and the hook then work against a
/// 100,000-object inventory, as they would in production.
fn seed_inventory(repo: &Path, a: &str) {
    let session = hookops::backends::repo::Session::open(Some(repo)).expect("opening the fixture");
    let masker = hookops::backends::mask::Masker::new();
    let a = git2::Oid::from_str(a).expect("commit id");
    for name in ["default", "prod"] {
        let mut env = hookops::config::Environment::default_for("main");
        env.name = name.into();
        let mut inv =
            hookops::pipeline::inventory::Inventory::load(&session.repo, name).expect("inventory");
        hookops::pipeline::planner::plan_with(
            &session,
            &masker,
            &env,
            (Some(a), a),
            &mut inv,
            None,
        )
        .expect("seeding the inventory");
        inv.set_base(a);
        inv.save("bench: a deployed 100,000-object inventory")
            .expect("writing the inventory");
    }
}

fn figure1(b: &mut Bench, big: &BigRepo) {
    println!("\n== 1. change detection: `hookops plan` vs `git diff-tree -r --name-only` (100,000 files, 1 changed)");
    let mut plan_t = Vec::new();
    let mut git_t = Vec::new();
    let mut floor_t = Vec::new();
    let runs = b.runs * 2;
    let plan_args = ["plan", "main", "--from", &big.a, "--to", &big.b, "--json"];
    for i in 0..runs {
        // Not timed against anything: what starting the hookops binary costs at all.
        floor_t.push(measure_ok(b.hookops(&big.repo).arg("--version"), None).wall);
        let mut one = |which: bool| {
            if which {
                let m = measure_ok(b.hookops(&big.repo).args(plan_args), None);
                let out = String::from_utf8_lossy(&m.stdout);
                assert!(
                    out.contains(&big.changed),
                    "plan does not name {}: {out}",
                    big.changed
                );
                plan_t.push(m.wall);
            } else {
                let m = measure_ok(
                    b.command("git").arg("--git-dir").arg(&big.repo).args([
                        "diff-tree",
                        "-r",
                        "--name-only",
                        &big.a,
                        &big.b,
                    ]),
                    None,
                );
                assert_eq!(String::from_utf8_lossy(&m.stdout).trim(), big.changed);
                git_t.push(m.wall);
            }
        };
        one(i % 2 == 0);
        one(i % 2 == 1);
    }
    // Peak RSS in runs of their own, through a small parent: the kernel counts the memory of
    // the process that forked the child into its ru_maxrss, and this benchmark holds the
    // fixture script in memory.
    let rss = (0..3)
        .map(|_| peak_rss_kib(b, &big.repo, &plan_args))
        .max()
        .unwrap_or(0);
    let (p, g, f) = (median(&plan_t), median(&git_t), median(&floor_t));
    println!("hookops plan ms: {}", list(&plan_t));
    println!("git diff-tree ms: {}", list(&git_t));
    println!(
        "hookops --version ms (process start-up alone): {}",
        list(&floor_t)
    );
    println!(
        "median: hookops plan {}, git diff-tree {}, hookops --version {}; peak RSS of hookops plan {:.1} MB",
        ms(p),
        ms(g),
        ms(f),
        rss as f64 / 1024.0
    );
    b.ratio_row(
        "1. change detection (plan, 100k files)",
        p,
        g,
        "git diff-tree",
        "≤ 1.5×",
        1.5,
    );
    let mb = rss as f64 / 1024.0;
    b.row(
        "1. peak RSS of hookops plan",
        format!("{mb:.1} MB"),
        "-".into(),
        mb / 50.0,
        "< 50 MB",
        mb < 50.0,
    );
    b.ratio_row(
        "1. (start-up alone: hookops --version)",
        f,
        g,
        "git diff-tree",
        "(informational)",
        f64::INFINITY,
    );
}

/// Peak RSS (KiB) of one `hookops ARGS`, via `/usr/bin/time -f %M` when installed, else via
/// `sh -c 'exec …'` (the shell is the process that execs hookops, so its small memory is what
/// the kernel counts besides hookops' own).
fn peak_rss_kib(b: &Bench, repo: &Path, args: &[&str]) -> i64 {
    let out = b.path("rss.txt");
    if Path::new("/usr/bin/time").exists() {
        measure_ok(
            b.command("/usr/bin/time")
                .args(["-f", "%M", "-o"])
                .arg(&out)
                .arg(HOOKOPS)
                .arg("--repo")
                .arg(repo)
                .args(args),
            None,
        );
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        return text
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("/usr/bin/time output");
    }
    let m = measure_ok(
        b.command("sh")
            .args(["-c", "exec \"$0\" \"$@\"", HOOKOPS, "--repo"])
            .arg(repo)
            .args(args),
        None,
    );
    m.max_rss_kib
}

fn figure5(b: &mut Bench, big: &BigRepo) {
    println!(
        "\n== 5. hook overhead: post-receive, one target changed (100,000 files), kubectl = stub"
    );
    // The stub stands in for kubectl only so that its (near-zero) child time can be measured
    // and subtracted; it reads its stdin like kubectl would.
    let stub = b.path("kubectl-stub");
    std::fs::write(&stub, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key = b.signing_key();
    let kubeconfig = b.path("kubeconfig-unused");
    std::fs::write(&kubeconfig, "").unwrap();
    write_server_config(
        &big.repo,
        &server_config(
            &kubeconfig,
            &key,
            &format!("[tools]\nkubectl = \"{}\"\n", stub.display()),
        ),
    );
    let input = format!("{} {} refs/heads/main\n", big.a, big.b);
    let mut hook_t = Vec::new();
    let mut stub_t = Vec::new();
    let stream = configmap("d1007-cm17", "v2");
    for i in 0..b.runs * 2 {
        let mut one = |which: bool| {
            if which {
                b.git(
                    &big.repo,
                    &["update-ref", "refs/hookops/deployed/prod", &big.a],
                );
                let m = measure_ok(
                    b.hookops(&big.repo).arg("post-receive"),
                    Some(input.as_bytes()),
                );
                let out = String::from_utf8_lossy(&m.stdout);
                assert!(
                    out.contains("deployed"),
                    "post-receive did not deploy: {out}"
                );
                hook_t.push(m.wall);
            } else {
                let m = measure_ok(
                    b.command(stub.to_str().unwrap()).args([
                        "--kubeconfig",
                        "k",
                        "apply",
                        "--server-side",
                        "-f",
                        "-",
                    ]),
                    Some(stream.as_bytes()),
                );
                stub_t.push(m.wall);
            }
        };
        one(i % 2 == 0);
        one(i % 2 == 1);
    }
    let (h, s) = (median(&hook_t), median(&stub_t));
    let overhead = h.saturating_sub(s);
    println!(
        "hookops post-receive ms (with stub kubectl): {}",
        list(&hook_t)
    );
    println!("stub kubectl alone ms: {}", list(&stub_t));
    println!(
        "median: post-receive {}, stub {}, overhead {}",
        ms(h),
        ms(s),
        ms(overhead)
    );
    let notes = b
        .git(&big.repo, &["notes", "--ref=hookops", "list"])
        .lines()
        .count();
    println!("notes on the repository after the runs: {notes}");
    b.row(
        "5. hook overhead (post-receive − stub kubectl)",
        ms(overhead),
        format!("{} (stub child)", ms(s)),
        overhead.as_secs_f64() / 0.020,
        "< 20 ms",
        overhead < Duration::from_millis(20),
    );
}

// ---------------------------------------------------------------------------------------------
// Figures 2–4: against the kube sandbox

/// A work tree with `targets` directories of `per` ConfigMaps, built with fast-import.
fn manifests_repo(b: &Bench, name: &str, targets: usize, per: usize) -> PathBuf {
    let dir = b.path(name);
    b.git(
        b.tmp.path(),
        &["init", "-q", "-b", "main", dir.to_str().unwrap()],
    );
    let mut s = Vec::new();
    commit_header(
        &mut s,
        "refs/heads/main",
        1,
        1_700_000_000,
        "manifests",
        None,
    );
    for t in 0..targets {
        for i in 0..per {
            inline_file(
                &mut s,
                &format!("apps/t{t:02}/cm{i:03}.yaml"),
                &configmap(&format!("t{t:02}-cm{i:03}"), "v1"),
            );
        }
    }
    s.extend_from_slice(b"\ndone\n");
    b.fast_import(&dir, &s);
    b.git(&dir, &["reset", "-q", "--hard", "main"]);
    dir
}

fn bare_with_hookops(b: &Bench, name: &str, kubeconfig: &Path, tables: &str) -> PathBuf {
    let repo = b.path(name);
    b.git(
        b.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    measure_ok(b.hookops(&repo).arg("install"), None);
    write_server_config(&repo, &server_config(kubeconfig, &b.signing_key(), tables));
    repo
}

/// Creates namespaces in one kubectl call (setup, untimed).
fn namespaces(b: &Bench, kubeconfig: &Path, names: &[String]) {
    let docs: String = names
        .iter()
        .map(|n| format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n"))
        .collect();
    measure_ok(
        b.command(KUBECTL)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(b.path("kubecache-setup"))
            .args(["apply", "--server-side", "-f", "-"]),
        Some(docs.as_bytes()),
    );
}

fn value_of(sb: &Sandbox, ns: &str, name: &str) -> Option<String> {
    sb.object("v1", "ConfigMap", Some(ns), name).and_then(|o| {
        o.pointer("/data/value")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    })
}

fn figure2(b: &mut Bench, sb: &Sandbox, latency: Duration) {
    println!(
        "\n== 2. one change among 2,000 objects (20 targets × 100 ConfigMaps): push to applied"
    );
    let kc_hk = b.path("kubeconfig-f2-hookops");
    let kc_nv = b.path("kubeconfig-f2-naive");
    write_kubeconfig(&kc_hk, &sb.url(), "f2-hookops");
    write_kubeconfig(&kc_nv, &sb.url(), "f2-naive");
    namespaces(b, &kc_hk, &["f2-hookops".into(), "f2-naive".into()]);
    let work = manifests_repo(b, "f2-work", 20, 100);
    let hk = bare_with_hookops(b, "f2-hookops.git", &kc_hk, "");
    // The naive hook: check the pushed tree out and apply all of it.
    let naive = b.path("f2-naive.git");
    b.git(
        b.tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            naive.to_str().unwrap(),
        ],
    );
    let naive_cache = b.path("kubecache-naive");
    std::fs::write(
        naive.join("hooks/post-receive"),
        format!(
            "#!/bin/sh\nset -e\nwhile read old new ref; do\n  d=$(mktemp -d)\n  git archive \"$new\" | tar -x -C \"$d\"\n  {KUBECTL} --kubeconfig '{}' --cache-dir '{}' apply -R -f \"$d\" >/dev/null\n  rm -rf \"$d\"\ndone\n",
            kc_nv.display(),
            naive_cache.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        naive.join("hooks/post-receive"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    b.git(&work, &["remote", "add", "hookops", hk.to_str().unwrap()]);
    b.git(&work, &["remote", "add", "naive", naive.to_str().unwrap()]);
    let work_dir = work.clone();
    let push = move |b: &Bench, remote: &str| {
        let mut c = b.command("git");
        c.arg("-C")
            .arg(&work_dir)
            .args(["push", "-q", remote, "HEAD:main"]);
        c
    };
    let first_hk = measure_ok(&mut push(b, "hookops"), None);
    let first_nv = measure_ok(&mut push(b, "naive"), None);
    println!(
        "first deploy of 2,000 objects (untimed setup): hookops {}, naive {}",
        ms(first_hk.wall),
        ms(first_nv.wall)
    );
    assert_eq!(
        sb.objects("v1", "ConfigMap").len(),
        4000,
        "both sides deployed 2,000 ConfigMaps"
    );
    let runs = b.runs.div_ceil(2).max(3);
    // Alternating pushes of one changed ConfigMap (in target `(i + shift) % 20`, object `cm`),
    // checked applied on both sides; the medians, and the speedup printed.
    let timed = |b: &Bench, tag: &str, shift: usize, cm: usize| -> (Duration, Duration) {
        let (mut hk_t, mut nv_t) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let value = format!("{tag}-{i}");
            let t = (i + shift) % 20;
            let name = format!("t{t:02}-cm{cm:03}");
            let file = format!("apps/t{t:02}/cm{cm:03}.yaml");
            std::fs::write(work.join(&file), configmap(&name, &value)).unwrap();
            b.git(
                &work,
                &["commit", "-q", "-am", &format!("{tag} change {i}")],
            );
            let mut one = |which: bool| {
                let (remote, ns, times) = if which {
                    ("hookops", "f2-hookops", &mut hk_t)
                } else {
                    ("naive", "f2-naive", &mut nv_t)
                };
                let m = measure_ok(&mut push(b, remote), None);
                assert_eq!(
                    value_of(sb, ns, &name).as_deref(),
                    Some(value.as_str()),
                    "{remote}: {name} not applied"
                );
                times.push(m.wall);
            };
            one(i % 2 == 0);
            one(i % 2 == 1);
        }
        let (h, n) = (median(&hk_t), median(&nv_t));
        println!("hookops push ms: {}", list(&hk_t));
        println!("naive push ms:   {}", list(&nv_t));
        println!(
            "median: hookops {}, naive {}: {:.1}× faster",
            ms(h),
            ms(n),
            n.as_secs_f64() / h.as_secs_f64()
        );
        (h, n)
    };
    let (h, n) = timed(b, "run", 0, 42);
    // Target "≥ 30× faster": hookops ÷ naive ≤ 1/30.
    b.ratio_row(
        "2. one change in 2,000 objects, push→applied",
        h,
        n,
        "archive + apply -R",
        "≥ 30× faster (≤ 0.033)",
        1.0 / 30.0,
    );
    if latency.is_zero() {
        return;
    }
    // The sandbox answers in a fraction of a millisecond; a real API server takes a few. Same
    // pushes again with that much latency on every request, for both hooks alike.
    println!(
        "-- the same with {} of API latency per request (kube-sandbox stall_path)",
        ms(latency)
    );
    sb.stall_path("/", latency);
    let (h, n) = timed(b, "latency", 7, 58);
    sb.clear_faults();
    b.ratio_row(
        &format!("2b. the same, {} API latency per request", ms(latency)),
        h,
        n,
        "archive + apply -R",
        "(supplementary)",
        1.0 / 30.0,
    );
}

fn figure3(b: &mut Bench, sb: &Sandbox) {
    println!("\n== 3. initial deploy of 1,000 objects (10 targets × 100): hookops vs one `kubectl apply --server-side`");
    let runs = b.runs.div_ceil(2).max(3);
    let kc_hk = b.path("kubeconfig-f3-hookops");
    let kc_fl = b.path("kubeconfig-f3-floor");
    let names: Vec<String> = (0..runs)
        .flat_map(|i| {
            [
                format!("f3-hookops-{i}"),
                format!("f3-floor-{i}"),
                format!("f3-floor-gc-{i}"),
            ]
        })
        .collect();
    write_kubeconfig(&kc_hk, &sb.url(), "default");
    namespaces(b, &kc_hk, &names);
    let work = manifests_repo(b, "f3-work", 10, 100);
    let repo = bare_with_hookops(b, "f3.git", &kc_hk, "");
    b.git(&work, &["push", "-q", repo.to_str().unwrap(), "HEAD:main"]);
    // The push above deployed into "default"; every timed run deploys into a fresh namespace.
    let floor_cache = b.path("kubecache-floor");
    let apps = work.join("apps");
    // Warm the floor's discovery cache like hookops' (which the setup push warmed).
    write_kubeconfig(&kc_fl, &sb.url(), "default");
    measure_ok(
        b.command(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc_fl)
            .arg("--cache-dir")
            .arg(&floor_cache)
            .args(["api-resources"]),
        None,
    );
    let mut hk_t = Vec::new();
    let mut fl_t = Vec::new();
    let mut gc_t = Vec::new();
    let floor = |ns: &str, tuned: bool| {
        write_kubeconfig(&kc_fl, &sb.url(), ns);
        let mut c = b.command(KUBECTL);
        if tuned {
            for (var, value) in hookops::backends::kube::GO_GC {
                c.env(var, value);
            }
        }
        c.arg("--kubeconfig")
            .arg(&kc_fl)
            .arg("--cache-dir")
            .arg(&floor_cache)
            .args(["apply", "--server-side", "-R", "-f"])
            .arg(&apps);
        let m = measure_ok(&mut c, None);
        assert_eq!(value_of(sb, ns, "t09-cm099").as_deref(), Some("v1"));
        m.wall
    };
    for i in 0..runs {
        // Not alternated with the others: the floor again, with the collector settings hookops
        // gives its kubectl (GO_GC), to show how much of the ratio they account for.
        gc_t.push(floor(&format!("f3-floor-gc-{i}"), true));
        let mut one = |which: bool| {
            if which {
                let ns = format!("f3-hookops-{i}");
                write_kubeconfig(&kc_hk, &sb.url(), &ns);
                // A first deploy: no pointer, and no inventory (which would otherwise prune the
                // previous run's objects, in another namespace).
                b.git(&repo, &["update-ref", "-d", "refs/hookops/deployed/prod"]);
                b.git(&repo, &["update-ref", "-d", "refs/hookops/inventory/prod"]);
                let m = measure_ok(b.hookops(&repo).args(["replay", "main"]), None);
                assert!(
                    String::from_utf8_lossy(&m.stdout).contains("whole tree: nothing deployed yet"),
                    "not a first deploy"
                );
                assert_eq!(value_of(sb, &ns, "t09-cm099").as_deref(), Some("v1"));
                hk_t.push(m.wall);
            } else {
                fl_t.push(floor(&format!("f3-floor-{i}"), false));
            }
        };
        one(i % 2 == 0);
        one(i % 2 == 1);
    }
    let (h, f) = (median(&hk_t), median(&fl_t));
    println!("hookops replay (first deploy) ms: {}", list(&hk_t));
    println!("kubectl apply --server-side ms:   {}", list(&fl_t));
    let ratio = h.as_secs_f64() / f.as_secs_f64();
    println!(
        "median: hookops {}, floor {}: ratio {ratio:.2}",
        ms(h),
        ms(f)
    );
    b.ratio_row(
        "3. initial deploy, 1,000 objects / 10 targets",
        h,
        f,
        "1× kubectl SSA",
        "≤ 1.2×",
        1.2,
    );
    let g = median(&gc_t);
    println!(
        "kubectl apply --server-side, GOGC=off GOMEMLIMIT=512MiB ms: {}",
        list(&gc_t)
    );
    b.ratio_row(
        "3b. the same, floor kubectl with hookops' GC settings",
        h,
        g,
        "1× kubectl SSA, GO_GC",
        "(supplementary)",
        1.2,
    );
}

fn figure4(b: &mut Bench, sb: &Sandbox, parallel: usize) {
    println!("\n== 4. twenty changed independent targets: [deploy] parallel = {parallel} vs parallel = 1");
    let kc = b.path("kubeconfig-f4");
    write_kubeconfig(&kc, &sb.url(), "f4");
    namespaces(b, &kc, &["f4".into()]);
    let work = manifests_repo(b, "f4-work", 20, 10);
    let repo = bare_with_hookops(b, "f4.git", &kc, "");
    b.git(&work, &["push", "-q", repo.to_str().unwrap(), "HEAD:main"]);
    let a = b.git(&work, &["rev-parse", "HEAD"]);
    for t in 0..20 {
        let file = format!("apps/t{t:02}/cm003.yaml");
        std::fs::write(work.join(&file), configmap(&format!("t{t:02}-cm003"), "v2")).unwrap();
    }
    b.git(&work, &["commit", "-q", "-am", "twenty targets"]);
    b.git(&work, &["push", "-q", repo.to_str().unwrap(), "HEAD:main"]);
    let key = b.signing_key();
    let mut par_t = Vec::new();
    let mut seq_t = Vec::new();
    let mut unbatched_t = Vec::new();
    let runs = b.runs.div_ceil(2).max(3);
    for i in 0..runs {
        // Not alternated with the others: parallel threads, each target its own kubectl.
        write_server_config(
            &repo,
            &server_config(
                &kc,
                &key,
                &format!("[deploy]\nparallel = {parallel}\nbatch = false\n"),
            ),
        );
        let m = measure_ok(
            b.hookops(&repo).args(["replay", "main", "--from", &a]),
            None,
        );
        unbatched_t.push(m.wall);
        let mut one = |p: usize| {
            write_server_config(
                &repo,
                &server_config(&kc, &key, &format!("[deploy]\nparallel = {p}\n")),
            );
            let m = measure_ok(
                b.hookops(&repo).args(["replay", "main", "--from", &a]),
                None,
            );
            let out = String::from_utf8_lossy(&m.stdout);
            assert!(out.contains("20 targets"), "expected 20 targets: {out}");
            if p == 1 { &mut seq_t } else { &mut par_t }.push(m.wall);
        };
        if i % 2 == 0 {
            one(parallel);
            one(1);
        } else {
            one(1);
            one(parallel);
        }
    }
    let (p, s) = (median(&par_t), median(&seq_t));
    println!("parallel = {parallel} ms: {}", list(&par_t));
    println!("parallel = 1 ms: {}", list(&seq_t));
    let ratio = p.as_secs_f64() / s.as_secs_f64();
    println!(
        "median: parallel {}, sequential {}: ratio {ratio:.2}",
        ms(p),
        ms(s)
    );
    b.ratio_row(
        &format!("4. 20 changed targets, parallel = {parallel}"),
        p,
        s,
        "parallel = 1",
        "≤ 0.4×",
        0.4,
    );
    let u = median(&unbatched_t);
    println!(
        "parallel = {parallel}, batch = false ms: {}",
        list(&unbatched_t)
    );
    b.ratio_row(
        "4b. the same, batch = false (one kubectl per target)",
        u,
        s,
        "parallel = 1",
        "(supplementary)",
        0.4,
    );
}

// ---------------------------------------------------------------------------------------------
// Figure 6: one push fanned out to ten environments (issue 18)

/// Environments of figure 6, each on a kube sandbox of its own.
const FANOUT_ENVS: usize = 10;

/// A server config with environments `e00`… (`envs` of them), each with its kubeconfig and
/// `paths = ["envs/eNN", "shared"]`, at most `parallel` deploying at once.
fn fanout_config(kubeconfigs: &[PathBuf], envs: usize, parallel: usize, key: &Path) -> String {
    let mut text = String::new();
    for (i, kc) in kubeconfigs.iter().take(envs).enumerate() {
        text.push_str(&format!(
            "[[environment]]\nname = \"e{i:02}\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\npaths = [\"envs/e{i:02}\", \"shared\"]\n\n",
            kc.display()
        ));
    }
    text.push_str(&format!(
        "[deploy]\nenvironments_parallel = {parallel}\n\n[signing]\nkey = \"{}\"\n",
        key.display()
    ));
    text
}

fn figure6(b: &mut Bench) {
    println!(
        "\n== 6. one push to a shared directory, fanned out to {FANOUT_ENVS} environments (one kube sandbox each) vs one environment"
    );
    let sandboxes: Vec<Sandbox> = (0..FANOUT_ENVS)
        .map(|_| Sandbox::start().expect("starting a kube sandbox"))
        .collect();
    let kubeconfigs: Vec<PathBuf> = sandboxes
        .iter()
        .enumerate()
        .map(|(i, sb)| {
            let kc = b.path(&format!("kubeconfig-f6-e{i:02}"));
            write_kubeconfig(&kc, &sb.url(), "default");
            kc
        })
        .collect();
    // shared/ with 10 ConfigMaps, envs/eNN/ with 10 each; B changes one shared file.
    let work = b.path("f6-work");
    b.git(
        b.tmp.path(),
        &["init", "-q", "-b", "main", work.to_str().unwrap()],
    );
    let mut script = Vec::new();
    commit_header(
        &mut script,
        "refs/heads/main",
        1,
        1_700_000_000,
        "environments",
        None,
    );
    for i in 0..10 {
        inline_file(
            &mut script,
            &format!("shared/cm{i:03}.yaml"),
            &configmap(&format!("shared-cm{i:03}"), "v1"),
        );
        for e in 0..FANOUT_ENVS {
            inline_file(
                &mut script,
                &format!("envs/e{e:02}/cm{i:03}.yaml"),
                &configmap(&format!("e{e:02}-cm{i:03}"), "v1"),
            );
        }
    }
    script.extend_from_slice(b"\ndone\n");
    b.fast_import(&work, &script);
    b.git(&work, &["reset", "-q", "--hard", "main"]);
    let repo = b.path("f6.git");
    b.git(
        b.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    measure_ok(b.hookops(&repo).arg("install"), None);
    let key = b.signing_key();
    let all = fanout_config(&kubeconfigs, FANOUT_ENVS, FANOUT_ENVS, &key);
    write_server_config(&repo, &all);
    b.git(&work, &["push", "-q", repo.to_str().unwrap(), "HEAD:main"]);
    let a = b.git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(
        work.join("shared/cm003.yaml"),
        configmap("shared-cm003", "v2"),
    )
    .unwrap();
    b.git(&work, &["commit", "-q", "-am", "one shared file"]);
    b.git(&work, &["push", "-q", repo.to_str().unwrap(), "HEAD:main"]);
    let bb = b.git(&work, &["rev-parse", "HEAD"]);
    for sb in &sandboxes {
        assert_eq!(
            value_of(sb, "default", "shared-cm003").as_deref(),
            Some("v2")
        );
    }
    let input = format!("{a} {bb} refs/heads/main\n");
    // Each run: the pointers back at A, then the hook as git runs it.
    let run = |b: &Bench, envs: usize, parallel: usize| -> Duration {
        write_server_config(&repo, &fanout_config(&kubeconfigs, envs, parallel, &key));
        for e in 0..envs {
            b.git(
                &repo,
                &["update-ref", &format!("refs/hookops/deployed/e{e:02}"), &a],
            );
        }
        let m = measure_ok(b.hookops(&repo).arg("post-receive"), Some(input.as_bytes()));
        let out = String::from_utf8_lossy(&m.stdout);
        let deployed = out.matches(": deployed ").count();
        assert_eq!(
            deployed, envs,
            "expected {envs} environments deployed:\n{out}"
        );
        m.wall
    };
    let mut fan_t = Vec::new();
    let mut one_t = Vec::new();
    let mut seq_t = Vec::new();
    let runs = b.runs.div_ceil(2).max(3);
    for i in 0..runs {
        // Not alternated: all ten, one at a time (environments_parallel = 1).
        seq_t.push(run(b, FANOUT_ENVS, 1));
        if i % 2 == 0 {
            fan_t.push(run(b, FANOUT_ENVS, FANOUT_ENVS));
            one_t.push(run(b, 1, FANOUT_ENVS));
        } else {
            one_t.push(run(b, 1, FANOUT_ENVS));
            fan_t.push(run(b, FANOUT_ENVS, FANOUT_ENVS));
        }
    }
    let (f, o, q) = (median(&fan_t), median(&one_t), median(&seq_t));
    println!(
        "{FANOUT_ENVS} environments, environments_parallel = {FANOUT_ENVS} ms: {}",
        list(&fan_t)
    );
    println!("1 environment ms: {}", list(&one_t));
    println!(
        "{FANOUT_ENVS} environments, environments_parallel = 1 ms: {}",
        list(&seq_t)
    );
    b.ratio_row(
        &format!("6. one push to {FANOUT_ENVS} environments (10 clusters), environments_parallel = {FANOUT_ENVS}"),
        f,
        o,
        "one environment",
        "≤ 5× (10 on 2 CPUs)",
        5.0,
    );
    b.ratio_row(
        "6b. the same, environments_parallel = 1",
        q,
        o,
        "one environment",
        "(supplementary)",
        5.0,
    );
    for sb in sandboxes {
        sb.stop();
    }
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Figure 6: the status page of a 10,000-record repository

/// Records on the figure 6 repository.
const PAGE_RECORDS: usize = 10_000;

struct PageRepo {
    repo: PathBuf,
    a: String,
    b: String,
    config: String,
    page: PathBuf,
}

/// A bare repository with 10,000 commits on `main` (one file changing), `staging` behind it,
/// and 10,000 signed records for environments prod and staging: deploys with four targets
/// each, a failure with its rollback every 23rd prod deploy, a drift check every 100th commit.
fn page_repo(b: &Bench) -> PageRepo {
    let repo = b.path("page.git");
    b.git(
        b.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    let started = Instant::now();
    let commits = PAGE_RECORDS;
    let mut s = Vec::with_capacity(8 << 20);
    for i in 0..commits {
        commit_header(
            &mut s,
            "refs/heads/main",
            i + 1,
            1_700_000_000 + 600 * i as u64,
            &format!("web: settings {i} <b>&amp;</b>"),
            (i > 0).then_some(i),
        );
        inline_file(
            &mut s,
            "apps/web/cm.yaml",
            &configmap("settings", &i.to_string()),
        );
        s.push(b'\n');
    }
    s.extend_from_slice(b"done\n");
    b.fast_import(&repo, &s);
    let ids: Vec<String> = b
        .git(&repo, &["rev-list", "--reverse", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), commits);
    b.git(
        &repo,
        &["update-ref", "refs/heads/staging", &ids[commits - 200]],
    );

    use hookops::record::payload::{Action, Outcome, Report, TargetReport};
    let signer = hookops::record::Signer::load(&b.signing_key()).expect("signing key");
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); commits];
    let mut total = 0;
    let mut seed: u64 = 7;
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let time = |i: usize, extra: u64| {
        chrono::DateTime::from_timestamp(1_700_000_000 + 600 * i as i64 + extra as i64, 0)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut i = 0;
    while total < PAGE_RECORDS {
        let c = i % commits;
        let env = if c % 5 == 4 { "staging" } else { "prod" };
        let failed = env == "prod" && c.is_multiple_of(23) && c > 0;
        let targets: Vec<TargetReport> = ["web", "api", "worker", "db"]
            .iter()
            .map(|name| {
                let mut t = TargetReport::new(
                    name,
                    if *name == "db" {
                        "terraform"
                    } else {
                        "kubectl"
                    },
                );
                t.applied = rand(20) as usize;
                t.duration_ms = 200 + rand(if *name == "db" { 9000 } else { 2500 });
                if failed && *name == "api" {
                    t.result = Outcome::Failed;
                    t.reason = Some(
                        "Deployment api/api: unhealthy: 0 of 3 replicas available after 300 s"
                            .into(),
                    );
                }
                t
            })
            .collect();
        let ms = targets.iter().map(|t| t.duration_ms).max().unwrap_or(0) + 150;
        let mut rep = Report {
            env: env.into(),
            action: Action::Deploy,
            result: if failed {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            },
            commit: ids[c].clone(),
            from: (c > 0).then(|| ids[c - 1].clone()),
            ref_name: format!(
                "refs/heads/{}",
                if env == "prod" { "main" } else { "staging" }
            ),
            started_at: time(c, 0),
            finished_at: time(c, ms / 1000 + 1),
            host: "deploy-1".into(),
            signer: Some(signer.id()),
            targets,
            reason: failed.then(|| "api failed: Deployment api/api: unhealthy".to_string()),
            rolled_back_to: failed.then(|| ids[c - 1].clone()),
            kept: Vec::new(),
            message: None,
            no_wait: false,
            pending: Vec::new(),
            allowed_by: None,
            hookops_version: Some(env!("CARGO_PKG_VERSION").into()),
        };
        let mut push = |c: usize, rep: &Report| {
            let payload = rep.payload();
            let sig = signer.sign(&payload).expect("sign");
            notes[c].push(hookops::record::encode(&payload, Some(&sig)));
        };
        push(c, &rep);
        total += 1;
        if failed && total < PAGE_RECORDS {
            let back = Report {
                action: Action::Rollback,
                result: Outcome::Succeeded,
                commit: ids[c - 1].clone(),
                from: Some(ids[c].clone()),
                started_at: time(c, ms / 1000 + 2),
                finished_at: time(c, ms / 1000 + 40),
                reason: None,
                rolled_back_to: None,
                ..rep.clone()
            };
            push(c - 1, &back);
            total += 1;
        }
        if c % 100 == 99 && total < PAGE_RECORDS {
            rep.action = Action::Drift;
            rep.result = Outcome::Succeeded;
            rep.reason = None;
            rep.rolled_back_to = None;
            rep.started_at = time(c, 300);
            rep.finished_at = time(c, 310);
            for t in &mut rep.targets {
                t.result = Outcome::Succeeded;
                t.reason = None;
                t.drifted = Some(0);
            }
            push(c, &rep);
            total += 1;
        }
        i += 1;
    }
    let mut s = Vec::with_capacity(40 << 20);
    commit_header(
        &mut s,
        "refs/notes/hookops",
        1,
        1_800_000_000,
        "records",
        None,
    );
    for (c, recs) in notes.iter().enumerate() {
        if recs.is_empty() {
            continue;
        }
        let note = format!("{}\n", recs.join("\n\n"));
        s.extend_from_slice(format!("N inline {}\ndata {}\n", ids[c], note.len()).as_bytes());
        s.extend_from_slice(note.as_bytes());
        s.push(b'\n');
    }
    s.extend_from_slice(b"done\n");
    b.fast_import(&repo, &s);
    let (a, bb) = (ids[commits - 2].clone(), ids[commits - 1].clone());
    b.git(&repo, &["update-ref", "refs/hookops/deployed/prod", &a]);
    b.git(
        &repo,
        &[
            "update-ref",
            "refs/hookops/deployed/staging",
            &ids[commits - 201],
        ],
    );

    let stub = b.path("kubectl-stub-page");
    std::fs::write(&stub, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let allowed = b.path("allowed_signers");
    let public = std::fs::read_to_string(b.signing_key().with_extension("pub")).unwrap();
    std::fs::write(
        &allowed,
        format!("bench@hookops namespaces=\"hookops\" {public}"),
    )
    .unwrap();
    let kubeconfig = b.path("kubeconfig-unused");
    std::fs::write(&kubeconfig, "").unwrap();
    let config = format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{k}\"\n\n\
         [[environment]]\nname = \"staging\"\nbranch = \"staging\"\nkubeconfig = \"{k}\"\n\n\
         [signing]\nkey = \"{}\"\nallowed_signers = \"{}\"\n\n[tools]\nkubectl = \"{}\"\n",
        b.signing_key().display(),
        allowed.display(),
        stub.display(),
        k = kubeconfig.display(),
    );
    write_server_config(&repo, &config);
    println!(
        "fixture: {commits} commits, {total} signed records (prod and staging), built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    PageRepo {
        page: b.path("www/status.html"),
        repo,
        a,
        b: bb,
        config,
    }
}

fn figure7(b: &mut Bench, big: Option<&BigRepo>) {
    println!(
        "\n== 7. status page: `hookops status --html FILE` vs `hookops status` (10,000 records)"
    );
    let p = page_repo(b);
    let out = b.path("status.html");
    let mut html_t = Vec::new();
    let mut text_t = Vec::new();
    for i in 0..b.runs * 2 {
        let mut one = |which: bool| {
            if which {
                let m = measure_ok(
                    b.hookops(&p.repo).args(["status", "--html"]).arg(&out),
                    None,
                );
                html_t.push(m.wall);
            } else {
                let m = measure_ok(b.hookops(&p.repo).arg("status"), None);
                text_t.push(m.wall);
            }
        };
        one(i % 2 == 0);
        one(i % 2 == 1);
    }
    let html = std::fs::read_to_string(&out).expect("the page");
    assert_eq!(
        html.matches("<li class=\"attempt").count(),
        100,
        "50 per environment"
    );
    assert!(html.contains("rolled back to"), "a rollback is linked");
    let (h, t) = (median(&html_t), median(&text_t));
    println!("hookops status --html ms: {}", list(&html_t));
    println!("hookops status ms: {}", list(&text_t));
    let kb = html.len() as f64 / 1024.0;
    println!(
        "median: status --html {}, status {}; page {kb:.0} KiB",
        ms(h),
        ms(t)
    );
    b.row(
        "7. status page, 10,000 records (status --html)",
        ms(h),
        format!("{} (hookops status)", ms(t)),
        h.as_secs_f64() / t.as_secs_f64(),
        "< 1 s",
        h < Duration::from_secs(1),
    );
    b.row(
        "7. page size (timeline 50 per environment)",
        format!("{kb:.0} KiB"),
        "-".into(),
        kb / 1024.0,
        "< 1 MiB",
        kb < 1024.0,
    );

    // What the refresh adds to a push: post-receive (stub kubectl, one target) with and
    // without `[web] page`, alternating.
    println!("\n== 7b. what the page costs a push: post-receive with `[web] page` − without (the render is detached)");
    let input = format!("{} {} refs/heads/main\n", p.a, p.b);
    let with = format!("{}\n[web]\npage = \"{}\"\n", p.config, p.page.display());
    let mut with_t = Vec::new();
    let mut without_t = Vec::new();
    for i in 0..b.runs * 2 {
        let mut one = |which: bool| {
            write_server_config(&p.repo, if which { &with } else { &p.config });
            b.git(&p.repo, &["update-ref", "refs/hookops/deployed/prod", &p.a]);
            let before = std::fs::metadata(&p.page).and_then(|m| m.modified()).ok();
            let m = measure_ok(
                b.hookops(&p.repo).arg("post-receive"),
                Some(input.as_bytes()),
            );
            assert!(String::from_utf8_lossy(&m.stdout).contains("deployed"));
            if which {
                with_t.push(m.wall);
                // The hook left the render to a detached process: let it finish (untimed) so
                // that it does not load the next run.
                let deadline = Instant::now() + Duration::from_secs(60);
                while std::fs::metadata(&p.page).and_then(|m| m.modified()).ok() == before {
                    assert!(
                        Instant::now() < deadline,
                        "the detached render never wrote the page"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            } else {
                without_t.push(m.wall);
            }
        };
        one(i % 2 == 0);
        one(i % 2 == 1);
    }
    assert!(p.page.exists(), "[web] page written by the hook");
    let (w, wo) = (median(&with_t), median(&without_t));
    println!("post-receive with [web] page ms: {}", list(&with_t));
    println!("post-receive without ms: {}", list(&without_t));
    println!(
        "median: with {}, without {}, refresh {}",
        ms(w),
        ms(wo),
        ms(w.saturating_sub(wo))
    );
    b.row(
        "7b. the page in the pusher's wait (with − without)",
        ms(w.saturating_sub(wo)),
        format!("{} (post-receive without)", ms(wo)),
        w.as_secs_f64() / wo.as_secs_f64(),
        "(reported)",
        true,
    );

    // The inventory count on the figure 1 repository (no server config there: environment
    // `default`, whose inventory holds 100,000 objects).
    if let Some(big) = big {
        let mut t = Vec::new();
        for _ in 0..b.runs {
            t.push(
                measure_ok(
                    b.hookops(&big.repo).args(["status", "--html"]).arg(&out),
                    None,
                )
                .wall,
            );
        }
        let html = std::fs::read_to_string(&out).expect("the page");
        assert!(html.contains("100,000"), "the inventory count");
        println!(
            "status --html on the figure 1 repository (a 100,000-object inventory) ms: {}",
            list(&t)
        );
        b.row(
            "7c. status page, a 100,000-object inventory",
            ms(median(&t)),
            "-".into(),
            0.0,
            "(reported)",
            true,
        );
    }
}

fn main() {
    let mut runs = 10;
    let mut only: Option<Vec<u32>> = None;
    let mut parallel = 8;
    let mut keep = false;
    let mut latency_ms = 2;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--only" => {
                only = Some(
                    args.next()
                        .expect("--only 1,2,…")
                        .split(',')
                        .map(|s| s.trim().parse().expect("figure number"))
                        .collect(),
                )
            }
            "--keep" => keep = true,
            "--latency-ms" => latency_ms = args.next().and_then(|v| v.parse().ok()).expect("--latency-ms N"),
            "--parallel" => parallel = args.next().and_then(|v| v.parse().ok()).expect("--parallel N"),
            // cargo bench passes --bench; nothing else is expected.
            "--bench" => {}
            other => panic!("unknown argument {other:?} (use --runs N, --only 1,2,3,4,5,6, --parallel N, --latency-ms N, --keep)"),
        }
    }
    let want = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    let tmp = tempfile::Builder::new()
        .prefix("hookops-bench-")
        .tempdir()
        .expect("tempdir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Bench\n\temail = bench@example.test\n[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n",
    )
    .unwrap();
    let mut b = Bench {
        tmp,
        home,
        runs,
        rows: Vec::new(),
    };
    println!(
        "hookops benchmarks: {HOOKOPS}; {runs} alternating runs per side (figures 2–4: {})",
        runs.div_ceil(2).max(3)
    );
    let started = Instant::now();
    let mut big = None;
    if want(1) || want(5) {
        let fixture = big_repo(&b);
        if want(1) {
            figure1(&mut b, &fixture);
        }
        if want(5) {
            figure5(&mut b, &fixture);
        }
        big = Some(fixture);
    }
    if want(7) {
        figure7(&mut b, big.as_ref());
    }
    if want(2) || want(3) || want(4) {
        let sb = Sandbox::start().expect("starting the kube sandbox");
        if want(2) {
            figure2(&mut b, &sb, Duration::from_millis(latency_ms));
        }
        if want(3) {
            figure3(&mut b, &sb);
        }
        if want(4) {
            figure4(&mut b, &sb, parallel);
        }
        sb.stop();
    }
    if want(6) {
        figure6(&mut b);
    }
    println!("\n| figure | hookops (median) | baseline (median) | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    for r in &b.rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure,
            r.hookops,
            r.baseline,
            r.ratio,
            r.target,
            if r.pass { "PASS" } else { "MISS" }
        );
    }
    println!(
        "\ntotal {:.0} s; load average now: {}",
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if keep {
        println!("fixtures kept in {}", b.tmp.keep().display());
    }
}
