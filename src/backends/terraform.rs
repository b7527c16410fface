//! Terraform roots: materialised from git objects into a persistent per-environment, per-target
//! work directory (state and plugins survive between deploys), then `init`, `plan
//! -detailed-exitcode -out`, and `apply` of that plan only when it has changes. Secrets reach
//! terraform as environment variables, never as arguments or files. The pusher sees one summary
//! line per root (`Plan: 1 to add …`, or `No changes.`, and errors); the whole output goes to
//! the root's log file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use git2::{Repository, Tree};

use crate::backends::mask::Masker;
use crate::backends::objects;
use crate::backends::process::{Command, Output};
use crate::config::{ServerConfig, Target};

const PLAN_FILE: &str = "hookops.tfplan";
const LOCK_FILE: &str = ".terraform.lock.hcl";

pub struct Terraform<'a> {
    pub program: &'a str,
    pub masker: &'a Masker,
    pub lock_timeout_secs: u64,
    /// Environment variables for terraform only (Vault secrets).
    pub env: Vec<(String, String)>,
    /// Where the whole output goes (else to the debug log): `with_log`.
    pub log: Option<PathBuf>,
}

/// What a run did: resources added+changed, and destroyed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub changed: usize,
    pub destroyed: usize,
}

/// Work directory of one target of one environment.
pub fn work_dir(env_dir: &Path, target: &Target) -> PathBuf {
    env_dir.join("terraform").join(dir_name(&target.name))
}

/// A target name as one file name, injectively: `/` becomes `__` (as before, so the work
/// directories of plain names stay where they were), bytes outside `[A-Za-z0-9._-]` are
/// percent-encoded, and so is a `_` next to a `_` or `/` (else `a/b` and `a__b` would meet).
/// A name longer than a file name may be keeps its start and gets a hash of the whole.
fn dir_name(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let joins = |j: Option<usize>| {
            j.and_then(|j| b.get(j))
                .is_some_and(|&n| n == b'_' || n == b'/')
        };
        match c {
            b'/' => out.push_str("__"),
            b'_' if joins(i.checked_sub(1)) || joins(Some(i + 1)) => out.push_str("%5F"),
            b'_' | b'.' | b'-' => out.push(char::from(c)),
            c if c.is_ascii_alphanumeric() => out.push(char::from(c)),
            c => out.push_str(&format!("%{c:02X}")),
        }
    }
    // 255 bytes is the usual limit; `~` is never produced above, so no plain name meets these.
    if out.len() > 200 {
        use sha2::Digest;
        let mut keep = 100;
        while out.as_bytes()[keep - 1] == b'%' || out.as_bytes()[keep - 2] == b'%' {
            keep -= 1;
        }
        let hash = sha2::Sha256::digest(name.as_bytes());
        let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        out = format!("{}~{hex}", &out[..keep]);
    }
    out
}

impl<'a> Terraform<'a> {
    /// The server config's terraform (`[tools] terraform`, `[deploy] terraform_lock_timeout`),
    /// with `env` for terraform alone.
    pub fn new(
        config: &'a ServerConfig,
        masker: &'a Masker,
        env: Vec<(String, String)>,
    ) -> Terraform<'a> {
        Terraform {
            program: &config.tools.terraform,
            masker,
            lock_timeout_secs: config.deploy.terraform_lock_timeout,
            env,
            log: None,
        }
    }

    /// Writes terraform's whole output (masked) to `path`, replacing the last run's: the
    /// pusher gets only summary lines (`summary_line`).
    pub fn with_log(mut self, path: PathBuf) -> Self {
        // A new run, a new log; the file may hold plan details: owner only.
        let created = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|f| {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
            });
        match created {
            Ok(()) => self.log = Some(path),
            Err(e) => log::info!("{}: {e}", path.display()),
        }
        self
    }

    fn command(&self, dir: &Path) -> Command {
        let mut c = Command::new(self.program, "terraform")
            .dir(dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1");
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    fn lock_arg(&self) -> String {
        format!("-lock-timeout={}s", self.lock_timeout_secs)
    }

    /// Writes the root, the local modules it reaches (`closure`: repository paths) and its
    /// watched paths from `tree` into `root` at their repository paths, keeping state: the
    /// root runs in `root/<its path>`, and `../../modules/thing` finds its module.
    pub fn materialise(
        repo: &Repository,
        tree: &Tree,
        target: &Target,
        closure: &[String],
        root: &Path,
    ) -> Result<PathBuf> {
        objects::clean_dir(root)?;
        std::fs::create_dir_all(root)?;
        objects::materialise(repo, tree, &target.path, root)?;
        let extra = closure.iter().filter(|p| **p != target.path);
        for p in extra.chain(&target.watch) {
            if objects::entry(tree, p).is_some() {
                objects::materialise_path(repo, tree, p, root)?;
            }
        }
        Ok(root.join(&target.path))
    }

    fn step(&self, name: &str, c: Command, line: &mut dyn FnMut(&str)) -> Result<Output> {
        use std::io::Write;
        let started = Instant::now();
        let mut log = self
            .log
            .as_ref()
            .and_then(|p| std::fs::OpenOptions::new().append(true).open(p).ok());
        let out = c.stream(self.masker, |l| {
            if l.trim().is_empty() {
                return;
            }
            let stamped = format!("[{name} {:.1}s] {l}", started.elapsed().as_secs_f64());
            match log.as_mut() {
                Some(f) => {
                    let _ = writeln!(f, "{stamped}");
                }
                None => log::debug!("terraform: {stamped}"),
            }
            if let Some(summary) = summary_line(l) {
                line(&format!("{name}: {summary}"));
            }
        })?;
        Ok(out)
    }

    fn init(&self, dir: &Path, line: &mut dyn FnMut(&str)) -> Result<()> {
        let out = self.step(
            "init",
            self.command(dir)
                .args(["init", "-input=false", "-no-color"])
                .args(lockfile_args(dir))
                .arg(self.lock_arg()),
            line,
        )?;
        if !out.success() {
            bail!("terraform init failed: {}", error_line(&out));
        }
        Ok(())
    }

    /// init, plan, and apply when the plan has changes.
    pub fn deploy(&self, dir: &Path, line: &mut dyn FnMut(&str)) -> Result<Counts> {
        self.init(dir, line)?;
        let plan = self.step(
            "plan",
            self.command(dir)
                .args(["plan", "-input=false", "-no-color", "-detailed-exitcode"])
                .arg(self.lock_arg())
                .arg(format!("-out={PLAN_FILE}")),
            line,
        );
        let plan_file = dir.join(PLAN_FILE);
        let result = (|| {
            let plan = plan?;
            match plan.code {
                Some(0) => return Ok(Counts::default()),
                Some(2) => {}
                _ => bail!("terraform plan failed: {}", error_line(&plan)),
            }
            let apply = self.step(
                "apply",
                self.command(dir)
                    .args(["apply", "-input=false", "-no-color"])
                    .arg(self.lock_arg())
                    .arg(PLAN_FILE),
                line,
            )?;
            if !apply.success() {
                bail!("terraform apply failed: {}", error_line(&apply));
            }
            Ok(counts(&apply.stdout))
        })();
        // A plan file holds every variable value in clear text: never leave it behind.
        let _ = std::fs::remove_file(&plan_file);
        result
    }

    /// init and `plan -detailed-exitcode` without the state lock (nothing is written, and an
    /// operator applying by hand is not kept waiting): None when the root matches its state,
    /// else the plan's summary line (`Plan: 1 to add, 0 to change, 0 to destroy.`). For
    /// `terraform = "plan-only"` and drift checks.
    pub fn plan_summary(&self, dir: &Path, line: &mut dyn FnMut(&str)) -> Result<Option<String>> {
        self.init(dir, line)?;
        let plan = self.step(
            "plan",
            self.command(dir).args([
                "plan",
                "-input=false",
                "-no-color",
                "-detailed-exitcode",
                "-lock=false",
            ]),
            line,
        )?;
        match plan.code {
            Some(0) => Ok(None),
            Some(2) => Ok(Some(plan_line(&plan.stdout))),
            _ => bail!("terraform plan failed: {}", error_line(&plan)),
        }
    }

    /// Whether the root differs from its state (`plan_summary`).
    pub fn drifted(&self, dir: &Path, line: &mut dyn FnMut(&str)) -> Result<bool> {
        Ok(self.plan_summary(dir, line)?.is_some())
    }

    pub fn destroy(&self, dir: &Path, line: &mut dyn FnMut(&str)) -> Result<Counts> {
        self.init(dir, line)?;
        let out = self.step(
            "destroy",
            self.command(dir)
                .args(["destroy", "-auto-approve", "-input=false", "-no-color"])
                .arg(self.lock_arg()),
            line,
        )?;
        if !out.success() {
            bail!("terraform destroy failed: {}", error_line(&out));
        }
        Ok(counts(&out.stdout))
    }
}

/// The dependency lock file of the root, when git has one: it was materialised, so terraform
/// must follow it (`-lockfile=readonly`) rather than pick other provider versions. Without one,
/// terraform writes a fresh lock file in the work directory, as on a developer's machine.
pub fn lockfile_args(dir: &Path) -> Vec<&'static str> {
    if dir.join(LOCK_FILE).is_file() {
        vec!["-lockfile=readonly"]
    } else {
        Vec::new()
    }
}

/// Terraform prints "Error: …" after a box-drawing prefix; that line is the reason (else the
/// first line of its stderr, else how it ended).
pub fn error_line(out: &Output) -> String {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .map(|l| l.trim_start_matches(['│', '╷', '╵', ' ']))
        .find(|l| l.starts_with("Error"))
        .map(str::to_string)
        .or_else(|| crate::backends::process::first_line(&out.stderr))
        .unwrap_or_else(|| out.reason())
}

/// The lines of terraform's output a pusher needs: what the plan would do (or a destroy did),
/// and errors; None for the rest (resource details, provider chatter), which only the log has.
fn summary_line(line: &str) -> Option<&str> {
    let l = line.trim_start_matches(['│', '╷', '╵', ' ']);
    // The apply's own result is the target's result line (`applied 1`).
    ["Plan: ", "No changes.", "Destroy complete!", "Error: "]
        .iter()
        .any(|p| l.starts_with(p))
        .then_some(l)
}

/// Parses "Apply complete! Resources: 1 added, 2 changed, 0 destroyed." (or the destroy form).
fn counts(output: &str) -> Counts {
    let mut c = Counts::default();
    for line in output.lines() {
        let Some(rest) = line.split("Resources: ").nth(1) else {
            continue;
        };
        for part in rest.trim_end_matches('.').split(", ") {
            let mut words = part.split_whitespace();
            let n: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            match words.next() {
                Some("added") | Some("changed") => c.changed += n,
                Some("destroyed") => c.destroyed += n,
                _ => {}
            }
        }
    }
    c
}

/// The summary line of `terraform plan` output (`Plan: 1 to add, 0 to change, 0 to destroy.`).
pub fn plan_line(stdout: &str) -> String {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Plan:"))
        .unwrap_or("changes planned")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pusher_gets_summaries_and_errors_only() {
        for (line, shown) in [
            ("Plan: 1 to add, 0 to change, 0 to destroy.", true),
            (
                "No changes. Your infrastructure matches the configuration.",
                true,
            ),
            (
                "Apply complete! Resources: 1 added, 0 changed, 0 destroyed.",
                false,
            ),
            ("Destroy complete! Resources: 1 destroyed.", true),
            ("Changes to Outputs:", false),
            ("│ Error: Invalid reference", true),
            ("  # terraform_data.demo will be created", false),
            ("      + id     = (known after apply)", false),
            ("Initializing the backend...", false),
            ("terraform_data.demo: Creating...", false),
        ] {
            assert_eq!(summary_line(line).is_some(), shown, "{line}");
        }
        assert_eq!(summary_line("│ Error: x"), Some("Error: x"));
    }

    #[test]
    fn apply_summary() {
        let c = counts("…\nApply complete! Resources: 1 added, 2 changed, 3 destroyed.\n");
        assert_eq!((c.changed, c.destroyed), (3, 3));
        let d = counts("Destroy complete! Resources: 4 destroyed.\n");
        assert_eq!((d.changed, d.destroyed), (0, 4));
    }

    #[test]
    fn work_dir_names_are_injective_and_keep_plain_names() {
        assert_eq!(dir_name("infra"), "infra");
        assert_eq!(dir_name("apps/infra_x"), "apps__infra_x");
        assert_eq!(dir_name("tf ü"), "tf%20%C3%BC");
        assert_eq!(dir_name("a/b"), "a__b");
        assert_eq!(dir_name("a__b"), "a%5F%5Fb");
        assert_eq!(dir_name("a_/b"), "a%5F__b");
        assert_eq!(dir_name("a/_b"), "a__%5Fb");
        assert_eq!(dir_name("a%20"), "a%2520");
        let names = [
            "a/b", "a__b", "a_/b", "a/_b", "a_b", "a//b", "a_ b", "a%5Fb",
        ];
        let dirs: std::collections::BTreeSet<String> = names.iter().map(|n| dir_name(n)).collect();
        assert_eq!(dirs.len(), names.len(), "{dirs:?}");
        let long = "ü".repeat(200);
        let d = dir_name(&long);
        assert!(d.len() <= 200 && d.contains('~'), "{d}");
        assert_ne!(d, dir_name(&"ü".repeat(201)));
    }
}
