//! The plan stage: from the affected targets to what will happen, contacting no cluster.
//! kubectl targets apply the objects of their changed files; kustomize targets render old and
//! new (`kubectl kustomize`, local, from a scratch copy of everything they reference) and apply
//! the whole new output; Terraform roots are planned later by terraform itself, from a copy of
//! the root and the local modules it reaches. Objects present in the old side of the change and
//! absent from the new are pruned. Namespace policy, and references that leave the repository
//! (or reach the network), are checked here, so a refused target never reaches apply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use git2::{Oid, Repository, Tree};
use serde::Serialize;

use crate::backends::objects;
use crate::config::{Duplicates, Environment, Target, TargetType};
use crate::pipeline::annotations::{self, ApplyMode};
use crate::pipeline::cache::Cache;
use crate::pipeline::declare::chart::ChartInfo;
pub use crate::pipeline::declare::read::{secret_id, Renderer};
use crate::pipeline::declare::read::{secret_objects, Reader, Units};
use crate::pipeline::declare::targets::{self, Affected};
use crate::pipeline::declare::winner;
use crate::pipeline::diff::{self, Changes};
use crate::pipeline::identity::{self, Resolver};
use crate::pipeline::inventory::{self, Inventory};
use crate::pipeline::manifest::{Object, ObjectId};
use crate::pipeline::references::{covers, Closure, RefIndex, References};

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
    /// Changed files that fed this plan, and why a target with none is in it.
    pub files: Vec<String>,
    /// kustomize and Terraform: the referenced directories and files (outside the target's
    /// own directory) whose change re-plans it: "uses modules/thing".
    pub uses: Vec<String>,
    /// kustomize and Terraform: the repository paths to materialise, the target's own
    /// directory first (of the new tree to deploy, of the old one to remove).
    pub closure: Vec<String>,
    /// Set when policy refuses the target: it is recorded as failed and never applied.
    pub refused: Option<String>,
    /// Set when the target's manifests cannot be read (every broken file, with file and
    /// line): it fails alone, with its dependents; nothing of it is applied or pruned.
    pub error: Option<String>,
    /// The identities of the target's Vault-generated Secrets, resolved.
    pub secret_ids: Vec<ObjectId>,
    /// Jobs annotated `hookops.io/hook`: created each deploy, never in the inventory.
    pub hooks: Vec<Object>,
    /// A chart target: the chart, its release and values files, as rendered.
    pub chart: Option<ChartInfo>,
}

impl TargetPlan {
    fn new(target: Target, step: Step) -> TargetPlan {
        TargetPlan {
            target,
            step,
            apply: Vec::new(),
            prune: Vec::new(),
            files: Vec::new(),
            refused: None,
            error: None,
            secret_ids: Vec::new(),
            hooks: Vec::new(),
            uses: Vec::new(),
            closure: Vec::new(),
            chart: None,
        }
    }

    /// Fails the target for `why` too: every reason is named in one go (D9), so the pusher
    /// does not fix one and fail again on the next.
    fn fail_also(&mut self, why: String) {
        match &mut self.error {
            Some(e) if e.contains(&why) => {}
            Some(e) => {
                e.push_str("; ");
                e.push_str(&why);
            }
            None => self.error = Some(why),
        }
    }

    pub fn has_foundation(&self) -> bool {
        self.apply.iter().any(Object::is_foundation)
    }

    /// Why this target cannot run, if it cannot.
    pub fn blocked(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        self.refused
            .as_ref()
            .map(|r| format!("refused by policy: {r}"))
    }
}

/// An object that no file declares any more but that is not deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub id: ObjectId,
    pub target: String,
    pub reason: String,
    /// The inventory forgets it (`hookops.io/prune: disabled`); a kept Namespace or CRD is
    /// remembered, so drift and later plans keep naming it.
    #[serde(skip)]
    pub forget: bool,
    /// An earlier deploy named it already: a deploy keeps it without a word.
    #[serde(skip)]
    pub noted: bool,
    /// Still in git, in a target that fails (D9): kept until that target deploys.
    #[serde(skip)]
    pub held: bool,
}

pub struct Plan {
    pub from: Option<Oid>,
    pub to: Oid,
    pub changed_paths: usize,
    pub targets: Vec<TargetPlan>,
    pub kept: Vec<Kept>,
    /// Things worth a line that do not stop the deploy (an object declared twice, a kind of
    /// unknown scope).
    pub warnings: Vec<String>,
    /// The reference indexes of both sides, for the deploy to keep.
    pub references: References,
    /// With `only`: the targets the change affects that were left out (they stay pending).
    pub left_out: Vec<String>,
}

impl Plan {
    /// Whether some object's kind is neither built in nor declared by a CRD.
    pub fn unknown_kinds(&self) -> bool {
        self.targets
            .iter()
            .flat_map(|t| &t.apply)
            .any(|o| identity::is_unknown(&o.id))
    }

    /// Whether a chart was rendered without the cluster's capabilities learnt lately (a
    /// deploy asks the cluster and plans again).
    pub fn stale_capabilities(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.chart.as_ref().is_some_and(|c| c.stale))
    }

    /// Every object this plan may send to the server (what the inventory records before
    /// anything is applied).
    pub fn may_apply(&self) -> impl Iterator<Item = &ObjectId> {
        self.targets
            .iter()
            .filter(|t| t.blocked().is_none() && t.step == Step::Deploy)
            .flat_map(|t| t.apply.iter().map(|o| &o.id).chain(&t.secret_ids))
    }
}

/// What a plan may change beyond itself: the inventory (declarations of the new tree are
/// recorded in memory; the caller saves them or not) and the identity resolver.
pub struct PlanContext<'a, 'r> {
    pub inventory: &'a mut Inventory<'r>,
    pub resolver: &'a mut Resolver,
    /// Deploy only these targets (an automatic rollback of the failed ones): nothing else is
    /// declared, undeclared or pruned.
    pub only: Option<&'a BTreeSet<String>>,
    /// `prune_namespaces` / `prune_crds` of the environment.
    pub prune_namespaces: bool,
    pub prune_crds: bool,
    /// A plan that deploys nothing (`plan`, the gate, `drift`): with nothing deployed here, what
    /// the old commit declares is read only when the change may stop declaring an object, and
    /// is then kept in this cache directory, if any, for the next plan (`pipeline::cache`).
    pub dry: Option<Option<&'a Path>>,
}

pub fn build<'r>(
    repo: &'r Repository,
    env: &Environment,
    from: Option<Oid>,
    to: Oid,
    renderer: &Renderer,
    mut cx: PlanContext<'_, 'r>,
) -> Result<Plan> {
    let new_tree = targets::commit_tree(repo, to)?;
    let old_tree = from.map(|id| targets::commit_tree(repo, id)).transpose()?;
    let mut changes = diff::changed_paths(repo, old_tree.as_ref(), &new_tree)?;
    let short = short_id(to);
    cx.resolver
        .custom
        .extend(cx.inventory.kinds().iter().map(|(k, v)| (k.clone(), *v)));
    // A failed or interrupted attempt may have applied (or declared) a tree other than the
    // pointer's: everything it touched is reconciled from the new tree too.
    let mut attempted = None;
    if let Some(base) = cx.inventory.base.filter(|b| Some(*b) != from && *b != to) {
        if let Ok(base_tree) = targets::commit_tree(repo, base) {
            let more = diff::changed_paths(repo, Some(&base_tree), &new_tree)?;
            let known: BTreeSet<String> = changes.paths.iter().cloned().collect();
            changes
                .paths
                .extend(more.paths.iter().filter(|p| !known.contains(*p)).cloned());
            changes.bad_names.extend(more.bad_names.clone());
            attempted = Some((base, base_tree, more));
        }
    }
    let index_cache = cx.dry.flatten().and_then(|d| Cache::open(d, "references"));
    let references = References::for_change_cached(
        repo,
        from.zip(old_tree.as_ref()),
        (to, &new_tree),
        &changes,
        index_cache.as_ref(),
    )?;
    let mut affected = targets::affected(
        repo,
        old_tree.as_ref(),
        &new_tree,
        &changes,
        &short,
        &references,
    )?;
    // Installed where something is already deployed (an upgrade, `replay --from`): what the
    // deployed tree declares is taken as applied, so removing it later prunes it. A dry run in
    // a repository that deploys nothing (a clone asking what a push would do) reads it only
    // when the change may stop declaring something: else the changed files are all it needs.
    let mut cold = false;
    if let (false, Some(old_id), Some(old)) = (cx.inventory.exists(), from, &old_tree) {
        if cx.dry.is_none() || may_remove(repo, old, &new_tree, &changes, &affected) {
            adopt(repo, env, old_id, renderer, &mut cx)?;
            cx.resolver
                .custom
                .extend(cx.inventory.kinds().iter().map(|(k, v)| (k.clone(), *v)));
        } else {
            cold = true;
        }
    }
    // Environments as directories (issue 18, src/environments.rs): one with `paths` deploys
    // only the targets under them.
    affected.deploy.retain(|t| env.includes(&t.path));
    affected.removed.retain(|t| env.includes(&t.path));
    let mut left_out = Vec::new();
    if let Some(only) = cx.only {
        left_out = (affected.deploy.iter().chain(&affected.removed))
            .filter(|t| !only.contains(&t.name))
            .map(|t| t.name.clone())
            .collect();
        affected.deploy.retain(|t| only.contains(&t.name));
        affected.removed.retain(|t| only.contains(&t.name));
    }
    // A target that such an attempt declared and that the new tree no longer has is removed
    // too, or its declarations would outlive it and keep what it applied (D10).
    let mut reinstated: BTreeSet<String> = BTreeSet::new();
    if let Some((base, base_tree, more)) = &attempted {
        let refs = References::for_change_cached(
            repo,
            Some((*base, base_tree)),
            (to, &new_tree),
            more,
            index_cache.as_ref(),
        )?;
        let gone = targets::affected(repo, Some(base_tree), &new_tree, more, &short, &refs)?;
        let wanted =
            |t: &Target| env.includes(&t.path) && cx.only.is_none_or(|o| o.contains(&t.name));
        for t in gone.removed {
            let known = affected
                .deploy
                .iter()
                .chain(&affected.removed)
                .any(|x| x.name == t.name);
            if !known && wanted(&t) {
                affected.removed.push(t);
            }
        }
        // And a target of the new tree that such an attempt did not have (a base whose user
        // it added, and the tip removed again) is deployed, read whole: the attempt took its
        // declarations away, and from the pointer it looks unchanged (D3.1, D10).
        for t in gone.deploy {
            if !affected.deploy.iter().any(|x| x.name == t.name) && wanted(&t) {
                affected.removed.retain(|x| x.name != t.name);
                reinstated.insert(t.name.clone());
                affected.deploy.push(t);
            }
        }
    }
    let mut plan = Plan {
        from,
        to,
        changed_paths: changes.paths.len() + changes.bad_names.len(),
        targets: Vec::new(),
        kept: Vec::new(),
        warnings: affected.unread.clone(),
        references: References::default(),
        left_out,
    };
    if cold {
        plan.warnings.push(
            "nothing is deployed from this repository: only the changed files were read (the change removes no object; a copy of one in another file would win, architecture.md D7)"
                .into(),
        );
    }
    let old_targets = old_definitions(repo, old_tree.as_ref(), &affected, &references)?;
    let reader = Reader {
        repo,
        tree: &new_tree,
        index: &references.new.1,
        changes: &changes,
        renderer,
        side: "new",
        charts: Default::default(),
    };
    // Read every target first: CRDs anywhere in the push tell the scope of their kinds.
    let mut read: Vec<Option<Units>> = Vec::new();
    for t in &affected.deploy {
        let full = old_targets.get(&t.name) != Some(t) || reinstated.contains(&t.name);
        let mut tp = TargetPlan::new(t.clone(), Step::Deploy);
        if t.kind != TargetType::Kubectl {
            let closure = references.new.1.closure(&t.path);
            // Its references leave the repository or reach the network: never rendered, and
            // (like a broken manifest) nothing of it is undeclared or pruned.
            tp.error = closure.refusal(&new_tree, renderer.allow_remote);
            tp.uses = uses(t, &closure, &changes);
            tp.files = changes
                .paths
                .iter()
                .filter(|p| t.owns(p) || closure.used_for(&t.path, p).is_some())
                .cloned()
                .collect();
            tp.closure = closure.paths;
        }
        if tp.error.is_some() || !t.kind.is_kube() {
            read.push(None);
        } else {
            let units = reader.units(t, full);
            if let Some(info) = reader.charts.borrow().get(&t.name) {
                plan.warnings.extend(info.notes.iter().cloned());
                tp.chart = Some(info.clone());
            }
            match units {
                Ok(units) => {
                    tp.files = units
                        .iter()
                        .filter_map(|(u, _)| u.strip_prefix("f:").map(str::to_string))
                        .collect();
                    read.push(Some(units));
                }
                Err(e) => {
                    tp.error = Some(crate::out::error_line(&e));
                    read.push(None);
                }
            }
        }
        plan.targets.push(tp);
    }
    for units in read.iter().flatten() {
        for (_, objs) in units {
            cx.resolver.learn(objs);
        }
    }
    // Targets that fail on their own files or references: what they declare is not known
    // whole, so their copies are compared with nobody's (D7).
    let mut unreadable: BTreeMap<String, Target> = plan
        .targets
        .iter()
        .filter(|tp| tp.error.is_some())
        .map(|tp| (tp.target.name.clone(), tp.target.clone()))
        .collect();
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    let mut parsed: Parsed = BTreeMap::new();
    for (tp, units) in plan.targets.iter_mut().zip(read) {
        let Some(mut units) = units else { continue };
        let t = tp.target.clone();
        let full = old_targets.get(&t.name) != Some(&t) || reinstated.contains(&t.name);
        if full {
            // A changed definition (or a first deploy): files it no longer owns are undeclared.
            for u in cx.inventory.file_units_of(&t.path, &t.name)? {
                if !units.iter().any(|(x, _)| *x == u) {
                    cx.inventory.drop_unit(&u)?;
                }
            }
        }
        if !full && t.kind == TargetType::Kubectl {
            // Hooks run with every deploy of their target, whichever of its files changed.
            let read: Vec<String> = units
                .iter()
                .filter_map(|(u, _)| u.strip_prefix("f:").map(str::to_string))
                .collect();
            for mut o in reader.hooks_elsewhere(&t, &read) {
                cx.resolver.resolve(&mut o, t.namespace.as_deref());
                tp.hooks.push(o);
            }
        }
        units.push((inventory::secrets_unit(&t.name), secret_objects(&t)));
        for (unit, objs) in &mut units {
            for o in objs.iter_mut() {
                if !cx.resolver.resolve(o, t.namespace.as_deref()) {
                    unknown.insert(format!(
                        "{} ({})",
                        identity::kind_key(&o.id.group, &o.id.kind),
                        o.source
                    ));
                }
            }
            // Hook Jobs are created anew every deploy: never in the inventory, never pruned.
            let (hooks, declared): (Vec<Object>, Vec<Object>) = std::mem::take(objs)
                .into_iter()
                .partition(|o| annotations::controls(o).is_ok_and(|c| c.hook.is_some()));
            tp.hooks.extend(hooks);
            *objs = declared;
            for r in winner::last_of_each(objs) {
                let what = format!(
                    "{} is declared {} times in one file ({})",
                    r.id,
                    r.sources.len(),
                    r.sources.join(", ")
                );
                if r.differ && env.duplicates == Duplicates::Error {
                    tp.fail_also(format!(
                        "{what} with different contents, and environment {} sets duplicates = \"error\"",
                        env.name
                    ));
                } else {
                    plan.warnings
                        .push(format!("{what}: the last copy is applied (declares D7)"));
                }
            }
            if unit.starts_with("s:") {
                tp.secret_ids = objs.iter().map(|o| o.id.clone()).collect();
            }
            let refs: Vec<&Object> = objs.iter().collect();
            cx.inventory.declare(unit, &t.name, &refs)?;
            parsed.insert(unit.clone(), std::mem::take(objs));
        }
    }
    for u in unknown {
        plan.warnings.push(format!(
            "kind {u} is neither built in nor declared by a CRD in the tree: its scope is unknown until the cluster is asked, so its objects are never pruned on a guess"
        ));
    }
    // Manifests that changed and are no longer declared by a deployed target: deleted,
    // moved out of a target, or in a target that stopped being one.
    let errored: Vec<&Target> = plan
        .targets
        .iter()
        .filter(|t| t.error.is_some())
        .map(|t| &t.target)
        .collect();
    for p in &changes.paths {
        let unit = inventory::file_unit(p);
        // A file outside the environment's `paths` (issue 18) that the new tree still has is
        // not undeclared: narrowing the paths deletes nothing, deleting the file does.
        let kept_outside = !env.includes(p) && objects::entry(&new_tree, p).is_some();
        if parsed.contains_key(&unit) || errored.iter().any(|t| t.owns(p)) || kept_outside {
            continue;
        }
        if let Some(u) = cx.inventory.unit(&unit)? {
            if cx.only.is_none_or(|only| only.contains(&u.target)) {
                cx.inventory.drop_unit(&unit)?;
            }
        }
    }
    // A target that stopped being one because a target that fails now uses it keeps its
    // declarations: what the failing target would declare instead is unknown, and nothing of
    // a failing target is pruned (D9). The pointer stays, so the next push sees it again.
    let failing: Vec<(String, Vec<String>)> = plan
        .targets
        .iter()
        .filter(|tp| tp.error.is_some())
        .map(|tp| (tp.target.name.clone(), tp.closure.clone()))
        .collect();
    let used_by_failing = |t: &Target| {
        failing.iter().find_map(|(name, closure)| {
            closure
                .iter()
                .any(|p| covers(p, &t.path) || covers(&t.path, p))
                .then_some(name.as_str())
        })
    };
    let mut held = Vec::new();
    for t in &affected.removed {
        if let Some(user) = used_by_failing(t) {
            // Its declarations are an older tree's: kept from pruning, but they win nothing.
            unreadable.insert(t.name.clone(), t.clone());
            held.push(format!(
                "{} is now used by {user}, which fails: its objects stay declared by it until {user} deploys (D9)",
                t.name
            ));
            continue;
        }
        match t.kind {
            TargetType::Kubectl => {
                for u in cx.inventory.file_units_of(&t.path, &t.name)? {
                    cx.inventory.drop_unit(&u)?;
                }
            }
            TargetType::Kustomize => cx
                .inventory
                .drop_unit(&inventory::kustomize_unit(&t.path))?,
            TargetType::Helm => cx.inventory.drop_unit(&inventory::helm_unit(&t.name))?,
            TargetType::Terraform => {}
        }
        cx.inventory.drop_unit(&inventory::secrets_unit(&t.name))?;
        plan.targets.push(TargetPlan::new(t.clone(), Step::Remove));
    }
    plan.warnings.extend(held);
    let order = winner::Order::new(affected.tree_targets.as_deref());
    // What targets that fail would declare, as far as their files can be read (D9), each
    // identity with its last declaration among them (D7).
    let mut held = Held::new();
    for tp in plan.targets.iter().filter(|tp| tp.error.is_some()) {
        if !tp.target.kind.is_kube() {
            continue;
        }
        for mut o in reader.declared_anyway(&tp.target, &tp.closure) {
            cx.resolver.resolve(&mut o, tp.target.namespace.as_deref());
            let file = o
                .source
                .rsplit_once(':')
                .map_or(o.source.as_str(), |(f, _)| f);
            let place = order.place(&tp.target.name, &inventory::file_unit(file));
            if held.get(&o.id).is_none_or(|h| h.place < place) {
                let by = HeldBy {
                    target: tp.target.name.clone(),
                    source: o.source.clone(),
                    place,
                    exact: tp.target.kind == TargetType::Kubectl,
                };
                held.insert(o.id, by);
            }
        }
    }
    let winners = Winners {
        env,
        reader: &reader,
        order: &order,
        declared: affected.tree_targets.as_deref(),
        unreadable: &unreadable,
    };
    winners.assign(&mut plan, &mut cx, parsed, &held)?;
    prunes(&mut plan, &mut cx, &held)?;
    for tp in &mut plan.targets {
        if tp.refused.is_none() {
            tp.refused = policy(env, tp);
        }
    }
    plan.targets = order_targets(plan.targets)?;
    plan.references = references;
    Ok(plan)
}

/// Takes what `old_id` declares as applied (D10 needs it to prune): the plan of a first deploy
/// of that commit. A dry run keeps the result in its cache, so the next one starts warm.
fn adopt<'r>(
    repo: &'r Repository,
    env: &Environment,
    old_id: Oid,
    renderer: &Renderer,
    cx: &mut PlanContext<'_, 'r>,
) -> Result<()> {
    let cache = cx.dry.flatten().and_then(|d| Cache::open(d, "adopted"));
    let key = format!(
        "{}|{old_id}|{}|{}",
        env.name,
        cx.resolver.env_namespace,
        env.paths.as_deref().unwrap_or_default().join(",")
    );
    if let Some(id) = cache.as_ref().and_then(|c| c.get(&key)) {
        if let Ok(inv) = Inventory::at_commit(repo, &env.name, id) {
            *cx.inventory = inv;
            return Ok(());
        }
    }
    let adopted = build(
        repo,
        env,
        None,
        old_id,
        renderer,
        PlanContext {
            inventory: &mut *cx.inventory,
            resolver: &mut cx.resolver.clone(),
            only: None,
            prune_namespaces: cx.prune_namespaces,
            prune_crds: cx.prune_crds,
            dry: cx.dry,
        },
    )?;
    for tp in adopted.targets.iter().filter(|t| t.blocked().is_some()) {
        log::warn!(
            "adopting {}: target {}: {}",
            short_id(old_id),
            tp.target.name,
            tp.blocked().unwrap_or_default()
        );
    }
    cx.inventory.mark_applied(adopted.may_apply())?;
    cx.inventory.take_touched();
    if let Some(c) = cache {
        let id = cx
            .inventory
            .write_detached(&format!("hookops: what {old_id} declares (a plan's cache)"))?;
        c.put(&key, id);
    }
    Ok(())
}

/// Whether a change may stop declaring an object: a changed manifest file's old version
/// declares an identity that no changed file's new version declares. Anything beyond plain
/// manifest files of discovered kubectl targets (kustomize, charts, Terraform, `hookops.toml`,
/// a removed target, a file that does not parse) counts as may.
fn may_remove(repo: &Repository, old: &Tree, new: &Tree, changes: &Changes, a: &Affected) -> bool {
    if a.tree_targets.is_some()
        || !a.removed.is_empty()
        || !changes.bad_names.is_empty()
        || a.deploy.iter().any(|t| t.kind != TargetType::Kubectl)
    {
        return true;
    }
    let ids = |tree: &Tree| -> Option<BTreeSet<ObjectId>> {
        let mut out = BTreeSet::new();
        for p in changes
            .paths
            .iter()
            .filter(|p| crate::pipeline::manifest::is_manifest_path(p))
        {
            if let Some(text) = objects::read_path(repo, tree, p).ok()? {
                let objs = crate::pipeline::manifest::parse(&text, p, None).ok()?;
                out.extend(objs.into_iter().map(|o| o.id));
            }
        }
        Some(out)
    };
    match (ids(old), ids(new)) {
        (Some(before), Some(after)) => !before.is_subset(&after),
        _ => true,
    }
}

/// The objects read by this plan, by inventory unit, resolved.
type Parsed = BTreeMap<String, Vec<Object>>;

/// Who applies what (D7): every identity this plan declares, or that a unit stopped
/// declaring while others still do, is applied from its winning declaration, by the target of
/// that declaration, whichever declaring file changed.
struct Winners<'a, 'r> {
    env: &'a Environment,
    reader: &'a Reader<'a, 'r>,
    order: &'a winner::Order,
    /// The targets of the new tree's `hookops.toml`, if it has one.
    declared: Option<&'a [Target]>,
    /// Targets that fail on their own files, and targets kept declared for a failing user:
    /// what the inventory holds of them is an older tree's, so their copies win nothing.
    unreadable: &'a BTreeMap<String, Target>,
}

impl Winners<'_, '_> {
    fn assign(
        &self,
        plan: &mut Plan,
        cx: &mut PlanContext,
        mut parsed: Parsed,
        held: &Held,
    ) -> Result<()> {
        let mut todo: Vec<ObjectId> = Vec::new();
        let mut seen: BTreeSet<ObjectId> = BTreeSet::new();
        // The plan's own declarations first, in declaration order, so that every target
        // applies its objects in the order its files list them.
        let mut units: Vec<(winner::Place, &String)> = Vec::new();
        for u in parsed.keys() {
            if let Some(t) = self.unit_target(cx, u) {
                units.push((self.order.place(&t, u), u));
            }
        }
        units.sort();
        for (_, u) in units {
            for o in &parsed[u] {
                if seen.insert(o.id.clone()) {
                    todo.push(o.id.clone());
                }
            }
        }
        let mut others = cx.inventory.take_touched();
        // What a target that fails on its own files declared before: its copies no longer
        // count (below), so another declaration may win them now.
        for t in self.unreadable.values() {
            let units = match t.kind {
                TargetType::Kubectl => cx.inventory.file_units_of(&t.path, &t.name)?,
                TargetType::Kustomize => vec![inventory::kustomize_unit(&t.path)],
                TargetType::Helm => vec![inventory::helm_unit(&t.name)],
                TargetType::Terraform => Vec::new(),
            };
            for u in units {
                if let Some(unit) = cx.inventory.unit(&u)? {
                    others.extend(unit.objects.iter().filter_map(|k| inventory::parse_key(k)));
                }
            }
        }
        others.sort();
        todo.extend(others.into_iter().filter(|id| seen.insert(id.clone())));
        let blocked: BTreeSet<String> = plan
            .targets
            .iter()
            .filter(|t| t.blocked().is_some())
            .map(|t| t.target.name.clone())
            .collect();
        for id in todo {
            let Some(entry) = cx.inventory.entry(&id)? else {
                continue;
            };
            let mut declarers: Vec<(String, String)> = Vec::new();
            for u in &entry.declared_by {
                if let Some(unit) = cx.inventory.unit(u)? {
                    declarers.push((u.clone(), unit.target));
                }
            }
            // A target that fails on its own files has declarations that cannot be known (what
            // the inventory holds of it is an older tree's): the winner is chosen among the
            // others, and its readable files are weighed below (`held`).
            let known: Vec<(String, String)> = declarers
                .iter()
                .filter(|(_, t)| !self.unreadable.contains_key(t))
                .cloned()
                .collect();
            let Some((unit, target)) = self.order.winner(&known).cloned() else {
                continue;
            };
            if cx.only.is_some_and(|only| !only.contains(&target)) {
                continue;
            }
            // Copies are compared (and named) even when the winner's target fails already:
            // every reason is named in one go (D9).
            if known.len() > 1 {
                self.duplicate(plan, cx, &mut parsed, &id, &known, &unit)?;
            }
            // A failing target that declares it later than the winner wins it (D7): nobody
            // applies another copy meanwhile (D9).
            let failing_wins = held
                .get(&id)
                .is_some_and(|h| h.exact && h.place > self.order.place(&target, &unit));
            if blocked.contains(&target) || failing_wins {
                continue;
            }
            // A target's Vault Secrets are made by the secrets stage, never from a file.
            if unit.starts_with("s:") {
                continue;
            }
            let Some(o) = self
                .load(cx, &mut parsed, &unit, &target)?
                .and_then(|objs| objs.iter().find(|o| o.id == id).cloned())
            else {
                continue;
            };
            if annotations::controls(&o).is_ok_and(|c| c.apply == ApplyMode::Disabled) {
                continue;
            }
            let i = self.target_plan(plan, &target, &unit);
            if plan.targets[i].blocked().is_none() {
                plan.targets[i].apply.push(o);
            }
        }
        Ok(())
    }

    /// The target (by name) that declared a unit, as the inventory says.
    fn unit_target(&self, cx: &mut PlanContext, unit: &str) -> Option<String> {
        cx.inventory.unit(unit).ok().flatten().map(|u| u.target)
    }

    /// The objects of `unit`, read once (a unit this plan did not read: the winning copy of
    /// an identity lives in a file the change did not touch).
    fn load<'p>(
        &self,
        cx: &mut PlanContext,
        parsed: &'p mut Parsed,
        unit: &str,
        target: &str,
    ) -> Result<Option<&'p Vec<Object>>> {
        if !parsed.contains_key(unit) {
            let t = self.definition(target, unit);
            let mut objs = match self.reader.unit(&t, unit) {
                Ok(objs) => objs,
                Err(e) => {
                    log::warn!("reading {unit} of target {target}: {e:#}");
                    return Ok(None);
                }
            };
            for o in &mut objs {
                cx.resolver.resolve(o, t.namespace.as_deref());
            }
            winner::last_of_each(&mut objs);
            parsed.insert(unit.to_string(), objs);
        }
        Ok(parsed.get(unit))
    }

    /// The definition of a target named in the inventory: from the plan, `hookops.toml`, or
    /// discovery's rule (named by its path).
    fn definition(&self, target: &str, unit: &str) -> Target {
        if let Some(t) = self
            .declared
            .and_then(|ts| ts.iter().find(|t| t.name == target))
        {
            return t.clone();
        }
        let path = if target == "." { "" } else { target };
        let kind = match unit.split_once(':') {
            Some(("k", _)) => TargetType::Kustomize,
            Some(("h", _)) => TargetType::Helm,
            _ => TargetType::Kubectl,
        };
        targets::discovered(path, kind)
    }

    /// The index of `target`'s plan, added when the plan does not have it yet (it applies
    /// only what it wins).
    fn target_plan(&self, plan: &mut Plan, target: &str, unit: &str) -> usize {
        if let Some(i) = plan
            .targets
            .iter()
            .position(|t| t.target.name == target && t.step == Step::Deploy)
        {
            return i;
        }
        let mut tp = TargetPlan::new(self.definition(target, unit), Step::Deploy);
        if let Some(path) = unit.strip_prefix("f:") {
            tp.files.push(path.to_string());
        }
        plan.targets.push(tp);
        plan.targets.len() - 1
    }

    /// An identity declared more than once: a warning naming every declaration, or with
    /// `duplicates = "error"` and different contents, a failure of every declaring target.
    fn duplicate(
        &self,
        plan: &mut Plan,
        cx: &mut PlanContext,
        parsed: &mut Parsed,
        id: &ObjectId,
        declarers: &[(String, String)],
        winner: &str,
    ) -> Result<()> {
        let mut copies: Vec<(String, Option<Object>)> = Vec::new();
        let mut sorted = declarers.to_vec();
        sorted.sort_by_key(|(u, t)| self.order.place(t, u));
        for (u, t) in &sorted {
            let copy = self
                .load(cx, parsed, u, t)?
                .and_then(|objs| objs.iter().find(|o| &o.id == id).cloned());
            copies.push((u.clone(), copy));
        }
        let shown = |u: &str, copy: &Option<Object>| match copy {
            Some(o) => o.source.clone(),
            None => u.to_string(),
        };
        let names: Vec<String> = copies.iter().map(|(u, c)| shown(u, c)).collect();
        let winning = copies
            .iter()
            .find(|(u, _)| u == winner)
            .map(|(u, c)| shown(u, c))
            .unwrap_or_else(|| winner.to_string());
        // A copy that cannot be read (its file fails its target) is left out: that failure
        // is named already, and what it would declare is unknown.
        let known: Vec<&Object> = copies.iter().filter_map(|(_, c)| c.as_ref()).collect();
        let differ = known.windows(2).any(|w| !winner::same_content(w[0], w[1]));
        let what = format!(
            "{id} is declared {} times ({})",
            copies.len(),
            names.join(", ")
        );
        if differ && self.env.duplicates == Duplicates::Error {
            let why = format!(
                "{what} with different contents, and environment {} sets duplicates = \"error\"",
                self.env.name
            );
            for (u, t) in declarers {
                let i = self.target_plan(plan, t, u);
                plan.targets[i].apply.clear();
                plan.targets[i].fail_also(why.clone());
            }
            return Ok(());
        }
        plan.warnings.push(format!(
            "{what}: {}; {winning} wins, as the last in declaration order (declares D7)",
            if differ {
                "their contents differ"
            } else {
                "identical copies"
            }
        ));
        Ok(())
    }
}

/// Prune = inventory − declared: every object hookops applied that no unit declares any more,
/// handed to the target that last declared it (a removal step when it is not in the plan).
/// Objects marked `hookops.io/prune: disabled`, Namespaces and CRDs (unless the server config
/// allows) are kept; so is anything whose scope was a guess while a variant is declared.
/// A declaration in a target that fails (D9).
struct HeldBy {
    target: String,
    /// `file:line`.
    source: String,
    place: winner::Place,
    /// Read as it deploys (a kubectl target's file), not a file of a closure that failed to
    /// render, whose rendering may name it otherwise: only an exact one can win (D7).
    exact: bool,
}

/// What targets that fail declare, as far as their files can be read: by identity, the last
/// such declaration.
type Held = BTreeMap<ObjectId, HeldBy>;

fn prunes(plan: &mut Plan, cx: &mut PlanContext, held: &Held) -> Result<()> {
    for (id, e) in cx.inventory.orphans()? {
        if cx.only.is_some_and(|only| !only.contains(&e.target)) {
            continue;
        }
        if cx.inventory.declared_in_any_namespace(&id)? && identity::is_unknown(&id)
            || cx.inventory.declared(&ObjectId {
                namespace: Some(identity::UNKNOWN_NS.into()),
                ..id.clone()
            })?
        {
            continue;
        }
        if let Some(HeldBy { target, source, .. }) = held.get(&id) {
            plan.kept.push(Kept {
                id,
                target: e.target,
                reason: format!(
                    "{source} declares it, in target {target}, which fails: nothing a failing target declares is pruned (D9)"
                ),
                forget: false,
                noted: false,
                held: true,
            });
            continue;
        }
        let reason = if e.keep {
            Some("hookops.io/prune: disabled")
        } else if id.group.is_empty() && id.kind == "Namespace" && !cx.prune_namespaces {
            Some("Namespaces are never pruned unless the environment sets prune_namespaces = true (deleting one deletes everything in it)")
        } else if id.group == "apiextensions.k8s.io"
            && id.kind == "CustomResourceDefinition"
            && !cx.prune_crds
        {
            Some("CRDs are never pruned unless the environment sets prune_crds = true (deleting one deletes all its custom resources)")
        } else if identity::is_unknown(&id) {
            Some("its kind's scope was unknown when it was applied")
        } else {
            None
        };
        if let Some(reason) = reason {
            let forget = e.keep || identity::is_unknown(&id);
            plan.kept.push(Kept {
                id,
                target: e.target,
                reason: reason.to_string(),
                forget,
                noted: e.noted,
                held: false,
            });
            continue;
        }
        let idx = match plan.targets.iter().position(|t| t.target.name == e.target) {
            Some(i) => i,
            None => {
                let t = targets::placeholder(&e.target);
                plan.targets.push(TargetPlan::new(t, Step::Remove));
                plan.targets.len() - 1
            }
        };
        plan.targets[idx].prune.push((id, e.api_version));
    }
    Ok(())
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

/// `allowed_namespaces` and `allow_cluster_scoped`: a target with any object outside them is
/// refused whole.
fn policy(env: &Environment, tp: &TargetPlan) -> Option<String> {
    let ids = tp
        .apply
        .iter()
        .chain(&tp.hooks)
        .map(|o| &o.id)
        .chain(tp.prune.iter().map(|(id, _)| id))
        .chain(tp.secret_ids.iter());
    for id in ids {
        match &id.namespace {
            None if !env.cluster_scoped_allowed() => {
                return Some(format!(
                    "{id} is cluster-scoped, and cluster-scoped objects are not allowed in environment {}",
                    env.name
                ))
            }
            None => {}
            Some(ns)
                if ns == identity::UNKNOWN_NS
                    && (env.allowed_namespaces.is_some() || !env.cluster_scoped_allowed()) =>
            {
                return Some(format!(
                    "{} {}: kind {} is neither built in nor declared by a CRD, so its scope (and namespace) cannot be checked against the policy of environment {}",
                    id.kind,
                    id.name,
                    identity::kind_key(&id.group, &id.kind),
                    env.name
                ));
            }
            Some(ns) if ns == identity::UNKNOWN_NS => {}
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
fn order_targets(mut targets: Vec<TargetPlan>) -> Result<Vec<TargetPlan>> {
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
                "error": tp.error,
                "chart": tp.chart,
                "hooks": tp.hooks.iter().map(|o| serde_json::json!({
                    "kind": o.id.kind, "namespace": o.id.namespace, "name": o.id.name,
                    "source": o.source,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "env": env,
        "from": plan.from.map(|o| o.to_string()),
        "to": plan.to.to_string(),
        "changed_paths": plan.changed_paths,
        "targets": targets,
        "kept": plan.kept,
        "warnings": plan.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::kube::Kubectl;
    use crate::backends::mask::Masker;
    use crate::pipeline::fixtures::{commit, repo};

    fn env(name: &str) -> Environment {
        Environment {
            name: name.into(),
            ..Environment::default_for("main")
        }
    }

    /// Plans `from` → `to`. With `record`, the inventory is then saved as a deploy that
    /// succeeded leaves it (everything it may apply sent, every prune done), so that the next
    /// plan starts from there; without, the plan's declarations are dropped.
    fn plan_as(
        repo: &Repository,
        env: &Environment,
        from: Option<Oid>,
        to: Oid,
        record: bool,
    ) -> Result<Plan> {
        let scratch = tempfile::tempdir().unwrap();
        let kubectl = Kubectl::new("kubectl", env, scratch.path(), Masker::default());
        let renderer = Renderer {
            kubectl: &kubectl,
            scratch: scratch.path(),
            allow_remote: false,
            charts: None,
        };
        let mut inv = Inventory::load(repo, &env.name)?;
        let mut resolver = Resolver::new("default".into());
        let plan = build(
            repo,
            env,
            from,
            to,
            &renderer,
            PlanContext {
                inventory: &mut inv,
                resolver: &mut resolver,
                only: None,
                prune_namespaces: env.prune_namespaces,
                prune_crds: env.prune_crds,
                dry: None,
            },
        )?;
        if record {
            inv.mark_applied(plan.may_apply())?;
            for k in plan.kept.iter().filter(|k| k.forget) {
                inv.forget(&k.id)?;
            }
            for (id, _) in plan.targets.iter().flat_map(|t| &t.prune) {
                inv.forget(id)?;
            }
            inv.set_base(to);
            inv.save("test")?;
        }
        Ok(plan)
    }

    fn deploy(repo: &Repository, env: &Environment, from: Option<Oid>, to: Oid) -> Plan {
        plan_as(repo, env, from, to, true).unwrap()
    }

    fn target<'p>(plan: &'p Plan, name: &str) -> &'p TargetPlan {
        plan.targets
            .iter()
            .find(|t| t.target.name == name)
            .unwrap_or_else(|| panic!("no target {name} in {:?}", sequence(plan)))
    }

    fn sequence(plan: &Plan) -> Vec<&str> {
        plan.targets
            .iter()
            .map(|t| t.target.name.as_str())
            .collect()
    }

    fn applied(tp: &TargetPlan) -> Vec<String> {
        let mut v: Vec<String> = tp.apply.iter().map(|o| o.id.to_string()).collect();
        v.sort();
        v
    }

    fn pruned(tp: &TargetPlan) -> Vec<String> {
        let mut v: Vec<String> = tp.prune.iter().map(|(id, _)| id.to_string()).collect();
        v.sort();
        v
    }

    fn all_pruned(plan: &Plan) -> Vec<String> {
        let mut v: Vec<String> = plan.targets.iter().flat_map(pruned).collect();
        v.sort();
        v
    }

    fn cm(name: &str, extra: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{extra}data:\n  v: \"1\"\n")
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n";
    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n";
    /// A custom resource with no namespace: the CRD (in another directory) says it has one.
    const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: one\n";
    const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n";
    const MODULE: &str =
        "variable \"cidr\" {}\nresource \"terraform_data\" \"net\" {\n  input = var.cidr\n}\n";
    const ROOT: &str =
        "module \"net\" {\n  source = \"../../modules/net\"\n  cidr   = \"10.0.0.0/16\"\n}\n";

    fn first(repo: &Repository) -> Oid {
        let settings = cm("settings", "");
        commit(
            repo,
            None,
            &[
                ("cluster/namespaces.yaml", Some(NAMESPACES)),
                ("crds/widgets.yaml", Some(CRD)),
                ("widgets/one.yaml", Some(WIDGET)),
                ("apps/web.yaml", Some(DEPLOYMENT)),
                ("apps/settings.yaml", Some(&settings)),
                ("modules/net/main.tf", Some(MODULE)),
                ("envs/prod/main.tf", Some(ROOT)),
                ("README.md", Some("# infra\n")),
            ],
        )
    }

    #[test]
    fn a_first_deploy_applies_everything_foundations_first() {
        let (_d, repo) = repo();
        let c1 = first(&repo);
        let p = deploy(&repo, &env("e"), None, c1);
        assert_eq!(p.from, None);
        assert_eq!(p.changed_paths, 8);
        // Namespaces and CRDs first; otherwise the order the tree lists them.
        assert_eq!(
            sequence(&p),
            ["cluster", "crds", "apps", "envs/prod", "widgets"]
        );
        assert!(p.targets.iter().all(|t| t.step == Step::Deploy));
        assert_eq!(
            applied(target(&p, "cluster")),
            ["Namespace apps", "Namespace prod"]
        );
        assert_eq!(
            applied(target(&p, "apps")),
            ["ConfigMap default/settings", "Deployment.apps default/web"]
        );
        // Namespaced by the CRD of another target, so given the environment's namespace.
        assert_eq!(
            applied(target(&p, "widgets")),
            ["Widget.example.com default/one"]
        );
        let tf = target(&p, "envs/prod");
        assert!(tf.apply.is_empty());
        assert_eq!(tf.closure, ["envs/prod", "modules/net"]);
        assert_eq!(
            target(&p, "apps").files,
            ["apps/settings.yaml", "apps/web.yaml"]
        );
        assert!(all_pruned(&p).is_empty() && p.kept.is_empty());
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(!p.unknown_kinds());
    }

    #[test]
    fn prune_is_inventory_minus_declared() {
        let (_d, repo) = repo();
        let e = env("e");
        let c1 = first(&repo);
        deploy(&repo, &e, None, c1);
        // A file deleted, a directory renamed, a custom resource moved to another target.
        let c2 = commit(
            &repo,
            Some(c1),
            &[
                ("apps/settings.yaml", None),
                ("cluster/namespaces.yaml", None),
                ("platform/namespaces.yaml", Some(NAMESPACES)),
                ("widgets/one.yaml", None),
                ("apps/widget.yaml", Some(WIDGET)),
            ],
        );
        let p = deploy(&repo, &e, Some(c1), c2);
        let apps = target(&p, "apps");
        assert_eq!(apps.step, Step::Deploy);
        // Only the changed file of an unchanged target is read and applied.
        assert_eq!(applied(apps), ["Widget.example.com default/one"]);
        assert_eq!(pruned(apps), ["ConfigMap default/settings"]);
        assert_eq!(
            applied(target(&p, "platform")),
            ["Namespace apps", "Namespace prod"]
        );
        for gone in ["cluster", "widgets"] {
            assert_eq!(target(&p, gone).step, Step::Remove);
        }
        // Declared elsewhere now: never pruned.
        assert_eq!(all_pruned(&p), ["ConfigMap default/settings"]);
        assert!(p.kept.is_empty());
        let json = to_json(&p, "e");
        let cluster = json["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "cluster")
            .unwrap();
        assert_eq!(cluster["step"], "remove");
        assert_eq!(json["from"], c1.to_string());

        // Once pruned, it is gone from the inventory: the next change prunes nothing more.
        let c3 = commit(&repo, Some(c2), &[("README.md", Some("# infra, again\n"))]);
        let p = deploy(&repo, &e, Some(c2), c3);
        assert!(p.targets.is_empty(), "{:?}", sequence(&p));
    }

    #[test]
    fn namespaces_and_crds_are_kept_unless_the_environment_allows_pruning_them() {
        let (_d, repo) = repo();
        let c1 = first(&repo);
        let c2 = commit(
            &repo,
            Some(c1),
            &[
                ("cluster/namespaces.yaml", None),
                ("crds/widgets.yaml", None),
                ("widgets/one.yaml", None),
            ],
        );
        let careful = env("careful");
        deploy(&repo, &careful, None, c1);
        let p = plan_as(&repo, &careful, Some(c1), c2, false).unwrap();
        // The custom resource goes; the Namespaces and the CRD stay, each with its reason.
        assert_eq!(all_pruned(&p), ["Widget.example.com default/one"]);
        let mut kept: Vec<(String, &str)> = p
            .kept
            .iter()
            .map(|k| (k.id.to_string(), &k.reason[..20]))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                (
                    "CustomResourceDefinition.apiextensions.k8s.io widgets.example.com".into(),
                    "CRDs are never prune"
                ),
                ("Namespace apps".into(), "Namespaces are never"),
                ("Namespace prod".into(), "Namespaces are never"),
            ]
        );
        assert!(p.kept.iter().all(|k| !k.forget));

        let bold = Environment {
            prune_namespaces: true,
            prune_crds: true,
            ..env("bold")
        };
        deploy(&repo, &bold, None, c1);
        let p = plan_as(&repo, &bold, Some(c1), c2, false).unwrap();
        assert!(p.kept.is_empty());
        assert_eq!(
            pruned(target(&p, "cluster")),
            ["Namespace apps", "Namespace prod"]
        );
        assert_eq!(
            pruned(target(&p, "crds")),
            ["CustomResourceDefinition.apiextensions.k8s.io widgets.example.com"]
        );
    }

    #[test]
    fn an_object_declared_twice_is_applied_once_and_pruned_when_both_are_gone() {
        let (_d, repo) = repo();
        let e = env("e");
        let dup = cm("shared", "  namespace: apps\n");
        // Twice in one target (two files of one directory), and once more in another.
        let c1 = commit(
            &repo,
            None,
            &[
                ("a/one.yaml", Some(&dup)),
                ("a/two.yaml", Some(&dup)),
                ("b/shared.yaml", Some(&dup)),
            ],
        );
        let p = deploy(&repo, &e, None, c1);
        assert_eq!(
            p.warnings,
            ["ConfigMap apps/shared is declared 3 times (a/one.yaml:1, a/two.yaml:1, b/shared.yaml:1): identical copies; b/shared.yaml:1 wins, as the last in declaration order (declares D7)"]
        );
        // Applied once in all: by the last target that declares it.
        assert!(
            applied(target(&p, "a")).is_empty(),
            "{:?}",
            applied(target(&p, "a"))
        );
        assert_eq!(applied(target(&p, "b")), ["ConfigMap apps/shared"]);

        let c2 = commit(
            &repo,
            Some(c1),
            &[("a/one.yaml", None), ("a/two.yaml", None)],
        );
        let p = deploy(&repo, &e, Some(c1), c2);
        assert_eq!(target(&p, "a").step, Step::Remove);
        assert!(all_pruned(&p).is_empty());

        let c3 = commit(&repo, Some(c2), &[("b/shared.yaml", None)]);
        let p = deploy(&repo, &e, Some(c2), c3);
        assert_eq!(pruned(target(&p, "b")), ["ConfigMap apps/shared"]);
    }

    #[test]
    fn the_last_declaration_wins_whichever_file_changes() {
        // Issue 25, 4: a comment-only edit of the losing file applied its copy; deleting the
        // winning file left its content running.
        let (_d, repo) = repo();
        let e = env("e");
        let v = |n: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k8s\n  namespace: apps\ndata:\n  version: \"{n}\"\n")
        };
        let c1 = commit(
            &repo,
            None,
            &[
                ("x/a.yaml", Some(&v("1.29"))),
                ("x/b.yaml", Some(&v("1.30"))),
            ],
        );
        let p = deploy(&repo, &e, None, c1);
        let live = |p: &Plan| {
            let o = &target(p, "x").apply[0];
            format!(
                "{} {}",
                o.source,
                o.body["data"]["version"].as_str().unwrap()
            )
        };
        assert_eq!(live(&p), "x/b.yaml:1 1.30");
        assert!(
            p.warnings[0].contains("their contents differ; x/b.yaml:1 wins"),
            "{:?}",
            p.warnings
        );

        // A comment in the losing file: the winner's copy is applied (it was read for it).
        let c2 = commit(
            &repo,
            Some(c1),
            &[("x/a.yaml", Some(&format!("# a comment\n{}", v("1.29"))))],
        );
        let p = deploy(&repo, &e, Some(c1), c2);
        assert_eq!(live(&p), "x/b.yaml:1 1.30");

        // The winning file goes: the next declaration in order is applied, nothing pruned.
        let c3 = commit(&repo, Some(c2), &[("x/b.yaml", None)]);
        let p = deploy(&repo, &e, Some(c2), c3);
        assert_eq!(live(&p), "x/a.yaml:1 1.29");
        assert!(all_pruned(&p).is_empty());

        // Across targets: the later target in declaration order wins, and applies it.
        let c4 = commit(&repo, Some(c3), &[("y/c.yaml", Some(&v("1.31")))]);
        let p = deploy(&repo, &e, Some(c3), c4);
        assert_eq!(applied(target(&p, "y")), ["ConfigMap apps/k8s"]);
        assert!(
            p.targets.iter().all(|t| t.target.name == "y"),
            "{:?}",
            sequence(&p)
        );

        // duplicates = "error": different copies fail every declaring target.
        let strict = Environment {
            duplicates: crate::config::Duplicates::Error,
            ..env("e")
        };
        // A second differing identity in the same targets is named too, in one go (D9).
        let other = |n: &str| v(n).replace("name: k8s", "name: other");
        let c5 = commit(
            &repo,
            Some(c4),
            &[
                ("y/c.yaml", Some(&v("1.32"))),
                ("x/o.yaml", Some(&other("1"))),
                ("y/o.yaml", Some(&other("2"))),
            ],
        );
        let p = plan_as(&repo, &strict, Some(c4), c5, false).unwrap();
        for name in ["x", "y"] {
            let err = target(&p, name).error.clone().unwrap_or_default();
            assert!(
                err.contains("apps/k8s is declared 2 times")
                    && err.contains("apps/other is declared 2 times")
                    && err.contains("duplicates = \"error\""),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_failing_target_that_declares_last_wins_and_nobody_applies_it() {
        // The oracle's seeds 4287 (a losing copy was applied while the winner's target failed)
        // and 4245 (with duplicates = "error", copies across files were not named when the
        // winner's target failed on a copy in one file).
        let (_d, repo) = repo();
        let e = env("e");
        let cm = |name: &str, v: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: apps\ndata:\n  v: \"{v}\"\n")
        };
        let c1 = commit(
            &repo,
            None,
            &[
                ("a/x.yaml", Some(&cm("shared", "a"))),
                ("a/own.yaml", Some(&cm("own", "a"))),
                ("z/x.yaml", Some(&cm("shared", "z"))),
                (
                    "z/noname.yaml",
                    Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n"),
                ),
            ],
        );
        let p = deploy(&repo, &e, None, c1);
        assert!(target(&p, "z").error.is_some());
        assert_eq!(applied(target(&p, "a")), ["ConfigMap apps/own"]);

        let strict = Environment {
            duplicates: crate::config::Duplicates::Error,
            ..env("e")
        };
        let c2 = commit(
            &repo,
            None,
            &[
                (
                    "m/x.yaml",
                    Some(&format!("{}---\n{}", cm("one", "1"), cm("one", "2"))),
                ),
                ("m/y.yaml", Some(&cm("one", "3"))),
            ],
        );
        let p = plan_as(&repo, &strict, None, c2, false).unwrap();
        let err = target(&p, "m").error.clone().unwrap_or_default();
        assert!(
            err.contains("in one file (m/x.yaml:1, m/x.yaml:")
                && err.contains("declared 2 times (m/x.yaml:")
                && err.contains("m/y.yaml:1)"),
            "{err}"
        );
    }

    #[test]
    fn a_winner_that_cannot_be_read_any_more_gives_way() {
        // The oracle's seed 4302: the winning copy's target fails on its own files, so what it
        // declares is unknown; the next declaration in order wins and is applied (D7).
        let (_d, repo) = repo();
        let e = env("e");
        let cm = |v: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: apps\ndata:\n  v: \"{v}\"\n")
        };
        let c1 = commit(
            &repo,
            None,
            &[("a/x.yaml", Some(&cm("a"))), ("z/x.yaml", Some(&cm("z")))],
        );
        let p = deploy(&repo, &e, None, c1);
        assert_eq!(applied(target(&p, "z")), ["ConfigMap apps/shared"]);
        let c2 = commit(
            &repo,
            Some(c1),
            &[(
                "z/x.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n"),
            )],
        );
        let p = deploy(&repo, &e, Some(c1), c2);
        assert!(target(&p, "z").error.is_some());
        assert_eq!(applied(target(&p, "a")), ["ConfigMap apps/shared"]);
        assert_eq!(target(&p, "a").apply[0].body["data"]["v"], "a");
        assert!(all_pruned(&p).is_empty());
    }

    /// A dry run (`plan`) with nothing deployed in the repository, keeping its cache in `cache`.
    fn dry_plan(repo: &Repository, from: Oid, to: Oid, cache: &Path) -> (Plan, bool) {
        // Returns the plan and whether it read the old tree (adopted it).
        let e = env("e");
        let scratch = tempfile::tempdir().unwrap();
        let kubectl = Kubectl::new("kubectl", &e, scratch.path(), Masker::default());
        let renderer = Renderer {
            kubectl: &kubectl,
            scratch: scratch.path(),
            allow_remote: false,
            charts: None,
        };
        let mut inv = Inventory::load(repo, &e.name).unwrap();
        let mut resolver = Resolver::new("default".into());
        let plan = build(
            repo,
            &e,
            Some(from),
            to,
            &renderer,
            PlanContext {
                inventory: &mut inv,
                resolver: &mut resolver,
                only: None,
                prune_namespaces: false,
                prune_crds: false,
                dry: Some(Some(cache)),
            },
        )
        .unwrap();
        let cold = plan
            .warnings
            .iter()
            .any(|w| w.starts_with("nothing is deployed from this repository"));
        (plan, !cold)
    }

    #[test]
    fn a_plan_without_stored_state_reads_the_old_tree_only_for_a_removal() {
        let (_d, repo) = repo();
        let cache = tempfile::tempdir().unwrap();
        let c1 = commit(
            &repo,
            None,
            &[
                ("a/one.yaml", Some(&cm("one", ""))),
                ("a/two.yaml", Some(&cm("two", ""))),
                ("b/three.yaml", Some(&cm("three", ""))),
            ],
        );
        // An edit that removes nothing: the old tree is not adopted, nothing is cached.
        let c2 = commit(
            &repo,
            Some(c1),
            &[("a/one.yaml", Some(&cm("one", "  labels: {x: y}\n")))],
        );
        let (p, adopted) = dry_plan(&repo, c1, c2, cache.path());
        assert!(!adopted, "{:?}", p.warnings);
        assert_eq!(sequence(&p), ["a"]);
        assert_eq!(applied(target(&p, "a")), ["ConfigMap default/one"]);
        assert!(!cache.path().join("adopted.json").exists());

        // A removal needs what the old tree declares: adopted, pruned, and kept for the next.
        let c3 = commit(&repo, Some(c1), &[("a/two.yaml", None)]);
        let (p, adopted) = dry_plan(&repo, c1, c3, cache.path());
        assert!(adopted);
        assert_eq!(pruned(target(&p, "a")), ["ConfigMap default/two"]);
        assert!(cache.path().join("adopted.json").exists());
        let (again, _) = dry_plan(&repo, c1, c3, cache.path());
        assert_eq!(all_pruned(&again), all_pruned(&p));
        // No ref was written by any of them.
        let refs: Vec<String> = repo
            .references()
            .unwrap()
            .flatten()
            .filter_map(|r| r.name().map(str::to_string))
            .filter(|n| n.starts_with("refs/hookops/"))
            .collect();
        assert!(refs.is_empty(), "{refs:?}");
    }

    #[test]
    fn annotations_keep_objects_and_make_hooks() {
        let (_d, repo) = repo();
        let e = env("e");
        let keep = cm("keep", "  annotations:\n    hookops.io/prune: disabled\n");
        let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n    hookops.io/hook: pre-deploy\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n";
        let c1 = commit(
            &repo,
            None,
            &[
                ("apps/keep.yaml", Some(&keep)),
                ("apps/migrate.yaml", Some(job)),
                ("apps/web.yaml", Some(DEPLOYMENT)),
            ],
        );
        let p = deploy(&repo, &e, None, c1);
        let apps = target(&p, "apps");
        assert_eq!(
            applied(apps),
            ["ConfigMap default/keep", "Deployment.apps default/web"]
        );
        let hooks: Vec<String> = apps.hooks.iter().map(|o| o.id.to_string()).collect();
        assert_eq!(hooks, ["Job.batch default/migrate"]);

        // A change elsewhere in the target still runs its hook.
        let c2 = commit(
            &repo,
            Some(c1),
            &[(
                "apps/web.yaml",
                Some(&DEPLOYMENT.replace("nginx", "nginx:2")),
            )],
        );
        let p = deploy(&repo, &e, Some(c1), c2);
        assert_eq!(target(&p, "apps").hooks.len(), 1);

        // Deleted: the kept object is forgotten, not pruned; the hook Job was never recorded.
        let c3 = commit(
            &repo,
            Some(c2),
            &[("apps/keep.yaml", None), ("apps/migrate.yaml", None)],
        );
        let p = deploy(&repo, &e, Some(c2), c3);
        assert!(all_pruned(&p).is_empty(), "{:?}", all_pruned(&p));
        assert_eq!(p.kept.len(), 1);
        assert_eq!(p.kept[0].id.to_string(), "ConfigMap default/keep");
        assert_eq!(p.kept[0].reason, "hookops.io/prune: disabled");
        assert!(p.kept[0].forget);
    }

    #[test]
    fn policy_refuses_a_target_whole() {
        let (_d, repo) = repo();
        let c1 = commit(
            &repo,
            Some(first(&repo)),
            &[("prod/cm.yaml", Some(&cm("p", "  namespace: prod\n")))],
        );
        let e = Environment {
            allowed_namespaces: Some(vec!["default".into()]),
            ..env("e")
        };
        let p = plan_as(&repo, &e, None, c1, false).unwrap();
        let why = |n: &str| target(&p, n).blocked();
        assert!(why("apps").is_none() && why("widgets").is_none());
        assert_eq!(
            why("cluster").as_deref(),
            Some("refused by policy: Namespace apps is cluster-scoped, and cluster-scoped objects are not allowed in environment e")
        );
        assert!(why("crds").unwrap().contains("is cluster-scoped"));
        assert_eq!(
            why("prod").as_deref(),
            Some("refused by policy: ConfigMap prod/p: namespace \"prod\" is not allowed in environment e")
        );
        // A refused target is never applied, so nothing of it may reach the server.
        let may: Vec<String> = p.may_apply().map(|id| id.to_string()).collect();
        assert!(may
            .iter()
            .all(|id| !id.starts_with("Namespace ") && id != "ConfigMap prod/p"));
        assert!(may.contains(&"Deployment.apps default/web".to_string()));
    }

    #[test]
    fn a_broken_manifest_fails_its_target_alone_and_prunes_nothing_of_it() {
        let (_d, repo) = repo();
        let e = env("e");
        let c1 = first(&repo);
        deploy(&repo, &e, None, c1);
        let c2 = commit(
            &repo,
            Some(c1),
            &[
                ("apps/settings.yaml", None),
                ("apps/web.yaml", Some("kind: Deployment\nmetadata: [\n")),
                ("widgets/one.yaml", Some(&WIDGET.replace("one", "two"))),
            ],
        );
        let p = plan_as(&repo, &e, Some(c1), c2, false).unwrap();
        let apps = target(&p, "apps");
        let error = apps.error.as_deref().expect("apps fails");
        assert!(error.contains("apps/web.yaml"), "{error}");
        assert_eq!(apps.blocked().as_deref(), Some(error));
        assert!(apps.apply.is_empty() && apps.prune.is_empty());
        // The other target goes ahead: the renamed widget replaces the old one.
        let widgets = target(&p, "widgets");
        assert!(widgets.error.is_none());
        assert_eq!(applied(widgets), ["Widget.example.com default/two"]);
        assert_eq!(all_pruned(&p), ["Widget.example.com default/one"]);
    }

    #[test]
    fn declared_dependencies_order_the_plan() {
        let (_d, repo) = repo();
        let config = "[[target]]\nname = \"app\"\npath = \"apps\"\ntype = \"kubectl\"\ndepends_on = [\"db\"]\n\n\
                      [[target]]\nname = \"db\"\npath = \"db\"\ntype = \"kubectl\"\n\n\
                      [[target]]\nname = \"ns\"\npath = \"cluster\"\ntype = \"kubectl\"\n";
        let c1 = commit(
            &repo,
            Some(first(&repo)),
            &[
                ("hookops.toml", Some(config)),
                ("db/db.yaml", Some(&cm("db", "  namespace: apps\n"))),
            ],
        );
        let p = plan_as(&repo, &env("e"), None, c1, false).unwrap();
        assert_eq!(sequence(&p), ["ns", "db", "app"]);
    }

    #[test]
    fn an_environment_with_paths_plans_only_its_targets() {
        let (_d, repo) = repo();
        let c1 = first(&repo);
        let e = Environment {
            paths: Some(vec!["apps".into(), "envs".into()]),
            ..env("e")
        };
        let p = plan_as(&repo, &e, None, c1, false).unwrap();
        assert_eq!(sequence(&p), ["apps", "envs/prod"]);
    }

    /// kustomize targets render with `kubectl kustomize` (local: no cluster); skipped where
    /// kubectl is missing.
    #[test]
    fn overlays_render_and_prune_what_their_base_stopped_declaring() {
        if std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_err()
        {
            return;
        }
        let (_d, repo) = repo();
        let e = env("e");
        let settings = cm("settings", "");
        let c1 = commit(
            &repo,
            None,
            &[
                (
                    "base/kustomization.yaml",
                    Some("resources:\n- web.yaml\n- settings.yaml\n"),
                ),
                ("base/web.yaml", Some(DEPLOYMENT)),
                ("base/settings.yaml", Some(&settings)),
                (
                    "overlays/prod/kustomization.yaml",
                    Some("namespace: prod\nresources:\n- ../../base\n"),
                ),
                (
                    "overlays/staging/kustomization.yaml",
                    Some("namespace: staging\nresources:\n- ../../base\n"),
                ),
            ],
        );
        let p = deploy(&repo, &e, None, c1);
        assert_eq!(sequence(&p), ["overlays/prod", "overlays/staging"]);
        assert_eq!(
            applied(target(&p, "overlays/prod")),
            ["ConfigMap prod/settings", "Deployment.apps prod/web"]
        );
        assert_eq!(
            target(&p, "overlays/staging").closure,
            ["overlays/staging", "base"]
        );

        let c2 = commit(
            &repo,
            Some(c1),
            &[
                ("base/kustomization.yaml", Some("resources:\n- web.yaml\n")),
                ("base/settings.yaml", None),
            ],
        );
        let p = deploy(&repo, &e, Some(c1), c2);
        for (name, ns) in [("overlays/prod", "prod"), ("overlays/staging", "staging")] {
            let tp = target(&p, name);
            assert_eq!(tp.uses, ["base"], "{name}");
            assert_eq!(applied(tp), [format!("Deployment.apps {ns}/web")]);
            assert_eq!(pruned(tp), [format!("ConfigMap {ns}/settings")]);
        }
    }
}
