//! `hookops rollback [--env E] [--to REV]`: a full deploy of an earlier commit (by default the
//! previous successful one, from the records) that moves the pointer back. `--env` may be left
//! out when only one environment is configured.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::backends::repo::Session;
use crate::commands::{exit, run_jobs, sync_after};
use crate::pipeline::deploy::{Deployer, Request};
use crate::pipeline::fanout::Job;
use crate::record::payload::Action;

/// `rollback [--env E] [--to REV]`: a full deploy of an earlier commit that moves the pointer.
pub fn run(repo: Option<&Path>, env_name: Option<&str>, to: Option<&str>) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let env = match env_name {
        Some(name) => session.environment(name)?,
        None => {
            let mut all = session.environments();
            if all.len() != 1 {
                let names: Vec<String> = all.into_iter().map(|e| e.name).collect();
                bail!(
                    "several environments are configured ({}): say which with --env",
                    names.join(", ")
                );
            }
            all.remove(0)
        }
    };
    let env_name = env.name.as_str();
    let Some(pointer) = session.pointer(&env.name) else {
        bail!("environment {env_name} has never deployed; nothing to roll back");
    };
    let target = match to {
        Some(rev) => session.resolve(rev)?,
        None => crate::record::history::previous_good(&session.repo, &env.name, pointer)?
            .with_context(|| {
                format!("no earlier successful deploy of {env_name} to roll back to")
            })?,
    };
    let mut deployer = Deployer::new(&session, crate::ops::after_attempts)?;
    let mut req = Request::deploy(env.clone(), &env.ref_name(), None, target);
    req.from = Some(Some(pointer));
    req.action = Action::Rollback;
    let failed = run_jobs(&session, &mut deployer, vec![Job::Deploy(Box::new(req))]);
    Ok(exit(sync_after(&session, failed)))
}
