//! The seeded generator of repository histories. A history is a list of whole trees
//! (snapshots), one per push, so that dropping a step (shrinking) always leaves a valid
//! history: the next snapshot is simply pushed with a bigger diff.
//!
//! Each step applies a few operations to the previous tree, as a user would: new plain
//! directories at several depths, kustomize bases with overlays (some with `namespace:`,
//! patches in the overlay or in a `patches/` directory, generator inputs) and components,
//! manifests beside and above bases, edits, comment-only edits, renames and moves between
//! targets, deleted overlays, identical and different duplicates, typed and `v1` lists, CRDs
//! with their resources in another directory, Namespaces, explicit default namespaces, and now
//! and then broken input (invalid YAML, a document without a name, a non-manifest YAML beside
//! manifests, a file name that is not UTF-8, a file over 8 MiB), mostly repaired a push or two
//! later.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// Bytes of an oversized file: over D3.3's limit.
pub const BIG_SIZE: usize = 8 * 1024 * 1024 + 64 * 1024;

/// A file's content. `Big` is a head padded with comment lines to [`BIG_SIZE`] bytes, kept
/// short in memory (histories are copied while shrinking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blob {
    Text(Vec<u8>),
    Big(String),
}

impl Blob {
    pub fn text(s: impl Into<String>) -> Blob {
        Blob::Text(s.into().into_bytes())
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Blob::Text(b) => b.clone(),
            Blob::Big(head) => {
                let mut b = head.clone().into_bytes();
                let line =
                    b"# padding to cross the size limit ......................................\n";
                while b.len() + line.len() <= BIG_SIZE {
                    b.extend_from_slice(line);
                }
                b
            }
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Blob::Text(b) => std::str::from_utf8(b).ok(),
            Blob::Big(_) => None,
        }
    }
}

pub type Tree = BTreeMap<PathBuf, Blob>;

/// Names a history uses: an object-name prefix, namespaces that exist before the first push,
/// the context namespace, and the CRD group. Unique per world on a shared cluster.
#[derive(Clone, Debug)]
pub struct Names {
    pub prefix: String,
    /// Namespaces created before the first push (objects may live in them).
    pub namespaces: Vec<String>,
    /// The kubeconfig context's namespace (one of `namespaces`).
    pub ctx_ns: String,
    pub group: String,
}

impl Names {
    /// Namespace names a Namespace document may declare: the existing ones and two more that
    /// hold nothing.
    fn declarable_ns(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .namespaces
            .iter()
            .filter(|n| *n != "default")
            .cloned()
            .collect();
        v.push(format!("{}-free1", self.prefix));
        v.push(format!("{}-free2", self.prefix));
        v
    }
}

/// Feature families a run can leave out (`HOOKOPS_ORACLE_WITHOUT=dup,lists`), to look past a
/// finding to the next one.
pub const FEATURES: &[&str] = &[
    "kustomize",
    "components",
    "patches",
    "dup",
    "lists",
    "crd",
    "ns",
    "moves",
    "beside",
    "deloverlay",
    "broken",
    "nonutf8",
    "big",
];

/// The random source: proptest's ChaCha, seeded, stable across versions.
pub struct Rng(TestRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(
                &(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes(),
            );
        }
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            self.0.random_range(0..n)
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p)
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len())])
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum K {
    ConfigMap,
    Secret,
    ServiceAccount,
    ClusterRole,
    RoleBinding,
    Widget,
    Gadget,
}

impl K {
    fn kind(self) -> &'static str {
        match self {
            K::ConfigMap => "ConfigMap",
            K::Secret => "Secret",
            K::ServiceAccount => "ServiceAccount",
            K::ClusterRole => "ClusterRole",
            K::RoleBinding => "RoleBinding",
            K::Widget => "Widget",
            K::Gadget => "Gadget",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(self, K::ClusterRole | K::Gadget)
    }

    fn short(self) -> &'static str {
        match self {
            K::ConfigMap => "cm",
            K::Secret => "sec",
            K::ServiceAccount => "sa",
            K::ClusterRole => "cr",
            K::RoleBinding => "rb",
            K::Widget => "wd",
            K::Gadget => "gd",
        }
    }
}

/// Where a namespaced object says it lives.
#[derive(Clone, Debug)]
enum Ns {
    /// No `metadata.namespace`: the context's (or an overlay's).
    None,
    Explicit(String),
}

/// An object as the generator writes it.
#[derive(Clone, Debug)]
struct Obj {
    k: K,
    name: String,
    ns: Ns,
    token: String,
}

pub struct Gen {
    rng: Rng,
    names: Names,
    counter: u64,
    without: BTreeSet<String>,
    /// Custom kinds whose CRD some earlier step declared (the cluster keeps them: D10).
    crd_ever: BTreeSet<K>,
}

const KUSTOMIZATION: &str = "kustomization.yaml";

fn is_kustomization(p: &Path) -> bool {
    p.file_name().map(|n| n.as_bytes()) == Some(KUSTOMIZATION.as_bytes())
}

fn is_manifest(p: &Path) -> bool {
    let n = p.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    (n.ends_with(b".yaml") || n.ends_with(b".yml") || n.ends_with(b".json")) && !is_kustomization(p)
}

fn parent(p: &Path) -> PathBuf {
    p.parent().unwrap_or(Path::new("")).to_path_buf()
}

/// The relative path from directory `from` to `to` (both repository paths).
fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Directories holding a kustomization.
fn kust_dirs(tree: &Tree) -> Vec<PathBuf> {
    tree.keys()
        .filter(|p| is_kustomization(p))
        .map(|p| parent(p))
        .collect()
}

fn kust_text(tree: &Tree, dir: &Path) -> String {
    tree.get(&dir.join(KUSTOMIZATION))
        .and_then(|b| b.as_str())
        .unwrap_or_default()
        .to_string()
}

fn is_component(tree: &Tree, dir: &Path) -> bool {
    kust_text(tree, dir).contains("kind: Component")
}

/// Inside (or at) a directory holding a kustomization.
fn under_kust(tree: &Tree, dir: &Path) -> bool {
    let ks: BTreeSet<PathBuf> = kust_dirs(tree).into_iter().collect();
    dir.ancestors().any(|a| ks.contains(a))
}

fn docs_of(text: &str) -> Vec<String> {
    text.split("\n---\n")
        .map(|d| {
            let mut d = d.to_string();
            if !d.ends_with('\n') {
                d.push('\n');
            }
            d
        })
        .filter(|d| d.contains("kind:"))
        .collect()
}

fn join_docs(docs: &[String]) -> String {
    docs.join("---\n")
}

/// Tokens (`t<N>`) written in a text.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'"' && b[i + 1] == b't' && b[i + 2].is_ascii_digit() {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                out.push(text[i + 1..j].to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Gen {
    pub fn new(seed: u64, names: Names, without: BTreeSet<String>) -> Gen {
        Gen {
            rng: Rng::new(seed),
            names,
            counter: 0,
            without,
            crd_ever: BTreeSet::new(),
        }
    }

    fn on(&self, feature: &str) -> bool {
        !self.without.contains(feature)
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn token(&mut self) -> String {
        format!("t{}", self.next())
    }

    // ---- objects -------------------------------------------------------------------------

    fn pick_kind(&mut self, tree: &Tree, plain: bool) -> K {
        let r = self.rng.below(100);
        let in_tree = tree_crds(tree);
        let served =
            |k: K| self.on("crd") && plain && (self.crd_ever.contains(&k) || in_tree.contains(&k));
        match r {
            0..=54 => K::ConfigMap,
            55..=62 => K::Secret,
            63..=70 => K::ServiceAccount,
            71..=77 => K::ClusterRole,
            78..=84 => K::RoleBinding,
            85..=94 if served(K::Widget) => K::Widget,
            95..=99 if served(K::Gadget) => K::Gadget,
            _ => K::ConfigMap,
        }
    }

    fn pick_ns(&mut self, k: K, in_base: bool) -> Ns {
        if !k.namespaced() {
            // A cluster-scoped object with a namespace anyway, now and then (D6).
            if !in_base && self.rng.chance(0.1) {
                return Ns::Explicit(self.names.namespaces[0].clone());
            }
            return Ns::None;
        }
        if in_base {
            return Ns::None;
        }
        match self.rng.below(10) {
            0..=4 => Ns::None,
            5..=6 => Ns::Explicit(self.names.ctx_ns.clone()),
            _ => {
                let ns = self.rng.pick(&self.names.namespaces).unwrap().clone();
                Ns::Explicit(ns)
            }
        }
    }

    /// A new object: mostly a fresh name, sometimes the name of one already in the tree (a
    /// duplicate, or the same name in another namespace).
    fn new_obj(&mut self, tree: &Tree, plain: bool, in_base: bool) -> Obj {
        let k = self.pick_kind(tree, plain);
        let ns = self.pick_ns(k, in_base);
        let existing = existing_names(tree, k);
        let name = if self.on("dup") && !existing.is_empty() && self.rng.chance(0.15) {
            self.rng.pick(&existing).unwrap().clone()
        } else if self.rng.chance(0.06) {
            let n = self.next();
            format!("{}-keep-{}-{n}", self.names.prefix, k.short())
        } else {
            let n = self.next();
            format!("{}-{}-{n}", self.names.prefix, k.short())
        };
        let token = self.token();
        Obj { k, name, ns, token }
    }

    fn render(&self, o: &Obj) -> String {
        let mut m = format!("metadata:\n  name: {}\n", o.name);
        if let Ns::Explicit(ns) = &o.ns {
            m.push_str(&format!("  namespace: {ns}\n"));
        }
        m.push_str(&format!(
            "  annotations:\n    oracle.test/v: \"{}\"\n",
            o.token
        ));
        if o.name.contains("-keep-") {
            m.push_str("    hookops.io/prune: disabled\n");
        }
        let group = &self.names.group;
        match o.k {
            K::ConfigMap => format!("apiVersion: v1\nkind: ConfigMap\n{m}data:\n  v: \"{}\"\n", o.token),
            K::Secret => format!(
                "apiVersion: v1\nkind: Secret\n{m}type: Opaque\nstringData:\n  v: \"{}\"\n",
                o.token
            ),
            K::ServiceAccount => format!("apiVersion: v1\nkind: ServiceAccount\n{m}"),
            K::ClusterRole => format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n{m}rules:\n- apiGroups: [\"\"]\n  resources: [\"configmaps\"]\n  verbs: [\"get\"]\n"
            ),
            K::RoleBinding => format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n{m}roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: {}\n",
                self.names.ctx_ns
            ),
            K::Widget => format!("apiVersion: {group}/v1\nkind: Widget\n{m}spec:\n  v: \"{}\"\n", o.token),
            K::Gadget => format!("apiVersion: {group}/v1\nkind: Gadget\n{m}spec:\n  v: \"{}\"\n", o.token),
        }
    }

    fn crd(&self, plural: &str, kind: &str, scope: &str) -> String {
        let g = &self.names.group;
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{g}\n  annotations:\n    oracle.test/v: \"crd\"\nspec:\n  group: {g}\n  scope: {scope}\n  names:\n    plural: {plural}\n    singular: {}\n    kind: {kind}\n    listKind: {kind}List\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
            kind.to_lowercase()
        )
    }

    fn docs(&mut self, tree: &Tree, n: usize, plain: bool, in_base: bool) -> Vec<String> {
        (0..n)
            .map(|_| {
                let o = self.new_obj(tree, plain, in_base);
                self.render(&o)
            })
            .collect()
    }

    // ---- places ----------------------------------------------------------------------------

    fn area(&mut self) -> PathBuf {
        const AREAS: &[&str] = &[
            "apps",
            "apps/web",
            "infra",
            "m",
            "platform/team",
            "deep/er/still",
            "x y",
            "ünï",
            "",
        ];
        PathBuf::from(self.rng.pick(AREAS).unwrap())
    }

    fn new_dir(&mut self) -> PathBuf {
        let a = self.area();
        if self.rng.chance(0.6) {
            a.join(format!("d{}", self.next()))
        } else {
            a
        }
    }

    /// Directories holding manifests that are not kustomize inputs (kubectl targets, mostly).
    fn plain_dirs(&self, tree: &Tree) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = tree
            .keys()
            .filter(|p| is_manifest(p))
            .map(|p| parent(p))
            .filter(|d| !under_kust(tree, d))
            .collect();
        v.dedup();
        v
    }

    fn manifests(tree: &Tree) -> Vec<PathBuf> {
        tree.keys().filter(|p| is_manifest(p)).cloned().collect()
    }

    fn fresh_file(&mut self, dir: &Path, stem: &str) -> PathBuf {
        let ext = match self.rng.below(10) {
            0 => "yml",
            _ => "yaml",
        };
        dir.join(format!("{stem}{}.{ext}", self.next()))
    }

    // ---- the step -------------------------------------------------------------------------

    /// The next tree, and what was done (for the replay script's comments). `broken` are the
    /// files the evaluator says make a target fail: a repair removes some of them.
    pub fn step(&mut self, prev: &Tree, broken: &[PathBuf]) -> (Tree, Vec<String>) {
        let mut tree = prev.clone();
        let mut did = Vec::new();
        if tree.is_empty() {
            for _ in 0..2 + self.rng.below(3) {
                did.push(self.op(&mut tree));
            }
            return (tree, did);
        }
        if !broken.is_empty() && self.rng.chance(0.6) {
            did.push(self.repair(&mut tree, broken));
            if self.rng.chance(0.5) {
                did.push(self.op(&mut tree));
            }
        } else {
            for _ in 0..1 + self.rng.below(3) {
                did.push(self.op(&mut tree));
            }
        }
        self.crd_ever.extend(tree_crds(&tree));
        (tree, did)
    }

    fn repair(&mut self, tree: &mut Tree, broken: &[PathBuf]) -> String {
        let f = self.rng.pick(broken).unwrap().clone();
        if is_kustomization(&f) {
            let dir = parent(&f);
            remove_dir(tree, &dir);
            return format!("repair: remove {}", dir.display());
        }
        tree.remove(&f);
        format!("repair: remove {}", f.display())
    }

    fn op(&mut self, tree: &mut Tree) -> String {
        let big = Self::manifests(tree).len() > 24 || kust_dirs(tree).len() > 6;
        let ops: &[(&str, u32)] = &[
            ("plain_dir", if big { 3 } else { 10 }),
            ("new_file", if big { 3 } else { 8 }),
            ("edit", 14),
            ("comment", 6),
            ("delete_file", if big { 14 } else { 6 }),
            ("move", 6),
            ("base", 6),
            ("overlay", 6),
            ("component", 3),
            ("delete_overlay", 5),
            ("delete_dir", if big { 8 } else { 2 }),
            ("duplicate", 8),
            ("list", 4),
            ("crd", 2),
            ("cr", 3),
            ("namespace", 3),
            ("beside_base", 3),
            ("patch_edit", 4),
            ("broken", 3),
            ("no_name", 1),
            ("values", 1),
            ("non_utf8", 1),
            ("big", 1),
            ("generator", 2),
        ];
        let allowed: Vec<(&str, u32)> = ops
            .iter()
            .copied()
            .filter(|(name, _)| self.allowed(name))
            .collect();
        let total: u32 = allowed.iter().map(|(_, w)| w).sum();
        let mut r = self.rng.below(total as usize) as u32;
        let mut chosen = allowed[0].0;
        for (name, w) in &allowed {
            if r < *w {
                chosen = name;
                break;
            }
            r -= w;
        }
        // "big" is rare: one in three of its picks.
        if chosen == "big" && !self.rng.chance(0.3) {
            chosen = "edit";
        }
        self.run(chosen, tree)
            .unwrap_or_else(|| self.run("plain_dir", tree).unwrap())
    }

    fn allowed(&self, op: &str) -> bool {
        let need = match op {
            "base" | "overlay" | "generator" => "kustomize",
            "delete_overlay" => "deloverlay",
            "beside_base" => "beside",
            "component" => "components",
            "patch_edit" => "patches",
            "duplicate" => "dup",
            "list" => "lists",
            "crd" | "cr" => "crd",
            "namespace" => "ns",
            "move" => "moves",
            "broken" | "no_name" | "values" => "broken",
            "non_utf8" => "nonutf8",
            "big" => "big",
            _ => return true,
        };
        self.on(need) && (need != "components" || self.on("kustomize"))
    }

    /// Runs one operation; None when it has nothing to work on.
    fn run(&mut self, op: &str, tree: &mut Tree) -> Option<String> {
        match op {
            "plain_dir" => {
                let dir = self.new_dir();
                let files = 1 + self.rng.below(2);
                for _ in 0..files {
                    let n = 1 + self.rng.below(3);
                    let docs = self.docs(tree, n, true, false);
                    let f = self.fresh_file(&dir, "m");
                    tree.insert(f, Blob::text(join_docs(&docs)));
                }
                Some(format!("plain directory {}", dir.display()))
            }
            "new_file" => {
                // Anywhere a manifest already is: a kubectl target, a base (sometimes not
                // listed in its kustomization: D8), an overlay.
                let dirs: Vec<PathBuf> = Self::manifests(tree).iter().map(|p| parent(p)).collect();
                let dir = self.rng.pick(&dirs)?.clone();
                let in_kust = under_kust(tree, &dir);
                let n = 1 + self.rng.below(2);
                let docs = self.docs(tree, n, !in_kust, in_kust);
                let f = self.fresh_file(&dir, "n");
                if tree.contains_key(&dir.join(KUSTOMIZATION)) && self.rng.chance(0.7) {
                    add_resource(tree, &dir, &f.file_name().unwrap().to_string_lossy());
                }
                tree.insert(f.clone(), Blob::text(join_docs(&docs)));
                Some(format!("new file {}", f.display()))
            }
            "edit" => {
                let f = self.pick_text_manifest(tree)?;
                let text = tree[&f].as_str()?.to_string();
                let toks = tokens(&text);
                let old = self.rng.pick(&toks)?.clone();
                let new = self.token();
                tree.insert(
                    f.clone(),
                    Blob::text(text.replace(&format!("\"{old}\""), &format!("\"{new}\""))),
                );
                Some(format!("edit {} ({old} -> {new})", f.display()))
            }
            "comment" => {
                let f = self.pick_text_manifest(tree)?;
                let mut text = tree[&f].as_str()?.to_string();
                let n = self.next();
                if self.rng.chance(0.5) {
                    text = format!("# comment {n}\n{text}");
                } else {
                    text.push_str(&format!("# comment {n}\n"));
                }
                tree.insert(f.clone(), Blob::text(text));
                Some(format!("comment-only edit {}", f.display()))
            }
            "delete_file" => {
                let files = Self::manifests(tree);
                let f = self.rng.pick(&files)?.clone();
                tree.remove(&f);
                Some(format!("delete {}", f.display()))
            }
            "move" => {
                let files: Vec<PathBuf> = Self::manifests(tree)
                    .into_iter()
                    .filter(|p| !under_kust(tree, &parent(p)))
                    .collect();
                let f = self.rng.pick(&files)?.clone();
                let blob = tree.remove(&f)?;
                let to = if self.rng.chance(0.4) {
                    // A rename in place.
                    self.fresh_file(&parent(&f), "r")
                } else {
                    let dirs = self.plain_dirs(tree);
                    let dir = match self.rng.pick(&dirs) {
                        Some(d) if self.rng.chance(0.7) => d.clone(),
                        _ => self.new_dir(),
                    };
                    dir.join(f.file_name().unwrap())
                };
                tree.insert(to.clone(), blob);
                Some(format!("move {} -> {}", f.display(), to.display()))
            }
            "base" => {
                let at = self.area().join(format!("b{}", self.next()));
                let base = at.join("base");
                let n = 1 + self.rng.below(3);
                let mut res = Vec::new();
                for _ in 0..n {
                    let k = 1 + self.rng.below(2);
                    let docs = self.docs(tree, k, false, true);
                    let f = self.fresh_file(&base, "r");
                    res.push(f.file_name().unwrap().to_string_lossy().into_owned());
                    tree.insert(f, Blob::text(join_docs(&docs)));
                }
                tree.insert(
                    base.join(KUSTOMIZATION),
                    Blob::text(kustomization(&res, &[], None, &[])),
                );
                // Mostly with an overlay right away.
                if self.rng.chance(0.7) {
                    self.overlay_of(tree, &base);
                }
                if self.on("beside") && self.rng.chance(0.3) {
                    self.beside(tree, &base);
                }
                Some(format!("base {}", base.display()))
            }
            "overlay" => {
                let bases = self.buildable(tree);
                let base = self.rng.pick(&bases)?.clone();
                let ov = self.overlay_of(tree, &base);
                Some(format!("overlay {} of {}", ov.display(), base.display()))
            }
            "component" => {
                let at = self
                    .area()
                    .join("components")
                    .join(format!("c{}", self.next()));
                let docs = self.docs(tree, 1, false, true);
                tree.insert(at.join("extra.yaml"), Blob::text(join_docs(&docs)));
                tree.insert(
                    at.join(KUSTOMIZATION),
                    Blob::text("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- extra.yaml\n"),
                );
                // Used by an existing overlay, mostly (an unused one is reported: D3.1).
                let overlays = overlays(tree);
                if let Some(ov) = self.rng.pick(&overlays).cloned() {
                    if self.rng.chance(0.8) {
                        add_list_entry(tree, &ov, "components", &relative(&ov, &at));
                    }
                }
                Some(format!("component {}", at.display()))
            }
            "delete_overlay" => {
                let ovs = overlays(tree);
                let ov = self.rng.pick(&ovs)?.clone();
                remove_dir(tree, &ov);
                Some(format!("delete overlay {}", ov.display()))
            }
            "delete_dir" => {
                let mut dirs = self.plain_dirs(tree);
                dirs.extend(kust_dirs(tree));
                let d = self.rng.pick(&dirs)?.clone();
                if d.as_os_str().is_empty() {
                    return None;
                }
                remove_dir(tree, &d);
                Some(format!("delete directory {}", d.display()))
            }
            "duplicate" => {
                // A document copied, identical or changed, into the same file, another file of
                // its directory, or another directory.
                let f = self.pick_text_manifest(tree)?;
                let text = tree[&f].as_str()?.to_string();
                let docs = docs_of(&text);
                let mut doc = self.rng.pick(&docs)?.clone();
                if doc.contains("items:") || doc.contains("CustomResourceDefinition") {
                    return None;
                }
                let different = self.rng.chance(0.5);
                if different {
                    for t in tokens(&doc) {
                        let new = self.token();
                        doc = doc.replace(&format!("\"{t}\""), &format!("\"{new}\""));
                    }
                }
                let to = match self.rng.below(3) {
                    0 => f.clone(),
                    1 => self.fresh_file(&parent(&f), "dup"),
                    _ => {
                        let dirs = self.plain_dirs(tree);
                        let d = self.rng.pick(&dirs)?.clone();
                        self.fresh_file(&d, "dup")
                    }
                };
                let mut target_docs = tree
                    .get(&to)
                    .and_then(|b| b.as_str())
                    .map(docs_of)
                    .unwrap_or_default();
                target_docs.push(doc);
                tree.insert(to.clone(), Blob::text(join_docs(&target_docs)));
                Some(format!(
                    "{} duplicate of a document of {} into {}",
                    if different { "different" } else { "identical" },
                    f.display(),
                    to.display()
                ))
            }
            "list" => {
                let dirs = self.plain_dirs(tree);
                let dir = match self.rng.pick(&dirs) {
                    Some(d) if self.rng.chance(0.6) => d.clone(),
                    _ => self.new_dir(),
                };
                let text = self.list(tree);
                let f = self.fresh_file(&dir, "list");
                tree.insert(f.clone(), Blob::text(text));
                Some(format!("list {}", f.display()))
            }
            "crd" => {
                let dir = PathBuf::from(if self.rng.chance(0.5) {
                    "crds"
                } else {
                    "platform/crds"
                });
                let (file, text) = if self.rng.chance(0.5) {
                    ("widgets.yaml", self.crd("widgets", "Widget", "Namespaced"))
                } else {
                    ("gadgets.yaml", self.crd("gadgets", "Gadget", "Cluster"))
                };
                tree.insert(dir.join(file), Blob::text(text));
                Some(format!("CRD {}", dir.join(file).display()))
            }
            "cr" => {
                let mut kinds: Vec<K> = tree_crds(tree)
                    .into_iter()
                    .chain(self.crd_ever.iter().copied())
                    .collect();
                kinds.sort();
                kinds.dedup();
                let k = *self.rng.pick(&kinds)?;
                let dir = PathBuf::from(if self.rng.chance(0.5) {
                    "widgets"
                } else {
                    "apps/custom"
                });
                let ns = self.pick_ns(k, false);
                let n = self.next();
                let name = format!("{}-{}-{n}", self.names.prefix, k.short());
                let token = self.token();
                let doc = self.render(&Obj { k, name, ns, token });
                let f = self.fresh_file(&dir, "cr");
                tree.insert(f.clone(), Blob::text(doc));
                Some(format!("custom resource {}", f.display()))
            }
            "namespace" => {
                let dir = PathBuf::from(if self.rng.chance(0.5) {
                    "namespaces"
                } else {
                    "infra"
                });
                let names = self.names.declarable_ns();
                let n = 1 + self.rng.below(2);
                let docs: Vec<String> = (0..n)
                    .map(|_| {
                        let ns = self.rng.pick(&names).unwrap().clone();
                        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  annotations:\n    oracle.test/v: \"{}\"\n", self.token())
                    })
                    .collect();
                let f = self.fresh_file(&dir, "ns");
                tree.insert(f.clone(), Blob::text(join_docs(&docs)));
                Some(format!("Namespaces {}", f.display()))
            }
            "beside_base" => {
                let bases: Vec<PathBuf> = kust_dirs(tree)
                    .into_iter()
                    .filter(|d| d.file_name().map(|n| n == "base").unwrap_or(false))
                    .collect();
                let base = self.rng.pick(&bases)?.clone();
                let f = self.beside(tree, &base);
                Some(format!("manifest beside a base: {}", f.display()))
            }
            "patch_edit" => {
                let patches: Vec<PathBuf> = tree
                    .keys()
                    .filter(|p| p.to_string_lossy().contains("patch"))
                    .cloned()
                    .collect();
                let f = self.rng.pick(&patches)?.clone();
                let text = tree[&f].as_str()?.to_string();
                let toks = tokens(&text);
                let old = self.rng.pick(&toks)?.clone();
                let new = self.token();
                tree.insert(
                    f.clone(),
                    Blob::text(text.replace(&format!("\"{old}\""), &format!("\"{new}\""))),
                );
                Some(format!("patch edit {}", f.display()))
            }
            "broken" => {
                let dir = self.existing_or_new_dir(tree);
                let f = self.fresh_file(&dir, "broken");
                tree.insert(
                    f.clone(),
                    Blob::text(format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [{}-unclosed\ndata:\n  v: \"x\"\n",
                        self.names.prefix
                    )),
                );
                Some(format!("invalid YAML {}", f.display()))
            }
            "no_name" => {
                let dir = self.existing_or_new_dir(tree);
                let f = self.fresh_file(&dir, "noname");
                tree.insert(f.clone(), Blob::text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    a: b\ndata:\n  v: \"x\"\n"));
                Some(format!("document without a name {}", f.display()))
            }
            "values" => {
                let dir = self.existing_or_new_dir(tree);
                let f = dir.join(format!("values{}.yaml", self.next()));
                tree.insert(
                    f.clone(),
                    Blob::text("replicas: 3\nimage:\n  tag: \"1.0\"\n"),
                );
                Some(format!("non-manifest YAML {}", f.display()))
            }
            "non_utf8" => {
                let dir = self.existing_or_new_dir(tree);
                let mut name = format!("bad{}-", self.next()).into_bytes();
                name.extend_from_slice(b"\xff\xfe.yaml");
                let f = dir.join(OsStr::from_bytes(&name));
                let docs = self.docs(tree, 1, true, false);
                tree.insert(f.clone(), Blob::text(join_docs(&docs)));
                Some(format!("file name that is not UTF-8 in {}", dir.display()))
            }
            "big" => {
                let dir = self.existing_or_new_dir(tree);
                let f = dir.join(format!("big{}.yaml", self.next()));
                let docs = self.docs(tree, 1, true, false);
                tree.insert(f.clone(), Blob::Big(join_docs(&docs)));
                Some(format!("file over the size limit {}", f.display()))
            }
            "generator" => {
                // An overlay whose ConfigMap is generated from an input file in a directory of
                // its own (kustomization input).
                let bases = self.buildable(tree);
                let base = self.rng.pick(&bases)?.clone();
                let ov = self.overlay_of(tree, &base);
                let n = self.next();
                let input = ov.join("config").join("settings.yaml");
                tree.insert(input, Blob::text(format!("key: \"{}\"\n", self.token())));
                let mut k = kust_text(tree, &ov);
                k.push_str(&format!(
                    "configMapGenerator:\n- name: {}-gen-{n}\n  files:\n  - config/settings.yaml\n",
                    self.names.prefix
                ));
                tree.insert(ov.join(KUSTOMIZATION), Blob::text(k));
                Some(format!("generator in {}", ov.display()))
            }
            _ => None,
        }
    }

    fn existing_or_new_dir(&mut self, tree: &Tree) -> PathBuf {
        let dirs = self.plain_dirs(tree);
        match self.rng.pick(&dirs) {
            Some(d) if self.rng.chance(0.7) => d.clone(),
            _ => self.new_dir(),
        }
    }

    fn pick_text_manifest(&mut self, tree: &Tree) -> Option<PathBuf> {
        let files: Vec<PathBuf> = tree
            .iter()
            .filter(|(p, b)| is_manifest(p) && b.as_str().is_some_and(|t| !tokens(t).is_empty()))
            .map(|(p, _)| p.clone())
            .collect();
        self.rng.pick(&files).cloned()
    }

    /// Kustomizations an overlay may build on: bases and overlays (not components).
    fn buildable(&self, tree: &Tree) -> Vec<PathBuf> {
        kust_dirs(tree)
            .into_iter()
            .filter(|d| !is_component(tree, d))
            .collect()
    }

    /// A new overlay of `base`, at one of several depths, with `namespace:`, a patch (in the
    /// overlay or in a `patches/` directory) and a component now and then.
    fn overlay_of(&mut self, tree: &mut Tree, base: &Path) -> PathBuf {
        let n = self.next();
        let ov = match self.rng.below(4) {
            0 => parent(base).join("overlays").join(format!("o{n}")),
            1 => PathBuf::from("ov").join(format!("o{n}")),
            2 => PathBuf::from(format!("envs/e{n}/deep")),
            _ => self.area().join(format!("o{n}")),
        };
        // Never inside another kustomization's directory (the layouts D1 leaves open).
        if under_kust(tree, &ov) || tree.keys().any(|p| p.starts_with(&ov)) {
            return self.overlay_fallback(tree, base);
        }
        let namespace = if self.rng.chance(0.4) {
            Some(self.rng.pick(&self.names.namespaces).unwrap().clone())
        } else {
            None
        };
        let mut patches = Vec::new();
        if self.on("patches") && self.rng.chance(0.4) {
            if let Some(name) = base_configmap(tree, base) {
                let token = self.token();
                let at = if self.rng.chance(0.5) {
                    format!("patches/patch{n}.yaml")
                } else {
                    format!("patch{n}.yaml")
                };
                tree.insert(
                    ov.join(&at),
                    Blob::text(format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    oracle.test/v: \"{token}\"\ndata:\n  v: \"{token}\"\n"
                    )),
                );
                patches.push(at);
            }
        }
        let mut components = Vec::new();
        if self.on("components") && self.rng.chance(0.3) {
            let comps: Vec<PathBuf> = kust_dirs(tree)
                .into_iter()
                .filter(|d| is_component(tree, d))
                .collect();
            if let Some(c) = self.rng.pick(&comps) {
                components.push(relative(&ov, c));
            }
        }
        tree.insert(
            ov.join(KUSTOMIZATION),
            Blob::text(kustomization(
                &[relative(&ov, base)],
                &components,
                namespace.as_deref(),
                &patches,
            )),
        );
        ov
    }

    fn overlay_fallback(&mut self, tree: &mut Tree, base: &Path) -> PathBuf {
        let ov = PathBuf::from("ov").join(format!("f{}", self.next()));
        tree.insert(
            ov.join(KUSTOMIZATION),
            Blob::text(kustomization(&[relative(&ov, base)], &[], None, &[])),
        );
        ov
    }

    /// A manifest in the directory above a base (`m/install.yaml` beside `m/base/`).
    fn beside(&mut self, tree: &mut Tree, base: &Path) -> PathBuf {
        let dir = parent(base);
        let n = 1 + self.rng.below(2);
        let docs = self.docs(tree, n, true, false);
        let f = dir.join(format!("install{}.yaml", self.next()));
        tree.insert(f.clone(), Blob::text(join_docs(&docs)));
        f
    }

    fn list(&mut self, tree: &Tree) -> String {
        let (list_av, list_kind, k) = match self.rng.below(3) {
            0 => ("v1", "ConfigMapList", Some(K::ConfigMap)),
            1 => (
                "rbac.authorization.k8s.io/v1",
                "RoleBindingList",
                Some(K::RoleBinding),
            ),
            _ => ("v1", "List", None),
        };
        let n = 1 + self.rng.below(3);
        let mut items = String::new();
        for _ in 0..n {
            let mut o = self.new_obj(tree, true, false);
            if let Some(k) = k {
                if o.k != k {
                    o.k = k;
                    if !k.namespaced() {
                        o.ns = Ns::None;
                    }
                }
            }
            let doc = self.render(&o);
            for (i, line) in doc.lines().enumerate() {
                items.push_str(if i == 0 { "- " } else { "  " });
                items.push_str(line);
                items.push('\n');
            }
        }
        format!("apiVersion: {list_av}\nkind: {list_kind}\nitems:\n{items}")
    }
}

/// Custom kinds whose CRD the tree declares.
fn tree_crds(tree: &Tree) -> BTreeSet<K> {
    let mut out = BTreeSet::new();
    for b in tree.values() {
        if let Some(t) = b
            .as_str()
            .filter(|t| t.contains("kind: CustomResourceDefinition"))
        {
            if t.contains("kind: Widget\n") {
                out.insert(K::Widget);
            }
            if t.contains("kind: Gadget\n") {
                out.insert(K::Gadget);
            }
        }
    }
    out
}

/// Names of objects of kind `k` written anywhere in the tree.
fn existing_names(tree: &Tree, k: K) -> Vec<String> {
    let needle = format!("kind: {}\nmetadata:\n  name: ", k.kind());
    let mut out = Vec::new();
    for b in tree.values() {
        if let Some(t) = b.as_str() {
            for (i, _) in t.match_indices(&needle) {
                let rest = &t[i + needle.len()..];
                let name = rest.lines().next().unwrap_or("").trim();
                if !name.is_empty() && !name.starts_with('[') {
                    out.push(name.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Overlays: kustomizations that reference another directory.
fn overlays(tree: &Tree) -> Vec<PathBuf> {
    kust_dirs(tree)
        .into_iter()
        .filter(|d| !is_component(tree, d) && kust_text(tree, d).contains("- ../"))
        .collect()
}

/// The name of a ConfigMap that the base's own resource files declare.
fn base_configmap(tree: &Tree, base: &Path) -> Option<String> {
    let k = kust_text(tree, base);
    if k.contains("- ../") {
        return None;
    }
    for (p, b) in tree.range(base.to_path_buf()..) {
        if !p.starts_with(base) {
            break;
        }
        if parent(p) != base || is_kustomization(p) {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy();
        if !k.contains(&format!("- {name}\n")) {
            continue;
        }
        if let Some(n) = existing_names(&Tree::from([(p.clone(), b.clone())]), K::ConfigMap).first()
        {
            return Some(n.clone());
        }
    }
    None
}

pub fn kustomization(
    resources: &[String],
    components: &[String],
    namespace: Option<&str>,
    patches: &[String],
) -> String {
    let mut s = String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n");
    if let Some(ns) = namespace {
        s.push_str(&format!("namespace: {ns}\n"));
    }
    s.push_str("resources:\n");
    for r in resources {
        s.push_str(&format!("- {r}\n"));
    }
    if !components.is_empty() {
        s.push_str("components:\n");
        for c in components {
            s.push_str(&format!("- {c}\n"));
        }
    }
    if !patches.is_empty() {
        s.push_str("patches:\n");
        for p in patches {
            s.push_str(&format!("- path: {p}\n"));
        }
    }
    s
}

/// Appends `entry` to the `resources:` list of the kustomization in `dir`.
fn add_resource(tree: &mut Tree, dir: &Path, entry: &str) {
    let k = kust_text(tree, dir);
    let k = k.replacen("resources:\n", &format!("resources:\n- {entry}\n"), 1);
    tree.insert(dir.join(KUSTOMIZATION), Blob::text(k));
}

/// Adds `entry` to a list key of the kustomization in `dir` (creating the key).
fn add_list_entry(tree: &mut Tree, dir: &Path, key: &str, entry: &str) {
    let mut k = kust_text(tree, dir);
    if k.contains(&format!("{key}:\n")) {
        k = k.replacen(&format!("{key}:\n"), &format!("{key}:\n- {entry}\n"), 1);
    } else {
        k.push_str(&format!("{key}:\n- {entry}\n"));
    }
    tree.insert(dir.join(KUSTOMIZATION), Blob::text(k));
}

fn remove_dir(tree: &mut Tree, dir: &Path) {
    tree.retain(|p, _| !p.starts_with(dir));
}
