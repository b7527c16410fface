//! Integration tests for signed status records in git notes, checked against the stock tools
//! that operators will use by hand: `ssh-keygen -Y verify` for signatures and `git notes` /
//! `git log --notes` for the notes ref. Also covers lossless concurrent appends (threads and
//! separate processes) and the union merge of diverged notes refs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use git2::{Oid, Repository};
use hookops::record::notes::{self, NOTES_REF};
use hookops::record::{self, AllowedSigners, Signer, Verdict};

use crate::util::{keygen, public_key, World};

/// A world whose clone has one commit per name in `commits`, opened with libgit2; their ids.
fn repo_with_commits(commits: &[&str]) -> (World, Repository, Vec<Oid>) {
    let w = World::new();
    // Repo-local identity: libgit2 (in-process) does not read the world's HOME.
    git(&w, &["config", "user.name", "hookops test"]);
    git(&w, &["config", "user.email", "test@example.com"]);
    let ids = commits
        .iter()
        .map(|name| Oid::from_str(&w.commit(&[], name)).expect("commit id"))
        .collect();
    let repo = Repository::open(&w.clone).expect("open repo");
    (w, repo, ids)
}

/// `git ARGS` in the world's clone, which must succeed; its stdout.
fn git(w: &World, args: &[&str]) -> String {
    w.in_clone(args).assert_ok().stdout.clone()
}

/// A passphrase-less key pair of `kind` in the world's directory; the private key's path.
fn key(w: &World, name: &str, kind: &str) -> std::path::PathBuf {
    let path = w.tmp.path().join(name);
    keygen(&path, kind, "");
    path
}

fn payload(commit: Oid, finished_at: &str, signer: &str, tag: &str) -> String {
    format!(
        r#"{{"env":"prod","action":"deploy","result":"succeeded","commit":"{commit}","from":"0000000000000000000000000000000000000000","ref":"refs/heads/main","started_at":"{finished_at}","finished_at":"{finished_at}","host":"{tag}","signer":"{signer}","targets":[{{"name":"web","type":"kubectl","result":"succeeded","applied":3,"pruned":1,"duration_ms":412}}]}}"#
    )
}

fn signed_record(signer: &Signer, commit: Oid, finished_at: &str, tag: &str) -> String {
    let p = payload(commit, finished_at, &signer.id(), tag);
    let sig = signer.sign(&p).expect("sign");
    record::encode(&p, Some(&sig))
}

fn unsigned_record(commit: Oid, tag: &str) -> String {
    record::encode(&payload(commit, "2025-06-01T12:00:00Z", "", tag), None)
}

/// Stock `ssh-keygen -Y verify` of a signed record.
fn ssh_keygen_verifies(
    w: &World,
    allowed: &Path,
    principal: &str,
    rec: &record::ParsedRecord,
    verify_time: Option<&str>,
) -> bool {
    let sig = rec.signature.as_deref().expect("signed record");
    w.ssh_keygen_verify(allowed, principal, &rec.payload, sig, verify_time)
        .ok()
}

fn note_records(repo: &Repository, commit: Oid) -> Vec<record::ParsedRecord> {
    let note = notes::read(repo, commit)
        .expect("read")
        .expect("note exists");
    record::parse_note(&note).unwrap_or_else(|e| panic!("note does not parse: {e}\n{note}"))
}

fn hosts(recs: &[record::ParsedRecord]) -> Vec<String> {
    recs.iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.payload).expect("json");
            v["host"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn signed_records_verify_with_stock_ssh_keygen_and_show_in_git() {
    let (w, repo, ids) = repo_with_commits(&["deploy me"]);
    let commit = ids[0];
    let mut allowed = String::new();
    let mut records = Vec::new();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = key(&w, &format!("id_{kind}"), kind);
        let signer = Signer::load(&key).unwrap_or_else(|e| panic!("{kind}: {e:#}"));
        allowed.push_str(&format!("{kind}@example.com {}\n", public_key(&key)));
        let rec = signed_record(&signer, commit, "2025-06-01T12:00:00Z", kind);
        notes::append(&repo, commit, &rec).expect("append");
        records.push(rec);
    }
    let allowed_path = w.tmp.path().join("allowed_signers");
    std::fs::write(&allowed_path, &allowed).expect("allowed_signers");
    let signers = AllowedSigners::load(&allowed_path).expect("parse allowed_signers");

    // Stock git reads the note byte for byte as written.
    let shown = git(&w, &["notes", "--ref=hookops", "show", &commit.to_string()]);
    assert_eq!(shown, format!("{}\n", records.join("\n\n")));
    let log = git(&w, &["log", "--notes=hookops", "-1", "--format=%N"]);
    assert!(log.starts_with(record::HEADER), "{log}");

    let parsed = record::parse_note(&shown).expect("parse git's output");
    assert_eq!(parsed.len(), 3);
    for (rec, kind) in parsed.iter().zip(["ed25519", "ecdsa", "rsa"]) {
        let principal = format!("{kind}@example.com");
        assert_eq!(
            record::verify(rec, &signers),
            Verdict::Good {
                principal: principal.clone()
            }
        );
        assert!(
            ssh_keygen_verifies(&w, &allowed_path, &principal, rec, None),
            "{kind}: ssh-keygen rejected a hookops signature"
        );
        let mut tampered = rec.clone();
        tampered.payload = tampered.payload.replace("\"applied\":3", "\"applied\":4");
        assert_ne!(tampered.payload, rec.payload);
        assert!(
            !ssh_keygen_verifies(&w, &allowed_path, &principal, &tampered, None),
            "{kind}: ssh-keygen accepted a tampered payload"
        );
        assert_eq!(record::verify(&tampered, &signers), Verdict::BadSignature);
    }
}

#[test]
fn encrypted_and_missing_keys_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("id_locked");
    keygen(&key, "ed25519", "s3cret");
    let err = format!("{:#}", Signer::load(&key).expect_err("encrypted key"));
    assert!(err.contains("passphrase-protected"), "{err}");
    assert!(err.contains("id_locked"), "{err}");
    assert!(!err.contains("OPENSSH PRIVATE KEY"), "{err}");

    let err = format!(
        "{:#}",
        Signer::load(&dir.path().join("nope")).expect_err("missing")
    );
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn eight_threads_times_ten_appends_keep_all_eighty_records() {
    let (w, _repo, ids) = repo_with_commits(&["busy"]);
    let commit = ids[0];
    let path = w.clone.clone();
    std::thread::scope(|s| {
        for t in 0..8 {
            let path = &path;
            s.spawn(move || {
                let repo = Repository::open(path).expect("open");
                for i in 0..10 {
                    let rec = unsigned_record(commit, &format!("t{t}-{i}"));
                    notes::append(&repo, commit, &rec).expect("append");
                }
            });
        }
    });
    let repo = Repository::open(&path).expect("open");
    let got: BTreeSet<String> = hosts(&note_records(&repo, commit)).into_iter().collect();
    let want: BTreeSet<String> = (0..8)
        .flat_map(|t| (0..10).map(move |i| format!("t{t}-{i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(note_records(&repo, commit).len(), 80);
    // Every append is its own notes commit on one linear history.
    let count = git(&w, &["rev-list", "--count", NOTES_REF]);
    assert_eq!(count.trim(), "80");
}

const WORKER_REPO: &str = "HOOKOPS_IT_RECORDS_WORKER_REPO";
const WORKER_COMMIT: &str = "HOOKOPS_IT_RECORDS_WORKER_COMMIT";
const WORKER_TAG: &str = "HOOKOPS_IT_RECORDS_WORKER_TAG";
const WORKER_COUNT: usize = 15;

/// Not a test on its own: the body of the child processes spawned by
/// `separate_processes_and_stock_git_appends_are_preserved` (re-exec of this test binary).
#[test]
#[ignore = "child-process worker; does nothing unless spawned by another test"]
fn append_worker_process() {
    let (Ok(repo), Ok(commit), Ok(tag)) = (
        std::env::var(WORKER_REPO),
        std::env::var(WORKER_COMMIT),
        std::env::var(WORKER_TAG),
    ) else {
        return;
    };
    let repo = Repository::open(repo).expect("open");
    let commit = Oid::from_str(&commit).expect("oid");
    for i in 0..WORKER_COUNT {
        let rec = unsigned_record(commit, &format!("{tag}-{i}"));
        notes::append(&repo, commit, &rec).expect("append from child process");
    }
}

#[test]
fn separate_processes_and_stock_git_appends_are_preserved() {
    let (w, repo, ids) = repo_with_commits(&["shared"]);
    let commit = ids[0];
    notes::append(&repo, commit, &unsigned_record(commit, "first")).expect("append");
    // A record added by stock git in between must survive later hookops appends.
    git(
        &w,
        &[
            "notes",
            "--ref=hookops",
            "append",
            "-m",
            &unsigned_record(commit, "by-git"),
            &commit.to_string(),
        ],
    );

    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = ["proc-a", "proc-b"]
        .iter()
        .map(|tag| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "records::append_worker_process",
                    "--ignored",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(WORKER_REPO, &w.clone)
                .env(WORKER_COMMIT, commit.to_string())
                .env(WORKER_TAG, tag)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning worker process")
        })
        .collect();
    // Threads in this process race the two children.
    std::thread::scope(|s| {
        for t in 0..2 {
            let path = &w.clone;
            s.spawn(move || {
                let repo = Repository::open(path).expect("open");
                for i in 0..WORKER_COUNT {
                    let rec = unsigned_record(commit, &format!("thread{t}-{i}"));
                    notes::append(&repo, commit, &rec).expect("append");
                }
            });
        }
    });
    for child in children {
        let out = child.wait_with_output().expect("worker");
        assert!(
            out.status.success(),
            "worker failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Guard against the filter silently matching nothing.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "worker did not run: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    notes::append(&repo, commit, &unsigned_record(commit, "last")).expect("append");

    let got = hosts(&note_records(&repo, commit));
    let mut want: BTreeSet<String> = ["first", "by-git", "last"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for tag in ["proc-a", "proc-b", "thread0", "thread1"] {
        want.extend((0..WORKER_COUNT).map(|i| format!("{tag}-{i}")));
    }
    assert_eq!(got.len(), want.len(), "records lost or duplicated");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(got[0], "first");
    assert_eq!(got[1], "by-git");
    assert_eq!(got[got.len() - 1], "last");
    // Stock git still reads the result.
    let shown = git(&w, &["notes", "--ref=hookops", "show", &commit.to_string()]);
    assert_eq!(record::parse_note(&shown).expect("parse").len(), want.len());
}

#[test]
fn merge_union_of_diverged_notes_refs() {
    let (w, repo, ids) = repo_with_commits(&["c1", "c2", "c3"]);
    let (c1, c2, c3) = (ids[0], ids[1], ids[2]);
    let tip = |repo: &Repository| repo.refname_to_id(NOTES_REF).expect("notes tip");

    notes::append(&repo, c1, &unsigned_record(c1, "base")).expect("append");
    let base = tip(&repo);
    // Our side.
    notes::append(&repo, c1, &unsigned_record(c1, "ours")).expect("append");
    notes::append(&repo, c2, &unsigned_record(c2, "ours-c2")).expect("append");
    let ours = tip(&repo);
    // Their side, built from the same base (as a remote would have).
    repo.reference(NOTES_REF, base, true, "test: rewind")
        .expect("rewind");
    notes::append(&repo, c1, &unsigned_record(c1, "theirs")).expect("append");
    notes::append(&repo, c3, &unsigned_record(c3, "theirs-c3")).expect("append");
    let theirs = tip(&repo);
    repo.reference(NOTES_REF, ours, true, "test: restore")
        .expect("restore");

    notes::merge_union(&repo, theirs).expect("merge");
    let merged = tip(&repo);
    let merge_commit = repo.find_commit(merged).expect("merge commit");
    assert_eq!(
        merge_commit.parent_ids().collect::<Vec<_>>(),
        vec![ours, theirs]
    );
    assert_eq!(hosts(&note_records(&repo, c1)), ["base", "ours", "theirs"]);
    assert_eq!(hosts(&note_records(&repo, c2)), ["ours-c2"]);
    assert_eq!(hosts(&note_records(&repo, c3)), ["theirs-c3"]);
    let listed: Vec<Oid> = notes::list(&repo)
        .expect("list")
        .into_iter()
        .map(|(oid, _)| oid)
        .collect();
    let mut want = vec![c1, c2, c3];
    want.sort();
    assert_eq!(listed, want);

    // Idempotent: merging the same tip again, or an ancestor, changes nothing.
    notes::merge_union(&repo, theirs).expect("merge again");
    notes::merge_union(&repo, base).expect("merge ancestor");
    assert_eq!(tip(&repo), merged);

    // Stock git agrees with what we read.
    let shown = git(&w, &["notes", "--ref=hookops", "show", &c1.to_string()]);
    assert_eq!(shown, notes::read(&repo, c1).expect("read").expect("note"));
    w.in_clone(&["fsck", "--no-progress"]).assert_ok();
}

#[test]
fn merge_union_into_empty_ref_fast_forwards() {
    let (_w, repo, ids) = repo_with_commits(&["c1"]);
    let c1 = ids[0];
    notes::append(&repo, c1, &unsigned_record(c1, "remote")).expect("append");
    let theirs = repo.refname_to_id(NOTES_REF).expect("tip");
    repo.find_reference(NOTES_REF)
        .and_then(|mut r| r.delete())
        .expect("delete ref");
    assert_eq!(notes::read(&repo, c1).expect("read"), None);
    notes::merge_union(&repo, theirs).expect("merge");
    assert_eq!(repo.refname_to_id(NOTES_REF).expect("tip"), theirs);
}

#[test]
fn fanout_notes_trees_are_read_and_kept() {
    let (w, repo, ids) = repo_with_commits(&["c1", "c2"]);
    let (c1, c2) = (ids[0], ids[1]);
    // Build a notes tree in git's fanout layout (`ab/cdef…`) by hand, as git does for big
    // notes trees.
    let hex = c1.to_string();
    let blob = repo
        .blob(format!("{}\n", unsigned_record(c1, "fanout")).as_bytes())
        .expect("blob");
    let mut inner = repo.treebuilder(None).expect("treebuilder");
    inner.insert(&hex[2..], blob, 0o100644).expect("insert");
    let inner = inner.write().expect("inner tree");
    let mut root = repo.treebuilder(None).expect("treebuilder");
    root.insert(&hex[..2], inner, 0o040000).expect("insert");
    let root = repo.find_tree(root.write().expect("root")).expect("tree");
    let sig = repo.signature().expect("signature");
    let commit = repo
        .commit(Some(NOTES_REF), &sig, &sig, "fanout notes", &root, &[])
        .expect("notes commit");
    assert!(!commit.is_zero());

    assert_eq!(hosts(&note_records(&repo, c1)), ["fanout"]);
    notes::append(&repo, c1, &unsigned_record(c1, "appended")).expect("append");
    notes::append(&repo, c2, &unsigned_record(c2, "new")).expect("append");
    assert_eq!(hosts(&note_records(&repo, c1)), ["fanout", "appended"]);
    // The layout is kept: both notes live under two-character directories.
    let files = git(&w, &["ls-tree", "-r", "--name-only", NOTES_REF]);
    let mut want = vec![
        format!("{}/{}", &hex[..2], &hex[2..]),
        format!("{}/{}", &c2.to_string()[..2], &c2.to_string()[2..]),
    ];
    want.sort();
    assert_eq!(files.lines().collect::<Vec<_>>(), want);
    let shown = git(&w, &["notes", "--ref=hookops", "show", &c2.to_string()]);
    assert!(shown.contains("\"host\":\"new\""), "{shown}");
}

#[test]
fn malformed_records_are_refused_before_touching_the_ref() {
    let (_w, repo, ids) = repo_with_commits(&["c1"]);
    let c1 = ids[0];
    for bad in [
        "just text".to_string(),
        format!(
            "{}\n\n{}",
            unsigned_record(c1, "a"),
            unsigned_record(c1, "b")
        ),
        String::new(),
    ] {
        assert!(notes::append(&repo, c1, &bad).is_err(), "{bad:?}");
    }
    let missing = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
    assert!(notes::append(&repo, missing, &unsigned_record(missing, "x")).is_err());
    assert!(
        repo.refname_to_id(NOTES_REF).is_err(),
        "no notes ref created"
    );
    assert_eq!(notes::list(&repo).expect("list"), vec![]);
}

#[test]
fn rotated_key_verdicts_follow_the_records_own_time() {
    let (w, repo, ids) = repo_with_commits(&["rotated"]);
    let commit = ids[0];
    let key_a = key(&w, "id_a", "ed25519");
    let key_b = key(&w, "id_b", "ed25519");
    let allowed_path = w.tmp.path().join("allowed_signers");
    std::fs::write(
        &allowed_path,
        format!(
            "# A retired at the turn of the year, B took over\n\
             ops@example.com namespaces=\"hookops\",valid-before=\"20260101\" {}\n\
             ops@example.com namespaces=\"hookops\",valid-after=\"20260101\" {}\n",
            public_key(&key_a),
            public_key(&key_b)
        ),
    )
    .expect("allowed_signers");
    let signers = AllowedSigners::load(&allowed_path).expect("allowed signers");
    let a = Signer::load(&key_a).expect("key a");
    let b = Signer::load(&key_b).expect("key b");

    let cases = [
        (&a, "2025-11-30T10:00:00Z", "20251130100000Z", true),
        (&a, "2026-06-01T10:00:00Z", "20260601100000Z", false),
        (&b, "2026-06-01T10:00:00Z", "20260601100000Z", true),
    ];
    for (signer, at, _, _) in &cases {
        notes::append(&repo, commit, &signed_record(signer, commit, at, at)).expect("append");
    }
    let recs = note_records(&repo, commit);
    let principal = "ops@example.com".to_string();
    let verdicts: Vec<Verdict> = recs.iter().map(|r| record::verify(r, &signers)).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Good {
                principal: principal.clone()
            },
            Verdict::Expired {
                principal: principal.clone()
            },
            Verdict::Good {
                principal: principal.clone()
            },
        ]
    );
    // ssh-keygen agrees when told the record's time (TZ=UTC, so its local time is UTC too).
    for (rec, (_, _, at, good)) in recs.iter().zip(&cases) {
        assert_eq!(
            ssh_keygen_verifies(&w, &allowed_path, &principal, rec, Some(at)),
            *good,
            "ssh-keygen verdict at {at}"
        );
    }
}
