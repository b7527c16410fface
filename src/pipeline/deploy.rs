//! The orchestrator: one environment's deploy, top to bottom, one stage a file.
//!
//! ```text
//! lock (environments) → journal recovery (journal) → coalesce → old commit (pointer)
//!   → plan (planner, plan) → journal entry + inventory written ahead (journal, inventory)
//!   → secrets (secrets) → apply + health per target (apply, apply/kube, apply/terraform, health)
//!   → record (record::notes) → pointer and tag (pointer) — or the failure policy: a rollback
//!     of the failed targets, itself an attempt with its own record
//! ```
//!
//! Every attempt that got as far as naming a commit leaves one record on it, including one that
//! failed before touching anything. What happens after the records (status page, metrics,
//! alerts) is the caller's `after` function, called outside the locks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use git2::Oid;

use crate::backends::kube::Gate;
use crate::backends::lease::{Acquired, Held};
use crate::backends::mask::Masker;
use crate::backends::repo::Session;
use crate::config::{Environment, LockMode, OnFailure};
use crate::out::say;
use crate::pipeline::apply;
use crate::pipeline::environments;
use crate::pipeline::health;
use crate::pipeline::hosts;
use crate::pipeline::inventory::Inventory;
use crate::pipeline::inventory_cluster::ClusterCopy;
use crate::pipeline::journal;
use crate::pipeline::options::PushOptions;
use crate::pipeline::plan::{self, Plan};
use crate::pipeline::planner;
use crate::pipeline::pointer;
use crate::pipeline::secrets;
use crate::record::notes::Recorder;
use crate::record::payload::{self, Action, Outcome, Report, TargetReport};

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
    /// The push's options (`git push -o hookops.…`): which targets now, no health wait, the
    /// pusher's message; the signer of an `allow-prune` override.
    pub options: PushOptions,
    pub allowed_by: Option<String>,
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
            options: PushOptions::default(),
            allowed_by: None,
        }
    }

    /// The targets to deploy: the rollback's, else the push's `hookops.target`.
    fn only(&self) -> Option<BTreeSet<String>> {
        self.only.clone().or_else(|| {
            (!self.options.targets.is_empty())
                .then(|| self.options.targets.iter().cloned().collect())
        })
    }

    /// The journal entry of this request's attempt.
    fn journal_entry(&self, from: Option<Oid>, started: &str) -> journal::Entry {
        journal::Entry::new(
            &self.env.name,
            self.action,
            self.to,
            from,
            &self.ref_name,
            started,
        )
    }
}

/// What the command that deploys does with the records a run wrote, after it, outside the
/// locks (`ops::after_attempts`: the status page, metrics, alerts).
pub type AfterAttempts = fn(&Session, &[Report]);

/// Everything a deploy needs beside the request.
pub struct Deployer<'s> {
    pub session: &'s Session,
    pub recorder: Recorder,
    pub masker: Masker,
    pub after: AfterAttempts,
    /// Records written and not yet handed to `after`.
    pub written: Vec<Report>,
    /// lock = "lease": the Lease of the environment being deployed, and its inventory copy.
    lease: Option<(Held, ClusterCopy)>,
}

impl<'s> Deployer<'s> {
    /// With the server's signing key (an error when it is configured and unreadable).
    pub fn new(session: &'s Session, after: AfterAttempts) -> Result<Deployer<'s>> {
        Ok(Deployer {
            session,
            recorder: Recorder {
                signer: session.signer()?,
            },
            masker: Masker::new(),
            after,
            written: Vec::new(),
            lease: None,
        })
    }

    /// A failed record for a request that could not even start (written unsigned when the
    /// signing key is what is missing).
    pub fn record_failure(session: &Session, req: &Request, reason: &str) -> Result<()> {
        let recorder = Recorder { signer: None };
        Self::record_unattempted(session, &recorder, req, Outcome::Failed, reason)
    }

    /// A skipped record for a request that is not attempted (a push whose options say not to
    /// deploy), signed when the server signs.
    pub fn record_skip(session: &Session, req: &Request, reason: &str) -> Result<()> {
        let recorder = Recorder {
            signer: session.signer()?,
        };
        Self::record_unattempted(session, &recorder, req, Outcome::Skipped, reason)
    }

    /// The record of a request that did not run: its outcome and why, nothing else.
    fn record_unattempted(
        session: &Session,
        recorder: &Recorder,
        req: &Request,
        outcome: Outcome,
        reason: &str,
    ) -> Result<()> {
        let mut rep = recorder.report(
            &req.env.name,
            req.action,
            outcome,
            &req.to.to_string(),
            &req.ref_name,
            &payload::now(),
        );
        rep.reason = Some(reason.to_string());
        recorder.write(&session.repo, req.to, &rep)
    }

    /// Runs one request under the environment's lock (and those of environments on its API
    /// server), after settling what dead attempts left; returns the record written (None when
    /// there was nothing to do). The records go to `after` once the locks are released.
    pub fn run(&mut self, req: &Request) -> Result<Option<Report>> {
        let result = {
            let _lock = environments::lock(self.session, &req.env)?;
            if req.env.lock == LockMode::Lease {
                self.run_leased(req)
            } else {
                journal::recover(self.session, &self.recorder, &req.env.name)
                    .and_then(|()| self.run_locked(req))
            }
        };
        self.after_attempts();
        result
    }

    /// lock = "lease" (docs/ha.md): the file lock held, the environment's Lease is taken too
    /// (`hosts::take`), the inventory's cluster copy read, and the attempt runs with every
    /// cluster write fenced by the Lease; the Lease is released at the end.
    fn run_leased(&mut self, req: &Request) -> Result<Option<Report>> {
        let (session, env) = (self.session, &req.env);
        let started = payload::now();
        let flight = hosts::in_flight(&env.name, req.action, req.to, &req.ref_name, &started);
        let held = match hosts::take(session, &self.recorder, env, flight, req.coalesce) {
            Ok(Acquired::Held(h)) => *h,
            Ok(Acquired::GaveUp(reason)) => return self.skip(req, &started, reason).map(Some),
            Err(e) => return self.lease_failed(req, &started, e.context("taking the Lease")),
        };
        session.set_gate(&env.name, Some(Arc::new(held.fence()) as Arc<dyn Gate>));
        let ready = ClusterCopy::new(session, env).and_then(|mut copy| {
            journal::recover(session, &self.recorder, &env.name)?;
            if let Some(line) = copy.pull(&session.repo)? {
                say(&format!("{}: {line}", env.name));
            }
            Ok(copy)
        });
        let (held, result) = match ready {
            Ok(copy) => {
                self.lease = Some((held, copy));
                let result = self.run_locked(req);
                (self.lease.take().map(|(held, _)| held), result)
            }
            Err(e) => (Some(held), self.lease_failed(req, &started, e)),
        };
        session.set_gate(&env.name, None);
        if let Some(Err(e)) = held.map(Held::release) {
            say(&format!("{}: releasing the Lease: {e:#}", env.name));
        }
        result
    }

    /// The Lease could not be taken, or what it guards not read: a failed record, nothing
    /// written to the cluster.
    fn lease_failed(
        &mut self,
        req: &Request,
        started: &str,
        e: anyhow::Error,
    ) -> Result<Option<Report>> {
        say(&format!(
            "{}: {}: FAILED: {}",
            req.env.name,
            plan::short_id(req.to),
            crate::out::error_line(&e)
        ));
        self.failed_early(req, self.session.pointer(&req.env.name), started, e)
            .map(Some)
    }

    /// Why the Lease of this attempt is lost, once it is.
    fn lease_lost(&self) -> Option<String> {
        self.lease.as_ref().and_then(|(h, _)| h.fence().lost())
    }

    /// An attempt that lost its Lease stops: no more writes, no failure policy, the pointer
    /// stays; its record says so.
    fn interrupted_by_lease(
        &mut self,
        req: &Request,
        from: Option<Oid>,
        started: &str,
        targets: Vec<TargetReport>,
        why: String,
    ) -> Result<Report> {
        say(&format!(
            "{}: {} interrupted: lease lost ({why}); stopped without writing more",
            req.env.name,
            plan::short_id(req.to)
        ));
        let rep = self.report(
            req,
            from,
            started,
            Outcome::Failed,
            targets,
            Some(format!("interrupted: lease lost ({why})")),
        );
        self.recorder.write(&self.session.repo, req.to, &rep)?;
        self.written.push(rep.clone());
        Ok(rep)
    }

    /// Hands the records written since the last call to `after`.
    pub fn after_attempts(&mut self) {
        let written = std::mem::take(&mut self.written);
        (self.after)(self.session, &written);
    }

    /// One attempt, the lock held: the stages in order.
    pub fn run_locked(&mut self, req: &Request) -> Result<Option<Report>> {
        let session = self.session;
        let env = &req.env;
        let started = payload::now();
        let clock = Instant::now();
        if let Some(rep) = self.superseded(req, &started)? {
            return Ok(Some(rep));
        }
        // The old commit is the deployed pointer: an environment that never deployed applies
        // the whole tree, whatever the pushed old value says.
        let pointer = session.pointer(&env.name);
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

        // Plan.
        let mut inv = Inventory::load(&session.repo, &env.name)?;
        let plan = match self.plan(req, from, &mut inv) {
            Ok(p) => p,
            Err(e) => {
                say(&format!("{}: {range}: FAILED: {e:#}", env.name));
                return self.failed_early(req, from, &started, e).map(Some);
            }
        };
        // `hookops.target`: the targets left out stay pending, so the pointer stays too (the
        // next push deploys from it, theirs included); with none left out it is a whole deploy.
        let partial;
        let req = if req.only.is_none() && !plan.left_out.is_empty() {
            say(&format!(
                "{}: deploying only {} (hookops.target); pending until a push without it: {}",
                env.name,
                if plan.targets.is_empty() {
                    "what the named targets change (nothing)".to_string()
                } else {
                    names(plan.targets.iter().map(|t| t.target.name.as_str()))
                },
                names(plan.left_out.iter().map(String::as_str))
            ));
            partial = Request {
                move_pointer: false,
                ..req.clone()
            };
            &partial
        } else {
            req
        };
        for w in &plan.warnings {
            say(&format!("{}: warning: {w}", env.name));
        }
        for k in plan.kept.iter().filter(|k| !k.noted) {
            let why = match k.held {
                true => "still in git",
                false => "no longer in git",
            };
            say(&format!(
                "{}: keeping {} ({why}): {}",
                env.name, k.id, k.reason
            ));
        }
        if plan.targets.is_empty() {
            say(&format!(
                "{}: {range}: no deploy targets changed ({} paths)",
                env.name, plan.changed_paths
            ));
            let rep = self.report(req, from, &started, Outcome::Succeeded, Vec::new(), None);
            let rep = Report {
                kept: kept_lines(&plan),
                pending: plan.left_out.clone(),
                ..rep
            };
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

        // Journal entry, and the inventory written ahead: whatever this attempt may send to the
        // server is in the inventory before it is sent, so a kill at any point leaves nothing
        // hookops applied unrecorded.
        let mut attempt = journal::begin(session, req.journal_entry(from, &started))?;
        let ahead = self
            .announce(req, &plan, &started)
            .and_then(|()| self.record_inventory(req, &plan, &mut inv, &[]));
        if let Err(e) = ahead {
            let Some(why) = self.lease_lost() else {
                return Err(e);
            };
            let rep = self.interrupted_by_lease(req, from, &started, Vec::new(), why)?;
            attempt.recorded(None)?;
            attempt.end()?;
            return Ok(Some(rep));
        }

        // Secrets.
        let secrets = match secrets::fetch(session, &mut self.masker, &plan) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("{}: FAILED: {e:#}", env.name));
                let rep = self.failed_early(req, from, &started, e)?;
                attempt.recorded(None)?;
                attempt.end()?;
                return Ok(Some(rep));
            }
        };

        // Apply and health, target by target.
        if req.options.no_wait {
            say(&format!(
                "{}: not waiting for health (hookops.no-wait)",
                env.name
            ));
        }
        let wait = !req.options.no_wait;
        let results = apply::execute(session, &self.masker, env, &plan, &secrets, req.to, wait)?;
        if let Some(why) = self.lease_lost() {
            // What it did delete is forgotten locally (the git copy stays the audit trail);
            // the cluster copy is the next holder's.
            let _ = self.record_inventory(req, &plan, &mut inv, &results);
            let rep = self.interrupted_by_lease(req, from, &started, results, why)?;
            attempt.recorded(None)?;
            attempt.end()?;
            return Ok(Some(rep));
        }
        self.record_inventory(req, &plan, &mut inv, &results)?;

        // Record and pointer.
        let rep = self.outcome(req, from, &started, &plan, results);
        let elapsed = clock.elapsed().as_secs_f64();
        if rep.result == Outcome::Succeeded {
            // The pusher's last line says what runs now: after a rollback, not their commit.
            let to = plan::short_id(req.to);
            let done = match (req.action, from) {
                // The failure policy's rollback of the failed targets (`on_failure`).
                (Action::Rollback, Some(f)) if req.only.is_some() => format!(
                    "rolled back to {to} in {elapsed:.1}s; the deploy of {} FAILED",
                    plan::short_id(f)
                ),
                (Action::Rollback, _) => format!("rolled back to {to} in {elapsed:.1}s"),
                (Action::Drift, _) => format!("re-applied {to} in {elapsed:.1}s"),
                (Action::Deploy, _) if !plan.left_out.is_empty() => format!(
                    "deployed {} of {to} in {elapsed:.1}s; pending: {} (the deployed pointer \
                     stays at {} until they deploy)",
                    names(plan.targets.iter().map(|t| t.target.name.as_str())),
                    names(plan.left_out.iter().map(String::as_str)),
                    pointer.map_or_else(|| "nothing".to_string(), plan::short_id)
                ),
                (Action::Deploy, _) => format!("deployed {to} in {elapsed:.1}s"),
            };
            say(&format!("{}: {done}", env.name));
            self.finish(req, pointer, &rep, Some(&mut attempt))?;
            attempt.end()?;
            return Ok(Some(rep));
        }

        // Or the failure policy.
        self.failed(req, &plan, pointer, rep, attempt, elapsed)
    }

    /// lock = "lease": the attempt's commit and targets go into the Lease's annotations, so a
    /// host that takes it over after this one dies can name what was in flight.
    fn announce(&self, req: &Request, plan: &Plan, started: &str) -> Result<()> {
        let Some((held, _)) = &self.lease else {
            return Ok(());
        };
        let mut flight =
            hosts::in_flight(&req.env.name, req.action, req.to, &req.ref_name, started);
        flight.targets = plan.targets.iter().map(|t| t.target.name.clone()).collect();
        held.set_in_flight(flight)
    }

    /// With `coalesce`, a request whose branch has moved on is skipped (a newer push waits for
    /// the lock) and recorded as such.
    fn superseded(&mut self, req: &Request, started: &str) -> Result<Option<Report>> {
        if !req.coalesce {
            return Ok(None);
        }
        let Some(tip) = self
            .session
            .repo
            .refname_to_id(&req.ref_name)
            .ok()
            .filter(|t| *t != req.to)
        else {
            return Ok(None);
        };
        self.skip(req, started, format!("superseded by {tip}"))
            .map(Some)
    }

    /// A request that is not attempted: said, and recorded as skipped.
    fn skip(&mut self, req: &Request, started: &str, reason: String) -> Result<Report> {
        say(&format!(
            "{}: {} skipped: {reason}",
            req.env.name,
            plan::short_id(req.to)
        ));
        let rep = self.report(
            req,
            None,
            started,
            Outcome::Skipped,
            Vec::new(),
            Some(reason),
        );
        self.recorder.write(&self.session.repo, req.to, &rep)?;
        Ok(rep)
    }

    /// The plan stage; kinds the tree does not define are asked of the cluster's discovery and
    /// the plan is made again, as it is when a chart was rendered without the cluster's
    /// capabilities learnt lately (`.Capabilities` must answer as the cluster does).
    fn plan(&self, req: &Request, from: Option<Oid>, inv: &mut Inventory<'s>) -> Result<Plan> {
        let (session, env) = (self.session, &req.env);
        let only = req.only();
        let only = only.as_ref();
        let planned = planner::plan_with(session, &self.masker, env, (from, req.to), inv, only);
        let unknown = planned.as_ref().is_ok_and(|p| p.unknown_kinds());
        let stale = planned.as_ref().is_ok_and(|p| p.stale_capabilities());
        if !unknown && !stale {
            return planned;
        }
        if stale {
            let learnt = session.kubectl(env, self.masker.clone()).and_then(|k| {
                let dir = session.env_dir(&env.name)?;
                crate::pipeline::declare::chart::learn_capabilities(&k, &dir)
            });
            if let Err(e) = learnt {
                log::info!("{}: learning the cluster's capabilities: {e:#}", env.name);
            }
        }
        if unknown {
            if let Err(e) = planner::learn_kinds(session, &self.masker, env) {
                log::info!("{}: {e:#}", env.name);
            }
        }
        *inv = Inventory::load(&session.repo, &env.name)?;
        planner::plan_with(session, &self.masker, env, (from, req.to), inv, only)
    }

    /// The attempt's record from its targets' results: failed when any target failed.
    fn outcome(
        &self,
        req: &Request,
        from: Option<Oid>,
        started: &str,
        plan: &Plan,
        results: Vec<TargetReport>,
    ) -> Report {
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| r.result == Outcome::Failed)
            .map(|r| r.name.as_str())
            .collect();
        let (result, reason) = match failed.len() {
            0 => (Outcome::Succeeded, None),
            n => (
                Outcome::Failed,
                Some(format!(
                    "{n} of {} targets failed: {}",
                    results.len(),
                    failed.join(", ")
                )),
            ),
        };
        let rep = self.report(req, from, started, result, results, reason);
        Report {
            kept: kept_lines(plan),
            pending: plan.left_out.clone(),
            ..rep
        }
    }

    /// Some targets failed: the failure policy, then the failed attempt's record (before any
    /// rollback starts: whatever happens to the rollback, an attempt with its own record, this
    /// one is on the commit), then the rollback.
    fn failed(
        &mut self,
        req: &Request,
        plan: &Plan,
        pointer: Option<Oid>,
        mut rep: Report,
        mut attempt: journal::Attempt,
        elapsed: f64,
    ) -> Result<Option<Report>> {
        let env = &req.env;
        let failed_names: BTreeSet<String> = rep
            .targets
            .iter()
            .filter(|r| r.result == Outcome::Failed)
            .map(|r| r.name.clone())
            .collect();
        say(&format!(
            "{}: FAILED {} of {} targets in {elapsed:.1}s; {}",
            env.name,
            failed_names.len(),
            rep.targets.len(),
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
                rollback = self.on_failure(req, plan, pointer, &ran, &mut rep)?;
            }
        }
        rep.finished_at = payload::now();
        self.recorder.write(&self.session.repo, req.to, &rep)?;
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
        &mut self,
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
            // Named once, when it leaves git; not by every later deploy.
            for k in plan.kept.iter().filter(|k| !k.forget && !k.noted) {
                inv.note_kept(&k.id)?;
            }
            // A rollback of some targets leaves the others at the newer commit: the base (the
            // tree the declarations describe, mostly) stays that of the deploy it belongs to.
            if req.only.is_none() && plan.left_out.is_empty() {
                inv.set_base(req.to);
            }
        }
        for key in results.iter().flat_map(|r| &r.settled) {
            if let Some(id) = crate::pipeline::inventory::parse_key(key) {
                inv.forget(&id)?;
            }
        }
        inv.save(&format!(
            "hookops: {} {} of {}",
            req.env.name,
            if results.is_empty() { "plan" } else { "result" },
            req.to
        ))?;
        match &mut self.lease {
            Some((_, copy)) => copy.push(&self.session.repo),
            None => Ok(()),
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
        self.recorder.write(&self.session.repo, req.to, &rep)?;
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
                let kubectl = self.session.kubectl(env, self.masker.clone())?;
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
                    options: PushOptions::default(),
                    allowed_by: None,
                };
                rep.rolled_back_to = Some(back.to_string());
                return Ok(Some(rollback));
            }
        }
        Ok(None)
    }

    /// This attempt's record: the request's, masked.
    fn report(
        &self,
        req: &Request,
        from: Option<Oid>,
        started: &str,
        result: Outcome,
        targets: Vec<TargetReport>,
        reason: Option<String>,
    ) -> Report {
        let rep = self.recorder.report(
            &req.env.name,
            req.action,
            result,
            &req.to.to_string(),
            &req.ref_name,
            started,
        );
        Report {
            from: from.map(|f| f.to_string()),
            targets,
            reason: reason.map(|r| self.masker.mask(&r)),
            host: self.session.config.deploy.host.clone().unwrap_or(rep.host),
            message: req.options.message.as_ref().map(|m| self.masker.mask(m)),
            no_wait: req.options.no_wait,
            allowed_by: req.allowed_by.clone(),
            ..rep
        }
    }

    /// Success: record, pointer (compare-and-swap), optional tag.
    fn finish(
        &mut self,
        req: &Request,
        pointer: Option<Oid>,
        rep: &Report,
        attempt: Option<&mut journal::Attempt>,
    ) -> Result<()> {
        self.recorder.write(&self.session.repo, req.to, rep)?;
        self.written.push(rep.clone());
        if let Some(a) = attempt {
            a.recorded(req.move_pointer.then_some((pointer, req.to)))?;
        }
        if req.move_pointer {
            pointer::move_pointer(self.session, &req.env, pointer, req.to)?;
            if req.env.tag_deploys {
                pointer::tag(self.session, &req.env.name, req.to)?;
            }
        }
        Ok(())
    }
}

/// Target names for a line: `a, b, c`, each escaped.
fn names<'a>(list: impl Iterator<Item = &'a str>) -> String {
    list.map(|n| crate::config::printable(n).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn kept_lines(plan: &Plan) -> Vec<String> {
    plan.kept
        .iter()
        .filter(|k| !k.noted)
        .map(|k| format!("{}: {}", k.id, k.reason))
        .collect()
}
