//! The two configuration files: the trusted server config (`<GIT_DIR>/hookops/config.toml`,
//! written by the operator: environments, credentials, policy) and the untrusted tree config
//! (`hookops.toml` in the pushed tree: targets only). Both reject unknown keys, so a pushed tree
//! can never smuggle in a kubeconfig, a context or a tool path.

pub mod vault;
pub mod web;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::vault::VaultConfig;

/// Where hookops keeps its own state inside the git directory.
pub const STATE_DIR: &str = "hookops";

/// Upper bound for any timeout a tree may ask for when the server sets none.
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default)]
    pub environment: Vec<Environment>,
    #[serde(default)]
    pub gate: Gate,
    #[serde(default)]
    pub deploy: DeploySettings,
    #[serde(default)]
    pub sync: Sync,
    #[serde(default)]
    pub signing: Signing,
    pub vault: Option<VaultConfig>,
    #[serde(default)]
    pub alerts: Alerts,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub tools: Tools,
    #[serde(default)]
    pub logs: Logs,
    #[serde(default)]
    pub kustomize: Kustomize,
    #[serde(default)]
    pub web: crate::config::web::Web,
    #[serde(default)]
    pub sandbox: Sandbox,
    #[serde(default)]
    pub helm: Helm,
}

/// `[helm]`: chart targets (docs/helm.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Helm {
    /// Targets may name a chart of a chart repository or an OCI registry (`repo`, `chart`,
    /// `version`), and charts may depend on ones not vendored in `charts/`: downloaded once,
    /// pinned by version, cached by digest. Off: such a target is refused.
    #[serde(default)]
    pub allow_remote: bool,
}

/// `[sandbox]`: renderers of pushed input (`kubectl kustomize`) run in bubblewrap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    /// Off: renderers run unconfined, as hookops' user, seeing the whole server. Only for
    /// hosts where bubblewrap cannot run and pushers are trusted (docs/security.md).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The bubblewrap binary.
    #[serde(default = "default_bwrap")]
    pub bwrap: String,
}

fn default_bwrap() -> String {
    "bwrap".into()
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            enabled: true,
            bwrap: default_bwrap(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    #[default]
    Rollback,
    RolloutUndo,
    Stop,
}

/// What a deploy of an environment does with its Terraform roots (`terraform = …`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TerraformMode {
    /// `init`, `plan`, and `apply` when the plan has changes (what earlier versions did).
    #[default]
    Apply,
    /// `init` and `plan` only: the plan's summary goes into the record, nothing is applied.
    PlanOnly,
    /// Terraform is never run: a changed root fails its target, naming the setting.
    Off,
}

impl fmt::Display for TerraformMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TerraformMode::Apply => "apply",
            TerraformMode::PlanOnly => "plan-only",
            TerraformMode::Off => "off",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    pub branch: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub allowed_namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub allow_cluster_scoped: Option<bool>,
    #[serde(default)]
    pub allow_destroy: bool,
    /// May a Namespace that no file declares any more be deleted (with everything in it)?
    #[serde(default)]
    pub prune_namespaces: bool,
    /// May a CRD that no file declares any more be deleted (with all its custom resources)?
    #[serde(default)]
    pub prune_crds: bool,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub tag_deploys: bool,
    /// Cap on the per-target health timeout a tree may ask for, in seconds.
    pub max_health_timeout: Option<u64>,
    /// Environments as directories: only targets whose path is under (or equal to) one of
    /// these tree paths belong to the environment (docs/environments.md). None: the whole tree.
    pub paths: Option<Vec<String>>,
    /// An object declared more than once with different content: a warning (the last
    /// declaration wins, architecture.md D7) or an error for the targets declaring it.
    #[serde(default)]
    pub duplicates: Duplicates,
    /// Terraform roots: applied, only planned, or never run (a pushed root's `local-exec`
    /// runs as the hook user: docs/security.md).
    #[serde(default)]
    pub terraform: TerraformMode,
    /// `file` (the default): the deploy lock is a file on this server; `lease`: a Lease in the
    /// environment's cluster as well, for several hosts deploying one environment (docs/ha.md).
    #[serde(default)]
    pub lock: LockMode,
    /// lock = "lease": the Lease's namespace (default `hookops-system`) and name (default
    /// `hookops-<env>`); seconds: how long an unrenewed Lease stands (15), how long its holder
    /// goes on without renewing it (10), how often it is renewed or asked for (2).
    pub lease_namespace: Option<String>,
    pub lease_name: Option<String>,
    pub lease_duration: Option<f64>,
    pub lease_renew: Option<f64>,
    pub lease_retry: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Duplicates {
    #[default]
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    #[default]
    File,
    Lease,
}

/// An environment's Lease settings, defaults filled in (`Environment::lease`).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub duration: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

impl Environment {
    /// The environment used when the operator configured none: the default branch, kubectl's
    /// current context.
    pub fn default_for(branch: &str) -> Environment {
        Environment {
            name: "default".into(),
            branch: branch.into(),
            kubeconfig: None,
            context: None,
            allowed_namespaces: None,
            allow_cluster_scoped: None,
            allow_destroy: false,
            prune_namespaces: false,
            prune_crds: false,
            on_failure: OnFailure::Rollback,
            tag_deploys: false,
            max_health_timeout: None,
            paths: None,
            duplicates: Duplicates::Warn,
            terraform: TerraformMode::Apply,
            lock: LockMode::File,
            lease_namespace: None,
            lease_name: None,
            lease_duration: None,
            lease_renew: None,
            lease_retry: None,
        }
    }

    /// The Lease settings with their defaults (client-go's leader election: 15 s, 10 s, 2 s).
    pub fn lease(&self) -> LeaseSettings {
        let secs = |v: Option<f64>, default: f64| Duration::from_secs_f64(v.unwrap_or(default));
        LeaseSettings {
            namespace: self
                .lease_namespace
                .clone()
                .unwrap_or_else(|| "hookops-system".into()),
            name: self.lease_name.clone().unwrap_or_else(|| {
                format!(
                    "hookops-{}",
                    self.name.to_ascii_lowercase().replace('_', "-")
                )
            }),
            duration: secs(self.lease_duration, 15.0),
            renew: secs(self.lease_renew, 10.0),
            retry: secs(self.lease_retry, 2.0),
        }
    }

    /// The Lease keys make sense: names the API server accepts, retry < renew < duration.
    fn check_lease(&self) -> Result<()> {
        for (key, v) in [
            ("lease_duration", self.lease_duration),
            ("lease_renew", self.lease_renew),
            ("lease_retry", self.lease_retry),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && (0.1..=3600.0).contains(&v)) {
                    bail!("{key} must be between 0.1 and 3600 seconds, not {v}");
                }
            }
        }
        let l = self.lease();
        if !(l.retry < l.renew && l.renew < l.duration) {
            bail!(
                "lease_retry ({:?}) < lease_renew ({:?}) < lease_duration ({:?}) must hold",
                l.retry,
                l.renew,
                l.duration
            );
        }
        for (key, v) in [("lease_namespace", &l.namespace), ("lease_name", &l.name)] {
            let ok = !v.is_empty()
                && v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !v.starts_with('-')
                && !v.ends_with('-');
            if !ok {
                bail!("{key} {v:?} is not a Kubernetes name (1-63 of [a-z0-9-], not starting or ending with '-')");
            }
        }
        Ok(())
    }

    /// Whether a tree path (a target's directory, or a changed file) is under (or equal to)
    /// one of the environment's `paths`; always, for an environment without `paths`.
    pub fn includes(&self, path: &str) -> bool {
        let Some(paths) = &self.paths else {
            return true;
        };
        paths.iter().any(|p| {
            path == p
                || (path.len() > p.len()
                    && path.starts_with(p.as_str())
                    && path.as_bytes()[p.len()] == b'/')
        })
    }

    /// Full ref name this environment follows.
    pub fn ref_name(&self) -> String {
        if self.branch.starts_with("refs/") {
            self.branch.clone()
        } else {
            format!("refs/heads/{}", self.branch)
        }
    }

    /// Cluster-scoped objects are allowed unless the operator restricted namespaces and did
    /// not opt back in.
    pub fn cluster_scoped_allowed(&self) -> bool {
        self.allow_cluster_scoped
            .unwrap_or(self.allowed_namespaces.is_none())
    }

    pub fn health_timeout(&self, asked: Option<u64>) -> Duration {
        let cap = self
            .max_health_timeout
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(3600));
        asked
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_HEALTH_TIMEOUT)
            .min(cap)
    }

    pub fn pointer_ref(&self) -> String {
        pointer_ref(&self.name)
    }
}

/// The deployed pointer of an environment.
pub fn pointer_ref(env: &str) -> String {
    format!("refs/hookops/deployed/{env}")
}

/// The inventory of an environment: every object hookops sent and the files declaring it.
pub fn inventory_ref(env: &str) -> String {
    format!("refs/hookops/inventory/{env}")
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    #[default]
    Local,
    Server,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    #[serde(default)]
    pub mode: GateMode,
    #[serde(default)]
    pub require_signed_commits: bool,
    /// allowed_signers file for commit signatures (defaults to gpg.ssh.allowedSignersFile).
    pub allowed_signers: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    #[default]
    Sync,
    Async,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    #[serde(default)]
    pub mode: DeployMode,
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Kubernetes targets that start together and share a namespace setting are applied by one
    /// kubectl process (and one by one only if that call fails).
    #[serde(default = "default_true")]
    pub batch: bool,
    /// Seconds Terraform waits for its state lock before failing.
    #[serde(default = "default_lock_timeout")]
    pub terraform_lock_timeout: u64,
    /// Environments one push deploys at once (each with its own lock, pointer and record).
    #[serde(default = "default_parallel")]
    pub environments_parallel: usize,
    /// This host's name in Leases and records (default: the machine's host name), so that two
    /// hookops hosts are told apart even on one machine (docs/ha.md).
    pub host: Option<String>,
}

fn default_parallel() -> usize {
    4
}

fn default_true() -> bool {
    true
}

fn default_lock_timeout() -> u64 {
    300
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            mode: DeployMode::Sync,
            parallel: default_parallel(),
            batch: true,
            terraform_lock_timeout: default_lock_timeout(),
            environments_parallel: default_parallel(),
            host: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    #[serde(default)]
    pub push: bool,
    /// Remote to push records and pointers to (default "origin").
    pub remote: Option<String>,
    /// Private key for SSH remotes (default: the ssh-agent and OpenSSH's default keys).
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// File holding an HTTPS token.
    pub token_file: Option<PathBuf>,
    /// Other hookops hosts of the same environments (remote names or URLs): their records are
    /// fetched and merged, and each environment's pointer follows the newest successful record
    /// of any of them (docs/ha.md). Nothing is ever pushed to them.
    #[serde(default)]
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    pub key: Option<PathBuf>,
    /// Default allowed_signers for `history` and `status`.
    pub allowed_signers: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    #[serde(default = "default_kubectl")]
    pub kubectl: String,
    #[serde(default = "default_terraform")]
    pub terraform: String,
    /// Renders chart targets (`helm template`) and pulls remote charts.
    #[serde(default = "default_helm")]
    pub helm: String,
    /// More variables of hookops' own environment that children inherit, by name or
    /// `PREFIX*` (backends/process.rs has the built-in list).
    #[serde(default)]
    pub pass_env: Vec<String>,
}

fn default_kubectl() -> String {
    "kubectl".into()
}

fn default_terraform() -> String {
    "terraform".into()
}

fn default_helm() -> String {
    "helm".into()
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            kubectl: default_kubectl(),
            terraform: default_terraform(),
            helm: default_helm(),
            pass_env: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kustomize {
    /// Kustomizations may name remote resources (URLs, git repositories), which kustomize then
    /// fetches from the network while rendering. Off: such a kustomization is refused.
    #[serde(default)]
    pub allow_remote: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// Days to keep per-deploy logs under `<GIT_DIR>/hookops/logs/`.
    #[serde(default = "default_keep_days")]
    pub keep_days: u64,
}

fn default_keep_days() -> u64 {
    14
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            keep_days: default_keep_days(),
        }
    }
}

impl ServerConfig {
    /// Loads `<git_dir>/hookops/config.toml`; a missing file is the empty config.
    pub fn load(git_dir: &Path) -> Result<ServerConfig> {
        let path = git_dir.join(STATE_DIR).join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<ServerConfig> {
        let mut config: ServerConfig =
            toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        config.check(origin)?;
        Ok(config)
    }

    fn check(&mut self, origin: &str) -> Result<()> {
        let mut names = BTreeSet::new();
        for env in &mut self.environment {
            check_name(&env.name)
                .with_context(|| format!("{origin}: environment {:?}", env.name))?;
            if !names.insert(env.name.as_str()) {
                bail!("{origin}: environment {:?} is defined twice", env.name);
            }
            env.check_lease()
                .with_context(|| format!("{origin}: environment {:?}", env.name))?;
            if let Some(paths) = &mut env.paths {
                check_env_paths(paths)
                    .with_context(|| format!("{origin}: environment {:?}: paths", env.name))?;
            }
            if git2::Reference::is_valid_name(&env.ref_name()) {
                continue;
            }
            bail!(
                "{origin}: environment {:?}: invalid branch {:?}",
                env.name,
                env.branch
            );
        }
        if self.deploy.parallel == 0 {
            bail!("{origin}: [deploy] parallel must be at least 1");
        }
        if self.deploy.environments_parallel == 0 {
            bail!("{origin}: [deploy] environments_parallel must be at least 1");
        }
        Ok(())
    }

    /// The environments a ref deploys to. With none configured, the default branch deploys as
    /// `default`.
    pub fn environments_for(
        &self,
        ref_name: &str,
        default_branch: Option<&str>,
    ) -> Vec<Environment> {
        if self.environment.is_empty() {
            return match default_branch {
                Some(b) if b == ref_name => vec![Environment::default_for(b)],
                _ => Vec::new(),
            };
        }
        self.environment
            .iter()
            .filter(|e| e.ref_name() == ref_name)
            .cloned()
            .collect()
    }

    /// All environments, including the implicit `default` one.
    pub fn all_environments(&self, default_branch: Option<&str>) -> Vec<Environment> {
        if self.environment.is_empty() {
            return default_branch
                .map(|b| vec![Environment::default_for(b)])
                .unwrap_or_default();
        }
        self.environment.clone()
    }

    pub fn environment(&self, name: &str, default_branch: Option<&str>) -> Result<Environment> {
        self.all_environments(default_branch)
            .into_iter()
            .find(|e| e.name == name)
            .with_context(|| format!("no environment named {name:?} in the server config"))
    }
}

/// An environment's `paths`: tree paths as `check_tree_path` accepts them (a trailing `/` is
/// dropped), not the root (an environment of the whole tree has no `paths`), at least one.
fn check_env_paths(paths: &mut [String]) -> Result<()> {
    if paths.is_empty() {
        bail!("must name at least one directory (leave `paths` out to deploy the whole tree)");
    }
    for p in paths.iter_mut() {
        let trimmed = p.trim_end_matches('/').to_string();
        if trimmed.is_empty() {
            bail!("{p:?}: the whole tree is what an environment without `paths` deploys");
        }
        check_tree_path(&trimmed).with_context(|| format!("{p:?}"))?;
        *p = trimmed;
    }
    Ok(())
}

/// Names end up in ref names, file names and metric labels: keep them plain.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if !ok {
        bail!("names must be 1-63 characters of [A-Za-z0-9._-], not starting with '.'");
    }
    Ok(())
}

/// A target name declared in hookops.toml: 1-253 characters, any letters and spaces, but no
/// control characters (they would break the one-line output and logs), not absolute and
/// without a `..` part. Discovered names are paths, checked by `check_discovered`.
fn check_target_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 253
        && !name.chars().any(char::is_control)
        && path_like_name(name);
    if !ok {
        bail!(
            "target names must be 1-253 characters without control characters, \
             not starting with '/' and without '..'"
        );
    }
    Ok(())
}

/// A name on one line of output: control characters (possible in a discovered target's
/// path) escaped as `\n`, `\u{1b}` (the one sanitiser, `out::clean_line`). Padding with
/// `{:<20}` counts characters, not bytes.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    crate::out::clean_line(name)
}

fn path_like_name(name: &str) -> bool {
    !name.starts_with('/') && !name.split('/').any(|p| p == "..")
}

/// Discovered targets are named by their path, and any path git accepts is a name: spaces,
/// any letters, quotes, even control characters (names are escaped wherever they land:
/// record JSON, metric labels, work directories, output). Only what no git tree can hold
/// safely is refused.
pub fn check_discovered(targets: &[Target]) -> Result<()> {
    for t in targets {
        if t.name.is_empty() || !path_like_name(&t.name) {
            bail!("discovered targets: target {:?}: not a usable path", t.name);
        }
    }
    Ok(())
}

/// One line: `FILE: line L, column C: message`.
pub fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            anyhow::anyhow!("{origin}: line {line}, column {col}: {message}")
        }
        None => anyhow::anyhow!("{origin}: {message}"),
    }
}

pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

// ---- tree config -------------------------------------------------------------------------

pub const TREE_CONFIG: &str = "hookops.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Kubectl,
    Kustomize,
    Helm,
    Terraform,
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetType::Kubectl => "kubectl",
            TargetType::Kustomize => "kustomize",
            TargetType::Helm => "helm",
            TargetType::Terraform => "terraform",
        })
    }
}

impl TargetType {
    pub fn is_kube(self) -> bool {
        self != TargetType::Terraform
    }
}

/// A Kubernetes Secret generated from Vault values (`[[target.secret]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: TargetType,
    pub namespace: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// terraform: environment variables filled from Vault, `"<path>#<key>"`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// kubectl/kustomize: Secrets generated from Vault values.
    #[serde(default)]
    pub secret: Vec<SecretSpec>,
    /// Other tree paths this target reads (kustomize bases, Terraform modules): a change
    /// there redeploys the target and they are materialised beside it.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Health timeout in seconds (capped by the server's `max_health_timeout`).
    pub timeout: Option<u64>,
    /// Re-create (delete, then apply) an object whose update the server refuses because a
    /// field is immutable, like `hookops.io/force: enabled` on every object of the target.
    #[serde(default)]
    pub force: bool,
    /// Discovered kubectl targets read only their own directory; declared ones recurse.
    #[serde(skip)]
    pub flat: bool,
    /// helm: the release name (default: the chart directory's last component).
    pub release: Option<String>,
    /// helm: values files (repository paths), after `values.yaml` and `values-<env>.yaml`.
    #[serde(default)]
    pub values: Vec<String>,
    /// helm: single values (`--set-json`), after every values file.
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    /// helm: a remote chart, `repo` (https:// chart repository or oci:// registry), `chart`
    /// and an exact `version`, in place of a chart directory at `path`.
    pub repo: Option<String>,
    pub chart: Option<String>,
    pub version: Option<String>,
}

impl Target {
    /// Whether `path` (a file path in the tree) belongs to this target.
    pub fn owns(&self, path: &str) -> bool {
        let inside = |dir: &str| {
            if dir.is_empty() {
                return true;
            }
            path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
        };
        if inside(&self.path) {
            if self.flat {
                let rest = if self.path.is_empty() {
                    path
                } else {
                    &path[self.path.len() + 1..]
                };
                return !rest.contains('/');
            }
            return true;
        }
        self.watch.iter().any(|w| inside(w) || path == w) || self.values.iter().any(|v| v == path)
    }

    /// A chart from a chart repository or registry rather than from the tree.
    pub fn is_remote_chart(&self) -> bool {
        self.repo.is_some()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeConfig {
    #[serde(default)]
    pub target: Vec<Target>,
}

impl TreeConfig {
    pub fn parse(text: &str, origin: &str) -> Result<TreeConfig> {
        let config: TreeConfig = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        check_targets(&config.target, origin)?;
        Ok(config)
    }
}

/// Checks a target list (declared or discovered): names, paths, dependencies, cycles.
pub fn check_targets(targets: &[Target], origin: &str) -> Result<()> {
    let mut names = BTreeSet::new();
    for t in targets {
        check_target_name(&t.name).with_context(|| format!("{origin}: target {:?}", t.name))?;
        if !names.insert(t.name.as_str()) {
            bail!("{origin}: target {:?} is defined twice", t.name);
        }
        check_tree_path(&t.path)
            .with_context(|| format!("{origin}: target {:?}: path {:?}", t.name, t.path))?;
        for w in &t.watch {
            check_tree_path(w)
                .with_context(|| format!("{origin}: target {:?}: watch {:?}", t.name, w))?;
        }
        check_helm_keys(t).with_context(|| format!("{origin}: target {:?}", t.name))?;
        if t.kind != TargetType::Terraform && !t.secrets.is_empty() {
            bail!("{origin}: target {:?}: [target.secrets] is for terraform targets; use [[target.secret]]", t.name);
        }
        if t.kind == TargetType::Terraform && !t.secret.is_empty() {
            bail!("{origin}: target {:?}: [[target.secret]] is for Kubernetes targets; use [target.secrets]", t.name);
        }
        for (var, reference) in &t.secrets {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!(
                    "{origin}: target {:?}: invalid environment variable name {var:?}",
                    t.name
                );
            }
            crate::config::vault::SecretRef::parse(reference)
                .with_context(|| format!("{origin}: target {:?}: secret {var}", t.name))?;
        }
        for s in &t.secret {
            for reference in s.data.values() {
                crate::config::vault::SecretRef::parse(reference).with_context(|| {
                    format!("{origin}: target {:?}: secret {:?}", t.name, s.name)
                })?;
            }
        }
    }
    for t in targets {
        for d in &t.depends_on {
            if !names.contains(d.as_str()) {
                bail!(
                    "{origin}: target {:?} depends on unknown target {d:?}",
                    t.name
                );
            }
        }
    }
    topo_order(targets)
        .map_err(|cycle| anyhow::anyhow!("{origin}: dependency cycle: {}", cycle.join(" -> ")))?;
    Ok(())
}

/// The keys of chart targets: only on them; values files inside the repository; a remote
/// chart named whole (`repo`, `chart`, `version`) with a version that pins one release.
fn check_helm_keys(t: &Target) -> Result<()> {
    let helm_keys = [
        ("release", t.release.is_some()),
        ("values", !t.values.is_empty()),
        ("set", !t.set.is_empty()),
        ("repo", t.repo.is_some()),
        ("chart", t.chart.is_some()),
        ("version", t.version.is_some()),
    ];
    if t.kind != TargetType::Helm {
        if let Some((key, _)) = helm_keys.iter().find(|(_, set)| *set) {
            bail!("{key} is for helm targets (type = \"helm\")");
        }
        return Ok(());
    }
    for v in &t.values {
        check_tree_path(v).with_context(|| format!("values {v:?}"))?;
        if v.is_empty() {
            bail!("values \"\": name a file of the repository");
        }
    }
    for key in t.set.keys() {
        if key.is_empty() || key.chars().any(|c| c.is_control() || c == '=') {
            bail!("set {key:?}: a value name must be non-empty, without '=' or control characters");
        }
    }
    match (&t.repo, &t.chart, &t.version) {
        (None, None, None) => Ok(()),
        (Some(repo), Some(chart), version) => {
            check_chart_repo(repo).with_context(|| format!("repo {repo:?}"))?;
            check_chart_name(chart).with_context(|| format!("chart {chart:?}"))?;
            match version {
                Some(v) => check_pinned(v).with_context(|| format!("version {v:?}")),
                None => bail!(
                    "chart {chart:?} from {repo:?} has no version: remote charts are pinned to \
                     one exact version (version = \"1.2.3\")"
                ),
            }
        }
        _ => bail!("a remote chart needs repo and chart (and an exact version) together"),
    }
}

/// Where a remote chart may come from: an HTTP(S) chart repository or an OCI registry.
pub fn check_chart_repo(repo: &str) -> Result<()> {
    let lower = repo.to_ascii_lowercase();
    let ok = ["https://", "http://", "oci://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len())
        && !repo.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        bail!("must be an https:// (or http://) chart repository or an oci:// registry");
    }
    Ok(())
}

/// A chart's name as chart repositories and registries spell it (never an option or a path).
pub fn check_chart_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 250
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        bail!("a chart name is letters, digits, '-', '_' and '.', starting with a letter or digit");
    }
    Ok(())
}

/// A version that names exactly one chart release (semantic version, optional `v`): ranges,
/// wildcards and `latest` would deploy whatever the repository serves on the day.
pub fn check_pinned(version: &str) -> Result<()> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let pinned = numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'));
    if !pinned {
        bail!(
            "is not one exact version: remote charts are pinned (ranges, wildcards and missing \
             versions are refused; write e.g. \"1.2.3\")"
        );
    }
    Ok(())
}

/// Paths come from an untrusted tree: relative, normalised, no `..`, no `.git`.
pub fn check_tree_path(path: &str) -> Result<()> {
    if path.starts_with('/') || path.starts_with('\\') {
        bail!("must be relative to the repository root, not absolute");
    }
    if path.contains('\\') || path.contains('\0') {
        bail!("must use '/' separators");
    }
    if path.is_empty() {
        return Ok(());
    }
    for part in path.split('/') {
        match part {
            ".." => bail!("must not contain '..'"),
            ".git" => bail!("must not point into .git"),
            "" | "." => bail!("must be a normalised path (no empty or '.' parts)"),
            _ => {}
        }
    }
    Ok(())
}

/// Dependency order (Kahn's algorithm, ties broken by list order); `Err` carries a cycle.
pub fn topo_order(targets: &[Target]) -> std::result::Result<Vec<usize>, Vec<String>> {
    let index: BTreeMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut indegree = vec![0usize; targets.len()];
    for (i, t) in targets.iter().enumerate() {
        indegree[i] = t
            .depends_on
            .iter()
            .filter(|d| index.contains_key(d.as_str()))
            .count();
    }
    let mut order = Vec::with_capacity(targets.len());
    let mut done = vec![false; targets.len()];
    while let Some(next) = (0..targets.len()).find(|&i| !done[i] && indegree[i] == 0) {
        done[next] = true;
        order.push(next);
        for (i, t) in targets.iter().enumerate() {
            if t.depends_on.iter().any(|d| d == &targets[next].name) {
                indegree[i] -= 1;
            }
        }
    }
    if order.len() == targets.len() {
        return Ok(order);
    }
    // Walk dependencies from any blocked target until a name repeats: that loop is the cycle.
    let mut path: Vec<String> = Vec::new();
    let mut current = (0..targets.len()).find(|&i| !done[i]).unwrap_or(0);
    loop {
        let name = targets[current].name.clone();
        if let Some(pos) = path.iter().position(|n| n == &name) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(name);
            return Err(cycle);
        }
        path.push(name);
        let Some(dep) = targets[current]
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()))
            .find(|&&d| !done[d])
        else {
            return Err(path);
        };
        current = *dep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_have_defaults_and_are_checked() {
        let env = |extra: &str| {
            ServerConfig::parse(
                &format!("[[environment]]\nname = \"Prod_1\"\nbranch = \"main\"\n{extra}"),
                "config.toml",
            )
            .map(|c| c.environment[0].clone())
        };
        let e = env("").unwrap();
        assert_eq!(e.lock, LockMode::File);
        let l = e.lease();
        assert_eq!(
            (l.namespace.as_str(), l.name.as_str()),
            ("hookops-system", "hookops-prod-1")
        );
        assert_eq!(
            (l.duration, l.renew, l.retry),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        let e = env("lock = \"lease\"\nlease_duration = 6\nlease_renew = 4\nlease_retry = 0.5\n")
            .unwrap();
        assert_eq!(e.lock, LockMode::Lease);
        assert_eq!(e.lease().retry, Duration::from_millis(500));
        for (bad, says) in [
            ("lease_renew = 20\n", "lease_retry"),
            ("lease_retry = 0\n", "between 0.1 and 3600"),
            ("lease_name = \"Big\"\n", "not a Kubernetes name"),
            ("lock = \"etcd\"\n", "unknown variant"),
        ] {
            let err = format!("{:#}", env(bad).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains("config.toml"), "{err}");
        }
    }

    #[test]
    fn tree_config_rejects_server_keys_with_line() {
        let text = "[[target]]\nname = \"web\"\npath = \"k8s\"\ntype = \"kubectl\"\nkubeconfig = \"/etc/x\"\n";
        let err = TreeConfig::parse(text, "hookops.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hookops.toml: line 5"), "{err}");
        assert!(err.contains("kubeconfig"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn paths_must_stay_inside() {
        for bad in ["/etc", "../x", "a/../b", "a//b", ".git/hooks", "a\\b"] {
            assert!(check_tree_path(bad).is_err(), "{bad}");
        }
        for good in ["", "k8s/web", "infra"] {
            assert!(check_tree_path(good).is_ok(), "{good}");
        }
    }

    fn t(name: &str, deps: &[&str]) -> Target {
        Target {
            name: name.into(),
            path: name.into(),
            kind: TargetType::Kubectl,
            namespace: None,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            secrets: BTreeMap::new(),
            secret: Vec::new(),
            watch: Vec::new(),
            timeout: None,
            force: false,
            flat: false,
            release: None,
            values: Vec::new(),
            set: BTreeMap::new(),
            repo: None,
            chart: None,
            version: None,
        }
    }

    #[test]
    fn cycles_are_named() {
        let targets = vec![t("a", &["c"]), t("b", &["a"]), t("c", &["b"]), t("d", &[])];
        let err = check_targets(&targets, "hookops.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dependency cycle"), "{err}");
        assert!(err.contains("a -> c -> b -> a"), "{err}");
    }

    #[test]
    fn order_follows_dependencies() {
        let targets = vec![t("web", &["infra"]), t("infra", &[])];
        assert_eq!(topo_order(&targets).unwrap(), vec![1, 0]);
    }

    #[test]
    fn target_names_are_paths_git_accepts() {
        let named = |name: &str| Target {
            path: "k8s".into(),
            ..t(name, &[])
        };
        for good in ["my app", "ünï", "say \"hi\"", "a/b c", "."] {
            check_targets(&[named(good)], "hookops.toml").unwrap();
            check_discovered(&[t(good, &[])]).unwrap();
        }
        // Control characters only in a discovered name (a path git accepts).
        check_discovered(&[t("tab\there", &[])]).unwrap();
        assert!(check_targets(&[named("tab\there")], "hookops.toml").is_err());
        for bad in ["", "/etc", "a/../b", ".."] {
            assert!(
                check_targets(&[named(bad)], "hookops.toml").is_err(),
                "{bad}"
            );
            assert!(check_discovered(&[t(bad, &[])]).is_err(), "{bad}");
        }
        assert!(check_targets(&[named(&"x".repeat(254))], "hookops.toml").is_err());
        assert_eq!(printable("a\tb\u{1b}"), "a\\tb\\u{1b}");
    }

    #[test]
    fn duplicate_names_rejected() {
        let err = check_targets(&[t("a", &[]), t("a", &[])], "x").unwrap_err();
        assert!(err.to_string().contains("defined twice"));
    }

    #[test]
    fn ownership() {
        let mut web = t("web", &[]);
        web.path = "k8s/web".into();
        assert!(web.owns("k8s/web/a.yaml"));
        assert!(web.owns("k8s/web/sub/a.yaml"));
        assert!(!web.owns("k8s/webx/a.yaml"));
        web.flat = true;
        assert!(!web.owns("k8s/web/sub/a.yaml"));
    }

    #[test]
    fn server_environments() {
        let c = ServerConfig::parse(
            "[[environment]]\nname = \"prod\"\nbranch = \"main\"\non_failure = \"rollout-undo\"\n",
            "config.toml",
        )
        .unwrap();
        assert_eq!(c.environments_for("refs/heads/main", None).len(), 1);
        assert!(c.environments_for("refs/heads/dev", None).is_empty());
        assert_eq!(c.environment[0].on_failure, OnFailure::RolloutUndo);
        let none = ServerConfig::default();
        assert_eq!(
            none.environments_for("refs/heads/main", Some("refs/heads/main"))[0].name,
            "default"
        );
    }

    #[test]
    fn kustomize_remote_resources_are_off_unless_allowed() {
        assert!(!ServerConfig::default().kustomize.allow_remote);
        let c = ServerConfig::parse("[kustomize]\nallow_remote = true\n", "config.toml").unwrap();
        assert!(c.kustomize.allow_remote);
        let e = ServerConfig::parse("[kustomize]\nallow = true\n", "config.toml").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `allow`"), "{e:#}");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = TreeConfig::parse(&s, "hookops.toml");
            let _ = ServerConfig::parse(&s, "config.toml");
        }

        #[test]
        fn target_tables_never_panic(name in "\\PC{0,12}", path in "\\PC{0,20}", deps in proptest::collection::vec("[a-c]{1,2}", 0..3)) {
            let text = format!(
                "[[target]]\nname = {name:?}\npath = {path:?}\ntype = \"kubectl\"\ndepends_on = {deps:?}\n"
            );
            if let Ok(c) = TreeConfig::parse(&text, "hookops.toml") {
                // Whatever parses is safe to use as a tree path.
                proptest::prop_assert!(check_tree_path(&c.target[0].path).is_ok());
            }
        }
    }

    /// hookops.toml (pushed, untrusted) and the server config under a time budget: a tree
    /// config that parses names only paths inside the repository and unique targets.
    #[test]
    fn fuzz_config() {
        let tokens: Vec<String> = [
            "[[target]]\n",
            "name = \"web\"\n",
            "name = \"a/b\"\n",
            "path = \"k8s/web\"\n",
            "path = \"../x\"\n",
            "path = \"/etc\"\n",
            "path = \"\"\n",
            "type = \"kustomize\"\n",
            "type = \"terraform\"\n",
            "type = \"kubectl\"\n",
            "depends_on = [\"web\"]\n",
            "watch = [\"a/../b\"]\n",
            "namespace = \"n\"\n",
            "[target.secrets]\n",
            "X = \"secret/data/a#b\"\n",
            "[[target.secret]]\n",
            "data = {k = \"p#k\"}\n",
            "[[environment]]\n",
            "branch = \"main\"\n",
            "terraform = \"off\"\n",
            "terraform = \"plan-only\"\n",
            "[sandbox]\nenabled = false\n",
            "[tools]\n",
            "pass_env = [\"A_*\"]\n",
            "\"",
            "=",
            "\n",
            "[",
            "]",
            "\u{1b}",
            ".",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        crate::fuzz::run("hookops.toml", crate::fuzz::assembled(tokens, 16), |s| {
            if let Ok(tree) = TreeConfig::parse(s, "hookops.toml") {
                let mut names = BTreeSet::new();
                for t in &tree.target {
                    assert!(check_tree_path(&t.path).is_ok(), "{t:?}");
                    assert!(!t.path.split('/').any(|p| p == ".."), "{t:?}");
                    assert!(names.insert(t.name.clone()), "{t:?}");
                }
            }
            let _ = ServerConfig::parse(s, "config.toml");
        });
    }
}
