//! hookops: GitOps from a git hook. `main` parses the command line and dispatches to a command
//! (`commands/`); the deploy pipeline (refs → environments → diff → targets → plan → secrets →
//! apply → health → record → pointer) is `pipeline/`, one stage a file, run top to bottom by
//! `pipeline/deploy.rs`. Layers only look down: commands → ops → pipeline → backends → record →
//! config (docs/architecture.md; the `layers` test below keeps it so).

pub mod backends;
pub mod cli;
pub mod commands;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod gitref;
pub mod ops;
pub mod out;
pub mod pipeline;
pub mod record;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

pub use crate::cli::VERSION_LINE;

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
        .format(|buf, record| {
            // Log lines quote tools, servers and pushed names: cleaned like all output.
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                out::clean(&record.args().to_string())
            )
        })
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
        Command::Plan {
            range,
            json,
            server_config,
        } => commands::hooks::plan(repo, &range, json, server_config.as_deref()),
        Command::History {
            env,
            json,
            allowed_signers,
        } => commands::audit::history(repo, env.as_deref(), json, allowed_signers.as_deref()),
        Command::Status { json, html } => match html {
            Some(file) => ops::page::status_html(repo, file.as_deref()),
            None => commands::audit::status(repo, json),
        },
        Command::Rollback { env, to } => {
            commands::rollback::run(repo, env.as_deref(), to.as_deref())
        }
        Command::Verify {
            rev,
            allowed_signers,
            json,
        } => commands::audit::verify(repo, &rev, allowed_signers.as_deref(), json),
        Command::Drift { env, repair, json } => {
            commands::drift::run(repo, env.as_deref(), repair, json)
        }
        Command::Objects { env, json } => commands::audit::objects(repo, env.as_deref(), json),
        Command::Doctor { json } => commands::doctor::run(repo, json),
        Command::Watch(args) => commands::watch::run(repo, &args),
        Command::Worker { entry } => commands::hooks::worker(repo, &entry),
    }
}

/// The layers only look down (docs/architecture.md): commands → ops → pipeline → backends →
/// record → config and out. A file that imports from a layer above its own fails this test.
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// Each layer, top first, with the folders (or files) under `src/` that make it.
    const LAYERS: &[(&str, &[&str])] = &[
        ("commands", &["commands"]),
        ("ops", &["ops"]),
        ("pipeline", &["pipeline"]),
        ("backends", &["backends"]),
        ("record", &["record"]),
        (
            "config",
            &["config", "config.rs", "gitref.rs", "out.rs", "cli.rs"],
        ),
    ];

    fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for e in std::fs::read_dir(path).expect("reading src").flatten() {
                sources(&e.path(), out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path.to_path_buf());
        }
    }

    #[test]
    fn no_layer_imports_from_a_layer_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (i, (name, places)) in LAYERS.iter().enumerate() {
            let mut files = Vec::new();
            for p in *places {
                sources(&src.join(p), &mut files);
            }
            assert!(!files.is_empty(), "layer {name}: no files");
            for file in files {
                let text = std::fs::read_to_string(&file).expect("reading a source file");
                for (above, _) in &LAYERS[..i] {
                    for (n, line) in text.lines().enumerate() {
                        if line.contains(&format!("crate::{above}::")) {
                            wrong.push(format!(
                                "{}:{}: {name} uses {above}: {}",
                                file.display(),
                                n + 1,
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
