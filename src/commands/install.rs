//! `hookops install`: writes the hook shims. A bare repository gets post-receive (and, asked
//! for, the pre-receive gate); a clone gets post-merge. `core.hooksPath` is honoured; a Gitea-
//! style `hooks/<hook>.d/` directory gets a file of its own; a hook already in place is kept and
//! still runs first; running install twice changes nothing. It also sets `receive.hideRefs` for
//! hookops' own refs, so that git itself refuses a push that would rewrite records, pointers or
//! inventories (docs/security.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use git2::Repository;

use crate::cli::InstallArgs;

const MARKER: &str = "# hookops-shim";

/// The refs only hookops writes: records, and under `refs/hookops/` the deployed pointers,
/// inventories, the reference index and the copies `[sync]` and `watch` fetch. `install`
/// puts these in `receive.hideRefs`, and the gate refuses them too.
pub const HIDDEN_REFS: [&str; 2] = ["refs/hookops", "refs/notes/hookops"];

/// Whether `values` (the `transfer.hideRefs` then `receive.hideRefs` values, in git's order)
/// hide `name` from receive-pack, which then refuses to update it. git's own rule
/// (`ref_is_hidden`): the last matching value decides, `!` un-hides, `^` matches the full name
/// (hookops' refs are never in a namespace), and a value matches a ref equal to it or under it.
pub fn hidden_by(values: &[String], name: &str) -> bool {
    for v in values.iter().rev() {
        let (neg, v) = match v.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        let v = v.strip_prefix('^').unwrap_or(v).trim_end_matches('/');
        if let Some(rest) = name.strip_prefix(v) {
            if rest.is_empty() || rest.starts_with('/') {
                return !neg;
            }
        }
    }
    false
}

/// A ref that only hookops may write.
pub fn is_hookops_ref(name: &str) -> bool {
    hidden_by(&HIDDEN_REFS.map(String::from), name)
}

/// Sample refs `doctor` checks the effective setting against: one of each kind hookops writes.
pub const SAMPLE_REFS: [&str; 4] = [
    "refs/notes/hookops",
    "refs/hookops/deployed/prod",
    "refs/hookops/inventory/prod",
    "refs/hookops/references",
];

/// The commands that make git refuse pushes to hookops' refs in the repository at `git_dir`.
pub fn hide_refs_fix(git_dir: &Path) -> String {
    let dir = quote(&git_dir.display().to_string());
    HIDDEN_REFS
        .iter()
        .map(|r| format!("git --git-dir={dir} config --add receive.hideRefs {r}"))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// Adds hookops' refs to the repository's own `receive.hideRefs` where its effective config
/// does not hide them yet; returns the values added.
fn hide_refs(repo: &Repository) -> Result<Vec<&'static str>> {
    let effective = hide_refs_values(repo)?;
    let mut local = repo
        .config()?
        .open_level(git2::ConfigLevel::Local)
        .context("opening the repository's config")?;
    let mut added = Vec::new();
    for r in HIDDEN_REFS {
        let sample = if r == "refs/hookops" {
            "refs/hookops/deployed/x"
        } else {
            r
        };
        if hidden_by(&effective, sample) {
            continue;
        }
        // A regular expression that matches no value: the value is added, none replaced.
        local
            .set_multivar("receive.hideRefs", "^$.", r)
            .with_context(|| format!("setting receive.hideRefs {r}"))?;
        added.push(r);
    }
    Ok(added)
}

/// `transfer.hideRefs` then `receive.hideRefs` as libgit2 reads the repository's config (all
/// levels), in file order.
fn hide_refs_values(repo: &Repository) -> Result<Vec<String>> {
    let config = repo.config()?;
    let mut values = Vec::new();
    for key in ["transfer.hideRefs", "receive.hideRefs"] {
        let mut entries = match config.multivar(key, None) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {key}")),
        };
        while let Some(entry) = entries.next() {
            if let Some(v) = entry?.value() {
                values.push(v.to_string());
            }
        }
    }
    Ok(values)
}
const CHAINED: &str = "hookops-chained";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shim text for `hook`, running `bin`. Without a chained hook, stdin goes straight to
/// hookops (no extra processes on the push path); with one, hooks that read stdin buffer it
/// once so that the chained hook and hookops both see every line.
pub fn shim(hook: &str, bin: &str, chain: bool) -> String {
    let bin = quote(bin);
    let mut s = format!("#!/bin/sh\n{MARKER} (written by `hookops install`; edit the server config, not this file)\n");
    let reads_stdin = hook != "post-merge";
    if chain {
        // `${0%/*}` is dirname without a process; git runs hooks by a path with a slash.
        s.push_str(&format!(
            "case $0 in */*) prev=\"${{0%/*}}/{hook}.{CHAINED}\" ;; *) prev=\"./{hook}.{CHAINED}\" ;; esac\nif [ -x \"$prev\" ]; then\n"
        ));
        // A failing pre-receive must still reject the push; other hooks cannot undo anything.
        let status = if hook == "pre-receive" {
            " || exit $?"
        } else {
            ""
        };
        if reads_stdin {
            s.push_str(&format!(
                "  input=$(cat)\n  printf '%s\\n' \"$input\" | \"$prev\" \"$@\"{status}\n  printf '%s\\n' \"$input\" | exec {bin} {hook} \"$@\"\n  exit $?\n"
            ));
        } else {
            s.push_str(&format!("  \"$prev\" \"$@\"{status}\n"));
        }
        s.push_str("fi\n");
    }
    s.push_str(&format!("exec {bin} {hook} \"$@\"\n"));
    s
}

/// The hooks directory git will use for this repository.
pub fn hooks_dir(repo: &Repository) -> Result<PathBuf> {
    let config = repo.config()?;
    if let Ok(p) = config.get_path("core.hooksPath") {
        if p.is_absolute() {
            return Ok(p);
        }
        // githooks(5): relative to where hooks run: the work tree, or GIT_DIR when bare.
        let base = repo.workdir().unwrap_or(repo.path());
        return Ok(base.join(p));
    }
    Ok(repo.path().join("hooks"))
}

fn write_executable(path: &Path, text: &str) -> Result<bool> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    let tmp = path.with_extension("hookops-tmp");
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// Installs one hook; returns a line describing what happened.
pub fn install_hook(dir: &Path, hook: &str, bin: &str) -> Result<String> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dot_d = dir.join(format!("{hook}.d"));
    if dot_d.is_dir() {
        let path = dot_d.join("hookops");
        let changed = write_executable(&path, &shim(hook, bin, false))?;
        return Ok(format!(
            "{}: {}",
            path.display(),
            if changed { "installed" } else { "unchanged" }
        ));
    }
    let path = dir.join(hook);
    let chained = dir.join(format!("{hook}.{CHAINED}"));
    let existing = fs::read_to_string(&path).ok();
    let ours = existing.as_deref().is_some_and(|t| t.contains(MARKER));
    let mut note = String::new();
    if path.exists() && !ours {
        if chained.exists() {
            anyhow::bail!(
                "{} exists and so does {}; move one of them away first",
                path.display(),
                chained.display()
            );
        }
        fs::rename(&path, &chained).with_context(|| format!("moving {} aside", path.display()))?;
        note = format!(
            " (the existing hook now runs first from {})",
            chained.display()
        );
    }
    let changed = write_executable(&path, &shim(hook, bin, true))?;
    Ok(format!(
        "{}: {}{note}",
        path.display(),
        if changed { "installed" } else { "unchanged" }
    ))
}

pub fn run(repo_arg: Option<&Path>, args: &InstallArgs) -> Result<ExitCode> {
    if let Some(dir) = &args.hooks_dir {
        return install_into_hooks_dir(dir, args.pre_receive);
    }
    let repo = crate::backends::repo::open_repository(args.dir.as_deref().or(repo_arg))?;
    let bin = current_bin()?;
    let bin = bin.as_str();
    let dir = hooks_dir(&repo)?;
    let mut hooks = vec![if repo.is_bare() {
        "post-receive"
    } else {
        "post-merge"
    }];
    if args.pre_receive {
        hooks.push("pre-receive");
    }
    for hook in hooks {
        println!("{}", install_hook(&dir, hook, bin)?);
    }
    for r in hide_refs(&repo)? {
        println!(
            "{}: receive.hideRefs {r} (pushes cannot write hookops' refs)",
            repo.path().join("config").display()
        );
    }
    let state = repo.path().join(crate::config::STATE_DIR);
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let config = state.join("config.toml");
    if !config.exists() {
        fs::write(&config, CONFIG_TEMPLATE)
            .with_context(|| format!("writing {}", config.display()))?;
        println!(
            "{}: written, every line commented (the defaults apply); edit it to name your environments",
            config.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The server config `install` starts a repository with: every line commented, so the
/// defaults apply until the operator edits it (docs/configuration.md has every key).
pub const CONFIG_TEMPLATE: &str = r#"# hookops server config: environments, credentials, policy. Only the server's operator can
# write this file; the pushed tree (hookops.toml) can only declare targets.
# Every key: docs/configuration.md (/usr/share/doc/hookops/configuration.md).
#
# As it is (all commented), the default branch deploys as environment "default" with
# kubectl's current context of the user git runs the hook as, and records are unsigned.
# Check it with: hookops --repo <this repository> doctor

# [[environment]]
# name = "prod"
# branch = "main"
# kubeconfig = "/srv/hookops/prod.kubeconfig"  # a service account's (docs/security.md)
# context = "prod"
# # Objects may only go to these namespaces. They must exist in the cluster before the first
# # push, or be declared in the tree (a Namespace manifest) with allow_cluster_scoped = true;
# # `hookops doctor` checks.
# allowed_namespaces = ["web"]
# on_failure = "rollback"                       # or "rollout-undo", "stop"
# # Terraform roots run with the pusher's code: a `local-exec` provisioner or an external
# # data source runs any command on this server as the hook's user. Leave Terraform off
# # unless every pusher may do that (docs/security.md).
# terraform = "off"

# [gate]                                        # with `hookops install --pre-receive`
# mode = "local"

# [signing]                                     # sign every record (ssh-keygen -t ed25519)
# key = "/srv/hookops/signing_ed25519"
# allowed_signers = "/srv/hookops/allowed_signers"
"#;

/// `--hooks-dir`: a hooks directory that serves bare server repositories but is not the
/// `hooks/` of one (GitLab's `custom_hooks`, its server-wide `custom_hooks_dir`), so there is no
/// repository to look at: the hook is post-receive, and each repository's state directory is
/// created by its first deploy.
fn install_into_hooks_dir(dir: &Path, pre_receive: bool) -> Result<ExitCode> {
    let bin = current_bin()?;
    let mut hooks = vec!["post-receive"];
    if pre_receive {
        hooks.push("pre-receive");
    }
    for hook in hooks {
        println!("{}", install_hook(dir, hook, &bin)?);
    }
    // No repository here to configure: the host must hide hookops' refs itself.
    println!(
        "note: set receive.hideRefs = {} in the git config the server's repositories use \
         (docs/integrations/gitlab.md); `hookops doctor` checks it",
        HIDDEN_REFS.join(" and ")
    );
    Ok(ExitCode::SUCCESS)
}

fn current_bin() -> Result<String> {
    let bin = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("locating the hookops binary")?;
    Ok(bin
        .to_str()
        .context("the hookops binary path is not UTF-8")?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hide_refs_follows_gits_rule() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ours = v(&["refs/hookops/", "refs/notes/hookops"]);
        for r in SAMPLE_REFS {
            assert!(hidden_by(&ours, r), "{r}");
        }
        assert!(!hidden_by(&ours, "refs/notes/hookops-other"));
        assert!(!hidden_by(&ours, "refs/hookopsx/a"));
        assert!(!hidden_by(&ours, "refs/heads/main"));
        // The last matching value decides.
        let undone = v(&["refs/hookops", "!refs/hookops/deployed"]);
        assert!(!hidden_by(&undone, "refs/hookops/deployed/prod"));
        assert!(hidden_by(&undone, "refs/hookops/inventory/prod"));
        assert!(hidden_by(&v(&["^refs/notes"]), "refs/notes/hookops"));
        assert!(is_hookops_ref("refs/hookops/anything/at/all"));
    }

    #[test]
    fn install_hides_hookops_refs_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        assert_eq!(hide_refs(&repo).unwrap(), HIDDEN_REFS.to_vec());
        assert!(
            hide_refs(&repo).unwrap().is_empty(),
            "second run adds nothing"
        );
        let values = hide_refs_values(&repo).unwrap();
        assert_eq!(values, HIDDEN_REFS.map(String::from).to_vec());
    }

    #[test]
    fn shim_quotes_and_chains() {
        let s = shim("pre-receive", "/opt/it's/hookops", true);
        assert!(s.contains(r"exec '/opt/it'\''s/hookops' pre-receive"));
        assert!(s.contains("|| exit $?"));
        let m = shim("post-merge", "/bin/hookops", false);
        assert!(!m.contains("input=$(cat)"));
    }

    /// Runs the shims with sh: hookops (a script recording its stdin here) and the chained hook
    /// both see every ref line; a failing chained pre-receive stops the push.
    #[test]
    fn shims_pass_stdin_to_the_chained_hook_and_hookops() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let exe = |path: &Path, text: &str| {
            fs::write(path, text).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        };
        let bin = d.join("fake hookops");
        exe(
            &bin,
            "#!/bin/sh\n{ echo \"$1 $2\"; cat; } > \"$(dirname \"$0\")/seen-by-hookops\"\n",
        );
        let lines = "a b refs/heads/main\nc d refs/heads/dev\n";
        let run = |hook: &str, chain: bool| {
            let path = d.join(hook);
            exe(&path, &shim(hook, bin.to_str().unwrap(), chain));
            let mut child = std::process::Command::new(&path)
                .arg("x")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(lines.as_bytes())
                .unwrap();
            let status = child.wait().unwrap();
            let seen = fs::read_to_string(d.join("seen-by-hookops")).unwrap_or_default();
            let _ = fs::remove_file(d.join("seen-by-hookops"));
            (status.code(), seen)
        };
        let want = format!("post-receive x\n{lines}");
        assert_eq!(run("post-receive", false), (Some(0), want.clone()));
        assert_eq!(
            run("post-receive", true),
            (Some(0), want.clone()),
            "no chained hook yet"
        );
        let chained = d.join("post-receive.hookops-chained");
        exe(
            &chained,
            "#!/bin/sh\ncat > \"$(dirname \"$0\")/seen-by-chained\"\n",
        );
        assert_eq!(run("post-receive", true), (Some(0), want));
        assert_eq!(
            fs::read_to_string(d.join("seen-by-chained")).unwrap(),
            lines
        );
        let refuse = d.join("pre-receive.hookops-chained");
        exe(&refuse, "#!/bin/sh\ncat >/dev/null\nexit 3\n");
        assert_eq!(run("pre-receive", true), (Some(3), String::new()));
    }

    /// The template parses as it is (the defaults), and so does its example once uncommented,
    /// `terraform = "off"` included: an operator who removes the `# ` gets a valid config.
    #[test]
    fn config_template_parses_commented_and_uncommented() {
        let as_is = crate::config::ServerConfig::parse(CONFIG_TEMPLATE, "template").unwrap();
        assert!(as_is.environment.is_empty());
        let uncommented: String = CONFIG_TEMPLATE
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = crate::config::ServerConfig::parse(&uncommented, "template").unwrap();
        assert_eq!(config.environment.len(), 1, "{uncommented}");
        assert_eq!(
            config.environment[0].terraform,
            crate::config::TerraformMode::Off
        );
    }

    #[test]
    fn install_is_idempotent_and_keeps_existing_hook() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("post-receive"), "#!/bin/sh\necho old\n").unwrap();
        let first = install_hook(dir.path(), "post-receive", "/bin/hookops").unwrap();
        assert!(first.contains("installed"), "{first}");
        assert!(dir.path().join("post-receive.hookops-chained").exists());
        let second = install_hook(dir.path(), "post-receive", "/bin/hookops").unwrap();
        assert!(second.contains("unchanged"), "{second}");
        let chained = fs::read_to_string(dir.path().join("post-receive.hookops-chained")).unwrap();
        assert!(chained.contains("echo old"));
    }
}
