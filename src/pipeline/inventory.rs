//! The inventory: per environment, every Kubernetes object hookops has applied and which files
//! of the deployed tree declare it. Pruning reads it: an object is deleted only when hookops
//! applied it and **no** file of the new tree declares it any more (prune = inventory −
//! declared), so an object declared twice, moved between files or targets, or given an
//! explicit namespace is never deleted.
//!
//! It lives in git, beside the records, as a commit chain under `refs/hookops/inventory/<env>`
//! (auditable, and pushed with `[sync] push`). The tree is built for one-file pushes in large
//! repositories: only the pieces a change touches are read and rewritten.
//!
//! ```text
//! meta.json            {"version":1,"base":"<commit whose tree the declarations describe>"}
//! objects/<xx>         identity -> entry, sharded by (group, kind, name), so every namespace
//!                      variant of a name sits in one shard
//! units/f/<path>       a manifest file of a kubectl target: {"target", "objects": [identity]}
//! units/k/<hash>       a kustomize target's rendered output (one unit per kustomization)
//! units/h/<hash>       a chart target's rendered output (one unit per chart target)
//! units/s/<hash>       a target's Vault-generated Secrets
//! kinds.json           custom kinds declared by the CRDs of the tree: "group/kind" -> scope
//! orphans.json         identities that no unit declares: pruned (or kept) by the next deploy
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Signature, Tree};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::identity::{self, Scope};
use crate::pipeline::manifest::{Object, ObjectId};

/// From this many changed pieces on, a save writes one pack instead of loose objects.
const PACK_AT: usize = 64;

pub use crate::config::inventory_ref;

/// What the inventory knows about one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The apiVersion it was last declared with (to name it when deleting).
    #[serde(rename = "v")]
    pub api_version: String,
    /// The target that last declared it.
    #[serde(rename = "t")]
    pub target: String,
    /// Units (files) of the deployed tree that declare it.
    #[serde(rename = "by", default, skip_serializing_if = "Vec::is_empty")]
    pub declared_by: Vec<String>,
    /// Sent to the server by some attempt (it may exist there).
    #[serde(rename = "a", default)]
    pub applied: bool,
    /// Declared with `hookops.io/prune: disabled`: never deleted, forgotten when undeclared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
    /// For a CustomResourceDefinition: the kind it defines and that kind's scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crd: Option<(String, Scope)>,
    /// No longer declared, kept (a Namespace or CRD), and said so once: later deploys keep it
    /// without a word (`plan` and `drift` still list it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Unit {
    pub target: String,
    pub objects: Vec<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Meta {
    version: u32,
    base: Option<String>,
}

/// Identity as a string key: `group|kind|namespace|name` (namespace empty when cluster-scoped).
pub fn key(id: &ObjectId) -> String {
    format!(
        "{}|{}|{}|{}",
        id.group,
        id.kind,
        id.namespace.as_deref().unwrap_or(""),
        id.name
    )
}

pub fn parse_key(key: &str) -> Option<ObjectId> {
    let mut parts = key.splitn(4, '|');
    let group = parts.next()?.to_string();
    let kind = parts.next()?.to_string();
    let ns = parts.next()?;
    let name = parts.next()?.to_string();
    Some(ObjectId {
        group,
        kind,
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        name,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn shard_of(id: &ObjectId) -> String {
    let digest = Sha256::digest(format!("{}|{}|{}", id.group, id.kind, id.name).as_bytes());
    hex(&digest[..1])
}

/// The unit key of a kubectl target's manifest file.
pub fn file_unit(path: &str) -> String {
    format!("f:{path}")
}

/// The unit key of a kustomize target (its rendered output).
pub fn kustomize_unit(dir: &str) -> String {
    format!("k:{dir}")
}

/// The unit key of a chart target (its rendered output), by target name: one chart may be
/// declared twice, as two releases.
pub fn helm_unit(target: &str) -> String {
    format!("h:{target}")
}

/// The unit key of a target's Vault-generated Secrets.
pub fn secrets_unit(target: &str) -> String {
    format!("s:{target}")
}

fn unit_path(unit: &str) -> Result<String> {
    Ok(match unit.split_once(':') {
        Some(("f", path)) => format!("units/f/{path}"),
        Some((kind @ ("k" | "h" | "s"), rest)) => {
            format!("units/{kind}/{}", hex(&Sha256::digest(rest.as_bytes())))
        }
        _ => bail!("bad inventory unit {unit:?}"),
    })
}

/// Whether an object asks never to be pruned (`hookops.io/prune: disabled`, or
/// `hookops.io/apply: disabled`: left alone entirely).
pub fn keeps(o: &Object) -> bool {
    crate::pipeline::annotations::controls(o).is_ok_and(|c| {
        c.prune_disabled || c.apply == crate::pipeline::annotations::ApplyMode::Disabled
    })
}

/// One environment's inventory, read lazily from git and written back as one commit.
pub struct Inventory<'r> {
    repo: &'r Repository,
    env: String,
    head: Option<Oid>,
    tree: Option<Tree<'r>>,
    pub base: Option<Oid>,
    shards: HashMap<String, BTreeMap<String, Entry>>,
    dirty_shards: BTreeSet<String>,
    units: HashMap<String, Option<Unit>>,
    dirty_units: BTreeSet<String>,
    kinds: BTreeMap<String, Scope>,
    orphans: BTreeSet<String>,
    dirty_meta: bool,
    /// Identities a unit stopped declaring since the last `take_touched`: another declaration
    /// of theirs may win now (D7).
    touched: BTreeSet<String>,
}

impl<'r> Inventory<'r> {
    pub fn load(repo: &'r Repository, env: &str) -> Result<Inventory<'r>> {
        let mut inv = Inventory::empty(repo, env);
        let name = inventory_ref(env);
        let Ok(r) = repo.find_reference(&name) else {
            return Ok(inv);
        };
        let head = r
            .target()
            .with_context(|| format!("{name} is not a direct reference"))?;
        inv.read_commit(head)?;
        Ok(inv)
    }

    /// The inventory kept in commit `head` (a dry run's cache: no ref names it). It is never
    /// saved: `save` would find the environment's ref elsewhere.
    pub fn at_commit(repo: &'r Repository, env: &str, head: Oid) -> Result<Inventory<'r>> {
        let mut inv = Inventory::empty(repo, env);
        inv.read_commit(head)?;
        Ok(inv)
    }

    fn empty(repo: &'r Repository, env: &str) -> Inventory<'r> {
        Inventory {
            repo,
            env: env.to_string(),
            head: None,
            tree: None,
            base: None,
            shards: HashMap::new(),
            dirty_shards: BTreeSet::new(),
            units: HashMap::new(),
            dirty_units: BTreeSet::new(),
            kinds: BTreeMap::new(),
            orphans: BTreeSet::new(),
            dirty_meta: false,
            touched: BTreeSet::new(),
        }
    }

    fn read_commit(&mut self, head: Oid) -> Result<()> {
        let inv = self;
        let name = inventory_ref(&inv.env);
        let repo = inv.repo;
        let commit = repo
            .find_commit(head)
            .with_context(|| format!("{name}: not a commit"))?;
        inv.head = Some(head);
        inv.tree = Some(commit.tree()?);
        if let Some(meta) = inv.read_json::<Meta>("meta.json")? {
            inv.base = meta.base.as_deref().and_then(|b| Oid::from_str(b).ok());
        }
        inv.kinds = inv.read_json("kinds.json")?.unwrap_or_default();
        inv.orphans = inv.read_json("orphans.json")?.unwrap_or_default();
        Ok(())
    }

    /// Whether an inventory was ever written for this environment.
    pub fn exists(&self) -> bool {
        self.head.is_some()
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>> {
        let Some(tree) = &self.tree else {
            return Ok(None);
        };
        let Ok(entry) = tree.get_path(std::path::Path::new(path)) else {
            return Ok(None);
        };
        let blob = self
            .repo
            .find_blob(entry.id())
            .with_context(|| format!("{}: {path} is not a file", inventory_ref(&self.env)))?;
        let value = serde_json::from_slice(blob.content())
            .with_context(|| format!("{}: {path} is corrupt", inventory_ref(&self.env)))?;
        Ok(Some(value))
    }

    /// Custom kinds declared by the CRDs of the deployed tree.
    pub fn kinds(&self) -> &BTreeMap<String, Scope> {
        &self.kinds
    }

    fn shard(&mut self, shard: &str) -> Result<&mut BTreeMap<String, Entry>> {
        if !self.shards.contains_key(shard) {
            let loaded = self
                .read_json(&format!("objects/{shard}"))?
                .unwrap_or_default();
            self.shards.insert(shard.to_string(), loaded);
        }
        Ok(self.shards.get_mut(shard).expect("just inserted"))
    }

    pub fn entry(&mut self, id: &ObjectId) -> Result<Option<Entry>> {
        let k = key(id);
        Ok(self.shard(&shard_of(id))?.get(&k).cloned())
    }

    fn update_entry(&mut self, id: &ObjectId, f: impl FnOnce(&mut Option<Entry>)) -> Result<()> {
        let shard = shard_of(id);
        let k = key(id);
        let map = self.shard(&shard)?;
        let mut slot = map.remove(&k);
        f(&mut slot);
        let orphan = match &slot {
            Some(e) if e.declared_by.is_empty() => {
                if e.applied {
                    Some(true)
                } else {
                    // Never sent to a server: nothing to prune, nothing to remember.
                    slot = None;
                    Some(false)
                }
            }
            Some(_) => Some(false),
            None => Some(false),
        };
        if let Some(e) = slot {
            map.insert(k.clone(), e);
        }
        self.dirty_shards.insert(shard);
        match orphan {
            Some(true) => self.orphans.insert(k),
            _ => self.orphans.remove(&k),
        };
        self.dirty_meta = true;
        Ok(())
    }

    pub fn unit(&mut self, unit: &str) -> Result<Option<Unit>> {
        if let Some(u) = self.units.get(unit) {
            return Ok(u.clone());
        }
        let u: Option<Unit> = self.read_json(&unit_path(unit)?)?;
        self.units.insert(unit.to_string(), u.clone());
        Ok(u)
    }

    /// The file units under directory `dir` (recursively) that `target` declared.
    pub fn file_units_of(&mut self, dir: &str, target: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let Some(tree) = &self.tree else {
            return Ok(out);
        };
        let base = if dir.is_empty() {
            "units/f".to_string()
        } else {
            format!("units/f/{dir}")
        };
        let Ok(e) = tree.get_path(std::path::Path::new(&base)) else {
            return Ok(out);
        };
        let Ok(sub) = self.repo.find_tree(e.id()) else {
            return Ok(out);
        };
        let mut paths = Vec::new();
        sub.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                if let Some(name) = entry.name() {
                    let rel = format!("{root}{name}");
                    paths.push(if dir.is_empty() {
                        rel
                    } else {
                        format!("{dir}/{rel}")
                    });
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        for p in paths {
            let u = file_unit(&p);
            if self.unit(&u)?.is_some_and(|x| x.target == target) {
                out.push(u);
            }
        }
        // Units declared earlier in this run and not yet written.
        for (u, v) in &self.units {
            if let (Some(v), Some(path)) = (v, u.strip_prefix("f:")) {
                let inside = dir.is_empty() || path.starts_with(&format!("{dir}/"));
                if inside && v.target == target && !out.contains(u) {
                    out.push(u.clone());
                }
            }
        }
        Ok(out)
    }

    /// Sets what `unit` declares (replacing what it declared before); `objects` empty drops it.
    pub fn declare(&mut self, unit: &str, target: &str, objects: &[&Object]) -> Result<()> {
        let before = self.unit(unit)?.map(|u| u.objects).unwrap_or_default();
        let mut now: Vec<String> = objects.iter().map(|o| key(&o.id)).collect();
        now.sort();
        now.dedup();
        for k in &before {
            if now.binary_search(k).is_err() {
                self.touched.insert(k.clone());
                if let Some(id) = parse_key(k) {
                    let u = unit.to_string();
                    // Read before the update: a CRD never applied loses its entry with its
                    // last declaration, and its kind must go with it.
                    let crd = self.entry(&id)?.and_then(|e| e.crd);
                    self.update_entry(&id, |slot| {
                        if let Some(e) = slot {
                            e.declared_by.retain(|x| *x != u);
                        }
                    })?;
                    if let Some((kk, _)) = crd {
                        self.recheck_kind(&id, &kk)?;
                    }
                }
            }
        }
        for o in objects {
            let u = unit.to_string();
            let crd = identity::crd_scope(o);
            if let Some((kk, scope)) = &crd {
                self.kinds.insert(kk.clone(), *scope);
            }
            let keep = keeps(o);
            let api_version = o.api_version.clone();
            let target = target.to_string();
            self.update_entry(&o.id, |slot| {
                let e = slot.get_or_insert_with(|| Entry {
                    api_version: String::new(),
                    target: String::new(),
                    declared_by: Vec::new(),
                    applied: false,
                    keep: false,
                    crd: None,
                    noted: false,
                });
                e.api_version = api_version;
                e.target = target;
                e.keep = keep;
                e.crd = crd;
                e.noted = false;
                if !e.declared_by.contains(&u) {
                    e.declared_by.push(u);
                    e.declared_by.sort();
                }
            })?;
        }
        let new_unit = (!now.is_empty()).then(|| Unit {
            target: target.to_string(),
            objects: now,
        });
        self.units.insert(unit.to_string(), new_unit);
        self.dirty_units.insert(unit.to_string());
        Ok(())
    }

    /// A CRD that no unit declares any more no longer tells the scope of its kind.
    fn recheck_kind(&mut self, id: &ObjectId, kind_key: &str) -> Result<()> {
        if self.entry(id)?.is_none_or(|e| e.declared_by.is_empty()) {
            self.kinds.remove(kind_key);
            self.dirty_meta = true;
        }
        Ok(())
    }

    pub fn drop_unit(&mut self, unit: &str) -> Result<()> {
        if self.unit(unit)?.is_none() {
            return Ok(());
        }
        self.declare(unit, "", &[])
    }

    /// The identities some unit stopped declaring since the last call.
    pub fn take_touched(&mut self) -> Vec<ObjectId> {
        std::mem::take(&mut self.touched)
            .iter()
            .filter_map(|k| parse_key(k))
            .collect()
    }

    /// Marks objects as sent to the server (they may exist there from now on).
    pub fn mark_applied<'a>(&mut self, ids: impl IntoIterator<Item = &'a ObjectId>) -> Result<()> {
        for id in ids {
            self.update_entry(id, |slot| {
                if let Some(e) = slot {
                    e.applied = true;
                }
            })?;
        }
        Ok(())
    }

    /// Objects hookops applied that no file declares any more.
    pub fn orphans(&mut self) -> Result<Vec<(ObjectId, Entry)>> {
        let keys: Vec<String> = self.orphans.iter().cloned().collect();
        let mut out = Vec::new();
        for k in keys {
            let Some(id) = parse_key(&k) else { continue };
            match self.entry(&id)? {
                Some(e) if e.declared_by.is_empty() && e.applied => out.push((id, e)),
                _ => {
                    self.orphans.remove(&k);
                    self.dirty_meta = true;
                }
            }
        }
        Ok(out)
    }

    /// Whether any unit declares an object of this group, kind and name in any namespace
    /// (for identities whose scope was unknown when they were resolved).
    pub fn declared_in_any_namespace(&mut self, id: &ObjectId) -> Result<bool> {
        let prefix = format!("{}|{}|", id.group, id.kind);
        let name = id.name.clone();
        Ok(self.shard(&shard_of(id))?.iter().any(|(k, e)| {
            k.starts_with(&prefix) && k.ends_with(&format!("|{name}")) && !e.declared_by.is_empty()
        }))
    }

    /// Whether some unit declares exactly this identity.
    pub fn declared(&mut self, id: &ObjectId) -> Result<bool> {
        Ok(self.entry(id)?.is_some_and(|e| !e.declared_by.is_empty()))
    }

    /// Remembers that a kept object was named once (it is not named by every deploy).
    pub fn note_kept(&mut self, id: &ObjectId) -> Result<()> {
        self.update_entry(id, |slot| {
            if let Some(e) = slot {
                e.noted = true;
            }
        })
    }

    /// Forgets an object (deleted, or kept for good).
    pub fn forget(&mut self, id: &ObjectId) -> Result<()> {
        self.update_entry(id, |slot| *slot = None)
    }

    pub fn set_base(&mut self, base: Oid) {
        if self.base != Some(base) {
            self.base = Some(base);
            self.dirty_meta = true;
        }
    }

    fn dirty(&self) -> bool {
        self.dirty_meta || !self.dirty_shards.is_empty() || !self.dirty_units.is_empty()
    }

    /// Writes the inventory as a commit that no ref names (a dry run's cache), returning it.
    pub fn write_detached(&self, message: &str) -> Result<Oid> {
        self.write(message)
    }

    /// Writes the changes as one commit on `refs/hookops/inventory/<env>` (compare-and-swap:
    /// the deploy lock serialises writers, so a moved ref means corruption, not a race).
    pub fn save(&mut self, message: &str) -> Result<()> {
        if !self.dirty() {
            return Ok(());
        }
        let commit = self.write(message)?;
        let repo = self.repo;
        let tree = repo.find_commit(commit)?.tree()?;
        let name = inventory_ref(&self.env);
        crate::gitref::swap(repo, &name, commit, self.head, message)
            .with_context(|| format!("updating {name} (it moved meanwhile?)"))?;
        self.head = Some(commit);
        self.tree = Some(tree);
        self.dirty_shards.clear();
        self.dirty_units.clear();
        self.dirty_meta = false;
        Ok(())
    }

    /// Writes the changed pieces, the tree and the commit; returns the commit. Many pieces at
    /// once (a first deploy writes one per manifest file) are written as one pack rather than
    /// as a loose object each, which costs a file apiece (1,000 files: a quarter of a second).
    fn write(&self, message: &str) -> Result<Oid> {
        if self.dirty_units.len() + self.dirty_shards.len() < PACK_AT {
            return self.write_commit(self.repo, message);
        }
        let bulk = Repository::open(self.repo.path())?;
        let odb = bulk.odb()?;
        let mempack = odb.add_new_mempack_backend(1000)?;
        let commit = self.write_commit(&bulk, message)?;
        let mut pack = git2::Buf::new();
        mempack
            .dump(&bulk, &mut pack)
            .context("packing the inventory")?;
        let target = self.repo.odb()?;
        let mut writer = target.packwriter()?;
        std::io::Write::write_all(&mut writer, &pack)?;
        writer.commit().context("writing the inventory's pack")?;
        Ok(commit)
    }

    /// Writes the changed pieces, the tree and the commit through `repo` (this inventory's
    /// repository, or a second handle of it that packs what it writes); returns the commit.
    fn write_commit(&self, repo: &Repository, message: &str) -> Result<Oid> {
        let base_tree = match &self.tree {
            Some(t) => repo.find_tree(t.id())?,
            None => {
                let empty = repo.treebuilder(None)?.write()?;
                repo.find_tree(empty)?
            }
        };
        let mut b = TreeUpdateBuilder::new();
        for shard in &self.dirty_shards {
            let path = format!("objects/{shard}");
            match self.shards.get(shard) {
                Some(m) if !m.is_empty() => {
                    let blob = repo.blob(&serde_json::to_vec(m)?)?;
                    b.upsert(path, blob, FileMode::Blob);
                }
                _ => {
                    if base_tree.get_path(std::path::Path::new(&path)).is_ok() {
                        b.remove(path);
                    }
                }
            }
        }
        for unit in &self.dirty_units {
            let path = unit_path(unit)?;
            match self.units.get(unit) {
                Some(Some(u)) => {
                    let blob = repo.blob(&serde_json::to_vec(u)?)?;
                    b.upsert(path, blob, FileMode::Blob);
                }
                _ => {
                    if base_tree.get_path(std::path::Path::new(&path)).is_ok() {
                        b.remove(path);
                    }
                }
            }
        }
        let meta = Meta {
            version: 1,
            base: self.base.map(|b| b.to_string()),
        };
        b.upsert(
            "meta.json",
            repo.blob(&serde_json::to_vec(&meta)?)?,
            FileMode::Blob,
        );
        b.upsert(
            "kinds.json",
            repo.blob(&serde_json::to_vec(&self.kinds)?)?,
            FileMode::Blob,
        );
        b.upsert(
            "orphans.json",
            repo.blob(&serde_json::to_vec(&self.orphans)?)?,
            FileMode::Blob,
        );
        let tree_id = b
            .create_updated(repo, &base_tree)
            .context("writing the inventory tree")?;
        let tree = repo.find_tree(tree_id)?;
        let who = repo
            .signature()
            .or_else(|_| Signature::now("hookops", "hookops@localhost"))?;
        let parent = self.head.map(|h| repo.find_commit(h)).transpose()?;
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        Ok(repo.commit(None, &who, &who, message, &tree, &parents)?)
    }
}

impl Inventory<'_> {
    /// Every object of the inventory, in identity order (`hookops objects`): reads every shard.
    pub fn all(&mut self) -> Result<Vec<(ObjectId, Entry)>> {
        let mut shards = Vec::new();
        if let Some(tree) = &self.tree {
            if let Ok(objects) = tree.get_path(std::path::Path::new("objects")) {
                let dir = self.repo.find_tree(objects.id())?;
                shards.extend(dir.iter().filter_map(|e| e.name().map(str::to_string)));
            }
        }
        let mut out = Vec::new();
        for shard in shards {
            for (k, e) in self.shard(&shard)?.iter() {
                if let Some(id) = parse_key(k) {
                    out.push((id, e.clone()));
                }
            }
        }
        out.sort_by_key(|(id, _)| key(id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::parse;

    fn objs(text: &str) -> Vec<Object> {
        let mut v = parse(text, "x.yaml", None).unwrap();
        let r = identity::Resolver::new("default".into());
        for o in &mut v {
            r.resolve(o, None);
        }
        v
    }

    fn cm(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
    }

    #[test]
    fn an_object_declared_twice_is_orphaned_only_when_both_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let shared = objs(&cm("shared"));
        let mut inv = Inventory::load(&repo, "e").unwrap();
        inv.declare(&file_unit("a/cm.yaml"), "a", &[&shared[0]])
            .unwrap();
        inv.declare(&file_unit("b/cm.yaml"), "b", &[&shared[0]])
            .unwrap();
        inv.mark_applied([&shared[0].id]).unwrap();
        inv.save("t").unwrap();

        let mut inv = Inventory::load(&repo, "e").unwrap();
        assert_eq!(inv.file_units_of("a", "a").unwrap(), vec!["f:a/cm.yaml"]);
        inv.drop_unit(&file_unit("a/cm.yaml")).unwrap();
        assert!(inv.orphans().unwrap().is_empty());
        inv.save("t").unwrap();

        let mut inv = Inventory::load(&repo, "e").unwrap();
        inv.drop_unit(&file_unit("b/cm.yaml")).unwrap();
        let orphans = inv.orphans().unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0.name, "shared");
        inv.forget(&orphans[0].0).unwrap();
        assert!(inv.orphans().unwrap().is_empty());
    }

    #[test]
    fn never_applied_objects_are_not_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let o = objs(&cm("x"));
        let mut inv = Inventory::load(&repo, "e").unwrap();
        inv.declare(&file_unit("a.yaml"), "t", &[&o[0]]).unwrap();
        inv.drop_unit(&file_unit("a.yaml")).unwrap();
        assert!(inv.orphans().unwrap().is_empty());
        assert!(inv.entry(&o[0].id).unwrap().is_none());
    }

    #[test]
    fn keys_round_trip() {
        let o = objs(&cm("x"));
        assert_eq!(parse_key(&key(&o[0].id)).unwrap(), o[0].id);
    }

    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Cluster\n  names: {kind: Widget, plural: widgets}\n";

    #[test]
    fn an_undeclared_crd_takes_its_kind_along_applied_or_not() {
        let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names:\n    kind: Widget\n    plural: widgets\n";
        for applied in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path()).unwrap();
            let o = objs(crd);
            let mut inv = Inventory::load(&repo, "e").unwrap();
            inv.declare(&file_unit("crds/widget.yaml"), "crds", &[&o[0]])
                .unwrap();
            if applied {
                inv.mark_applied([&o[0].id]).unwrap();
            }
            assert!(inv.kinds().contains_key("example.com/Widget"), "{applied}");
            inv.drop_unit(&file_unit("crds/widget.yaml")).unwrap();
            assert!(!inv.kinds().contains_key("example.com/Widget"), "{applied}");
        }
    }

    #[test]
    fn a_large_save_is_one_pack_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let all: Vec<Vec<Object>> = (0..PACK_AT * 2)
            .map(|i| objs(&cm(&format!("cm{i}"))))
            .collect();
        let mut inv = Inventory::load(&repo, "e").unwrap();
        for (i, o) in all.iter().enumerate() {
            inv.declare(&file_unit(&format!("apps/cm{i}.yaml")), "apps", &[&o[0]])
                .unwrap();
        }
        inv.mark_applied(all.iter().map(|o| &o[0].id)).unwrap();
        inv.save("first deploy").unwrap();
        let packs: Vec<_> = std::fs::read_dir(dir.path().join("objects/pack"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .collect();
        assert_eq!(packs.len(), 1, "one pack for the whole save");
        let loose = std::fs::read_dir(dir.path().join("objects"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().len() == 2)
            .count();
        assert_eq!(loose, 0, "no loose objects beside the pack");

        // A fresh handle reads every piece, and a small save after it stays loose.
        let repo = Repository::open_bare(dir.path()).unwrap();
        let mut inv = Inventory::load(&repo, "e").unwrap();
        assert_eq!(
            inv.file_units_of("apps", "apps").unwrap().len(),
            PACK_AT * 2
        );
        for o in &all {
            let e = inv.entry(&o[0].id).unwrap().unwrap();
            assert!(e.applied, "{}", o[0].id);
        }
        inv.forget(&all[0][0].id).unwrap();
        inv.save("a prune").unwrap();
        assert!(Inventory::load(&repo, "e")
            .unwrap()
            .entry(&all[0][0].id)
            .unwrap()
            .is_none());
    }

    #[test]
    fn declarations_and_base_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let base = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let (web, db) = (objs(&cm("web")), objs(&cm("db")));
        let mut inv = Inventory::load(&repo, "e").unwrap();
        assert!(!inv.exists());
        inv.declare(&file_unit("apps/web.yaml"), "apps", &[&web[0]])
            .unwrap();
        inv.declare(&file_unit("apps/deep/db.yaml"), "apps", &[&db[0]])
            .unwrap();
        inv.declare(&file_unit("apps/other.yaml"), "other", &[&db[0]])
            .unwrap();
        inv.set_base(base);
        inv.save("t").unwrap();

        let mut inv = Inventory::load(&repo, "e").unwrap();
        assert!(inv.exists());
        assert_eq!(inv.base, Some(base));
        let mut units = inv.file_units_of("apps", "apps").unwrap();
        units.sort();
        assert_eq!(units, ["f:apps/deep/db.yaml", "f:apps/web.yaml"]);
        assert_eq!(
            inv.file_units_of("apps", "other").unwrap(),
            ["f:apps/other.yaml"]
        );
        assert!(inv.file_units_of("nowhere", "apps").unwrap().is_empty());
        let e = inv.entry(&db[0].id).unwrap().unwrap();
        assert_eq!(e.declared_by, ["f:apps/deep/db.yaml", "f:apps/other.yaml"]);
        assert_eq!((e.target.as_str(), e.applied), ("other", false));
        // Another environment's inventory is another ref.
        assert!(!Inventory::load(&repo, "other-env").unwrap().exists());
        // Units declared in this run and not yet saved count too.
        inv.declare(&file_unit("apps/new.yaml"), "apps", &[&web[0]])
            .unwrap();
        assert!(inv
            .file_units_of("apps", "apps")
            .unwrap()
            .contains(&"f:apps/new.yaml".to_string()));
    }

    #[test]
    fn a_save_over_a_moved_ref_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let o = objs(&cm("x"));
        let mut first = Inventory::load(&repo, "e").unwrap();
        first.declare(&file_unit("a.yaml"), "t", &[&o[0]]).unwrap();
        first.save("first").unwrap();
        let mut a = Inventory::load(&repo, "e").unwrap();
        let mut b = Inventory::load(&repo, "e").unwrap();
        a.drop_unit(&file_unit("a.yaml")).unwrap();
        a.save("a").unwrap();
        b.declare(&file_unit("b.yaml"), "t", &[&o[0]]).unwrap();
        let e = b.save("b").unwrap_err();
        assert!(format!("{e:#}").contains("it moved meanwhile"), "{e:#}");
    }

    #[test]
    fn a_crd_tells_its_kinds_scope_while_it_is_declared() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let crd = objs(CRD);
        let mut inv = Inventory::load(&repo, "e").unwrap();
        inv.declare(&file_unit("crds/w.yaml"), "crds", &[&crd[0]])
            .unwrap();
        inv.mark_applied([&crd[0].id]).unwrap();
        inv.save("t").unwrap();
        let mut inv = Inventory::load(&repo, "e").unwrap();
        assert_eq!(inv.kinds().get("example.com/Widget"), Some(&Scope::Cluster));
        inv.drop_unit(&file_unit("crds/w.yaml")).unwrap();
        assert!(inv.kinds().is_empty());
        // Undeclared, the CRD itself is an orphan (kept or pruned by the plan).
        assert_eq!(inv.orphans().unwrap()[0].0, crd[0].id);
    }

    #[test]
    fn objects_asking_to_be_kept_are_marked() {
        let annotated = |a: &str| {
            objs(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k\n  annotations:\n    {a}\n"
            ))
            .remove(0)
        };
        assert!(keeps(&annotated("hookops.io/prune: disabled")));
        assert!(keeps(&annotated("hookops.io/apply: disabled")));
        assert!(!keeps(&annotated("hookops.io/prune: enabled")));
        assert!(!keeps(&annotated("hookops.io/apply: create-only")));

        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let kept = annotated("hookops.io/prune: disabled");
        let mut inv = Inventory::load(&repo, "e").unwrap();
        inv.declare(&file_unit("k.yaml"), "t", &[&kept]).unwrap();
        inv.mark_applied([&kept.id]).unwrap();
        assert!(inv.entry(&kept.id).unwrap().unwrap().keep);
        inv.drop_unit(&file_unit("k.yaml")).unwrap();
        // Still an orphan: the plan decides to keep it, with its reason.
        let orphans = inv.orphans().unwrap();
        assert_eq!(orphans.len(), 1);
        assert!(orphans[0].1.keep);
    }

    #[test]
    fn namespace_variants_of_a_name_are_found_together() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut o = objs(&cm("x")).remove(0);
        o.id.namespace = Some("apps".into());
        let mut inv = Inventory::load(&repo, "e").unwrap();
        inv.declare(&file_unit("x.yaml"), "t", &[&o]).unwrap();
        let other_ns = ObjectId {
            namespace: Some(identity::UNKNOWN_NS.into()),
            ..o.id.clone()
        };
        assert!(inv.declared_in_any_namespace(&other_ns).unwrap());
        assert!(!inv.declared(&other_ns).unwrap());
        assert!(inv.declared(&o.id).unwrap());
        let other_name = ObjectId {
            name: "y".into(),
            ..other_ns
        };
        assert!(!inv.declared_in_any_namespace(&other_name).unwrap());
    }

    #[test]
    fn unit_keys_map_to_paths() {
        assert_eq!(
            unit_path(&file_unit("a/b.yaml")).unwrap(),
            "units/f/a/b.yaml"
        );
        let k = unit_path(&kustomize_unit("overlays/prod")).unwrap();
        assert!(
            k.starts_with("units/k/") && k.len() == "units/k/".len() + 64,
            "{k}"
        );
        assert_ne!(k, unit_path(&kustomize_unit("overlays/staging")).unwrap());
        assert!(unit_path(&secrets_unit("t"))
            .unwrap()
            .starts_with("units/s/"));
        assert!(unit_path("x").is_err());
        let id = parse_key("|Namespace||apps").unwrap();
        assert_eq!((id.namespace, id.kind.as_str()), (None, "Namespace"));
        assert!(parse_key("only|two").is_none());
    }
}

// ---- the whole inventory as one document: its copy in the cluster (lock = "lease",
// pipeline/inventory_cluster.rs) ----

/// An inventory as one compact document: `{"format":1,"files":{path: text}}`, every file of
/// its tree by path (each file is JSON text, kept byte for byte, so an import rebuilds the
/// very same tree), and the SHA-256 of the document.
pub struct Exported {
    pub bytes: Vec<u8>,
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
struct Document {
    format: u32,
    files: BTreeMap<String, String>,
}

impl Exported {
    fn of(bytes: Vec<u8>) -> Exported {
        let hash = Exported::hash_of(&bytes);
        Exported { bytes, hash }
    }

    /// The hash an export of `bytes` carries.
    pub fn hash_of(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }
}

/// The inventory of `env` as one document (None: no inventory yet).
pub fn export(repo: &Repository, env: &str) -> Result<Option<Exported>> {
    let Ok(head) = repo.refname_to_id(&inventory_ref(env)) else {
        return Ok(None);
    };
    let tree = repo.find_commit(head)?.tree()?;
    let mut files = BTreeMap::new();
    let mut failed = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let path = format!("{root}{}", entry.name().unwrap_or_default());
        match repo
            .find_blob(entry.id())
            .map(|b| String::from_utf8(b.content().to_vec()))
        {
            Ok(Ok(text)) => {
                files.insert(path, text);
                git2::TreeWalkResult::Ok
            }
            _ => {
                failed = Some(path);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .or_else(|e| if failed.is_some() { Ok(()) } else { Err(e) })?;
    if let Some(path) = failed {
        bail!("{}: {path} is not UTF-8 text", inventory_ref(env));
    }
    let doc = Document { format: 1, files };
    Ok(Some(Exported::of(serde_json::to_vec(&doc)?)))
}

/// Makes `bytes` (an `export`) the inventory of `env`: a new commit on its ref whose tree is
/// the document's, the local history kept as its parent.
pub fn import(repo: &Repository, env: &str, bytes: &[u8], message: &str) -> Result<()> {
    let doc: Document = serde_json::from_slice(bytes).context("an unreadable inventory copy")?;
    if doc.format != 1 {
        bail!(
            "an inventory copy of format {} (this hookops reads 1)",
            doc.format
        );
    }
    let empty = repo.find_tree(repo.treebuilder(None)?.write()?)?;
    let mut b = TreeUpdateBuilder::new();
    for (path, text) in &doc.files {
        if path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            bail!("an inventory copy with the path {path:?}");
        }
        b.upsert(path.as_str(), repo.blob(text.as_bytes())?, FileMode::Blob);
    }
    let tree = repo.find_tree(b.create_updated(repo, &empty)?)?;
    let name = inventory_ref(env);
    let head = repo.refname_to_id(&name).ok();
    let parent = head.map(|h| repo.find_commit(h)).transpose()?;
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree.id()) {
        return Ok(());
    }
    let who = repo
        .signature()
        .or_else(|_| Signature::now("hookops", "hookops@localhost"))?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let commit = repo.commit(None, &who, &who, message, &tree, &parents)?;
    crate::gitref::swap(repo, &name, commit, head, message)
        .with_context(|| format!("updating {name} (it moved meanwhile?)"))
}

#[cfg(test)]
mod export_tests {
    use super::*;
    use crate::pipeline::manifest::parse;

    #[test]
    fn an_export_imports_into_another_repository_as_the_same_tree() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ra, rb) = (
            Repository::init_bare(a.path()).unwrap(),
            Repository::init_bare(b.path()).unwrap(),
        );
        assert!(export(&ra, "e").unwrap().is_none());
        let mut o = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            "x.yaml",
            None,
        )
        .unwrap();
        identity::Resolver::new("default".into()).resolve(&mut o[0], None);
        let mut inv = Inventory::load(&ra, "e").unwrap();
        inv.declare(&file_unit("apps/x.yaml"), "apps", &[&o[0]])
            .unwrap();
        inv.declare(&kustomize_unit("k"), "k", &[&o[0]]).unwrap();
        inv.mark_applied([&o[0].id]).unwrap();
        inv.set_base(Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap());
        inv.save("t").unwrap();

        let doc = export(&ra, "e").unwrap().unwrap();
        assert_eq!(doc.hash.len(), 64);
        import(&rb, "e", &doc.bytes, "imported").unwrap();
        let tree = |r: &Repository| {
            r.find_commit(r.refname_to_id(&inventory_ref("e")).unwrap())
                .unwrap()
                .tree_id()
        };
        assert_eq!(tree(&ra), tree(&rb));
        let mut back = Inventory::load(&rb, "e").unwrap();
        assert!(back.entry(&o[0].id).unwrap().unwrap().applied);
        assert_eq!(back.base, inv.base);
        assert_eq!(export(&rb, "e").unwrap().unwrap().hash, doc.hash);

        // The same again: no new commit. Another: a child of the local history.
        let head = rb.refname_to_id(&inventory_ref("e")).unwrap();
        import(&rb, "e", &doc.bytes, "again").unwrap();
        assert_eq!(rb.refname_to_id(&inventory_ref("e")).unwrap(), head);
        back.forget(&o[0].id).unwrap();
        back.save("b").unwrap();
        import(&rb, "e", &doc.bytes, "back").unwrap();
        let now = rb.refname_to_id(&inventory_ref("e")).unwrap();
        assert_eq!(rb.find_commit(now).unwrap().parent_count(), 1);
        assert_eq!(tree(&rb), tree(&ra));

        assert!(import(&rb, "e", br#"{"format":1,"files":{"../x":"{}"}}"#, "m").is_err());
        assert!(import(&rb, "e", b"nonsense", "m").is_err());
    }
}
