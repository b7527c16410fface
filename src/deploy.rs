//! The pipeline for one environment, top to bottom: lock → (coalesce) → old commit → plan →
//! secrets → apply + health per target (dependency order, bounded parallelism) → on failure
//! roll back → record → pointer. Every attempt that got as far as naming a commit leaves a
//! record on it, including one that failed before touching anything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use git2::Oid;

use crate::config::{Environment, OnFailure, TargetType};
use crate::health;
use crate::journal;
use crate::kube::Kubectl;
use crate::manifest::{self, Object};
use crate::mask::Masker;
use crate::notes;
use crate::plan::{self, Plan, Renderer, Step, TargetPlan};
use crate::record::{self, Signer};
use crate::report::{self, Action, Outcome, Report, TargetReport};
use crate::session::Session;
use crate::terraform::{self, Terraform};
use crate::vault;

/// What to deploy.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Environment,
    pub ref_name: String,
    /// The pushed old value, used only when the environment has never deployed.
    pub pushed_old: Option<Oid>,
    pub to: Oid,
    /// An explicit old commit (`replay --from`, rollbacks); `Some(None)`: deploy everything.
    pub from: Option<Option<Oid>>,
    pub action: Action,
    /// Skip when the branch has moved on (a newer push is waiting for the lock).
    pub coalesce: bool,
    /// Deploy only these targets (automatic rollback of the failed ones).
    pub only: Option<BTreeSet<String>>,
    pub move_pointer: bool,
}

impl Request {
    pub fn deploy(env: Environment, ref_name: &str, pushed_old: Option<Oid>, to: Oid) -> Request {
        Request {
            env,
            ref_name: ref_name.to_string(),
            pushed_old,
            to,
            from: None,
            action: Action::Deploy,
            coalesce: false,
            only: None,
            move_pointer: true,
        }
    }
}

/// Prints progress for the pusher: git relays a hook's output as `remote: …` lines.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "hookops: {line}");
    let _ = out.flush();
}

/// Everything a deploy needs beside the request.
pub struct Deployer<'s> {
    pub session: &'s Session,
    pub signer: Option<Signer>,
    pub masker: Masker,
}

impl<'s> Deployer<'s> {
    pub fn new(session: &'s Session) -> Result<Deployer<'s>> {
        let signer = session.signer()?;
        Ok(Deployer {
            session,
            signer,
            masker: Masker::new(),
        })
    }

    /// For work that writes no signed records (plans, the gate, refusals).
    pub fn unsigned(session: &'s Session) -> Deployer<'s> {
        Deployer {
            session,
            signer: None,
            masker: Masker::new(),
        }
    }

    /// A failed record for a request that could not even start.
    pub fn record_failure(&self, req: &Request, reason: &str) -> Result<()> {
        let rep = self.report(
            req,
            None,
            &report::now(),
            Outcome::Failed,
            Vec::new(),
            Some(reason.to_string()),
        );
        self.write_record(req.to, &rep)
    }

    fn kubectl(&self, env: &Environment) -> Result<Kubectl> {
        let cache = self.session.env_dir(&env.name)?.join("kube-cache");
        Ok(Kubectl::new(
            &self.session.config.tools.kubectl,
            env,
            &cache,
            self.masker.clone(),
        ))
    }

    /// Plans without side effects beyond a private scratch directory.
    pub fn plan(&self, env: &Environment, from: Option<Oid>, to: Oid) -> Result<Plan> {
        let kubectl = self.kubectl(env)?;
        let scratch = tempfile::Builder::new()
            .prefix("render-")
            .tempdir_in(self.session.env_dir(&env.name)?)
            .context("creating a scratch directory")?;
        let renderer = Renderer {
            kubectl: &kubectl,
            scratch: scratch.path(),
            allow_remote: self.session.config.kustomize.allow_remote,
        };
        let plan = plan::build(&self.session.repo, env, from, to, &renderer)?;
        // The gate's pre-receive hook sees the pushed objects in quarantine, where git refuses
        // ref updates: it reads the index, it never keeps one.
        if std::env::var_os("GIT_QUARANTINE_PATH").is_none() {
            self.keep_references(&plan);
        }
        Ok(plan)
    }

    /// Runs one request under the repository lock; returns the record written (None when there
    /// was nothing to do).
    pub fn run(&mut self, req: &Request) -> Result<Option<Report>> {
        let _lock = self.session.lock()?;
        journal::recover(self)?;
        self.run_locked(req)
    }

    pub fn run_locked(&mut self, req: &Request) -> Result<Option<Report>> {
        let session = self.session;
        let env = &req.env;
        let started = report::now();
        let clock = Instant::now();
        if req.coalesce {
            if let Some(tip) = session
                .repo
                .refname_to_id(&req.ref_name)
                .ok()
                .filter(|t| *t != req.to)
            {
                let reason = format!("superseded by {tip}");
                say(&format!(
                    "{}: {} skipped: {reason}",
                    env.name,
                    plan::short_id(req.to)
                ));
                let rep = self.report(
                    req,
                    None,
                    &started,
                    Outcome::Skipped,
                    Vec::new(),
                    Some(reason),
                );
                self.write_record(req.to, &rep)?;
                return Ok(Some(rep));
            }
        }
        let pointer = session.pointer(&env.name);
        // The pushed old value stands for "deployed" only before the first attempt: once one
        // failed, nothing is known to be deployed, so everything is pending.
        let attempted = session.env_dir(&env.name)?.join("attempted");
        let from = match req.from {
            Some(f) => f,
            None if attempted.exists() => pointer,
            None => pointer.or(req.pushed_old),
        };
        if pointer.is_none() && !attempted.exists() {
            std::fs::write(&attempted, b"")
                .with_context(|| format!("writing {}", attempted.display()))?;
        }
        if from == Some(req.to) && req.only.is_none() {
            say(&format!(
                "{}: {} is already deployed",
                env.name,
                plan::short_id(req.to)
            ));
            return Ok(None);
        }
        let range = match from {
            Some(f) => format!("{}..{}", plan::short_id(f), plan::short_id(req.to)),
            None => format!("{} (first deploy)", plan::short_id(req.to)),
        };
        let planned = self.plan(env, from, req.to).map(|mut p| {
            if let Some(only) = &req.only {
                p.targets.retain(|t| only.contains(&t.target.name));
            }
            p
        });
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                say(&format!("{}: {range}: FAILED: {e:#}", env.name));
                return self.failed_early(req, from, &started, e).map(Some);
            }
        };
        if plan.targets.is_empty() {
            say(&format!(
                "{}: {range}: no deploy targets changed ({} paths)",
                env.name, plan.changed_paths
            ));
            let rep = self.report(req, from, &started, Outcome::Succeeded, Vec::new(), None);
            self.finish(req, pointer, &rep)?;
            return Ok(Some(rep));
        }
        say(&format!(
            "{}: {} {range} ({}), {} target{}",
            env.name,
            match req.action {
                Action::Rollback => "rolling back to",
                _ => "deploying",
            },
            req.ref_name,
            plan.targets.len(),
            if plan.targets.len() == 1 { "" } else { "s" }
        ));
        journal::begin(session, &env.name, req, from)?;
        let secrets = match self.fetch_secrets(&plan) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("{}: FAILED: {e:#}", env.name));
                let rep = self.failed_early(req, from, &started, e)?;
                journal::end(session, &env.name)?;
                return Ok(Some(rep));
            }
        };
        let results = self.execute(env, &plan, &secrets, req.to)?;
        let failed: Vec<&TargetReport> = results
            .iter()
            .filter(|r| r.result == Outcome::Failed)
            .collect();
        let mut rep = self.report(
            req,
            from,
            &started,
            Outcome::Succeeded,
            results.clone(),
            None,
        );
        if !failed.is_empty() {
            rep.result = Outcome::Failed;
            rep.reason = Some(format!(
                "{} of {} targets failed: {}",
                failed.len(),
                results.len(),
                failed
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let elapsed = clock.elapsed().as_secs_f64();
        if failed.is_empty() {
            say(&format!(
                "{}: deployed {} in {elapsed:.1}s",
                env.name,
                plan::short_id(req.to)
            ));
            self.finish(req, pointer, &rep)?;
            journal::end(session, &env.name)?;
            return Ok(Some(rep));
        }
        let failed_names: BTreeSet<String> = failed.iter().map(|r| r.name.clone()).collect();
        say(&format!(
            "{}: FAILED {} of {} targets in {elapsed:.1}s; pointer stays at {}",
            env.name,
            failed_names.len(),
            results.len(),
            pointer
                .map(plan::short_id)
                .unwrap_or_else(|| "(none)".into())
        ));
        if req.action == Action::Deploy {
            self.on_failure(req, &plan, pointer, &failed_names, &mut rep)?;
        }
        rep.finished_at = report::now();
        self.write_record(req.to, &rep)?;
        journal::end(session, &env.name)?;
        crate::ops::after_attempt(self.session, &rep);
        Ok(Some(rep))
    }

    /// Stores the plan's reference indexes (a cache: `plan` and `drift` keep them too), so
    /// that the next push or plan from either side of it reads only what changed. Only the
    /// indexes of deployed pointers and of this plan are kept.
    fn keep_references(&self, plan: &Plan) {
        // Both indexes are stored already; dropping indexes no longer needed can wait for the
        // next deploy that has something to store.
        if plan.references.stored {
            return;
        }
        let repo = &self.session.repo;
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

    /// A deploy that failed before any target ran (plan, Vault): its record, metrics, alert.
    fn failed_early(
        &self,
        req: &Request,
        from: Option<Oid>,
        started: &str,
        e: anyhow::Error,
    ) -> Result<Report> {
        let reason = format!("{e:#}");
        let rep = self.report(
            req,
            from,
            started,
            Outcome::Failed,
            Vec::new(),
            Some(reason),
        );
        self.write_record(req.to, &rep)?;
        crate::ops::after_attempt(self.session, &rep);
        Ok(rep)
    }

    /// The environment's failure policy, applied to the targets that failed.
    fn on_failure(
        &mut self,
        req: &Request,
        plan: &Plan,
        pointer: Option<Oid>,
        failed: &BTreeSet<String>,
        rep: &mut Report,
    ) -> Result<()> {
        let env = &req.env;
        match env.on_failure {
            OnFailure::Stop => {
                say(&format!(
                    "{}: on_failure = stop: leaving the failed targets as they are",
                    env.name
                ));
            }
            OnFailure::RolloutUndo => {
                let kubectl = self.kubectl(env)?;
                let mut undone = Vec::new();
                for tp in plan
                    .targets
                    .iter()
                    .filter(|t| failed.contains(&t.target.name))
                {
                    for o in tp.apply.iter().filter(|o| health::is_workload(o)) {
                        let out = kubectl
                            .rollout_undo(&health::resource_arg(o), o.id.namespace.as_deref())?;
                        if out.success() {
                            undone.push(o.id.to_string());
                        } else {
                            say(&format!(
                                "{}: rollout undo {} failed: {}",
                                env.name,
                                o.id,
                                out.reason()
                            ));
                        }
                    }
                }
                say(&format!(
                    "{}: rollout undo: {}",
                    env.name,
                    if undone.is_empty() {
                        "nothing to undo".to_string()
                    } else {
                        undone.join(", ")
                    }
                ));
                if !undone.is_empty() {
                    rep.reason = Some(format!(
                        "{}; kubectl rollout undo: {}",
                        rep.reason.clone().unwrap_or_default(),
                        undone.join(", ")
                    ));
                }
            }
            OnFailure::Rollback => {
                let Some(back) = pointer else {
                    say(&format!(
                        "{}: nothing was deployed before; nothing to roll back to",
                        env.name
                    ));
                    return Ok(());
                };
                say(&format!(
                    "{}: rolling back {} to {}",
                    env.name,
                    failed.iter().cloned().collect::<Vec<_>>().join(", "),
                    plan::short_id(back)
                ));
                let rollback = Request {
                    env: env.clone(),
                    ref_name: req.ref_name.clone(),
                    pushed_old: None,
                    to: back,
                    from: Some(Some(req.to)),
                    action: Action::Rollback,
                    coalesce: false,
                    only: Some(failed.clone()),
                    move_pointer: false,
                };
                let back_rep = self.run_locked(&rollback);
                rep.rolled_back_to = Some(back.to_string());
                match back_rep {
                    Ok(Some(r)) if r.result == Outcome::Succeeded => {}
                    Ok(_) => say(&format!(
                        "{}: rollback did not succeed; see the record on {}",
                        env.name,
                        plan::short_id(back)
                    )),
                    Err(e) => say(&format!("{}: rollback failed: {e:#}", env.name)),
                }
            }
        }
        Ok(())
    }

    fn report(
        &self,
        req: &Request,
        from: Option<Oid>,
        started: &str,
        result: Outcome,
        targets: Vec<TargetReport>,
        reason: Option<String>,
    ) -> Report {
        Report {
            env: req.env.name.clone(),
            action: req.action,
            result,
            commit: req.to.to_string(),
            from: from.map(|f| f.to_string()),
            ref_name: req.ref_name.clone(),
            started_at: started.to_string(),
            finished_at: report::now(),
            host: report::hostname(),
            signer: self.signer.as_ref().map(Signer::id),
            targets,
            reason: reason.map(|r| self.masker.mask(&r)),
            rolled_back_to: None,
            hookops_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }
    }

    /// Appends the signed record to the commit's note.
    pub fn write_record(&self, commit: Oid, rep: &Report) -> Result<()> {
        let payload = rep.payload();
        let signature = match &self.signer {
            Some(s) => Some(s.sign(&payload)?),
            None => None,
        };
        let text = record::encode(&payload, signature.as_deref());
        notes::append(&self.session.repo, commit, &text)
            .with_context(|| format!("appending the record to {commit}"))
    }

    /// Success: record, pointer (compare-and-swap), optional tag, metrics.
    fn finish(&self, req: &Request, pointer: Option<Oid>, rep: &Report) -> Result<()> {
        self.write_record(req.to, rep)?;
        if req.move_pointer {
            move_pointer(self.session, &req.env, pointer, req.to)?;
            if req.env.tag_deploys {
                self.tag(&req.env.name, req.to)?;
            }
        }
        crate::ops::after_attempt(self.session, rep);
        Ok(())
    }

    /// `deploy/<env>/<UTC timestamp>`, with a counter when two deploys share a second.
    fn tag(&self, env: &str, commit: Oid) -> Result<()> {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        for n in 0..100 {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!("-{n}")
            };
            let name = format!("refs/tags/deploy/{env}/{stamp}{suffix}");
            if self.session.repo.find_reference(&name).is_ok() {
                continue;
            }
            self.session
                .repo
                .reference(&name, commit, false, "hookops: deploy tag")
                .with_context(|| format!("creating {name}"))?;
            return Ok(());
        }
        anyhow::bail!("too many deploy tags for {env} at {stamp}")
    }

    fn fetch_secrets(&mut self, plan: &Plan) -> Result<Secrets> {
        let mut secrets = Secrets::default();
        let wanted: Vec<&TargetPlan> = plan
            .targets
            .iter()
            .filter(|t| t.step == Step::Deploy && t.refused.is_none())
            .filter(|t| !t.target.secrets.is_empty() || !t.target.secret.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(secrets);
        }
        let config =
            self.session.config.vault.as_ref().context(
                "targets use Vault secrets but the server config has no [vault] section",
            )?;
        let mut client = vault::Client::login(config)?;
        for tp in wanted {
            let t = &tp.target;
            for (var, reference) in &t.secrets {
                let r = vault::SecretRef::parse(reference)?;
                let value = client
                    .read(&r)
                    .with_context(|| format!("target {}", t.name))?;
                self.masker.add(value.expose());
                secrets
                    .env
                    .entry(t.name.clone())
                    .or_default()
                    .push((var.clone(), value.expose().to_string()));
            }
            for s in &t.secret {
                let mut data = serde_json::Map::new();
                for (key, reference) in &s.data {
                    let r = vault::SecretRef::parse(reference)?;
                    let value = client
                        .read(&r)
                        .with_context(|| format!("target {}", t.name))?;
                    self.masker.add(value.expose());
                    data.insert(
                        key.clone(),
                        serde_json::Value::String(value.expose().to_string()),
                    );
                }
                let id = plan::secret_id(t, s);
                let mut metadata = serde_json::json!({
                    "name": s.name,
                    "labels": {"app.kubernetes.io/managed-by": "hookops"},
                });
                if let Some(ns) = &id.namespace {
                    metadata["namespace"] = serde_json::Value::String(ns.clone());
                }
                let body = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": metadata,
                    "type": s.secret_type.clone().unwrap_or_else(|| "Opaque".into()),
                    "stringData": data,
                });
                secrets
                    .objects
                    .entry(t.name.clone())
                    .or_default()
                    .push(Object {
                        id,
                        api_version: "v1".into(),
                        body,
                        source: format!("vault secret {}", s.name),
                        cluster: false,
                    });
            }
        }
        Ok(secrets)
    }

    /// Runs the targets: dependencies first, foundations (namespaces, CRDs) before the rest,
    /// at most `[deploy] parallel` at once; a target whose dependency failed is skipped.
    fn execute(
        &self,
        env: &Environment,
        plan: &Plan,
        secrets: &Secrets,
        commit: Oid,
    ) -> Result<Vec<TargetReport>> {
        let kubectl = self.kubectl(env)?;
        let env_dir = self.session.env_dir(&env.name)?;
        let config = &self.session.config;
        let repo = &self.session.repo;
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
            let dir = terraform::work_dir(&env_dir, &tp.target);
            let tree = crate::targets::commit_tree(repo, rev)?;
            let done = Terraform::materialise(repo, &tree, &tp.target, &tp.closure, &dir)
                .map_err(|e| format!("{e:#}"));
            tf_dirs.insert(tp.target.name.clone(), done);
        }
        let names: BTreeSet<&str> = plan
            .targets
            .iter()
            .map(|t| t.target.name.as_str())
            .collect();
        let foundations: Vec<&str> = plan
            .targets
            .iter()
            .filter(|t| t.has_foundation())
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
                if !tp.has_foundation() {
                    d.extend(foundations.iter().copied());
                }
                d
            })
            .collect();
        let parallel = config.deploy.parallel.max(1);
        let mut results: Vec<Option<TargetReport>> = vec![None; plan.targets.len()];
        let mut started = vec![false; plan.targets.len()];
        let (tx, rx) = mpsc::channel::<(usize, TargetReport)>();
        let ctx = Ctx {
            env,
            config,
            kubectl: &kubectl,
            masker: &self.masker,
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
                        print_target(&env.name, &r);
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
}

/// What running a target needs from the deploy that starts it.
#[derive(Clone, Copy)]
struct Ctx<'a> {
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
    if tp.target.kind == TargetType::Terraform || tp.refused.is_some() {
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
        print_target(&c.env.name, &r);
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
        let shared = match b.kubectl.apply(manifest::to_stream(all), ns, None) {
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

/// Vault values fetched once per deploy: Terraform environment variables and generated
/// Kubernetes Secrets, by target name.
#[derive(Default)]
pub struct Secrets {
    env: BTreeMap<String, Vec<(String, String)>>,
    objects: BTreeMap<String, Vec<Object>>,
}

fn skipped(tp: &TargetPlan, reason: String) -> TargetReport {
    TargetReport {
        result: Outcome::Skipped,
        reason: Some(reason),
        ..TargetReport::new(&tp.target.name, tp.target.kind)
    }
}

fn print_target(env: &str, r: &TargetReport) {
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
        "{env}: {:<20} {:<9} {:<22} {:>6.1}s  {status}",
        r.name,
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
    let outcome = if let Some(why) = &tp.refused {
        Err(format!("refused by policy: {why}"))
    } else if t.kind == TargetType::Terraform {
        run_terraform(env, config, masker, tp, secrets, tf_dir, &mut r)
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

/// The objects a Kubernetes target applies: its manifests' and, when deploying, the Secrets
/// generated from Vault for it.
fn kube_objects<'a>(tp: &'a TargetPlan, secrets: &'a Secrets) -> Vec<&'a Object> {
    let generated = match tp.step {
        Step::Deploy => secrets.objects.get(&tp.target.name),
        Step::Remove => None,
    };
    tp.apply
        .iter()
        .chain(generated.into_iter().flatten())
        .collect()
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
    let t = &tp.target;
    let ns = t.namespace.as_deref();
    let objects = kube_objects(tp, secrets);
    if applied {
        r.applied = objects.len();
    } else if !objects.is_empty() {
        // A custom resource cannot be mapped before its CRD exists: such targets apply their
        // foundations first, in a call of their own.
        let has_crd = objects
            .iter()
            .any(|o| o.id.kind == "CustomResourceDefinition");
        let (first, rest): (Vec<&Object>, Vec<&Object>) = if has_crd {
            objects.iter().partition(|o| o.is_foundation())
        } else {
            let mut all = objects.clone();
            foundations_first(&mut all);
            (Vec::new(), all)
        };
        for batch in [first, rest] {
            if batch.is_empty() {
                continue;
            }
            let out = kubectl
                .apply(manifest::to_stream(batch.iter().copied()), ns, None)
                .map_err(|e| format!("{e:#}"))?;
            if !out.success() {
                return Err(format!("kubectl apply: {}", out.reason()));
            }
            r.applied += batch.len();
        }
    }
    if !tp.prune.is_empty() {
        let out = kubectl
            .delete(manifest::stubs_stream(&tp.prune), ns)
            .map_err(|e| format!("{e:#}"))?;
        if !out.success() {
            return Err(format!("kubectl delete: {}", out.reason()));
        }
        r.pruned = tp.prune.len();
    }
    let timeout = env.health_timeout(t.timeout);
    let name = t.name.clone();
    let envname = env.name.clone();
    let mut progress = |line: &str| say(&format!("{envname}: {name}: {line}"));
    match health::wait(kubectl, &objects, timeout, &mut progress) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(format!("unhealthy: {reason}")),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn run_terraform(
    env: &Environment,
    config: &crate::config::ServerConfig,
    masker: &Masker,
    tp: &TargetPlan,
    secrets: &Secrets,
    tf_dir: Option<Result<PathBuf, String>>,
    r: &mut TargetReport,
) -> std::result::Result<(), String> {
    let t = &tp.target;
    if tp.step == Step::Remove && !env.allow_destroy {
        r.result = Outcome::Skipped;
        r.reason = Some("removed Terraform root not destroyed: allow_destroy = false".into());
        return Ok(());
    }
    let Some(dir) = tf_dir else {
        return Err("nothing to run (no deployed revision of this root)".into());
    };
    let root = dir?;
    let tf = Terraform {
        program: &config.tools.terraform,
        masker,
        lock_timeout_secs: config.deploy.terraform_lock_timeout,
        env: secrets.env.get(&t.name).cloned().unwrap_or_default(),
    };
    let prefix = format!("{}: {}", env.name, t.name);
    let mut line = |l: &str| say(&format!("{prefix}: {l}"));
    let counts = match tp.step {
        Step::Deploy => tf.deploy(&root, &mut line),
        Step::Remove => tf.destroy(&root, &mut line),
    }
    .map_err(|e| crate::tree::repository_paths(&format!("{e:#}"), &work_root(&root, t)))?;
    r.applied = counts.changed;
    r.pruned = counts.destroyed;
    Ok(())
}

/// The work directory a root runs in is `<work root>/<its repository path>`.
fn work_root(dir: &std::path::Path, t: &crate::config::Target) -> PathBuf {
    let depth = t.path.split('/').filter(|p| !p.is_empty()).count();
    dir.ancestors().nth(depth).unwrap_or(dir).to_path_buf()
}

/// Moves `refs/hookops/deployed/<env>` from `old` to `new`, refusing if someone else moved it.
pub fn move_pointer(
    session: &Session,
    env: &Environment,
    old: Option<Oid>,
    new: Oid,
) -> Result<()> {
    let name = env.pointer_ref();
    let msg = format!("hookops: deployed {new}");
    let repo = &session.repo;
    let res = match old {
        Some(old) => repo.reference_matching(&name, new, true, old, &msg),
        None => repo.reference(&name, new, false, &msg),
    };
    res.with_context(|| format!("moving {name} to {new} (it moved meanwhile?)"))?;
    Ok(())
}
