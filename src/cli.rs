//! The command line (clap derive). Kept free of logic so that the build can generate man pages
//! and shell completions from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The package version (`--version` replaces it with the long version at run time).
pub const VERSION_LINE: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Parser)]
#[command(
    name = "hookops",
    version = VERSION_LINE,
    about = "GitOps from a git hook: deploy exactly what a push changed and sign a record of it",
    long_about = None,
)]
pub struct Cli {
    /// The repository (default: $GIT_DIR, else the repository around the current directory)
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the hook shims (bare: post-receive; clone: post-merge)
    Install(InstallArgs),
    /// Hook: read `<old> <new> <ref>` lines on stdin and deploy
    PostReceive,
    /// Hook: deploy ORIG_HEAD..HEAD in a clone
    PostMerge {
        /// Set by git for squash merges
        squash: Option<String>,
    },
    /// Hook: validate what would deploy and reject the push, naming file and reason
    PreReceive,
    /// Replay a push by hand
    Replay(RangeArgs),
    /// The dry run: targets and objects, no cluster contact
    Plan {
        #[command(flatten)]
        range: RangeArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// The server's config.toml, to plan with its environments from a clone (a clone has
        /// none of its own: without it the defaults apply, and plan says so)
        #[arg(long, value_name = "FILE")]
        server_config: Option<PathBuf>,
    },
    /// Deploy records, newest first
    History {
        /// Only this environment
        #[arg(long)]
        env: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// allowed_signers file to check each record against
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
    },
    /// Per environment: deployed commit, pending commits, last result
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Write the HTML status page to FILE (atomically), or to stdout
        #[arg(long, value_name = "FILE", num_args = 0..=1, conflicts_with = "json")]
        html: Option<Option<PathBuf>>,
    },
    /// Re-deploy an earlier commit (default: the previous good deploy)
    Rollback {
        /// The environment (may be left out when only one is configured)
        #[arg(long)]
        env: Option<String>,
        /// The revision to roll back to (a commit, tag or deploy tag)
        #[arg(long, value_name = "REV")]
        to: Option<String>,
    },
    /// Check every record on a commit; non-zero if any is bad
    Verify {
        /// The commit whose records to check
        rev: String,
        /// ssh-keygen allowed_signers file (default: [signing] allowed_signers)
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Compare the cluster and Terraform state with the deployed commit
    Drift {
        /// Only this environment
        #[arg(long)]
        env: Option<String>,
        /// Re-apply what drifted
        #[arg(long)]
        repair: bool,
        /// Print JSON (the targets, drifted objects and their diffs)
        #[arg(long, conflicts_with = "repair")]
        json: bool,
    },
    /// The objects an environment manages: kind, namespace, name, target and file
    Objects {
        /// Only this environment
        #[arg(long)]
        env: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check tools, clusters, Vault, keys and hooks; non-zero on any problem
    Doctor {
        /// Print JSON (one object per check: state, check, detail, fix)
        #[arg(long)]
        json: bool,
    },
    /// Poll a remote into the --repo mirror and deploy
    Watch(WatchArgs),
    /// Run a queued asynchronous deploy (started by the hook in async mode)
    #[command(hide = true)]
    Worker {
        /// Queue entry to run
        entry: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The repository to install into (default: --repo or the current one)
    pub dir: Option<PathBuf>,
    /// Also install the pre-receive gate
    #[arg(long)]
    pub pre_receive: bool,
    /// Install post-receive into this hooks directory instead of a repository's (GitLab: a
    /// repository's custom_hooks, or the server-wide custom_hooks_dir holding post-receive.d/)
    #[arg(long, value_name = "DIR", conflicts_with = "dir")]
    pub hooks_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RangeArgs {
    /// The branch (or ref) whose environment to deploy
    #[arg(value_name = "REF")]
    pub ref_name: String,
    /// Old revision (default: the environment's deployed pointer)
    #[arg(long, value_name = "REV")]
    pub from: Option<String>,
    /// New revision (default: REF's tip)
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// The environment, when REF maps to several
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The remote to follow (ssh://, https://, file://)
    #[arg(long)]
    pub remote: String,
    /// Branches to follow (default: those of the configured environments, else the remote's HEAD)
    #[arg(long)]
    pub branch: Vec<String>,
    /// Poll interval (e.g. 30s, 5m)
    #[arg(long, default_value = "30s")]
    pub interval: String,
    /// Fetch and deploy once, then exit
    #[arg(long)]
    pub once: bool,
    /// Serve push webhooks on this address (e.g. 127.0.0.1:9000)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// File holding the webhook shared secret
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
}
