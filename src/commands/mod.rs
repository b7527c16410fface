//! One file per command family: what each `hookops` subcommand does, built from the pipeline
//! below it. Nothing under `pipeline/`, `ops/`, `record/` or `backends/` imports from here.

pub mod audit;
pub mod doctor;
pub mod drift;
pub mod gate;
pub mod hooks;
pub mod install;
pub mod rollback;
pub mod watch;
pub mod webhook;

use std::process::ExitCode;

use crate::backends::repo::Session;
use crate::out::say;
use crate::pipeline::deploy::Deployer;
use crate::pipeline::fanout::{self, Job};

// What every command that deploys does with its jobs: run them, sum them up, share the records.

/// Runs the jobs, with the closing summary when several environments were involved; whether
/// any failed.
pub(crate) fn run_jobs(session: &Session, deployer: &mut Deployer, jobs: Vec<Job>) -> bool {
    let done = fanout::run(session, deployer, jobs);
    if done.len() > 1 {
        fanout::print_summary(&done);
    }
    done.iter().any(|d| !d.ok)
}

/// `[sync] push`: shares the records and pointers a command just wrote (every command that
/// deploys or records: hooks, `replay`, `rollback`, `drift`). Records are already written
/// locally; a sync failure is reported and makes the exit status non-zero, but undoes nothing.
/// Returns whether anything failed.
pub(crate) fn sync_after(session: &Session, failed: bool) -> bool {
    // `[sync] peers`: the other hosts' records, so `history` here shows theirs too.
    if !session.config.sync.peers.is_empty() {
        if let Err(e) = crate::backends::remote::fetch_peers(session) {
            say(&format!("sync: {}", crate::out::error_line(&e)));
        }
    }
    if !session.config.sync.push {
        return failed;
    }
    match crate::backends::remote::sync(session) {
        Ok(()) => failed,
        Err(e) => {
            say(&format!("sync: {}", crate::out::error_line(&e)));
            true
        }
    }
}

/// Prints one line on stdout, returning the error of a closed pipe (`history | head`) instead of
/// panicking the way `println!` does: main ends quietly on it, like `git log | head`.
pub(crate) fn emit(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
}

/// The exit status of a command that deploys.
pub(crate) fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
