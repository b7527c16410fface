//! Issue 9: packaging and integrations. The Debian package built by `scripts/deb.sh` (cargo-deb)
//! installed into a scratch root, the man pages and completions build.rs generates, the
//! `--version` stamp, a snapshot of the help text, and the hook layouts of Gitea (`hooks/<hook>.d/`)
//! and GitLab/Gitaly (`custom_hooks`, server-wide `custom_hooks_dir`) each firing on a real push.
//!
//! The package test packages the debug binary this test run already built (`--profile dev
//! --no-build`): a second, release build would cost CI minutes for no extra coverage of the
//! packaging itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sshd::SshServer;
use crate::util::{
    hookops_bin, public_key, require, require_root, require_that, run, write_script, Run, World,
};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where build.rs copied the man pages and completions for the binary under test.
fn assets() -> PathBuf {
    Path::new(hookops_bin())
        .parent()
        .expect("binary has a directory")
        .join("assets")
}

// ---- version and help ---------------------------------------------------------------------

#[test]
fn version_names_the_commit_and_libgit2() {
    let out = run(Command::new(hookops_bin()).arg("--version"));
    out.assert_ok();
    let line = out.stdout.trim();
    let expected_commit = {
        let r = run(Command::new("git").arg("-C").arg(repo_root()).args([
            "rev-parse",
            "--short",
            "HEAD",
        ]));
        if r.ok() {
            r.stdout.trim().to_string()
        } else {
            "unknown".to_string()
        }
    };
    let prefix = format!(
        "hookops {} (commit {expected_commit}, libgit2 ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        line.starts_with(&prefix),
        "{line:?} does not start with {prefix:?}"
    );
    let libgit2 = line[prefix.len()..].trim_end_matches(')');
    assert_eq!(
        libgit2
            .split('.')
            .filter(|p| p.parse::<u32>().is_ok())
            .count(),
        3,
        "{line}"
    );
}

/// Compares `actual` with `tests/it/snapshots/<name>`; `UPDATE_SNAPSHOTS=1` rewrites the file.
fn snapshot(name: &str, actual: &str) {
    let path = repo_root().join("tests/it/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from the output; if the change is on purpose, rerun with UPDATE_SNAPSHOTS=1 \
         (cargo test --test it packaging) and commit the file.\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn help_text_changes_only_on_purpose() {
    for (args, name) in [
        (&["--help"][..], "help.txt"),
        (&["install", "--help"][..], "install-help.txt"),
    ] {
        let out = run(Command::new(hookops_bin()).env_clear().args(args));
        out.assert_ok();
        snapshot(name, &out.stdout);
    }
}

// ---- man pages and completions ------------------------------------------------------------

#[test]
fn man_pages_render() {
    if !require("man") {
        return;
    }
    let dir = assets().join("man");
    let mut pages: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "hookops.1",
        "hookops-install.1",
        "hookops-post-receive.1",
        "hookops-watch.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} missing from {pages:?}"
        );
    }
    assert!(
        !pages.iter().any(|p| p.contains("worker")),
        "hidden subcommand got a page: {pages:?}"
    );
    for page in pages.iter().filter(|p| p.ends_with(".1")) {
        assert!(
            pages.contains(&format!("{page}.gz")),
            "{page} has no gzipped twin for the package"
        );
    }
    for page in &pages {
        let out = run(Command::new("man")
            .args(["-l", "-Tutf8"])
            .arg(dir.join(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80"));
        out.assert_ok();
        assert!(
            out.stdout.contains("hookops"),
            "{page} rendered without its name:\n{}",
            out.all()
        );
    }
}

#[test]
fn completions_load_in_bash() {
    if !require("bash") {
        return;
    }
    let file = assets().join("completions/hookops.bash");
    let out = run(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p hookops",
        file.display()
    )));
    out.assert_ok();
    assert!(out.stdout.contains("hookops"), "{}", out.all());
    for other in ["_hookops", "hookops.fish"] {
        let text = fs::read_to_string(assets().join("completions").join(other)).unwrap();
        assert!(
            text.contains("install"),
            "{other} does not complete subcommands"
        );
    }
}

// ---- the Debian package ---------------------------------------------------------------------

/// Files the package must put in place (paths relative to the root).
const PACKAGED: &[&str] = &[
    "usr/bin/hookops",
    "usr/share/hookops/hooks/post-receive",
    "usr/share/hookops/hooks/post-merge",
    "usr/share/hookops/hooks/pre-receive",
    "usr/share/man/man1/hookops.1.gz",
    "usr/share/man/man1/hookops-install.1.gz",
    "usr/share/bash-completion/completions/hookops",
    "usr/share/zsh/vendor-completions/_hookops",
    "usr/share/fish/vendor_completions.d/hookops.fish",
    "usr/share/doc/hookops/examples/config.toml",
    "usr/share/doc/hookops/examples/hookops.toml",
    "usr/lib/systemd/system/hookops-watch@.service",
    "usr/lib/systemd/system/hookops-drift@.service",
    "usr/lib/systemd/system/hookops-drift@.timer",
];

fn cargo_deb_present() -> bool {
    Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A scratch root dpkg can install into: its admin directory, and the account files the
/// postinst edits (through `useradd --prefix`, since scripts run unchrooted).
fn scratch_root(root: &Path) {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(d)).unwrap();
    }
    fs::write(admin.join("status"), "").unwrap();
    fs::write(admin.join("available"), "").unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
    fs::create_dir_all(root.join("usr/sbin")).unwrap();
}

fn dpkg(root: &Path, args: &[&str]) -> Run {
    // Maintainer scripts run unchrooted with DPKG_ROOT set (the root has no shell of its own);
    // dependencies are the host's business, not the scratch root's.
    run(Command::new("dpkg")
        .arg("--root")
        .arg(root)
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
        ])
        .args(args)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default()))
}

#[test]
fn deb_installs_into_a_scratch_root() {
    if !(require("dpkg")
        && require("dpkg-deb")
        && require("useradd")
        && require_that("cargo-deb", cargo_deb_present()))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("deb");
    let built = run(Command::new(repo_root().join("scripts/deb.sh"))
        .args(["--no-build", "--profile", "dev", "--fast", "--output"])
        .arg(&out_dir)
        .env("HOOKOPS_DEB_NO_INSTALL", "1")
        .current_dir(repo_root()));
    built.assert_ok();
    let deb = PathBuf::from(built.stdout.lines().last().expect("deb.sh prints the path"));
    assert!(
        deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
        "{}",
        built.all()
    );

    let fields = run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .args(["Package", "Depends"]));
    fields.assert_ok();
    assert!(
        fields.stdout.contains("Package: hookops"),
        "{}",
        fields.all()
    );
    assert!(
        fields.stdout.contains("git") && fields.stdout.contains("adduser"),
        "{}",
        fields.all()
    );

    let root = tmp.path().join("root");
    scratch_root(&root);
    dpkg(&root, &["-i", deb.to_str().unwrap()]).assert_ok();
    for path in PACKAGED {
        assert!(root.join(path).exists(), "{path} is not installed");
    }
    let examples = root.join("usr/share/doc/hookops/examples");
    assert!(example_server_config_is_complete(
        &fs::read_to_string(examples.join("config.toml")).unwrap()
    ));

    // The postinst made the system user and its state directory, once.
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("hookops:"))
        .expect("hookops user");
    assert!(
        entry.ends_with(":/var/lib/hookops:/usr/sbin/nologin"),
        "{entry}"
    );
    assert!(root.join("var/lib/hookops/mirrors").is_dir());
    dpkg(&root, &["-i", deb.to_str().unwrap()]).assert_ok();
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("hookops:")).count(),
        1,
        "{passwd}"
    );

    let bin = root.join("usr/bin/hookops");
    let version = run(Command::new(&bin).arg("--version"));
    version.assert_ok();
    assert!(version.stdout.starts_with("hookops "), "{}", version.all());
    // doctor checks this machine's tools and hooks; from the packaged binary it must run and
    // report, whatever it finds here (a missing cluster is a finding, not a crash).
    let scratch_repo = tmp.path().join("doctor.git");
    assert!(run(Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&scratch_repo))
    .ok());
    let doctor = run(Command::new(&bin)
        .arg("--repo")
        .arg(&scratch_repo)
        .arg("doctor")
        .env("HOME", tmp.path())
        .env("KUBECONFIG", tmp.path().join("no-kubeconfig")));
    // Exit 1 is doctor's "problems found" (no cluster here); anything else is a crash.
    assert!(
        matches!(doctor.code, Some(0 | 1)),
        "doctor: {}",
        doctor.all()
    );
    assert!(
        doctor.all().contains("repository:"),
        "doctor reported nothing: {}",
        doctor.all()
    );

    // Purge removes the files and keeps the data (mirrors are an audit log).
    dpkg(&root, &["--purge", "hookops"]).assert_ok();
    assert!(!bin.exists());
    assert!(root.join("var/lib/hookops/mirrors").is_dir());
}

/// Every key of the example server config is commented out; uncommented, it must parse, so the
/// example cannot drift from the real config schema.
fn example_server_config_is_complete(text: &str) -> bool {
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    hookops::config::ServerConfig::parse(&uncommented, "examples/config.toml")
        .map_err(|e| panic!("{e:#}\n{uncommented}"))
        .is_ok()
}

#[test]
fn example_configs_parse() {
    let dir = repo_root().join("packaging/examples");
    assert!(example_server_config_is_complete(
        &fs::read_to_string(dir.join("config.toml")).unwrap()
    ));
    let tree = fs::read_to_string(dir.join("hookops.toml")).unwrap();
    let parsed = hookops::config::TreeConfig::parse(&tree, "examples/hookops.toml").unwrap();
    assert_eq!(parsed.target.len(), 2);
}

/// The shims the package ships for hand-wired layouts (Gitolite, GitLab's server-wide hooks)
/// run exactly what `hookops install` would write, marker line included, so a later
/// `hookops install` over one recognises it as its own.
#[test]
fn packaged_hook_shims_match_install() {
    for hook in ["post-receive", "post-merge", "pre-receive"] {
        let shipped = fs::read_to_string(repo_root().join("hooks").join(hook)).unwrap();
        let written = hookops::commands::install::shim(hook, "/usr/bin/hookops", false);
        let code = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(code(&shipped), code(&written), "hooks/{hook}");
        assert!(
            shipped.starts_with("#!/bin/sh\n# hookops-shim "),
            "hooks/{hook}"
        );
    }
}

// ---- server integrations --------------------------------------------------------------------

/// A dispatcher that runs every executable in `<dir>/<hook>.d/` with the same stdin and fails
/// if any of them failed: Gitea's generated `hooks/post-receive`, and what Gitaly does with
/// `custom_hooks/<hook>.d/` and the server-wide `custom_hooks_dir`.
fn dispatcher(dot_d_parent: &str) -> String {
    format!(
        "#!/usr/bin/env bash\n\
         data=$(cat)\n\
         exitcodes=\"\"\n\
         hookname=$(basename \"$0\")\n\
         for hook in {dot_d_parent}/${{hookname}}.d/*; do\n\
         \x20 test -x \"${{hook}}\" && test -f \"${{hook}}\" || continue\n\
         \x20 echo \"${{data}}\" | \"${{hook}}\"\n\
         \x20 exitcodes=\"${{exitcodes}} $?\"\n\
         done\n\
         for i in ${{exitcodes}}; do\n\
         \x20 [ \"${{i}}\" -eq 0 ] || exit \"${{i}}\"\n\
         done\n"
    )
}

/// A server with signing configured, and no hook: each layout test installs its own.
fn bare_world() -> World {
    let w = World::new();
    w.configure("", "");
    for hook in ["post-receive", "post-receive.hookops-chained"] {
        let _ = fs::remove_file(w.server.join("hooks").join(hook));
    }
    w
}

/// Pushes a commit without deploy targets (nothing to apply, so no cluster is needed) and
/// returns it with the newest record on it.
fn push_and_record(w: &World) -> (String, serde_json::Value) {
    let rev = w.commit(&[("README.md", "nothing to deploy here\n")], "docs only");
    let push = w.push();
    push.assert_ok();
    let records = w.records(&rev);
    let last = records
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no record on {rev}; push said:\n{}", push.all()));
    (rev, last)
}

fn assert_deployed(w: &World, rev: &str, record: &serde_json::Value) {
    assert_eq!(record["result"], "succeeded", "{record}");
    assert_eq!(record["commit"], rev, "{record}");
    assert_eq!(w.pointer("prod").as_deref(), Some(rev));
}

#[test]
fn gitea_dot_d_layout_deploys_on_push() {
    if !require("ssh-keygen") {
        return;
    }
    let w = bare_world();
    let hooks = w.server.join("hooks");
    write_script(
        &hooks.join("post-receive"),
        dispatcher("${GIT_DIR:-$(dirname \"$0\")/..}/hooks"),
    );
    // Gitea's own hook sits beside ours and must see the same ref lines.
    let seen = w.tmp.path().join("gitea-saw");
    write_script(
        &hooks.join("post-receive.d/gitea"),
        format!("#!/bin/sh\ncat > '{}'\n", seen.display()),
    );
    let install = w.hookops(&["install"]);
    install.assert_ok();
    assert!(
        install.stdout.contains("post-receive.d/hookops: installed"),
        "{}",
        install.all()
    );
    assert!(
        !hooks.join("post-receive.hookops-chained").exists(),
        "the dispatcher must stay in place"
    );

    let (rev, record) = push_and_record(&w);
    assert_deployed(&w, &rev, &record);
    let gitea_saw = fs::read_to_string(&seen).unwrap();
    assert!(
        gitea_saw.contains(&format!(" {rev} refs/heads/main")),
        "{gitea_saw}"
    );
}

#[test]
fn gitlab_repository_custom_hooks_deploy_on_push() {
    if !require("ssh-keygen") {
        return;
    }
    let w = bare_world();
    let custom = w.server.join("custom_hooks");
    // Gitaly runs `<repo>.git/custom_hooks/post-receive` itself; there is no GitLab here, so
    // plain git is pointed at the same directory with core.hooksPath, which runs it the same
    // way (same stdin, GIT_DIR, working directory in the repository).
    w.git(
        Some(&w.server),
        &["config", "core.hooksPath", custom.to_str().unwrap()],
    )
    .assert_ok();
    let install = w.hookops(&["install", "--hooks-dir", custom.to_str().unwrap()]);
    install.assert_ok();
    assert!(custom.join("post-receive").is_file(), "{}", install.all());

    let (rev, record) = push_and_record(&w);
    assert_deployed(&w, &rev, &record);

    // Real Gitaly needs no core.hooksPath: doctor still finds the hook in custom_hooks/.
    w.git(Some(&w.server), &["config", "--unset", "core.hooksPath"])
        .assert_ok();
    let doctor = w.hookops(&["doctor"]);
    let hooks_line = format!(
        "ok    hooks: {} installed",
        custom.join("post-receive").display()
    );
    assert!(doctor.stdout.contains(&hooks_line), "{}", doctor.all());
}

#[test]
fn gitlab_server_wide_custom_hooks_dir_deploys_on_push() {
    if !require("ssh-keygen") {
        return;
    }
    let w = bare_world();
    // The server-wide custom_hooks_dir only has `<hook>.d/` directories.
    let global = w.tmp.path().join("gitaly-custom-hooks");
    fs::create_dir_all(global.join("post-receive.d")).unwrap();
    let install = w.hookops(&["install", "--hooks-dir", global.to_str().unwrap()]);
    install.assert_ok();
    assert!(
        global.join("post-receive.d/hookops").is_file(),
        "{}",
        install.all()
    );
    assert!(!global.join("post-receive").exists());
    // Gitaly's part, emulated: its hook runs every file of `<custom_hooks_dir>/post-receive.d`.
    let gitaly = w.tmp.path().join("gitaly-hooks");
    write_script(
        &gitaly.join("post-receive"),
        dispatcher(global.to_str().unwrap()),
    );
    w.git(
        Some(&w.server),
        &["config", "core.hooksPath", gitaly.to_str().unwrap()],
    )
    .assert_ok();

    let (rev, record) = push_and_record(&w);
    assert_deployed(&w, &rev, &record);
}

#[test]
fn plain_ssh_push_through_git_shell_deploys() {
    if !(require("ssh-keygen") && require("git-shell") && require_root()) {
        return;
    }
    let w = World::new(); // `hookops install` already ran on the bare repository
    w.configure("", "");
    let Some(sshd) = SshServer::start(w.tmp.path()) else {
        return;
    };
    // The documented restriction: this key can run git's transport commands and nothing else.
    sshd.set_authorized_keys(&format!(
        "command=\"git-shell -c \\\"$SSH_ORIGINAL_COMMAND\\\"\",restrict {}\n",
        public_key(&sshd.client_key)
    ));
    let ssh = sshd.ssh_command(&sshd.client_key);

    // No shell for this key: anything but git's own commands is refused.
    let shell = run(Command::new("sh")
        .arg("-c")
        .arg(format!("{ssh} -p {} root@127.0.0.1 id", sshd.port)));
    assert!(
        !shell.ok() && !shell.stdout.contains("uid="),
        "the key got a shell:\n{}",
        shell.all()
    );

    let rev = w.commit(&[("README.md", "pushed over ssh\n")], "over ssh");
    let push = run(w
        .base_command("git")
        .current_dir(&w.clone)
        .env("GIT_SSH_COMMAND", &ssh)
        .args(["push", &sshd.url(&w.server), "HEAD:main"]));
    push.assert_ok();
    assert!(
        push.stderr.contains("remote: hookops"),
        "no hook output over ssh:\n{}",
        push.all()
    );
    assert_deployed(&w, &rev, &w.last_record(&rev));
}
