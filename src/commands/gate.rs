//! The pre-receive gate: before refs move, plan what each pushed commit would deploy from the
//! quarantined objects (`Repository::open_from_env` sees them) and reject the push, naming file,
//! line and reason, if the plan fails: invalid TOML or YAML, bad paths, cycles, policy; and
//! any update of hookops' own refs (`refs/notes/hookops`, `refs/hookops/…`). With
//! `[gate] mode = "server"` it also asks the cluster (`kubectl apply --dry-run=server`) and
//! Terraform (`terraform validate`). It writes nothing to git and contacts no cluster in local
//! mode.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use git2::{Oid, Sort};

use crate::backends::mask::Masker;
use crate::backends::process::Command;
use crate::backends::repo::Session;
use crate::backends::terraform::Terraform;
use crate::config::{GateMode, TargetType, TerraformMode};
use crate::pipeline::manifest;
use crate::pipeline::plan::Step;
use crate::pipeline::planner;
use crate::pipeline::refs::RefUpdate;

/// pre-receive: the gate. Runs before refs move, on the quarantined objects of the push.
pub fn pre_receive(repo: Option<&Path>) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let updates = crate::pipeline::refs::read_stdin("pre-receive")?;
    check(&session, &updates)
}

pub fn check(session: &Session, updates: &[RefUpdate]) -> Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    for u in updates {
        // git refuses these itself where `receive.hideRefs` is set (`hookops install`); the
        // gate also covers hosts whose config lacks it.
        if crate::commands::install::is_hookops_ref(&u.name) {
            problems.push(format!(
                "{}: hookops' own ref: records, deployed pointers and inventories are written \
                 by hookops alone, never by a push",
                u.name
            ));
            continue;
        }
        let Some(new) = u.new else { continue };
        let envs = session.environments_for(&u.name);
        if envs.is_empty() {
            continue;
        }
        if session.config.gate.require_signed_commits {
            problems.extend(unsigned_commits(session, u.old, new)?);
        }
        for env in envs {
            // An environment with `paths` that the push cannot concern is not started, so
            // there is nothing of it to check either.
            if !crate::pipeline::environments::deploy_concerns(session, &env, new).unwrap_or(true) {
                continue;
            }
            // What a deploy would do: from the pointer (nothing deployed: the whole tree).
            let from = session.pointer(&env.name);
            let planned = planner::plan(session, &env, from, new).and_then(|p| {
                // Custom resources whose CRD was installed outside git: ask the environment's
                // cluster which kinds it serves, as a deploy does, when it answers.
                if !p.unknown_kinds() {
                    return Ok(p);
                }
                match planner::learn_kinds(session, &Masker::new(), &env) {
                    Ok(()) => planner::plan(session, &env, from, new),
                    Err(e) => {
                        log::info!("{}: asking the cluster for its kinds: {e:#}", env.name);
                        Ok(p)
                    }
                }
            });
            let plan = match planned {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{}: {}", u.name, crate::out::error_line(&e)));
                    continue;
                }
            };
            for tp in &plan.targets {
                if tp.target.kind == TargetType::Terraform
                    && tp.step == Step::Deploy
                    && env.terraform == TerraformMode::Off
                {
                    problems.push(format!(
                        "{}: target {}: Terraform roots are not run here (terraform = \"off\" \
                         for environment {} in the server config)",
                        u.name, tp.target.name, env.name
                    ));
                }
                if let Some(why) = &tp.error {
                    problems.push(format!("{}: target {}: {why}", u.name, tp.target.name));
                }
                if let Some(why) = &tp.refused {
                    problems.push(format!("{}: target {}: {why}", u.name, tp.target.name));
                }
            }
            if session.config.gate.mode != GateMode::Server {
                continue;
            }
            let kubectl = session.kubectl(&env, Masker::new())?;
            for tp in plan
                .targets
                .iter()
                .filter(|t| t.step == Step::Deploy && t.blocked().is_none())
            {
                if tp.target.kind.is_kube() && !tp.apply.is_empty() {
                    let out = kubectl.apply(
                        manifest::to_stream(&tp.apply),
                        tp.target.namespace.as_deref(),
                        Some("server"),
                    )?;
                    if !out.success() {
                        problems.push(format!(
                            "{}: target {}: server dry run: {}",
                            u.name,
                            tp.target.name,
                            out.reason()
                        ));
                    }
                }
                if tp.target.kind == TargetType::Terraform && env.terraform != TerraformMode::Off {
                    if let Err(e) = validate_terraform(session, &env.name, tp, new) {
                        problems.push(format!(
                            "{}: target {}: {}",
                            u.name,
                            tp.target.name,
                            crate::out::error_line(&e)
                        ));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        // Names, paths and tool messages of the pushed tree: cleaned, one line each.
        eprintln!(
            "hookops: push rejected: {}",
            crate::out::one_line(&crate::out::clean(p))
        );
    }
    Ok(ExitCode::FAILURE)
}

fn validate_terraform(
    session: &Session,
    env: &str,
    tp: &crate::pipeline::plan::TargetPlan,
    commit: Oid,
) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("gate-")
        .tempdir_in(session.env_dir(env)?)?;
    let tree = crate::pipeline::declare::targets::commit_tree(&session.repo, commit)?;
    let dir = Terraform::materialise(
        &session.repo,
        &tree,
        &tp.target,
        &tp.closure,
        scratch.path(),
    )?;
    let masker = Masker::new();
    let tf = &session.config.tools.terraform;
    let repo_paths = |s: &str| crate::backends::objects::repository_paths(s, scratch.path());
    let init = Command::new(tf, "terraform")
        .dir(&dir)
        .args(["init", "-backend=false", "-input=false", "-no-color"])
        .args(crate::backends::terraform::lockfile_args(&dir))
        .env("CHECKPOINT_DISABLE", "1")
        .run(&masker)?;
    if !init.success() {
        anyhow::bail!("terraform init: {}", repo_paths(&init.reason()));
    }
    let out = Command::new(tf, "terraform")
        .dir(&dir)
        .args(["validate", "-no-color"])
        .env("CHECKPOINT_DISABLE", "1")
        .run(&masker)?;
    if !out.success() {
        anyhow::bail!(
            "terraform validate: {}",
            repo_paths(
                &crate::backends::process::first_line(&out.stderr).unwrap_or_else(|| out.reason())
            )
        );
    }
    Ok(())
}

/// Commits the push brings in (not reachable from any existing ref) without a signature by an
/// allowed signer.
fn unsigned_commits(session: &Session, old: Option<Oid>, new: Oid) -> Result<Vec<String>> {
    let repo = &session.repo;
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL)?;
    walk.push(new)?;
    if let Some(o) = old {
        walk.hide(o)?;
    }
    for r in repo.references()?.flatten() {
        if let Some(id) = r.target() {
            if repo.find_commit(id).is_ok() {
                walk.hide(id)?;
            }
        }
    }
    let allowed = session.config.gate.allowed_signers.clone().or_else(|| {
        repo.config()
            .ok()?
            .get_path("gpg.ssh.allowedSignersFile")
            .ok()
    });
    let mut problems = Vec::new();
    for id in walk {
        let id = id?;
        let short = &id.to_string()[..10];
        let Ok((sig, data)) = repo.extract_signature(&id, None) else {
            problems.push(format!(
                "commit {short} is not signed (require_signed_commits = true)"
            ));
            continue;
        };
        let sig = sig.as_str().unwrap_or("").to_string();
        let ok = if sig.contains("BEGIN SSH SIGNATURE") {
            match &allowed {
                Some(file) => ssh_signature_ok(file, &sig, &data)?,
                None => false,
            }
        } else {
            gpg_signature_ok(&sig, &data)?
        };
        if !ok {
            problems.push(format!("commit {short} is not signed by an allowed signer"));
        }
    }
    Ok(problems)
}

fn ssh_signature_ok(allowed: &std::path::Path, sig: &str, data: &git2::Buf) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let sig_path = dir.path().join("commit.sig");
    std::fs::write(&sig_path, sig)?;
    let masker = Masker::new();
    let found = Command::new("ssh-keygen", "ssh-keygen")
        .arg("-Y")
        .arg("find-principals")
        .arg("-f")
        .arg(allowed.as_os_str())
        .arg("-s")
        .arg(sig_path.as_os_str())
        .run(&masker)?;
    let Some(principal) = found.stdout.lines().next().filter(|_| found.success()) else {
        return Ok(false);
    };
    let out = Command::new("ssh-keygen", "ssh-keygen")
        .args(["-Y", "verify", "-n", "git", "-I", principal, "-f"])
        .arg(allowed.as_os_str())
        .arg("-s")
        .arg(sig_path.as_os_str())
        .stdin(data.to_vec())
        .run(&masker)?;
    Ok(out.success())
}

fn gpg_signature_ok(sig: &str, data: &git2::Buf) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let sig_path = dir.path().join("commit.asc");
    std::fs::write(&sig_path, sig)?;
    let out = Command::new("gpg", "gpg")
        .args(["--batch", "--status-fd", "1", "--verify"])
        .arg(sig_path.as_os_str())
        .arg("-")
        .stdin(data.to_vec())
        .run(&Masker::new())?;
    Ok(out.success() && out.stdout.contains("[GNUPG:] VALIDSIG"))
}
