//! The plan stage: from the affected targets to what will happen, contacting no cluster.
//! kubectl targets apply the objects of their changed files; kustomize targets render old and
//! new (`kubectl kustomize`, local, from a scratch copy of everything they reference) and apply
//! the whole new output; Terraform roots are planned later by terraform itself, from a copy of
//! the root and the local modules it reaches. Objects present in the old side of the change and
//! absent from the new are pruned. Namespace policy, and references that leave the repository
//! (or reach the network), are checked here, so a refused target never reaches apply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{Oid, Repository, Tree};
use serde::Serialize;

use crate::config::{Environment, SecretSpec, Target, TargetType};
use crate::diff::{self, Changes};
use crate::kube::Kubectl;
use crate::manifest::{self, Object, ObjectId};
use crate::references::{Closure, RefIndex, References};
use crate::targets::{self, Affected};
use crate::tree;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Apply (and prune within) a target of the new tree.
    Deploy,
    /// The target is gone from the new tree: prune its objects or destroy its root.
    Remove,
}

#[derive(Debug, Clone)]
pub struct TargetPlan {
    pub target: Target,
    pub step: Step,
    pub apply: Vec<Object>,
    /// Objects to delete, with the apiVersion to name them by.
    pub prune: Vec<(ObjectId, String)>,
    /// Changed files that fed this plan.
    pub files: Vec<String>,
    /// kustomize and Terraform: the referenced directories and files (outside the target's
    /// own directory) whose change re-plans it: "uses modules/thing".
    pub uses: Vec<String>,
    /// kustomize and Terraform: the repository paths to materialise, the target's own
    /// directory first (of the new tree to deploy, of the old one to remove).
    pub closure: Vec<String>,
    /// Set when policy refuses the target: it is recorded as failed and never applied.
    pub refused: Option<String>,
}

impl TargetPlan {
    pub fn has_foundation(&self) -> bool {
        self.apply.iter().any(Object::is_foundation)
    }
}

pub struct Plan {
    pub from: Option<Oid>,
    pub to: Oid,
    pub changed_paths: usize,
    pub targets: Vec<TargetPlan>,
    /// The reference indexes of both sides, for the deploy to keep.
    pub references: References,
}

/// Inputs for rendering kustomize targets.
pub struct Renderer<'a> {
    pub kubectl: &'a Kubectl,
    /// A private scratch directory.
    pub scratch: &'a Path,
    /// `[kustomize] allow_remote`: kustomizations may name remote resources.
    pub allow_remote: bool,
}

pub fn build(
    repo: &Repository,
    env: &Environment,
    from: Option<Oid>,
    to: Oid,
    renderer: &Renderer,
) -> Result<Plan> {
    let new_tree = targets::commit_tree(repo, to)?;
    let old_tree = from.map(|id| targets::commit_tree(repo, id)).transpose()?;
    let changes = diff::changed_paths(repo, old_tree.as_ref(), &new_tree)?;
    let references =
        References::for_change(repo, from.zip(old_tree.as_ref()), (to, &new_tree), &changes)?;
    let short = short_id(to);
    let affected = targets::affected(
        repo,
        old_tree.as_ref(),
        &new_tree,
        &changes,
        &short,
        &references,
    )?;
    let mut plan = Plan {
        from,
        to,
        changed_paths: changes.paths.len(),
        targets: Vec::new(),
        references: References::default(),
    };
    if affected.deploy.is_empty() && affected.removed.is_empty() {
        plan.references = references;
        return Ok(plan);
    }
    let old_targets = old_definitions(repo, old_tree.as_ref(), &affected, &references)?;
    let empty = RefIndex::default();
    let sides = Sides {
        repo,
        old: old_tree.as_ref(),
        new: &new_tree,
        old_index: references.old_index().unwrap_or(&empty),
        new_index: &references.new.1,
        changes: &changes,
        renderer,
    };
    // Old and new objects of every affected target; pruning compares across targets so that
    // an object moved from one target to another is applied, not deleted.
    let mut old_objects: Vec<(usize, Object)> = Vec::new();
    let mut new_ids: BTreeSet<ObjectId> = BTreeSet::new();
    for t in &affected.deploy {
        let old_def = old_targets.get(&t.name);
        let full = old_def != Some(t);
        let idx = plan.targets.len();
        let mut tp = TargetPlan {
            target: t.clone(),
            step: Step::Deploy,
            apply: Vec::new(),
            prune: Vec::new(),
            files: Vec::new(),
            uses: Vec::new(),
            closure: Vec::new(),
            refused: None,
        };
        if t.kind != TargetType::Kubectl {
            let closure = references.new.1.closure(&t.path);
            tp.refused = closure.refusal(&new_tree, renderer.allow_remote);
            tp.uses = uses(t, &closure, &changes);
            tp.files = changes
                .paths
                .iter()
                .filter(|p| t.owns(p) || closure.used_for(&t.path, p).is_some())
                .cloned()
                .collect();
            tp.closure = closure.paths;
        }
        if tp.refused.is_some() {
            // Never rendered: its references leave the repository or reach the network. Its
            // old objects are known, so nothing moved out of it is pruned elsewhere.
            if let Some(def) = old_def.filter(|d| d.kind.is_kube()) {
                let (old_objs, _) = sides.objects(def, Side::Old, full)?;
                new_ids.extend(old_objs.into_iter().map(|o| o.id));
            }
        } else if t.kind.is_kube() {
            let (new_objs, files) = sides.objects(t, Side::New, full)?;
            let old_objs = match old_def {
                Some(def) if def.kind.is_kube() => sides.objects(def, Side::Old, full)?.0,
                _ => Vec::new(),
            };
            new_ids.extend(new_objs.iter().map(|o| o.id.clone()));
            new_ids.extend(secret_ids(t));
            old_objects.extend(old_objs.into_iter().map(|o| (idx, o)));
            if let Some(def) = old_def {
                old_objects.extend(secret_objects(def).into_iter().map(|o| (idx, o)));
            }
            tp.apply = new_objs;
            if t.kind == TargetType::Kubectl {
                tp.files = files;
            }
        }
        plan.targets.push(tp);
    }
    for t in &affected.removed {
        let idx = plan.targets.len();
        if t.kind.is_kube() {
            let (old_objs, _) = sides.objects(t, Side::Old, true)?;
            old_objects.extend(old_objs.into_iter().map(|o| (idx, o)));
            old_objects.extend(secret_objects(t).into_iter().map(|o| (idx, o)));
        }
        let closure = match t.kind {
            TargetType::Kubectl => Vec::new(),
            _ => sides.old_index.closure(&t.path).paths,
        };
        plan.targets.push(TargetPlan {
            target: t.clone(),
            step: Step::Remove,
            apply: Vec::new(),
            prune: Vec::new(),
            files: Vec::new(),
            uses: Vec::new(),
            closure,
            refused: None,
        });
    }
    let mut seen = BTreeSet::new();
    for (idx, o) in old_objects {
        if !new_ids.contains(&o.id) && seen.insert(o.id.clone()) {
            plan.targets[idx].prune.push((o.id, o.api_version));
        }
    }
    for tp in &mut plan.targets {
        if tp.refused.is_none() {
            tp.refused = policy(env, tp);
        }
    }
    plan.targets = order(plan.targets)?;
    plan.references = references;
    Ok(plan)
}

/// The referenced paths (outside the target's own directory) holding a changed path.
fn uses(t: &Target, closure: &Closure, changes: &Changes) -> Vec<String> {
    let used: BTreeSet<&str> = changes
        .paths
        .iter()
        .filter(|p| !t.owns(p))
        .filter_map(|p| closure.used_for(&t.path, p))
        .collect();
    used.into_iter().map(str::to_string).collect()
}

pub fn short_id(id: Oid) -> String {
    id.to_string()[..7].to_string()
}

/// The old tree's definitions of the targets in play (by name).
fn old_definitions(
    repo: &Repository,
    old: Option<&Tree>,
    affected: &Affected,
    references: &References,
) -> Result<BTreeMap<String, Target>> {
    let Some(old) = old else {
        return Ok(BTreeMap::new());
    };
    let empty = RefIndex::default();
    let mut out: BTreeMap<String, Target> = BTreeMap::new();
    if let Ok(Some(declared)) = targets::declared(repo, old, "deployed") {
        for t in declared {
            out.insert(t.name.clone(), t);
        }
    } else {
        // Discovered targets are defined by their path alone: same path, same kind, same target.
        let mut discovery = targets::Discovery::new(repo, references.old_index().unwrap_or(&empty));
        for t in affected.deploy.iter().chain(&affected.removed) {
            if t.name == targets::discovered_name(&t.path) {
                let probe = format!("{}/x.yaml", t.path.trim_start_matches('.'));
                let probe = probe.trim_start_matches('/');
                if let Some(found) = discovery.target_for(old, probe)? {
                    if found.name == t.name {
                        out.insert(found.name.clone(), found);
                    }
                }
            }
        }
    }
    for t in &affected.removed {
        out.entry(t.name.clone()).or_insert_with(|| t.clone());
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

struct Sides<'a, 'r> {
    repo: &'r Repository,
    old: Option<&'a Tree<'r>>,
    new: &'a Tree<'r>,
    old_index: &'a RefIndex,
    new_index: &'a RefIndex,
    changes: &'a Changes,
    renderer: &'a Renderer<'a>,
}

impl Sides<'_, '_> {
    fn tree(&self, side: Side) -> Option<&Tree<'_>> {
        match side {
            Side::Old => self.old,
            Side::New => Some(self.new),
        }
    }

    /// Objects of a Kubernetes target on one side: for kubectl targets, those of the changed
    /// files (all files when `full`); for kustomize, the whole rendered output.
    fn objects(&self, t: &Target, side: Side, full: bool) -> Result<(Vec<Object>, Vec<String>)> {
        let Some(tree) = self.tree(side) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let ns = t.namespace.as_deref();
        match t.kind {
            TargetType::Kubectl => {
                let files: Vec<String> = if full {
                    tree::files_under(self.repo, tree, &t.path, !t.flat)?
                        .into_iter()
                        .filter(|f| manifest::is_yaml_path(&f.path) && t.owns(&f.path))
                        .map(|f| f.path)
                        .collect()
                } else {
                    self.changes
                        .paths
                        .iter()
                        .filter(|p| manifest::is_yaml_path(p) && t.owns(p))
                        .filter(|p| p.starts_with(&t.path) || t.path.is_empty())
                        .cloned()
                        .collect()
                };
                let mut texts = Vec::new();
                for f in &files {
                    if f.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                        continue;
                    }
                    match tree::read_path(self.repo, tree, f) {
                        Ok(Some(text)) => texts.push((f.clone(), text)),
                        Ok(None) => {}
                        Err(e) if side == Side::Old => {
                            log::warn!("ignoring deployed {f}: {e:#}");
                        }
                        Err(e) => return Err(e.context(format!("target {}", t.name))),
                    }
                }
                let mut objects = Vec::new();
                for (f, text) in &texts {
                    match manifest::parse(text, f, ns) {
                        Ok(objs) => objects.extend(objs),
                        // What was deployed before is history: a broken old file must not
                        // block deploying its fix.
                        Err(e) if side == Side::Old => log::warn!("ignoring deployed {f}: {e:#}"),
                        Err(e) => return Err(e),
                    }
                }
                let custom = manifest::cluster_kinds(&objects);
                if !custom.is_empty() {
                    for o in &mut objects {
                        if custom.contains(&(o.id.group.clone(), o.id.kind.clone())) {
                            o.id.namespace = None;
                            o.cluster = true;
                        }
                    }
                }
                Ok((objects, files))
            }
            TargetType::Kustomize => {
                let rendered = match self.render(t, tree, side) {
                    Ok(r) => r,
                    Err(e) if side == Side::Old => {
                        log::warn!("cannot render deployed target {}: {e:#}", t.name);
                        return Ok((Vec::new(), Vec::new()));
                    }
                    Err(e) => return Err(e),
                };
                let objects = manifest::parse(&rendered, &format!("{} (kustomize)", t.path), ns)?;
                let files = self
                    .changes
                    .paths
                    .iter()
                    .filter(|p| t.owns(p))
                    .cloned()
                    .collect();
                Ok((objects, files))
            }
            TargetType::Terraform => Ok((Vec::new(), Vec::new())),
        }
    }

    /// `kubectl kustomize` of a scratch copy of the target and everything it references (plus
    /// its `watch` paths), laid out as in the repository.
    fn render(&self, t: &Target, tree: &Tree, side: Side) -> Result<String> {
        let (root, index) = match side {
            Side::Old => (self.renderer.scratch.join("old"), self.old_index),
            Side::New => (self.renderer.scratch.join("new"), self.new_index),
        };
        let closure = index.closure(&t.path);
        if side == Side::Old {
            if let Some(why) = closure.refusal(tree, self.renderer.allow_remote) {
                bail!("{why}");
            }
        }
        tree::clean_dir(&root)?;
        std::fs::create_dir_all(&root)?;
        tree::materialise(self.repo, tree, &t.path, &root)
            .with_context(|| format!("target {}", t.name))?;
        let extra = closure.paths.iter().filter(|p| **p != t.path);
        for p in extra.chain(&t.watch) {
            if tree::entry(tree, p).is_some() {
                tree::materialise_path(self.repo, tree, p, &root)
                    .with_context(|| format!("target {}", t.name))?;
            }
        }
        let out = self.renderer.kubectl.kustomize(&root.join(&t.path))?;
        if !out.success() {
            bail!(
                "target {}: kustomize failed: {}",
                t.name,
                tree::repository_paths(&out.reason(), &root)
            );
        }
        Ok(out.stdout)
    }
}

/// Placeholder objects standing for the Vault-generated Secrets of a target (identity only).
fn secret_objects(t: &Target) -> Vec<Object> {
    t.secret
        .iter()
        .map(|s| Object {
            id: secret_id(t, s),
            api_version: "v1".into(),
            body: serde_json::Value::Null,
            cluster: false,
            source: format!(
                "{} [[target.secret]] {}",
                crate::config::TREE_CONFIG,
                s.name
            ),
        })
        .collect()
}

fn secret_ids(t: &Target) -> Vec<ObjectId> {
    t.secret.iter().map(|s| secret_id(t, s)).collect()
}

pub fn secret_id(t: &Target, s: &SecretSpec) -> ObjectId {
    ObjectId {
        group: String::new(),
        kind: "Secret".into(),
        namespace: s.namespace.clone().or_else(|| t.namespace.clone()),
        name: s.name.clone(),
    }
}

/// `allowed_namespaces` and `allow_cluster_scoped`: a target with any object outside them is
/// refused whole.
fn policy(env: &Environment, tp: &TargetPlan) -> Option<String> {
    if env.allowed_namespaces.is_some() {
        // Without a namespace the object would land in the context's default namespace, which
        // the policy cannot see: demand an explicit one.
        if let Some(o) = tp
            .apply
            .iter()
            .find(|o| !o.cluster && o.id.namespace.is_none())
        {
            return Some(format!(
                "{} ({}): no namespace; set metadata.namespace or the target's namespace",
                o.id, o.source
            ));
        }
    }
    let secrets = secret_ids(&tp.target);
    let ids = tp
        .apply
        .iter()
        .map(|o| &o.id)
        .chain(tp.prune.iter().map(|(id, _)| id))
        .chain(secrets.iter());
    for id in ids {
        match &id.namespace {
            None if !env.cluster_scoped_allowed() => {
                return Some(format!(
                    "{id}: cluster-scoped objects are not allowed in environment {}",
                    env.name
                ))
            }
            None => {}
            Some(ns) => {
                let allowed = env.allowed_namespaces.as_ref();
                if allowed.is_some_and(|a| !a.iter().any(|x| x == ns)) {
                    return Some(format!(
                        "{id}: namespace {ns:?} is not allowed in environment {}",
                        env.name
                    ));
                }
            }
        }
    }
    None
}

/// Dependency order among the planned targets; targets that create namespaces or CRDs go
/// first unless a dependency says otherwise.
fn order(mut targets: Vec<TargetPlan>) -> Result<Vec<TargetPlan>> {
    targets.sort_by_key(|t| !t.has_foundation());
    let defs: Vec<Target> = targets
        .iter()
        .map(|tp| {
            let mut t = tp.target.clone();
            let names: BTreeSet<&str> = targets.iter().map(|x| x.target.name.as_str()).collect();
            t.depends_on.retain(|d| names.contains(d.as_str()));
            t
        })
        .collect();
    let idx = crate::config::topo_order(&defs)
        .map_err(|cycle| anyhow::anyhow!("dependency cycle: {}", cycle.join(" -> ")))?;
    let mut slots: Vec<Option<TargetPlan>> = targets.into_iter().map(Some).collect();
    Ok(idx.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// The plan as JSON for `hookops plan --json`.
pub fn to_json(plan: &Plan, env: &str) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = plan
        .targets
        .iter()
        .map(|tp| {
            serde_json::json!({
                "name": tp.target.name,
                "type": tp.target.kind,
                "path": tp.target.path,
                "step": tp.step,
                "files": tp.files,
                "uses": tp.uses,
                "apply": tp.apply.iter().map(|o| serde_json::json!({
                    "apiVersion": o.api_version, "kind": o.id.kind,
                    "namespace": o.id.namespace, "name": o.id.name, "source": o.source,
                })).chain(tp.target.secret.iter().map(|s| {
                    let id = secret_id(&tp.target, s);
                    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "namespace": id.namespace, "name": id.name, "source": "vault"})
                })).collect::<Vec<_>>(),
                "prune": tp.prune.iter().map(|(id, v)| serde_json::json!({
                    "apiVersion": v, "kind": id.kind, "namespace": id.namespace, "name": id.name,
                })).collect::<Vec<_>>(),
                "refused": tp.refused,
            })
        })
        .collect();
    serde_json::json!({
        "env": env,
        "from": plan.from.map(|o| o.to_string()),
        "to": plan.to.to_string(),
        "changed_paths": plan.changed_paths,
        "targets": targets,
    })
}
