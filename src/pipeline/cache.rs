//! What plans that deploy nothing (`plan`, `drift`, the gate) keep between runs, so that the
//! next one in the same repository is warm: the reference index of a commit, and what an old
//! commit declares when nothing is deployed here (a clone asking what a push would do). Kept
//! as git objects that no ref names (so `plan` writes no ref) and a small JSON map from a key to
//! their ids in `<GIT_DIR>/hookops/cache/`. Never written inside a pre-receive quarantine,
//! where git would drop the objects. A cache that is lost, corrupt or points at collected
//! objects only makes the next plan cold again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Oid;
use serde::{Deserialize, Serialize};

/// Entries kept per map: the newest ones.
const KEEP: usize = 32;

#[derive(Serialize, Deserialize, Default)]
struct Map {
    /// key → (object id, sequence number: the newest entries are kept).
    entries: BTreeMap<String, (String, u64)>,
    next: u64,
}

/// One cache map, in a directory of its own.
#[derive(Debug, Clone)]
pub struct Cache {
    file: PathBuf,
}

impl Cache {
    /// `name`'s map in `dir`, unless this process runs inside a pre-receive quarantine.
    pub fn open(dir: &Path, name: &str) -> Option<Cache> {
        if std::env::var_os("GIT_QUARANTINE_PATH").is_some() {
            return None;
        }
        Some(Cache {
            file: dir.join(format!("{name}.json")),
        })
    }

    fn read(&self) -> Map {
        std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn get(&self, key: &str) -> Option<Oid> {
        let map = self.read();
        map.entries
            .get(key)
            .and_then(|(id, _)| Oid::from_str(id).ok())
    }

    /// Remembers `id` under `key`; a cache that cannot be written is only a slower next plan.
    pub fn put(&self, key: &str, id: Oid) {
        let mut map = self.read();
        map.next += 1;
        map.entries
            .insert(key.to_string(), (id.to_string(), map.next));
        while map.entries.len() > KEEP {
            let oldest = map
                .entries
                .iter()
                .min_by_key(|(_, (_, n))| *n)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.entries.remove(&k),
                None => break,
            };
        }
        let written = self
            .file
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| {
                let tmp = self.file.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&map)?)?;
                std::fs::rename(&tmp, &self.file)
            });
        if let Err(e) = written {
            log::info!("keeping {}: {e}", self.file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), "x").unwrap();
        assert_eq!(c.get("a"), None);
        let id = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        for n in 0..(KEEP as u8 + 3) {
            c.put(&format!("k{n}"), id(n));
        }
        assert_eq!(c.get("k0"), None);
        assert_eq!(c.get(&format!("k{}", KEEP + 2)), Some(id(KEEP as u8 + 2)));
        std::fs::write(dir.path().join("x.json"), "not json").unwrap();
        assert_eq!(c.get("k5"), None);
    }
}
