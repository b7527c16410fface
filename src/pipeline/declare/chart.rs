//! What a chart target reads and declares (architecture.md D4 and D5 for `helm` targets): the
//! chart is materialised from git with everything it reads (its local dependencies, copied into
//! its `charts/` as `helm dependency build` would, and its values files), rendered by `helm
//! template` in the sandbox, and its output declared document by document, each named by the
//! template it came from. Values apply in this order, later ones winning: the chart's
//! `values.yaml`, `values-<environment>.yaml` beside it, the target's `values` files, its `set`
//! values. Chart hooks become hookops' hooks (`helm.sh/hook` → `hookops.io/hook`). A remote chart
//! (`repo`, `chart`, `version`) is pulled once into the cache (backends/helm.rs) and rendered
//! from there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use git2::{Repository, Tree};
use serde::Serialize;
use serde_json::Value;

use crate::backends::helm::{self, Capabilities, Helm, Template};
use crate::backends::kube::Kubectl;
use crate::backends::mask::Masker;
use crate::backends::objects;
use crate::backends::repo::Session;
use crate::backends::sandbox::Sandbox;
use crate::config::{check_pinned, Environment, Target, TREE_CONFIG};
use crate::pipeline::manifest::{self, Object};
use crate::pipeline::references::{RefIndex, CHART_FILE};

/// What rendering charts needs besides the tree: Helm, the environment, what the cluster was
/// last seen to serve, and the remote chart policy and cache.
pub struct Charts {
    pub helm: Helm,
    /// The environment's name: `values-<environment>.yaml`.
    pub env: String,
    /// The namespace of the environment's kubeconfig context (`default` without one): a
    /// target without `namespace` renders into it.
    pub namespace: String,
    /// The cluster's capabilities as last learnt (`learn_capabilities`); None: Helm's defaults.
    pub capabilities: Option<Capabilities>,
    /// Whether `capabilities` were learnt recently enough for a deploy (`CAPABILITIES_TTL`).
    pub fresh: bool,
    /// `[helm] allow_remote`.
    pub allow_remote: bool,
    /// Where remote charts are kept, by digest.
    pub cache: PathBuf,
}

/// What chart targets of environment `env` render with in `session`: `[tools] helm` in the
/// renderer sandbox, the cached capabilities of its cluster, the remote chart policy, and the
/// chart cache (`<GIT_DIR>/hookops/work/.charts/`, shared by the environments).
pub fn charts(
    session: &Session,
    env: &Environment,
    masker: &Masker,
    context_namespace: &str,
) -> Result<Charts> {
    let env_dir = session.env_dir(&env.name)?;
    let (capabilities, fresh) = cached_capabilities(&env_dir);
    Ok(Charts {
        helm: Helm {
            program: session.config.tools.helm.clone(),
            sandbox: Sandbox::from_config(&session.config.sandbox),
            masker: masker.clone(),
        },
        env: env.name.clone(),
        namespace: context_namespace.to_string(),
        capabilities,
        fresh,
        allow_remote: session.config.helm.allow_remote,
        cache: session.state_dir().join("work").join(".charts"),
    })
}

/// What `plan` and the record say about a rendered chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartInfo {
    /// The chart's name and version (its `Chart.yaml`, or the remote chart's).
    pub name: String,
    pub version: String,
    pub release: String,
    /// A remote chart's repository or registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// A remote chart's package digest (`sha256:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The values files used, in the order they apply (repository paths).
    pub values: Vec<String>,
    /// Where `.Capabilities` came from: the cluster's discovery, or Helm's defaults.
    pub capabilities: String,
    /// Rendered without cluster discovery learnt within `CAPABILITIES_TTL`.
    #[serde(skip)]
    pub stale: bool,
    /// What of the chart is not deployed, and why (hooks of events hookops has no
    /// counterpart for, test hooks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ChartInfo {
    /// One line for `plan`: `chart web 0.1.0, release web, values charts/web/values.yaml`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "chart {} {}, release {}",
            self.name, self.version, self.release
        );
        if let Some(repo) = &self.repo {
            s.push_str(&format!(" from {repo}"));
        }
        if let Some(d) = &self.digest {
            s.push_str(&format!(" ({d})"));
        }
        if self.values.is_empty() {
            s.push_str(", no values files");
        } else {
            s.push_str(&format!(", values {}", self.values.join(", ")));
        }
        s.push_str(&format!("; .Capabilities: {}", self.capabilities));
        s
    }
}

/// The cluster's capabilities, as cached in the environment's work directory.
const CAPABILITIES_CACHE: &str = "helm-capabilities.json";

/// How long a deploy renders with capabilities learnt earlier before asking the cluster again
/// (a cluster upgrade changes `.Capabilities.KubeVersion`).
pub const CAPABILITIES_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The cached capabilities of an environment's cluster, and whether they are fresh.
pub fn cached_capabilities(env_dir: &Path) -> (Option<Capabilities>, bool) {
    let caps: Option<Capabilities> = std::fs::read(env_dir.join(CAPABILITIES_CACHE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let fresh = caps.as_ref().is_some_and(|c| {
        chrono::DateTime::parse_from_rfc3339(&c.learnt_at)
            .is_ok_and(|at| chrono::Utc::now().signed_duration_since(at) < CAPABILITIES_TTL)
    });
    (caps, fresh)
}

/// Asks the cluster what `.Capabilities` should say (`kubectl version`, `api-versions`,
/// `api-resources`) and caches the answer in the environment's work directory.
pub fn learn_capabilities(kubectl: &Kubectl, env_dir: &Path) -> Result<Capabilities> {
    let version = kubectl.raw(["version", "-o", "json"])?;
    let kube_version = serde_json::from_str::<Value>(&version.stdout)
        .ok()
        .and_then(|v| {
            v.pointer("/serverVersion/gitVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .with_context(|| format!("kubectl version: {}", version.reason()))?;
    let groups = kubectl.raw(["api-versions"])?;
    if !groups.success() {
        bail!("kubectl api-versions: {}", groups.reason());
    }
    let mut api_versions: Vec<String> = groups
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let resources = kubectl.raw(["api-resources", "-o", "wide", "--no-headers"])?;
    for (key, version) in crate::pipeline::kinds::parse_served_versions(&resources.stdout) {
        if let Some((_, kind)) = key.rsplit_once('/') {
            api_versions.push(format!("{version}/{kind}"));
        }
    }
    api_versions.sort();
    api_versions.dedup();
    let caps = Capabilities {
        kube_version,
        api_versions,
        learnt_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let path = env_dir.join(CAPABILITIES_CACHE);
    std::fs::write(&path, serde_json::to_vec(&caps)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(caps)
}

/// One chart target being rendered.
pub struct Render<'a, 'r> {
    pub repo: &'r Repository,
    pub tree: &'a Tree<'r>,
    pub index: &'a RefIndex,
    pub charts: &'a Charts,
    /// The scratch directory to materialise into (emptied first); the sandbox sees only it.
    pub root: &'a Path,
}

/// Charts nested deeper than this through local dependencies are refused (a cycle).
const MAX_DEPTH: usize = 16;

impl Render<'_, '_> {
    /// Renders target `t`: its objects, in the order Helm prints them, and what plan and
    /// record say about it.
    pub fn objects(&self, t: &Target) -> Result<(Vec<Object>, ChartInfo)> {
        let (out, mut info, label) = self.template(t)?;
        let namespace = t.namespace.as_deref();
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for (source, text) in sources(&out) {
            let file = format!("{} (helm)", label(&source));
            match manifest::parse(&text, &file, namespace) {
                Ok(objs) => objects.extend(objs),
                Err(e) => errors.push(crate::out::error_line(&e)),
            }
        }
        if !errors.is_empty() {
            bail!("target {}: {}", t.name, errors.join("; "));
        }
        let objects = hooks(objects, &mut info.notes)?;
        Ok((objects, info))
    }

    /// `helm template` of the target: its output, what is known of the chart, and how to
    /// name a `# Source:` of the output as a repository path.
    #[allow(clippy::type_complexity)]
    fn template(&self, t: &Target) -> Result<(String, ChartInfo, Box<dyn Fn(&str) -> String>)> {
        let root = self.root;
        objects::clean_dir(root)?;
        std::fs::create_dir_all(root)?;
        let charts = self.charts;
        let materialise = |path: &str| -> Result<()> {
            if objects::entry(self.tree, path).is_some() {
                objects::materialise_path(self.repo, self.tree, path, root)
                    .with_context(|| format!("target {}", t.name))?;
            }
            Ok(())
        };
        let mut values: Vec<String> = Vec::new();
        let (chart_path, mut info, label): (PathBuf, ChartInfo, Box<dyn Fn(&str) -> String>) =
            match (&t.repo, &t.chart, &t.version) {
                (Some(repo), Some(chart), Some(version)) => {
                    if !charts.allow_remote {
                        bail!(
                            "{TREE_CONFIG}: target {}: chart {chart:?} from {repo:?} refused: the \
                             server does not fetch charts ([helm] allow_remote = true allows it)",
                            t.name
                        );
                    }
                    if self.has_chart_file(&t.path) {
                        bail!(
                            "{TREE_CONFIG}: target {}: {} holds a {CHART_FILE}: a helm target \
                             renders either the chart at its path or a remote chart (repo, \
                             chart, version), not both",
                            t.name,
                            shown(&t.path)
                        );
                    }
                    let pulled = charts
                        .helm
                        .fetch(&charts.cache, repo, chart, version)
                        .with_context(|| format!("target {}", t.name))?;
                    let dest = root.join(".hookops-chart");
                    std::fs::create_dir_all(&dest)?;
                    let package = dest.join(format!("{chart}-{version}.tgz"));
                    std::fs::copy(&pulled.path, &package)
                        .with_context(|| format!("copying {}", pulled.path.display()))?;
                    // The target's directory holds its values files only.
                    materialise(&t.path)?;
                    let own = join(&t.path, "values.yaml");
                    if objects::entry(self.tree, &own).is_some() {
                        values.push(own);
                    }
                    let shown_pkg = format!("{chart}-{version}.tgz");
                    let info = ChartInfo {
                        name: chart.clone(),
                        version: version.clone(),
                        release: String::new(),
                        repo: Some(repo.clone()),
                        digest: Some(pulled.digest),
                        values: Vec::new(),
                        capabilities: String::new(),
                        stale: false,
                        notes: Vec::new(),
                    };
                    let label = move |source: &str| {
                        let rest = source.split_once('/').map_or(source, |(_, r)| r);
                        format!("{shown_pkg}/{rest}")
                    };
                    (package, info, Box::new(label))
                }
                _ => {
                    let meta = self.chart_meta(&t.path).with_context(|| {
                        format!(
                            "target {}: {} is not a chart (no readable {CHART_FILE})",
                            t.name,
                            shown(&t.path)
                        )
                    })?;
                    materialise(&t.path)?;
                    let closure = self.index.closure(&t.path);
                    for p in closure.paths.iter().filter(|p| **p != t.path) {
                        materialise(p)?;
                    }
                    self.dependencies(&t.path, &root.join(&t.path), 0)?;
                    let base = t.path.clone();
                    let info = ChartInfo {
                        name: meta.0,
                        version: meta.1,
                        release: String::new(),
                        repo: None,
                        digest: None,
                        values: Vec::new(),
                        capabilities: String::new(),
                        stale: false,
                        notes: Vec::new(),
                    };
                    let own = join(&t.path, "values.yaml");
                    if objects::entry(self.tree, &own).is_some() {
                        values.push(own);
                    }
                    let label = move |source: &str| {
                        let rest = source.split_once('/').map_or(source, |(_, r)| r);
                        join(&base, rest)
                    };
                    (root.join(&t.path), info, Box::new(label))
                }
            };
        // values.yaml of a local chart is Helm's own default: named, never passed again.
        let implicit = usize::from(t.repo.is_none() && !values.is_empty());
        let per_env = join(&t.path, &format!("values-{}.yaml", charts.env));
        if objects::entry(self.tree, &per_env).is_some() {
            values.push(per_env);
        }
        for v in &t.values {
            match objects::entry(self.tree, v) {
                Some((_, mode)) if !objects::is_tree(mode) => values.push(v.clone()),
                _ => bail!(
                    "{TREE_CONFIG}: target {}: values {v:?}: no such file in the tree",
                    t.name
                ),
            }
        }
        for v in values.iter().skip(implicit) {
            materialise(v)?;
        }
        for w in &t.watch {
            materialise(w)?;
        }
        let release = self.release(t, &info.name)?;
        let set = t
            .set
            .iter()
            .map(|(k, v)| Ok((k.clone(), serde_json::to_string(&toml_to_json(v))?)))
            .collect::<Result<Vec<_>>>()?;
        let namespace = t.namespace.as_deref().unwrap_or(&charts.namespace);
        let template = Template {
            release: &release,
            chart: &chart_path,
            root,
            namespace,
            capabilities: charts.capabilities.as_ref(),
            values: values.iter().skip(implicit).map(|v| root.join(v)).collect(),
            set,
        };
        let out = charts.helm.template(&template)?;
        if !out.success() {
            bail!(
                "target {}: helm template failed: {}",
                t.name,
                objects::repository_paths(&out.reason(), root)
            );
        }
        info.release = release;
        info.values = values;
        info.stale = !charts.fresh;
        info.capabilities = match &charts.capabilities {
            Some(c) => format!(
                "Kubernetes {} as the cluster's discovery said at {}",
                c.kube_version, c.learnt_at
            ),
            None => format!(
                "Helm's defaults (no cluster discovery is cached for environment {})",
                charts.env
            ),
        };
        Ok((out.stdout, info, label))
    }

    fn has_chart_file(&self, dir: &str) -> bool {
        objects::entry(self.tree, &join(dir, CHART_FILE)).is_some()
    }

    /// The name and version a chart's `Chart.yaml` gives.
    fn chart_meta(&self, dir: &str) -> Result<(String, String)> {
        let doc = self.chart_yaml(dir)?;
        let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok((field("name"), field("version")))
    }

    fn chart_yaml(&self, dir: &str) -> Result<Value> {
        let path = join(dir, CHART_FILE);
        let text = objects::read_path(self.repo, self.tree, &path)?
            .with_context(|| format!("{path}: no such file"))?;
        manifest::check_syntax(&text, &path)?;
        serde_yaml_ng::from_str(&text).with_context(|| format!("{path}: invalid YAML"))
    }

    /// Puts the dependencies of the chart at tree path `dir` (materialised at `at`) that are
    /// not vendored in its `charts/` there, as `helm dependency build` would: a local one
    /// (`file://`) copied from the tree with its own dependencies, a remote one pulled when
    /// the server allows it and its version is pinned.
    fn dependencies(&self, dir: &str, at: &Path, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: local chart dependencies nest deeper than {MAX_DEPTH} (a cycle?)",
                join(dir, CHART_FILE)
            );
        }
        let file = join(dir, CHART_FILE);
        let text = objects::read_path(self.repo, self.tree, &file)?.unwrap_or_default();
        let doc = self.chart_yaml(dir)?;
        let Some(deps) = doc.get("dependencies").and_then(Value::as_array) else {
            return Ok(());
        };
        for d in deps {
            let name = d.get("name").and_then(Value::as_str).unwrap_or("");
            let repo = d
                .get("repository")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim();
            let version = d.get("version").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() || self.vendored(dir, name) {
                continue;
            }
            let at_line = format!(
                "{file}:{}",
                line_of(&text, if repo.is_empty() { name } else { repo })
            );
            let dest = at.join("charts");
            if let Some(raw) = repo.strip_prefix("file://") {
                let path = crate::pipeline::references::resolve(dir, raw).map_err(|why| {
                    anyhow::anyhow!("{at_line}: dependency {name:?}: repository {repo:?} {why}")
                })?;
                if objects::entry(self.tree, &path).is_none() {
                    bail!("{at_line}: dependency {name:?}: repository {repo:?}: {path} is not in the tree");
                }
                let scratch = tempfile::tempdir_in(self.root.parent().unwrap_or(self.root))?;
                objects::materialise(self.repo, self.tree, &path, scratch.path())?;
                std::fs::create_dir_all(&dest)?;
                let copy = dest.join(name);
                std::fs::rename(scratch.path().join(&path), &copy)
                    .with_context(|| format!("placing {path} in {}", dest.display()))?;
                self.dependencies(&path, &copy, depth + 1)?;
                continue;
            }
            let remote = ["https://", "http://", "oci://"]
                .iter()
                .any(|s| repo.to_ascii_lowercase().starts_with(s));
            if !remote {
                bail!(
                    "{at_line}: dependency {name:?} is not vendored in {} and names no chart \
                     repository URL (repository {repo:?}): vendor it (helm dependency build) \
                     and commit {}",
                    join(dir, "charts/"),
                    join(dir, "charts/")
                );
            }
            if !self.charts.allow_remote {
                bail!(
                    "{at_line}: dependency {name:?} from {repo:?} is not vendored in {}, and the \
                     server does not fetch charts ([helm] allow_remote = true allows it; or \
                     vendor it: helm dependency build)",
                    join(dir, "charts/")
                );
            }
            check_pinned(version).with_context(|| {
                format!("{at_line}: dependency {name:?} from {repo:?}: version {version:?}")
            })?;
            crate::config::check_chart_name(name)
                .with_context(|| format!("{at_line}: dependency {name:?}"))?;
            let pulled = self
                .charts
                .helm
                .fetch(&self.charts.cache, repo, name, version)
                .with_context(|| at_line.clone())?;
            std::fs::create_dir_all(&dest)?;
            std::fs::copy(&pulled.path, dest.join(format!("{name}-{version}.tgz")))?;
        }
        Ok(())
    }

    /// Whether `charts/` of the chart at `dir` holds dependency `name` (a directory of that
    /// name, or a `NAME-VERSION.tgz` package).
    fn vendored(&self, dir: &str, name: &str) -> bool {
        let Some((id, mode)) = objects::entry(self.tree, &join(dir, "charts")) else {
            return false;
        };
        if !objects::is_tree(mode) {
            return false;
        }
        let Ok(sub) = self.repo.find_tree(id) else {
            return false;
        };
        let prefix = format!("{name}-");
        sub.iter().any(|e| {
            let Some(n) = e.name() else { return false };
            (objects::is_tree(e.filemode()) && n == name)
                || (n.starts_with(&prefix) && n.ends_with(".tgz"))
        })
    }

    /// The release name: `release` of the target, else the chart directory's last component
    /// (a chart at the repository root, or a remote chart: the chart's name); one Helm refuses
    /// fails the target naming where it came from.
    fn release(&self, t: &Target, chart: &str) -> Result<String> {
        if let Some(r) = &t.release {
            if !helm::valid_release(r) {
                bail!(
                    "{TREE_CONFIG}: target {}: release {r:?} is not a release name Helm accepts \
                     (lowercase letters, digits, '-' and '.', at most 53 characters)",
                    t.name
                );
            }
            return Ok(r.clone());
        }
        let last = t.path.rsplit('/').next().unwrap_or("");
        let (name, from) = if t.repo.is_some() || last.is_empty() {
            (chart, "the chart's name")
        } else {
            (last, "the chart directory's last component")
        };
        if !helm::valid_release(name) {
            bail!(
                "target {}: release name {name:?} ({from}) is not a release name Helm accepts \
                 (lowercase letters, digits, '-' and '.', at most 53 characters): set release \
                 for the target in {TREE_CONFIG}",
                t.name
            );
        }
        Ok(name.to_string())
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn shown(dir: &str) -> &str {
    if dir.is_empty() {
        "."
    } else {
        dir
    }
}

/// The 1-based line of the first line containing `needle` (1 when none does).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

/// `set` values as Helm's `--set-json` reads them.
fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// `helm template`'s output cut at its `# Source: CHART/PATH` lines: each template's
/// documents with the template's path (as Helm names it, under the chart's name).
fn sources(out: &str) -> Vec<(String, String)> {
    let blank = |text: &str| text.lines().all(|l| matches!(l.trim(), "" | "---"));
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut current = (String::new(), String::new());
    for line in out.split_inclusive('\n') {
        if let Some(src) = line.strip_prefix("# Source: ") {
            if !blank(&current.1) {
                parts.push(std::mem::take(&mut current));
            }
            current = (src.trim().to_string(), String::new());
            current.1.push('\n');
            continue;
        }
        current.1.push_str(line);
    }
    if !blank(&current.1) {
        parts.push(current);
    }
    parts
}

const HOOK: &str = "helm.sh/hook";
const HOOK_WEIGHT: &str = "helm.sh/hook-weight";
const HOOK_DELETE: &str = "helm.sh/hook-delete-policy";
const RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// Chart hooks as hookops runs them (docs/helm.md): `pre-install`/`pre-upgrade` → a
/// pre-deploy hook, `post-install`/`post-upgrade` → post-deploy (both kinds of event: two
/// runs), in `helm.sh/hook-weight` order; `before-hook-creation` and `hook-succeeded` as
/// `hookops.io/hook-delete`. Test hooks and hooks of events hookops has no counterpart for
/// (delete, rollback) are not deployed, and said so in `notes`. A hook that is not a Job, or
/// that asks `hook-failed`, fails the target. `helm.sh/resource-policy: keep` is
/// `hookops.io/prune: disabled`.
fn hooks(objects: Vec<Object>, notes: &mut Vec<String>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    let mut hooks: Vec<(i64, usize, Object)> = Vec::new();
    let mut errors = Vec::new();
    for mut o in objects {
        let annotation = |o: &Object, key: &str| {
            o.body
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if annotation(&o, RESOURCE_POLICY).is_some_and(|p| p.trim() == "keep") {
            set_annotation(&mut o, "hookops.io/prune", "disabled");
        }
        let Some(events) = annotation(&o, HOOK) else {
            out.push(o);
            continue;
        };
        let events: Vec<&str> = events
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let pre = events
            .iter()
            .any(|e| matches!(*e, "pre-install" | "pre-upgrade"));
        let post = events
            .iter()
            .any(|e| matches!(*e, "post-install" | "post-upgrade"));
        if !pre && !post {
            notes.push(format!(
                "{}: {} {}: not deployed: {HOOK}: {} (hookops runs pre-install/pre-upgrade and \
                 post-install/post-upgrade hooks; test, delete and rollback hooks never)",
                o.source,
                o.id.kind,
                o.id.name,
                events.join(",")
            ));
            continue;
        }
        if !(o.id.group == "batch" && o.id.kind == "Job") {
            errors.push(format!(
                "{}: {} {}: {HOOK} on a {}: hookops runs chart hooks as Jobs only (hookops' \
                 hooks are Jobs); disable it in the chart's values or make it a Job",
                o.source, o.id.kind, o.id.name, o.id.kind
            ));
            continue;
        }
        let weight = match annotation(&o, HOOK_WEIGHT) {
            None => 0,
            Some(w) => match w.trim().parse::<i64>() {
                Ok(w) => w,
                Err(_) => {
                    errors.push(format!(
                        "{}: {} {}: {HOOK_WEIGHT}: {w:?} is not an integer",
                        o.source, o.id.kind, o.id.name
                    ));
                    continue;
                }
            },
        };
        let policy = annotation(&o, HOOK_DELETE).unwrap_or_default();
        let policies: Vec<&str> = policy
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(bad) = policies
            .iter()
            .find(|p| !matches!(**p, "before-hook-creation" | "hook-succeeded"))
        {
            errors.push(format!(
                "{}: {} {}: {HOOK_DELETE}: {bad}: hookops keeps a failed hook Job for its logs \
                 until the hook runs again (before-hook-creation and hook-succeeded are honoured)",
                o.source, o.id.kind, o.id.name
            ));
            continue;
        }
        // Helm's default is before-hook-creation.
        let before = policies.is_empty() || policies.contains(&"before-hook-creation");
        let after = policies.contains(&"hook-succeeded");
        let delete = match (before, after) {
            (true, true) => "before-run,on-success",
            (false, true) => "on-success",
            _ => "before-run",
        };
        set_annotation(&mut o, "hookops.io/hook-delete", delete);
        let n = hooks.len();
        for (which, yes) in [("pre-deploy", pre), ("post-deploy", post)] {
            if yes {
                let mut h = o.clone();
                set_annotation(&mut h, "hookops.io/hook", which);
                hooks.push((weight, n, h));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    // Helm runs the hooks of one event by weight, then by name.
    hooks.sort_by(|a, b| (a.0, &a.2.id.name, a.1).cmp(&(b.0, &b.2.id.name, b.1)));
    out.extend(hooks.into_iter().map(|(_, _, h)| h));
    Ok(out)
}

fn set_annotation(o: &mut Object, key: &str, value: &str) {
    let Some(meta) = o.body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(map) = annotations.as_object_mut() {
        map.insert(key.to_string(), Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, annotations: &str) -> String {
        format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations:\n{annotations}spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: x, image: x}}]\n")
    }

    fn parse(text: &str) -> Vec<Object> {
        manifest::parse(text, "c/templates/x.yaml (helm)", Some("ns")).unwrap()
    }

    #[test]
    fn output_is_cut_at_each_source() {
        let out = "---\n# Source: web/crds/crd.yaml\nkind: A\n---\n# Source: web/templates/a.yaml\nkind: B\n---\nkind: C\n";
        let parts = sources(out);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "web/crds/crd.yaml");
        assert_eq!(parts[1].0, "web/templates/a.yaml");
        assert!(parts[1].1.contains("kind: B") && parts[1].1.contains("kind: C"));
    }

    #[test]
    fn chart_hooks_become_hookops_hooks_in_weight_order() {
        let text = [
            job("late", "    helm.sh/hook: pre-upgrade,pre-install\n    helm.sh/hook-weight: \"5\"\n"),
            job("early", "    helm.sh/hook: pre-install\n    helm.sh/hook-weight: \"-5\"\n    helm.sh/hook-delete-policy: hook-succeeded\n"),
            job("both", "    helm.sh/hook: pre-upgrade,post-upgrade\n    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded\n"),
            job("test", "    helm.sh/hook: test\n"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  annotations:\n    helm.sh/resource-policy: keep\n".to_string(),
        ]
        .join("---\n");
        let mut notes = Vec::new();
        let objs = hooks(parse(&text), &mut notes).unwrap();
        let shown: Vec<String> = objs
            .iter()
            .map(|o| {
                let c = crate::pipeline::annotations::controls(o).unwrap();
                format!(
                    "{} {:?} {:?}",
                    o.id.name,
                    c.hook.map(|h| h.as_str()),
                    (
                        c.hook_delete.before_run,
                        c.hook_delete.on_success,
                        c.prune_disabled
                    )
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "kept None (true, false, true)",
                "early Some(\"pre-deploy\") (false, true, false)",
                "both Some(\"pre-deploy\") (true, true, false)",
                "both Some(\"post-deploy\") (true, true, false)",
                "late Some(\"pre-deploy\") (true, false, false)",
            ]
        );
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("Job test: not deployed: helm.sh/hook: test"),
            "{notes:?}"
        );
    }

    #[test]
    fn hooks_hookops_cannot_run_fail_with_file_and_reason() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pre\n  annotations:\n    helm.sh/hook: pre-install\n";
        let e = hooks(parse(cm), &mut Vec::new()).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "c/templates/x.yaml (helm):1: ConfigMap pre: helm.sh/hook on a ConfigMap"
            ),
            "{e}"
        );
        let failed = job(
            "j",
            "    helm.sh/hook: post-install\n    helm.sh/hook-delete-policy: hook-failed\n",
        );
        let e = hooks(parse(&failed), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("helm.sh/hook-delete-policy: hook-failed"), "{e}");
        let weight = job(
            "j",
            "    helm.sh/hook: post-install\n    helm.sh/hook-weight: heavy\n",
        );
        let e = hooks(parse(&weight), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an integer"), "{e}");
    }

    #[test]
    fn set_values_keep_their_types() {
        let v: toml::Value =
            toml::from_str("a = \"true\"\nb = 3\nc = [1, \"x\"]\nd = {e = false}\n").unwrap();
        assert_eq!(
            serde_json::to_string(&toml_to_json(&v)).unwrap(),
            r#"{"a":"true","b":3,"c":[1,"x"],"d":{"e":false}}"#
        );
    }
}
