//! Git side of status records: appending records to the note of a deployed commit under
//! `refs/notes/hookops`, reading them back, and union-merging a diverged notes ref (e.g. the
//! remote's after a fetch).
//!
//! Notes commits are built by hand rather than with `Repository::note`, because that API
//! rewrites the ref without checking what it pointed at: two deploys finishing at once would
//! silently drop one record. Here every update is a compare-and-swap of the notes ref against
//! the tip the new commit was built on, retried on conflict, so concurrent writers (threads or
//! processes) never lose a record. The trees stay in the layout stock `git notes` reads: a
//! blob per annotated commit named by its full hex id, at the fanout depth (`ab/cdef…`) the
//! tree already uses.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::Duration;

use super::payload::{self, Action, Outcome, Report};
use super::Signer;
use anyhow::{bail, Context, Result};
use git2::build::TreeUpdateBuilder;
use git2::{Commit, ErrorCode, FileMode, ObjectType, Oid, Repository, Signature, Tree};

/// The notes ref all records live under.
pub const NOTES_REF: &str = "refs/notes/hookops";

/// How often a compare-and-swap of the notes ref is retried before giving up. Each round is
/// a few milliseconds, and a loser only loses to a writer that made progress, so 50 covers far
/// more simultaneous deploys than one repository sees.
const MAX_TRIES: u32 = 50;

/// Makes and writes records: the one place a record of an attempt is built (`report`) and
/// appended, signed when a key is loaded, to the note of its commit (`write`).
pub struct Recorder {
    pub signer: Option<Signer>,
}

impl Recorder {
    /// A record of one attempt of `action` on `commit` for `env`, started at `started_at` and
    /// finished now, on this host, by this version of hookops; `result` until the caller says
    /// more (targets, reason, kept objects, rollback).
    pub fn report(
        &self,
        env: &str,
        action: Action,
        result: Outcome,
        commit: &str,
        ref_name: &str,
        started_at: &str,
    ) -> Report {
        Report {
            env: env.to_string(),
            action,
            result,
            commit: commit.to_string(),
            from: None,
            ref_name: ref_name.to_string(),
            started_at: started_at.to_string(),
            finished_at: payload::now(),
            host: payload::hostname(),
            signer: self.signer.as_ref().map(Signer::id),
            targets: Vec::new(),
            reason: None,
            rolled_back_to: None,
            kept: Vec::new(),
            hookops_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }
    }

    /// Appends the record, signed, to the note of `commit`. Its free text (reasons, kept,
    /// re-created and hook lines: tool and server messages, pushed names) is cleaned
    /// (`out::clean`) first, so no reader of the record ever prints a control sequence.
    pub fn write(&self, repo: &Repository, commit: Oid, rep: &Report) -> Result<()> {
        let payload = rep.cleaned().payload();
        let signature = match &self.signer {
            Some(s) => Some(s.sign(&payload)?),
            None => None,
        };
        let text = super::encode(&payload, signature.as_deref());
        append(repo, commit, &text).with_context(|| format!("appending the record to {commit}"))
    }
}

/// Appends `record` (one record as `record::encode` writes it) to the note of `commit`,
/// separated from earlier records by one blank line.
pub fn append(repo: &Repository, commit: Oid, record: &str) -> Result<()> {
    let record = record.trim_end_matches('\n');
    // A malformed record would make the whole note unparseable for every later reader.
    match crate::record::parse_note(record) {
        Ok(recs) if recs.len() == 1 => {}
        Ok(recs) => bail!(
            "refusing to append to the note of {commit}: expected exactly one record, got {}",
            recs.len()
        ),
        Err(e) => bail!("refusing to append a malformed record to the note of {commit}: {e}"),
    }
    repo.find_object(commit, None)
        .with_context(|| format!("annotating {commit}: object not found in the repository"))?;
    let who = committer(repo)?;
    let hex = commit.to_string();
    let message = format!("hookops: record for {hex}\n");

    update_ref(repo, &format!("hookops: append record to {hex}"), |tip| {
        let base = base_tree(repo, tip)?;
        let (path, mut content) = match find_note(&base, &hex)? {
            Some((path, blob)) => (path, blob_bytes(repo, blob)?),
            None => (fanout_path(&hex, fanout_depth(repo, &base)?), Vec::new()),
        };
        // Same joining as `git notes append`: one blank line between entries, final newline.
        while content.last() == Some(&b'\n') {
            content.pop();
        }
        if !content.is_empty() {
            content.extend_from_slice(b"\n\n");
        }
        content.extend_from_slice(record.as_bytes());
        content.push(b'\n');
        let blob = repo.blob(&content).context("writing note blob")?;
        let tree = TreeUpdateBuilder::new()
            .upsert(path.as_str(), blob, FileMode::Blob)
            .create_updated(repo, &base)
            .context("writing notes tree")?;
        let tree = repo.find_tree(tree).context("reading new notes tree")?;
        let parents: Vec<&Commit> = tip.into_iter().collect();
        let new = repo
            .commit(None, &who, &who, &message, &tree, &parents)
            .context("writing notes commit")?;
        Ok(Some(new))
    })
}

/// The note of `commit`, if it has one.
pub fn read(repo: &Repository, commit: Oid) -> Result<Option<String>> {
    let Some(tip) = notes_tip(repo)? else {
        return Ok(None);
    };
    let tree = tip.tree().context("reading notes tree")?;
    match find_note(&tree, &commit.to_string())? {
        Some((_, blob)) => Ok(Some(text(blob_bytes(repo, blob)?))),
        None => Ok(None),
    }
}

/// Every note under `NOTES_REF` as (annotated commit, note text), ordered by commit id.
pub fn list(repo: &Repository) -> Result<Vec<(Oid, String)>> {
    let Some(tip) = notes_tip(repo)? else {
        return Ok(Vec::new());
    };
    let tree = tip.tree().context("reading notes tree")?;
    collect_notes(repo, &tree)?
        .into_iter()
        .map(|(oid, (_, blob))| Ok((oid, text(blob_bytes(repo, blob)?))))
        .collect()
}

/// Merges the notes commit `theirs` (e.g. a fetched remote notes tip) into `NOTES_REF`: per
/// annotated commit the result holds our records, then their records we lack, exact
/// duplicates dropped. Committed with both parents; a no-op when `theirs` is already merged,
/// a fast-forward when we have nothing of our own.
pub fn merge_union(repo: &Repository, theirs: Oid) -> Result<()> {
    let their_commit = repo
        .find_commit(theirs)
        .with_context(|| format!("reading notes commit {theirs} to merge into {NOTES_REF}"))?;
    let their_tree = their_commit
        .tree()
        .with_context(|| format!("reading tree of notes commit {theirs}"))?;
    let who = committer(repo)?;
    let message = format!("hookops: union-merge notes {theirs} into {NOTES_REF}\n");

    update_ref(repo, &format!("hookops: merge notes {theirs}"), |tip| {
        let Some(ours) = tip else {
            return Ok(Some(theirs));
        };
        if ours.id() == theirs || repo.graph_descendant_of(ours.id(), theirs)? {
            return Ok(None);
        }
        let our_tree = ours.tree().context("reading notes tree")?;
        let our_notes = collect_notes(repo, &our_tree)?;
        let depth = fanout_depth(repo, &our_tree)?;
        let mut update = TreeUpdateBuilder::new();
        for (oid, (_, their_blob)) in collect_notes(repo, &their_tree)? {
            match our_notes.get(&oid) {
                Some((_, our_blob)) if *our_blob == their_blob => {}
                Some((path, our_blob)) => {
                    let ours_text = blob_bytes(repo, *our_blob)?;
                    let merged = union_records(&ours_text, &blob_bytes(repo, their_blob)?);
                    if merged != ours_text {
                        let blob = repo.blob(&merged).context("writing merged note")?;
                        update.upsert(path.as_str(), blob, FileMode::Blob);
                    }
                }
                None => {
                    let path = fanout_path(&oid.to_string(), depth);
                    update.upsert(path.as_str(), their_blob, FileMode::Blob);
                }
            }
        }
        let tree = update
            .create_updated(repo, &our_tree)
            .context("writing merged notes tree")?;
        if tree == their_tree.id() && repo.graph_descendant_of(theirs, ours.id())? {
            // Theirs already is the union and contains our history: fast-forward.
            return Ok(Some(theirs));
        }
        let tree = repo.find_tree(tree).context("reading merged notes tree")?;
        let new = repo
            .commit(None, &who, &who, &message, &tree, &[ours, &their_commit])
            .context("writing notes merge commit")?;
        Ok(Some(new))
    })
}

/// Compare-and-swap loop on `NOTES_REF`. `build` gets the current tip and returns the commit
/// the ref should move to (`None`: nothing to do); the ref moves only if it still points at
/// that tip, otherwise everything is rebuilt on the new tip.
fn update_ref(
    repo: &Repository,
    log_message: &str,
    mut build: impl FnMut(Option<&Commit>) -> Result<Option<Oid>>,
) -> Result<()> {
    for attempt in 0..MAX_TRIES {
        let tip = notes_tip(repo)?;
        let Some(new) = build(tip.as_ref())? else {
            return Ok(());
        };
        let expected = tip.as_ref().map(|t| t.id());
        let result = crate::gitref::swap(repo, NOTES_REF, new, expected, log_message);
        match result {
            Ok(_) => return Ok(()),
            Err(e) if lost_race(&e) => {
                log::debug!("{NOTES_REF} moved under us (attempt {attempt}): {e}; retrying");
                backoff(attempt);
            }
            Err(e) => return Err(e).with_context(|| format!("updating {NOTES_REF}")),
        }
    }
    bail!("could not update {NOTES_REF}: other writers kept winning ({MAX_TRIES} attempts)")
}

/// Errors that mean another writer moved or held the ref in between.
fn lost_race(e: &git2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked | ErrorCode::NotFound
    )
}

/// Randomised sleep so writers that collided do not collide again in lockstep.
fn backoff(attempt: u32) {
    let ceiling_ms = u64::from(2 + attempt.min(10) * 3);
    // RandomState is seeded randomly per process and advanced per instance: enough jitter
    // without a rand dependency.
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::thread::sleep(Duration::from_millis(1 + jitter % ceiling_ms));
}

fn notes_tip(repo: &Repository) -> Result<Option<Commit<'_>>> {
    let oid = match repo.refname_to_id(NOTES_REF) {
        Ok(oid) => oid,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {NOTES_REF}")),
    };
    let commit = repo
        .find_commit(oid)
        .with_context(|| format!("{NOTES_REF} points at {oid}, which is not a commit"))?;
    Ok(Some(commit))
}

/// The tip's tree, or an empty tree for the first note.
fn base_tree<'r>(repo: &'r Repository, tip: Option<&Commit<'r>>) -> Result<Tree<'r>> {
    match tip {
        Some(c) => c.tree().context("reading notes tree"),
        None => {
            let empty = repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .context("writing empty tree")?;
            repo.find_tree(empty).context("reading empty tree")
        }
    }
}

/// `hex` split into `depth` two-character directories, then the rest: git's notes fanout.
fn fanout_path(hex: &str, depth: usize) -> String {
    let depth = depth.min(hex.len() / 2);
    let mut path = String::with_capacity(hex.len() + depth);
    for i in 0..depth {
        path.push_str(&hex[2 * i..2 * i + 2]);
        path.push('/');
    }
    path.push_str(&hex[2 * depth..]);
    path
}

/// The note blob for `hex` at any fanout depth, with its path in the tree.
fn find_note(tree: &Tree, hex: &str) -> Result<Option<(String, Oid)>> {
    for depth in 0..hex.len() / 2 {
        let path = fanout_path(hex, depth);
        match tree.get_path(Path::new(&path)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => {
                return Ok(Some((path, entry.id())));
            }
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NotFound => {
                // No `ab/` directory means no deeper layout can hold it either.
                if depth > 0 && tree.get_path(Path::new(&hex[..2])).is_err() {
                    break;
                }
            }
            Err(e) => return Err(e).with_context(|| format!("looking up note {path}")),
        }
    }
    Ok(None)
}

/// The fanout depth the tree's existing notes use (0 = flat), so new notes match what git
/// wrote there before.
fn fanout_depth(repo: &Repository, tree: &Tree) -> Result<usize> {
    let mut current = tree.clone();
    for depth in 0..20 {
        let mut sub = None;
        for entry in current.iter() {
            let Some(name) = entry.name() else { continue };
            if !is_hex(name) {
                continue;
            }
            match entry.kind() {
                Some(ObjectType::Blob) if name.len() + 2 * depth == 40 => return Ok(depth),
                Some(ObjectType::Tree) if name.len() == 2 && sub.is_none() => {
                    sub = Some(entry.id())
                }
                _ => {}
            }
        }
        match sub {
            Some(id) => current = repo.find_tree(id).context("reading notes fanout tree")?,
            None => break,
        }
    }
    Ok(0)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// All notes in a notes tree, flat or fanned out: annotated commit → (path, blob).
/// Entries that are not notes are ignored, as git does.
fn collect_notes(repo: &Repository, tree: &Tree) -> Result<BTreeMap<Oid, (String, Oid)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), tree.clone())];
    while let Some((prefix, tree)) = stack.pop() {
        for entry in tree.iter() {
            let Some(name) = entry.name() else { continue };
            if !is_hex(name) {
                continue;
            }
            let hex = format!("{}{name}", prefix.replace('/', ""));
            let path = format!("{prefix}{name}");
            match entry.kind() {
                Some(ObjectType::Blob) if hex.len() == 40 => {
                    if let Ok(oid) = Oid::from_str(&hex) {
                        out.entry(oid).or_insert((path, entry.id()));
                    }
                }
                Some(ObjectType::Tree) if name.len() == 2 && hex.len() < 40 => {
                    let sub = repo
                        .find_tree(entry.id())
                        .with_context(|| format!("reading notes tree {path}"))?;
                    stack.push((format!("{path}/"), sub));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn blob_bytes(repo: &Repository, blob: Oid) -> Result<Vec<u8>> {
    Ok(repo
        .find_blob(blob)
        .with_context(|| format!("reading note blob {blob}"))?
        .content()
        .to_vec())
}

/// Notes are text; a foreign binary note is shown lossily rather than failing the listing.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Blank-line separated chunks of a note (a record never contains a blank line).
fn chunks(note: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    for line in note.split(|&b| b == b'\n') {
        let end = pos + line.len();
        if line.is_empty() {
            if let Some(s) = start.take() {
                out.push(&note[s..pos - 1]);
            }
        } else if start.is_none() {
            start = Some(pos);
        }
        pos = end + 1;
    }
    if let Some(s) = start {
        out.push(&note[s..note.len()]);
    }
    out.into_iter()
        .map(|c| c.strip_suffix(b"\n").unwrap_or(c))
        .collect()
}

/// Our chunks, then their chunks we lack, no duplicates, git's one-blank-line layout. Works on
/// chunks rather than parsed records so a note with foreign text still merges losslessly.
fn union_records(ours: &[u8], theirs: &[u8]) -> Vec<u8> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ours.len() + theirs.len());
    for chunk in chunks(ours).into_iter().chain(chunks(theirs)) {
        if seen.insert(chunk) {
            if !out.is_empty() {
                out.extend_from_slice(b"\n\n");
            }
            out.extend_from_slice(chunk);
        }
    }
    if !out.is_empty() {
        out.push(b'\n');
    }
    out
}

/// The repository's identity if configured; deploy hosts often have no user.name, and a
/// missing name must never cost a record.
pub fn committer(repo: &Repository) -> Result<Signature<'static>> {
    if let Ok(sig) = repo.signature() {
        return Ok(sig);
    }
    Signature::now("hookops", &format!("hookops@{}", hostname()))
        .context("building fallback committer identity")
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .collect::<String>()
        })
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_paths() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(fanout_path(hex, 0), hex);
        assert_eq!(fanout_path(hex, 1), format!("01/{}", &hex[2..]));
        assert_eq!(fanout_path(hex, 2), format!("01/23/{}", &hex[4..]));
    }

    #[test]
    fn chunk_union() {
        assert_eq!(chunks(b"a\nb\n\nc\n"), vec![&b"a\nb"[..], &b"c"[..]]);
        assert_eq!(chunks(b"\n\na\n\n\n\nb"), vec![&b"a"[..], &b"b"[..]]);
        assert!(chunks(b"").is_empty());
        assert_eq!(union_records(b"a\n\nb\n", b"b\n\nc\n"), b"a\n\nb\n\nc\n");
        assert_eq!(union_records(b"a\n", b"a"), b"a\n");
        assert_eq!(union_records(b"", b""), b"");
    }

    #[test]
    fn fallback_identity_is_valid() {
        let sig = Signature::now("hookops", &format!("hookops@{}", hostname()));
        assert!(sig.is_ok());
    }
}
