//! hookops under the real Gitolite (3.6, Debian's `gitolite3`), set up the three ways
//! docs/integrations/gitolite.md describes (repo-specific hooks, a common hook, a POST_GIT
//! trigger), pushed to with the real `git push` over the real sshd (`crate::sshd`): every login
//! runs `gitolite-shell` as its forced command, so a push goes through Gitolite's access checks
//! (`gitolite-shell`, then its `update` hook) and its hook machinery, which runs the shim the
//! package ships, pointed at the binary under test. The hosting user is simulated by a HOME
//! inside the test's temporary directory; the admin configures Gitolite the real way, by
//! pushing `gitolite-admin` over ssh.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sshd::SshServer;
use crate::util::{
    configmap, hookops_bin, keygen, require, require_root, run, which, write_script, Run, World,
};

/// The Gitolite hosting user's home, its sshd, and the users' keys.
struct Gitolite {
    /// `$HOME` of the (simulated) hosting user: `.gitolite.rc`, `.gitolite/`, `repositories/`.
    home: PathBuf,
    /// Private keys, one per Gitolite user, named after the user (`keys/admin`, `keys/bob`).
    keys: PathBuf,
    sshd: SshServer,
}

/// The tools these tests need besides sshd (`SshServer::start` checks that one).
fn tools_present() -> bool {
    require("gitolite") && require("kubectl") && require("ssh-keygen") && require_root()
}

/// Uncomments the one rc line that, commented out, reads `# <line>`.
fn uncomment(rc: &str, line: &str) -> String {
    let commented = format!("# {line}");
    let hits = rc.lines().filter(|l| l.trim() == commented).count();
    assert_eq!(
        hits, 1,
        "expected one `{commented}` line in .gitolite.rc:\n{rc}"
    );
    rc.lines()
        .map(|l| {
            if l.trim() == commented {
                l.replacen("# ", "", 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

impl Gitolite {
    /// `gitolite setup -pk admin.pub` for a fresh hosting user, and sshd letting admin in
    /// through `gitolite-shell`. None without sshd (a local run skips; CI fails).
    fn setup(w: &World) -> Option<Gitolite> {
        let home = w.tmp.path().join("gl");
        let keys = w.tmp.path().join("keys");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&keys).unwrap();
        // The hosting user's git identity, for Gitolite's commit to gitolite-admin. No
        // init.defaultBranch: Gitolite compiles the admin repository only on pushes to master.
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = gitolite\n\temail = git@localhost\n[advice]\n\tdefaultBranchName = false\n",
        )
        .unwrap();
        for user in ["admin", "bob", "carol"] {
            keygen(&keys.join(user), "ed25519", "");
        }
        let sshd = SshServer::start(w.tmp.path())?;
        let gl = Gitolite { home, keys, sshd };
        let pk = gl.keys.join("admin.pub");
        gl.gitolite(&["setup", "-pk", pk.to_str().unwrap()])
            .assert_ok();
        for made in [
            ".gitolite.rc",
            ".gitolite/conf/gitolite.conf",
            "repositories/gitolite-admin.git",
            "repositories/testing.git",
            ".ssh/authorized_keys",
        ] {
            assert!(gl.home.join(made).exists(), "gitolite setup made no {made}");
        }
        gl.sync_authorized_keys(&["admin"]);
        Some(gl)
    }

    /// A server-side `gitolite` command as the hosting user.
    fn gitolite(&self, args: &[&str]) -> Run {
        run(Command::new("gitolite")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("USER", "git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .current_dir(&self.home)
            .args(args))
    }

    /// Gives sshd the keys Gitolite wrote to the hosting user's `~/.ssh/authorized_keys`
    /// (its `ssh-authkeys` trigger, on setup and on every admin push). They are used as they
    /// are but for HOME: a real hosting user logs in with its own HOME, where this sshd logs
    /// in as root, so the forced command sets the simulated hosting user's HOME first.
    fn sync_authorized_keys(&self, users: &[&str]) {
        let generated = std::fs::read_to_string(self.home.join(".ssh/authorized_keys")).unwrap();
        for user in users {
            assert!(
                generated.lines().any(|l| l.starts_with("command=\"")
                    && l.contains(&format!("/gitolite-shell {user}\",no-port-forwarding"))),
                "Gitolite wrote no forced-command line for {user}:\n{generated}"
            );
        }
        let ours = generated.replace(
            "command=\"",
            &format!("command=\"env HOME={} ", self.home.display()),
        );
        self.sshd.set_authorized_keys(&ours);
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.home.join("repositories").join(format!("{name}.git"))
    }

    /// `ssh://root@127.0.0.1:PORT/NAME`: Gitolite names repositories, not paths.
    fn url(&self, name: &str) -> String {
        format!("ssh://root@127.0.0.1:{}/{name}", self.sshd.port)
    }

    /// `-c core.sshCommand=…` for git, logging in with `user`'s key and checking the host key.
    fn ssh_as(&self, user: &str) -> String {
        format!(
            "core.sshCommand={}",
            self.sshd.ssh_command(&self.keys.join(user))
        )
    }

    /// The rc edits of docs/integrations/gitolite.md (server-side: the rc is not in the admin
    /// repository): `LOCAL_CODE => "$ENV{HOME}/local"`, then `edit`'s.
    fn edit_rc(&self, edit: impl FnOnce(String) -> String) {
        let path = self.home.join(".gitolite.rc");
        let rc = std::fs::read_to_string(&path).unwrap();
        let rc = uncomment(&rc, "LOCAL_CODE                =>  \"$ENV{HOME}/local\",");
        std::fs::write(&path, edit(rc)).unwrap();
        let local = self.gitolite(&["query-rc", "LOCAL_CODE"]);
        local.assert_ok();
        assert_eq!(
            local.stdout.trim(),
            self.home.join("local").to_str().unwrap()
        );
    }

    /// `git clone` of Gitolite's `repo` over ssh as `user`, into `dest`.
    fn clone_as(&self, w: &World, user: &str, repo: &str, dest: &Path) -> Run {
        w.git(
            None,
            &[
                "-c",
                &self.ssh_as(user),
                "clone",
                "-q",
                &self.url(repo),
                dest.to_str().unwrap(),
            ],
        )
    }

    /// The admin's flow: clone gitolite-admin over ssh, add `conf` to conf/gitolite.conf and
    /// the given users' keys to keydir/, commit, push. Returns the push.
    fn admin_push(&self, w: &World, conf: &str, new_users: &[&str]) -> Run {
        let admin = w.tmp.path().join("gitolite-admin");
        self.clone_as(w, "admin", "gitolite-admin", &admin)
            .assert_ok();
        let conf_path = admin.join("conf/gitolite.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(conf);
        std::fs::write(&conf_path, text).unwrap();
        for user in new_users {
            std::fs::copy(
                self.keys.join(format!("{user}.pub")),
                admin.join(format!("keydir/{user}.pub")),
            )
            .unwrap();
        }
        w.git(Some(&admin), &["add", "-A"]).assert_ok();
        w.git(
            Some(&admin),
            &["commit", "-q", "-m", "infra deploys with hookops"],
        )
        .assert_ok();
        let push = w.git(
            Some(&admin),
            &["-c", &self.ssh_as("admin"), "push", "origin", "HEAD"],
        );
        push.assert_ok();
        for bad in ["WARNING", "FATAL", "repo-specific-hooks:"] {
            assert!(
                !push.all().contains(bad),
                "the admin push complained:\n{}",
                push.all()
            );
        }
        if !new_users.is_empty() {
            let mut all = vec!["admin"];
            all.extend_from_slice(new_users);
            self.sync_authorized_keys(&all);
        }
        push
    }

    /// `git push` of the clone's HEAD to `main` of Gitolite's `repo`, as `user`.
    fn push(&self, w: &World, user: &str, repo: &str) -> Run {
        w.in_clone(&[
            "-c",
            &self.ssh_as(user),
            "push",
            &self.url(repo),
            "HEAD:main",
        ])
    }
}

/// The hosting repository's `main`.
fn tip(w: &World) -> Option<String> {
    let r = w.git(
        Some(&w.server),
        &["rev-parse", "--verify", "-q", "refs/heads/main"],
    );
    r.ok().then(|| r.stdout.trim().to_string())
}

/// Points the World at the Gitolite-hosted repository (its own bare `server.git` stays
/// unused) and writes its server config there: `prod` on `main`, the sandbox, signing, and
/// kubectl by absolute path (the hook gets sshd's PATH, not the test's).
fn configure(w: &mut World, repo: PathBuf) {
    assert!(repo.is_dir(), "Gitolite did not create {}", repo.display());
    w.server = repo;
    let kubectl = which("kubectl").unwrap_or_default();
    assert!(kubectl.starts_with('/'), "kubectl: {kubectl:?}");
    w.configure("", &format!("[tools]\nkubectl = \"{kubectl}\"\n"));
}

#[track_caller]
fn assert_record_verifies(w: &World, rev: &str) {
    let rec = w.last_record(rev);
    assert_eq!(rec["result"], "succeeded", "{rec}");
    assert_eq!(rec["action"], "deploy", "{rec}");
    assert_eq!(rec["env"], "prod", "{rec}");
    assert_eq!(rec["commit"], rev, "{rec}");
    let verify = w.hookops(&[
        "verify",
        rev,
        "--allowed-signers",
        w.allowed_signers.to_str().unwrap(),
    ]);
    verify.assert_ok();
}

#[track_caller]
/// admin pushes the clone's HEAD (`commit`) to infra, and it deploys: the pusher sees it, the
/// ConfigMap holds `value`, the pointer moved, the record verifies.
fn assert_admin_push_deploys(w: &World, gl: &Gitolite, commit: &str, value: &str) {
    let push = gl.push(w, "admin", "infra");
    push.assert_ok();
    assert!(
        push.all()
            .contains(&format!("remote: hookops: prod: deployed {}", &commit[..7])),
        "{}",
        push.all()
    );
    assert_eq!(
        w.configmap("default", "app").unwrap()["data"]["value"],
        value
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(commit));
    assert_record_verifies(w, commit);
}

fn assert_nothing_deployed(w: &World, deployed: &str, refused: &str, value: &str) {
    assert_eq!(
        w.writes(),
        Vec::<String>::new(),
        "the cluster was written to"
    );
    assert_eq!(
        w.configmap("default", "app").unwrap()["data"]["value"],
        value
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(deployed));
    assert_eq!(tip(w).as_deref(), Some(deployed), "main moved");
    assert_eq!(w.records(deployed).len(), 1, "a record was added");
    assert!(w.note(refused).is_empty(), "a record on the refused commit");
}

#[test]
fn repo_specific_hooks_deploy_pushes_through_gitolite_over_ssh() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    let Some(gl) = Gitolite::setup(&w) else {
        return;
    };
    w.start_sandbox();

    // The documented steps: the rc (server-side), the shims under LOCAL_CODE, then the repo
    // and its hook options in gitolite.conf through the admin repository.
    gl.edit_rc(|rc| uncomment(&rc, "'repo-specific-hooks',"));
    let specific = gl.home.join("local/hooks/repo-specific");
    std::fs::create_dir_all(&specific).unwrap();
    std::os::unix::fs::symlink(packaged_shim(&w, "post-receive"), specific.join("hookops"))
        .unwrap();
    std::os::unix::fs::symlink(
        packaged_shim(&w, "pre-receive"),
        specific.join("hookops-gate"),
    )
    .unwrap();
    let admin = gl.admin_push(
        &w,
        "\nrepo infra\n    RW+     =   admin\n    RW  dev =   carol\n    R       =   bob\n    \
         option hook.post-receive = hookops\n    option hook.pre-receive  = hookops-gate\n",
        &["bob", "carol"],
    );
    assert!(
        admin.all().contains("Initialized empty Git repository"),
        "{}",
        admin.all()
    );
    let repo = gl.repo("infra");
    let hooks = repo.join("hooks");
    let link = |name: &str| std::fs::read_link(hooks.join(name)).ok();
    let driver = gl.home.join("local/hooks/multi-hook-driver");
    assert_eq!(link("post-receive"), Some(driver.clone()));
    assert_eq!(link("pre-receive"), Some(driver));
    assert_eq!(
        link("post-receive.h00-hookops"),
        Some(specific.join("hookops"))
    );
    assert_eq!(
        link("pre-receive.h00-hookops-gate"),
        Some(specific.join("hookops-gate"))
    );
    configure(&mut w, repo);

    // admin may write: Gitolite lets the push in, its driver runs the shim, hookops deploys
    // and reports on the pusher's terminal.
    let c1 = w.commit(
        &[
            ("k8s/app.yaml", &configmap("app", Some("default"), "1")),
            ("k8s/base.yaml", &configmap("base", Some("default"), "1")),
        ],
        "app 1",
    );
    let push = gl.push(&w, "admin", "infra");
    push.assert_ok();
    let out = push.all();
    assert!(
        out.contains("remote: hookops: prod: deploying")
            && out.contains(&format!("remote: hookops: prod: deployed {}", &c1[..7])),
        "{out}"
    );
    assert_eq!(tip(&w).as_deref(), Some(c1.as_str()));
    assert_eq!(
        w.configmap("default", "app").expect("configmap applied")["data"]["value"],
        "1"
    );
    assert_eq!(w.pointer("prod").as_deref(), Some(c1.as_str()));
    assert_record_verifies(&w, &c1);

    // bob may only read: gitolite-shell refuses before git-receive-pack even starts.
    let c2 = w.commit(
        &[("k8s/app.yaml", &configmap("app", Some("default"), "2"))],
        "app 2",
    );
    w.sandbox().clear_requests();
    let bob = gl.push(&w, "bob", "infra");
    bob.assert_fail();
    assert!(
        bob.all().contains("W any infra bob DENIED"),
        "{}",
        bob.all()
    );
    assert_nothing_deployed(&w, &c1, &c2, "1");

    // carol may write `dev` only: she gets into git-receive-pack (the gate passes the valid
    // commit), and Gitolite's update hook refuses refs/heads/main, so post-receive deploys
    // nothing.
    let carol = gl.push(&w, "carol", "infra");
    carol.assert_fail();
    assert!(
        carol.all().contains("W refs/heads/main infra carol DENIED"),
        "{}",
        carol.all()
    );
    assert_nothing_deployed(&w, &c1, &c2, "1");

    // The gate (option hook.pre-receive) rejects a broken push from admin.
    let broken = w.commit(
        &[(
            "k8s/app.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\n",
        )],
        "broken",
    );
    let gate = gl.push(&w, "admin", "infra");
    gate.assert_fail();
    assert!(
        gate.all().contains("push rejected")
            && gate.all().contains("k8s/app.yaml")
            && gate.all().contains("invalid YAML"),
        "{}",
        gate.all()
    );
    assert_nothing_deployed(&w, &c1, &broken, "1");

    // The commit bob and carol could not push deploys when admin pushes it.
    w.in_clone(&["reset", "-q", "--hard", &c2]).assert_ok();
    assert_admin_push_deploys(&w, &gl, &c2, "2");
}

/// The shim the package ships (`/usr/share/hookops/hooks/<hook>`), pointed at the binary
/// under test.
fn packaged_shim(w: &World, hook: &str) -> PathBuf {
    let path = w.tmp.path().join("share/hookops/hooks").join(hook);
    write_script(
        &path,
        hookops::commands::install::shim(hook, hookops_bin(), false),
    );
    path
}

#[test]
fn common_hook_runs_in_every_repository_gitolite_admin_included() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    let Some(gl) = Gitolite::setup(&w) else {
        return;
    };
    w.start_sandbox();
    gl.edit_rc(|rc| rc);
    let common = gl.home.join("local/hooks/common");
    std::fs::create_dir_all(&common).unwrap();
    std::os::unix::fs::symlink(
        packaged_shim(&w, "post-receive"),
        common.join("post-receive"),
    )
    .unwrap();
    gl.gitolite(&["setup", "--hooks-only"]).assert_ok();
    for repo in ["gitolite-admin", "testing"] {
        assert_eq!(
            std::fs::read_link(gl.repo(repo).join("hooks/post-receive")).ok(),
            Some(common.join("post-receive")),
            "{repo}"
        );
    }
    // gitolite-admin runs the hook too: with no config there, its default branch (master) is
    // environment `default`, which finds nothing to deploy in conf/ and keydir/.
    let admin = gl.admin_push(&w, "\nrepo infra\n    RW+     =   admin\n", &[]);
    assert!(
        admin.all().contains("remote: hookops: default: ")
            && admin.all().contains("no deploy targets changed"),
        "{}",
        admin.all()
    );
    // A repository the admin push creates gets the common hook, and deploys.
    let repo = gl.repo("infra");
    assert_eq!(
        std::fs::read_link(repo.join("hooks/post-receive")).ok(),
        Some(common.join("post-receive"))
    );
    configure(&mut w, repo);
    let c1 = w.commit(
        &[("k8s/app.yaml", &configmap("app", Some("default"), "1"))],
        "app 1",
    );
    assert_admin_push_deploys(&w, &gl, &c1, "1");
}

/// The POST_GIT trigger of docs/integrations/gitolite.md, with `hookops` replaced by the
/// binary under test.
const REPLAY_TRIGGER: &str = r#"#!/bin/sh
# Gitolite POST_GIT trigger: $1 = POST_GIT, $2 = repository, $3 = user, $4 = access (R or W)
[ "$4" = W ] && [ -n "$GL_OPTION_HOOKOPS_REPLAY" ] || exit 0
cd "$GL_REPO_BASE/$2.git" || exit 0
# stdout is git's protocol stream: report on stderr, which reaches the pusher's terminal
hookops replay "$GL_OPTION_HOOKOPS_REPLAY" >&2
# the push has succeeded whatever the deploy did: a non-zero status would fail `git push`
exit 0
"#;

#[test]
fn post_git_trigger_replays_after_a_push_through_gitolite() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    let Some(gl) = Gitolite::setup(&w) else {
        return;
    };
    w.start_sandbox();
    gl.edit_rc(|rc| {
        assert_eq!(rc.matches("%RC = (\n").count(), 1, "{rc}");
        rc.replace(
            "%RC = (\n",
            "%RC = (\n    POST_GIT => [ 'hookops-replay' ],\n",
        )
    });
    let bin = format!("'{}'", hookops_bin());
    write_script(
        &gl.home.join("local/triggers/hookops-replay"),
        REPLAY_TRIGGER.replace("hookops replay", &format!("{bin} replay")),
    );
    gl.admin_push(
        &w,
        "\nrepo infra\n    RW+     =   admin\n    option ENV.HOOKOPS_REPLAY = main\n",
        &[],
    );
    configure(&mut w, gl.repo("infra"));

    let c1 = w.commit(
        &[("k8s/app.yaml", &configmap("app", Some("default"), "1"))],
        "app 1",
    );
    let push = gl.push(&w, "admin", "infra");
    push.assert_ok();
    // No `remote: ` prefix: this is gitolite-shell's stderr after git-receive-pack exited.
    assert!(
        push.stderr
            .contains(&format!("hookops: prod: deployed {}", &c1[..7])),
        "{}",
        push.all()
    );
    assert_eq!(w.configmap("default", "app").unwrap()["data"]["value"], "1");
    assert_eq!(w.pointer("prod").as_deref(), Some(c1.as_str()));
    assert_record_verifies(&w, &c1);

    // Reads run the trigger too (access R): it must exit 0 or every clone fails.
    let copy = w.tmp.path().join("read-back");
    gl.clone_as(&w, "admin", "infra", &copy).assert_ok();
    let read = w.git(Some(&copy), &["rev-parse", "origin/main"]);
    assert_eq!(read.stdout.trim(), c1);

    // Every write replays, also one that changed nothing: that deploys and records nothing.
    let again = gl.push(&w, "admin", "infra");
    again.assert_ok();
    assert!(
        again
            .stderr
            .contains(&format!("hookops: prod: {} is already deployed", &c1[..7])),
        "{}",
        again.all()
    );
    assert_eq!(w.records(&c1).len(), 1);
}
