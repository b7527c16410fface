//! hookops: GitOps from a git hook. `main` parses the command line and dispatches; each stage of
//! the pipeline (refs → environment → diff → targets → plan → apply → health → record) lives in
//! the module named after it, and `deploy` runs them top to bottom.

pub mod backends;
pub mod cli;
pub mod commands;
pub mod config;
pub mod ops;
pub mod out;
pub mod pipeline;
pub mod record;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

pub const VERSION_LINE: &str = env!("CARGO_PKG_VERSION");

/// `hookops --version`: the version, the commit it was built from and the libgit2 in use.
pub fn version_long() -> String {
    let (major, minor, patch) = git2::Version::get().libgit2_version();
    let commit = option_env!("HOOKOPS_GIT_COMMIT").unwrap_or("unknown");
    format!("{VERSION_LINE} (commit {commit}, libgit2 {major}.{minor}.{patch})")
}

pub fn main() -> ExitCode {
    let version: &'static str = Box::leak(version_long().into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let _ = std::io::stdout().flush();
            eprintln!("hookops: error: {}", out::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let repo = cli.repo.as_deref();
    match cli.command {
        Command::Install(args) => commands::install::run(repo, &args),
        Command::PostReceive => {
            ops::page::detach_refreshes();
            commands::hooks::post_receive(repo)
        }
        Command::PostMerge { squash } => {
            ops::page::detach_refreshes();
            commands::hooks::post_merge(repo, squash.as_deref())
        }
        Command::PreReceive => commands::gate::pre_receive(repo),
        Command::Replay(range) => commands::hooks::replay(repo, &range),
        Command::Plan { range, json } => commands::hooks::plan(repo, &range, json),
        Command::History {
            env,
            json,
            allowed_signers,
        } => commands::audit::history(repo, env.as_deref(), json, allowed_signers.as_deref()),
        Command::Status { json, html } => match html {
            Some(file) => ops::page::status_html(repo, file.as_deref()),
            None => commands::audit::status(repo, json),
        },
        Command::Rollback { env, to } => commands::rollback::run(repo, &env, to.as_deref()),
        Command::Verify {
            rev,
            allowed_signers,
        } => commands::audit::verify(repo, &rev, &allowed_signers),
        Command::Drift { env, repair } => commands::drift::run(repo, env.as_deref(), repair),
        Command::Doctor => commands::doctor::run(repo),
        Command::Watch(args) => commands::watch::run(repo, &args),
        Command::Worker { entry } => commands::hooks::worker(repo, &entry),
    }
}
