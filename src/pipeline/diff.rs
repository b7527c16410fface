//! The diff stage: which paths changed between the deployed tree and the pushed tree. Trees are
//! compared entry by entry and by id, so unchanged subtrees are never read (libgit2's own
//! tree-to-tree diff expands every directory on both sides, which in a repository of 2,000
//! directories reads and hashes 4,000 trees to find one changed file). Renames appear as their
//! old and their new path, which is all the later stages need (the old path's objects may be
//! pruned, the new path's applied).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use git2::{Oid, Repository, Tree, TreeEntry};

use crate::backends::objects;

#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Every path touched, old and new side, sorted.
    pub paths: BTreeSet<String>,
    /// Paths touched whose name (of the file or of a directory on the way) is not UTF-8, shown
    /// with the bad bytes escaped, each with the nearest directory above it that is UTF-8:
    /// they fail that directory's target (architecture.md, D3.3).
    pub bad_names: BTreeMap<String, String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Paths that differ between `old` (None: nothing deployed, every file is new) and `new`.
/// Paths that are not UTF-8 are kept apart (`bad_names`). A file replaced by a directory (or
/// the reverse) counts as the file and every file of the directory, as in `git diff-tree -r`.
pub fn changed_paths(repo: &Repository, old: Option<&Tree>, new: &Tree) -> Result<Changes> {
    let mut changes = Changes::default();
    let mut out = Out {
        paths: &mut changes.paths,
        bad: &mut changes.bad_names,
    };
    match old {
        Some(old) => compare(repo, old, new, "", &mut out)?,
        None => all_files(repo, new, "", true, &mut out)?,
    }
    Ok(changes)
}

/// Where the walk puts what it finds.
struct Out<'a> {
    paths: &'a mut BTreeSet<String>,
    bad: &'a mut BTreeMap<String, String>,
}

impl Out<'_> {
    /// Every file under a name that is not UTF-8 (`e` at `prefix`), remembered with `prefix`.
    fn bad_names(&mut self, repo: &Repository, e: &TreeEntry, prefix: &str) -> Result<()> {
        let shown = escaped_join(prefix, e.name_bytes());
        if !objects::is_tree(e.filemode()) {
            self.bad.insert(shown, prefix.to_string());
            return Ok(());
        }
        let t = find_tree(repo, e.id(), &shown)?;
        let mut err = None;
        t.walk(git2::TreeWalkMode::PreOrder, |root, f| {
            if !objects::is_tree(f.filemode()) {
                let path = format!("{shown}/{root}{}", objects::escape_name(f.name_bytes()));
                self.bad.insert(path, prefix.to_string());
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap_or_else(|e| err = Some(e));
        match err {
            Some(e) => Err(e).with_context(|| format!("{shown}: cannot read tree")),
            None => Ok(()),
        }
    }
}

fn escaped_join(prefix: &str, name: &[u8]) -> String {
    let name = objects::escape_name(name);
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// Git's tree order: names compare as bytes, a directory as if its name ended in `/`.
fn git_order(a: &TreeEntry, b: &TreeEntry) -> Ordering {
    let (x, y) = (a.name_bytes(), b.name_bytes());
    let n = x.len().min(y.len());
    match x[..n].cmp(&y[..n]) {
        Ordering::Equal => {}
        other => return other,
    }
    let next = |name: &[u8], e: &TreeEntry| match name.get(n) {
        Some(c) => *c,
        None if objects::is_tree(e.filemode()) => b'/',
        None => 0,
    };
    next(x, a).cmp(&next(y, b))
}

fn join(prefix: &str, name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    Some(if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    })
}

/// Walks both trees in order; descends only where the subtree ids differ.
fn compare(repo: &Repository, old: &Tree, new: &Tree, prefix: &str, out: &mut Out) -> Result<()> {
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => return Ok(()),
            (Some(x), None) => {
                gone_or_new(repo, &x, prefix, false, out)?;
                i += 1;
            }
            (None, Some(y)) => {
                gone_or_new(repo, &y, prefix, true, out)?;
                j += 1;
            }
            (Some(x), Some(y)) => match git_order(&x, &y) {
                Ordering::Less => {
                    gone_or_new(repo, &x, prefix, false, out)?;
                    i += 1;
                }
                Ordering::Greater => {
                    gone_or_new(repo, &y, prefix, true, out)?;
                    j += 1;
                }
                Ordering::Equal => {
                    if x.id() != y.id() || x.filemode() != y.filemode() {
                        match join(prefix, x.name_bytes()) {
                            Some(path) if objects::is_tree(x.filemode()) => {
                                let t1 = find_tree(repo, x.id(), &path)?;
                                let t2 = find_tree(repo, y.id(), &path)?;
                                compare(repo, &t1, &t2, &path, out)?;
                            }
                            Some(path) => {
                                out.paths.insert(path);
                            }
                            None => out.bad_names(repo, &y, prefix)?,
                        }
                    }
                    i += 1;
                    j += 1;
                }
            },
        }
    }
}

/// An entry on one side only: the file, or every file of the directory.
/// An entry of the old side only (`new` false) or of the new side only. A name that is not
/// UTF-8 counts only on the new side: a file that is gone fails nothing.
fn gone_or_new(
    repo: &Repository,
    e: &TreeEntry,
    prefix: &str,
    new: bool,
    out: &mut Out,
) -> Result<()> {
    let Some(path) = join(prefix, e.name_bytes()) else {
        return match new {
            true => out.bad_names(repo, e, prefix),
            false => Ok(()),
        };
    };
    if objects::is_tree(e.filemode()) {
        let t = find_tree(repo, e.id(), &path)?;
        all_files(repo, &t, &path, new, out)
    } else {
        out.paths.insert(path);
        Ok(())
    }
}

fn all_files(repo: &Repository, t: &Tree, prefix: &str, new: bool, out: &mut Out) -> Result<()> {
    for e in t.iter() {
        gone_or_new(repo, &e, prefix, new, out)?;
    }
    Ok(())
}

fn find_tree<'r>(repo: &'r Repository, id: Oid, path: &str) -> Result<Tree<'r>> {
    repo.find_tree(id)
        .with_context(|| format!("{path}: cannot read tree {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{DiffOptions, FileMode};

    /// Builds a tree from (path, content, mode) triples.
    fn build(repo: &Repository, files: &[(&str, &str, FileMode)]) -> Oid {
        let empty = repo.treebuilder(None).unwrap().write().unwrap();
        let base = repo.find_tree(empty).unwrap();
        let mut b = git2::build::TreeUpdateBuilder::new();
        for (path, text, mode) in files {
            let blob = repo.blob(text.as_bytes()).unwrap();
            b.upsert(*path, blob, *mode);
        }
        b.create_updated(repo, &base).unwrap()
    }

    /// What libgit2's tree-to-tree diff reports, for comparison.
    fn libgit2_paths(repo: &Repository, old: Option<&Tree>, new: &Tree) -> BTreeSet<String> {
        let mut opts = DiffOptions::new();
        opts.skip_binary_check(true).include_typechange(true);
        let diff = repo
            .diff_tree_to_tree(old, Some(new), Some(&mut opts))
            .unwrap();
        let mut out = BTreeSet::new();
        for d in diff.deltas() {
            for f in [d.old_file(), d.new_file()] {
                if !f.id().is_zero() {
                    out.insert(f.path().unwrap().to_str().unwrap().to_string());
                }
            }
        }
        out
    }

    #[test]
    fn same_paths_as_libgit2() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        use FileMode::{Blob, BlobExecutable, Link};
        let old = build(
            &repo,
            &[
                ("a.yaml", "1", Blob),
                ("a-b/x.yaml", "1", Blob),
                ("a/x.yaml", "1", Blob),
                ("a/deep/y.yaml", "1", Blob),
                ("same/z.yaml", "1", Blob),
                ("mode.sh", "1", Blob),
                ("link", "1", Blob),
                ("file-to-dir", "1", Blob),
                ("gone/p.yaml", "1", Blob),
                ("gone/q/r.yaml", "1", Blob),
            ],
        );
        let new = build(
            &repo,
            &[
                ("a.yaml", "2", Blob),
                ("a-b/x.yaml", "1", Blob),
                ("a/x.yaml", "1", Blob),
                ("a/deep/y.yaml", "2", Blob),
                ("a/deep/new.yaml", "1", Blob),
                ("same/z.yaml", "1", Blob),
                ("mode.sh", "1", BlobExecutable),
                ("link", "1", Link),
                ("file-to-dir/inner.yaml", "1", Blob),
                ("added/s.yaml", "1", Blob),
            ],
        );
        let (old, new) = (repo.find_tree(old).unwrap(), repo.find_tree(new).unwrap());
        let ours = changed_paths(&repo, Some(&old), &new).unwrap().paths;
        assert_eq!(ours, libgit2_paths(&repo, Some(&old), &new));
        assert!(
            ours.contains("a/deep/y.yaml") && !ours.contains("same/z.yaml"),
            "{ours:?}"
        );
        let first = changed_paths(&repo, None, &new).unwrap().paths;
        assert_eq!(first, libgit2_paths(&repo, None, &new));
        let back = changed_paths(&repo, Some(&new), &old).unwrap().paths;
        assert_eq!(back, libgit2_paths(&repo, Some(&new), &old));
    }

    fn tree_of(repo: &Repository, files: &[(&str, &str)]) -> Oid {
        let files: Vec<(&str, &str, FileMode)> = files
            .iter()
            .map(|(p, t)| (*p, *t, FileMode::Blob))
            .collect();
        build(repo, &files)
    }

    fn changed(repo: &Repository, old: Option<Oid>, new: Oid) -> Vec<String> {
        let old = old.map(|id| repo.find_tree(id).unwrap());
        let new = repo.find_tree(new).unwrap();
        changed_paths(repo, old.as_ref(), &new)
            .unwrap()
            .paths
            .into_iter()
            .collect()
    }

    #[test]
    fn renames_and_deletions_name_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let old = tree_of(
            &repo,
            &[
                ("cluster/namespaces.yaml", "kind: Namespace"),
                ("apps/web.yaml", "kind: Deployment"),
                ("apps/db.yaml", "kind: StatefulSet"),
                ("widgets/one.yaml", "kind: Widget"),
                ("widgets/two.yaml", "kind: Widget"),
            ],
        );
        let new = tree_of(
            &repo,
            &[
                // Renamed with the same content: the old path (to prune) and the new (to apply).
                ("platform/namespaces.yaml", "kind: Namespace"),
                ("apps/web.yaml", "kind: Deployment"),
                // Moved within a directory.
                ("apps/database.yaml", "kind: StatefulSet"),
            ],
        );
        assert_eq!(
            changed(&repo, Some(old), new),
            [
                "apps/database.yaml",
                "apps/db.yaml",
                "cluster/namespaces.yaml",
                "platform/namespaces.yaml",
                "widgets/one.yaml",
                "widgets/two.yaml",
            ]
        );
    }

    #[test]
    fn identical_trees_change_nothing_and_a_first_deploy_changes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let t = tree_of(
            &repo,
            &[("a/x.yaml", "1"), ("b/c/y.yaml", "2"), ("z.yaml", "3")],
        );
        let same = repo.find_tree(t).unwrap();
        assert!(changed_paths(&repo, Some(&same), &same).unwrap().is_empty());
        assert_eq!(
            changed(&repo, None, t),
            ["a/x.yaml", "b/c/y.yaml", "z.yaml"]
        );
    }

    #[test]
    fn unchanged_subtrees_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let old = tree_of(&repo, &[("big/a.yaml", "1"), ("small/b.yaml", "1")]);
        let new = tree_of(&repo, &[("big/a.yaml", "1"), ("small/b.yaml", "2")]);
        // Deleting the shared subtree's object proves the walk never opens it: reading it
        // would fail.
        let big = repo.find_tree(old).unwrap().get_name("big").unwrap().id();
        let path = dir
            .path()
            .join("objects")
            .join(&big.to_string()[..2])
            .join(&big.to_string()[2..]);
        std::fs::remove_file(path).unwrap();
        // Reopened, so that no cached copy of the deleted tree is at hand.
        let repo = Repository::open_bare(dir.path()).unwrap();
        assert!(repo.find_tree(big).is_err());
        assert_eq!(changed(&repo, Some(old), new), ["small/b.yaml"]);
    }

    #[test]
    fn names_that_are_not_utf8_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let old = tree_of(&repo, &[("k8s/a.yaml", "1")]);
        let blob = repo.blob(b"kind: ConfigMap").unwrap();
        let mut b = repo
            .treebuilder(Some(&repo.find_tree(old).unwrap()))
            .unwrap();
        b.insert(&b"bad-\xff.yaml"[..], blob, FileMode::Blob.into())
            .unwrap();
        let new = b.write().unwrap();
        assert!(changed(&repo, Some(old), new).is_empty());
        let with_good = tree_of(&repo, &[("k8s/a.yaml", "2")]);
        assert_eq!(changed(&repo, Some(new), with_good), ["k8s/a.yaml"]);
    }
}
