//! `hookops drift`: does the cluster (and Terraform state) still match the deployed commit?
//! Exit status as `git diff --exit-code`: 0 in sync, 1 drifted, 2 could not check.
//! `kubectl diff` of every object the commit defines and `terraform plan -detailed-exitcode` of
//! every root; a `drift` record goes on the deployed commit. `--repair` re-applies everything
//! the commit defines (a full deploy of the pointer that does not move it).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::backends::repo::Session;
use crate::backends::terraform::{self, Terraform};
use crate::config::{Environment, TargetType, TerraformMode};
use crate::out::say;
use crate::pipeline::deploy::{Deployer, Request};
use crate::pipeline::manifest;
use crate::pipeline::plan::Step;
use crate::pipeline::planner;
use crate::record::payload::{self, Action, Outcome, Report, TargetReport};

/// `drift [--env E] [--repair]`.
pub fn run(repo: Option<&Path>, env: Option<&str>, repair: bool) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let envs: Vec<Environment> = match env {
        Some(e) => vec![session.environment(e)?],
        None => session.environments(),
    };
    // An error before any comparison (config, lock, plan) is "could not check" too.
    let code = match check(&session, &envs, repair) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookops: error: {}", crate::out::error_line(&e));
            ExitCode::from(2)
        }
    };
    // Drift records are shared like deploy records; a failed sync fails the command.
    if crate::commands::sync_after(&session, false) {
        return Ok(ExitCode::from(2));
    }
    Ok(code)
}

/// Compares (and with `repair` re-applies) each of `envs`, each under its lock.
pub fn check(session: &Session, envs: &[Environment], repair: bool) -> Result<ExitCode> {
    let mut deployer = Deployer::new(session, crate::ops::after_attempts)?;
    let mut any_drift = false;
    let mut failed = false;
    for env in envs {
        let Some(pointer) = session.pointer(&env.name) else {
            say(&format!("{}: never deployed; nothing to compare", env.name));
            continue;
        };
        let _lock = crate::pipeline::environments::lock(session, env)?;
        let started = payload::now();
        let plan = planner::plan(session, env, None, pointer)?;
        for k in &plan.kept {
            say(&format!(
                "{}: kept (no longer in git, not pruned): {}: {}",
                env.name, k.id, k.reason
            ));
        }
        let kubectl = session.kubectl(env, deployer.masker.clone())?;
        let env_dir = session.env_dir(&env.name)?;
        let tree = crate::pipeline::declare::targets::commit_tree(&session.repo, pointer)?;
        let mut targets = Vec::new();
        // `terraform = "off"`: no terraform runs here, not even a plan (it runs providers).
        let runs = |tp: &&crate::pipeline::plan::TargetPlan| {
            tp.target.kind != TargetType::Terraform || env.terraform != TerraformMode::Off
        };
        for tp in plan
            .targets
            .iter()
            .filter(|t| t.step == Step::Deploy)
            .filter(runs)
        {
            let clock = Instant::now();
            let t = &tp.target;
            let mut r = TargetReport {
                drifted: Some(0),
                ..TargetReport::new(&t.name, t.kind)
            };
            let checked: Result<usize> = if t.kind == TargetType::Terraform {
                let dir = terraform::work_dir(&env_dir, t);
                Terraform::materialise(&session.repo, &tree, t, &tp.closure, &dir).and_then(
                    |root| {
                        let tf = Terraform::new(&session.config, &deployer.masker, Vec::new());
                        tf.drifted(&root, &mut |_| {}).map(usize::from)
                    },
                )
            } else if tp.apply.is_empty() {
                Ok(0)
            } else {
                kubectl
                    .diff(manifest::to_stream(&tp.apply), t.namespace.as_deref())
                    .and_then(|out| match out.code {
                        Some(0) => Ok(0),
                        Some(1) => Ok(out
                            .stdout
                            .lines()
                            .filter(|l| l.starts_with("diff "))
                            .count()
                            .max(1)),
                        _ => anyhow::bail!("kubectl diff: {}", out.reason()),
                    })
            };
            match checked {
                Ok(n) => {
                    r.drifted = Some(n);
                    if n > 0 {
                        r.result = Outcome::Failed;
                        r.reason = Some(format!("{n} drifted"));
                    }
                }
                Err(e) => {
                    r.result = Outcome::Failed;
                    r.reason = Some(crate::out::error_line(&e));
                    failed = true;
                }
            }
            r.duration_ms = clock.elapsed().as_millis() as u64;
            let state = match (r.result, r.drifted) {
                (Outcome::Succeeded, _) => "in sync".to_string(),
                (_, Some(n)) if n > 0 => format!("DRIFTED ({n})"),
                _ => format!("ERROR: {}", r.reason.clone().unwrap_or_default()),
            };
            say(&format!(
                "{}: {:<20} {:<9} {state}",
                env.name,
                crate::config::printable(&t.name),
                t.kind
            ));
            targets.push(r);
        }
        let drifted = targets.iter().any(|t| t.drifted.unwrap_or(0) > 0);
        any_drift |= drifted;
        let result = if targets.iter().all(|t| t.result == Outcome::Succeeded) {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        let rep = deployer.recorder.report(
            &env.name,
            Action::Drift,
            result,
            &pointer.to_string(),
            &env.ref_name(),
            &started,
        );
        let rep = Report {
            targets,
            reason: drifted.then(|| "drift detected".to_string()),
            ..rep
        };
        deployer.recorder.write(&session.repo, pointer, &rep)?;
        deployer.written.push(rep);
        if drifted && repair {
            say(&format!(
                "{}: repairing: re-applying {}",
                env.name,
                crate::pipeline::plan::short_id(pointer)
            ));
            let mut req = Request::deploy(env.clone(), &env.ref_name(), None, pointer);
            req.from = Some(None);
            req.action = Action::Drift;
            req.move_pointer = false;
            match deployer.run_locked(&req) {
                Ok(Some(r)) if r.result == Outcome::Succeeded => any_drift = false,
                Ok(_) => failed = true,
                Err(e) => {
                    say(&format!("{}: repair failed: {e:#}", env.name));
                    failed = true;
                }
            }
        }
    }
    // The drift records' and repairs' page, metrics and alerts, after the locks.
    deployer.after_attempts();
    // Like `git diff --exit-code`: 0 in sync, 1 drifted, 2 when something could not be checked.
    Ok(if failed {
        ExitCode::from(2)
    } else if any_drift {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
