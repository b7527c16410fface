//! What a target reads and declares (architecture.md, D4 and D5): a kubectl target its manifest
//! files, one inventory *unit* per file; a kustomize target the output of `kubectl kustomize`
//! over a scratch copy of its directory and everything it references, one unit; a chart target
//! the output of `helm template` the same way (`chart.rs`), one unit; a target's
//! Vault-generated Secrets, one unit. Every broken file of a target is reported, not just the
//! first (D9).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{Repository, Tree};

use crate::backends::kube::Kubectl;
use crate::backends::objects;
use crate::config::{SecretSpec, Target, TargetType, TREE_CONFIG};
use crate::pipeline::annotations;
use crate::pipeline::declare::chart::{self, ChartInfo, Charts};
use crate::pipeline::diff::Changes;
use crate::pipeline::inventory;
use crate::pipeline::manifest::{self, Object, ObjectId};
use crate::pipeline::references::RefIndex;

/// Objects by inventory unit (a manifest file, a kustomization, a target's Secrets), each
/// unit's objects in declaration order.
pub type Units = Vec<(String, Vec<Object>)>;

/// Inputs for rendering kustomize targets.
pub struct Renderer<'a> {
    pub kubectl: &'a Kubectl,
    /// A private scratch directory.
    pub scratch: &'a Path,
    /// `[kustomize] allow_remote`: kustomizations may name remote resources.
    pub allow_remote: bool,
    /// Helm and what chart targets render with; None: chart targets fail.
    pub charts: Option<&'a Charts>,
}

/// Reads the targets of one tree.
pub struct Reader<'a, 'r> {
    pub repo: &'r Repository,
    pub tree: &'a Tree<'r>,
    /// The reference index of that tree (kustomize closures).
    pub index: &'a RefIndex,
    /// The change being deployed: an incremental read parses only its files.
    pub changes: &'a Changes,
    pub renderer: &'a Renderer<'a>,
    /// Names the scratch directory of this tree's renders (`new`, `old`).
    pub side: &'a str,
    /// What each chart target rendered (by target name), for plan and record.
    pub charts: RefCell<BTreeMap<String, ChartInfo>>,
}

impl Reader<'_, '_> {
    /// The units of a Kubernetes target: for a kubectl target one per changed manifest file
    /// (every file when `full`), for kustomize the whole rendered output. Every broken file is
    /// reported, not just the first; so are every `hookops.io/` annotation error and every
    /// name that is not UTF-8 (D3.3).
    pub fn units(&self, t: &Target, full: bool) -> Result<Units> {
        let units = match t.kind {
            TargetType::Kubectl => {
                let mut errors = self.bad_names(t);
                let files: Vec<String> = if full {
                    match self.listing_of(t) {
                        Ok((files, bad)) => {
                            for e in bad {
                                if !errors.contains(&e) {
                                    errors.push(e);
                                }
                            }
                            files
                        }
                        Err(e) => {
                            let e = crate::out::error_line(&e);
                            if !errors.contains(&e) {
                                errors.push(e);
                            }
                            bail!("{}", errors.join("; "));
                        }
                    }
                } else {
                    self.changes
                        .paths
                        .iter()
                        .filter(|p| manifest::is_manifest_path(p) && t.owns(p))
                        .filter(|p| p.starts_with(&t.path) || t.path.is_empty())
                        .filter(|p| !p.rsplit('/').next().is_some_and(|n| n.starts_with('.')))
                        .cloned()
                        .collect()
                };
                let mut units = Vec::new();
                for f in &files {
                    match self.file(f, t.namespace.as_deref()) {
                        Ok(Some(objs)) => units.push((inventory::file_unit(f), objs)),
                        Ok(None) => {}
                        Err(e) => errors.push(crate::out::error_line(&e)),
                    }
                }
                if !errors.is_empty() {
                    bail!("{}", errors.join("; "));
                }
                units
            }
            TargetType::Kustomize => {
                let errors = self.bad_names(t);
                if !errors.is_empty() {
                    bail!("{}", errors.join("; "));
                }
                let rendered = self.render(t)?;
                let objects =
                    manifest::parse(&rendered, &format!("{} (kustomize)", t.path), ns(t))?;
                vec![(inventory::kustomize_unit(&t.path), objects)]
            }
            TargetType::Helm => {
                let errors = self.bad_names(t);
                if !errors.is_empty() {
                    bail!("{}", errors.join("; "));
                }
                vec![(inventory::helm_unit(&t.name), self.chart(t)?)]
            }
            TargetType::Terraform => Vec::new(),
        };
        // Every object's hookops.io/ annotations are valid, or the target fails whole.
        let errors: Vec<String> = units
            .iter()
            .flat_map(|(_, objs)| objs)
            .filter_map(|o| annotations::controls(o).err())
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(units)
    }

    /// One unit of `t`, read alone: the winning copy of an object declared more than once (D7)
    /// lives in a unit this change did not touch.
    pub fn unit(&self, t: &Target, unit: &str) -> Result<Vec<Object>> {
        match unit.split_once(':') {
            Some(("f", path)) => Ok(self.file(path, ns(t))?.unwrap_or_default()),
            Some(("k", _)) => {
                let rendered = self.render(t)?;
                manifest::parse(&rendered, &format!("{} (kustomize)", t.path), ns(t))
            }
            Some(("h", _)) => self.chart(t),
            Some(("s", _)) => Ok(secret_objects(t)),
            _ => bail!("bad inventory unit {unit:?}"),
        }
    }

    /// The manifest files a kubectl target reads (D4): its own directory's (discovered), or
    /// everything under it (declared); hidden ones never.
    fn files_of(&self, t: &Target) -> Result<Vec<String>> {
        let (files, _) = self.listing_of(t)?;
        Ok(files)
    }

    /// The manifest files of `t`, and errors for its manifest files whose names are not UTF-8
    /// (D3.3): a name git cannot give as text fails the target, beside every other broken
    /// file, and only when it looks like a manifest.
    fn listing_of(&self, t: &Target) -> Result<(Vec<String>, Vec<String>)> {
        let listing = objects::list_under(self.repo, self.tree, &t.path, !t.flat)?;
        let mine = |p: &String| {
            manifest::is_manifest_path(p) && t.owns(p) && !p.split('/').any(|c| c.starts_with('.'))
        };
        let files = listing
            .files
            .into_iter()
            .map(|f| f.path)
            .filter(mine)
            .collect();
        let bad = listing
            .bad_names
            .iter()
            .filter(|p| mine(p))
            .map(|p| objects::not_utf8(p))
            .collect();
        Ok((files, bad))
    }

    /// The objects `t`'s readable manifest files declare, for a target that fails (D9): what
    /// it deploys once fixed includes them, so none is pruned meanwhile. Files that do not
    /// parse are skipped (the failure names them); for a kustomize or chart target every
    /// manifest file of its closure is read as it stands (a superset: more is kept, never less).
    pub fn declared_anyway(&self, t: &Target, closure: &[String]) -> Vec<Object> {
        let mut files: Vec<String> = match t.kind {
            TargetType::Kubectl => self.listing_of(t).map(|(f, _)| f).unwrap_or_default(),
            _ => closure
                .iter()
                .flat_map(
                    |p| match objects::list_under(self.repo, self.tree, p, true) {
                        Ok(l) if !l.files.is_empty() => {
                            l.files.into_iter().map(|f| f.path).collect()
                        }
                        _ => vec![p.clone()],
                    },
                )
                .filter(|p| manifest::is_manifest_path(p))
                .collect(),
        };
        files.sort();
        files.dedup();
        files
            .iter()
            .filter_map(|f| self.file(f, ns(t)).ok().flatten())
            .flatten()
            .collect()
    }

    /// The changed manifest paths of `t` whose names are not UTF-8 (D3.3), as errors.
    fn bad_names(&self, t: &Target) -> Vec<String> {
        self.changes
            .bad_names
            .iter()
            .filter(|(shown, dir)| {
                manifest::is_manifest_path(shown)
                    && !shown.split('/').any(|c| c.starts_with('.'))
                    && (t.owns(&format!("{dir}/x")) || (dir.is_empty() && t.path.is_empty()))
                    && (!t.flat || **dir == t.path)
            })
            .map(|(shown, _)| objects::not_utf8(shown))
            .collect()
    }

    /// The objects of one manifest file of the tree (None: it is not there).
    fn file(&self, path: &str, ns: Option<&str>) -> Result<Option<Vec<Object>>> {
        let Some(text) = objects::read_path(self.repo, self.tree, path)? else {
            return Ok(None);
        };
        let objs = manifest::parse(&text, path, ns)?;
        Ok(Some(objs))
    }

    /// The hook Jobs of a kubectl target's files other than `read` (which were parsed whole).
    /// Only files that mention `hookops.io/hook` are parsed; one that does not parse is
    /// skipped here (its own change reports it).
    pub fn hooks_elsewhere(&self, t: &Target, read: &[String]) -> Vec<Object> {
        let Ok(files) = self.files_of(t) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in files {
            if read.contains(&f) {
                continue;
            }
            let Ok(Some(text)) = objects::read_path(self.repo, self.tree, &f) else {
                continue;
            };
            if !text.contains("hookops.io/hook") {
                continue;
            }
            if let Ok(objs) = manifest::parse(&text, &f, ns(t)) {
                out.extend(
                    objs.into_iter()
                        .filter(|o| annotations::controls(o).is_ok_and(|c| c.hook.is_some())),
                );
            }
        }
        out
    }

    /// `helm template` of a scratch copy of the chart and what it reads (`chart.rs`).
    fn chart(&self, t: &Target) -> Result<Vec<Object>> {
        let Some(charts) = self.renderer.charts else {
            bail!("target {}: chart targets cannot be rendered here", t.name);
        };
        let render = chart::Render {
            repo: self.repo,
            tree: self.tree,
            index: self.index,
            charts,
            root: &self.renderer.scratch.join(self.side),
        };
        let (objects, info) = render.objects(t)?;
        self.charts.borrow_mut().insert(t.name.clone(), info);
        Ok(objects)
    }

    /// `kubectl kustomize` of a scratch copy of the target and everything it references,
    /// laid out at their repository paths; kustomize's messages name repository paths.
    fn render(&self, t: &Target) -> Result<String> {
        let root = self.renderer.scratch.join(self.side);
        let closure = self.index.closure(&t.path);
        objects::clean_dir(&root)?;
        std::fs::create_dir_all(&root)?;
        objects::materialise(self.repo, self.tree, &t.path, &root)
            .with_context(|| format!("target {}", t.name))?;
        let extra = closure.paths.iter().filter(|p| **p != t.path);
        for p in extra.chain(&t.watch) {
            if objects::entry(self.tree, p).is_some() {
                objects::materialise_path(self.repo, self.tree, p, &root)
                    .with_context(|| format!("target {}", t.name))?;
            }
        }
        let out = self.renderer.kubectl.kustomize(&root, &t.path)?;
        if !out.success() {
            // The target is named by whoever reports its error (its result line, the gate).
            bail!(
                "kustomize failed: {}",
                objects::repository_paths(&out.reason(), &root)
            );
        }
        Ok(out.stdout)
    }
}

fn ns(t: &Target) -> Option<&str> {
    t.namespace.as_deref()
}

/// Placeholder objects standing for the Vault-generated Secrets of a target (identity only).
pub fn secret_objects(t: &Target) -> Vec<Object> {
    t.secret
        .iter()
        .map(|s| Object {
            id: secret_id(t, s),
            api_version: "v1".into(),
            body: serde_json::Value::Null,
            cluster: false,
            source: format!("{TREE_CONFIG} [[target.secret]] {}", s.name),
        })
        .collect()
}

pub fn secret_id(t: &Target, s: &SecretSpec) -> ObjectId {
    ObjectId {
        group: String::new(),
        kind: "Secret".into(),
        namespace: s.namespace.clone().or_else(|| t.namespace.clone()),
        name: s.name.clone(),
    }
}
