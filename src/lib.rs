//! hookops: GitOps from a git hook. `main` parses the command line and dispatches; each stage of
//! the pipeline (refs → environment → diff → targets → plan → apply → health → record) lives in
//! the module named after it, and `deploy` runs them top to bottom.

pub mod annotations;
pub mod apply;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod diff;
pub mod doctor;
pub mod drift;
pub mod environments;
pub mod fanout;
pub mod gate;
pub mod health;
pub mod hooks;
pub mod identity;
pub mod install;
pub mod inventory;
pub mod journal;
pub mod kube;
pub mod manifest;
pub mod mask;
pub mod notes;
pub mod ops;
pub mod out;
pub mod page;
pub mod plan;
pub mod record;
pub mod references;
pub mod refs;
pub mod remote;
pub mod report;
pub mod session;
pub mod targets;
pub mod terraform;
pub mod tools;
pub mod tree;
pub mod vault;
pub mod verify;
pub mod watch;
pub mod webhook;

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
            eprintln!("hookops: error: {}", one_line(&format!("{e:#}")));
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

/// Errors are printed on one line, whatever the layers below wrote.
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let repo = cli.repo.as_deref();
    match cli.command {
        Command::Install(args) => install::run(repo, &args),
        Command::PostReceive => {
            page::detach_refreshes();
            hooks::post_receive(repo)
        }
        Command::PostMerge { squash } => {
            page::detach_refreshes();
            hooks::post_merge(repo, squash.as_deref())
        }
        Command::PreReceive => hooks::pre_receive(repo),
        Command::Replay(range) => hooks::replay(repo, &range),
        Command::Plan { range, json } => hooks::plan(repo, &range, json),
        Command::History {
            env,
            json,
            allowed_signers,
        } => verify::history(repo, env.as_deref(), json, allowed_signers.as_deref()),
        Command::Status { json, html } => match html {
            Some(file) => page::status_html(repo, file.as_deref()),
            None => verify::status(repo, json),
        },
        Command::Rollback { env, to } => hooks::rollback(repo, &env, to.as_deref()),
        Command::Verify {
            rev,
            allowed_signers,
        } => verify::verify(repo, &rev, &allowed_signers),
        Command::Drift { env, repair } => hooks::drift(repo, env.as_deref(), repair),
        Command::Doctor => doctor::run(repo),
        Command::Watch(args) => watch::run(repo, &args),
        Command::Worker { entry } => ops::worker(repo, &entry),
    }
}
