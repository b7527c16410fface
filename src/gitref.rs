//! Moving hookops' refs (notes, pointers, inventories, the reference index) by
//! compare-and-swap, the one way every writer updates them.

use git2::{Oid, Repository};

/// Sets `name` to `new` only if it still points at `old` (`None`: only if it does not exist),
/// checked under the ref's lock. The zero id is libgit2's "expect no ref": its non-forced
/// create checks for the ref before taking the lock, so two first writers could both "create"
/// it and the later one silently replace the other's commit.
pub fn swap(
    repo: &Repository,
    name: &str,
    new: Oid,
    old: Option<Oid>,
    message: &str,
) -> Result<(), git2::Error> {
    repo.reference_matching(name, new, true, old.unwrap_or(Oid::zero()), message)
        .map(|_| ())
}
