//! The targets stage: which deploy targets a change touches. Targets are declared in
//! `hookops.toml` or discovered: the topmost directory holding `kustomization.yaml` or `*.tf`
//! files above a changed path is a kustomize or Terraform target; otherwise a directory holding
//! Kubernetes YAML or JSON is a kubectl target of that one directory, named by its path.
//! Discovery walks up from the changed paths and never lists the whole tree, except on a first
//! deploy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use git2::{Oid, Repository, Tree};

use crate::config::{check_discovered, Target, TargetType, TreeConfig, TREE_CONFIG};
use crate::diff::Changes;
use crate::manifest;
use crate::tree;

const KUSTOMIZATION: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The targets of one side of the diff.
pub struct TreeTargets {
    pub declared: bool,
    pub targets: Vec<Target>,
}

/// Reads `hookops.toml` from a tree: `Ok(None)` when the tree has none.
pub fn declared(repo: &Repository, tree: &Tree, label: &str) -> Result<Option<Vec<Target>>> {
    let Some(text) = tree::read_path(repo, tree, TREE_CONFIG)? else {
        return Ok(None);
    };
    let config = TreeConfig::parse(&text, &format!("{TREE_CONFIG} ({label})"))?;
    Ok(Some(config.target))
}

/// Discovery over one tree, with per-directory results cached by tree id.
pub struct Discovery<'r> {
    repo: &'r Repository,
    kinds: HashMap<Oid, Option<TargetType>>,
    kube_dirs: HashMap<Oid, bool>,
}

fn hidden(path: &str) -> bool {
    path.split('/').any(|p| p.starts_with('.'))
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(path.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
}

pub fn discovered_name(path: &str) -> String {
    if path.is_empty() {
        ".".into()
    } else {
        path.to_string()
    }
}

fn discovered(path: &str, kind: TargetType) -> Target {
    Target {
        name: discovered_name(path),
        path: path.to_string(),
        kind,
        namespace: None,
        depends_on: Vec::new(),
        secrets: BTreeMap::new(),
        secret: Vec::new(),
        watch: Vec::new(),
        timeout: None,
        force: false,
        flat: kind == TargetType::Kubectl,
    }
}

/// A stand-in for a target known only by name (the inventory names the target that last
/// declared an object; the target itself may be gone from the tree).
pub fn placeholder(name: &str) -> Target {
    Target {
        name: name.to_string(),
        ..discovered("", TargetType::Kubectl)
    }
}

impl<'r> Discovery<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        Discovery {
            repo,
            kinds: HashMap::new(),
            kube_dirs: HashMap::new(),
        }
    }

    fn subtree(&self, tree: &Tree, dir: &str) -> Option<Tree<'r>> {
        let (id, mode) = tree::entry(tree, dir)?;
        if !tree::is_tree(mode) {
            return None;
        }
        self.repo.find_tree(id).ok()
    }

    /// kustomize or terraform root marker in this directory (not recursive).
    fn root_kind(&mut self, dir: &Tree) -> Option<TargetType> {
        if let Some(k) = self.kinds.get(&dir.id()) {
            return *k;
        }
        let mut kind = None;
        // Bytes, not `name()`: a directory of thousands of entries is scanned here, and a UTF-8
        // check of every name was a tenth of a one-file plan (docs/performance.md).
        for e in dir.iter() {
            if tree::is_tree(e.filemode()) {
                continue;
            }
            let name = e.name_bytes();
            if KUSTOMIZATION.iter().any(|k| k.as_bytes() == name) {
                kind = Some(TargetType::Kustomize);
                break;
            }
            if name.ends_with(b".tf") {
                kind = Some(TargetType::Terraform);
            }
        }
        self.kinds.insert(dir.id(), kind);
        kind
    }

    /// Whether the directory itself holds at least one Kubernetes YAML file.
    fn holds_kube(&mut self, dir: &Tree, path: &str) -> Result<bool> {
        if let Some(k) = self.kube_dirs.get(&dir.id()) {
            return Ok(*k);
        }
        let mut found = false;
        for (full, id) in manifest_files(dir, path) {
            // A file too large to read is not deployed. One that is not text counts when it
            // looks like a manifest, so that deploying it fails naming it.
            let text = match tree::read_text(self.repo, id, &full) {
                Ok(text) => text,
                Err(_) => match tree::read_blob(self.repo, id, &full) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(_) => continue,
                },
            };
            if manifest::looks_like_kube(&text, &full) {
                found = true;
                break;
            }
        }
        self.kube_dirs.insert(dir.id(), found);
        Ok(found)
    }

    /// The target owning `path` in `tree`, if any.
    pub fn target_for(&mut self, tree: &Tree, path: &str) -> Result<Option<Target>> {
        if hidden(path) {
            return Ok(None);
        }
        let mut best: Option<(String, TargetType)> = None;
        let mut dir = parent(path);
        while let Some(d) = dir {
            if let Some(sub) = self.subtree(tree, d) {
                if let Some(kind) = self.root_kind(&sub) {
                    best = Some((d.to_string(), kind));
                }
            }
            dir = parent(d);
        }
        if let Some((d, kind)) = best {
            return Ok(Some(discovered(&d, kind)));
        }
        let Some(d) = parent(path) else {
            return Ok(None);
        };
        let Some(sub) = self.subtree(tree, d) else {
            return Ok(None);
        };
        if manifest::is_manifest_path(path) && self.holds_kube(&sub, d)? {
            return Ok(Some(discovered(d, TargetType::Kubectl)));
        }
        Ok(None)
    }

    /// Every target in the tree (first deploys only).
    pub fn all(&mut self, tree: &Tree<'r>) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        self.walk(tree.clone(), String::new(), &mut out)?;
        Ok(out)
    }

    fn walk(&mut self, dir: Tree<'r>, path: String, out: &mut Vec<Target>) -> Result<()> {
        if let Some(kind) = self.root_kind(&dir) {
            out.push(discovered(&path, kind));
            return Ok(());
        }
        if self.holds_kube(&dir, &path)? {
            out.push(discovered(&path, TargetType::Kubectl));
        }
        let subdirs: Vec<(String, Oid)> = dir
            .iter()
            .filter(|e| tree::is_tree(e.filemode()))
            .filter_map(|e| Some((e.name()?.to_string(), e.id())))
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        for (name, id) in subdirs {
            let sub = self.repo.find_tree(id)?;
            let sub_path = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            self.walk(sub, sub_path, out)?;
        }
        Ok(())
    }
}

/// What the change touches: targets to deploy from the new tree, and targets that exist only
/// in the old tree (their objects are pruned, their Terraform roots possibly destroyed).
#[derive(Default)]
pub struct Affected {
    pub deploy: Vec<Target>,
    pub removed: Vec<Target>,
    /// Every target of the new tree that is known (declared trees: all; discovered: the ones
    /// near the change), for dependency ordering.
    pub declared: bool,
}

pub fn affected(
    repo: &Repository,
    old: Option<&Tree>,
    new: &Tree,
    changes: &Changes,
    new_label: &str,
) -> Result<Affected> {
    let new_declared = declared(repo, new, new_label)?;
    // The deployed tree was accepted once; if its config no longer parses (an older hookops,
    // or it was a failed deploy) treat it as having no targets rather than blocking the fix.
    let old_declared = match old {
        Some(t) => declared(repo, t, "deployed").unwrap_or_else(|e| {
            log::warn!("ignoring the deployed tree's {TREE_CONFIG}: {e:#}");
            None
        }),
        None => None,
    };
    let mut discovery = Discovery::new(repo);
    let new_targets: Vec<Target> = match (&new_declared, old) {
        (Some(t), _) => t.clone(),
        (None, None) => discovery.all(new)?,
        (None, Some(_)) => {
            let mut found = BTreeMap::new();
            for path in &changes.paths {
                if let Some(t) = discovery.target_for(new, path)? {
                    found.entry(t.name.clone()).or_insert(t);
                }
            }
            found.into_values().collect()
        }
    };
    if new_declared.is_none() {
        check_discovered(&new_targets)?;
    }
    let old_targets: Vec<Target> = match (old, &old_declared) {
        (None, _) => Vec::new(),
        (Some(_), Some(t)) => t.clone(),
        (Some(t), None) => {
            let mut old_discovery = Discovery::new(repo);
            if new_declared.is_some() {
                old_discovery.all(t)?
            } else {
                let mut found = BTreeMap::new();
                for path in &changes.paths {
                    if let Some(target) = old_discovery.target_for(t, path)? {
                        found.entry(target.name.clone()).or_insert(target);
                    }
                }
                found.into_values().collect()
            }
        }
    };
    let old_by_name: BTreeMap<&str, &Target> =
        old_targets.iter().map(|t| (t.name.as_str(), t)).collect();
    let new_names: BTreeSet<&str> = new_targets.iter().map(|t| t.name.as_str()).collect();

    let mut result = Affected {
        declared: new_declared.is_some(),
        ..Default::default()
    };
    for t in &new_targets {
        let touched = old.is_none()
            || old_by_name.get(t.name.as_str()) != Some(&t)
            || changes.paths.iter().any(|p| t.owns(p));
        if touched {
            result.deploy.push(t.clone());
        }
    }
    for t in &old_targets {
        if new_names.contains(t.name.as_str()) {
            continue;
        }
        // A discovered target may be absent from `new_targets` only because the change did not
        // come near it; it is removed only if the new tree no longer has it at its path.
        if new_declared.is_none() {
            let sub = tree::entry(new, &t.path)
                .filter(|(_, m)| tree::is_tree(*m))
                .map(|(id, _)| repo.find_tree(id))
                .transpose()?;
            let still = match (&sub, t.kind) {
                (None, _) => false,
                (Some(sub), TargetType::Kubectl) => {
                    let holds = discovery.holds_kube(sub, &t.path)?;
                    if !holds {
                        refuse_broken_yaml(repo, sub, t)?;
                    }
                    holds
                }
                (Some(sub), kind) => discovery.root_kind(sub) == Some(kind),
            };
            if still {
                continue;
            }
        }
        result.removed.push(t.clone());
    }
    Ok(result)
}

/// A discovered kubectl target stops being one when its directory holds no Kubernetes YAML any
/// more, and its objects are then pruned. A manifest that merely stopped parsing must not do
/// that: if a YAML or JSON file left in the directory is malformed, the deploy fails naming it.
fn refuse_broken_yaml(repo: &Repository, dir: &Tree, t: &Target) -> Result<()> {
    for (path, id) in manifest_files(dir, &t.path) {
        let text = tree::read_text(repo, id, &path)?;
        manifest::check_syntax(&text, &path).with_context(|| {
            format!(
                "target {} deployed Kubernetes objects from this directory; \
                 it is not treated as removed while a manifest there does not parse",
                t.name
            )
        })?;
    }
    Ok(())
}

/// The manifest files directly in `dir` (found at `path`) that discovery reads: regular
/// files, not hidden, named `*.yaml`, `*.yml` or `*.json`; with their paths from the root.
fn manifest_files(dir: &Tree, path: &str) -> Vec<(String, Oid)> {
    dir.iter()
        .filter_map(|e| {
            let name = e.name()?;
            let mode = e.filemode();
            if tree::is_tree(mode)
                || tree::is_link(mode)
                || name.starts_with('.')
                || !manifest::is_manifest_path(name)
            {
                return None;
            }
            let full = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}/{name}")
            };
            Some((full, e.id()))
        })
        .collect()
}

/// The tree of a commit, with the revision named in errors.
pub fn commit_tree<'r>(repo: &'r Repository, id: Oid) -> Result<Tree<'r>> {
    let commit = repo
        .find_commit(id)
        .with_context(|| format!("unknown commit {id}"))?;
    Ok(commit.tree()?)
}
