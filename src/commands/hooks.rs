//! The entry points that start a deploy: the git hooks (githooks(5)) and their hand-run
//! counterparts. Each turns its input into deploy requests, one per (ref, environment).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use git2::Oid;

use crate::backends::repo::Session;
use crate::cli::RangeArgs;
use crate::commands::{emit, exit, run_jobs, sync_after};
use crate::config::Environment;
use crate::ops::queue;
use crate::out::say;
use crate::pipeline::deploy::{Deployer, Request};
use crate::pipeline::environments;
use crate::pipeline::fanout::Job;
use crate::pipeline::plan::{self, Step};
use crate::pipeline::planner;
use crate::pipeline::refs::{self, RefUpdate};

/// post-receive: after refs are updated, git passes `<old> <new> <ref>` per updated ref. The
/// exit status cannot undo the push; it is shown to the pusher.
pub fn post_receive(repo: Option<&Path>) -> Result<ExitCode> {
    // The session first: it sets libgit2 up (see session.rs) before anything else touches it.
    let session = Session::open(repo)?;
    let updates = refs::read_stdin("post-receive")?;
    if queue::queue_if_async(&session, &updates)? {
        return Ok(ExitCode::SUCCESS);
    }
    let orphans_failed = take_over_orphans(&session);
    let code = deploy_updates(&session, &updates, true)?;
    Ok(if orphans_failed {
        ExitCode::FAILURE
    } else {
        code
    })
}

/// Runs the queue entries whose async worker died, so a lost deploy does not wait for the
/// next push of its branch: every deploying run (a push, the worker, `replay`, `drift`) calls
/// this first. An entry whose branch has moved on is settled the way coalescing settles any
/// push (a `skipped` record, superseded by the tip), one already deployed needs nothing; the
/// others deploy. Whether any of them failed.
pub fn take_over_orphans(session: &Session) -> bool {
    let mut failed = false;
    for orphan in queue::orphaned(session) {
        let name = orphan
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        say(&format!(
            "taking over queued deploy {name} (its worker died)"
        ));
        // One entry that cannot run must not keep the others queued for ever.
        match run_entry(session, &orphan) {
            Ok(ExitCode::SUCCESS) => {}
            Ok(_) => failed = true,
            Err(e) => {
                say(&format!(
                    "queued deploy {name}: {}",
                    crate::out::error_line(&e)
                ));
                failed = true;
            }
        }
    }
    failed
}

/// The detached worker: runs its queued push while holding the entry's lock, then every entry
/// a dead worker left behind, then removes old logs.
pub fn worker(repo: Option<&Path>, entry: &Path) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let mut code = run_entry(&session, entry)?;
    if take_over_orphans(&session) {
        code = ExitCode::FAILURE;
    }
    // The page was last rendered while this worker's entry still counted as queued.
    crate::ops::page::refresh(&session);
    queue::prune_logs(&session);
    Ok(code)
}

fn run_entry(session: &Session, entry: &Path) -> Result<ExitCode> {
    let Some(claimed) = queue::claim(entry)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let code = deploy_updates(session, &claimed.updates, true);
    claimed.done();
    code
}

/// Deploys every (ref, environment) pair, environments in parallel (`fanout.rs`); `coalesce`
/// skips commits a newer push superseded. An environment with `paths` that the change cannot
/// concern is not started.
pub fn deploy_updates(
    session: &Session,
    updates: &[RefUpdate],
    coalesce: bool,
) -> Result<ExitCode> {
    let mut deployer = match Deployer::new(session, crate::ops::after_attempts) {
        Ok(d) => d,
        Err(e) => return refuse_unsigned(session, updates, e),
    };
    let mut jobs = Vec::new();
    for u in updates {
        let envs = session.environments_for(&u.name);
        if envs.is_empty() {
            say(&format!(
                "{}: not mapped to an environment; ignored",
                u.name
            ));
            continue;
        }
        let Some(new) = u.new else {
            for env in &envs {
                say(&format!(
                    "{}: deleted; environment {} left as deployed",
                    u.name, env.name
                ));
            }
            continue;
        };
        report_unplaced(session, &envs, &[(u.old, new)], say);
        for env in envs {
            match environments::deploy_concerns(session, &env, new) {
                Ok(false) => {
                    let why = format!("nothing under {} changed", environments::paths_text(&env));
                    say(&format!(
                        "{}: {}: not started: {why}",
                        env.name,
                        plan::short_id(new)
                    ));
                    jobs.push(Job::NotStarted {
                        env: env.name.clone(),
                        why,
                    });
                    continue;
                }
                Ok(true) => {}
                // The deploy itself reports what is wrong.
                Err(e) => log::info!("{}: {e:#}", env.name),
            }
            let mut req = Request::deploy(env, &u.name, u.old, new);
            req.coalesce = coalesce;
            jobs.push(Job::Deploy(Box::new(req)));
        }
    }
    let failed = run_jobs(session, &mut deployer, jobs);
    Ok(exit(sync_after(session, failed)))
}

/// Reports, once, every target the changes touch that no environment of `envs` deploys (when
/// all of them have `paths`): never silently left out.
fn report_unplaced(
    session: &Session,
    envs: &[Environment],
    ranges: &[(Option<Oid>, Oid)],
    print: fn(&str),
) {
    match environments::unplaced(&session.repo, envs, ranges) {
        Ok(list) => {
            for t in list {
                print(&environments::unplaced_line(&t, envs));
            }
        }
        Err(e) => log::info!("targets under no environment's paths: {e:#}"),
    }
}

/// Without a readable signing key nothing deploys: each mapped update gets an (unsigned) failed
/// record saying why, so the audit log still shows the attempt.
fn refuse_unsigned(session: &Session, updates: &[RefUpdate], e: anyhow::Error) -> Result<ExitCode> {
    let reason = format!("signing key: {}", crate::out::error_line(&e));
    for u in updates {
        let Some(new) = u.new else { continue };
        for env in session.environments_for(&u.name) {
            say(&format!(
                "{}: not deploying {}: {reason}",
                env.name,
                plan::short_id(new)
            ));
            Deployer::record_failure(session, &Request::deploy(env, &u.name, u.old, new), &reason)?;
        }
    }
    Ok(ExitCode::FAILURE)
}

/// post-merge: runs in a clone after `git merge`/`git pull`; deploys ORIG_HEAD..HEAD.
pub fn post_merge(repo: Option<&Path>, squash: Option<&str>) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    if squash == Some("1") {
        say("squash merge: nothing is committed yet; not deploying");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(branch) = session.default_branch() else {
        bail!("post-merge: HEAD is detached; not deploying");
    };
    let head = session.resolve("HEAD")?;
    let orig = session.resolve("ORIG_HEAD").ok();
    let update = RefUpdate {
        old: orig,
        new: Some(head),
        name: branch,
    };
    deploy_updates(&session, &[update], false)
}

/// Resolves `main`, `refs/heads/main` or `heads/main` to a full ref name that exists. With
/// `to` given, a branch that does not exist yet is fine: `plan new --to HEAD` is what pushing
/// HEAD to a new branch would do.
fn full_ref(session: &Session, name: &str, to: Option<&str>) -> Result<String> {
    let candidates = if name.starts_with("refs/") {
        vec![name.to_string()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/{name}")]
    };
    if let Some(found) = candidates
        .iter()
        .find(|c| session.repo.find_reference(c).is_ok())
    {
        return Ok(found.clone());
    }
    if to.is_some() {
        return Ok(candidates[0].clone());
    }
    // HEAD names a branch that has no commit yet: a repository before its first commit.
    if session.repo.head().is_err() && session.default_branch().as_deref() == Some(&candidates[0]) {
        bail!(
            "branch {name:?} has no commits yet: commit the tree, then run this again \
             (or name a commit with --to)"
        );
    }
    let branches: Vec<String> = session
        .repo
        .branches(Some(git2::BranchType::Local))
        .map(|list| {
            list.flatten()
                .filter_map(|(b, _)| b.name().ok().flatten().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    bail!(
        "unknown ref {name:?}: no such branch in {}{}; to see what pushing a commit to it \
         would do, add --to REV (e.g. --to HEAD)",
        session.git_dir.display(),
        if branches.is_empty() {
            " (it has no branches yet)".to_string()
        } else {
            format!(" (branches: {})", branches.join(", "))
        }
    )
}

fn pick_envs(session: &Session, ref_name: &str, only: Option<&str>) -> Result<Vec<Environment>> {
    let envs = session.environments_for(ref_name);
    if envs.is_empty() {
        bail!("{ref_name} is not mapped to an environment");
    }
    match only {
        None => Ok(envs),
        Some(e) => {
            let picked: Vec<Environment> = envs.into_iter().filter(|x| x.name == e).collect();
            if picked.is_empty() {
                bail!("environment {e:?} does not follow {ref_name}");
            }
            Ok(picked)
        }
    }
}

/// `REF [--from REV] [--to REV]` resolved: the full ref name, the old revision if given
/// (`Some(None)` for the null id, which means "nothing deployed", as in hook input), and the
/// new one (default: the ref's tip).
type Range = (String, Option<Option<Oid>>, Oid);

fn resolve_range(session: &Session, range: &RangeArgs) -> Result<Range> {
    let ref_name = full_ref(session, &range.ref_name, range.to.as_deref())?;
    let to = session.resolve(range.to.as_deref().unwrap_or(&ref_name))?;
    let from = match range.from.as_deref() {
        None => None,
        Some(r) if r.len() >= 40 && r.bytes().all(|b| b == b'0') => Some(None),
        Some(r) => Some(Some(session.resolve(r)?)),
    };
    Ok((ref_name, from, to))
}

/// `replay REF [--from REV] [--to REV]`: the push again, by hand.
pub fn replay(repo: Option<&Path>, range: &RangeArgs) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let (ref_name, from, to) = resolve_range(&session, range)?;
    let orphans_failed = take_over_orphans(&session);
    let mut deployer = Deployer::new(&session, crate::ops::after_attempts)?;
    let mut jobs = Vec::new();
    for env in pick_envs(&session, &ref_name, range.env.as_deref())? {
        let mut req = Request::deploy(env, &ref_name, None, to);
        req.from = from;
        jobs.push(Job::Deploy(Box::new(req)));
    }
    let failed = run_jobs(&session, &mut deployer, jobs) || orphans_failed;
    Ok(exit(sync_after(&session, failed)))
}

/// `plan REF`: what a replay would do, without contacting a cluster or writing records or
/// pointers (it may keep the reference index, a cache, under `refs/hookops/references`).
pub fn plan(
    repo: Option<&Path>,
    range: &RangeArgs,
    json: bool,
    server_config: Option<&Path>,
) -> Result<ExitCode> {
    let mut session = Session::open(repo)?;
    // Said once for the whole plan, not per environment; on stderr beside JSON.
    let print: fn(&str) = if json {
        |w| eprintln!("hookops: warning: {w}")
    } else {
        |w| {
            let _ = emit(&format!("warning: {w}"));
        }
    };
    let note: fn(&str) = if json {
        |w| eprintln!("hookops: {w}")
    } else {
        |w| {
            let _ = emit(w);
        }
    };
    match server_config {
        Some(file) => {
            session.use_config_file(file)?;
            note(&format!("environments from {}", file.display()));
        }
        None if !session.config_path().exists() => note(&format!(
            "no server config in {}: the defaults apply (the branch HEAD names deploys as \
             environment \"default\"); plan with the server's environments: --server-config FILE",
            session.git_dir.display()
        )),
        None => {}
    }
    let (ref_name, from_arg, to) = resolve_range(&session, range)?;
    let mut all = Vec::new();
    let mut broken = false;
    let picked = pick_envs(&session, &ref_name, range.env.as_deref())?;
    let mut ranges = Vec::new();
    // A clone does not hold the server's deployed pointers (unless records are synced to it):
    // whether anything is deployed is unknown here, not "nothing".
    let unknown_pointer = !session.repo.is_bare();
    for env in &picked {
        let from = match from_arg {
            Some(f) => f,
            None => session.pointer(&env.name),
        };
        ranges.push((from, to));
        let p = planner::plan(&session, env, from, to)?;
        broken |= p.targets.iter().any(|t| t.error.is_some());
        if json {
            all.push(plan::to_json(&p, &env.name));
            continue;
        }
        print_plan(&env.name, &p, unknown_pointer && from_arg.is_none())?;
    }
    report_unplaced(
        &session,
        &session.environments_for(&ref_name),
        &ranges,
        print,
    );
    for (server, names) in environments::shared_servers(&session.environments()) {
        if picked.iter().any(|e| names.contains(&e.name)) {
            print(&environments::shared_server_line(&server, &names));
        }
    }
    if json {
        let value = if all.len() == 1 {
            all.remove(0)
        } else {
            serde_json::Value::Array(all)
        };
        emit(&value.to_string())?;
    }
    Ok(if broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_plan(env: &str, p: &plan::Plan, pointer_unknown: bool) -> std::io::Result<()> {
    let range = match p.from {
        Some(f) => format!("{}..{}", plan::short_id(f), plan::short_id(p.to)),
        None if pointer_unknown => format!(
            "{} (the whole tree: what the server deployed is not known in this clone; \
             --from REV plans from a commit)",
            plan::short_id(p.to)
        ),
        None => format!(
            "{} (first deploy: nothing deployed yet)",
            plan::short_id(p.to)
        ),
    };
    emit(&format!(
        "{env}: {range}: {} changed paths, {} targets",
        p.changed_paths,
        p.targets.len()
    ))?;
    for tp in &p.targets {
        let step = match tp.step {
            Step::Deploy => "deploy",
            Step::Remove => "remove",
        };
        emit(&format!(
            "  {step} {} ({}, {})",
            crate::config::printable(&tp.target.name),
            tp.target.kind,
            if tp.target.path.is_empty() {
                ".".into()
            } else {
                crate::config::printable(&tp.target.path)
            }
        ))?;
        if let Some(why) = &tp.error {
            emit(&format!("    ERROR: {why}"))?;
        }
        if let Some(why) = &tp.refused {
            emit(&format!("    REFUSED: {why}"))?;
        }
        for used in &tp.uses {
            emit(&format!("    uses {used}"))?;
        }
        if let Some(chart) = &tp.chart {
            println!("    {}", crate::out::clean(&chart.describe()));
        }
        for o in &tp.apply {
            let what = crate::pipeline::annotations::controls(o)
                .map(|c| c.describe())
                .unwrap_or_default();
            if what.is_empty() {
                emit(&format!("    apply {} ({})", o.id, o.source))?;
            } else {
                emit(&format!("    apply {} ({}): {what}", o.id, o.source))?;
            }
        }
        for o in &tp.hooks {
            let what = crate::pipeline::annotations::controls(o)
                .map(|c| c.describe())
                .unwrap_or_default();
            emit(&format!("    run {} ({}): {what}", o.id, o.source))?;
        }
        for s in &tp.target.secret {
            emit(&format!(
                "    apply {} (from vault)",
                plan::secret_id(&tp.target, s)
            ))?;
        }
        for (id, _) in &tp.prune {
            emit(&format!("    prune {id}"))?;
        }
    }
    for k in &p.kept {
        emit(&format!(
            "  keep {} (target {}): {}",
            k.id, k.target, k.reason
        ))?;
    }
    for w in &p.warnings {
        emit(&format!("  warning: {w}"))?;
    }
    Ok(())
}
