//! The apply stage of one Terraform root: `terraform apply` (or `destroy` for a removed root when
//! `allow_destroy` is set) in the work directory the scheduler wrote it to, with the Vault
//! values it names in its environment; counts what changed. The environment's `terraform`
//! setting may allow only a plan (`plan-only`: its summary is the target's reason) or nothing
//! (`off`: a changed root fails, naming the setting).

use std::path::PathBuf;

use crate::backends::mask::Masker;
use crate::backends::terraform::Terraform;
use crate::config::{Environment, TerraformMode};
use crate::out::say;
use crate::pipeline::plan::{Step, TargetPlan};
use crate::pipeline::secrets::Secrets;
use crate::record::payload::{Outcome, TargetReport};

pub fn run(
    env: &Environment,
    config: &crate::config::ServerConfig,
    masker: &Masker,
    tp: &TargetPlan,
    secrets: &Secrets,
    tf_dir: Option<Result<PathBuf, String>>,
    r: &mut TargetReport,
) -> std::result::Result<(), String> {
    let t = &tp.target;
    let setting = format!(
        "terraform = \"{}\" for environment {} in the server config",
        env.terraform, env.name
    );
    if env.terraform != TerraformMode::Apply && tp.step == Step::Remove {
        r.result = Outcome::Skipped;
        r.reason = Some(format!("removed Terraform root not destroyed: {setting}"));
        return Ok(());
    }
    if env.terraform == TerraformMode::Off {
        return Err(format!(
            "Terraform roots are not run here ({setting}); nothing was run"
        ));
    }
    if tp.step == Step::Remove && !env.allow_destroy {
        r.result = Outcome::Skipped;
        r.reason = Some("removed Terraform root not destroyed: allow_destroy = false".into());
        return Ok(());
    }
    let Some(dir) = tf_dir else {
        return Err("nothing to run (no deployed revision of this root)".into());
    };
    let root = dir?;
    // The whole output beside the root's work directory; the pusher gets summaries.
    // `<name>.log`, not with_extension: a target name may hold dots.
    let mut log = work_root(&root, t).into_os_string();
    log.push(".log");
    let log = PathBuf::from(log);
    let tf = Terraform::new(
        config,
        masker,
        secrets.env.get(&t.name).cloned().unwrap_or_default(),
    )
    .with_log(log.clone());
    let prefix = format!("{}: {}", env.name, crate::config::printable(&t.name));
    let mut line = |l: &str| say(&format!("{prefix}: {l}"));
    // Named from the repository (`<GIT_DIR>/hookops/work/…`) on failure: the pusher sees no
    // server paths.
    let shown = log.to_string_lossy();
    let shown = shown
        .find("/hookops/work/")
        .map_or(shown.as_ref(), |at| &shown[at + 1..]);
    let repo_paths = |e: anyhow::Error| {
        format!(
            "{} (whole output: <GIT_DIR>/{shown})",
            crate::backends::objects::repository_paths(&format!("{e:#}"), &work_root(&root, t))
        )
    };
    if env.terraform == TerraformMode::PlanOnly {
        let summary = tf
            .plan_summary(&root, &mut line)
            .map_err(repo_paths)?
            .unwrap_or_else(|| "No changes.".into());
        r.reason = Some(format!("planned, not applied ({setting}): {summary}"));
        return Ok(());
    }
    let counts = match tp.step {
        Step::Deploy => tf.deploy(&root, &mut line),
        Step::Remove => tf.destroy(&root, &mut line),
    }
    .map_err(repo_paths)?;
    r.applied = counts.changed;
    r.pruned = counts.destroyed;
    Ok(())
}

/// The work directory a root runs in is `<work root>/<its repository path>`.
fn work_root(dir: &std::path::Path, t: &crate::config::Target) -> PathBuf {
    let depth = t.path.split('/').filter(|p| !p.is_empty()).count();
    dir.ancestors().nth(depth).unwrap_or(dir).to_path_buf()
}
