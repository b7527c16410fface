//! The targets stage: which deploy targets a change touches. Targets are declared in
//! `hookops.toml` or discovered: the topmost directory holding `kustomization.yaml` or `*.tf`
//! files above a changed path is a kustomize or Terraform target, unless another directory
//! references it (a kustomize base or component, a Terraform module: see `references.rs`);
//! otherwise a directory holding Kubernetes YAML or JSON that no kustomization reads is a
//! kubectl target of that one directory, named by its path. A change under a referenced
//! directory re-deploys the targets that use it. Discovery walks up from the changed paths and
//! reads the reference index; it never lists the whole tree, except on a first deploy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use git2::{Oid, Repository, Tree};

use crate::backends::objects;
use crate::config::{check_discovered, Target, TargetType, TreeConfig, TREE_CONFIG};
use crate::pipeline::diff::Changes;
use crate::pipeline::manifest;
use crate::pipeline::references::{RefIndex, References, CHART_FILE, KUSTOMIZATION};

/// The targets of one side of the diff.
pub struct TreeTargets {
    pub declared: bool,
    pub targets: Vec<Target>,
}

/// Reads `hookops.toml` from a tree: `Ok(None)` when the tree has none.
pub fn declared(repo: &Repository, tree: &Tree, label: &str) -> Result<Option<Vec<Target>>> {
    let Some(text) = objects::read_path(repo, tree, TREE_CONFIG)? else {
        return Ok(None);
    };
    let config = TreeConfig::parse(&text, &format!("{TREE_CONFIG} ({label})"))?;
    Ok(Some(config.target))
}

/// Discovery over one tree, with per-directory results cached by tree id.
pub struct Discovery<'r, 'i> {
    repo: &'r Repository,
    /// The tree's reference index: referenced directories are not targets.
    index: &'i RefIndex,
    kinds: HashMap<Oid, Option<TargetType>>,
    kube_dirs: HashMap<Oid, bool>,
    components: HashMap<Oid, bool>,
    libraries: HashMap<Oid, bool>,
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

pub fn discovered(path: &str, kind: TargetType) -> Target {
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
        release: None,
        values: Vec::new(),
        set: BTreeMap::new(),
        repo: None,
        chart: None,
        version: None,
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

impl<'r, 'i> Discovery<'r, 'i> {
    pub fn new(repo: &'r Repository, index: &'i RefIndex) -> Self {
        Discovery {
            repo,
            index,
            kinds: HashMap::new(),
            kube_dirs: HashMap::new(),
            components: HashMap::new(),
            libraries: HashMap::new(),
        }
    }

    fn subtree(&self, tree: &Tree, dir: &str) -> Option<Tree<'r>> {
        let (id, mode) = objects::entry(tree, dir)?;
        if !objects::is_tree(mode) {
            return None;
        }
        self.repo.find_tree(id).ok()
    }

    /// The root marker in this directory (not recursive), D1: a kustomization, else a
    /// `Chart.yaml`, else `.tf` files.
    fn root_kind(&mut self, dir: &Tree) -> Option<TargetType> {
        if let Some(k) = self.kinds.get(&dir.id()) {
            return *k;
        }
        let mut kind = None;
        // Bytes, not `name()`: a directory of thousands of entries is scanned here, and a UTF-8
        // check of every name was a tenth of a one-file plan (docs/performance.md).
        for e in dir.iter() {
            if objects::is_tree(e.filemode()) {
                continue;
            }
            let name = e.name_bytes();
            if KUSTOMIZATION.iter().any(|k| k.as_bytes() == name) {
                kind = Some(TargetType::Kustomize);
                break;
            }
            if name == CHART_FILE.as_bytes() {
                kind = Some(TargetType::Helm);
            } else if name.ends_with(b".tf") && kind.is_none() {
                kind = Some(TargetType::Terraform);
            }
        }
        self.kinds.insert(dir.id(), kind);
        kind
    }

    /// Whether the directory's kustomization is a `kind: Component` (never built alone, D3.1).
    fn is_component(&mut self, dir: &Tree) -> bool {
        if let Some(c) = self.components.get(&dir.id()) {
            return *c;
        }
        let component = dir
            .iter()
            .find(|e| KUSTOMIZATION.iter().any(|k| k.as_bytes() == e.name_bytes()))
            .and_then(|e| objects::read_blob(self.repo, e.id(), "kustomization").ok())
            .and_then(|bytes| serde_yaml_ng::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|v| v.get("kind").and_then(|k| k.as_str()) == Some("Component"));
        self.components.insert(dir.id(), component);
        component
    }

    /// Whether the directory's `Chart.yaml` says `type: library` (never installed alone, D3.1).
    fn is_library(&mut self, dir: &Tree) -> bool {
        if let Some(c) = self.libraries.get(&dir.id()) {
            return *c;
        }
        let library = dir
            .get_name(CHART_FILE)
            .and_then(|e| objects::read_blob(self.repo, e.id(), CHART_FILE).ok())
            .and_then(|bytes| serde_yaml_ng::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|v| v.get("type").and_then(|k| k.as_str()) == Some("library"));
        self.libraries.insert(dir.id(), library);
        library
    }

    /// A kustomize Component or a library chart: built only through its users.
    fn is_part(&mut self, tree: &Tree, dir: &str, kind: TargetType) -> bool {
        match kind {
            TargetType::Kustomize => self
                .subtree(tree, dir)
                .is_some_and(|sub| self.is_component(&sub)),
            TargetType::Helm => self
                .subtree(tree, dir)
                .is_some_and(|sub| self.is_library(&sub)),
            _ => false,
        }
    }

    /// Whether root directory `dir` (of `kind`) is a target of its own (D3.1): not referenced
    /// by another root, and not a kustomize Component or a library chart.
    fn is_target_root(&mut self, tree: &Tree, dir: &str, kind: TargetType) -> bool {
        !self.index.is_referenced(dir) && !self.is_part(tree, dir, kind)
    }

    /// Whether the directory itself holds at least one Kubernetes manifest file (D3.2), or one
    /// that cannot be read to tell (D3.3: over the size limit, or a name that is not UTF-8),
    /// so that deploying it fails naming the file instead of the directory being skipped.
    fn holds_kube(&mut self, dir: &Tree, path: &str) -> Result<bool> {
        if let Some(k) = self.kube_dirs.get(&dir.id()) {
            return Ok(*k);
        }
        let mut found = false;
        for f in manifest_files(dir, path) {
            let Some(full) = f.path else {
                found = true;
                break;
            };
            let Ok(bytes) = objects::read_blob(self.repo, f.id, &full) else {
                // Over the size limit: never guessed from its size (D3.3).
                found = true;
                break;
            };
            // One that is not text counts when it looks like a manifest, so that deploying it
            // fails naming it.
            let text = objects::decode_text(bytes.clone())
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            if manifest::looks_like_kube(&text, &full) {
                found = true;
                break;
            }
        }
        self.kube_dirs.insert(dir.id(), found);
        Ok(found)
    }

    /// The topmost directory holding a kustomization or `.tf` files among `dir` and the
    /// directories above it: it owns everything under it.
    fn claimer(&mut self, tree: &Tree, dir: Option<&str>) -> Option<(String, TargetType)> {
        let mut best = None;
        let mut dir = dir;
        while let Some(d) = dir {
            if let Some(sub) = self.subtree(tree, d) {
                if let Some(kind) = self.root_kind(&sub) {
                    best = Some((d.to_string(), kind));
                }
            }
            dir = parent(d);
        }
        best
    }

    /// The target owning `path` in `tree`, if any. A path under a base or module belongs to no
    /// target of its own: `affected` finds the targets using it in the reference index.
    pub fn target_for(&mut self, tree: &Tree, path: &str) -> Result<Option<Target>> {
        if hidden(path) {
            return Ok(None);
        }
        if let Some((d, kind)) = self.claimer(tree, parent(path)) {
            if !self.is_target_root(tree, &d, kind) {
                return Ok(None);
            }
            return Ok(Some(discovered(&d, kind)));
        }
        let Some(d) = parent(path) else {
            return Ok(None);
        };
        let Some(sub) = self.subtree(tree, d) else {
            return Ok(None);
        };
        if manifest::is_manifest_path(path)
            && self.holds_kube(&sub, d)?
            && !self.index.is_read(d, tree)
        {
            return Ok(Some(discovered(d, TargetType::Kubectl)));
        }
        Ok(None)
    }

    /// The kustomize or Terraform target that directory `dir` (one that references others)
    /// deploys as, or belongs to.
    pub fn target_at(&mut self, tree: &Tree, dir: &str) -> Option<Target> {
        if hidden(dir) {
            return None;
        }
        let (d, kind) = self.claimer(tree, Some(dir))?;
        self.is_target_root(tree, &d, kind)
            .then(|| discovered(&d, kind))
    }

    /// The changed files of `tree` that look like Kubernetes manifests and that none of
    /// `targets` (the targets found for the change) reads, with the reason (D8). Inside a
    /// Terraform root every file is the root's input; a file that a kustomization or module
    /// block names, directly or through a directory, is read by its users.
    fn unread(
        &mut self,
        tree: &Tree,
        changes: &Changes,
        targets: &[Target],
        refs: &References,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for path in &changes.paths {
            let name = path.rsplit('/').next().unwrap_or(path);
            if KUSTOMIZATION.contains(&name) && !hidden(path) {
                let dir = parent(path).unwrap_or("");
                let lone = self.claimer(tree, Some(dir)).is_some_and(|(d, _)| d == dir)
                    && !self.index.is_referenced(dir)
                    && self
                        .subtree(tree, dir)
                        .is_some_and(|sub| self.is_component(&sub));
                if lone {
                    out.push(format!(
                        "{path} is a kustomize Component that no kustomization uses \
                         (components:), and a Component cannot be built alone: nothing deploys \
                         it (declares D3, D8)"
                    ));
                }
            }
            if name == CHART_FILE && !hidden(path) {
                let dir = parent(path).unwrap_or("");
                let lone = self.claimer(tree, Some(dir)).is_some_and(|(d, _)| d == dir)
                    && !self.index.is_referenced(dir)
                    && self.subtree(tree, dir).is_some_and(|sub| {
                        self.root_kind(&sub) == Some(TargetType::Helm) && self.is_library(&sub)
                    });
                if lone {
                    out.push(format!(
                        "{path} is a library chart that no chart uses (dependencies: with \
                         repository: file://), and a library chart cannot be installed alone: \
                         nothing deploys it (declares D3, D8)"
                    ));
                }
            }
            if hidden(path)
                || !manifest::is_manifest_path(path)
                || targets
                    .iter()
                    .any(|t| t.kind == TargetType::Kubectl && t.owns(path))
                || crate::pipeline::references::is_reference_file(
                    path.rsplit('/').next().unwrap_or(path),
                )
            {
                continue;
            }
            let Some(dir) = parent(path) else { continue };
            let claimer = self.claimer(tree, Some(dir));
            // Under a Component nobody uses, even a file its kustomization lists is deployed
            // by nothing.
            let unused = match &claimer {
                Some((root, TargetType::Kustomize)) => {
                    !self.index.is_referenced(root)
                        && self
                            .subtree(tree, root)
                            .is_some_and(|sub| self.is_component(&sub))
                }
                _ => false,
            };
            if !unused && refs.new.1.is_named(path) {
                continue;
            }
            let why = match claimer {
                Some((root, _)) if unused => format!(
                    "it is inside {root}, a kustomize Component that no kustomization uses"
                ),
                // Every file of a Terraform root or a chart is its own input (D1).
                Some((_, TargetType::Terraform | TargetType::Helm)) => continue,
                Some((root, _)) if self.index.is_referenced(&root) => format!(
                    "it is inside {root}, a kustomize base or component, and no kustomization reads it"
                ),
                Some((root, _)) => format!(
                    "it is inside kustomize target {}, whose kustomization does not read it",
                    discovered_name(&root)
                ),
                None if self.index.is_read(dir, tree) => format!(
                    "its directory {} is kustomization input (a kustomization reads files there), \
                     and nothing reads this file",
                    discovered_name(dir)
                ),
                None => String::new(),
            };
            let Some((id, mode)) = objects::entry(tree, path) else {
                continue;
            };
            if objects::is_tree(mode) || objects::is_link(mode) {
                continue;
            }
            let text = match objects::read_blob(self.repo, id, path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => String::new(),
            };
            // A manifest kept in Git LFS: git holds a pointer, so what it declares cannot be
            // seen. Not a target (a data file in LFS would wedge every deploy), but said.
            if why.is_empty() {
                if manifest::is_lfs_pointer(&text) {
                    out.push(format!(
                        "{path} is a Git LFS pointer: if the file holds Kubernetes objects, they \
                         are not deployed (hookops reads what git stores; keep manifests out of \
                         LFS) (declares D8)"
                    ));
                }
                continue;
            }
            if text.is_empty() || manifest::looks_like_kube(&text, path) {
                out.push(format!(
                    "{path} looks like a Kubernetes manifest, but no target deploys it: {why} \
                     (declares D8)"
                ));
            }
        }
        Ok(out)
    }

    /// Every target in the tree (first deploys only).
    pub fn all(&mut self, tree: &Tree<'r>) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        self.walk(tree, tree.clone(), String::new(), &mut out)?;
        Ok(out)
    }

    fn walk(
        &mut self,
        root: &Tree<'r>,
        dir: Tree<'r>,
        path: String,
        out: &mut Vec<Target>,
    ) -> Result<()> {
        if let Some(kind) = self.root_kind(&dir) {
            // A base or module, and everything under it, deploys through its users.
            if self.is_target_root(root, &path, kind) {
                out.push(discovered(&path, kind));
            }
            return Ok(());
        }
        if self.holds_kube(&dir, &path)? && !self.index.is_read(&path, root) {
            out.push(discovered(&path, TargetType::Kubectl));
        }
        let subdirs: Vec<(String, Oid)> = dir
            .iter()
            .filter(|e| objects::is_tree(e.filemode()))
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
            self.walk(root, sub, sub_path, out)?;
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
    /// The new tree's `hookops.toml` targets, in its order (D2, D7), when it has one.
    pub tree_targets: Option<Vec<Target>>,
    /// Changed files that look like Kubernetes manifests and that no target reads, each with
    /// the reason (D8).
    pub unread: Vec<String>,
}

pub fn affected(
    repo: &Repository,
    old: Option<&Tree>,
    new: &Tree,
    changes: &Changes,
    new_label: &str,
    refs: &References,
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
    // Directories that read a changed path through a reference (old or new tree): the targets
    // among them (or above them) re-deploy even though none of their own files changed.
    let users: BTreeSet<String> = match old {
        Some(_) => changes
            .paths
            .iter()
            .flat_map(|p| refs.users_of(p))
            .collect(),
        None => BTreeSet::new(),
    };
    let mut discovery = Discovery::new(repo, &refs.new.1);
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
            // A base or module whose last user went is a target of its own (D3.1).
            for dir in users.iter().chain(&refs.newly_unreferenced(changes)) {
                if let Some(t) = discovery.target_at(new, dir) {
                    found.entry(t.name.clone()).or_insert(t);
                }
            }
            found.into_values().collect()
        }
    };
    let mut new_targets = new_targets;
    let mut unread = Vec::new();
    if new_declared.is_none() {
        // A name that is not UTF-8 fails the target of its directory, found or made (D3.3).
        for (shown, dir) in &changes.bad_names {
            if hidden(shown) || !manifest::is_manifest_path(shown) {
                continue;
            }
            let owner = discovery.target_at(new, dir).or_else(|| {
                discovery
                    .claimer(new, Some(dir))
                    .is_none()
                    .then(|| discovered(dir, TargetType::Kubectl))
            });
            if let Some(t) = owner {
                if !new_targets.iter().any(|x| x.name == t.name) {
                    new_targets.push(t);
                }
            }
        }
        check_discovered(&new_targets)?;
        unread = discovery.unread(new, changes, &new_targets, refs)?;
    }
    let empty = RefIndex::default();
    let old_index = refs.old_index().unwrap_or(&empty);
    let old_targets: Vec<Target> = match (old, &old_declared) {
        (None, _) => Vec::new(),
        (Some(_), Some(t)) => t.clone(),
        (Some(t), None) => {
            let mut old_discovery = Discovery::new(repo, old_index);
            if new_declared.is_some() {
                old_discovery.all(t)?
            } else {
                let mut found = BTreeMap::new();
                for path in &changes.paths {
                    if let Some(target) = old_discovery.target_for(t, path)? {
                        found.entry(target.name.clone()).or_insert(target);
                    }
                }
                // A directory that became a base or module deployed on its own until now: it
                // is removed as a target (its objects pruned unless its users declare them).
                for dir in refs.newly_referenced(changes) {
                    if let Some(target) = old_discovery.target_at(t, &dir) {
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
        tree_targets: new_declared.clone(),
        unread,
        ..Default::default()
    };
    for t in &new_targets {
        let touched = old.is_none()
            || old_by_name.get(t.name.as_str()) != Some(&t)
            || changes.paths.iter().any(|p| t.owns(p))
            || (t.kind != TargetType::Kubectl && users.contains(&t.path));
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
            let sub = objects::entry(new, &t.path)
                .filter(|(_, m)| objects::is_tree(*m))
                .map(|(id, _)| repo.find_tree(id))
                .transpose()?;
            let still = match (&sub, t.kind) {
                (None, _) => false,
                (Some(sub), TargetType::Kubectl) => {
                    let holds = discovery.holds_kube(sub, &t.path)?;
                    if !holds {
                        refuse_broken_yaml(repo, sub, t)?;
                    }
                    holds && !refs.new.1.is_read(&t.path, new)
                }
                (Some(sub), kind) => {
                    discovery.root_kind(sub) == Some(kind)
                        && discovery.is_target_root(new, &t.path, kind)
                }
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
    for f in manifest_files(dir, &t.path) {
        let Some(path) = f.path else { continue };
        let text = objects::read_text(repo, f.id, &path)?;
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

/// A manifest file directly in a directory: its path from the root (None when its name is not
/// UTF-8, D3.3) and its blob.
pub struct ManifestFile {
    pub path: Option<String>,
    pub shown: String,
    pub id: Oid,
}

/// The manifest files directly in `dir` (found at `path`) that discovery reads: regular
/// files, not hidden, named `*.yaml`, `*.yml` or `*.json` (D1), with their paths from the root.
/// Names that are not UTF-8 are returned too, with their bytes escaped for messages.
pub fn manifest_files(dir: &Tree, path: &str) -> Vec<ManifestFile> {
    dir.iter()
        .filter_map(|e| {
            let name = e.name_bytes();
            let mode = e.filemode();
            if objects::is_tree(mode)
                || objects::is_link(mode)
                || name.starts_with(b".")
                || !manifest::is_manifest_name(name)
            {
                return None;
            }
            let join = |name: &str| {
                if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}/{name}")
                }
            };
            let utf8 = std::str::from_utf8(name).ok();
            Some(ManifestFile {
                path: utf8.map(join),
                shown: join(&objects::escape_name(name)),
                id: e.id(),
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::diff;
    use crate::pipeline::fixtures::{repo, tree};

    /// What the change from `old` to `new` touches, as `affected` says after the diff and the
    /// reference index (the way `plan::build` calls it).
    fn affected_by(repo: &Repository, old: Option<&Tree>, new: &Tree) -> Result<Affected> {
        let changes = diff::changed_paths(repo, old, new)?;
        let refs =
            References::for_change(repo, old.map(|t| (t.id(), t)), (new.id(), new), &changes)?;
        affected(repo, old, new, &changes, "new", &refs)
    }

    fn names(targets: &[Target]) -> Vec<&str> {
        let mut v: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        v.sort();
        v
    }

    fn cm(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{value}\"\n"
        )
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n";
    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n";
    const WIDGET: &str =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: one\n  namespace: apps\n";
    const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n";
    const MODULE: &str =
        "variable \"cidr\" {}\nresource \"terraform_data\" \"net\" {\n  input = var.cidr\n}\n";

    fn root(module: &str) -> String {
        format!("module \"net\" {{\n  source = \"{module}\"\n  cidr   = \"10.0.0.0/16\"\n}}\n")
    }

    /// A repository laid out the way discovery is meant for: kustomize overlays over one base,
    /// a CRD in one directory and its custom resources in another, cluster-scoped objects,
    /// Terraform roots under envs/ sharing a module, and YAML that is not Kubernetes.
    fn layout(repo: &Repository) -> Tree<'_> {
        let prod_root = root("../../modules/net");
        tree(
            repo,
            None,
            &[
                (
                    "base/kustomization.yaml",
                    Some("resources:\n- deployment.yaml\n"),
                ),
                ("base/deployment.yaml", Some(DEPLOYMENT)),
                (
                    "overlays/prod/kustomization.yaml",
                    Some("namespace: prod\nresources:\n- ../../base\n"),
                ),
                (
                    "overlays/staging/kustomization.yaml",
                    Some("namespace: staging\nresources:\n- ../../base\n"),
                ),
                ("crds/widgets.yaml", Some(CRD)),
                ("widgets/one.yaml", Some(WIDGET)),
                ("cluster/namespaces.yaml", Some(NAMESPACES)),
                ("apps/settings.yaml", Some(&cm("settings", "1"))),
                ("modules/net/main.tf", Some(MODULE)),
                ("envs/prod/main.tf", Some(&prod_root)),
                ("envs/prod/terraform.tfvars", Some("region = \"eu\"\n")),
                ("envs/staging/main.tf", Some(&prod_root)),
                (
                    "charts/web/values.yaml",
                    Some("replicas: 2\nimage: nginx\n"),
                ),
                (".github/workflows/ci.yaml", Some(&cm("not-deployed", "1"))),
                ("README.md", Some("# infra\n")),
            ],
        )
    }

    #[test]
    fn a_first_deploy_finds_every_target_and_no_base_or_module() {
        let (_d, repo) = repo();
        let t = layout(&repo);
        let a = affected_by(&repo, None, &t).unwrap();
        assert!(!a.declared);
        assert!(a.removed.is_empty());
        assert_eq!(
            names(&a.deploy),
            [
                "apps",
                "cluster",
                "crds",
                "envs/prod",
                "envs/staging",
                "overlays/prod",
                "overlays/staging",
                "widgets"
            ]
        );
        let kind = |n: &str| a.deploy.iter().find(|t| t.name == n).unwrap().kind;
        assert_eq!(kind("overlays/prod"), TargetType::Kustomize);
        assert_eq!(kind("envs/staging"), TargetType::Terraform);
        assert_eq!(kind("widgets"), TargetType::Kubectl);
        // Discovered kubectl targets own their directory only, not its subdirectories.
        let apps = a.deploy.iter().find(|t| t.name == "apps").unwrap();
        assert!(apps.flat && apps.owns("apps/settings.yaml") && !apps.owns("apps/x/y.yaml"));
    }

    #[test]
    fn a_change_in_a_base_redeploys_every_overlay_and_nothing_else() {
        let (_d, repo) = repo();
        let old = layout(&repo);
        let new = tree(
            &repo,
            Some(&old),
            &[(
                "base/deployment.yaml",
                Some(&DEPLOYMENT.replace("nginx", "nginx:2")),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["overlays/prod", "overlays/staging"]);
        assert!(a.removed.is_empty());

        // One overlay's own file: that overlay alone.
        let new = tree(
            &repo,
            Some(&old),
            &[(
                "overlays/staging/kustomization.yaml",
                Some("namespace: staging2\nresources:\n- ../../base\n"),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["overlays/staging"]);
    }

    #[test]
    fn a_shared_module_redeploys_every_root_using_it() {
        let (_d, repo) = repo();
        let old = layout(&repo);
        let new = tree(
            &repo,
            Some(&old),
            &[(
                "modules/net/main.tf",
                Some(&MODULE.replace("net", "network")),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["envs/prod", "envs/staging"]);

        // A file of one root that is not itself a .tf file still belongs to that root.
        let new = tree(
            &repo,
            Some(&old),
            &[("envs/prod/terraform.tfvars", Some("region = \"us\"\n"))],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["envs/prod"]);
    }

    #[test]
    fn kubectl_directories_deploy_alone_and_non_kubernetes_yaml_is_no_target() {
        let (_d, repo) = repo();
        let old = layout(&repo);
        let new = tree(
            &repo,
            Some(&old),
            &[
                ("widgets/one.yaml", Some(&WIDGET.replace("one", "uno"))),
                ("charts/web/values.yaml", Some("replicas: 3\n")),
                (".github/workflows/ci.yaml", Some(&cm("not-deployed", "2"))),
                ("README.md", Some("# infra, again\n")),
            ],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["widgets"]);

        // A new subdirectory of a kubectl directory is a target of its own.
        let new = tree(
            &repo,
            Some(&old),
            &[(
                "widgets/extra/two.yaml",
                Some(&WIDGET.replace("one", "two")),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["widgets/extra"]);
    }

    #[test]
    fn deleted_and_renamed_directories_are_removed_targets() {
        let (_d, repo) = repo();
        let old = layout(&repo);
        // cluster/ moves to platform/; the staging overlay and widgets/ are deleted.
        let new = tree(
            &repo,
            Some(&old),
            &[
                ("cluster/namespaces.yaml", None),
                ("platform/namespaces.yaml", Some(NAMESPACES)),
                ("overlays/staging/kustomization.yaml", None),
                ("widgets/one.yaml", None),
            ],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["platform"]);
        assert_eq!(
            names(&a.removed),
            ["cluster", "overlays/staging", "widgets"]
        );
        let staging = a.removed.iter().find(|t| t.name == "overlays/staging");
        assert_eq!(staging.unwrap().kind, TargetType::Kustomize);

        // One file of a directory that keeps others: the target stays, nothing is removed.
        let new = tree(
            &repo,
            Some(&old),
            &[
                ("apps/more.yaml", Some(&cm("more", "1"))),
                ("apps/settings.yaml", None),
            ],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["apps"]);
        assert!(a.removed.is_empty(), "{:?}", names(&a.removed));
    }

    #[test]
    fn a_directory_that_becomes_a_base_stops_being_a_target() {
        let (_d, repo) = repo();
        let old = tree(
            &repo,
            Some(&layout(&repo)),
            &[
                ("extra/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
                ("extra/cm.yaml", Some(&cm("extra", "1"))),
            ],
        );
        assert!(names(&affected_by(&repo, None, &old).unwrap().deploy).contains(&"extra"));
        let new = tree(
            &repo,
            Some(&old),
            &[(
                "overlays/prod/kustomization.yaml",
                Some("namespace: prod\nresources:\n- ../../base\n- ../../extra\n"),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["overlays/prod"]);
        assert_eq!(names(&a.removed), ["extra"]);
    }

    #[test]
    fn a_base_whose_last_user_goes_is_a_target_of_its_own() {
        // Issue 25, 1: deleting the last overlay pruned the base's objects.
        let (_d, repo) = repo();
        let old = tree(
            &repo,
            None,
            &[
                ("base/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
                ("base/cm.yaml", Some(&cm("c", "1"))),
                (
                    "overlay/kustomization.yaml",
                    Some("resources:\n- ../base\n"),
                ),
            ],
        );
        assert_eq!(
            names(&affected_by(&repo, None, &old).unwrap().deploy),
            ["overlay"]
        );
        let new = tree(&repo, Some(&old), &[("overlay/kustomization.yaml", None)]);
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["base"]);
        assert_eq!(names(&a.removed), ["overlay"]);
        // The same when the overlay stops naming it without going.
        let new = tree(
            &repo,
            Some(&old),
            &[("overlay/kustomization.yaml", Some("resources: []\n"))],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["base", "overlay"]);
        assert!(a.removed.is_empty());
    }

    #[test]
    fn manifests_beside_or_above_a_base_are_a_target() {
        // Issue 25, 2: m/install.yaml beside m/base/ (used by ov/) was never deployed.
        let (_d, repo) = repo();
        let t = tree(
            &repo,
            None,
            &[
                ("m/install.yaml", Some(&cm("install", "1"))),
                ("m/base/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
                ("m/base/cm.yaml", Some(&cm("b", "1"))),
                ("ov/kustomization.yaml", Some("resources:\n- ../m/base\n")),
            ],
        );
        let a = affected_by(&repo, None, &t).unwrap();
        assert_eq!(names(&a.deploy), ["m", "ov"]);
        let new = tree(
            &repo,
            Some(&t),
            &[("m/install.yaml", Some(&cm("install", "2")))],
        );
        let a = affected_by(&repo, Some(&t), &new).unwrap();
        assert_eq!(names(&a.deploy), ["m"]);
    }

    #[test]
    fn a_component_is_never_a_target_of_its_own() {
        let (_d, repo) = repo();
        let component = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- cm.yaml\n";
        let old = tree(
            &repo,
            None,
            &[
                ("comp/kustomization.yaml", Some(component)),
                ("comp/cm.yaml", Some(&cm("c", "1"))),
                ("app/kustomization.yaml", Some("components:\n- ../comp\n")),
            ],
        );
        assert_eq!(
            names(&affected_by(&repo, None, &old).unwrap().deploy),
            ["app"]
        );
        // Its last user goes: still no target (it cannot be built alone), and said so.
        let new = tree(&repo, Some(&old), &[("app/kustomization.yaml", None)]);
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert!(a.deploy.is_empty(), "{:?}", names(&a.deploy));
        let new = tree(
            &repo,
            Some(&new),
            &[(
                "comp/kustomization.yaml",
                Some(&format!("{component}# edited\n")),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert!(a.deploy.is_empty(), "{:?}", names(&a.deploy));
        assert!(
            a.unread.iter().any(|w| w.starts_with(
                "comp/kustomization.yaml is a kustomize Component that no kustomization uses"
            )),
            "{:?}",
            a.unread
        );
    }

    #[test]
    fn what_no_target_reads_is_reported() {
        let (_d, repo) = repo();
        let t = tree(
            &repo,
            None,
            &[
                ("app/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
                ("app/cm.yaml", Some(&cm("a", "1"))),
                ("app/forgotten.yaml", Some(&cm("f", "1"))),
                ("app/notes.yaml", Some("just: yaml\n")),
                (
                    "ov/kustomization.yaml",
                    Some("resources:\n- ../app\npatches:\n- path: ../patches/p.yaml\n"),
                ),
                ("patches/p.yaml", Some(&cm("a", "2"))),
                ("patches/unused.yaml", Some(&cm("u", "2"))),
                ("infra/main.tf", Some(MODULE)),
                ("infra/templates/cm.yaml", Some(&cm("tf", "1"))),
            ],
        );
        let a = affected_by(&repo, None, &t).unwrap();
        assert_eq!(names(&a.deploy), ["infra", "ov"]);
        assert_eq!(a.unread.len(), 2, "{:#?}", a.unread);
        assert!(a.unread[0].starts_with("app/forgotten.yaml looks like a Kubernetes manifest, but no target deploys it: it is inside app, a kustomize base or component"), "{}", a.unread[0]);
        assert!(a.unread[1].starts_with("patches/unused.yaml looks like a Kubernetes manifest, but no target deploys it: its directory patches is kustomization input"), "{}", a.unread[1]);

        // A manifest in Git LFS is not a target (a data file in LFS would wedge every deploy),
        // and it is said.
        let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12\n";
        let new = tree(&repo, Some(&t), &[("lfs/deploy.yaml", Some(pointer))]);
        let a = affected_by(&repo, Some(&t), &new).unwrap();
        assert!(a.deploy.is_empty(), "{:?}", names(&a.deploy));
        assert!(
            a.unread
                .iter()
                .any(|w| w.starts_with("lfs/deploy.yaml is a Git LFS pointer")),
            "{:?}",
            a.unread
        );
    }

    #[test]
    fn oversized_manifests_and_names_that_are_not_utf8_make_a_target() {
        // Issue 25, 7: both were skipped in silence in a new directory.
        let (_d, repo) = repo();
        let old = layout(&repo);
        let big = format!("# {}\n", "x".repeat(objects::MAX_FILE_BYTES));
        let new = tree(&repo, Some(&old), &[("huge/cm.yaml", Some(&big))]);
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["huge"]);

        let blob = repo.blob(cm("odd", "1").as_bytes()).unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert(b"caf\xe9.yaml".as_slice(), blob, 0o100644)
            .unwrap();
        let odd = b.write().unwrap();
        let mut root = repo.treebuilder(Some(&old)).unwrap();
        root.insert("odd", odd, 0o040000).unwrap();
        let new = repo.find_tree(root.write().unwrap()).unwrap();
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["odd"]);
        let changes = diff::changed_paths(&repo, Some(&old), &new).unwrap();
        assert_eq!(
            changes.bad_names.keys().collect::<Vec<_>>(),
            ["odd/caf\\xe9.yaml"]
        );
    }

    #[test]
    fn a_directory_whose_only_manifest_stopped_parsing_is_not_removed() {
        let (_d, repo) = repo();
        let old = layout(&repo);
        let new = tree(
            &repo,
            Some(&old),
            &[("widgets/one.yaml", Some("metadata: [unclosed\n"))],
        );
        let e = affected_by(&repo, Some(&old), &new).err().expect("refused");
        let text = format!("{e:#}");
        assert!(text.contains("widgets/one.yaml"), "{text}");
        assert!(text.contains("target widgets"), "{text}");
    }

    #[test]
    fn declared_targets_replace_discovery() {
        let (_d, repo) = repo();
        let config =
            "[[target]]\nname = \"web\"\npath = \"overlays/prod\"\ntype = \"kustomize\"\n\n\
                      [[target]]\nname = \"platform\"\npath = \"cluster\"\ntype = \"kubectl\"\n";
        let old = tree(&repo, Some(&layout(&repo)), &[(TREE_CONFIG, Some(config))]);
        let a = affected_by(&repo, None, &old).unwrap();
        assert!(a.declared);
        assert_eq!(names(&a.deploy), ["platform", "web"]);

        // Files no declared target owns deploy nothing, even where discovery would.
        let new = tree(
            &repo,
            Some(&old),
            &[("widgets/one.yaml", Some(&WIDGET.replace("one", "uno")))],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert!(a.deploy.is_empty() && a.removed.is_empty());

        // A target whose definition changed redeploys though none of its files did; one that
        // is no longer declared is removed.
        let changed = "[[target]]\nname = \"web\"\npath = \"overlays/prod\"\ntype = \"kustomize\"\nnamespace = \"web\"\n";
        let new = tree(&repo, Some(&old), &[(TREE_CONFIG, Some(changed))]);
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["web"]);
        assert_eq!(names(&a.removed), ["platform"]);

        // A declared kubectl target reads its subdirectories too.
        let new = tree(
            &repo,
            Some(&old),
            &[(
                "cluster/more/ns.yaml",
                Some(&NAMESPACES.replace("prod", "qa")),
            )],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["platform"]);
    }

    const CHART: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\n";

    fn chart_with_dep(name: &str, dep: &str) -> String {
        format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\ndependencies:\n- name: common\n  version: 0.1.0\n  repository: \"file://{dep}\"\n")
    }

    /// Issue 29: a directory with Chart.yaml is a root of type helm (D1); its templates,
    /// crds, charts and values files are its own (never targets, never reported unread); a
    /// kustomization in the same directory wins over Chart.yaml, Chart.yaml over `.tf` files.
    #[test]
    fn a_chart_directory_is_a_helm_target_and_owns_everything_under_it() {
        let (_d, repo) = repo();
        let t = tree(
            &repo,
            None,
            &[
                ("charts/web/Chart.yaml", Some(CHART)),
                ("charts/web/values.yaml", Some("replicas: 2\n")),
                ("charts/web/values-prod.yaml", Some("replicas: 3\n")),
                (
                    "charts/web/templates/cm.yaml",
                    Some(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
                    ),
                ),
                ("charts/web/crds/crd.yaml", Some(CRD)),
                ("charts/web/charts/sub/Chart.yaml", Some(CHART)),
                (
                    "charts/web/charts/sub/templates/x.yaml",
                    Some(&cm("sub", "1")),
                ),
                ("both/Chart.yaml", Some(CHART)),
                ("both/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
                ("both/cm.yaml", Some(&cm("both", "1"))),
                ("tfchart/Chart.yaml", Some(CHART)),
                ("tfchart/main.tf", Some(MODULE)),
            ],
        );
        let a = affected_by(&repo, None, &t).unwrap();
        assert_eq!(names(&a.deploy), ["both", "charts/web", "tfchart"]);
        let kind = |n: &str| a.deploy.iter().find(|t| t.name == n).unwrap().kind;
        assert_eq!(kind("charts/web"), TargetType::Helm);
        assert_eq!(kind("both"), TargetType::Kustomize);
        assert_eq!(kind("tfchart"), TargetType::Helm);
        assert!(a.unread.is_empty(), "{:?}", a.unread);

        // A values file or a template changed: that chart alone, nothing reported.
        for path in [
            "charts/web/values-prod.yaml",
            "charts/web/templates/cm.yaml",
        ] {
            let new = tree(&repo, Some(&t), &[(path, Some("replicas: 4\n"))]);
            let a = affected_by(&repo, Some(&t), &new).unwrap();
            assert_eq!(names(&a.deploy), ["charts/web"], "{path}");
            assert!(a.unread.is_empty(), "{:?}", a.unread);
        }
    }

    /// A chart named by another chart's local dependency (`file://../common`) is referenced,
    /// like a base: not a target, and its users re-deploy when it changes; a library chart is
    /// never a target of its own, and an unused one is reported.
    #[test]
    fn a_local_chart_dependency_is_referenced_like_a_base() {
        let (_d, repo) = repo();
        let common = "apiVersion: v2\nname: common\nversion: 0.1.0\n";
        let old = tree(
            &repo,
            None,
            &[
                (
                    "charts/web/Chart.yaml",
                    Some(&chart_with_dep("web", "../common")),
                ),
                (
                    "charts/api/Chart.yaml",
                    Some(&chart_with_dep("api", "../common")),
                ),
                ("charts/common/Chart.yaml", Some(common)),
                ("charts/common/templates/cm.yaml", Some(&cm("common", "1"))),
                ("charts/other/Chart.yaml", Some(CHART)),
            ],
        );
        let a = affected_by(&repo, None, &old).unwrap();
        assert_eq!(
            names(&a.deploy),
            ["charts/api", "charts/other", "charts/web"]
        );
        let new = tree(
            &repo,
            Some(&old),
            &[("charts/common/templates/cm.yaml", Some(&cm("common", "2")))],
        );
        let a = affected_by(&repo, Some(&old), &new).unwrap();
        assert_eq!(names(&a.deploy), ["charts/api", "charts/web"]);

        let library = "apiVersion: v2\nname: lib\nversion: 0.1.0\ntype: library\n";
        let t = tree(
            &repo,
            Some(&old),
            &[("charts/lib/Chart.yaml", Some(library))],
        );
        let a = affected_by(&repo, Some(&old), &t).unwrap();
        assert!(a.deploy.is_empty(), "{:?}", names(&a.deploy));
        assert!(
            a.unread
                .iter()
                .any(|w| w
                    .starts_with("charts/lib/Chart.yaml is a library chart that no chart uses")),
            "{:?}",
            a.unread
        );
        assert_eq!(
            names(&affected_by(&repo, None, &t).unwrap().deploy),
            ["charts/api", "charts/other", "charts/web"]
        );
    }

    #[test]
    fn target_for_names_the_topmost_root_and_skips_hidden_paths() {
        let (_d, repo) = repo();
        let t = tree(
            &repo,
            Some(&layout(&repo)),
            &[
                ("envs/prod/files/policy.json", Some("{}")),
                ("envs/prod/nested/main.tf", Some(MODULE)),
            ],
        );
        let index = RefIndex::build(&repo, &t).unwrap();
        let mut d = Discovery::new(&repo, &index);
        let owner = |d: &mut Discovery, p: &str| d.target_for(&t, p).unwrap().map(|t| t.name);
        assert_eq!(
            owner(&mut d, "envs/prod/files/policy.json").as_deref(),
            Some("envs/prod")
        );
        assert_eq!(
            owner(&mut d, "envs/prod/nested/main.tf").as_deref(),
            Some("envs/prod")
        );
        assert_eq!(owner(&mut d, "base/deployment.yaml"), None);
        assert_eq!(owner(&mut d, "modules/net/main.tf"), None);
        assert_eq!(owner(&mut d, ".github/workflows/ci.yaml"), None);
        assert_eq!(owner(&mut d, "charts/web/values.yaml"), None);
        assert_eq!(owner(&mut d, "README.md"), None);
        assert_eq!(owner(&mut d, "crds/widgets.yaml").as_deref(), Some("crds"));
        assert_eq!(placeholder("gone").name, "gone");
        assert_eq!(discovered_name(""), ".");
    }
}
