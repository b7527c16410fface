//! Test fixtures for the pipeline's unit tests: real (bare, temporary) git repositories and the
//! trees and commits a test builds in them, the way a push would bring them.

use git2::{FileMode, Oid, Repository, Signature, Tree};

/// An empty bare repository in a temporary directory (kept alive by the first value).
pub fn repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    (dir, repo)
}

/// A tree of `files` on top of `base` (None: the empty tree); `None` text deletes.
pub fn tree<'r>(
    repo: &'r Repository,
    base: Option<&Tree>,
    files: &[(&str, Option<&str>)],
) -> Tree<'r> {
    let empty = repo.treebuilder(None).unwrap().write().unwrap();
    let start = match base {
        Some(t) => t.clone(),
        None => repo.find_tree(empty).unwrap(),
    };
    let mut b = git2::build::TreeUpdateBuilder::new();
    for (path, text) in files {
        match text {
            Some(text) => {
                let blob = repo.blob(text.as_bytes()).unwrap();
                b.upsert(*path, blob, FileMode::Blob);
            }
            None => {
                b.remove(*path);
            }
        }
    }
    let id = b.create_updated(repo, &start).unwrap();
    repo.find_tree(id).unwrap()
}

/// A commit of `files` over the tree of `parent` (None text deletes the file).
pub fn commit(repo: &Repository, parent: Option<Oid>, files: &[(&str, Option<&str>)]) -> Oid {
    let parent = parent.map(|c| repo.find_commit(c).unwrap());
    let base = parent.as_ref().map(|c| c.tree().unwrap());
    let tree = tree(repo, base.as_ref(), files);
    let who = Signature::now("test", "test@example.invalid").unwrap();
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(None, &who, &who, "change", &tree, &parents)
        .unwrap()
}
