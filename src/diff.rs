//! The diff stage: which paths changed between the deployed tree and the pushed tree. libgit2
//! compares trees by id, so unchanged subtrees are never read; renames appear as their old and
//! their new path, which is all the later stages need (the old path's objects may be pruned, the
//! new path's applied).

use std::collections::BTreeSet;

use anyhow::Result;
use git2::{Delta, DiffOptions, Repository, Tree};

#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Every path touched, old and new side, sorted.
    pub paths: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Paths that differ between `old` (None: nothing deployed, every file is new) and `new`.
pub fn changed_paths(repo: &Repository, old: Option<&Tree>, new: &Tree) -> Result<Changes> {
    let mut opts = DiffOptions::new();
    // Only ids are compared; never load blob content to classify binary files.
    opts.skip_binary_check(true).include_typechange(true);
    let diff = repo.diff_tree_to_tree(old, Some(new), Some(&mut opts))?;
    let mut changes = Changes::default();
    for delta in diff.deltas() {
        if delta.status() == Delta::Unmodified {
            continue;
        }
        for file in [delta.old_file(), delta.new_file()] {
            if file.id().is_zero() {
                continue;
            }
            if let Some(path) = file.path().and_then(|p| p.to_str()) {
                changes.paths.insert(path.to_string());
            }
        }
    }
    Ok(changes)
}
