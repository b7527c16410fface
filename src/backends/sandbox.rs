//! The sandbox every renderer of pushed input runs in (`kubectl kustomize` today, `helm
//! template` next): bubblewrap with nothing of the server visible but the directory being
//! rendered (read-only, at its own path, so messages name the same paths as outside), `/usr`
//! read-only for the program and its libraries, a private `/tmp` that is also `HOME`, fresh
//! `/proc` and `/dev`, no capabilities, its own session (no terminal to inject keys into), and
//! no network unless the caller allows it (then also the files name resolution and TLS need).
//! The repository, hookops' state directory, kubeconfigs and the signing key are not there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::backends::mask::Masker;
use crate::backends::process::{Command, Output};

/// How renderers run: `[sandbox]` of the server config.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Off: renderers run unconfined (`[sandbox] enabled = false`).
    pub enabled: bool,
    /// The bubblewrap binary.
    pub bwrap: String,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::from_config(&crate::config::Sandbox::default())
    }
}

/// Top-level directories that are links into `/usr` on merged-/usr systems, or directories
/// holding programs and libraries elsewhere.
const SYSTEM_DIRS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// What name resolution and TLS read, visible only when the renderer may use the network.
const NETWORK_FILES: [&str; 7] = [
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/gitconfig",
];

/// One renderer run: `program ARGS` (the `[tools]` key `config_key` names it) in directory
/// `dir` of `root`, the materialised closure of a target.
pub struct Render<'a> {
    pub program: &'a str,
    pub config_key: &'static str,
    pub args: Vec<OsString>,
    pub root: &'a Path,
    pub dir: &'a Path,
    /// The renderer may reach the network (`[kustomize] allow_remote`).
    pub network: bool,
}

/// What bubblewrap prints when it, not the program inside, fails.
const BWRAP_PREFIX: &str = "bwrap: ";

impl Sandbox {
    pub fn from_config(c: &crate::config::Sandbox) -> Sandbox {
        Sandbox {
            enabled: c.enabled,
            bwrap: c.bwrap.clone(),
        }
    }

    /// Runs the renderer, seeing only its `root`, read-only. The output is masked; a sandbox
    /// that cannot start is an error naming why and the setting that turns it off.
    pub fn run(&self, r: &Render, masker: &Masker) -> Result<Output> {
        if !self.enabled {
            return Command::new(r.program, r.config_key)
                .args(r.args.iter().cloned())
                .dir(r.dir)
                .run(masker);
        }
        let exe = resolve_program(r.program).with_context(|| {
            format!(
                "{}: command not found (set by [tools] {} in the server config)",
                r.program, r.config_key
            )
        })?;
        let out = self
            .command(&exe, r)?
            .run(masker)
            .map_err(|e| self.unavailable(&format!("{e:#}")))?;
        if !out.success() {
            if let Some(why) = out.stderr.lines().find(|l| l.starts_with(BWRAP_PREFIX)) {
                return Err(self.unavailable(why));
            }
        }
        Ok(out)
    }

    fn unavailable(&self, why: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "the renderer sandbox cannot start ({why}): install bubblewrap (Debian: apt install \
             bubblewrap) and allow user namespaces, or set [sandbox] enabled = false in the \
             server config to render unconfined (docs/security.md)"
        )
    }

    fn command(&self, exe: &Path, r: &Render) -> Result<Command> {
        let root = r
            .root
            .canonicalize()
            .with_context(|| format!("{}: cannot open", r.root.display()))?;
        let dir = r
            .dir
            .canonicalize()
            .with_context(|| format!("{}: cannot open", r.dir.display()))?;
        if !dir.starts_with(&root) {
            bail!("{} is not inside {}", dir.display(), root.display());
        }
        let mut c = Command::from_path(&self.bwrap, "renderers of pushed input run in bubblewrap")
            .args([
                "--unshare-all",
                "--cap-drop",
                "ALL",
                "--die-with-parent",
                "--new-session",
                "--clearenv",
                "--ro-bind",
                "/usr",
                "/usr",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
                "--setenv",
                "HOME",
                "/tmp",
                "--setenv",
                "PATH",
                "/usr/local/bin:/usr/bin:/bin",
                "--setenv",
                "LANG",
                "C.UTF-8",
            ]);
        for d in SYSTEM_DIRS {
            let p = Path::new(d);
            match std::fs::read_link(p) {
                Ok(target) => c = c.arg("--symlink").arg(target).arg(d),
                Err(_) if p.is_dir() => c = c.args(["--ro-bind", d, d]),
                Err(_) => {}
            }
        }
        // A program outside /usr (an `[tools]` path under /opt) brings its own directory,
        // which is also where a dispatcher like Google's kubectl finds its versions.
        if !exe.starts_with("/usr") {
            if let Some(parent) = exe.parent() {
                c = c.arg("--ro-bind").arg(parent).arg(parent);
            }
        }
        if r.network {
            c = c.arg("--share-net");
            for f in NETWORK_FILES {
                if Path::new(f).exists() {
                    c = c.args(["--ro-bind", f, f]);
                }
            }
            for var in crate::backends::process::PROXY_VARS {
                if let Some(v) = std::env::var_os(var) {
                    c = c.arg("--setenv").arg(var).arg(v);
                }
            }
        }
        Ok(c.arg("--ro-bind")
            .arg(&root)
            .arg(&root)
            .arg("--chdir")
            .arg(&dir)
            .arg("--")
            .arg(exe)
            .args(r.args.iter().cloned()))
    }

    /// For `doctor`: runs `program ARGS` in an empty sandbox; its first output line, or why
    /// it cannot run.
    pub fn probe(&self, program: &str, config_key: &'static str, args: &[&str]) -> Result<String> {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let render = Render {
            program,
            config_key,
            args: args.iter().map(OsString::from).collect(),
            root: dir.path(),
            dir: dir.path(),
            network: false,
        };
        let out = self.run(&render, &Masker::new())?;
        if !out.success() {
            bail!("{program} in the sandbox: {}", out.reason());
        }
        Ok(crate::backends::process::first_line(&out.stdout).unwrap_or_default())
    }
}

/// The absolute, symlink-free path of `program` (a path, or a name looked up on `PATH`).
fn resolve_program(program: &str) -> Option<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    }?;
    found.canonicalize().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether bubblewrap runs here at all (a program, with the system's libraries): the
    /// tests below need it, and CI must have it.
    fn bwrap_works() -> bool {
        let ok = Sandbox::default().probe("true", "true", &[]).is_ok();
        if !ok {
            if std::env::var_os("CI").is_some() {
                panic!("bubblewrap is required (CI is set)");
            }
            eprintln!("SKIPPED: bubblewrap cannot run here");
        }
        ok
    }

    /// The sandbox's own view: a file next to the rendered directory, readable outside, does
    /// not exist inside; neither does anything of /etc; the rendered directory is read-only.
    #[test]
    fn only_the_rendered_directory_is_visible() {
        if !bwrap_works() {
            return;
        }
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("closure");
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("app/in.txt"), "inside\n").unwrap();
        std::fs::write(outer.path().join("secret.txt"), "outside\n").unwrap();
        let app = root.join("app");
        let render = |script: &str| Render {
            program: "sh",
            config_key: "sh",
            args: vec!["-c".into(), script.into()],
            root: &root,
            dir: &app,
            network: false,
        };
        let sh = |script: &str| {
            Sandbox::default()
                .run(&render(script), &Masker::new())
                .unwrap()
        };
        let secret = outer.path().join("secret.txt");
        let out = sh(&format!(
            "cat in.txt; cat {} || echo no-secret; cat ../../secret.txt || echo no-climb; \
                 ls /etc/passwd || echo no-etc; touch x || echo read-only; echo $HOME",
            secret.display()
        ));
        assert_eq!(
            out.stdout, "inside\nno-secret\nno-climb\nno-etc\nread-only\n/tmp\n",
            "{}",
            out.stderr
        );
        // Outside the sandbox, the same script reads the file: the check above can fail.
        let plain = Sandbox {
            enabled: false,
            bwrap: "bwrap".into(),
        }
        .run(
            &render(&format!("cat {}", secret.display())),
            &Masker::new(),
        )
        .unwrap();
        assert_eq!(plain.stdout, "outside\n");
    }

    /// No network: a listener on the host's loopback is unreachable from inside (its own
    /// loopback is empty), reachable with `network`.
    #[test]
    fn no_network_unless_allowed() {
        if !bwrap_works() {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || echo refused");
        let run = |network: bool| {
            let render = Render {
                program: "bash",
                config_key: "bash",
                args: vec!["-c".into(), script.clone().into()],
                root: dir.path(),
                dir: dir.path(),
                network,
            };
            Sandbox::default()
                .run(&render, &Masker::new())
                .unwrap()
                .stdout
        };
        assert_eq!(run(false), "refused\n");
        assert_eq!(run(true), "connected\n");
        drop(listener);
    }

    #[test]
    fn a_sandbox_that_cannot_start_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Sandbox {
            enabled: true,
            bwrap: "/nonexistent/bwrap".into(),
        }
        .run(
            &Render {
                program: "sh",
                config_key: "sh",
                args: Vec::new(),
                root: dir.path(),
                dir: dir.path(),
                network: false,
            },
            &Masker::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("renderer sandbox cannot start"), "{err}");
        assert!(err.contains("[sandbox] enabled = false"), "{err}");
    }
}
