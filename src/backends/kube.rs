//! kubectl for one environment: every call carries the environment's kubeconfig, context and a
//! per-environment discovery cache, so nothing depends on the server user's ~/.kube and
//! repeated deploys skip discovery round trips. Manifests always travel on stdin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::backends::mask::Masker;
use crate::backends::process::{Command, Deadline, Output, KILLED_AT_DEADLINE};
use crate::backends::sandbox::{Render, Sandbox};
use crate::config::Environment;

/// What every cluster write asks before it starts (lock = "lease": the holder's fence,
/// backends/lease.rs): how long it may take, or why it must not start at all. The write then
/// runs with kubectl's `--request-timeout` below that, and is killed at `deadline`.
pub trait Gate: Send + Sync {
    fn permit(&self) -> Result<Duration>;
    fn deadline(&self) -> Deadline;
    /// Why writes stopped, once they did.
    fn lost(&self) -> Option<String>;
}

#[derive(Clone)]
pub struct Kubectl {
    pub program: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cache_dir: PathBuf,
    pub masker: Masker,
    /// Whether kubectl runs with Go's collector tuned (see `GO_GC`).
    pub tune_gc: bool,
    /// Where `kubectl kustomize` renders pushed kustomizations.
    pub sandbox: Sandbox,
    /// `[kustomize] allow_remote`: the renderer may reach the network.
    pub allow_remote: bool,
    /// Asked before every write (apply, create, delete, rollout undo); None: no Lease.
    pub gate: Option<std::sync::Arc<dyn Gate>>,
}

/// kubectl is a short-lived Go program that spends about a quarter of its CPU time collecting
/// garbage it would free by exiting anyway (a 100-object apply: 156 ms of CPU with the default
/// collector, 116 ms without; docs/performance.md). hookops therefore runs it with the collector
/// off up to a heap of 512 MiB, above which Go collects as usual, for the calls that end by
/// themselves in moments (apply, delete, diff, get). Setting `GOGC` or `GOMEMLIMIT` in hookops' own environment turns this off: kubectl
/// then inherits those values.
pub const GO_GC: [(&str, &str); 2] = [("GOGC", "off"), ("GOMEMLIMIT", "512MiB")];

impl Kubectl {
    pub fn new(program: &str, env: &Environment, cache_dir: &Path, masker: Masker) -> Kubectl {
        Kubectl {
            program: program.to_string(),
            kubeconfig: env.kubeconfig.clone(),
            context: env.context.clone(),
            cache_dir: cache_dir.to_path_buf(),
            masker,
            tune_gc: GO_GC.iter().all(|(var, _)| std::env::var_os(var).is_none()),
            sandbox: Sandbox::default(),
            allow_remote: false,
            gate: None,
        }
    }

    /// Runs a call that writes to the cluster: the one place the Lease's fence is asked. The
    /// error of a write the fence refused or stopped is the gate's own (`LeaseLost`), so the
    /// attempt can tell a lost Lease from a failed apply.
    fn write(&self, c: Command) -> Result<Output> {
        let Some(gate) = &self.gate else {
            return c.run(&self.masker);
        };
        let left = gate.permit()?;
        let out = c
            .arg(format!("--request-timeout={}ms", left.as_millis().max(1)))
            .deadline(gate.deadline())
            .run(&self.masker)?;
        if out.code.is_none() && out.stderr.ends_with(KILLED_AT_DEADLINE) {
            gate.permit()?;
            anyhow::bail!("kubectl killed at the Lease's renew deadline");
        }
        Ok(out)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program, "kubectl");
        if let Some(k) = &self.kubeconfig {
            c = c.arg("--kubeconfig").arg(k.as_os_str());
        }
        if let Some(ctx) = &self.context {
            c = c.arg("--context").arg(ctx);
        }
        c.arg("--cache-dir").arg(self.cache_dir.as_os_str())
    }

    /// `command()` for a call that ends by itself in moments (apply, delete, diff, get): with
    /// the collector tuned. Not for a call that may run for minutes (`rollout undo` waits on
    /// nothing, but is rare): without a collector its heap would grow to the limit.
    fn short_command(&self) -> Command {
        let mut c = self.command();
        if self.tune_gc {
            for (var, value) in GO_GC {
                c = c.env(var, value);
            }
        }
        c
    }

    fn with_namespace(c: Command, namespace: Option<&str>) -> Command {
        match namespace {
            Some(ns) => c.arg("--namespace").arg(ns),
            None => c,
        }
    }

    /// Renders the kustomization in `dir` of `root` (the target's materialised closure), in the
    /// sandbox: no cluster contact, nothing outside `root` readable, no network unless
    /// `[kustomize] allow_remote`.
    pub fn kustomize(&self, root: &Path, dir: &str) -> Result<Output> {
        let dir = root.join(dir);
        let render = Render {
            program: &self.program,
            config_key: "kubectl",
            args: vec!["kustomize".into(), dir.clone().into_os_string()],
            root,
            dir: &dir,
            network: self.allow_remote,
        };
        self.sandbox.run(&render, &self.masker)
    }

    /// One server-side apply of a manifest stream.
    pub fn apply(
        &self,
        stream: String,
        namespace: Option<&str>,
        dry_run: Option<&str>,
    ) -> Result<Output> {
        let mut c = self.short_command().args([
            "apply",
            "--server-side",
            "--field-manager=hookops",
            "--force-conflicts",
            "-f",
            "-",
        ]);
        if let Some(mode) = dry_run {
            c = c.arg(format!("--dry-run={mode}"));
        }
        let c = Self::with_namespace(c, namespace).stdin(stream.into_bytes());
        match dry_run {
            Some(_) => c.run(&self.masker),
            None => self.write(c),
        }
    }

    /// `kubectl create -f -` (hook Jobs with `generateName`, create-only objects), printing
    /// the names of what it created (`-o name`).
    pub fn create(&self, stream: String, namespace: Option<&str>) -> Result<Output> {
        let c = self
            .short_command()
            .args(["create", "-o", "name", "-f", "-"]);
        self.write(Self::with_namespace(c, namespace).stdin(stream.into_bytes()))
    }

    /// Deletes the objects and waits until they are gone (a re-create must not race the
    /// deletion).
    pub fn delete_and_wait(&self, stubs: String, namespace: Option<&str>) -> Result<Output> {
        let c = self.short_command().args([
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            "-f",
            "-",
        ]);
        self.write(Self::with_namespace(c, namespace).stdin(stubs.into_bytes()))
    }

    /// Deletes the finished hook Jobs carrying `selector` (and their pods, in the background).
    pub fn delete_selected(&self, kind: &str, selector: &str, namespace: &str) -> Result<Output> {
        self.write(self.short_command().args([
            "delete",
            kind,
            "-l",
            selector,
            "--ignore-not-found",
            "--wait=false",
            "--cascade=background",
            "--namespace",
            namespace,
        ]))
    }

    /// Deletes exactly the named objects (stubs on stdin); already-gone objects are fine.
    /// Prints `kind/name` for each object deleted, nothing for one that was gone.
    pub fn delete(&self, stubs: String, namespace: Option<&str>) -> Result<Output> {
        let c = self.short_command().args([
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-o",
            "name",
            "-f",
            "-",
        ]);
        self.write(Self::with_namespace(c, namespace).stdin(stubs.into_bytes()))
    }

    /// `kubectl diff`: exit 0 no difference, 1 difference, >1 error. Always with plain
    /// `diff -u -N` (whatever the server user's `KUBECTL_EXTERNAL_DIFF`): livediff reads it.
    pub fn diff(&self, stream: String, namespace: Option<&str>) -> Result<Output> {
        let c = self
            .short_command()
            .env("KUBECTL_EXTERNAL_DIFF", "diff -u -N")
            .args([
                "diff",
                "--server-side",
                "--field-manager=hookops",
                "--force-conflicts",
                "-f",
                "-",
            ]);
        Self::with_namespace(c, namespace)
            .stdin(stream.into_bytes())
            .run(&self.masker)
    }

    pub fn rollout_undo(&self, resource: &str, namespace: Option<&str>) -> Result<Output> {
        let c = self.command().args(["rollout", "undo", resource]);
        self.write(Self::with_namespace(c, namespace))
    }

    /// The objects named by the stubs on stdin that exist, as JSON (a `List` for several).
    pub fn get_stream(&self, stubs: String) -> Result<Output> {
        self.command()
            .args(["get", "--ignore-not-found", "-o", "json", "-f", "-"])
            .stdin(stubs.into_bytes())
            .run(&self.masker)
    }

    pub fn get_json(&self, resource: &str, namespace: Option<&str>) -> Result<Output> {
        let c = self.short_command().args(["get", resource, "-o", "json"]);
        Self::with_namespace(c, namespace).run(&self.masker)
    }

    /// The objects of `resource` matching the label `selector`, as a JSON list.
    pub fn get_selected_json(
        &self,
        resource: &str,
        selector: &str,
        namespace: Option<&str>,
    ) -> Result<Output> {
        let c = self
            .short_command()
            .args(["get", resource, "-l", selector, "-o", "json"]);
        Self::with_namespace(c, namespace).run(&self.masker)
    }

    /// Any other kubectl call (doctor's `version`, `auth whoami`, `auth can-i`).
    pub fn raw<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.command().args(args).run(&self.masker)
    }

    /// `raw` with `stdin` (the Lease's own writes, which the Lease client makes unfenced).
    pub fn raw_stdin<I, S>(&self, args: I, stdin: Vec<u8>) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.command().args(args).stdin(stdin).run(&self.masker)
    }

    /// A server-side apply (field manager `hookops`) of objects that are hookops' own state
    /// (the inventory's cluster copy), through the fence like every write.
    pub fn apply_state(&self, stream: Vec<u8>, namespace: &str) -> Result<Output> {
        let c = self.short_command().args([
            "apply",
            "--server-side",
            "--field-manager=hookops",
            "--force-conflicts",
            "--namespace",
            namespace,
            "-f",
            "-",
        ]);
        self.write(c.stdin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_runs_with_the_collector_tuned_unless_told_otherwise() {
        let mut k = Kubectl {
            program: "kubectl".into(),
            kubeconfig: None,
            context: None,
            cache_dir: PathBuf::from("/c"),
            masker: Masker::default(),
            tune_gc: true,
            sandbox: Sandbox::default(),
            allow_remote: false,
            gate: None,
        };
        let env = |k: &Kubectl| k.short_command().env;
        assert_eq!(
            env(&k),
            vec![
                ("GOGC".to_string(), "off".to_string()),
                ("GOMEMLIMIT".to_string(), "512MiB".to_string())
            ]
        );
        assert!(k.command().env.is_empty(), "only short calls are tuned");
        k.tune_gc = false;
        assert!(env(&k).is_empty());
    }
}
