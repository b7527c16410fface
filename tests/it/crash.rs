//! Crash safety (issue 17): exactly one true record per attempt, whatever dies when. Kills are
//! real SIGKILLs of a running hookops; the one moment a kill cannot be aimed at (between the
//! record and the end of the attempt) is reproduced by leaving the journal entry exactly as a
//! process killed there leaves it, and the test says so.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util::{configmap, deployment, hookops_bin, namespace, sandboxed, World, FAIL_ROLLOUT};

/// The journal entries (one file per attempt) in the server's state directory.
pub fn journal_entries(w: &World) -> Vec<PathBuf> {
    std::fs::read_dir(w.server.join("hookops/journal"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

fn app(w: &World, image: &str, annotations: &str) -> String {
    w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace("app")),
            (
                "k8s/app/deploy.yaml",
                &deployment("web", "app", image, annotations),
            ),
        ],
        &format!("app {image}"),
    )
}

fn spawn_replay(w: &World, to: &str) -> std::process::Child {
    w.base_command(hookops_bin())
        .args([
            "--repo",
            w.server.to_str().unwrap(),
            "replay",
            "main",
            "--to",
            to,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_kill_during_the_automatic_rollback_keeps_the_failed_deploys_record() {
    let Some(w) = sandboxed("") else { return };
    let good = app(&w, "web:1", "");
    w.push().assert_ok();
    let bad = app(&w, "web:2", FAIL_ROLLOUT);
    w.push_args(&["origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    // A stalled API: every write to the Deployment takes 3 s, so the rollback is still
    // running when the kill comes.
    w.sandbox().stall_path(
        "/apis/apps/v1/namespaces/app/deployments/web?",
        Duration::from_secs(3),
    );
    let mut child = spawn_replay(&w, &bad);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rolling_back = journal_entries(&w).iter().any(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"action\":\"rollback\""))
        });
        if rolling_back {
            break;
        }
        assert!(Instant::now() < deadline, "the rollback never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "hookops ended before its rollback"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    w.sandbox().clear_faults();
    // The failed deploy's record is on its commit already, naming where it rolled back to.
    let recs = w.records(&bad);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["result"], "failed");
    assert_eq!(recs[0]["rolled_back_to"], good.as_str());
    // The next run records the interrupted rollback once, on the commit it rolled back to.
    w.hookops(&["status"]).assert_ok();
    let out = w.hookops(&["replay", "main", "--to", &good]);
    assert!(out.stdout.contains("rollback of"), "{}", out.all());
    let back: Vec<_> = w
        .records(&good)
        .into_iter()
        .filter(|r| r["action"] == "rollback")
        .collect();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["result"], "failed");
    assert!(back[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("interrupted"));
    assert_eq!(
        w.records(&bad).len(),
        1,
        "a second record for the failed deploy"
    );
    assert!(journal_entries(&w).is_empty());
}

#[test]
fn an_attempt_killed_after_its_record_gets_no_second_record() {
    let Some(w) = sandboxed("") else { return };
    let a = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    w.push().assert_ok();
    let b = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "b",
    );
    w.push_args(&["origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    w.hookops(&["replay", "main", "--to", &b]).assert_ok();
    assert_eq!(w.records(&b).len(), 1);
    // As a process killed between its record and the end of its attempt leaves things (a
    // moment no kill can be aimed at): the entry says "recorded", the pointer has not moved.
    w.git(
        Some(&w.server),
        &["update-ref", "refs/hookops/deployed/prod", &a],
    )
    .assert_ok();
    let dir = w.server.join("hookops/journal");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prod.999999.1.0.json"),
        format!(
            r#"{{"env":"prod","action":"deploy","commit":"{b}","from":"{a}","ref":"refs/heads/main","started_at":"2026-01-02T03:04:05Z","pid":999999,"recorded":true,"pointer":["{a}","{b}"]}}"#
        ),
    )
    .unwrap();
    let out = w.hookops(&["replay", "main", "--to", &b]);
    out.assert_ok();
    let recs = w.records(&b);
    assert!(
        recs.iter().all(|r| r["result"] == "succeeded"),
        "a contradictory record: {recs:?}"
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(b.as_str()));
    let status = w.hookops(&["status", "--json"]);
    assert!(!status.stdout.contains("\"failed\""), "{}", status.stdout);
    assert!(journal_entries(&w).is_empty());
}

#[test]
fn a_dead_alert_webhook_does_not_hold_the_deploy_lock() {
    let Some(w) = sandboxed("") else { return };
    // Accepts connections and never answers: each alert try waits for its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    w.configure("", &format!("[alerts]\nwebhook = \"http://{addr}/hook\"\n"));
    w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    w.push().assert_ok();
    w.sandbox()
        .fail_path("/api/v1/namespaces/default/configmaps/b", 500);
    let bad = w.commit(
        &[("k8s/b.yaml", &configmap("b", Some("default"), "1"))],
        "b",
    );
    w.push_args(&["origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    let mut first = spawn_replay(&w, &bad);
    // Once the failed record is written, the first process only sends its alert.
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.records(&bad).is_empty() {
        assert!(Instant::now() < deadline, "no record");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.sandbox().clear_faults();
    // The second deploy's record lands while the first is still sending its alert (the
    // second sends its own recovery alert afterwards, also outside the lock).
    let started = Instant::now();
    let mut second = spawn_replay(&w, &bad);
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.last_record(&bad)["result"] != "succeeded" {
        assert!(
            Instant::now() < deadline,
            "the second deploy never succeeded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let first_still_alerting = first.try_wait().unwrap().is_none();
    for child in [&mut first, &mut second] {
        child.kill().ok();
        child.wait().unwrap();
    }
    drop(silent);
    assert!(
        first_still_alerting,
        "the first hookops finished its alert retries before the second deploy was recorded ({took:?})"
    );
    assert_eq!(w.last_record(&bad)["result"], "succeeded");
}

#[test]
fn an_orphaned_async_entry_is_not_queued_forever_and_is_taken_over() {
    let Some(w) = sandboxed("") else { return };
    w.configure("", "[deploy]\nmode = \"async\"\n");
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    // What a worker killed before it deployed leaves: its entry, older than the grace a new
    // worker gets, held by nobody.
    let queue = w.server.join("hookops/queue");
    std::fs::create_dir_all(&queue).unwrap();
    let orphan = queue.join("20260102T030405.000000Z-999999-0.json");
    std::fs::write(
        &orphan,
        format!(r#"{{"updates":[[null,"{c}","refs/heads/main"]]}}"#),
    )
    .unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(old)
        .unwrap();
    w.push_args(&["origin", "HEAD:refs/heads/main"]).assert_ok();
    // The push queued its own entry; wait for its worker, which takes the orphan over too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&queue).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "queue never drained");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = w.hookops(&["status"]);
    status.assert_ok();
    assert!(!status.stdout.contains("queued"), "{}", status.stdout);
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    // Every worker wrote its own log.
    let logs: Vec<_> = std::fs::read_dir(w.server.join("hookops/logs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!logs.is_empty());
}

/// Writes a journal entry as a process killed mid-attempt leaves it.
fn journal_entry(w: &World, name: &str, text: &str) {
    let dir = w.server.join("hookops/journal");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn an_attempt_killed_between_its_record_and_its_mark_is_not_recorded_twice() {
    let Some(w) = sandboxed("") else { return };
    let a = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    w.push().assert_ok();
    let b = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "b",
    );
    w.push_args(&["origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    w.hookops(&["replay", "main", "--to", &b]).assert_ok();
    let recs = w.records(&b);
    assert_eq!(recs.len(), 1);
    let started = recs[0]["started_at"].as_str().unwrap().to_string();
    // As a process killed after writing its record and before marking its entry `recorded`
    // leaves things (a window of a few milliseconds the soak test can hit): the entry, not
    // marked, names the attempt by its start; the pointer has not moved.
    w.git(
        Some(&w.server),
        &["update-ref", "refs/hookops/deployed/prod", &a],
    )
    .assert_ok();
    journal_entry(
        &w,
        "prod.999999.1.0.json",
        &format!(
            r#"{{"env":"prod","action":"deploy","commit":"{b}","from":"{a}","ref":"refs/heads/main","started_at":"{started}","pid":999999,"recorded":false,"pointer":null}}"#
        ),
    );
    let out = w.hookops(&["replay", "main", "--to", &b]);
    out.assert_ok();
    assert!(
        out.stdout.contains("after its record was written"),
        "{}",
        out.stdout
    );
    let recs = w.records(&b);
    assert!(
        recs.iter().all(|r| r["result"] == "succeeded"),
        "a succeeded attempt also recorded as interrupted: {recs:?}"
    );
    assert_eq!(recs.len(), 2, "the replay's own attempt: {recs:?}");
    assert_eq!(w.pointer("prod").as_deref(), Some(b.as_str()));
    assert!(journal_entries(&w).is_empty());
}

#[test]
fn a_recovery_killed_before_removing_the_entry_does_not_record_twice() {
    let Some(w) = sandboxed("") else { return };
    let a = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    w.push().assert_ok();
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "c",
    );
    w.push_args(&["origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    let entry = format!(
        r#"{{"env":"prod","action":"deploy","commit":"{c}","from":"{a}","ref":"refs/heads/main","started_at":"2026-01-02T03:04:05.000Z","pid":999999,"recorded":false,"pointer":null}}"#
    );
    journal_entry(&w, "prod.999999.1.0.json", &entry);
    let out = w.hookops(&["replay", "main", "--to", &a]);
    out.assert_ok();
    assert!(out.stdout.contains("was interrupted"), "{}", out.stdout);
    assert_eq!(w.records(&c).len(), 1);
    // As a recovery killed after its `interrupted` record and before it removed the entry
    // leaves things: the same entry again.
    journal_entry(&w, "prod.999999.1.0.json", &entry);
    w.hookops(&["replay", "main", "--to", &a]).assert_ok();
    let recs = w.records(&c);
    assert_eq!(recs.len(), 1, "the interruption recorded twice: {recs:?}");
    assert!(journal_entries(&w).is_empty());
}

#[test]
fn a_corrupt_queue_entry_does_not_keep_the_others_queued() {
    let Some(w) = sandboxed("") else { return };
    w.configure("", "[deploy]\nmode = \"async\"\n");
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    // What a hook killed while writing its entry leaves (an empty file), before a good
    // orphaned entry: both older than a new worker's grace, held by nobody.
    let queue = w.server.join("hookops/queue");
    std::fs::create_dir_all(&queue).unwrap();
    let cut = queue.join("20260102T030405.000000Z-999998-0.json");
    std::fs::write(&cut, "").unwrap();
    let orphan = queue.join("20260102T030405.000001Z-999999-0.json");
    std::fs::write(
        &orphan,
        format!(r#"{{"updates":[[null,"{c}","refs/heads/main"]]}}"#),
    )
    .unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for p in [&cut, &orphan] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    w.push_args(&["origin", "HEAD:refs/heads/main"]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&queue).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "queue never drained: {:?}",
            std::fs::read_dir(&queue)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    let logs: String = std::fs::read_dir(w.server.join("hookops/logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(logs.contains("corrupt queue entry discarded"), "{logs}");
}

#[test]
fn ref_locks_left_by_a_killed_hookops_do_not_wedge_later_deploys() {
    let Some(w) = sandboxed("") else { return };
    w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "a",
    );
    w.push().assert_ok();
    // As processes killed while libgit2 updated a ref leave them: `<ref>.lock` files, which
    // git never removes. Two old ones, and one that is a second old when the push comes.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let locks = [
        w.server.join("refs/hookops/deployed/prod.lock"),
        w.server.join("refs/hookops/inventory/prod.lock"),
        w.server.join("refs/notes/hookops.lock"),
    ];
    for (i, lock) in locks.iter().enumerate() {
        std::fs::write(lock, "").unwrap();
        if i < 2 {
            std::fs::File::options()
                .write(true)
                .open(lock)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let b = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "2"))],
        "b",
    );
    let out = w.push();
    out.assert_ok();
    assert!(out.all().contains("a stale lock"), "{}", out.all());
    assert_eq!(w.last_record(&b)["result"], "succeeded", "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(b.as_str()));
    assert_eq!(w.configmap("default", "a").unwrap()["data"]["value"], "2");
    for lock in &locks {
        assert!(!lock.exists(), "{} is still there", lock.display());
    }
}
