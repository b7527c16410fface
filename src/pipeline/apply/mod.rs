//! The apply stage: runs a plan's targets. Dependencies first (`depends_on`, and the targets
//! creating the Namespaces and CRDs a target uses), at most `[deploy] parallel` at once; a
//! target whose dependency failed is skipped. Kubernetes targets that start together share one
//! kubectl call (batching); each then prunes and waits for health on its own thread
//! (`kube`); Terraform roots run `terraform` (`terraform`). Prints one aligned line per target.

pub mod kube;
pub mod terraform;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Result;
use git2::Oid;

use crate::backends::kube::Kubectl;
use crate::backends::mask::Masker;
use crate::backends::repo::Session;
use crate::backends::terraform::{self as tf, Terraform};
use crate::config::{Environment, TargetType};
use crate::out::say;
use crate::pipeline::identity;
use crate::pipeline::manifest::Object;
use crate::pipeline::plan::{Plan, Step, TargetPlan};
use crate::pipeline::secrets::{kube_objects, Secrets};
use crate::record::payload::{Outcome, TargetReport};

/// Runs the targets: dependencies first, foundations (namespaces, CRDs) before the rest,
/// at most `[deploy] parallel` at once; a target whose dependency failed is skipped.
pub fn execute(
    session: &Session,
    masker: &Masker,
    env: &Environment,
    plan: &Plan,
    secrets: &Secrets,
    commit: Oid,
) -> Result<Vec<TargetReport>> {
    let kubectl = session.kubectl(env, masker.clone())?;
    let env_dir = session.env_dir(&env.name)?;
    let config = &session.config;
    let repo = &session.repo;
    // Terraform roots are written out here, on this thread: git2 handles are not shared.
    let mut tf_dirs: BTreeMap<String, Result<PathBuf, String>> = BTreeMap::new();
    for tp in plan
        .targets
        .iter()
        .filter(|t| t.target.kind == TargetType::Terraform)
    {
        let (rev, allowed) = match tp.step {
            Step::Deploy => (Some(commit), true),
            Step::Remove => (plan.from, env.allow_destroy),
        };
        if !allowed {
            continue;
        }
        let Some(rev) = rev else { continue };
        let dir = tf::work_dir(&env_dir, &tp.target);
        let tree = crate::pipeline::declare::targets::commit_tree(repo, rev)?;
        let done = Terraform::materialise(repo, &tree, &tp.target, &tp.closure, &dir)
            .map_err(|e| format!("{e:#}"));
        tf_dirs.insert(tp.target.name.clone(), done);
    }
    let names: BTreeSet<&str> = plan
        .targets
        .iter()
        .map(|t| t.target.name.as_str())
        .collect();
    let deps: Vec<Vec<&str>> = plan
        .targets
        .iter()
        .map(|tp| {
            let mut d: Vec<&str> = tp
                .target
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|n| names.contains(n))
                .collect();
            d.extend(foundation_deps(plan, tp));
            d
        })
        .collect();
    let parallel = config.deploy.parallel.max(1);
    let mut results: Vec<Option<TargetReport>> = vec![None; plan.targets.len()];
    let mut started = vec![false; plan.targets.len()];
    let (tx, rx) = mpsc::channel::<(usize, TargetReport)>();
    let ctx = Ctx {
        width: crate::out::column_width(plan.targets.iter().map(|t| t.target.name.as_str())).max(8),
        env,
        config,
        kubectl: &kubectl,
        masker,
        plan,
        secrets,
    };
    std::thread::scope(|scope| {
        let mut running = 0;
        loop {
            let done: BTreeMap<&str, Outcome> = results
                .iter()
                .flatten()
                .map(|r| (r.name.as_str(), r.result))
                .collect();
            // Kubernetes targets starting in this round, by namespace setting: a group of
            // several is applied by one kubectl (see `start_batch`).
            let mut groups: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
            for i in 0..plan.targets.len() {
                if started[i] || running >= parallel {
                    continue;
                }
                if !deps[i].iter().all(|d| done.contains_key(d)) {
                    continue;
                }
                started[i] = true;
                running += 1;
                let tp = &plan.targets[i];
                if let Some(bad) = deps[i]
                    .iter()
                    .find(|d| done.get(*d) == Some(&Outcome::Failed))
                {
                    let r = skipped(tp, format!("dependency {bad} failed"));
                    print_target(&env.name, &r, ctx.width);
                    let _ = tx.send((i, r));
                    continue;
                }
                if config.deploy.batch && batchable(tp, secrets) {
                    groups
                        .entry(tp.target.namespace.as_deref())
                        .or_default()
                        .push(i);
                    continue;
                }
                let tf_dir = tf_dirs.get(&tp.target.name).cloned();
                spawn_target(scope, ctx, i, tf_dir, None, tx.clone());
            }
            for (ns, members) in groups {
                match members[..] {
                    [i] => spawn_target(scope, ctx, i, None, None, tx.clone()),
                    _ => start_batch(scope, ctx, ns, members, tx.clone()),
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, r)) = rx.recv() else { break };
            running -= 1;
            results[i] = Some(r);
            // Targets that finished together start their successors together.
            while let Ok((i, r)) = rx.try_recv() {
                running -= 1;
                results[i] = Some(r);
            }
        }
    });
    Ok(results.into_iter().flatten().collect())
}

/// The targets whose Namespaces or CRDs `tp` needs: those creating a namespace its objects
/// live in, or defining a kind it uses. Only these make it wait, and only their failure skips
/// it; every other target runs whatever fails elsewhere.
fn foundation_deps<'p>(plan: &'p Plan, tp: &TargetPlan) -> Vec<&'p str> {
    if !tp.target.kind.is_kube() {
        return Vec::new();
    }
    let namespaces: BTreeSet<&str> = tp
        .apply
        .iter()
        .filter_map(|o| o.id.namespace.as_deref())
        .chain(
            tp.secret_ids
                .iter()
                .filter_map(|id| id.namespace.as_deref()),
        )
        .collect();
    let kinds: BTreeSet<String> = tp
        .apply
        .iter()
        .map(|o| identity::kind_key(&o.id.group, &o.id.kind))
        .collect();
    plan.targets
        .iter()
        .filter(|f| f.target.name != tp.target.name)
        .filter(|f| {
            f.apply.iter().any(|o| {
                (o.id.group.is_empty()
                    && o.id.kind == "Namespace"
                    && namespaces.contains(o.id.name.as_str()))
                    || identity::crd_scope(o).is_some_and(|(k, _)| kinds.contains(&k))
            })
        })
        .map(|f| f.target.name.as_str())
        .collect()
}

/// What running a target needs from the deploy that starts it.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    /// Column width of target names in the result lines.
    width: usize,
    env: &'a Environment,
    config: &'a crate::config::ServerConfig,
    kubectl: &'a Kubectl,
    masker: &'a Masker,
    plan: &'a Plan,
    secrets: &'a Secrets,
}

/// A Kubernetes target that can share a kubectl call: it has objects to apply, none of them a
/// CustomResourceDefinition (whose custom resources need a call of their own after it).
fn batchable(tp: &TargetPlan, secrets: &Secrets) -> bool {
    if tp.target.kind == TargetType::Terraform || tp.blocked().is_some() || kube::needs_steps(tp) {
        return false;
    }
    let objects = kube_objects(tp, secrets);
    !objects.is_empty()
        && !objects
            .iter()
            .any(|o| o.id.kind == "CustomResourceDefinition")
}

/// Runs target `i` on a thread of its own and reports it to the scheduler; `applied` when a
/// shared kubectl call, started then, already applied its objects.
fn spawn_target<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    c: Ctx<'env>,
    i: usize,
    tf_dir: Option<Result<PathBuf, String>>,
    applied: Option<Instant>,
    tx: mpsc::Sender<(usize, TargetReport)>,
) {
    scope.spawn(move || {
        let r = run_target(c, &c.plan.targets[i], tf_dir, applied);
        print_target(&c.env.name, &r, c.width);
        let _ = tx.send((i, r));
    });
}

/// Starts `members`, several Kubernetes targets of one namespace setting that start together,
/// with one kubectl process for all their objects, which saves a kubectl start (~0.1 s of CPU)
/// per target; each then prunes and waits for health on its own thread. Should the shared call
/// fail, every member is applied again on its own (server-side apply is idempotent), so that a
/// failure is reported by the target that caused it and the others succeed exactly as they
/// would have alone.
fn start_batch<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    b: Ctx<'env>,
    ns: Option<&'env str>,
    members: Vec<usize>,
    tx: mpsc::Sender<(usize, TargetReport)>,
) {
    scope.spawn(move || {
        let clock = Instant::now();
        let mut all: Vec<&Object> = members
            .iter()
            .flat_map(|&i| kube_objects(&b.plan.targets[i], b.secrets))
            .collect();
        foundations_first(&mut all);
        let names: Vec<&str> = members
            .iter()
            .map(|&i| b.plan.targets[i].target.name.as_str())
            .collect();
        log::debug!("{}: one kubectl apply for {}", b.env.name, names.join(", "));
        let shared = match kube::apply_objects(b.kubectl, &all, ns) {
            Ok(out) if out.success() => true,
            Ok(out) => {
                log::info!(
                    "{}: the shared apply of {} failed ({}); applying them one by one",
                    b.env.name,
                    names.join(", "),
                    b.masker.mask(&out.reason())
                );
                false
            }
            Err(e) => {
                log::info!(
                    "{}: the shared apply failed ({e:#}); one by one",
                    b.env.name
                );
                false
            }
        };
        for i in members {
            spawn_target(scope, b, i, None, shared.then_some(clock), tx.clone());
        }
    });
}

pub fn skipped(tp: &TargetPlan, reason: String) -> TargetReport {
    TargetReport {
        result: Outcome::Skipped,
        reason: Some(reason),
        ..TargetReport::new(&tp.target.name, tp.target.kind)
    }
}

/// One aligned result line per target; `width` is the target name column's (`out::column_width`).
pub fn print_target(env: &str, r: &TargetReport, width: usize) {
    let mut counts = format!("applied {}", r.applied);
    if r.pruned > 0 {
        counts.push_str(&format!(", pruned {}", r.pruned));
    }
    let status = match (r.result, &r.reason) {
        (Outcome::Succeeded, _) => "ok".to_string(),
        (Outcome::Skipped, Some(why)) => format!("skipped: {why}"),
        (_, Some(why)) => format!("FAILED: {why}"),
        (o, None) => o.as_str().to_string(),
    };
    say(&format!(
        "{env}: {:<width$} {:<9} {:<19} {:>6.1}s  {status}",
        crate::config::printable(&r.name),
        r.kind,
        counts,
        r.duration_ms as f64 / 1000.0
    ));
}

fn run_target(
    c: Ctx<'_>,
    tp: &TargetPlan,
    tf_dir: Option<Result<PathBuf, String>>,
    applied: Option<Instant>,
) -> TargetReport {
    let Ctx {
        env,
        config,
        kubectl,
        masker,
        secrets,
        ..
    } = c;
    // A target whose objects a shared kubectl call applied counts from that call's start.
    let clock = applied.unwrap_or_else(Instant::now);
    let t = &tp.target;
    let mut r = TargetReport::new(&t.name, t.kind);
    r.chart = tp
        .chart
        .as_ref()
        .map(|c| crate::record::payload::ChartRecord {
            name: c.name.clone(),
            version: c.version.clone(),
            release: c.release.clone(),
            repo: c.repo.clone(),
            digest: c.digest.clone(),
        });
    let outcome = if let Some(why) = tp.blocked() {
        Err(why)
    } else if t.kind == TargetType::Terraform {
        terraform::run(env, config, masker, tp, secrets, tf_dir, &mut r)
    } else {
        run_kube(env, kubectl, tp, secrets, applied.is_some(), &mut r)
    };
    if let Err(reason) = outcome {
        r.result = Outcome::Failed;
        r.reason = Some(masker.mask(&reason));
    }
    r.duration_ms = clock.elapsed().as_millis() as u64;
    r
}

/// Namespaces and CRDs before the objects that may live in or use them (stable otherwise).
fn foundations_first(objects: &mut [&Object]) {
    objects.sort_by_key(|o| !o.is_foundation());
}

/// Applies (unless a shared call already did: `applied`), prunes, then waits for health.
fn run_kube(
    env: &Environment,
    kubectl: &Kubectl,
    tp: &TargetPlan,
    secrets: &Secrets,
    applied: bool,
    r: &mut TargetReport,
) -> std::result::Result<(), String> {
    kube::Run {
        env,
        kubectl,
        tp,
        objects: kube_objects(tp, secrets),
        applied,
    }
    .run(r)
    .map_err(|failure| failure.to_string())
}
