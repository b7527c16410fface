//! The inventory's copy in the cluster (lock = "lease", docs/ha.md): several hosts deploying
//! one environment must prune from one truth about what was applied, and the only store they
//! all share is the environment's API server. The copy is ConfigMaps beside the Lease, read
//! by whoever takes the Lease and written (through the fence, like every cluster write) after
//! each save of the local inventory, the write-ahead one included: a taker knows everything
//! a holder that died may have applied. The git inventory stays the audit trail: an import is
//! a commit on it.
//!
//! ```text
//! hookops-inventory-<env>                 generation, hash, shards, host, written-at
//! hookops-inventory-<env>-<hash12>-<i>    part: the i-th piece of the document (< 1 MiB each)
//! ```
//!
//! Named by the environment, not the Lease: two repositories that share a Lease (one
//! namespace) deploy two environments, each with its own inventory.
//!
//! The pieces of a new version are written before the head that names them (one apply, in
//! that order), so a holder killed half-way leaves the previous version whole; pieces no head
//! names are deleted by the next holder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use git2::Repository;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backends::kube::Kubectl;
use crate::backends::repo::Session;
use crate::config::Environment;
use crate::pipeline::inventory;

const OF: &str = "hookops.io/inventory-of";
const HASH: &str = "hookops.io/inventory-hash";
/// Bytes of the document per ConfigMap: the API server refuses objects over 1 MiB.
const PIECE: usize = 700 * 1024;

/// What this host last read from or wrote to the cluster copy.
#[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
struct Seen {
    generation: u64,
    hash: String,
}

/// One environment's cluster copy.
pub struct ClusterCopy {
    kubectl: Kubectl,
    env: String,
    namespace: String,
    head: String,
    host: String,
    seen_file: PathBuf,
    generation: u64,
}

/// The head and pieces as listed.
struct Listed {
    generation: u64,
    hash: String,
    host: String,
    pieces: Vec<String>,
    stale: bool,
}

impl ClusterCopy {
    /// The copy of `env`, written with `session`'s kubectl for it (fenced once the Lease is
    /// held).
    pub fn new(session: &Session, env: &Environment) -> Result<ClusterCopy> {
        let lease = env.lease();
        Ok(ClusterCopy {
            kubectl: session.kubectl(env, crate::backends::mask::Masker::new())?,
            env: env.name.clone(),
            namespace: lease.namespace,
            head: format!(
                "hookops-inventory-{}",
                env.name.to_ascii_lowercase().replace(['_', '.'], "-")
            ),
            host: session.host(),
            seen_file: session
                .state_dir()
                .join("lease")
                .join(format!("{}.json", env.name)),
            generation: 0,
        })
    }

    fn seen(&self) -> Option<Seen> {
        std::fs::read(&self.seen_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn remember(&self, seen: &Seen) -> Result<()> {
        if let Some(dir) = self.seen_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = self.seen_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(seen)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.seen_file)
            .with_context(|| format!("writing {}", self.seen_file.display()))
    }

    fn list(&self) -> Result<Option<Listed>> {
        let out = self.kubectl.raw([
            "get",
            "configmaps",
            "--namespace",
            &self.namespace,
            "-l",
            &format!("{OF}={}", self.head),
            "-o",
            "json",
        ])?;
        if !out.success() {
            bail!(
                "reading the inventory copy {}/{}: {}",
                self.namespace,
                self.head,
                out.reason()
            );
        }
        let v: Value = serde_json::from_str(&out.stdout).context("kubectl's answer")?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let Some(head) = items
            .iter()
            .find(|i| i["metadata"]["name"] == self.head.as_str())
        else {
            return Ok(None);
        };
        let data = &head["data"];
        let text = |k: &str| data[k].as_str().unwrap_or_default().to_string();
        let hash = text("hash");
        let count: usize = text("shards").parse().unwrap_or(0);
        let short = &hash[..12.min(hash.len())];
        let mut pieces = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{}-{short}-{i}", self.head);
            let piece = items
                .iter()
                .find(|p| p["metadata"]["name"] == name.as_str())
                .and_then(|p| p["data"]["part"].as_str())
                .with_context(|| {
                    format!("the inventory copy {}/{name} is missing", self.namespace)
                })?;
            pieces.push(piece.to_string());
        }
        let stale = items.iter().any(|i| {
            i["metadata"]["labels"][HASH]
                .as_str()
                .is_some_and(|h| h != short)
        });
        Ok(Some(Listed {
            generation: text("generation").parse().unwrap_or(0),
            hash,
            host: text("host"),
            pieces,
            stale,
        }))
    }

    /// After taking the Lease: the cluster's copy replaces the local inventory when another
    /// host wrote it since this one last read or wrote it (or this host never did). Returns
    /// what happened, for the output.
    pub fn pull(&mut self, repo: &Repository) -> Result<Option<String>> {
        let Some(listed) = self.list()? else {
            self.generation = self.seen().map(|s| s.generation).unwrap_or(0);
            return Ok(None);
        };
        self.generation = listed.generation;
        if listed.stale {
            let selector = format!(
                "{OF}={},{HASH},{HASH}!={}",
                self.head,
                &listed.hash[..12.min(listed.hash.len())]
            );
            let out = self
                .kubectl
                .delete_selected("configmaps", &selector, &self.namespace)?;
            if !out.success() {
                log::info!(
                    "deleting old pieces of the inventory copy: {}",
                    out.reason()
                );
            }
        }
        let local = inventory::export(repo, &self.env)?;
        let seen = self.seen();
        let now = Seen {
            generation: listed.generation,
            hash: listed.hash.clone(),
        };
        if local.as_ref().is_some_and(|l| l.hash == listed.hash) {
            return self.remember(&now).map(|()| None);
        }
        if seen
            .as_ref()
            .is_some_and(|s| s.generation >= listed.generation)
        {
            // Written by this host last, and changed here since (a save whose push failed):
            // the local inventory is the newer; the next push writes it.
            return Ok(None);
        }
        let bytes = listed.pieces.concat().into_bytes();
        let hash = inventory::Exported::hash_of(&bytes);
        if hash != listed.hash {
            bail!(
                "the inventory copy {}/{} does not match its hash (generation {})",
                self.namespace,
                self.head,
                listed.generation
            );
        }
        inventory::import(
            repo,
            &self.env,
            &bytes,
            &format!(
                "hookops: {} inventory from the cluster (generation {}, written by {})",
                self.env, listed.generation, listed.host
            ),
        )?;
        self.remember(&now)?;
        Ok(Some(format!(
            "inventory taken from the cluster (generation {}, written by {})",
            listed.generation, listed.host
        )))
    }

    /// After a save of the local inventory: writes it to the cluster when it changed.
    pub fn push(&mut self, repo: &Repository) -> Result<()> {
        let Some(local) = inventory::export(repo, &self.env)? else {
            return Ok(());
        };
        if self.seen().is_some_and(|s| s.hash == local.hash) {
            return Ok(());
        }
        let generation = self.generation + 1;
        let text = String::from_utf8(local.bytes).context("the inventory document")?;
        let short = &local.hash[..12];
        let mut items = Vec::new();
        for (i, part) in pieces(&text, PIECE).into_iter().enumerate() {
            items.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": format!("{}-{short}-{i}", self.head),
                    "labels": labels(&[(OF, &self.head), (HASH, short)]),
                },
                "data": {"part": part},
            }));
        }
        let count = items.len();
        items.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.head,
                "labels": labels(&[(OF, &self.head)]),
                "annotations": {"hookops.io/env": self.env},
            },
            "data": {
                "generation": generation.to_string(),
                "hash": local.hash,
                "shards": count.to_string(),
                "host": self.host,
                "written-at": crate::record::payload::now(),
            },
        }));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        let out = self
            .kubectl
            .apply_state(serde_json::to_vec(&list)?, &self.namespace)?;
        if !out.success() {
            bail!(
                "writing the inventory copy {}/{}: {}",
                self.namespace,
                self.head,
                out.reason()
            );
        }
        self.generation = generation;
        self.remember(&Seen {
            generation,
            hash: local.hash,
        })
    }
}

/// A ConfigMap's labels: `pairs` and hookops as its manager.
fn labels(pairs: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("app.kubernetes.io/managed-by".into(), json!("hookops"));
    for (k, v) in pairs {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

/// `text` cut into pieces of at most `size` bytes, at character boundaries.
fn pieces(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    if out.is_empty() {
        out.push("");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_stay_under_the_size_and_whole_characters() {
        let text = "aé".repeat(1000);
        let parts = pieces(&text, 7);
        assert!(parts.iter().all(|p| p.len() <= 7 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
        assert_eq!(pieces("", 7), vec![""]);
    }
}
