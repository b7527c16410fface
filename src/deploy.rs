//! The pipeline for one environment, top to bottom: lock → (coalesce) → old commit → plan →
//! secrets → apply + health per target (dependency order, bounded parallelism) → on failure
//! roll back → record → pointer. Every attempt that got as far as naming a commit leaves a
//! record on it, including one that failed before touching anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use git2::Oid;

use crate::config::{Environment, OnFailure, TargetType};
use crate::health;
use crate::identity::{self, Resolver};
use crate::inventory::Inventory;
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

/// The cluster's kinds and scopes as last learnt (`kubectl api-resources`), in the env dir.
const KINDS_CACHE: &str = "api-resources.json";

fn cached_kinds(env_dir: &std::path::Path) -> BTreeMap<String, identity::Scope> {
    std::fs::read(env_dir.join(KINDS_CACHE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn kept_lines(plan: &Plan) -> Vec<String> {
    plan.kept
        .iter()
        .map(|k| format!("{}: {}", k.id, k.reason))
        .collect()
}

pub use crate::out::say;

/// Everything a deploy needs beside the request.
pub struct Deployer<'s> {
    pub session: &'s Session,
    pub signer: Option<Signer>,
    pub masker: Masker,
    /// Records written and not yet reported to metrics and alerts (`after_attempts`).
    pub written: Vec<Report>,
}

impl<'s> Deployer<'s> {
    pub fn new(session: &'s Session) -> Result<Deployer<'s>> {
        let signer = session.signer()?;
        Ok(Deployer {
            session,
            signer,
            masker: Masker::new(),
            written: Vec::new(),
        })
    }

    /// For work that writes no signed records (plans, the gate, refusals).
    pub fn unsigned(session: &'s Session) -> Deployer<'s> {
        Deployer {
            session,
            signer: None,
            masker: Masker::new(),
            written: Vec::new(),
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
        self.session.kubectl(env, self.masker.clone())
    }

    /// Plans without side effects beyond a private scratch directory (the inventory's new
    /// declarations are dropped).
    pub fn plan(&self, env: &Environment, from: Option<Oid>, to: Oid) -> Result<Plan> {
        let mut inv = Inventory::load(&self.session.repo, &env.name)?;
        self.plan_with(env, from, to, &mut inv, None)
    }

    /// Plans against `inv`, recording the new tree's declarations in it (not saved).
    pub fn plan_with(
        &self,
        env: &Environment,
        from: Option<Oid>,
        to: Oid,
        inv: &mut Inventory,
        only: Option<&BTreeSet<String>>,
    ) -> Result<Plan> {
        let kubectl = self.kubectl(env)?;
        let env_dir = self.session.env_dir(&env.name)?;
        let scratch = tempfile::Builder::new()
            .prefix("render-")
            .tempdir_in(&env_dir)
            .context("creating a scratch directory")?;
        let renderer = Renderer {
            kubectl: &kubectl,
            scratch: scratch.path(),
            allow_remote: self.session.config.kustomize.allow_remote,
        };
        let mut resolver = Resolver::new(identity::context_namespace(
            env.kubeconfig.as_deref(),
            env.context.as_deref(),
        ));
        resolver.custom.extend(cached_kinds(&env_dir));
        let cx = plan::PlanContext {
            inventory: inv,
            resolver: &mut resolver,
            only,
            prune_namespaces: env.prune_namespaces,
            prune_crds: env.prune_crds,
        };
        let mut plan = plan::build(&self.session.repo, env, from, to, &renderer, cx)?;
        crate::environments::keep_what_others_declare(self.session, env, &mut plan)?;
        // The gate's pre-receive hook sees the pushed objects in quarantine, where git refuses
        // ref updates: it reads the index, it never keeps one.
        if std::env::var_os("GIT_QUARANTINE_PATH").is_none() {
            self.keep_references(&plan);
        }
        Ok(plan)
    }

    /// Asks the cluster which kinds it serves and their scope, for kinds neither built in nor
    /// declared by a CRD in the tree (`kubectl api-resources`), and caches the answer.
    fn learn_kinds(&self, env: &Environment) -> Result<()> {
        let out = self
            .kubectl(env)?
            .raw(["api-resources", "-o", "wide", "--no-headers"])?;
        let kinds = identity::parse_api_resources(&out.stdout);
        if kinds.is_empty() {
            log::info!("{}: kubectl api-resources: {}", env.name, out.reason());
            return Ok(());
        }
        let path = self.session.env_dir(&env.name)?.join(KINDS_CACHE);
        std::fs::write(&path, serde_json::to_vec(&kinds)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Runs one request under the environment's lock (and those of environments on its API
    /// server); returns the record written (None when there was nothing to do).
    pub fn run(&mut self, req: &Request) -> Result<Option<Report>> {
        let result = {
            let _lock = crate::environments::lock(self.session, &req.env)?;
            journal::recover(self, &req.env.name).and_then(|()| self.run_locked(req))
        };
        // Metrics and alerts after the lock: a dead webhook delays nobody's deploy.
        self.after_attempts();
        result
    }

    /// Metrics and alerts for the records written since the last call.
    pub fn after_attempts(&mut self) {
        if !self.written.is_empty() {
            crate::page::refresh(self.session);
        }
        for rep in std::mem::take(&mut self.written) {
            crate::ops::after_attempt(self.session, &rep);
        }
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
        // The old commit is the deployed pointer: an environment that never deployed applies
        // the whole tree, whatever the pushed old value says.
        let from = req.from.unwrap_or(pointer);
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
            None => format!(
                "{} (whole tree: nothing deployed yet)",
                plan::short_id(req.to)
            ),
        };
        let mut inv = Inventory::load(&session.repo, &env.name)?;
        let mut planned = self.plan_with(env, from, req.to, &mut inv, req.only.as_ref());
        if planned.as_ref().is_ok_and(|p| p.unknown_kinds()) {
            // Kinds the tree does not define: the cluster's discovery says what they are.
            if let Err(e) = self.learn_kinds(env) {
                log::info!("{}: {e:#}", env.name);
            }
            inv = Inventory::load(&session.repo, &env.name)?;
            planned = self.plan_with(env, from, req.to, &mut inv, req.only.as_ref());
        }
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                say(&format!("{}: {range}: FAILED: {e:#}", env.name));
                return self.failed_early(req, from, &started, e).map(Some);
            }
        };
        for w in &plan.warnings {
            say(&format!("{}: warning: {w}", env.name));
        }
        for k in &plan.kept {
            say(&format!(
                "{}: keeping {} (no longer in git): {}",
                env.name, k.id, k.reason
            ));
        }
        if plan.targets.is_empty() {
            say(&format!(
                "{}: {range}: no deploy targets changed ({} paths)",
                env.name, plan.changed_paths
            ));
            let mut rep = self.report(req, from, &started, Outcome::Succeeded, Vec::new(), None);
            rep.kept = kept_lines(&plan);
            self.record_inventory(req, &plan, &mut inv, &[])?;
            self.finish(req, pointer, &rep, None)?;
            return Ok(Some(rep));
        }
        say(&format!(
            "{}: {} {} {range}, {} target{}",
            env.name,
            match req.action {
                Action::Rollback => "rolling back",
                _ => "deploying",
            },
            req.ref_name
                .strip_prefix("refs/heads/")
                .unwrap_or(&req.ref_name),
            plan.targets.len(),
            if plan.targets.len() == 1 { "" } else { "s" }
        ));
        let mut attempt = journal::begin(session, &env.name, req, from, &started)?;
        // Write-ahead: whatever this attempt may send to the server is in the inventory before
        // it is sent, so a kill at any point leaves nothing hookops applied unrecorded.
        self.record_inventory(req, &plan, &mut inv, &[])?;
        let secrets = match self.fetch_secrets(&plan) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("{}: FAILED: {e:#}", env.name));
                let rep = self.failed_early(req, from, &started, e)?;
                attempt.recorded(None)?;
                attempt.end()?;
                return Ok(Some(rep));
            }
        };
        let results = self.execute(env, &plan, &secrets, req.to)?;
        self.record_inventory(req, &plan, &mut inv, &results)?;
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
        rep.kept = kept_lines(&plan);
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
            self.finish(req, pointer, &rep, Some(&mut attempt))?;
            attempt.end()?;
            return Ok(Some(rep));
        }
        let failed_names: BTreeSet<String> = failed.iter().map(|r| r.name.clone()).collect();
        say(&format!(
            "{}: FAILED {} of {} targets in {elapsed:.1}s; {}",
            env.name,
            failed_names.len(),
            results.len(),
            match pointer {
                Some(p) => format!("still deployed: {}", plan::short_id(p)),
                None => "nothing is marked deployed yet".to_string(),
            }
        ));
        let mut rollback = None;
        if req.action == Action::Deploy {
            // Only targets that touched the cluster have something to undo: one refused or
            // with broken manifests applied nothing.
            let ran: BTreeSet<String> = failed_names
                .iter()
                .filter(|n| {
                    plan.targets
                        .iter()
                        .any(|t| &t.target.name == *n && t.blocked().is_none())
                })
                .cloned()
                .collect();
            if !ran.is_empty() {
                rollback = self.on_failure(req, &plan, pointer, &ran, &mut rep)?;
            }
        }
        // The failed attempt's record is written before any rollback starts: whatever happens
        // to the rollback (its own attempt, with its own record), this one is on the commit.
        rep.finished_at = report::now();
        self.write_record(req.to, &rep)?;
        self.written.push(rep.clone());
        attempt.recorded(None)?;
        attempt.end()?;
        if let Some(back) = rollback {
            match self.run_locked(&back) {
                Ok(Some(r)) if r.result == Outcome::Succeeded => {}
                Ok(_) => say(&format!(
                    "{}: rollback did not succeed; see the record on {}",
                    env.name,
                    plan::short_id(back.to)
                )),
                Err(e) => say(&format!("{}: rollback failed: {e:#}", env.name)),
            }
        }
        Ok(Some(rep))
    }

    /// Brings the inventory up to date: before applying (`results` empty), the new tree's
    /// declarations and every object the attempt may send; after, the objects it deleted.
    fn record_inventory(
        &self,
        req: &Request,
        plan: &Plan,
        inv: &mut Inventory,
        results: &[TargetReport],
    ) -> Result<()> {
        if results.is_empty() {
            inv.mark_applied(plan.may_apply())?;
            // Kept because of an annotation: forgotten. A kept Namespace or CRD stays in the
            // inventory, so `drift` and every later plan still name it.
            for k in plan.kept.iter().filter(|k| k.forget) {
                inv.forget(&k.id)?;
            }
            // A rollback of some targets leaves the others at the newer commit: the base (the
            // tree the declarations describe, mostly) stays that of the deploy it belongs to.
            if req.only.is_none() {
                inv.set_base(req.to);
            }
        }
        for r in results.iter().filter(|r| r.pruned > 0) {
            for tp in plan.targets.iter().filter(|t| t.target.name == r.name) {
                for (id, _) in &tp.prune {
                    inv.forget(id)?;
                }
            }
        }
        inv.save(&format!(
            "hookops: {} {} of {}",
            req.env.name,
            if results.is_empty() { "plan" } else { "result" },
            req.to
        ))
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
        &mut self,
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
        self.written.push(rep.clone());
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
    ) -> Result<Option<Request>> {
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
                    return Ok(None);
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
                rep.rolled_back_to = Some(back.to_string());
                return Ok(Some(rollback));
            }
        }
        Ok(None)
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
            kept: Vec::new(),
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
    fn finish(
        &mut self,
        req: &Request,
        pointer: Option<Oid>,
        rep: &Report,
        attempt: Option<&mut journal::Attempt>,
    ) -> Result<()> {
        self.write_record(req.to, rep)?;
        self.written.push(rep.clone());
        if let Some(a) = attempt {
            a.recorded(req.move_pointer.then_some((pointer, req.to)))?;
        }
        if req.move_pointer {
            move_pointer(self.session, &req.env, pointer, req.to)?;
            if req.env.tag_deploys {
                self.tag(&req.env.name, req.to)?;
            }
        }
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
            width: plan
                .targets
                .iter()
                .map(|t| t.target.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(8),
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
    if tp.target.kind == TargetType::Terraform
        || tp.blocked().is_some()
        || crate::apply::needs_steps(tp)
    {
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

/// One aligned result line per target; `width` is the longest target name of the deploy.
fn print_target(env: &str, r: &TargetReport, width: usize) {
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
    let outcome = if let Some(why) = tp.blocked() {
        Err(why)
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
    crate::apply::Run {
        env,
        kubectl,
        tp,
        objects: kube_objects(tp, secrets),
        applied,
    }
    .run(r)
    .map_err(|failure| failure.to_string())
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
