//! The from-scratch evaluator: docs/architecture.md "What a tree declares" (D1–D10) applied to
//! one checked-out tree, with no index, no inventory and no history. Written from the prose
//! (and configuration.md's "What discovery reads, and what it refuses"), never from hookops'
//! implementation, so that the two can disagree. Rules are cited as `D3.2` etc. where they are
//! applied; readings of ambiguous prose are marked `Reading:` (and listed in FINDINGS.md).
//!
//! Only discovery (D3) is evaluated: the generator never writes `hookops.toml`, Terraform
//! roots or environments with `paths`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// D3.3: the size limit.
pub const SIZE_LIMIT: u64 = 8 * 1024 * 1024;

const KUSTOMIZATION_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The environment the tree is evaluated for.
#[derive(Clone, Debug)]
pub struct Env {
    /// The namespace of the environment's kubeconfig context (D6).
    pub context_ns: String,
    /// `duplicates = "error"` (D7).
    pub duplicates_error: bool,
    /// Custom kinds the cluster serves, (group, kind) → namespaced: the last source of D6.
    pub cluster_kinds: BTreeMap<(String, String), bool>,
}

/// (API group, kind, namespace, name) (D6). `namespace` is None for a cluster-scoped kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gk = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{gk} {ns}/{}", self.name),
            None => write!(f, "{gk} {}", self.name),
        }
    }
}

/// One declaration of an object: which target, which file (repository path; the
/// kustomization for a kustomize target) and line, and the document as declared.
#[derive(Clone, Debug)]
pub struct Decl {
    pub target: String,
    pub file: String,
    pub line: usize,
    pub doc: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kubectl,
    Kustomize,
    Terraform,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kubectl => "kubectl",
            Kind::Kustomize => "kustomize",
            Kind::Terraform => "terraform",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    /// Repository path of the target's directory (empty for the root).
    pub dir: PathBuf,
    /// Why it fails (D3.3, D5, D7's `duplicates = "error"`, D9), each naming a file.
    pub failures: Vec<String>,
    /// The files those failures name (repository paths).
    pub broken_files: Vec<PathBuf>,
    /// Every file it reads (kustomize: the transitive closure), repository paths.
    pub reads: BTreeSet<PathBuf>,
}

/// What one tree declares for one environment.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    /// In target order (D7).
    pub targets: Vec<Target>,
    /// Every identity with its declarations in declaration order; the last one wins (D7).
    /// Declarations of failing targets are included (as far as they could be read).
    pub objects: BTreeMap<Id, Vec<Decl>>,
    /// Identities whose scope no source knows (D6): never pruned on a guess.
    pub unknown_scope: BTreeSet<Id>,
    /// Identities whose scope only the cluster's discovery knows (D6's last source): a plan,
    /// which asks no cluster, cannot know it.
    pub scope_from_cluster: BTreeSet<Id>,
    /// D8: files that look like Kubernetes and that no target reads, with the reason.
    pub unread: Vec<(String, String)>,
    /// Unreferenced Components (D3.1): reported as a whole.
    pub unused_components: Vec<PathBuf>,
    /// Targets skipped because a target they depend on fails (D9).
    pub skipped: BTreeSet<String>,
}

impl Declared {
    /// Is the unread file `f` reported in `text`? Reading: a file under an unused Component is
    /// reported by the report of the Component ("nothing deploys it").
    pub fn reported(&self, f: &str, text: &str) -> bool {
        text.contains(f)
            || self.unused_components.iter().any(|c| {
                Path::new(f).starts_with(c) && text.contains(&show(&c.join("kustomization.yaml")))
            })
    }

    pub fn failing(&self) -> BTreeSet<String> {
        self.targets
            .iter()
            .filter(|t| !t.failures.is_empty())
            .map(|t| t.name.clone())
            .collect()
    }

    /// Targets that neither fail nor are skipped.
    pub fn healthy(&self) -> BTreeSet<String> {
        let failing = self.failing();
        self.targets
            .iter()
            .map(|t| t.name.clone())
            .filter(|n| !failing.contains(n) && !self.skipped.contains(n))
            .collect()
    }

    /// The winning declaration of `id` (D7).
    pub fn winner(&self, id: &Id) -> Option<&Decl> {
        self.objects.get(id).and_then(|d| d.last())
    }

    /// Identities declared more than once (D7's warning).
    pub fn duplicates(&self) -> BTreeSet<Id> {
        self.objects
            .iter()
            .filter(|(_, d)| d.len() > 1)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A repository path for messages (non-UTF-8 bytes replaced).
pub fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        ".".to_string()
    } else {
        p.to_string_lossy().into_owned()
    }
}

/// D7: paths compared component by component, byte order of names (the root first).
pub fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    let ca: Vec<&[u8]> = a.components().map(|c| c.as_os_str().as_bytes()).collect();
    let cb: Vec<&[u8]> = b.components().map(|c| c.as_os_str().as_bytes()).collect();
    ca.cmp(&cb)
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.')
}

fn is_manifest_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.ends_with(b".yaml") || b.ends_with(b".yml") || b.ends_with(b".json")
}

#[derive(Default, Debug)]
struct Dir {
    /// Regular, non-hidden files directly in it (D1), by name.
    files: Vec<PathBuf>,
    subdirs: Vec<PathBuf>,
}

/// Every non-hidden directory of the checkout (D1), by repository path.
fn walk(root: &Path) -> BTreeMap<PathBuf, Dir> {
    let mut dirs = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut d = Dir::default();
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(&rel).display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
        for e in entries {
            let name = e.file_name();
            if is_hidden(&name) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                d.subdirs.push(rel.join(&name));
                stack.push(rel.join(&name));
            } else if ft.is_file() {
                d.files.push(rel.join(&name));
            }
        }
        dirs.insert(rel, d);
    }
    dirs
}

/// Lexical normalisation of `base/rel` (`..` and `.` removed); None when it climbs out.
fn join_norm(base: &Path, rel: &str) -> Option<PathBuf> {
    let joined = base.join(rel);
    let mut out: Vec<&OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out.iter().collect())
}

/// What one kustomization names.
#[derive(Debug, Default, Clone)]
struct Kustomization {
    file: PathBuf,
    component: bool,
    /// Directories named by `resources`, `bases`, `components`.
    dirs: Vec<PathBuf>,
    /// Files it reads directly (resources that are files, patches, generator inputs).
    files: Vec<PathBuf>,
    /// It does not parse: the target that builds it fails (kustomize says why).
    broken: bool,
}

fn str_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn read_kustomization(checkout: &Path, dir: &Path, file: &Path) -> Kustomization {
    let mut k = Kustomization {
        file: file.to_path_buf(),
        ..Default::default()
    };
    let text = std::fs::read_to_string(checkout.join(file)).unwrap_or_default();
    let v: Value = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .ok()
        .and_then(|y| serde_json::to_value(y).ok())
    {
        Some(v) => v,
        None => {
            k.broken = true;
            return k;
        }
    };
    k.component = v.get("kind").and_then(|x| x.as_str()) == Some("Component");
    let mut named = str_list(&v, "resources");
    named.extend(str_list(&v, "bases"));
    named.extend(str_list(&v, "components"));
    for n in named {
        if let Some(p) = join_norm(dir, &n) {
            if checkout.join(&p).is_dir() {
                k.dirs.push(p);
            } else {
                k.files.push(p);
            }
        }
    }
    let mut files = str_list(&v, "patchesStrategicMerge");
    for key in ["patches", "patchesJson6902"] {
        if let Some(a) = v.get(key).and_then(|x| x.as_array()) {
            for p in a {
                if let Some(path) = p.get("path").and_then(|x| x.as_str()) {
                    files.push(path.to_string());
                }
            }
        }
    }
    for key in ["configMapGenerator", "secretGenerator"] {
        if let Some(a) = v.get(key).and_then(|x| x.as_array()) {
            for g in a {
                for f in str_list(g, "files") {
                    let path = f.split_once('=').map(|(_, p)| p).unwrap_or(&f);
                    files.push(path.to_string());
                }
                files.extend(str_list(g, "envs"));
            }
        }
    }
    for f in files {
        // An inline patch (a YAML document in place of a path) is no file.
        if f.contains('\n') {
            continue;
        }
        if let Some(p) = join_norm(dir, &f) {
            k.files.push(p);
        }
    }
    k
}

/// The built-in scope table (D6) for the kinds the generator writes: namespaced?
fn builtin_scope(group: &str, kind: &str) -> Option<bool> {
    Some(match (group, kind) {
        ("", "ConfigMap" | "Secret" | "ServiceAccount" | "Service" | "Pod") => true,
        ("", "Namespace" | "PersistentVolume" | "Node") => false,
        ("apps", _) => true,
        ("rbac.authorization.k8s.io", "Role" | "RoleBinding") => true,
        ("rbac.authorization.k8s.io", "ClusterRole" | "ClusterRoleBinding") => false,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => false,
        _ => return None,
    })
}

pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

/// One parsed document of a file, or why it could not be read (D5).
struct Doc {
    line: usize,
    value: Value,
}

/// `--- ` separated chunks of a YAML file with the line each starts on.
fn split_yaml(text: &str) -> Vec<(usize, String)> {
    let mut chunks = vec![(1usize, String::new())];
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            chunks.push((i + 2, String::new()));
        } else {
            chunks.last_mut().unwrap().1.push_str(line);
        }
    }
    chunks
}

/// The first line of a chunk that is not blank or a comment: where its document starts.
fn content_line(start: usize, chunk: &str) -> usize {
    for (i, l) in chunk.lines().enumerate() {
        let t = l.trim();
        if !t.is_empty() && !t.starts_with('#') {
            return start + i;
        }
    }
    start
}

/// The documents of a manifest file (D5), or the failure naming `file:line`.
fn parse_file(shown: &str, name: &Path, bytes: &[u8]) -> Result<Vec<Doc>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8 text"))?;
    let json =
        name.as_os_str().as_bytes().ends_with(b".json") && text.trim_start().starts_with('{');
    let mut docs = Vec::new();
    if json {
        let mut line = 1 + text.len() - text.trim_start().len();
        line = text[..line - 1].matches('\n').count() + 1;
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            let v =
                v.map_err(|e| format!("{shown}:{}:{}: invalid JSON: {e}", e.line(), e.column()))?;
            docs.push(Doc { line, value: v });
        }
        return Ok(docs);
    }
    for (start, chunk) in split_yaml(text) {
        let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chunk).map_err(|e| {
            let l = e.location().map(|l| start + l.line() - 1).unwrap_or(start);
            format!("{shown}:{l}: invalid YAML: {e}")
        })?;
        let v = serde_json::to_value(&y).map_err(|e| format!("{shown}:{start}: {e}"))?;
        if v.is_null() {
            continue;
        }
        docs.push(Doc {
            line: content_line(start, &chunk),
            value: v,
        });
    }
    Ok(docs)
}

/// D3.2 and configuration.md: does this manifest file look like Kubernetes?
fn looks_like_kubernetes(name: &Path, bytes: Option<&[u8]>) -> bool {
    // D3.3: a name that is not UTF-8, or a file over the limit (bytes None), counts.
    if name.to_str().is_none() {
        return true;
    }
    let Some(bytes) = bytes else { return true };
    match parse_file("", name, bytes) {
        Ok(docs) => docs
            .iter()
            .any(|d| d.value.get("apiVersion").is_some() && d.value.get("kind").is_some()),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            if text.contains("{{") {
                return false;
            }
            text.lines().any(|l| {
                let t = l.trim_start().trim_start_matches(['"', '\'']);
                t.starts_with("apiVersion\"")
                    || t.starts_with("apiVersion'")
                    || t.starts_with("apiVersion:")
                    || t.starts_with("kind\"")
                    || t.starts_with("kind'")
                    || t.starts_with("kind:")
            })
        }
    }
}

/// A file's bytes, or None when it is over the size limit (never read, D3.3).
fn read_limited(checkout: &Path, rel: &Path) -> Option<Vec<u8>> {
    let p = checkout.join(rel);
    let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    (len <= SIZE_LIMIT).then(|| std::fs::read(&p).unwrap_or_default())
}

/// kustomize renders, keyed by a hash of everything a build could read.
static RENDERS: Mutex<Option<HashMap<u64, Result<String, String>>>> = Mutex::new(None);

fn render(checkout: &Path, dir: &Path, closure: &BTreeSet<PathBuf>) -> Result<String, String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    for f in closure {
        f.hash(&mut h);
        std::fs::read(checkout.join(f))
            .unwrap_or_default()
            .hash(&mut h);
    }
    let key = h.finish();
    if let Some(hit) = RENDERS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return hit.clone();
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(checkout.join(dir))
        .env("HOME", checkout.parent().unwrap_or(checkout))
        .output()
        .expect("kubectl kustomize");
    let result = if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .replace(&format!("{}/", checkout.display()), "")
            .trim()
            .to_string())
    };
    RENDERS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(key, result.clone());
    result
}

/// An object document's identity fields, or why it is not an object (D5).
fn object_fields(v: &Value) -> Result<(String, String, String), String> {
    if !v.is_object() {
        return Err("a manifest document must be a mapping".into());
    }
    let av = v.get("apiVersion").and_then(|x| x.as_str()).unwrap_or("");
    let kind = v.get("kind").and_then(|x| x.as_str()).unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        return Err("document has no apiVersion and kind".into());
    }
    let name = v
        .pointer("/metadata/name")
        .and_then(|x| x.as_str())
        .unwrap_or("");
    if name.is_empty() {
        return Err(format!("{kind} has no metadata.name"));
    }
    Ok((av.to_string(), kind.to_string(), name.to_string()))
}

/// D5: the objects a document declares, lists expanded in place.
fn expand(
    v: &Value,
    line: usize,
    shown: &str,
    out: &mut Vec<(usize, Value)>,
) -> Result<(), String> {
    if let Some(items) = v.get("items").and_then(|x| x.as_array()) {
        // Reading: "a document with an `items` list ... as kubectl decodes it" -- every
        // item must itself be an object (apiVersion, kind, name); the generator always writes
        // them whole, so kubectl's filling-in of a typed list's item kind is not exercised.
        for it in items {
            expand(it, line, shown, out)?;
        }
        return Ok(());
    }
    object_fields(v).map_err(|e| format!("{shown}:{line}: {e}"))?;
    out.push((line, v.clone()));
    Ok(())
}

struct Raw {
    target: usize,
    file: String,
    line: usize,
    doc: Value,
}

/// Evaluates the tree checked out at `checkout` for `env`.
pub fn evaluate(checkout: &Path, env: &Env) -> Declared {
    let dirs = walk(checkout);
    let mut out = Declared::default();

    // D1: root directories and their kustomizations.
    let mut kustomizations: BTreeMap<PathBuf, Kustomization> = BTreeMap::new();
    let mut roots: BTreeMap<PathBuf, Kind> = BTreeMap::new();
    for (rel, d) in &dirs {
        let names: Vec<&OsStr> = d.files.iter().map(|f| f.file_name().unwrap()).collect();
        if let Some(k) = KUSTOMIZATION_NAMES
            .iter()
            .find(|n| names.iter().any(|x| x.as_bytes() == n.as_bytes()))
        {
            kustomizations.insert(rel.clone(), read_kustomization(checkout, rel, &rel.join(k)));
            roots.insert(rel.clone(), Kind::Kustomize);
        } else if names.iter().any(|n| n.as_bytes().ends_with(b".tf")) {
            roots.insert(rel.clone(), Kind::Terraform);
        }
    }
    let inside_root = |p: &Path| p.ancestors().skip(1).any(|a| roots.contains_key(a));
    let topmost: Vec<PathBuf> = roots.keys().filter(|r| !inside_root(r)).cloned().collect();

    // D3.1: referenced directories. Reading: "some other root directory's kustomization" is
    // any kustomization in the tree (D1 calls every directory with one a root directory), not
    // only those of topmost roots.
    let mut referenced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut read_directly: BTreeSet<PathBuf> = BTreeSet::new();
    for (dir, k) in &kustomizations {
        for d in &k.dirs {
            if d != dir {
                referenced.insert(d.clone());
            }
        }
        read_directly.extend(k.files.iter().cloned());
    }

    let mut targets: Vec<Target> = Vec::new();
    for r in &topmost {
        let kind = roots[r];
        if referenced.contains(r) {
            continue;
        }
        if kind == Kind::Kustomize && kustomizations[r].component {
            out.unused_components.push(r.clone());
            out.unread.push((
                show(&kustomizations[r].file),
                "a kustomize Component that no kustomization uses (D3.1)".into(),
            ));
            continue;
        }
        targets.push(Target {
            name: show(r),
            kind,
            dir: r.clone(),
            failures: Vec::new(),
            broken_files: Vec::new(),
            reads: BTreeSet::new(),
        });
    }

    // D3.2: directories holding a manifest file that looks like Kubernetes.
    let mut file_bytes: HashMap<PathBuf, Option<Vec<u8>>> = HashMap::new();
    for (rel, d) in &dirs {
        for f in &d.files {
            if is_manifest_name(f.file_name().unwrap()) {
                file_bytes.insert(f.clone(), read_limited(checkout, f));
            }
        }
        if roots.contains_key(rel) || inside_root(rel) {
            continue;
        }
        let looks = d.files.iter().any(|f| {
            is_manifest_name(f.file_name().unwrap())
                && looks_like_kubernetes(f, file_bytes[f].as_deref())
        });
        if !looks {
            continue;
        }
        if d.files.iter().any(|f| read_directly.contains(f)) {
            continue;
        }
        targets.push(Target {
            name: show(rel),
            kind: Kind::Kubectl,
            dir: rel.clone(),
            failures: Vec::new(),
            broken_files: Vec::new(),
            reads: d
                .files
                .iter()
                .filter(|f| is_manifest_name(f.file_name().unwrap()))
                .cloned()
                .collect(),
        });
    }
    // D7: target order, path component by component.
    targets.sort_by(|a, b| path_order(&a.dir, &b.dir));

    // D4: kustomize closures (everything a build reads, transitively).
    for t in targets.iter_mut().filter(|t| t.kind == Kind::Kustomize) {
        let mut seen = BTreeSet::new();
        let mut stack = vec![t.dir.clone()];
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if let Some(k) = kustomizations.get(&d) {
                t.reads.insert(k.file.clone());
                t.reads.extend(k.files.iter().cloned());
                stack.extend(k.dirs.iter().cloned());
            }
        }
    }

    // D5: what each target declares, in declaration order.
    let mut raw: Vec<Raw> = Vec::new();
    for (ti, t) in targets.iter_mut().enumerate() {
        match t.kind {
            Kind::Terraform => {}
            Kind::Kubectl => {
                for f in t.reads.clone() {
                    let shown = show(&f);
                    if f.to_str().is_none() {
                        t.failures
                            .push(format!("{shown}: file name is not UTF-8 (D3.3)"));
                        t.broken_files.push(f.clone());
                        continue;
                    }
                    let Some(bytes) = &file_bytes[&f] else {
                        t.failures
                            .push(format!("{shown}: over the size limit (D3.3)"));
                        t.broken_files.push(f.clone());
                        continue;
                    };
                    let docs = match parse_file(&shown, &f, bytes) {
                        Ok(d) => d,
                        Err(e) => {
                            t.failures.push(e);
                            t.broken_files.push(f.clone());
                            continue;
                        }
                    };
                    let mut objs = Vec::new();
                    let mut bad = false;
                    for d in &docs {
                        if let Err(e) = expand(&d.value, d.line, &shown, &mut objs) {
                            t.failures.push(e);
                            bad = true;
                        }
                    }
                    if bad {
                        t.broken_files.push(f.clone());
                    }
                    for (line, doc) in objs {
                        raw.push(Raw {
                            target: ti,
                            file: shown.clone(),
                            line,
                            doc,
                        });
                    }
                }
            }
            Kind::Kustomize => {
                let kpath = kustomizations[&t.dir].file.clone();
                let kfile = show(&kpath);
                let closure: BTreeSet<PathBuf> = t
                    .reads
                    .iter()
                    .flat_map(|f| {
                        // Everything under the directories it reads, for the cache key.
                        let d = f.parent().unwrap_or(Path::new("")).to_path_buf();
                        dirs.get(&d)
                            .map(|x| x.files.clone())
                            .unwrap_or_default()
                            .into_iter()
                            .chain(std::iter::once(f.clone()))
                    })
                    .collect();
                match render(checkout, &t.dir, &closure) {
                    Err(e) => {
                        t.failures.push(format!("{kfile}: kustomize: {e}"));
                        t.broken_files.push(kpath);
                    }
                    Ok(text) => match parse_file(&kfile, Path::new("out.yaml"), text.as_bytes()) {
                        Err(e) => {
                            t.failures.push(e);
                            t.broken_files.push(kpath);
                        }
                        Ok(docs) => {
                            let mut objs = Vec::new();
                            for d in &docs {
                                if let Err(e) = expand(&d.value, d.line, &kfile, &mut objs) {
                                    t.failures.push(e);
                                    t.broken_files.push(kpath.clone());
                                }
                            }
                            for (_, doc) in objs {
                                raw.push(Raw {
                                    target: ti,
                                    file: kfile.clone(),
                                    line: 1,
                                    doc,
                                });
                            }
                        }
                    },
                }
            }
        }
    }

    // Targets that already fail on their files (D3.3, D5) or their references.
    let unreadable: BTreeSet<String> = targets
        .iter()
        .filter(|t| !t.failures.is_empty())
        .map(|t| t.name.clone())
        .collect();

    // D6: scopes: the built-in table, the tree's CRDs, the cluster.
    let mut tree_kinds: BTreeMap<(String, String), bool> = BTreeMap::new();
    for r in &raw {
        if r.doc["kind"] == "CustomResourceDefinition"
            && group_of(r.doc["apiVersion"].as_str().unwrap_or("")) == "apiextensions.k8s.io"
        {
            let g = r
                .doc
                .pointer("/spec/group")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            let k = r
                .doc
                .pointer("/spec/names/kind")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            let scope = r
                .doc
                .pointer("/spec/scope")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            tree_kinds.insert((g.to_string(), k.to_string()), scope != "Cluster");
        }
    }
    let mut uses_ns: Vec<BTreeSet<String>> = vec![BTreeSet::new(); targets.len()];
    let mut uses_kind: Vec<BTreeSet<(String, String)>> = vec![BTreeSet::new(); targets.len()];
    let mut makes_ns: Vec<BTreeSet<String>> = vec![BTreeSet::new(); targets.len()];
    let mut makes_kind: Vec<BTreeSet<(String, String)>> = vec![BTreeSet::new(); targets.len()];
    for r in raw {
        let av = r.doc["apiVersion"].as_str().unwrap_or("");
        let group = group_of(av).to_string();
        let kind = r.doc["kind"].as_str().unwrap_or("").to_string();
        let name = r
            .doc
            .pointer("/metadata/name")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string();
        let key = (group.clone(), kind.clone());
        let scope = builtin_scope(&group, &kind)
            .or_else(|| tree_kinds.get(&key).copied())
            .or_else(|| env.cluster_kinds.get(&key).copied());
        let namespace = match scope {
            Some(true) => Some(
                r.doc
                    .pointer("/metadata/namespace")
                    .and_then(|x| x.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| env.context_ns.clone()),
            ),
            _ => None,
        };
        if let Some(ns) = &namespace {
            uses_ns[r.target].insert(ns.clone());
        }
        if builtin_scope(&group, &kind).is_none() {
            uses_kind[r.target].insert(key.clone());
        }
        if group.is_empty() && kind == "Namespace" {
            makes_ns[r.target].insert(name.clone());
        }
        if kind == "CustomResourceDefinition" {
            let g = r
                .doc
                .pointer("/spec/group")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            let k = r
                .doc
                .pointer("/spec/names/kind")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            makes_kind[r.target].insert((g.to_string(), k.to_string()));
        }
        let id = Id {
            group,
            kind,
            namespace,
            name,
        };
        if builtin_scope(&id.group, &id.kind).is_none()
            && !tree_kinds.contains_key(&key)
            && scope.is_some()
        {
            out.scope_from_cluster.insert(id.clone());
        }
        if scope.is_none() {
            // Not a rule of the definition: the server cannot map a kind nobody serves, so
            // kubectl fails the target (no file is broken).
            out.unknown_scope.insert(id.clone());
            let t = &mut targets[r.target];
            let why = format!(
                "{}: {id}: no CRD serves this kind (the server refuses it)",
                r.file
            );
            if !t.failures.contains(&why) {
                t.failures.push(why);
            }
        }
        out.objects.entry(id).or_default().push(Decl {
            target: targets[r.target].name.clone(),
            file: r.file,
            line: r.line,
            doc: r.doc,
        });
    }

    // D7: `duplicates = "error"`: different copies fail every target declaring them.
    // Reading: a target that fails on its own files declares nothing that can be compared
    // (D9), so its readable copies do not make the others fail.
    if env.duplicates_error {
        for (id, all) in &out.objects {
            let decls: Vec<&Decl> = all
                .iter()
                .filter(|d| !unreadable.contains(&d.target))
                .collect();
            let Some(first) = decls.first().map(|d| normalised(&d.doc)) else {
                continue;
            };
            if decls.iter().any(|d| normalised(&d.doc) != first) {
                for d in &decls {
                    let t = targets.iter_mut().find(|t| t.name == d.target).unwrap();
                    t.failures.push(format!(
                        "{}:{}: {id} declared with different content (D7)",
                        d.file, d.line
                    ));
                    t.broken_files.push(PathBuf::from(&d.file));
                }
            }
        }
    }

    // D9: targets that depend on a failing one (its Namespace or CRD) are skipped.
    let mut bad: BTreeSet<usize> = (0..targets.len())
        .filter(|&i| !targets[i].failures.is_empty())
        .collect();
    loop {
        let before = bad.len();
        for i in 0..targets.len() {
            if bad.contains(&i) {
                continue;
            }
            let depends = bad.iter().any(|&j| {
                j != i
                    && (!makes_ns[j].is_disjoint(&uses_ns[i])
                        || !makes_kind[j].is_disjoint(&uses_kind[i]))
            });
            if depends {
                bad.insert(i);
                out.skipped.insert(targets[i].name.clone());
            }
        }
        if bad.len() == before {
            break;
        }
    }

    // D8: files that look like Kubernetes and that no target reads.
    let read: BTreeSet<&PathBuf> = targets.iter().flat_map(|t| t.reads.iter()).collect();
    for (rel, d) in &dirs {
        let in_kustomize = rel
            .ancestors()
            .any(|a| roots.get(a) == Some(&Kind::Kustomize))
            || d.files.iter().any(|f| read_directly.contains(f));
        if !in_kustomize {
            continue;
        }
        for f in &d.files {
            let name = f.file_name().unwrap();
            if !is_manifest_name(name)
                || KUSTOMIZATION_NAMES
                    .iter()
                    .any(|k| k.as_bytes() == name.as_bytes())
            {
                continue;
            }
            if read.contains(f) || !looks_like_kubernetes(f, file_bytes[f].as_deref()) {
                continue;
            }
            out.unread.push((show(f), "no target reads it (D8)".into()));
        }
    }

    out.targets = targets;
    out
}

/// A document compared for `duplicates = "error"`. Reading: the copies are compared as
/// parsed (key order and formatting do not matter), the namespace as resolved is part of the
/// identity, not of the content, so an explicit default namespace is no difference.
fn normalised(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("namespace");
    }
    v
}
