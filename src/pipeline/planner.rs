//! The plan stage for one environment of a session: renders the trees with the environment's
//! kubectl (a private scratch directory), resolves kinds with what the cluster was last seen to
//! serve, builds the plan (`plan::build`, pure), keeps what other environments on the same API
//! server still declare, and keeps the reference index for the next push. `deploy`, the
//! pre-receive gate, `plan` and `drift` all plan through here; only `deploy` saves the
//! inventory it fills.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use git2::Oid;

use crate::backends::mask::Masker;
use crate::backends::repo::Session;
use crate::config::Environment;
use crate::pipeline::cache::Cache;
use crate::pipeline::environments;
use crate::pipeline::identity::{self, Resolver};
use crate::pipeline::inventory::Inventory;
use crate::pipeline::plan::{build, Kept, Plan, PlanContext, Renderer, Step};

/// Plans without side effects beyond a private scratch directory (the inventory's new
/// declarations are dropped).
pub fn plan(session: &Session, env: &Environment, from: Option<Oid>, to: Oid) -> Result<Plan> {
    let mut inv = Inventory::load(&session.repo, &env.name)?;
    let cache = session.state_dir().join("cache");
    let dry = Dry(Some(cache.as_path()));
    plan_in(
        session,
        &Masker::new(),
        env,
        (from, to),
        &mut inv,
        None,
        Some(dry),
    )
}

/// Plans against `inv`, recording the new tree's declarations in it (not saved).
pub fn plan_with<'s>(
    session: &'s Session,
    masker: &Masker,
    env: &Environment,
    range: (Option<Oid>, Oid),
    inv: &mut Inventory<'s>,
    only: Option<&BTreeSet<String>>,
) -> Result<Plan> {
    plan_in(session, masker, env, range, inv, only, None)
}

/// A plan that deploys nothing, with the directory where it keeps what it learns (writes no
/// ref: `pipeline::cache`).
struct Dry<'a>(Option<&'a std::path::Path>);

fn plan_in<'s>(
    session: &'s Session,
    masker: &Masker,
    env: &Environment,
    (from, to): (Option<Oid>, Oid),
    inv: &mut Inventory<'s>,
    only: Option<&BTreeSet<String>>,
    dry: Option<Dry>,
) -> Result<Plan> {
    let kubectl = session.kubectl(env, masker.clone())?;
    let env_dir = session.env_dir(&env.name)?;
    let scratch = tempfile::Builder::new()
        .prefix("render-")
        .tempdir_in(&env_dir)
        .context("creating a scratch directory")?;
    let context_namespace =
        identity::context_namespace(env.kubeconfig.as_deref(), env.context.as_deref());
    let charts = crate::pipeline::declare::chart::charts(session, env, masker, &context_namespace)?;
    let renderer = Renderer {
        kubectl: &kubectl,
        scratch: scratch.path(),
        allow_remote: session.config.kustomize.allow_remote,
        charts: Some(&charts),
    };
    let mut resolver = Resolver::new(context_namespace);
    resolver.custom.extend(cached_kinds(&env_dir));
    let cx = PlanContext {
        inventory: inv,
        resolver: &mut resolver,
        only,
        prune_namespaces: env.prune_namespaces,
        prune_crds: env.prune_crds,
        dry: dry.as_ref().map(|d| d.0),
    };
    let mut plan = build(&session.repo, env, from, to, &renderer, cx)?;
    keep_what_others_declare(session, env, &mut plan)?;
    match dry
        .and_then(|d| d.0)
        .and_then(|d| Cache::open(d, "references"))
    {
        // A dry run writes no ref: its indexes go to its cache (never in a quarantine).
        Some(cache) => {
            if let Err(e) = plan.references.keep_in(&session.repo, &cache) {
                log::info!("keeping the reference index: {e:#}");
            }
        }
        // The gate's pre-receive hook sees the pushed objects in quarantine, where git refuses
        // ref updates: it reads the index, it never keeps one.
        None if std::env::var_os("GIT_QUARANTINE_PATH").is_none() => {
            keep_references(session, &plan)
        }
        None => {}
    }
    Ok(plan)
}

/// Asks the cluster which kinds it serves and their scope, for kinds neither built in nor
/// declared by a CRD in the tree (`kubectl api-resources`), and caches the answer.
pub fn learn_kinds(session: &Session, masker: &Masker, env: &Environment) -> Result<()> {
    let out = session.kubectl(env, masker.clone())?.raw([
        "api-resources",
        "-o",
        "wide",
        "--no-headers",
    ])?;
    let kinds = identity::parse_api_resources(&out.stdout);
    if kinds.is_empty() {
        log::info!("{}: kubectl api-resources: {}", env.name, out.reason());
        return Ok(());
    }
    let path = session.env_dir(&env.name)?.join(KINDS_CACHE);
    std::fs::write(&path, serde_json::to_vec(&kinds)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The cluster's kinds and scopes as last learnt (`kubectl api-resources`), in the env dir.
const KINDS_CACHE: &str = "api-resources.json";

fn cached_kinds(env_dir: &std::path::Path) -> BTreeMap<String, identity::Scope> {
    std::fs::read(env_dir.join(KINDS_CACHE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Before pruning: an object that another environment on the same API server still declares
/// (its inventory, `refs/hookops/inventory/<other>`) is kept, not deleted, and named with the
/// reason. A removal step left with nothing to prune is dropped.
pub fn keep_what_others_declare(
    session: &Session,
    env: &Environment,
    plan: &mut Plan,
) -> Result<()> {
    if plan.targets.iter().all(|t| t.prune.is_empty()) {
        return Ok(());
    }
    let others = environments::sharing_server(&session.environments(), env);
    if others.is_empty() {
        return Ok(());
    }
    let url = environments::server(env);
    let mut inventories = Vec::new();
    for o in &others {
        inventories.push((o.name.clone(), Inventory::load(&session.repo, &o.name)?));
    }
    let mut emptied = BTreeSet::new();
    for tp in &mut plan.targets {
        if tp.prune.is_empty() {
            continue;
        }
        let mut still = Vec::new();
        for (id, version) in std::mem::take(&mut tp.prune) {
            let mut by = None;
            for (name, inv) in &mut inventories {
                if inv.declared(&id)? {
                    by = Some(name.clone());
                    break;
                }
            }
            match by {
                Some(other) => plan.kept.push(Kept {
                    id,
                    target: tp.target.name.clone(),
                    reason: format!(
                        "environment {other} still declares it on the same API server ({url})"
                    ),
                    // Checked again by every deploy: pruned once the other stops declaring it.
                    forget: false,
                    noted: false,
                    held: false,
                }),
                None => still.push((id, version)),
            }
        }
        if still.is_empty() && tp.step == Step::Remove {
            emptied.insert(tp.target.name.clone());
        }
        tp.prune = still;
    }
    plan.targets
        .retain(|t| !(t.step == Step::Remove && emptied.contains(&t.target.name)));
    Ok(())
}

/// Stores the plan's reference indexes (a cache: `plan` and `drift` keep them too), so
/// that the next push or plan from either side of it reads only what changed. Only the
/// indexes of deployed pointers and of this plan are kept.
fn keep_references(session: &Session, plan: &Plan) {
    // Both indexes are stored already; dropping indexes no longer needed can wait for the
    // next deploy that has something to store.
    if plan.references.stored {
        return;
    }
    let repo = &session.repo;
    let mut keep: BTreeSet<Oid> = BTreeSet::from([plan.to]);
    keep.extend(plan.from);
    if let Ok(refs) = repo.references_glob("refs/hookops/deployed/*") {
        keep.extend(refs.flatten().filter_map(|r| r.target()));
    }
    // An index that cannot be stored is rebuilt by the next push: slower, not wrong.
    if let Err(e) = plan.references.save(repo, &keep) {
        log::warn!("keeping the reference index: {e:#}");
    }
}
