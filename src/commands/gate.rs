//! The pre-receive gate: before refs move, plan what each pushed commit would deploy from the
//! quarantined objects (`Repository::open_from_env` sees them) and reject the push, naming file,
//! line and reason, if the plan fails: invalid TOML or YAML, bad paths, cycles, policy; and
//! any update of hookops' own refs (`refs/notes/hookops`, `refs/hookops/…`). It writes nothing
//! to git and contacts no cluster in local mode.
//!
//! With `[gate] mode = "server"` it also shows the pusher what the push would change, computed
//! against the live cluster (`pipeline::livediff`: a server-side dry run of the changed
//! objects compared with the live ones; Terraform's plan summary), within `[gate]
//! time_budget`, and refuses what the environment's policies forbid (`pipeline::policies`,
//! decided from the whole plan and comparison, never from the printed part of it). Push options
//! (`pipeline::options`) are checked here, where a refusal still stops the push:
//! `hookops.dry-run` prints the diff and refuses, `hookops.allow-prune` overrides the policies
//! on a push signed by one of the environment's push signers. `hookops diff` (operator side)
//! shows the same preview.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use git2::{Oid, Sort};

use crate::backends::mask::Masker;
use crate::backends::process::{Command, Deadline, KILLED_AT_DEADLINE};
use crate::backends::repo::Session;
use crate::backends::terraform::{self, Terraform};
use crate::config::{Environment, GateMode, TargetType, TerraformMode};
use crate::out::say;
use crate::pipeline::inventory::Inventory;
use crate::pipeline::livediff::{self, Caps, Change, Declared, ObjectDiff, Printer, Section};
use crate::pipeline::options::{self, PushOptions, Signed};
use crate::pipeline::plan::{self, Plan, Step, TargetPlan};
use crate::pipeline::planner;
use crate::pipeline::policies;
use crate::pipeline::refs::RefUpdate;
use crate::pipeline::secrets::{self, Secrets};

/// pre-receive: the gate. Runs before refs move, on the quarantined objects of the push.
pub fn pre_receive(repo: Option<&Path>) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let updates = crate::pipeline::refs::read_stdin("pre-receive")?;
    let (options, errors) = PushOptions::from_env();
    check(&session, &updates, &options, errors)
}

/// The caps of the printed diff, from `[gate]`.
pub fn caps(session: &Session) -> Caps {
    let g = &session.config.gate;
    Caps {
        rows: g.table_rows,
        object_lines: g.diff_lines_per_object,
        lines: g.diff_lines,
    }
}

/// Checks every ref update of the push; `problems` holds what is wrong already (the push
/// options). Prints the preview of each environment the push deploys (mode "server", or with
/// `hookops.dry-run`), then each problem, and refuses the push when there is any.
pub fn check(
    session: &Session,
    updates: &[RefUpdate],
    options: &PushOptions,
    mut problems: Vec<String>,
) -> Result<ExitCode> {
    let server = session.config.gate.mode == GateMode::Server;
    let deadline = Instant::now() + Duration::from_secs(session.config.gate.time_budget);
    let mut printer = Printer::new(caps(session));
    let only: Option<BTreeSet<String>> =
        (!options.targets.is_empty()).then(|| options.targets.iter().cloned().collect());
    // Target names of `hookops.target` that some environment of the push changes.
    let mut matched: BTreeSet<String> = BTreeSet::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut deploys = false;
    // The previews shown, for the status page once the push is accepted.
    let mut shown_previews: Vec<(String, Oid, Vec<String>)> = Vec::new();
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
        let mut mine: Vec<String> = Vec::new();
        if session.config.gate.require_signed_commits {
            mine.extend(unsigned_commits(session, u.old, new)?);
        }
        for env in envs {
            // An environment with `paths` that the push cannot concern is not started, so
            // there is nothing of it to check either.
            if !crate::pipeline::environments::deploy_concerns(session, &env, new).unwrap_or(true) {
                continue;
            }
            deploys = true;
            // What a deploy would do: from the pointer (nothing deployed: the whole tree).
            let from = session.pointer(&env.name);
            let plan = match plan_for(session, &env, from, new, only.as_ref()) {
                Ok(p) => p,
                Err(e) => {
                    mine.push(format!("{}: {}", u.name, crate::out::error_line(&e)));
                    continue;
                }
            };
            changed.extend(plan.targets.iter().map(|t| t.target.name.clone()));
            changed.extend(plan.left_out.iter().cloned());
            if let Some(only) = &only {
                matched.extend(
                    plan.targets
                        .iter()
                        .map(|t| t.target.name.clone())
                        .filter(|n| only.contains(n)),
                );
            }
            mine.extend(plan_problems(&u.name, &env, &plan));
            // The cluster (and Terraform, and Vault) are asked only for a ref nothing refuses
            // already: a pusher whose commits are refused runs nothing on the server.
            let ask = server && mine.is_empty() && problems.is_empty();
            let shown = server || options.dry_run;
            let preview = preview(session, &env, plan, ask, Some(deadline))?;
            if shown {
                let budget = session.config.gate.time_budget;
                let lines = preview_lines(&env, &u.name, &preview, &mut printer, ask, budget);
                for line in &lines {
                    say(line);
                }
                if ask {
                    shown_previews.push((env.name.clone(), new, lines));
                }
            }
            if ask {
                mine.extend(compare_problems(&u.name, &preview));
            }
            let refusals = policies::refusals(&env, &preview.plan, &preview.compared());
            if !refusals.is_empty() {
                mine.extend(overridden(session, &env, &u.name, options, refusals)?);
            }
        }
        problems.extend(mine);
    }
    if let Some(only) = &only {
        let unknown: Vec<&String> = only.iter().filter(|n| !matched.contains(*n)).collect();
        if deploys && !unknown.is_empty() {
            problems.push(format!(
                "push option hookops.target: {} changed by this push ({})",
                unknown
                    .iter()
                    .map(|n| format!("no target {}", crate::out::clean_line(n)))
                    .collect::<Vec<_>>()
                    .join(", "),
                if changed.is_empty() {
                    "it changes no target".to_string()
                } else {
                    format!(
                        "it changes {}",
                        changed
                            .iter()
                            .map(|n| crate::out::clean_line(n).into_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
        }
    }
    for p in &problems {
        // Names, paths and tool messages of the pushed tree: cleaned, one line each.
        eprintln!(
            "hookops: push rejected: {}",
            crate::out::one_line(&crate::out::clean(p))
        );
    }
    if options.dry_run {
        say("dry run (hookops.dry-run): nothing was pushed");
        return Ok(ExitCode::FAILURE);
    }
    if !problems.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    for (env, commit, lines) in shown_previews {
        if let Err(e) = crate::ops::pending::save(session, &env, commit, "the gate", &lines) {
            log::info!("{env}: keeping the diff for the status page: {e:#}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan a deploy of `to` would make from `from`, asking the environment's cluster which
/// kinds it serves (as a deploy does) for custom resources whose CRD is not in git.
pub(crate) fn plan_for(
    session: &Session,
    env: &Environment,
    from: Option<Oid>,
    to: Oid,
    only: Option<&BTreeSet<String>>,
) -> Result<Plan> {
    let once = || {
        let mut inv = Inventory::load(&session.repo, &env.name)?;
        planner::plan_with(session, &Masker::new(), env, (from, to), &mut inv, only)
    };
    let p = once()?;
    if !p.unknown_kinds() {
        return Ok(p);
    }
    match planner::learn_kinds(session, &Masker::new(), env) {
        Ok(()) => once(),
        Err(e) => {
            log::info!("{}: asking the cluster for its kinds: {e:#}", env.name);
            Ok(p)
        }
    }
}

/// What the plan alone refuses: broken or refused targets, Terraform where it is off.
fn plan_problems(ref_name: &str, env: &Environment, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for tp in &plan.targets {
        if tp.target.kind == TargetType::Terraform
            && tp.step == Step::Deploy
            && env.terraform == TerraformMode::Off
        {
            out.push(format!(
                "{ref_name}: target {}: Terraform roots are not run here (terraform = \"off\" \
                 for environment {} in the server config)",
                tp.target.name, env.name
            ));
        }
        if let Some(why) = &tp.error {
            out.push(format!("{ref_name}: target {}: {why}", tp.target.name));
        }
        if let Some(why) = &tp.refused {
            out.push(format!("{ref_name}: target {}: {why}", tp.target.name));
        }
    }
    out
}

/// What the cluster and Terraform refused in the preview: the server's dry run of a target's
/// objects, a root's plan.
fn compare_problems(ref_name: &str, p: &Preview) -> Vec<String> {
    let mut out = Vec::new();
    for (i, tp) in p.plan.targets.iter().enumerate() {
        if tp.blocked().is_some() {
            continue;
        }
        if let Err(why) = &p.objects[i] {
            out.push(format!(
                "{ref_name}: target {}: server dry run: {why}",
                tp.target.name
            ));
        }
        if let Some(Err(why)) = &p.terraform[i] {
            out.push(format!("{ref_name}: target {}: {why}", tp.target.name));
        }
    }
    out
}

/// The policies' refusals, unless `hookops.allow-prune` overrides them on a push signed by one
/// of the environment's push signers; the lines that still refuse.
fn overridden(
    session: &Session,
    env: &Environment,
    ref_name: &str,
    options: &PushOptions,
    refusals: Vec<String>,
) -> Result<Vec<String>> {
    let how = format!(
        "override: git push --signed -o hookops.allow-prune, by a key among environment {}'s \
         push signers",
        env.name
    );
    if !options.allow_prune {
        return Ok(refusals
            .into_iter()
            .map(|r| format!("{ref_name}: {}: {r} ({how})", env.name))
            .collect());
    }
    match options::signer(session, env)? {
        Signed::By(principal) => {
            for r in &refusals {
                say(&format!(
                    "{}: allowed by {} (hookops.allow-prune on a signed push): {r}",
                    env.name,
                    crate::out::clean_line(&principal)
                ));
            }
            Ok(Vec::new())
        }
        Signed::No(why) => Ok(refusals
            .into_iter()
            .map(|r| {
                format!(
                    "{ref_name}: {}: {r} (hookops.allow-prune does not count: {why}; {how})",
                    env.name
                )
            })
            .collect()),
    }
}

/// What a push of `plan.to` would change in one environment.
pub(crate) struct Preview {
    pub plan: Plan,
    /// Per target of the plan: its objects' changes, or why they were not compared.
    pub objects: Vec<std::result::Result<Vec<ObjectDiff>, String>>,
    /// Per target of the plan: a Terraform root's plan summary, or its failure.
    pub terraform: Vec<Option<std::result::Result<String, String>>>,
    /// The time budget ran out before everything was compared.
    pub out_of_time: bool,
}

impl Preview {
    /// Per target: its comparison, for the policies.
    pub fn compared(&self) -> Vec<policies::Compared<'_>> {
        self.objects.iter().map(|o| o.as_deref().ok()).collect()
    }

    /// Objects compared and not, for the budget's line.
    fn not_compared(&self) -> usize {
        self.objects
            .iter()
            .flatten()
            .flatten()
            .filter(|o| !o.compared)
            .count()
    }

    /// Whether anything would change (for `hookops diff`'s exit status).
    pub fn changes(&self) -> bool {
        let objects = self
            .objects
            .iter()
            .flatten()
            .flatten()
            .any(|o| o.change != Change::Unchanged);
        let roots = self
            .terraform
            .iter()
            .flatten()
            .any(|t| t.as_ref().map_or(true, |s| s != NO_CHANGES));
        objects || roots
    }
}

const NO_CHANGES: &str = "No changes.";

/// Compares `plan` with the live cluster (`ask`), or lists what it would apply and prune
/// without asking anything; `deadline`: when to stop comparing.
pub(crate) fn preview(
    session: &Session,
    env: &Environment,
    plan: Plan,
    ask: bool,
    deadline: Option<Instant>,
) -> Result<Preview> {
    let mut masker = Masker::new();
    // Vault values the targets name, for generated Secrets and Terraform variables: masked
    // like in a deploy; a failure leaves those targets uncompared, it refuses nothing here.
    let (vault, vault_error) = if ask {
        match secrets::fetch(session, &mut masker, &plan) {
            Ok(s) => (s, None),
            Err(e) => (Secrets::default(), Some(crate::out::error_line(&e))),
        }
    } else {
        (Secrets::default(), None)
    };
    let uses_vault =
        |tp: &TargetPlan| !tp.target.secrets.is_empty() || !tp.target.secret.is_empty();
    // Each Kubernetes target's objects, generated Secrets included.
    let kube: Vec<usize> = (0..plan.targets.len())
        .filter(|&i| plan.targets[i].target.kind.is_kube() && plan.targets[i].blocked().is_none())
        .filter(|&i| !(vault_error.is_some() && uses_vault(&plan.targets[i])))
        .collect();
    let owned: Vec<Vec<crate::pipeline::manifest::Object>> = kube
        .iter()
        .map(|&i| {
            secrets::kube_objects(&plan.targets[i], &vault)
                .into_iter()
                .cloned()
                .collect()
        })
        .collect();
    let declared: Vec<Declared> = kube
        .iter()
        .zip(&owned)
        .map(|(&i, objects)| Declared {
            target: &plan.targets[i].target.name,
            namespace: plan.targets[i].target.namespace.as_deref(),
            objects,
            prune: &plan.targets[i].prune,
        })
        .collect();
    let (found, out_of_time) = if ask {
        let kubectl = session.kubectl(env, masker.clone())?;
        let (found, late) = livediff::diff_until(&kubectl, &declared, deadline);
        let found: Vec<std::result::Result<Vec<ObjectDiff>, String>> = found
            .into_iter()
            .map(|r| r.map_err(|e| crate::out::error_line(&e)))
            .collect();
        (found, late)
    } else {
        (
            livediff::uncompared(&declared)
                .into_iter()
                .map(Ok)
                .collect(),
            false,
        )
    };
    let mut objects: Vec<std::result::Result<Vec<ObjectDiff>, String>> = plan
        .targets
        .iter()
        .map(|tp| match (tp.blocked(), &vault_error) {
            (Some(why), _) => Err(why),
            (None, Some(e)) if uses_vault(tp) => Err(format!("Vault: {e}")),
            _ => Ok(Vec::new()),
        })
        .collect();
    for (&i, r) in kube.iter().zip(found) {
        objects[i] = r.map(|found| create_only_kept(&plan.targets[i], found));
    }
    let mut out_of_time = out_of_time;
    let mut terraform_lines = Vec::new();
    for tp in &plan.targets {
        terraform_lines.push(
            if tp.target.kind != TargetType::Terraform || tp.blocked().is_some() {
                None
            } else {
                Some(root_summary(
                    session,
                    env,
                    tp,
                    plan.to,
                    ask,
                    &vault,
                    &masker,
                    deadline,
                    &mut out_of_time,
                ))
            },
        );
    }
    Ok(Preview {
        plan,
        objects,
        terraform: terraform_lines,
        out_of_time,
    })
}

/// An object annotated `hookops.io/apply: create-only` that exists is left as it is by the
/// deploy (docs/annotations.md), whatever the server's dry run of it says.
fn create_only_kept(tp: &TargetPlan, mut found: Vec<ObjectDiff>) -> Vec<ObjectDiff> {
    for d in &mut found {
        let create_only = tp.apply.iter().any(|o| {
            o.id == d.id
                && crate::pipeline::annotations::controls(o)
                    .is_ok_and(|c| c.apply == crate::pipeline::annotations::ApplyMode::CreateOnly)
        });
        if create_only && d.change == Change::Update {
            d.change = Change::Unchanged;
            d.diff.clear();
        }
    }
    found
}

/// What a Terraform root of the plan would do.
#[allow(clippy::too_many_arguments)]
fn root_summary(
    session: &Session,
    env: &Environment,
    tp: &TargetPlan,
    commit: Oid,
    ask: bool,
    vault: &Secrets,
    masker: &Masker,
    deadline: Option<Instant>,
    out_of_time: &mut bool,
) -> std::result::Result<String, String> {
    match (tp.step, env.terraform) {
        (_, TerraformMode::Off) => Ok("not run here (terraform = \"off\")".into()),
        (Step::Remove, TerraformMode::Apply) if env.allow_destroy => {
            Ok("removed from git: the deploy destroys it (allow_destroy = true)".into())
        }
        (Step::Remove, _) => Ok("removed from git: not destroyed".into()),
        (Step::Deploy, _) if !ask => {
            Ok("not planned ([gate] mode = \"local\" runs no terraform)".into())
        }
        (Step::Deploy, _) if deadline.is_some_and(|d| Instant::now() >= d) => {
            *out_of_time = true;
            Ok("not planned: the time budget ran out".into())
        }
        (Step::Deploy, _) => {
            let vars = vault.env.get(&tp.target.name).cloned().unwrap_or_default();
            match terraform_plan(session, env, tp, commit, &vars, masker, deadline) {
                Ok(Some(s)) => Ok(s),
                Ok(None) => {
                    *out_of_time = true;
                    Ok("not planned: the time budget ran out".into())
                }
                Err(e) => Err(crate::out::error_line(&e)),
            }
        }
    }
}

/// `terraform init` and `plan -lock=false` of the root as `commit` has it, in a scratch copy
/// beside its work directory (with a copy of its local state, so the plan is against what is
/// deployed; the deploy's own work directory is never touched): the plan's summary line, or
/// None when the deadline stopped it.
fn terraform_plan(
    session: &Session,
    env: &Environment,
    tp: &TargetPlan,
    commit: Oid,
    vars: &[(String, String)],
    masker: &Masker,
    deadline: Option<Instant>,
) -> Result<Option<String>> {
    let env_dir = session.env_dir(&env.name)?;
    let scratch = tempfile::Builder::new()
        .prefix("gate-")
        .tempdir_in(&env_dir)?;
    let tree = crate::pipeline::declare::targets::commit_tree(&session.repo, commit)?;
    let dir = Terraform::materialise(
        &session.repo,
        &tree,
        &tp.target,
        &tp.closure,
        scratch.path(),
    )?;
    let state = terraform::work_dir(&env_dir, &tp.target)
        .join(&tp.target.path)
        .join("terraform.tfstate");
    if state.is_file() {
        std::fs::copy(&state, dir.join("terraform.tfstate"))
            .with_context(|| format!("copying {}", state.display()))?;
    }
    let tf = &session.config.tools.terraform;
    let repo_paths = |s: &str| crate::backends::objects::repository_paths(s, scratch.path());
    let limit: Option<Deadline> = deadline.map(|d| Arc::new(move || Some(d)) as Deadline);
    let command = |args: &[&str]| {
        let mut c = Command::new(tf, "terraform")
            .dir(&dir)
            .args(args)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1");
        for (k, v) in vars {
            c = c.env(k, v);
        }
        match &limit {
            Some(l) => c.deadline(l.clone()),
            None => c,
        }
    };
    let killed = |o: &crate::backends::process::Output| {
        o.code.is_none() && o.stderr.ends_with(KILLED_AT_DEADLINE)
    };
    let mut init_args = vec!["init", "-input=false", "-no-color"];
    init_args.extend(terraform::lockfile_args(&dir));
    let init = command(&init_args).run(masker)?;
    if killed(&init) {
        return Ok(None);
    }
    if !init.success() {
        anyhow::bail!(
            "terraform init: {}",
            repo_paths(&terraform::error_line(&init))
        );
    }
    let plan = command(&[
        "plan",
        "-input=false",
        "-no-color",
        "-detailed-exitcode",
        "-lock=false",
    ])
    .run(masker)?;
    if killed(&plan) {
        return Ok(None);
    }
    match plan.code {
        Some(0) => Ok(Some(NO_CHANGES.to_string())),
        Some(2) => Ok(Some(terraform::plan_line(&plan.stdout))),
        _ => anyhow::bail!(
            "terraform plan: {}",
            repo_paths(&terraform::error_line(&plan))
        ),
    }
}

/// The preview's lines for the pusher: a header, the change table and the diffs (within the
/// push's caps), and what the budget left out.
pub(crate) fn preview_lines(
    env: &Environment,
    ref_name: &str,
    p: &Preview,
    printer: &mut Printer,
    asked: bool,
    budget_secs: u64,
) -> Vec<String> {
    let range = match p.plan.from {
        Some(f) => format!("{}..{}", plan::short_id(f), plan::short_id(p.plan.to)),
        None => format!("{} (nothing deployed yet)", plan::short_id(p.plan.to)),
    };
    let branch = ref_name.strip_prefix("refs/heads/").unwrap_or(ref_name);
    let what = if asked {
        "what it changes in the cluster (live diff)"
    } else {
        "what it applies and prunes (not compared with the cluster: [gate] mode = \"local\")"
    };
    let mut out = vec![format!(
        "{}: {} {range}: {what}:",
        env.name,
        crate::out::clean_line(branch)
    )];
    if p.plan.targets.is_empty() {
        out.push("  no deploy target changes".into());
    }
    let sections: Vec<Section> = p
        .plan
        .targets
        .iter()
        .zip(&p.objects)
        .zip(&p.terraform)
        .map(|((tp, objects), tf)| Section {
            target: &tp.target.name,
            objects: objects.as_deref().map_err(Clone::clone),
            summary: tf
                .clone()
                .map(|r| r.unwrap_or_else(|e| format!("ERROR: {e}"))),
        })
        .collect();
    out.extend(
        printer
            .render(&sections)
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    if !p.plan.left_out.is_empty() {
        out.push(format!(
            "  not deployed by this push (hookops.target), pending: {}",
            p.plan
                .left_out
                .iter()
                .map(|n| crate::out::clean_line(n).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if p.out_of_time {
        out.push(format!(
            "  stopped comparing at the time budget ({} s, [gate] time_budget): {} object{} \
             not compared (op \"apply\", prunes without a diff); the policies counted what \
             was not compared as changed",
            budget_secs,
            p.not_compared(),
            if p.not_compared() == 1 { "" } else { "s" }
        ));
    }
    out
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
