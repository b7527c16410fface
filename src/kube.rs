//! kubectl for one environment: every call carries the environment's kubeconfig, context and a
//! per-environment discovery cache, so nothing depends on the server user's ~/.kube and
//! repeated deploys skip discovery round trips. Manifests always travel on stdin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::config::Environment;
use crate::mask::Masker;
use crate::tools::{Command, Output};

#[derive(Clone)]
pub struct Kubectl {
    pub program: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cache_dir: PathBuf,
    pub masker: Masker,
}

impl Kubectl {
    pub fn new(program: &str, env: &Environment, cache_dir: &Path, masker: Masker) -> Kubectl {
        Kubectl {
            program: program.to_string(),
            kubeconfig: env.kubeconfig.clone(),
            context: env.context.clone(),
            cache_dir: cache_dir.to_path_buf(),
            masker,
        }
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

    fn with_namespace(c: Command, namespace: Option<&str>) -> Command {
        match namespace {
            Some(ns) => c.arg("--namespace").arg(ns),
            None => c,
        }
    }

    /// Renders a kustomization directory (no cluster contact).
    pub fn kustomize(&self, dir: &Path) -> Result<Output> {
        Command::new(&self.program, "kubectl")
            .arg("kustomize")
            .arg(dir.as_os_str())
            .run(&self.masker)
    }

    /// One server-side apply of a manifest stream.
    pub fn apply(
        &self,
        stream: String,
        namespace: Option<&str>,
        dry_run: Option<&str>,
    ) -> Result<Output> {
        let mut c = self.command().args([
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
        Self::with_namespace(c, namespace)
            .stdin(stream.into_bytes())
            .run(&self.masker)
    }

    /// Deletes exactly the named objects (stubs on stdin); already-gone objects are fine.
    pub fn delete(&self, stubs: String, namespace: Option<&str>) -> Result<Output> {
        let c = self
            .command()
            .args(["delete", "--ignore-not-found", "--wait=false", "-f", "-"]);
        Self::with_namespace(c, namespace)
            .stdin(stubs.into_bytes())
            .run(&self.masker)
    }

    /// `kubectl diff`: exit 0 no difference, 1 difference, >1 error.
    pub fn diff(&self, stream: String, namespace: Option<&str>) -> Result<Output> {
        let c = self.command().args([
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

    pub fn rollout_status(
        &self,
        resource: &str,
        namespace: Option<&str>,
        timeout: Duration,
    ) -> Result<Output> {
        let c = self.command().args([
            "rollout".to_string(),
            "status".to_string(),
            resource.to_string(),
            "--watch=true".to_string(),
            format!("--timeout={}s", timeout.as_secs().max(1)),
        ]);
        Self::with_namespace(c, namespace).run(&self.masker)
    }

    pub fn rollout_undo(&self, resource: &str, namespace: Option<&str>) -> Result<Output> {
        let c = self.command().args(["rollout", "undo", resource]);
        Self::with_namespace(c, namespace).run(&self.masker)
    }

    pub fn get_json(&self, resource: &str, namespace: Option<&str>) -> Result<Output> {
        let c = self.command().args(["get", resource, "-o", "json"]);
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
}
