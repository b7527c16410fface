//! Several hosts, one environment (issue 31, docs/ha.md): two bare repositories on one
//! machine, "host A" and "host B", each with its own hookops directory, `[deploy] host`,
//! signing key and ServiceAccount, deploy environment `prod` into one namespace of the real
//! test cluster with `lock = "lease"`. The cluster's audit log (docs/test-cluster.md) shows
//! who wrote what and when: each host writes as its own ServiceAccount.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{shared, Cluster};
use crate::util::{deployment_with, run, str_at, tools_present, Run, World, FAIL_ROLLOUT};

/// Lease timings of these tests: an expiry costs 6 s, not 15.
const TIMINGS: &str = "lease_duration = 6\nlease_renew = 4\nlease_retry = 1\n";

struct Host {
    w: World,
    /// The ServiceAccount it deploys as, as the audit log names it.
    user: String,
    name: &'static str,
}

struct Hosts {
    a: Host,
    b: Host,
    c: &'static Cluster,
    /// The namespace the objects go to, and the one holding the Lease and inventory copy.
    ns: String,
    lease_ns: String,
    /// Both signing keys, for `verify`.
    signers: std::path::PathBuf,
}

fn kubectl_ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two hosts of environment `prod` with `lock` (the Lease keys follow it) and `deploy` keys,
/// each other's peer.
fn two_hosts(lock: &str, deploy: &str) -> Option<Hosts> {
    if !tools_present() {
        return None;
    }
    let c = shared()?;
    let ns = c.unique("ha");
    let lease_ns = c.unique("ha-lease");
    kubectl_ok(c, &["create", "namespace", &ns]);
    kubectl_ok(c, &["create", "namespace", &lease_ns]);
    let mut hosts = Vec::new();
    for name in ["host-a", "host-b"] {
        let mut w = World::new();
        w.use_cluster();
        // Its own ServiceAccount with the deployer's ClusterRole (which holds the Lease rules
        // of docs/security.md), so the audit log tells the hosts apart.
        let sa = c.unique(name);
        kubectl_ok(
            c,
            &["create", "serviceaccount", &sa, "-n", "hookops-system"],
        );
        kubectl_ok(
            c,
            &[
                "create",
                "clusterrolebinding",
                &sa,
                "--clusterrole=hookops-deployer",
                &format!("--serviceaccount=hookops-system:{sa}"),
            ],
        );
        let token = kubectl_ok(
            c,
            &[
                "create",
                "token",
                &sa,
                "-n",
                "hookops-system",
                "--duration=2h",
            ],
        );
        let set = run(std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&w.kubeconfig)
            .args(["config", "set-credentials", "testenv-admin"])
            .arg(format!("--token={}", token.trim())));
        set.assert_ok();
        hosts.push(Host {
            w,
            user: format!("system:serviceaccount:hookops-system:{sa}"),
            name,
        });
    }
    let b = hosts.pop().unwrap();
    let a = hosts.pop().unwrap();
    let signers = a.w.tmp.path().join("both_signers");
    std::fs::write(
        &signers,
        format!(
            "{}{}",
            std::fs::read_to_string(&a.w.allowed_signers).unwrap(),
            std::fs::read_to_string(&b.w.allowed_signers).unwrap()
        ),
    )
    .unwrap();
    let keys = if lock == "lease" {
        format!("lock = \"lease\"\nlease_namespace = \"{lease_ns}\"\n{TIMINGS}")
    } else {
        String::new()
    };
    for (me, peer) in [(&a, &b), (&b, &a)] {
        me.w.write_server_config(&format!(
            "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\non_failure = \"stop\"\n{keys}\n[deploy]\nhost = \"{}\"\n{deploy}\n[signing]\nkey = \"{}\"\n\n[sync]\npeers = [\"{}\"]\n",
            me.w.kubeconfig.display(),
            me.name,
            me.w.key.display(),
            peer.w.server.display(),
        ));
    }
    // One working copy pushes to both servers, as a mirror would receive the same commits.
    a.w.in_clone(&["remote", "add", "b", b.w.server.to_str().unwrap()])
        .assert_ok();
    Some(Hosts {
        a,
        b,
        c,
        ns,
        lease_ns,
        signers,
    })
}

impl Hosts {
    /// `git push REMOTE HEAD:REF` from the working copy, started and not waited for.
    fn start_push(&self, remote: &str, refspec: &str) -> Child {
        let mut cmd = self.a.w.base_command("git");
        cmd.current_dir(&self.a.w.clone)
            .args(["push", "-q", remote, refspec])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git push")
    }

    fn push(&self, remote: &str, refspec: &str) -> Run {
        self.start_push(remote, refspec)
            .wait_with_output()
            .expect("git push")
            .into()
    }

    /// Pushes the working copy's HEAD to `main` of both servers at once.
    fn push_both(&self) -> (Run, Run) {
        let a = self.start_push("origin", "HEAD:main");
        let b = self.start_push("b", "HEAD:main");
        (
            a.wait_with_output().expect("push a").into(),
            b.wait_with_output().expect("push b").into(),
        )
    }

    /// The Lease as the test's admin sees it.
    fn lease(&self) -> Option<serde_json::Value> {
        self.c.get_json(
            "leases.coordination.k8s.io",
            Some(&self.lease_ns),
            "hookops-prod",
        )
    }

    /// The pid of the hookops process holding the Lease for `commit`, once its annotations
    /// name that commit and its targets (the attempt has planned and is about to write).
    fn holder_pid(&self, commit: &str, timeout: Duration) -> u32 {
        let mut pid = None;
        let found = self.c.wait_for(timeout, || {
            let Some(l) = self.lease() else { return false };
            let annotations = &l["metadata"]["annotations"];
            if annotations["hookops.io/commit"] != commit
                || str_at(&l, "/metadata/annotations/hookops.io~1targets").is_empty()
            {
                return false;
            }
            // "host-a pid 123 /path/server.git"
            pid = str_at(&l, "/spec/holderIdentity")
                .split(' ')
                .nth(2)
                .and_then(|p| p.parse().ok());
            pid.is_some()
        });
        assert!(
            found,
            "no holder of the Lease deploying {commit}: {:?}",
            self.lease()
        );
        pid.unwrap()
    }

    /// Successful writes by either host's ServiceAccount in the test's namespaces, in the
    /// order the API server received them: (received, user, resource, name).
    fn writes(&self) -> Vec<(String, String, String, String)> {
        let log = std::fs::read_to_string(self.c.dir().join("audit.log")).expect("audit.log");
        let users = [self.a.user.as_str(), self.b.user.as_str()];
        let spaces = [self.ns.as_str(), self.lease_ns.as_str()];
        let mut out: Vec<_> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| users.contains(&str_at(e, "/user/username")))
            .filter(|e| spaces.contains(&str_at(e, "/objectRef/namespace")))
            .filter(|e| {
                e["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|c| c < 300)
            })
            .map(|e| {
                (
                    str_at(&e, "/requestReceivedTimestamp").to_string(),
                    str_at(&e, "/user/username").to_string(),
                    str_at(&e, "/objectRef/resource").to_string(),
                    str_at(&e, "/objectRef/name").to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn host_of(&self, user: &str) -> &'static str {
        if user == self.a.user {
            self.a.name
        } else {
            self.b.name
        }
    }

    fn configmaps(&self, n: usize, value: &str) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("k8s/cm{i}.yaml"),
                    format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm{i}\n  namespace: {}\ndata:\n  v: \"{value}\"\n",
                        self.ns
                    ),
                )
            })
            .collect()
    }

    fn commit(&self, files: &[(String, String)], message: &str) -> String {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        self.a.w.commit(&refs, message)
    }
}

/// Every run of one host's writes in the audit log begins with its take of the Lease: a
/// host never writes while the other holds it (a stray write would start a run of its own
/// without a take; a late renewal is refused with 409 and is not a write). Holds across kills:
/// a dead holder's run just ends. Returns the runs (host names), or the first stray write.
fn hand_overs(h: &Hosts) -> Result<Vec<&'static str>, String> {
    let writes = h.writes();
    let mut runs = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        if i > 0 && writes[i - 1].1 == w.1 {
            continue;
        }
        runs.push(h.host_of(&w.1));
        if w.2 != "leases" {
            let before = i
                .checked_sub(1)
                .map(|j| {
                    format!(
                        "{} wrote {} {} at {}",
                        h.host_of(&writes[j].1),
                        writes[j].2,
                        writes[j].3,
                        writes[j].0
                    )
                })
                .unwrap_or_default();
            return Err(format!(
                "{} wrote {} {} at {} without taking the Lease first; before it, {before}",
                h.host_of(&w.1),
                w.2,
                w.3,
                w.0,
            ));
        }
    }
    Ok(runs)
}

#[test]
fn concurrent_pushes_to_two_hosts_never_write_at_once_and_their_records_merge() {
    let Some(h) = two_hosts("lease", "") else {
        return;
    };
    let mut tips = Vec::new();
    for round in 0..3 {
        let mut files = h.configmaps(12, &format!("round {round}"));
        files.push((
            "k8s/web.yaml".into(),
            deployment_with("web", &h.ns, &format!("nginx:1.{round}"), 1, "", ""),
        ));
        let tip = h.commit(&files, &format!("round {round}"));
        let (a, b) = h.push_both();
        let both = format!("{}{}", a.all(), b.all());
        a.assert_ok();
        b.assert_ok();
        // One host deployed it; the other, once it had the Lease, followed its pointer.
        assert!(both.contains("is already deployed"), "{both}");
        assert_eq!(h.a.w.pointer("prod").as_deref(), Some(tip.as_str()));
        assert_eq!(h.b.w.pointer("prod").as_deref(), Some(tip.as_str()));
        tips.push(tip);
    }
    let runs = hand_overs(&h).unwrap_or_else(|e| panic!("{e}"));
    assert!(runs.len() >= 3, "the hosts took turns: {runs:?}");
    let cm =
        h.c.get_json("configmap", Some(&h.ns), "cm11")
            .expect("cm11");
    assert_eq!(str_at(&cm, "/data/v"), "round 2");

    // Then each host deploys alone once: A a commit, B the next (bringing both commits).
    let by_a = h.commit(&h.configmaps(12, "by a"), "by a");
    h.push("origin", "HEAD:main").assert_ok();
    let by_b = h.commit(&h.configmaps(12, "by b"), "by b");
    let out = h.push("b", "HEAD:main");
    out.assert_ok();
    assert!(
        out.all()
            .contains("deployed pointer follows another host's deploy"),
        "B's pointer first follows A's deploy: {}",
        out.all()
    );
    assert_eq!(h.b.w.last_record(&by_a)["host"], "host-a", "fetched from A");
    assert_eq!(h.b.w.last_record(&by_b)["host"], "host-b");
    // A fetches B's records after any command that deploys (here: a branch no environment
    // deploys).
    h.push("origin", "HEAD:refs/heads/elsewhere").assert_ok();
    let history = h.a.w.hookops(&["history", "--env", "prod", "--json"]);
    history.assert_ok();
    let hosts: BTreeSet<String> = serde_json::from_str::<Vec<serde_json::Value>>(&history.stdout)
        .expect("history JSON")
        .iter()
        .map(|r| str_at(r, "/host").to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        hosts.contains("host-a") && hosts.contains("host-b"),
        "{hosts:?}: {}",
        history.stdout
    );
    for rev in tips.iter().chain([&by_a, &by_b]) {
        h.a.w
            .hookops(&[
                "verify",
                rev,
                "--allowed-signers",
                h.signers.to_str().unwrap(),
            ])
            .assert_ok();
    }
}

/// Kills with SIGKILL or stops with SIGSTOP.
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (a hook of its own push).
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// C1 (web healthy, cm `keep`) deployed by A, B following; C2 (web failing its rollout for
/// 30 s, a new cm `extra`) pushed to A in the background and parked on B (a branch B does not
/// deploy, so B has the commit); returns (C1, C2, A's push, A's hook pid) once A is applying.
fn a_mid_deploy(h: &Hosts) -> (String, String, Child, u32) {
    let cm = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\ndata:\n  v: \"1\"\n",
            h.ns
        )
    };
    let healthy = deployment_with("web", &h.ns, "nginx:1", 1, "", "");
    let c1 = h.commit(
        &[
            ("k8s/web.yaml".into(), healthy),
            ("k8s/keep.yaml".into(), cm("keep")),
        ],
        "c1",
    );
    h.push("origin", "HEAD:main").assert_ok();
    h.push("b", "HEAD:main").assert_ok();
    let failing = deployment_with(
        "web",
        &h.ns,
        "nginx:2",
        1,
        "  progressDeadlineSeconds: 30\n",
        FAIL_ROLLOUT,
    );
    let c2 = h.commit(
        &[
            ("k8s/web.yaml".into(), failing),
            ("k8s/extra.yaml".into(), cm("extra")),
        ],
        "c2",
    );
    h.push("b", "HEAD:refs/heads/parked").assert_ok();
    let push = h.start_push("origin", "HEAD:main");
    let pid = h.holder_pid(&c2, Duration::from_secs(60));
    assert!(
        h.c.wait_for(Duration::from_secs(30), || h
            .c
            .get_json("configmap", Some(&h.ns), "extra")
            .is_some()),
        "A never applied C2"
    );
    (c1, c2, push, pid)
}

/// C3: web healthy again, `extra` gone.
fn fix(h: &Hosts) -> String {
    h.a.w.in_clone(&["rm", "-q", "k8s/extra.yaml"]).assert_ok();
    h.commit(
        &[(
            "k8s/web.yaml".into(),
            deployment_with("web", &h.ns, "nginx:3", 1, "", ""),
        )],
        "c3",
    )
}

/// A SIGKILLed holder is taken over after expiry (and, before that, a push to B superseded
/// while it waits for the Lease records itself skipped).
#[test]
fn a_killed_holder_is_taken_over_after_expiry_and_the_taker_prunes_what_it_applied() {
    let Some(h) = two_hosts("lease", "") else {
        return;
    };
    let (_c1, c2, push_a, pid) = a_mid_deploy(&h);
    // While A holds the Lease, B receives a push, then another: the first, superseded while
    // it waits, gives up and records itself skipped.
    let waits = h.commit(
        &[(
            "k8s/keep.yaml".into(),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  namespace: {}\ndata:\n  v: \"2\"\n",
                h.ns
            ),
        )],
        "superseded while waiting",
    );
    let first_b = h.start_push("b", "HEAD:main");
    std::thread::sleep(Duration::from_secs(3));
    let c3 = fix(&h);
    let second_b = h.start_push("b", "HEAD:main");
    let first: Run = first_b.wait_with_output().expect("push b").into();
    assert!(
        first
            .all()
            .contains(&format!("skipped: superseded by {c3}")),
        "{}",
        first.all()
    );
    let rec = h.b.w.last_record(&waits);
    assert_eq!(
        (rec["result"].as_str(), rec["host"].as_str()),
        (Some("skipped"), Some("host-b"))
    );
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let a_out: Run = push_a.wait_with_output().expect("push a").into();
    let out: Run = second_b.wait_with_output().expect("push b").into();
    out.assert_ok();
    let text = out.all();
    assert!(
        text.contains(&format!("waiting for the Lease: held by host-a pid {pid}")),
        "{text}"
    );
    assert!(text.contains("took the Lease over from host-a"), "{text}");
    assert!(
        killed.elapsed() >= Duration::from_secs(6),
        "taken over before the Lease expired"
    );
    // A's attempt, recorded by B, on C2.
    let rec = h.b.w.last_record(&c2);
    assert_eq!(
        (rec["result"].as_str(), rec["host"].as_str()),
        (Some("failed"), Some("host-b"))
    );
    assert!(
        str_at(&rec, "/reason").starts_with("interrupted: host-a stopped renewing the Lease"),
        "{rec}"
    );
    // B deployed its tip, re-applying what A's attempt changed and pruning what it created:
    // B never applied `extra`; it knows of it from the inventory's cluster copy.
    let rec = h.b.w.last_record(&c3);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert!(
        h.c.get_json("configmap", Some(&h.ns), "extra").is_none(),
        "extra pruned: {text}"
    );
    let keep =
        h.c.get_json("configmap", Some(&h.ns), "keep")
            .expect("keep");
    assert_eq!(
        str_at(&keep, "/data/v"),
        "2",
        "the skipped commit's change came with C3"
    );
    let web = h.c.get_json("deployment", Some(&h.ns), "web").expect("web");
    assert_eq!(
        str_at(&web, "/spec/template/spec/containers/0/image"),
        "nginx:3"
    );
    assert_eq!(h.b.w.pointer("prod").as_deref(), Some(c3.as_str()));
    assert!(
        !a_out.all().contains(&format!("deployed {}", &c2[..7])),
        "A's hook was killed before it finished: {}",
        a_out.all()
    );
    hand_overs(&h).unwrap_or_else(|e| panic!("{e}"));
}

/// Targets `first` (a Deployment) and `second` (a ConfigMap, after `first`).
const TWO_TARGETS: &str = "[[target]]\nname = \"first\"\npath = \"k8s/first\"\ntype = \"kubectl\"\n\n[[target]]\nname = \"second\"\npath = \"k8s/second\"\ntype = \"kubectl\"\ndepends_on = [\"first\"]\n";

#[test]
fn a_holder_frozen_past_its_lease_stops_without_writing_and_records_so() {
    let Some(h) = two_hosts("lease", "") else {
        return;
    };
    let files = |image: &str, min_ready: u32, v: &str| {
        vec![
            ("hookops.toml".to_string(), TWO_TARGETS.to_string()),
            (
                "k8s/first/web.yaml".to_string(),
                deployment_with("web", &h.ns, image, 1, &format!("  minReadySeconds: {min_ready}\n"), ""),
            ),
            (
                "k8s/second/cm.yaml".to_string(),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: second\n  namespace: {}\ndata:\n  v: \"{v}\"\n",
                    h.ns
                ),
            ),
        ]
    };
    let c1 = h.commit(&files("nginx:1", 0, "1"), "c1");
    h.push("origin", "HEAD:main").assert_ok();
    h.push("b", "HEAD:main").assert_ok();
    // C2: `first` takes 12 s to become available, so A is frozen while it waits, with the
    // write of `second` still ahead of it.
    let c2 = h.commit(&files("nginx:2", 12, "2"), "c2");
    h.push("b", "HEAD:refs/heads/parked").assert_ok();
    let push_a = h.start_push("origin", "HEAD:main");
    let pid = h.holder_pid(&c2, Duration::from_secs(60));
    assert!(
        h.c.wait_for(Duration::from_secs(30), || h
            .c
            .get_json("deployment", Some(&h.ns), "web")
            .is_some_and(|d| str_at(
                &d,
                "/spec/template/spec/containers/0/image"
            ) == "nginx:2")),
        "A never applied C2's first target"
    );
    signal(pid, libc::SIGSTOP);
    let c3 = h.commit(&files("nginx:3", 0, "3"), "c3");
    let out = h.push("b", "HEAD:main");
    let resumed = chrono_now();
    signal(pid, libc::SIGCONT);
    out.assert_ok();
    assert!(
        out.all().contains("took the Lease over from host-a"),
        "{}",
        out.all()
    );
    let a_out: Run = push_a.wait_with_output().expect("push a").into();
    let text = a_out.all();
    assert!(text.contains("interrupted: lease lost"), "{text}");
    // Its own record (B's, fetched from the peer, says B took over).
    let rec =
        h.a.w
            .records(&c2)
            .into_iter()
            .find(|r| r["host"] == "host-a")
            .expect("A's record on C2");
    assert_eq!(rec["result"], "failed");
    assert!(
        str_at(&rec, "/reason").starts_with("interrupted: lease lost"),
        "{rec}"
    );
    assert_eq!(
        h.a.w.pointer("prod").as_deref(),
        Some(c1.as_str()),
        "A's pointer stays"
    );
    // Nothing written by A once it resumed (the write of `second` was not started); B's
    // deploy stands.
    let late: Vec<_> = h
        .writes()
        .into_iter()
        .filter(|w| w.1 == h.a.user && w.0 > resumed)
        .collect();
    assert!(late.is_empty(), "A wrote after it resumed: {late:?}");
    hand_overs(&h).unwrap_or_else(|e| panic!("{e}"));
    let cm =
        h.c.get_json("configmap", Some(&h.ns), "second")
            .expect("second");
    assert_eq!(str_at(&cm, "/data/v"), "3");
    let web = h.c.get_json("deployment", Some(&h.ns), "web").expect("web");
    assert_eq!(
        str_at(&web, "/spec/template/spec/containers/0/image"),
        "nginx:3"
    );
    assert_eq!(h.b.w.last_record(&c3)["result"], "succeeded");
}

/// Now as the audit log writes it (RFC 3339, microseconds, UTC).
fn chrono_now() -> String {
    let out = run(std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]));
    out.stdout.trim().to_string()
}

/// What the Lease prevents: with `lock = "file"` the same pushes make the two hosts write
/// at once, and the audit log shows it (one host, the other, the first again), which
/// `hand_overs` refuses. Keeps the check above honest: it can fail.
#[test]
fn without_the_lease_the_audit_log_shows_the_two_hosts_interleaved() {
    // One kubectl per target, one target at a time: each host writes for seconds.
    let Some(h) = two_hosts("file", "batch = false\nparallel = 1\n") else {
        return;
    };
    let mut interleaved = false;
    for round in 0..4 {
        let files: Vec<(String, String)> = h
            .configmaps(12, &format!("round {round}"))
            .into_iter()
            .map(|(path, text)| (path.replace(".yaml", "/cm.yaml"), text))
            .collect();
        h.commit(&files, &format!("round {round}"));
        let before = h.writes().len();
        let (a, b) = h.push_both();
        a.assert_ok();
        b.assert_ok();
        let writes = h.writes();
        let switches = writes[before..]
            .windows(2)
            .filter(|w| w[0].1 != w[1].1)
            .count();
        if switches >= 2 {
            assert!(hand_overs(&h).is_err());
            interleaved = true;
            break;
        }
    }
    assert!(
        interleaved,
        "two unlocked hosts never wrote at once in 4 rounds"
    );
}

/// The soak's two-host mode (`scripts/soak.sh --hosts 2`, docs/operations.md): pushes of
/// changing ConfigMaps to both hosts at once while the Lease's holder is SIGKILLed now and
/// then; at the end both hosts converge on the tip and every invariant holds. Parameters:
/// `HOOKOPS_SOAK_PUSHES` (default 6: CI's short run), `HOOKOPS_SOAK_SEED`.
#[test]
fn soak_two_hosts() {
    let param = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let pushes = param("HOOKOPS_SOAK_PUSHES", 6);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let seed = param("HOOKOPS_SOAK_SEED", clock % 1_000_000);
    let Some(h) = two_hosts("lease", "") else {
        return;
    };
    eprintln!("soak (two hosts): {pushes} pushes, seed {seed} (HOOKOPS_SOAK_SEED)");
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let started = Instant::now();
    let (mut kills, mut takeovers, mut interrupted) = (0, 0, 0);
    let mut present: BTreeSet<usize> = BTreeSet::new();
    let mut outputs = String::new();
    for i in 0..pushes {
        // Add, change and remove ConfigMaps cm0..cm7.
        for _ in 0..3 {
            let j = next(8) as usize;
            if !present.insert(j) {
                present.remove(&j);
                let _ = h.a.w.in_clone(&["rm", "-q", &format!("k8s/cm{j}.yaml")]);
            }
        }
        let files: Vec<(String, String)> = h
            .configmaps(8, &format!("push {i}"))
            .into_iter()
            .enumerate()
            .filter(|(j, _)| present.contains(j))
            .map(|(_, f)| f)
            .collect();
        h.commit(&files, &format!("push {i}"));
        let (pa, pb) = (
            h.start_push("origin", "HEAD:main"),
            h.start_push("b", "HEAD:main"),
        );
        if next(2) == 0 {
            std::thread::sleep(Duration::from_millis(200 + next(1300)));
            let holder = h
                .lease()
                .map(|l| str_at(&l, "/spec/holderIdentity").to_string())
                .unwrap_or_default();
            let pid: Option<u32> = holder.split(' ').nth(2).and_then(|p| p.parse().ok());
            let ours = pid.is_some_and(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("post-receive"))
            });
            if let (Some(p), true) = (pid, ours) {
                signal(p, libc::SIGKILL);
                kills += 1;
            }
        }
        for p in [pa, pb] {
            let run: Run = p.wait_with_output().expect("push").into();
            outputs.push_str(&run.all());
        }
    }
    let chaos = started.elapsed();
    // Converge: a last push to each host in turn, nobody killed.
    let tip = h.commit(&h.configmaps(8, "tip"), "tip");
    h.push("origin", "HEAD:main").assert_ok();
    h.push("b", "HEAD:main").assert_ok();
    h.push("origin", "HEAD:refs/heads/elsewhere").assert_ok();
    takeovers += outputs.matches("took the Lease over").count();
    interrupted += outputs.matches("interrupted").count();

    let mut violations = Vec::new();
    if let Err(e) = hand_overs(&h) {
        violations.push(e);
    }
    for host in [&h.a, &h.b] {
        if host.w.pointer("prod").as_deref() != Some(tip.as_str()) {
            violations.push(format!(
                "{}: pointer {:?}, not the tip",
                host.name,
                host.w.pointer("prod")
            ));
        }
    }
    for j in 0..8 {
        let cm = h.c.get_json("configmap", Some(&h.ns), &format!("cm{j}"));
        if cm.as_ref().map(|c| str_at(c, "/data/v")) != Some("tip") {
            violations.push(format!("cm{j}: {cm:?}, not the tip's"));
        }
    }
    let lease = h.lease().expect("the Lease");
    if !str_at(&lease, "/spec/holderIdentity").is_empty() {
        violations.push(format!("the Lease is still held: {lease}"));
    }
    let log =
        h.a.w
            .git(Some(&h.a.w.server), &["log", "--format=%H", "main"]);
    for rev in log.stdout.lines() {
        if h.a.w.note(rev).is_empty() {
            continue;
        }
        let v = h.a.w.hookops(&[
            "verify",
            rev,
            "--allowed-signers",
            h.signers.to_str().unwrap(),
        ]);
        if !v.ok() {
            violations.push(format!("verify {rev}: {}", v.all()));
        }
    }
    eprintln!(
        "soak (two hosts): {pushes} pushes in {:.1}s (converged {:.1}s), {kills} holders killed, {takeovers} takeovers, {interrupted} 'interrupted' lines, {} writes by the hosts",
        chaos.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        h.writes().len()
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {violations:#?}\n{outputs}"
    );
}

#[test]
fn doctor_reports_the_lock_and_checks_the_lease_rights() {
    let Some(h) = two_hosts("lease", "") else {
        return;
    };
    let ok = h.a.w.hookops(&["doctor"]);
    let text = ok.all();
    assert!(
        text.contains(&format!(
            "ok    env prod: lock = \"lease\": Lease {}/hookops-prod",
            h.lease_ns
        )),
        "{text}"
    );
    // A ServiceAccount that may deploy but not take the Lease.
    let sa = h.c.unique("no-lease");
    kubectl_ok(
        h.c,
        &["create", "serviceaccount", &sa, "-n", "hookops-system"],
    );
    kubectl_ok(
        h.c,
        &[
            "create",
            "rolebinding",
            &sa,
            "-n",
            &h.lease_ns,
            "--clusterrole=view",
            &format!("--serviceaccount=hookops-system:{sa}"),
        ],
    );
    let token = kubectl_ok(h.c, &["create", "token", &sa, "-n", "hookops-system"]);
    run(std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&h.b.w.kubeconfig)
        .args(["config", "set-credentials", "testenv-admin"])
        .arg(format!("--token={}", token.trim())))
    .assert_ok();
    let denied = h.b.w.hookops(&["doctor"]);
    denied.assert_fail();
    let text = denied.all();
    assert!(
        text.contains(&format!(
            "lock = \"lease\": may not get leases.coordination.k8s.io, create leases.coordination.k8s.io, update leases.coordination.k8s.io, create configmaps, patch configmaps, delete configmaps in namespace {}",
            h.lease_ns
        )),
        "{text}"
    );
    // With lock = "file" it says so, and asks nothing about Leases.
    let (_, file) = (&h.a, two_hosts("file", "").expect("hosts"));
    let text = file.a.w.hookops(&["doctor"]).all();
    assert!(
        text.contains("lock = \"file\": one host deploys this environment"),
        "{text}"
    );
}

#[test]
fn a_lease_that_cannot_be_taken_fails_the_deploy_with_a_record_and_writes_nothing() {
    let Some(h) = two_hosts("lease", "") else {
        return;
    };
    let config = h.a.w.server.join("hookops/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let missing = h.c.unique("nowhere");
    std::fs::write(
        &config,
        text.replace(
            &format!("lease_namespace = \"{}\"", h.lease_ns),
            &format!("lease_namespace = \"{missing}\""),
        ),
    )
    .unwrap();
    let tip = h.commit(&h.configmaps(2, "x"), "x");
    let out = h.push("origin", "HEAD:main");
    let text = out.all();
    assert!(
        text.contains("FAILED: taking the Lease: create Lease")
            && text.contains(&format!("namespaces \"{missing}\" not found")),
        "{text}"
    );
    let rec = h.a.w.last_record(&tip);
    assert_eq!(rec["result"], "failed");
    assert!(
        str_at(&rec, "/reason").starts_with("taking the Lease: "),
        "{rec}"
    );
    assert!(h.a.w.pointer("prod").is_none());
    assert!(h.c.get_json("configmap", Some(&h.ns), "cm0").is_none());
}
