//! What the man pages say beyond `--help` (build.rs appends it to clap_mangen's pages): each
//! command's exit statuses, the files and environment variables hookops reads, and examples.
//! Compiled by the build script only; kept here, as data, so a command's page is one entry.

/// One command's page additions.
struct Page {
    /// (status, meaning), in order.
    exit: &'static [(&'static str, &'static str)],
    /// (what it shows, the command line).
    examples: &'static [(&'static str, &'static str)],
    /// A paragraph after the exit statuses, when the statuses need one.
    note: &'static str,
}

const USAGE: (&str, &str) = (
    "2",
    "The command line is wrong (unknown option, missing argument).",
);

fn page(command: &str) -> Page {
    match command {
        "install" => Page {
            exit: &[
                ("0", "The hooks are installed (or were already)."),
                ("1", "The path is not a git repository, or a hook could not be written."),
                USAGE,
            ],
            examples: &[
                ("A server repository, from nothing:", "git init \\-\\-bare /srv/git/infra.git\nhookops install /srv/git/infra.git \\-\\-pre\\-receive\n$EDITOR /srv/git/infra.git/hookops/config.toml"),
            ],
            note: "install also writes a commented hookops/config.toml to start from, unless one exists.",
        },
        "post-receive" => Page {
            exit: &[
                ("0", "Every deploy the push started succeeded (or the push deployed nothing)."),
                ("1", "A deploy failed, or its records could not be shared."),
            ],
            examples: &[("Run by git; by hand, replay the last push instead:", "hookops replay main")],
            note: "git ignores the exit status of post\\-receive: the push has already succeeded and \\fBgit push\\fR exits 0 whatever the deploy did. To refuse a push, install the gate (\\fBhookops install \\-\\-pre\\-receive\\fR).",
        },
        "post-merge" => Page {
            exit: &[
                ("0", "The deploy succeeded, or there was nothing to deploy."),
                ("1", "The deploy failed."),
            ],
            examples: &[("Run by git after git pull in a clone:", "git pull")],
            note: "git ignores the exit status of post\\-merge: the merge stays.",
        },
        "pre-receive" => Page {
            exit: &[
                ("0", "The push is accepted."),
                ("1", "The push is refused; each reason names its file, line or ref."),
            ],
            examples: &[("Install the gate:", "hookops install /srv/git/infra.git \\-\\-pre\\-receive")],
            note: "",
        },
        "replay" => Page {
            exit: &[
                ("0", "Every environment deployed."),
                ("1", "A deploy failed, or the ref, revision or environment is unknown."),
                USAGE,
            ],
            examples: &[
                ("Deploy the tip of main again:", "hookops replay main"),
                ("Adopt a cluster that already runs commit abc1234:", "hookops replay main \\-\\-from abc1234"),
            ],
            note: "",
        },
        "plan" => Page {
            exit: &[
                ("0", "The plan was made and every target in it is valid."),
                ("1", "A target would fail (a broken file, a refused reference), or the ref is unknown."),
                USAGE,
            ],
            examples: &[
                ("What pushing main would do:", "hookops plan main"),
                ("In a clone, with the server's config copied beside you:", "hookops plan main \\-\\-server\\-config server\\-config.toml"),
                ("As JSON:", "hookops plan main \\-\\-json"),
            ],
            note: "",
        },
        "history" => Page {
            exit: &[
                ("0", "The records were printed (none is not an error)."),
                ("1", "The environment is unknown, or the repository cannot be read."),
                USAGE,
            ],
            examples: &[
                ("The last attempts on prod:", "hookops history \\-\\-env prod | head"),
                ("Failed attempts, with jq:", "hookops history \\-\\-json | jq '.[] | select(.result != \"succeeded\")'"),
            ],
            note: "",
        },
        "status" => Page {
            exit: &[
                ("0", "The status was printed."),
                ("1", "The repository or its config cannot be read."),
                USAGE,
            ],
            examples: &[
                ("Every environment:", "hookops status"),
                ("The status page:", "hookops status \\-\\-html /var/www/hookops.html"),
            ],
            note: "",
        },
        "rollback" => Page {
            exit: &[
                ("0", "The earlier commit is deployed again."),
                ("1", "The rollback failed, or there is nothing to roll back to."),
                USAGE,
            ],
            examples: &[
                ("The previous good deploy (one environment configured):", "hookops rollback"),
                ("A given commit of prod:", "hookops rollback \\-\\-env prod \\-\\-to deploy/prod/20260102T030405Z"),
            ],
            note: "",
        },
        "verify" => Page {
            exit: &[
                ("0", "Every record on the commit has a good signature."),
                ("1", "A record did not verify, the commit has no records, or no allowed_signers file is given or configured."),
                USAGE,
            ],
            examples: &[
                ("With [signing] allowed_signers configured:", "hookops verify main"),
                ("With another file:", "hookops verify main \\-\\-allowed\\-signers ./allowed_signers"),
            ],
            note: "",
        },
        "drift" => Page {
            exit: &[
                ("0", "The cluster and Terraform state match the deployed commit (or \\-\\-repair put them back)."),
                ("1", "Something drifted: each drifted object is named, with a unified diff of live against declared."),
                ("2", "Something could not be checked (an unreachable cluster, a failing kubectl or terraform, records that could not be shared), or the command line is wrong."),
            ],
            examples: &[
                ("Check every environment, as a timer would:", "hookops drift; echo $?"),
                ("Put prod back:", "hookops drift \\-\\-env prod \\-\\-repair"),
            ],
            note: "As \\fBgit diff \\-\\-exit\\-code\\fR: 0 same, 1 different, 2 trouble.",
        },
        "doctor" => Page {
            exit: &[
                ("0", "Every check passed."),
                ("1", "A check failed; each failing line says what to do."),
                USAGE,
            ],
            examples: &[("Before the first push:", "hookops \\-\\-repo /srv/git/infra.git doctor")],
            note: "",
        },
        "watch" => Page {
            exit: &[
                ("0", "With \\-\\-once: fetched and deployed. Without: stopped by a signal."),
                ("1", "With \\-\\-once: the fetch or a deploy failed; or the remote or mirror is unusable."),
                USAGE,
            ],
            examples: &[("Follow a remote you do not host:", "hookops \\-\\-repo /srv/mirror.git watch \\-\\-remote https://git.example/infra.git")],
            note: "",
        },
        "objects" => Page {
            exit: &[
                ("0", "The objects were listed (none is not an error)."),
                ("1", "The environment is unknown, or the inventory cannot be read."),
                USAGE,
            ],
            examples: &[
                ("What prod manages:", "hookops objects \\-\\-env prod"),
                ("Every Deployment, with jq:", "hookops objects \\-\\-json | jq '.[] | select(.kind == \"Deployment\")'"),
            ],
            note: "",
        },
        _ => Page {
            exit: &[
                ("0", "Success."),
                ("1", "Failure: one line on stderr says why (\\fBhookops: error: \\fR...)."),
                ("2", "A wrong command line; for \\fBdrift\\fR, also \"could not check\"."),
            ],
            examples: &[
                ("Install on a server repository:", "hookops install /srv/git/infra.git"),
                ("What a push of main would do:", "hookops plan main"),
                ("Did the cluster drift?", "hookops drift"),
            ],
            note: "",
        },
    }
}

/// The top page's overview: every command's statuses in one table.
const OVERVIEW: &str = ".PP
Each command's page has its own list. In short, non\\-zero means:
.TP
\\fBinstall\\fR
not a repository, or a hook cannot be written
.TP
\\fBpost\\-receive\\fR, \\fBpost\\-merge\\fR
a deploy failed (git ignores it: the push stands)
.TP
\\fBpre\\-receive\\fR
the push is refused
.TP
\\fBreplay\\fR, \\fBrollback\\fR
a deploy failed; an unknown ref, revision or environment
.TP
\\fBplan\\fR
a target would fail; an unknown ref
.TP
\\fBhistory\\fR, \\fBstatus\\fR, \\fBobjects\\fR
an unknown environment; an unreadable repository
.TP
\\fBverify\\fR
a record did not verify; no records
.TP
\\fBdrift\\fR
1 drifted, 2 could not check
.TP
\\fBdoctor\\fR
a check failed
.TP
\\fBwatch \\-\\-once\\fR
the fetch or a deploy failed
";

const FILES: &str = ".TP
\\fIhookops.toml\\fR
At the root of the deployed tree: its targets (optional; without it targets are discovered).
.TP
\\fI<GIT_DIR>/hookops/config.toml\\fR
The server config: environments, credentials, policy. \\fBhookops install\\fR writes a commented one.
.TP
\\fI<GIT_DIR>/hookops/locks/<env>.lock\\fR
One deploy at a time per environment; it names the run that holds it.
.TP
\\fI<GIT_DIR>/hookops/work/<env>/\\fR
kubectl's discovery cache, Terraform work directories (and \\fIterraform/<target>.log\\fR, a root's whole last output), scratch.
.TP
\\fI<GIT_DIR>/hookops/queue/\\fR, \\fI<GIT_DIR>/hookops/logs/\\fR
Asynchronous deploys waiting, and their logs.
.TP
\\fBrefs/notes/hookops\\fR
The signed records, one note per deployed commit.
.TP
\\fBrefs/hookops/deployed/<env>\\fR, \\fBrefs/hookops/inventory/<env>\\fR
What each environment runs, and the objects hookops applied there.
";

const ENVIRONMENT: &str = ".TP
\\fBGIT_DIR\\fR
The repository, when \\-\\-repo is not given (git sets it for hooks).
.TP
\\fBRUST_LOG\\fR
The log filter (e.g. \\fBhookops=debug\\fR); overrides \\-v and \\-q.
.TP
\\fBKUBECONFIG\\fR
kubectl's configuration for an environment without a \\fBkubeconfig\\fR key.
.TP
\\fBGOGC\\fR, \\fBGOMEMLIMIT\\fR
When set, passed to kubectl unchanged (otherwise hookops tunes its garbage collector).
.TP
\\fBHOOKOPS_GIT_TOKEN\\fR
The HTTPS token of \\fBwatch\\fR and \\fB[sync]\\fR when no token_file is configured.
.TP
\\fBHOOKOPS_GITALY_CONFIG\\fR
Gitaly's config file for \\fBdoctor\\fR on GitLab.
";

/// The roff of the extra sections of `command`'s page (`hookops` for the top page).
pub fn sections(command: &str) -> String {
    let p = page(command);
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in p.exit {
        s.push_str(&format!(".TP\n\\fB{code}\\fR\n{meaning}\n"));
    }
    if !p.note.is_empty() {
        s.push_str(&format!(".PP\n{}\n", p.note));
    }
    if command == "hookops" {
        s.push_str(OVERVIEW);
    }
    s.push_str(".SH FILES\n");
    s.push_str(FILES);
    s.push_str(".SH ENVIRONMENT\n");
    s.push_str(ENVIRONMENT);
    s.push_str(".SH EXAMPLES\n");
    for (what, line) in p.examples {
        s.push_str(&format!(".PP\n{what}\n.PP\n.RS 4\n.nf\n{line}\n.fi\n.RE\n"));
    }
    s.push_str(".SH \"SEE ALSO\"\n");
    s.push_str(
        "\\fBhookops\\fR(1), \\fBgit\\fR(1), \\fBgithooks\\fR(5); /usr/share/doc/hookops/\n",
    );
    s
}
