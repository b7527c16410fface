//! References between directories of the tree: the bases, components and input files a
//! kustomization reads, and the local modules a Terraform configuration calls. One index answers
//! which directories are bases or modules (another directory references them, so they are never
//! targets of their own), which directories must re-deploy when a path changes (`users_of`,
//! transitively), and what a target needs materialised (`closure`).
//!
//! The index is built by listing the whole tree only when nothing is known (a first deploy, or
//! no stored index for the old side of the diff); otherwise it is updated from the diff, reading
//! only the directories whose kustomization or `.tf` files changed. Between pushes it lives in
//! git under `refs/hookops/references`: a commit whose tree holds one `<commit>.json` per
//! described commit (the deployed pointers and the newest deploy) and whose message names them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use git2::{Oid, Repository, Tree};
use serde::{Deserialize, Serialize};

use crate::backends::objects;
use crate::pipeline::cache::Cache;
use crate::pipeline::diff::Changes;
use crate::pipeline::manifest;

/// Where the index is kept between pushes.
pub const INDEX_REF: &str = "refs/hookops/references";

/// Bumped when the stored format or what is indexed changes: older indexes are rebuilt.
/// 2: kustomization fields read case-insensitively, every file-reading field, and server-local
/// Terraform module sources refused (an index of 1 could hide `Resources: [../../..]`).
/// 3: a chart's local dependencies (`Chart.yaml`, `repository: file://…`).
const FORMAT: u32 = 3;

/// The file names kustomize looks for in a directory.
pub const KUSTOMIZATION: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The file that makes a directory a Helm chart; its `dependencies` may name local charts.
pub const CHART_FILE: &str = "Chart.yaml";

/// Whether a file name makes its directory's references change: a kustomization, a chart's
/// `Chart.yaml` or a Terraform configuration file.
pub fn is_reference_file(name: &str) -> bool {
    KUSTOMIZATION.contains(&name) || name == CHART_FILE || is_tf_file(name)
}

/// Terraform reads `*.tf` except hidden and editor backup files.
fn is_tf_file(name: &str) -> bool {
    name.ends_with(".tf") && !name.starts_with('.') && !name.starts_with('#')
}

/// One local reference from a directory to a repository path (a directory or a file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ref {
    /// The repository path referenced.
    pub path: String,
    /// As written in the file.
    pub raw: String,
    /// `file:line` of the reference.
    pub at: String,
    /// Terraform: the calling `module` block's name (its directory must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Helm: the name of the chart dependency (`file://` repository) that names this chart
    /// (its directory must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
}

/// What one directory references.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirRefs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<Ref>,
    /// Kustomize references to remote resources (URLs, git repositories): `path` is the URL.
    /// Refused unless the server config allows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<Ref>,
    /// References refused whatever the server says, as `file:line: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl DirRefs {
    fn is_empty(&self) -> bool {
        self.refs.is_empty() && self.remote.is_empty() && self.problems.is_empty()
    }
}

/// The reference index of one tree.
#[derive(Debug, Clone, Default)]
pub struct RefIndex {
    /// Directories with references, by repository path.
    dirs: BTreeMap<String, DirRefs>,
    /// Referenced path → the directories referencing it.
    users: BTreeMap<String, BTreeSet<String>>,
    /// The stored blob this index was read from, while it is unchanged.
    blob: Option<Oid>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    dirs: BTreeMap<String, DirRefs>,
}

/// What a target needs besides its own directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Repository paths to materialise (directories whole, files alone), sorted, none inside
    /// another; the target's own directory first among them.
    pub paths: Vec<String>,
    /// Every local reference followed.
    pub refs: Vec<Ref>,
    /// Remote references met on the way.
    pub remote: Vec<Ref>,
    /// Refused references met on the way.
    pub problems: Vec<String>,
}

/// `path` itself or something inside it (`""` is the repository root).
pub fn covers(dir: &str, path: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(path.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Resolves `raw`, written in directory `dir`, to a repository path; refuses absolute paths and
/// paths that climb out of the repository.
pub fn resolve(dir: &str, raw: &str) -> std::result::Result<String, &'static str> {
    if raw.starts_with('/') || raw.starts_with('\\') {
        return Err("is an absolute path: only paths inside the repository are read");
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("climbs out of the repository");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A Terraform module source that go-getter would read from the server's own file system:
/// an absolute or home path, `file:` URLs, and forced getters (`git::`, `hg::`, `file::`…)
/// given a path or a `file:` URL rather than a network address (`git::file:///srv/git/x.git`,
/// `git::/srv/git/x.git`, `git::../../other.git`).
fn server_local(raw: &str) -> bool {
    let local = |s: &str| {
        let lower = s.to_ascii_lowercase();
        s.starts_with(['/', '\\', '~', '.'])
            || lower.starts_with("file:")
            || (s.len() > 1 && s.as_bytes()[0].is_ascii_alphabetic() && s.as_bytes()[1] == b':')
    };
    if local(raw) && !raw.starts_with("./") && !raw.starts_with("../") {
        return true;
    }
    match raw.split_once("::") {
        Some((getter, rest)) if getter.chars().all(|c| c.is_ascii_alphanumeric()) => local(rest),
        _ => false,
    }
}

/// A kustomize entry that names a remote resource whatever the tree holds.
fn is_url(raw: &str) -> bool {
    raw.contains("://")
        || raw.starts_with("git@")
        || raw.starts_with("git::")
        || raw.contains("?ref=")
        || raw.contains("?version=")
        || raw.contains("?timeout=")
}

/// An entry kustomize would try as a git repository when no such local path exists: its first
/// segment looks like a host name (`github.com/org/repo`).
pub fn host_like(raw: &str) -> bool {
    match raw.split_once('/') {
        Some((first, _)) => first.contains('.') && first != "." && first != "..",
        None => false,
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Line of `value` in a YAML file, searched from the line of the top-level `key`.
fn yaml_line(text: &str, key: &str, value: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or(0);
    let strip = |l: &str| l.split(" #").next().unwrap_or(l).to_string();
    (start..lines.len())
        .chain(0..start)
        .find(|&i| strip(lines[i]).contains(value))
        .or_else(|| (start < lines.len()).then_some(start))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Strings of a field that holds a list of them or one.
fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The mappings of a field that holds a list of them (`patches`, generators, charts).
fn objects_in(
    v: &serde_json::Value,
) -> impl Iterator<Item = &serde_json::Map<String, serde_json::Value>> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_object())
}

/// A field name as Go's encoding/json compares it with a struct's: case-insensitively, with
/// Unicode simple case folding (`bytes.EqualFold`). Field names are ASCII, and the only other
/// characters that fold onto ASCII letters are KELVIN SIGN (k) and LONG S (s).
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{212a}' => 'k',
            '\u{17f}' => 's',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether a YAML merge key (`<<`) is anywhere in the document, block or flow style: read as
/// written it is a plain key, kustomize's YAML library merges it.
fn has_merge_key(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k == "<<" || has_merge_key(v)),
        serde_json::Value::Array(a) => a.iter().any(has_merge_key),
        _ => false,
    }
}

/// The line where `key` is written as a mapping key (`key:` after indentation or `- `).
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches(['-', ' ']);
            [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|k| t.starts_with(k.as_str()))
        })
        .map_or(1, |i| i + 1)
}

/// The kustomization fields that are lists of paths (or URLs).
const PATH_LISTS: [&str; 9] = [
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "patchesStrategicMerge",
];

/// A kustomization being read.
struct Kust<'t> {
    file: &'t str,
    text: &'t str,
}

impl Kust<'_> {
    /// The values of kustomize field `name` in `map`, each with its key as written: keys
    /// match as encoding/json matches them (`fold`). Two spellings of one field are a problem.
    fn field<'v>(
        &self,
        reader: &mut Reader,
        map: &'v serde_json::Map<String, serde_json::Value>,
        name: &str,
    ) -> Vec<(&'v str, &'v serde_json::Value)> {
        let want = fold(name);
        let found: Vec<(&str, &serde_json::Value)> = map
            .iter()
            .filter(|(k, _)| fold(k) == want)
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        if found.len() > 1 {
            let keys: Vec<String> = found.iter().map(|(k, _)| format!("{k:?}")).collect();
            let line = found
                .iter()
                .map(|(k, _)| key_line(self.text, k))
                .max()
                .unwrap_or(1);
            reader.out.problems.push(format!(
                "{}:{line}: {} are one kustomize field ({name}: kustomize matches field names \
                 case-insensitively): write it once",
                self.file,
                keys.join(" and ")
            ));
        }
        found
    }
}

/// Collects the references of one directory.
struct Reader<'a> {
    dir: &'a str,
    out: DirRefs,
}

impl Reader<'_> {
    /// A kustomize path entry of field `key` in `file`.
    fn kustomize_entry(&mut self, file: &str, text: &str, key: &str, raw: &str) {
        // Inline patches and generator configurations are YAML, not paths.
        if raw.contains('\n') || raw.contains(": ") || raw.trim_start().starts_with('{') {
            return;
        }
        let raw = raw.trim();
        if raw.is_empty() {
            return;
        }
        let at = format!("{file}:{}", yaml_line(text, key, raw));
        if is_url(raw) {
            self.out.remote.push(Ref {
                path: raw.to_string(),
                raw: raw.to_string(),
                at,
                module: None,
                chart: None,
            });
            return;
        }
        match resolve(self.dir, raw) {
            Ok(path) if path == self.dir => {}
            Ok(path) => self.out.refs.push(Ref {
                path,
                raw: raw.to_string(),
                at,
                module: None,
                chart: None,
            }),
            Err(why) => self.out.problems.push(format!("{at}: {key} {raw:?} {why}")),
        }
    }

    /// `text` as one YAML document, or None with the problem noted (naming `file`).
    fn document(&mut self, file: &str, text: &str) -> Option<serde_json::Value> {
        if let Err(e) = manifest::check_syntax(text, file) {
            self.out.problems.push(format!("{e:#}"));
            return None;
        }
        match serde_yaml_ng::from_str(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.out.problems.push(format!("{file}: invalid YAML: {e}"));
                None
            }
        }
    }

    /// The paths a kustomization reads, field by field as kustomize reads them: kustomize
    /// (sigs.k8s.io/kustomize/api v5.5, the one in kubectl 1.32) turns the YAML into JSON and
    /// decodes it with Go's encoding/json, which matches field names case-insensitively. So
    /// `Resources:` is `resources:`, and a file that spells one field two ways is refused (Go
    /// keeps one of them, and which is not worth guessing).
    fn kustomization(&mut self, file: &str, text: &str) {
        let Some(doc) = self.document(file, text) else {
            return;
        };
        // kustomize's YAML library applies merge keys (`<<: {resources: [...]}`); read as
        // written they would hide fields.
        if has_merge_key(&doc) {
            let line = text
                .lines()
                .position(|l| l.contains("<<"))
                .map_or(1, |i| i + 1);
            self.out.problems.push(format!(
                "{file}:{line}: YAML merge keys (`<<`) are refused in kustomizations: write \
                 the fields out"
            ));
            return;
        }
        let Some(map) = doc.as_object() else { return };
        let k = Kust { file, text };
        for name in PATH_LISTS {
            for (key, v) in k.field(self, map, name) {
                for raw in strings(v) {
                    self.kustomize_entry(file, text, key, &raw);
                }
            }
        }
        for name in ["patches", "patchesJson6902", "replacements"] {
            for (key, v) in k.field(self, map, name) {
                for item in objects_in(v) {
                    for (_, p) in k.field(self, item, "path") {
                        if let Some(raw) = p.as_str() {
                            self.kustomize_entry(file, text, key, raw);
                        }
                    }
                }
            }
        }
        // `openapi` is a map[string]string in kustomize: its key is matched exactly.
        for (key, v) in k.field(self, map, "openapi") {
            if let Some(raw) = v.get("path").and_then(|p| p.as_str()) {
                self.kustomize_entry(file, text, key, raw);
            }
        }
        for name in ["configMapGenerator", "secretGenerator"] {
            for (key, v) in k.field(self, map, name) {
                for item in objects_in(v) {
                    for field in ["files", "envs", "env", "ageIdentities"] {
                        for (_, f) in k.field(self, item, field) {
                            for raw in strings(f) {
                                // `files` entries may name their key: `key=path`.
                                let path = match raw.split_once('=') {
                                    Some((_, p)) if field == "files" => p.to_string(),
                                    _ => raw.clone(),
                                };
                                self.kustomize_entry(file, text, key, &path);
                            }
                        }
                    }
                }
            }
        }
        // Helm charts (inflated only with `--enable-helm`, which hookops does not pass today):
        // their chart home, values files and helm's config home are paths all the same.
        for (key, v) in k.field(self, map, "helmGlobals") {
            if let Some(globals) = v.as_object() {
                for field in ["chartHome", "configHome"] {
                    for (_, f) in k.field(self, globals, field) {
                        for raw in strings(f) {
                            self.kustomize_entry(file, text, key, &raw);
                        }
                    }
                }
            }
        }
        let charts: [(&str, &[&str], &str, &str); 2] = [
            (
                "helmCharts",
                &["valuesFile", "additionalValuesFiles"],
                "name",
                "repo",
            ),
            (
                "helmChartInflationGenerator",
                &["chartHome", "values", "helmHome"],
                "chartName",
                "chartRepoUrl",
            ),
        ];
        for (name, paths, chart, repo) in charts {
            for (key, v) in k.field(self, map, name) {
                for item in objects_in(v) {
                    for field in paths {
                        for (_, f) in k.field(self, item, field) {
                            for raw in strings(f) {
                                self.kustomize_entry(file, text, key, &raw);
                            }
                        }
                    }
                    // The chart's directory is its name under the chart home.
                    for (_, f) in k.field(self, item, chart) {
                        let raw = f.as_str().unwrap_or("");
                        if raw.contains('/') || raw.contains('\\') || raw == ".." {
                            let at = format!("{file}:{}", yaml_line(text, key, raw));
                            self.out.problems.push(format!(
                                "{at}: {key} {chart} {raw:?} is not a chart name: only a name \
                                 under the chart home is read"
                            ));
                        }
                    }
                    for (_, f) in k.field(self, item, repo) {
                        let raw = f.as_str().unwrap_or("").trim();
                        if !raw.is_empty() {
                            self.out.remote.push(Ref {
                                path: raw.to_string(),
                                raw: raw.to_string(),
                                at: format!("{file}:{}", yaml_line(text, key, raw)),
                                module: None,
                                chart: None,
                            });
                        }
                    }
                }
            }
        }
    }

    /// A chart's `Chart.yaml`: a dependency whose `repository` is `file://PATH` reads the chart
    /// at PATH (relative to this chart) as a kustomize base is read; other dependencies are
    /// vendored in `charts/` or remote, which rendering decides (declare/chart.rs).
    fn chart(&mut self, file: &str, text: &str) {
        let Some(doc) = self.document(file, text) else {
            return;
        };
        let Some(deps) = doc.get("dependencies") else {
            return;
        };
        for d in objects_in(deps) {
            let name = d.get("name").and_then(|n| n.as_str()).unwrap_or("");
            let Some(repo) = d.get("repository").and_then(|r| r.as_str()) else {
                continue;
            };
            let repo = repo.trim();
            let Some(raw) = repo.strip_prefix("file://") else {
                continue;
            };
            let at = format!("{file}:{}", yaml_line(text, "dependencies", repo));
            match resolve(self.dir, raw) {
                Ok(path) if path == self.dir => self.out.problems.push(format!(
                    "{at}: dependency {name:?}: repository {repo:?} names the chart itself"
                )),
                Ok(path) => self.out.refs.push(Ref {
                    path,
                    raw: repo.to_string(),
                    at,
                    module: None,
                    chart: Some(name.to_string()),
                }),
                Err(why) => self.out.problems.push(format!(
                    "{at}: dependency {name:?}: repository {repo:?} {why}"
                )),
            }
        }
    }

    /// The `module` blocks of a Terraform file whose `source` is a local path.
    fn terraform(&mut self, file: &str, text: &str) {
        use hcl_edit::Span;
        let body = match hcl_edit::parser::parse_body(text) {
            Ok(b) => b,
            Err(e) => {
                self.out.problems.push(format!(
                    "{file}:{}: cannot read the module blocks: {}",
                    e.location().line(),
                    e.message()
                ));
                return;
            }
        };
        for block in body.get_blocks("module") {
            let name = block
                .labels
                .first()
                .map(|l| l.as_str().to_string())
                .unwrap_or_default();
            let Some(attr) = block.body.get_attribute("source") else {
                continue;
            };
            let Some(raw) = attr.value.as_str() else {
                continue;
            };
            let offset = attr.span().or_else(|| block.span()).map(|s| s.start);
            let at = format!("{file}:{}", offset.map(|o| line_at(text, o)).unwrap_or(1));
            let what = format!("module {name:?}: source {raw:?}");
            if raw.starts_with("./") || raw.starts_with("../") {
                match resolve(self.dir, raw) {
                    Ok(path) if path == self.dir => {}
                    Ok(path) => self.out.refs.push(Ref {
                        path,
                        raw: raw.to_string(),
                        at,
                        module: Some(name),
                        chart: None,
                    }),
                    Err(why) => self.out.problems.push(format!("{at}: {what} {why}")),
                }
            } else if server_local(raw) {
                // go-getter would copy it from the server's file system (another repository
                // on the server, the state directory, anything the hook user can read).
                self.out.problems.push(format!(
                    "{at}: {what} reads the server's file system: only paths inside the \
                     repository (./ or ../) are read"
                ));
            }
        }
    }
}

/// Reads the references of directory `dir`, whose tree is `sub`: `None` when it has none.
pub fn read_dir(repo: &Repository, sub: &Tree, dir: &str) -> Option<DirRefs> {
    let mut reader = Reader {
        dir,
        out: DirRefs::default(),
    };
    let mut kustomization = None;
    let mut chart = None;
    let mut tf_files = Vec::new();
    for e in sub.iter() {
        if objects::is_tree(e.filemode()) {
            continue;
        }
        let Some(name) = e.name() else { continue };
        if kustomization.is_none() && KUSTOMIZATION.contains(&name) {
            kustomization = Some((join(dir, name), e.id(), e.filemode()));
        } else if name == CHART_FILE {
            chart = Some((join(dir, name), e.id(), e.filemode()));
        } else if is_tf_file(name) {
            tf_files.push((join(dir, name), e.id(), e.filemode()));
        }
    }
    let read = |path: &str, id: Oid, mode: i32| {
        if objects::is_link(mode) {
            anyhow::bail!("{path}: is a symbolic link; hookops refuses symlinks in deployed trees");
        }
        objects::read_text(repo, id, path)
    };
    if let Some((path, id, mode)) = kustomization {
        match read(&path, id, mode) {
            Ok(text) => reader.kustomization(&path, &text),
            Err(e) => reader.out.problems.push(format!("{e:#}")),
        }
    }
    if let Some((path, id, mode)) = chart {
        match read(&path, id, mode) {
            Ok(text) => reader.chart(&path, &text),
            Err(e) => reader.out.problems.push(format!("{e:#}")),
        }
    }
    for (path, id, mode) in tf_files {
        match read(&path, id, mode) {
            Ok(text) => reader.terraform(&path, &text),
            Err(e) => reader.out.problems.push(format!("{e:#}")),
        }
    }
    let mut out = reader.out;
    out.refs.sort();
    out.refs.dedup();
    (!out.is_empty()).then_some(out)
}

impl RefIndex {
    /// Lists the whole tree (hidden directories aside) and reads every directory.
    pub fn build(repo: &Repository, root: &Tree) -> Result<RefIndex> {
        let mut index = RefIndex::default();
        let mut stack = vec![(root.clone(), String::new())];
        while let Some((dir, path)) = stack.pop() {
            if let Some(refs) = read_dir(repo, &dir, &path) {
                index.set(&path, Some(refs));
            }
            for e in dir.iter() {
                if !objects::is_tree(e.filemode()) {
                    continue;
                }
                let Some(name) = e.name() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let sub = repo
                    .find_tree(e.id())
                    .with_context(|| format!("{}: cannot read tree", join(&path, name)))?;
                stack.push((sub, join(&path, name)));
            }
        }
        Ok(index)
    }

    /// The index of `new`, from this index of the old tree and the paths that changed: only
    /// directories whose kustomization or `.tf` files changed are read again.
    pub fn update(&self, repo: &Repository, new: &Tree, changes: &Changes) -> Result<RefIndex> {
        let dirs: BTreeSet<&str> = changes
            .paths
            .iter()
            .filter(|p| !p.split('/').any(|s| s.starts_with('.')))
            .filter(|p| is_reference_file(p.rsplit('/').next().unwrap_or(p)))
            .filter_map(|p| parent(p))
            .collect();
        let mut index = self.clone();
        for dir in dirs {
            let refs = match objects::entry(new, dir) {
                Some((id, mode)) if objects::is_tree(mode) => {
                    let sub = repo
                        .find_tree(id)
                        .with_context(|| format!("{dir}: cannot read tree"))?;
                    read_dir(repo, &sub, dir)
                }
                _ => None,
            };
            index.set(dir, refs);
        }
        Ok(index)
    }

    /// Replaces the references of `dir`.
    fn set(&mut self, dir: &str, refs: Option<DirRefs>) {
        if self.dirs.get(dir) == refs.as_ref() {
            return;
        }
        self.blob = None;
        if let Some(old) = self.dirs.remove(dir) {
            for r in &old.refs {
                if let Some(users) = self.users.get_mut(&r.path) {
                    users.remove(dir);
                    if users.is_empty() {
                        self.users.remove(&r.path);
                    }
                }
            }
        }
        if let Some(refs) = refs {
            for r in &refs.refs {
                self.users
                    .entry(r.path.clone())
                    .or_default()
                    .insert(dir.to_string());
            }
            self.dirs.insert(dir.to_string(), refs);
        }
    }

    /// A base or module: a directory another directory references as a whole.
    pub fn is_referenced(&self, dir: &str) -> bool {
        self.users
            .get(dir)
            .is_some_and(|users| users.iter().any(|u| u != dir))
    }

    /// Whether another directory reads *files* directly in `dir` (a kustomization's resources,
    /// patches or generator files): those are its inputs, not a kubectl target (D3.2). A
    /// referenced subdirectory does not count: a directory above or beside a base is judged on
    /// its own files.
    pub fn is_read(&self, dir: &str, tree: &Tree) -> bool {
        let direct = |path: &str| {
            parent(path) == Some(dir)
                && objects::entry(tree, path).is_some_and(|(_, mode)| !objects::is_tree(mode))
        };
        let by_other = |users: &BTreeSet<String>| users.iter().any(|u| u != dir);
        if dir.is_empty() {
            return self
                .users
                .iter()
                .any(|(path, users)| direct(path) && by_other(users));
        }
        let prefix = format!("{dir}/");
        self.users
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .any(|(path, users)| direct(path) && by_other(users))
    }

    /// Whether some directory references exactly this path (a kustomization lists the file).
    pub fn is_named(&self, path: &str) -> bool {
        self.users.contains_key(path)
    }

    /// The directories that read `path`, directly or through other directories.
    pub fn users_of(&self, path: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut queue = vec![path.to_string()];
        while let Some(p) = queue.pop() {
            // A reference to a directory reads everything under it.
            let mut at = Some(p.as_str());
            while let Some(a) = at {
                for user in self.users.get(a).into_iter().flatten() {
                    if found.insert(user.clone()) {
                        queue.push(user.clone());
                    }
                }
                at = parent(a);
            }
        }
        found
    }

    /// Everything `dir` reads, followed transitively.
    pub fn closure(&self, dir: &str) -> Closure {
        let mut c = Closure::default();
        let mut seen: BTreeSet<String> = BTreeSet::from([dir.to_string()]);
        let mut queue = vec![dir.to_string()];
        while let Some(d) = queue.pop() {
            let Some(refs) = self.dirs.get(&d) else {
                continue;
            };
            c.problems.extend(refs.problems.iter().cloned());
            c.remote.extend(refs.remote.iter().cloned());
            for r in &refs.refs {
                c.refs.push(r.clone());
                if seen.insert(r.path.clone()) {
                    queue.push(r.path.clone());
                }
            }
        }
        let mut paths: Vec<String> = seen.into_iter().collect();
        paths.sort();
        let mut minimal: Vec<String> = Vec::new();
        for p in paths {
            if !minimal.iter().any(|m| covers(m, &p)) {
                minimal.retain(|m| !covers(&p, m));
                minimal.push(p);
            }
        }
        minimal.sort_by_key(|p| (!covers(p, dir), p.clone()));
        c.paths = minimal;
        c.problems.sort();
        c.problems.dedup();
        c
    }

    fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&Stored {
            format: FORMAT,
            dirs: self.dirs.clone(),
        })?)
    }

    fn from_json(bytes: &[u8]) -> Option<RefIndex> {
        let stored: Stored = serde_json::from_slice(bytes).ok()?;
        if stored.format != FORMAT {
            return None;
        }
        let mut index = RefIndex::default();
        for (dir, refs) in stored.dirs {
            index.set(&dir, Some(refs));
        }
        Some(index)
    }
}

impl Closure {
    /// Why the target cannot be deployed from `tree`, if it cannot: references that climb out
    /// of the repository, Terraform modules missing from the tree, and remote kustomize
    /// resources (unless `allow_remote`). Every problem, one after the other.
    pub fn refusal(&self, tree: &Tree, allow_remote: bool) -> Option<String> {
        let mut problems = self.problems.clone();
        let mut remote: Vec<&Ref> = self.remote.iter().collect();
        for r in &self.refs {
            if objects::entry(tree, &r.path).is_some() {
                continue;
            }
            match (&r.module, &r.chart) {
                (Some(name), _) => problems.push(format!(
                    "{}: module {name:?}: source {:?}: {} is not in the tree",
                    r.at, r.raw, r.path
                )),
                (_, Some(name)) => problems.push(format!(
                    "{}: dependency {name:?}: repository {:?}: {} is not in the tree",
                    r.at, r.raw, r.path
                )),
                // Kustomize tries a missing path as a git repository: that is remote.
                _ if host_like(&r.raw) => remote.push(r),
                // Anything else missing is kustomize's to report.
                _ => {}
            }
        }
        if !allow_remote {
            for r in remote {
                problems.push(format!(
                    "{}: remote resource {:?} refused: the server does not fetch from the \
                     network for kustomize ([kustomize] allow_remote = true allows it)",
                    r.at, r.raw
                ));
            }
        }
        problems.sort();
        problems.dedup();
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// The first materialised path (a referenced directory or file) that covers `path`, when
    /// it is outside the target's own directory `dir`.
    pub fn used_for(&self, dir: &str, path: &str) -> Option<&str> {
        if covers(dir, path) {
            return None;
        }
        self.paths
            .iter()
            .find(|p| covers(p, path))
            .map(String::as_str)
    }
}

/// The index of both sides of a change.
#[derive(Debug, Clone)]
pub struct References {
    /// The old tree's, when there is an old tree.
    pub old: Option<(Oid, RefIndex)>,
    pub new: (Oid, RefIndex),
    /// Both came from the store as they are: there is nothing to keep.
    pub stored: bool,
}

impl Default for References {
    fn default() -> Self {
        References {
            old: None,
            new: (Oid::zero(), RefIndex::default()),
            stored: false,
        }
    }
}

impl References {
    /// The indexes of `old` and `new`: stored ones where git has them, the old one built from
    /// the whole tree when it has none, the new one updated from the diff.
    pub fn for_change(
        repo: &Repository,
        old: Option<(Oid, &Tree)>,
        new: (Oid, &Tree),
        changes: &Changes,
    ) -> Result<References> {
        References::for_change_cached(repo, old, new, changes, None)
    }

    /// [`References::for_change`], also looking in a dry run's cache (`pipeline::cache`).
    pub fn for_change_cached(
        repo: &Repository,
        old: Option<(Oid, &Tree)>,
        new: (Oid, &Tree),
        changes: &Changes,
        cache: Option<&Cache>,
    ) -> Result<References> {
        let store = Store::open(repo);
        let store = Cached {
            store: &store,
            cache,
        };
        let mut stored = true;
        let old = match old {
            Some((id, tree)) => Some((
                id,
                match store.load(repo, id) {
                    Some(index) => index,
                    None => {
                        log::info!("no reference index for {id}; reading the whole tree once");
                        stored = false;
                        RefIndex::build(repo, tree)?
                    }
                },
            )),
            None => None,
        };
        let new_index = match (store.load(repo, new.0), &old) {
            (Some(index), _) => index,
            (None, Some((_, index))) => {
                stored = false;
                index.update(repo, new.1, changes)?
            }
            (None, None) => {
                stored = false;
                RefIndex::build(repo, new.1)?
            }
        };
        Ok(References {
            old,
            new: (new.0, new_index),
            stored,
        })
    }

    pub fn old_index(&self) -> Option<&RefIndex> {
        self.old.as_ref().map(|(_, i)| i)
    }

    /// Directories that read `path` in the old or the new tree.
    pub fn users_of(&self, path: &str) -> BTreeSet<String> {
        let mut users = self.new.1.users_of(path);
        if let Some(old) = self.old_index() {
            users.extend(old.users_of(path));
        }
        users
    }

    /// Directories referenced in the new tree and not in the old one, found from the
    /// directories whose references changed.
    pub fn newly_referenced(&self, changes: &Changes) -> BTreeSet<String> {
        match self.old_index() {
            Some(old) => referenced_only_in(&self.new.1, old, changes),
            None => BTreeSet::new(),
        }
    }

    /// Directories referenced in the old tree and not in the new one, found from the
    /// directories whose references changed: a base or module whose last user went (D3.1).
    pub fn newly_unreferenced(&self, changes: &Changes) -> BTreeSet<String> {
        match self.old_index() {
            Some(old) => referenced_only_in(old, &self.new.1, changes),
            None => BTreeSet::new(),
        }
    }

    /// Keeps both indexes in a dry run's cache: objects that no ref names.
    pub fn keep_in(&self, repo: &Repository, cache: &Cache) -> Result<()> {
        let mut entries: Vec<(Oid, &RefIndex)> = vec![(self.new.0, &self.new.1)];
        if let Some((id, index)) = &self.old {
            entries.push((*id, index));
        }
        for (id, index) in entries {
            if index.blob.is_some() && cache.get(&id.to_string()) == index.blob {
                continue;
            }
            let blob = match index.blob {
                Some(b) => b,
                None => repo.blob(&index.to_json()?)?,
            };
            cache.put(&id.to_string(), blob);
        }
        Ok(())
    }

    /// Stores both indexes under [`INDEX_REF`], keeping those of the commits `keep` names.
    pub fn save(&self, repo: &Repository, keep: &BTreeSet<Oid>) -> Result<()> {
        let mut entries: Vec<(Oid, &RefIndex)> = vec![(self.new.0, &self.new.1)];
        if let Some((id, index)) = &self.old {
            entries.push((*id, index));
        }
        Store::open(repo).save(repo, &entries, keep)
    }
}

/// The stored indexes, then those of a dry run's cache.
struct Cached<'a, 'r> {
    store: &'a Store<'r>,
    cache: Option<&'a Cache>,
}

impl Cached<'_, '_> {
    fn load(&self, repo: &Repository, commit: Oid) -> Option<RefIndex> {
        self.store.load(repo, commit).or_else(|| {
            let blob_id = self.cache?.get(&commit.to_string())?;
            let blob = repo.find_blob(blob_id).ok()?;
            let mut index = RefIndex::from_json(blob.content())?;
            index.blob = Some(blob_id);
            Some(index)
        })
    }
}

/// The stored indexes: the tree of the commit at [`INDEX_REF`].
struct Store<'r> {
    head: Option<git2::Commit<'r>>,
    tree: Option<Tree<'r>>,
}

fn file_name(id: Oid) -> String {
    format!("{id}.json")
}

impl<'r> Store<'r> {
    fn open(repo: &'r Repository) -> Store<'r> {
        let head = repo
            .find_reference(INDEX_REF)
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let tree = head.as_ref().and_then(|c| c.tree().ok());
        Store { head, tree }
    }

    fn load(&self, repo: &Repository, commit: Oid) -> Option<RefIndex> {
        let entry = self.tree.as_ref()?.get_name(&file_name(commit))?;
        let blob = repo.find_blob(entry.id()).ok()?;
        let mut index = RefIndex::from_json(blob.content())?;
        index.blob = Some(entry.id());
        Some(index)
    }

    fn save(
        &self,
        repo: &Repository,
        entries: &[(Oid, &RefIndex)],
        keep: &BTreeSet<Oid>,
    ) -> Result<()> {
        let old_tree = self.tree.as_ref();
        let mut builder = repo.treebuilder(None)?;
        let mut described = Vec::new();
        if let Some(t) = old_tree {
            for e in t.iter() {
                let kept = e
                    .name()
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| Oid::from_str(n).ok())
                    .filter(|id| keep.contains(id) && !entries.iter().any(|(x, _)| x == id));
                if let (Some(id), Some(name)) = (kept, e.name()) {
                    builder.insert(name, e.id(), e.filemode())?;
                    described.push(id);
                }
            }
        }
        for (id, index) in entries {
            let blob = match index.blob {
                Some(b) => b,
                None => repo.blob(&index.to_json()?)?,
            };
            builder.insert(file_name(*id), blob, i32::from(git2::FileMode::Blob))?;
            described.push(*id);
        }
        let tree_id = builder.write()?;
        if old_tree.as_ref().map(|t| t.id()) == Some(tree_id) {
            return Ok(());
        }
        let tree = repo.find_tree(tree_id)?;
        let sig = crate::record::notes::committer(repo)?;
        described.sort();
        let message = format!(
            "hookops: reference index of {}\n\n{}\n",
            entries[0].0,
            described
                .iter()
                .map(|id| format!("describes {id}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // No parent: indexes of commits no longer kept become garbage for `git gc`.
        let commit = repo.commit(None, &sig, &sig, &message, &tree, &[])?;
        // Compare-and-swap: a `plan` runs without the deploy lock, and must not drop what a
        // deploy stored meanwhile (nor the other way round); the loser's index is rebuilt later.
        let msg = "hookops: reference index";
        let expected = self.head.as_ref().map(|h| h.id());
        crate::gitref::swap(repo, INDEX_REF, commit, expected, msg)
            .with_context(|| format!("updating {INDEX_REF} (it moved meanwhile?)"))?;
        Ok(())
    }
}

/// Directories that `this` references and `other` does not, among the references of the
/// directories whose reference files changed.
fn referenced_only_in(this: &RefIndex, other: &RefIndex, changes: &Changes) -> BTreeSet<String> {
    changes
        .paths
        .iter()
        .filter(|p| is_reference_file(p.rsplit('/').next().unwrap_or(p)))
        .filter_map(|p| parent(p))
        .filter_map(|d| this.dirs.get(d))
        .flat_map(|refs| refs.refs.iter().map(|r| r.path.clone()))
        .filter(|p| this.is_referenced(p) && !other.is_referenced(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures::{repo, tree};

    const THING: &str =
        "variable \"v\" {}\nresource \"terraform_data\" \"t\" {\n  input = var.v\n}\n";

    fn module(name: &str, source: &str) -> String {
        format!(
            "# {name}\n\nmodule \"{name}\" {{\n  source = \"{source}\"\n  v      = \"one\"\n}}\n"
        )
    }

    fn layout(repo: &Repository) -> Tree<'_> {
        tree(
            repo,
            None,
            &[
                ("modules/thing/main.tf", Some(THING)),
                ("modules/outer/main.tf", Some(&module("inner", "../inner"))),
                ("modules/inner/main.tf", Some(THING)),
                ("envs/prod/main.tf", Some(&module("thing", "../../modules/thing"))),
                ("envs/prod/terraform.tfvars", Some("x = 1\n")),
                ("envs/staging/main.tf", Some(&module("thing", "../../modules/thing"))),
                ("envs/staging/outer.tf", Some(&module("outer", "../../modules/outer"))),
                ("envs/registry/main.tf", Some(&module("vpc", "terraform-aws-modules/vpc/aws"))),
                ("base/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
                ("base/cm.yaml", Some("kind: ConfigMap\n")),
                ("components/extra/kustomization.yaml", Some("kind: Component\nresources:\n- x.yaml\n")),
                ("config/app.properties", Some("a=1\n")),
                ("shared/patch.yaml", Some("kind: Deployment\n")),
                (
                    "overlays/prod/kustomization.yaml",
                    Some(
                        "namespace: prod\nresources:\n  - ../../base # the base\ncomponents:\n- ../../components/extra\n\
                         patches:\n- path: ../../shared/patch.yaml\nconfigMapGenerator:\n- name: app\n  files:\n  - app=../../config/app.properties\n",
                    ),
                ),
                ("overlays/staging/kustomization.yaml", Some("resources:\n- ../../base\n")),
            ],
        )
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The references and problems of a kustomization `text` in directory `app/web`.
    fn kustomization_refs(text: &str) -> DirRefs {
        let (_d, repo) = repo();
        let t = tree(&repo, None, &[("app/web/kustomization.yaml", Some(text))]);
        let sub = repo
            .find_tree(objects::entry(&t, "app/web").unwrap().0)
            .unwrap();
        read_dir(&repo, &sub, "app/web").unwrap_or_default()
    }

    /// Every field kustomize reads a path from, spelt as kustomize also accepts it (any case,
    /// KELVIN SIGN for k, LONG S for s), each climbing out of the repository: each is refused
    /// with its line. (Before issue 26 only the exact lower-camel spellings were read.)
    #[test]
    fn kustomization_fields_are_read_as_kustomize_reads_them() {
        let text = "\
RESOURCES: [../../../etc]
Bases: [../../../b]
cOmponents: [../../../c]
CRDs: [/etc/crd.yaml]
configuratioNs: [../../../conf.yaml]
Generators: [../../../gen]
TRANSFORMERS: [../../../tr]
Validators: [../../../val]
PatchesStrategicMerge: [../../../psm.yaml]
Patches:
- Path: ../../../p.yaml
patchesjson6902:
- PATH: ../../../j.yaml
Replacements:
- paTH: ../../../r.yaml
openapi:
  path: ../../../o.json
ConfigMapGenerator:
- name: a
  Files: [k=../../../f]
  ENVS: [../../../e.env]
  Env: ../../../one.env
SecretGenerator:
- name: s
  files: [/etc/shadow]
HelmGlobals:
  ChartHome: ../../../charts
  configHome: /root/.config/helm
HelmCharts:
- Name: ../../x
  ValuesFile: ../../../v.yaml
  additionalValuesFiles: [/etc/v2.yaml]
helmChartInflationGenerator:
- chartHome: ../../../old
  values: /etc/old.yaml
\u{212a}ind: Kustomization
re\u{17f}ources: [../../../long-s]
";
        let refs = kustomization_refs(text);
        let problems = refs.problems.join("\n");
        for (line, raw) in [
            (1, "../../../etc"),
            (2, "../../../b"),
            (3, "../../../c"),
            (4, "/etc/crd.yaml"),
            (5, "../../../conf.yaml"),
            (6, "../../../gen"),
            (7, "../../../tr"),
            (8, "../../../val"),
            (9, "../../../psm.yaml"),
            (11, "../../../p.yaml"),
            (13, "../../../j.yaml"),
            (15, "../../../r.yaml"),
            (17, "../../../o.json"),
            (20, "../../../f"),
            (21, "../../../e.env"),
            (22, "../../../one.env"),
            (25, "/etc/shadow"),
            (27, "../../../charts"),
            (28, "/root/.config/helm"),
            (30, "../../x"),
            (31, "../../../v.yaml"),
            (32, "/etc/v2.yaml"),
            (34, "../../../old"),
            (35, "/etc/old.yaml"),
            (37, "../../../long-s"),
        ] {
            let at = format!("app/web/kustomization.yaml:{line}: ");
            assert!(
                refs.problems
                    .iter()
                    .any(|p| p.starts_with(&at) && p.contains(&format!("{raw:?}"))),
                "{raw} at line {line} not refused:\n{problems}"
            );
        }
        assert!(refs.refs.is_empty(), "{:?}", refs.refs);
    }

    #[test]
    fn kustomization_with_two_spellings_of_a_field_or_a_merge_key_is_refused() {
        let two = kustomization_refs("resources: [a.yaml]\nResources: [b.yaml]\n");
        assert!(
            two.problems
                .iter()
                .any(|p| p.starts_with("app/web/kustomization.yaml:2: ")
                    && p.contains("\"Resources\" and \"resources\" are one kustomize field")),
            "{:?}",
            two.problems
        );
        let nested = kustomization_refs("patches:\n- path: a.yaml\n  Path: b.yaml\n");
        assert!(
            nested
                .problems
                .iter()
                .any(|p| p.starts_with("app/web/kustomization.yaml:3: ")),
            "{:?}",
            nested.problems
        );
        let flow = kustomization_refs("{x: 1, <<: {resources: [../../../etc]}}\n");
        assert!(
            flow.problems.iter().any(|p| p.contains("YAML merge keys")),
            "{:?}",
            flow.problems
        );
        let merge = kustomization_refs("x: 1\n<<:\n  resources: [../../../etc]\n");
        assert_eq!(
            merge.problems,
            vec![
                "app/web/kustomization.yaml:2: YAML merge keys (`<<`) are refused in \
                  kustomizations: write the fields out"
                    .to_string()
            ]
        );
        // A remote chart and a remote resource in odd spelling are remote references.
        let remote = kustomization_refs(
            "Resources: [https://example.test/x.yaml]\nhelmCharts:\n- name: c\n  Repo: https://charts.test\n",
        );
        assert_eq!(remote.remote.len(), 2, "{remote:?}");
        // The ordinary spelling still reads as before.
        let plain = kustomization_refs("resources: [../base, cm.yaml]\n");
        assert_eq!(
            plain
                .refs
                .iter()
                .map(|r| r.path.as_str())
                .collect::<Vec<_>>(),
            vec!["app/base", "app/web/cm.yaml"]
        );
    }

    fn read_kustomization(text: &str) -> DirRefs {
        let mut r = Reader {
            dir: "app/web",
            out: DirRefs::default(),
        };
        r.kustomization("app/web/kustomization.yaml", text);
        r.out
    }

    /// Kustomizations under a time budget (`scripts/fuzz.sh`), two ways. Token soup: reading
    /// never panics and every local reference it keeps is a repository path that the raw
    /// entry resolves to. Differential: a kustomization whose field names are spelt as
    /// kustomize also accepts them (any case, KELVIN SIGN, LONG S) reads exactly like the
    /// same kustomization spelt plainly.
    #[test]
    fn fuzz_kustomization() {
        use proptest::prelude::*;
        let fields: Vec<&str> = PATH_LISTS.iter().copied().chain(["openapi"]).collect();
        const VALUES: [&str; 10] = [
            "../../..",
            "../base",
            "/etc",
            "cm.yaml",
            "https://x.test/a.yaml",
            "./a/../../../b",
            "github.com/o/r",
            "k=../../../../f",
            "..",
            "a b",
        ];
        let tokens: Vec<String> = fields
            .iter()
            .chain(VALUES.iter())
            .chain(&[
                "Resources",
                "reſources",
                "Path",
                "path",
                "files",
                "envs",
                "patches",
                "configMapGenerator",
                "helmCharts",
                "valuesFile",
                "name",
                "<<",
                ": ",
                "- ",
                "\n",
                "  ",
                "[",
                "]",
                ", ",
                "\"",
                "&a ",
                "*a",
                "{",
                "}",
            ])
            .map(|t| t.to_string())
            .collect();
        crate::fuzz::run(
            "kustomization (token soup)",
            crate::fuzz::assembled(tokens, 20),
            |s| {
                let refs = read_kustomization(s);
                for r in &refs.refs {
                    assert_eq!(
                        resolve("app/web", &r.raw).as_deref(),
                        Ok(r.path.as_str()),
                        "{r:?}"
                    );
                    assert!(!r.path.starts_with('/') && !r.path.split('/').any(|p| p == ".."));
                }
            },
        );
        let entries = proptest::collection::btree_map(
            0..fields.len(),
            (
                any::<u64>(),
                proptest::collection::vec(0..VALUES.len(), 1..3),
            ),
            1..5,
        );
        crate::fuzz::run("kustomization (spellings)", entries, |entries| {
            let spell = |field: &str, mask: u64| -> String {
                field
                    .chars()
                    .enumerate()
                    .map(|(i, c)| match (mask >> (i % 64)) & 3 {
                        1 => c.to_ascii_uppercase(),
                        2 if c == 's' => '\u{17f}',
                        2 if c == 'k' => '\u{212a}',
                        _ => c,
                    })
                    .collect()
            };
            let text = |odd: bool| -> String {
                entries
                    .iter()
                    .map(|(&f, (mask, values))| {
                        let key = if odd {
                            spell(fields[f], *mask)
                        } else {
                            fields[f].to_string()
                        };
                        let list: Vec<String> =
                            values.iter().map(|&v| format!("{:?}", VALUES[v])).collect();
                        if fields[f] == "openapi" {
                            format!("{key}:\n  path: {}\n", list[0])
                        } else {
                            format!("{key}: [{}]\n", list.join(", "))
                        }
                    })
                    .collect()
            };
            let (plain, odd) = (
                read_kustomization(&text(false)),
                read_kustomization(&text(true)),
            );
            let paths = |d: &DirRefs| -> Vec<(String, String)> {
                d.refs
                    .iter()
                    .map(|r| (r.path.clone(), r.at.clone()))
                    .collect()
            };
            assert_eq!(paths(&plain), paths(&odd), "{}", text(true));
            assert_eq!(plain.remote.len(), odd.remote.len(), "{}", text(true));
            assert_eq!(
                plain.problems.len(),
                odd.problems.len(),
                "{}\n{:?}",
                text(true),
                odd.problems
            );
        });
    }

    #[test]
    fn terraform_sources_local_to_the_server_are_refused() {
        for raw in [
            "/srv/git/other.git",
            "file:///srv/git/other.git",
            "git::file:///srv/git/other.git",
            "git::/srv/git/other.git",
            "git::../../../../other.git",
            "git::~/other.git",
            "hg::file:///srv/hg/x",
            "file::/etc",
            "FILE:///etc",
        ] {
            assert!(server_local(raw), "{raw}");
        }
        for raw in [
            "../modules/x",
            "./x",
            "hashicorp/consul/aws",
            "git::https://example.test/x.git?ref=v1",
            "git::ssh://git@example.test/x.git",
            "git@example.test:org/x.git",
            "github.com/org/x",
            "s3::https://s3.amazonaws.com/b/x.zip",
        ] {
            assert!(!server_local(raw), "{raw}");
        }
    }

    #[test]
    fn resolves_inside_the_repository_only() {
        assert_eq!(
            resolve("envs/prod", "../../modules/x"),
            Ok("modules/x".into())
        );
        assert_eq!(resolve("envs/prod", "./sub/"), Ok("envs/prod/sub".into()));
        assert_eq!(resolve("", "a/./b"), Ok("a/b".into()));
        assert_eq!(resolve("envs/prod", "../.."), Ok("".into()));
        assert!(resolve("envs/prod", "../../..")
            .unwrap_err()
            .contains("climbs out"));
        assert!(resolve("a", "/etc").unwrap_err().contains("absolute"));
        assert!(host_like("github.com/org/repo"));
        assert!(!host_like("../base") && !host_like("app.yaml") && !host_like("./x.d/y"));
    }

    #[test]
    fn terraform_module_blocks_with_their_lines() {
        let (_d, repo) = repo();
        let text = format!(
            "{}module \"up\" {{\n  source = \"../../../x\"\n}}\nmodule \"abs\" {{\n  source = \"/srv\"\n}}\n",
            module("thing", "../../modules/thing")
        );
        let t = tree(&repo, None, &[("envs/prod/main.tf", Some(&text))]);
        let sub = repo
            .find_tree(objects::entry(&t, "envs/prod").unwrap().0)
            .unwrap();
        let refs = read_dir(&repo, &sub, "envs/prod").unwrap();
        assert_eq!(
            refs.refs,
            vec![Ref {
                path: "modules/thing".into(),
                raw: "../../modules/thing".into(),
                at: "envs/prod/main.tf:4".into(),
                module: Some("thing".into()),
                chart: None,
            }]
        );
        assert_eq!(refs.problems.len(), 2, "{:?}", refs.problems);
        assert!(
            refs.problems[0].starts_with(
                "envs/prod/main.tf:8: module \"up\": source \"../../../x\" climbs out"
            ),
            "{:?}",
            refs.problems
        );
        assert!(
            refs.problems[1].starts_with("envs/prod/main.tf:11: module \"abs\""),
            "{:?}",
            refs.problems
        );
        // A registry module is no reference; a file that does not parse names its line.
        let t = tree(
            &repo,
            None,
            &[
                (
                    "r/main.tf",
                    Some(&module("vpc", "terraform-aws-modules/vpc/aws")),
                ),
                ("bad/main.tf", Some("resource \"x\" {\n  a = \n")),
            ],
        );
        let sub = |d: &str| repo.find_tree(objects::entry(&t, d).unwrap().0).unwrap();
        assert!(read_dir(&repo, &sub("r"), "r").is_none());
        let bad = read_dir(&repo, &sub("bad"), "bad").unwrap();
        assert!(
            bad.problems[0].starts_with("bad/main.tf:"),
            "{:?}",
            bad.problems
        );
    }

    #[test]
    fn kustomization_entries_remote_and_climbing() {
        let (_d, repo) = repo();
        let t = layout(&repo);
        let index = RefIndex::build(&repo, &t).unwrap();
        let prod = &index.dirs["overlays/prod"];
        let paths: Vec<(&str, &str)> = prod
            .refs
            .iter()
            .map(|r| (r.path.as_str(), r.at.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("base", "overlays/prod/kustomization.yaml:3"),
                ("components/extra", "overlays/prod/kustomization.yaml:5"),
                (
                    "config/app.properties",
                    "overlays/prod/kustomization.yaml:11"
                ),
                ("shared/patch.yaml", "overlays/prod/kustomization.yaml:7"),
            ]
        );
        let t = tree(
            &repo,
            None,
            &[(
                "o/kustomization.yaml",
                Some("resources:\n- ok.yaml\n- https://example.com/x.yaml\n- github.com/org/repo//deploy?ref=v1\n- ../../../..\npatchesStrategicMerge:\n- |\n  kind: Deployment\n"),
            )],
        );
        let index = RefIndex::build(&repo, &t).unwrap();
        let o = &index.dirs["o"];
        assert_eq!(o.refs.len(), 1, "{:?}", o.refs);
        let remote: Vec<&str> = o.remote.iter().map(|r| r.at.as_str()).collect();
        assert_eq!(
            remote,
            vec!["o/kustomization.yaml:3", "o/kustomization.yaml:4"]
        );
        assert_eq!(
            o.problems,
            vec![
                "o/kustomization.yaml:5: resources \"../../../..\" climbs out of the repository"
                    .to_string()
            ]
        );
    }

    #[test]
    fn bases_modules_users_and_closures() {
        let (_d, repo) = repo();
        let t = layout(&repo);
        let index = RefIndex::build(&repo, &t).unwrap();
        for dir in [
            "modules/thing",
            "modules/outer",
            "modules/inner",
            "base",
            "components/extra",
        ] {
            assert!(index.is_referenced(dir), "{dir}");
        }
        for dir in [
            "envs/prod",
            "envs/staging",
            "overlays/prod",
            "modules",
            "config",
        ] {
            assert!(!index.is_referenced(dir), "{dir}");
        }
        assert!(
            index.is_read("shared", &t)
                && index.is_read("config", &t)
                && !index.is_read("envs", &t)
        );
        assert_eq!(
            index.users_of("modules/thing/main.tf"),
            set(&["envs/prod", "envs/staging"])
        );
        assert_eq!(
            index.users_of("modules/inner/main.tf"),
            set(&["modules/outer", "envs/staging"])
        );
        // A base reads its own files too.
        assert_eq!(
            index.users_of("base/cm.yaml"),
            set(&["base", "overlays/prod", "overlays/staging"])
        );
        assert_eq!(
            index.users_of("config/app.properties"),
            set(&["overlays/prod"])
        );
        assert!(index.users_of("envs/prod/main.tf").is_empty());
        let c = index.closure("envs/staging");
        assert_eq!(
            c.paths,
            vec![
                "envs/staging",
                "modules/inner",
                "modules/outer",
                "modules/thing"
            ]
        );
        assert_eq!(c.refusal(&t, false), None);
        assert_eq!(
            c.used_for("envs/staging", "modules/inner/main.tf"),
            Some("modules/inner")
        );
        assert_eq!(c.used_for("envs/staging", "envs/staging/main.tf"), None);
        let c = index.closure("overlays/prod");
        assert_eq!(
            c.paths,
            vec![
                "overlays/prod",
                "base",
                "components/extra",
                "config/app.properties",
                "shared/patch.yaml"
            ]
        );
        // A module removed while a root still uses it: the root is refused, naming the call.
        let gone = tree(&repo, Some(&t), &[("modules/inner/main.tf", None)]);
        let why = index.closure("envs/staging").refusal(&gone, false).unwrap();
        assert_eq!(
            why,
            "modules/outer/main.tf:4: module \"inner\": source \"../inner\": modules/inner is not in the tree"
        );
    }

    #[test]
    fn remote_resources_are_refused_unless_allowed() {
        let (_d, repo) = repo();
        let t = tree(
            &repo,
            None,
            &[
                (
                    "o/kustomization.yaml",
                    Some("resources:\n- github.com/org/repo/deploy\n- conf.d/x.yaml\n"),
                ),
                ("o/conf.d/x.yaml", Some("kind: ConfigMap\n")),
            ],
        );
        let c = RefIndex::build(&repo, &t).unwrap().closure("o");
        let why = c.refusal(&t, false).unwrap();
        assert!(
            why.starts_with(
                "o/kustomization.yaml:2: remote resource \"github.com/org/repo/deploy\" refused"
            ),
            "{why}"
        );
        assert!(
            !why.contains("conf.d"),
            "a local path that exists is local: {why}"
        );
        assert_eq!(c.refusal(&t, true), None);
    }

    #[test]
    fn incremental_update_matches_a_full_build() {
        let (_d, repo) = repo();
        let old = layout(&repo);
        let index = RefIndex::build(&repo, &old).unwrap();
        let new = tree(
            &repo,
            Some(&old),
            &[
                (
                    "envs/prod/main.tf",
                    Some(&module("outer", "../../modules/outer")),
                ),
                ("overlays/staging/kustomization.yaml", None),
                (
                    "overlays/dev/kustomization.yaml",
                    Some("resources:\n- ../../base\n"),
                ),
                ("base/cm.yaml", Some("kind: ConfigMap\n# changed\n")),
            ],
        );
        let changes = crate::pipeline::diff::changed_paths(&repo, Some(&old), &new).unwrap();
        let updated = index.update(&repo, &new, &changes).unwrap();
        let full = RefIndex::build(&repo, &new).unwrap();
        assert_eq!(updated.dirs, full.dirs);
        assert_eq!(updated.users, full.users);
        assert_eq!(
            updated.users_of("modules/inner/x.tf"),
            set(&["modules/outer", "envs/prod", "envs/staging"])
        );
        // Nothing indexed changed: the stored blob is kept.
        let mut stored = index.clone();
        stored.blob = Some(Oid::zero());
        let same = tree(
            &repo,
            Some(&old),
            &[("base/cm.yaml", Some("kind: ConfigMap\n# 2\n"))],
        );
        let changes = crate::pipeline::diff::changed_paths(&repo, Some(&old), &same).unwrap();
        assert_eq!(
            stored.update(&repo, &same, &changes).unwrap().blob,
            Some(Oid::zero())
        );
    }

    #[test]
    fn stored_in_git_by_commit() {
        let (_d, repo) = repo();
        let t = layout(&repo);
        let index = RefIndex::build(&repo, &t).unwrap();
        let (a, b, c) = (
            Oid::from_str("1111111111111111111111111111111111111111").unwrap(),
            Oid::from_str("2222222222222222222222222222222222222222").unwrap(),
            Oid::from_str("3333333333333333333333333333333333333333").unwrap(),
        );
        let refs = References {
            old: Some((a, RefIndex::default())),
            new: (b, index.clone()),
            stored: false,
        };
        refs.save(&repo, &BTreeSet::from([a, b])).unwrap();
        let store = Store::open(&repo);
        assert_eq!(store.load(&repo, b).unwrap().dirs, index.dirs);
        assert!(store.load(&repo, a).unwrap().dirs.is_empty());
        assert!(store.load(&repo, c).is_none());
        let head = store.head.as_ref().unwrap();
        assert!(head.message().unwrap().contains(&format!("describes {b}")));
        // The next save keeps only what it is told to keep.
        let next = References {
            old: Some((b, store.load(&repo, b).unwrap())),
            new: (c, index),
            stored: false,
        };
        next.save(&repo, &BTreeSet::from([c])).unwrap();
        let store = Store::open(&repo);
        assert!(store.load(&repo, a).is_none());
        assert!(store.load(&repo, b).is_some() && store.load(&repo, c).is_some());
        assert_eq!(store.head.unwrap().parent_count(), 0);
    }

    /// A chart's `file://` dependencies are references (line and name kept); one that climbs
    /// out of the repository or is absolute is refused; remote and vendored ones are not
    /// references; a missing one is named.
    #[test]
    fn a_charts_local_dependencies_are_references() {
        let (_d, repo) = repo();
        let chart = "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n- name: common\n  version: 0.1.0\n  repository: file://../common\n- name: redis\n  version: 1.0.0\n  repository: https://charts.example\n- name: up\n  version: 0.1.0\n  repository: \"file://../../../etc\"\n- name: abs\n  version: 0.1.0\n  repository: file:///etc/x\n- name: gone\n  version: 0.1.0\n  repository: file://../gone\n";
        let t = tree(
            &repo,
            None,
            &[
                ("charts/web/Chart.yaml", Some(chart)),
                ("charts/common/Chart.yaml", Some("name: common\n")),
            ],
        );
        let index = RefIndex::build(&repo, &t).unwrap();
        assert!(index.is_referenced("charts/common"));
        assert_eq!(
            index.users_of("charts/common/templates/x.yaml"),
            set(&["charts/web"])
        );
        let c = index.closure("charts/web");
        assert_eq!(c.paths, ["charts/web", "charts/common", "charts/gone"]);
        let why = c.refusal(&t, false).unwrap();
        assert!(why.contains("charts/web/Chart.yaml:13: dependency \"up\": repository \"file://../../../etc\" climbs out of the repository"), "{why}");
        assert!(
            why.contains("dependency \"abs\": repository \"file:///etc/x\" is an absolute path"),
            "{why}"
        );
        assert!(why.contains("charts/web/Chart.yaml:19: dependency \"gone\": repository \"file://../gone\": charts/gone is not in the tree"), "{why}");
        assert!(!why.contains("redis"), "{why}");
        assert!(is_reference_file("Chart.yaml"));
    }
}
