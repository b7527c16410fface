//! `hookops drift`: does the cluster (and Terraform state) still match the deployed commit?
//! Exit status as `git diff --exit-code`: 0 in sync, 1 drifted, 2 could not check.
//! Every object the commit defines against the live one (`pipeline::livediff`: the drifted
//! objects named, each with a unified diff) and `terraform plan -detailed-exitcode` of every
//! root; a `drift` record goes on the deployed commit. `--repair` re-applies everything the
//! commit defines (a full deploy of the pointer that does not move it).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::backends::repo::Session;
use crate::backends::terraform::{self, Terraform};
use crate::commands::emit;
use crate::config::{Environment, TargetType, TerraformMode};
use crate::out::say;
use crate::pipeline::deploy::{Deployer, Request};
use crate::pipeline::livediff::{self, Declared, ObjectDiff};
use crate::pipeline::plan::Step;
use crate::pipeline::planner;
use crate::record::payload::{self, Action, Outcome, Report, TargetReport};

/// `drift [--env E] [--repair] [--json]`.
pub fn run(repo: Option<&Path>, env: Option<&str>, repair: bool, json: bool) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let envs: Vec<Environment> = match env {
        Some(e) => vec![session.environment(e)?],
        None => session.environments(),
    };
    // The drift timer is a deploying run too: a push whose async worker died is not left
    // waiting for the next push. (Not under --json: its lines would break the document.)
    let orphans_failed = !json && crate::commands::hooks::take_over_orphans(&session);
    let mut report = Vec::new();
    // An error before any comparison (config, lock, plan) is "could not check" too.
    let code = match check(&session, &envs, repair, json.then_some(&mut report)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookops: error: {}", crate::out::error_line(&e));
            ExitCode::from(2)
        }
    };
    if json {
        emit(&serde_json::Value::Array(report).to_string())?;
    }
    // Drift records are shared like deploy records; a failed sync fails the command, and so
    // does a lost deploy that could not be taken over.
    if crate::commands::sync_after(&session, orphans_failed) {
        return Ok(ExitCode::from(2));
    }
    Ok(code)
}

/// Compares (and with `repair` re-applies) each of `envs`, each under its lock. With `json`,
/// nothing is printed: each target's state goes there instead.
pub fn check(
    session: &Session,
    envs: &[Environment],
    repair: bool,
    mut json: Option<&mut Vec<serde_json::Value>>,
) -> Result<ExitCode> {
    let print = json.is_none();
    let say = |line: &str| {
        if print {
            say(line)
        }
    };
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
            let why = match k.held {
                true => "still in git, in a failing target",
                false => "no longer in git, not pruned",
            };
            say(&format!(
                "{}: kept ({why}): {}: {}",
                env.name, k.id, k.reason
            ));
        }
        let kubectl = session.kubectl(env, deployer.masker.clone())?;
        let env_dir = session.env_dir(&env.name)?;
        let tree = crate::pipeline::declare::targets::commit_tree(&session.repo, pointer)?;
        // `terraform = "off"`: no terraform runs here, not even a plan (it runs providers).
        let runs = |tp: &&crate::pipeline::plan::TargetPlan| {
            tp.target.kind != TargetType::Terraform || env.terraform != TerraformMode::Off
        };
        let deployed: Vec<_> = plan
            .targets
            .iter()
            .filter(|t| t.step == Step::Deploy)
            .filter(runs)
            .collect();
        // Every Kubernetes target at once: as few kubectl calls as their namespaces allow.
        let kube: Vec<Declared> = deployed
            .iter()
            .filter(|tp| tp.target.kind != TargetType::Terraform)
            .map(|tp| Declared {
                target: &tp.target.name,
                namespace: tp.target.namespace.as_deref(),
                objects: &tp.apply,
                prune: &tp.prune,
            })
            .collect();
        let mut diffs = livediff::diff(&kubectl, &kube).into_iter();
        let width =
            crate::out::column_width(deployed.iter().map(|t| t.target.name.as_str())).max(20);
        let mut targets = Vec::new();
        for tp in deployed {
            let clock = Instant::now();
            let t = &tp.target;
            let mut r = TargetReport {
                drifted: Some(0),
                ..TargetReport::new(&t.name, t.kind)
            };
            let mut objects: Vec<ObjectDiff> = Vec::new();
            let checked: Result<usize> = if t.kind == TargetType::Terraform {
                let dir = terraform::work_dir(&env_dir, t);
                Terraform::materialise(&session.repo, &tree, t, &tp.closure, &dir).and_then(
                    |root| {
                        let tf = Terraform::new(&session.config, &deployer.masker, Vec::new());
                        tf.drifted(&root, &mut |_| {}).map(usize::from)
                    },
                )
            } else {
                diffs.next().unwrap_or_else(|| Ok(Vec::new())).map(|found| {
                    objects = found
                        .into_iter()
                        .filter(|o| o.change != livediff::Change::Unchanged)
                        .collect();
                    objects.len()
                })
            };
            match checked {
                Ok(n) => {
                    r.drifted = Some(n);
                    if n > 0 {
                        r.result = Outcome::Failed;
                        r.reason = Some(if objects.is_empty() {
                            format!("{n} drifted")
                        } else {
                            format!("{n} drifted: {}", names(&objects))
                        });
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
            if let Some(out) = json.as_deref_mut() {
                out.push(serde_json::json!({
                    "env": env.name,
                    "target": t.name,
                    "type": t.kind.to_string(),
                    "state": match (r.result, r.drifted) {
                        (Outcome::Succeeded, _) => "in_sync",
                        (_, Some(n)) if n > 0 => "drifted",
                        _ => "error",
                    },
                    "reason": r.reason,
                    "drifted": r.drifted,
                    "objects": objects.iter().map(ObjectDiff::to_json).collect::<Vec<_>>(),
                }));
            } else {
                say(&format!(
                    "{}: {:<width$} {:<9} {state}",
                    env.name,
                    crate::config::printable(&t.name),
                    t.kind
                ));
                for o in &objects {
                    say(&format!(
                        "{}:   {} {}{}",
                        env.name,
                        o.change.as_str(),
                        o.id,
                        o.source
                            .as_deref()
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default()
                    ));
                    for line in o.diff.lines() {
                        emit(line)?;
                    }
                }
            }
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

/// The drifted objects, for the record's reason: the first few, then how many more.
fn names(objects: &[ObjectDiff]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<String> = objects
        .iter()
        .take(SHOWN)
        .map(|o| format!("{} {}", o.change.as_str(), o.id))
        .collect();
    if objects.len() > SHOWN {
        s.push(format!("and {} more", objects.len() - SHOWN));
    }
    s.join(", ")
}
