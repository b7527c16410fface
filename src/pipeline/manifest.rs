//! Kubernetes manifests: multi-document YAML and JSON into objects with an identity (group, kind,
//! namespace, name) and a source location for error messages. Objects are kept as JSON so they
//! can be streamed to `kubectl apply -f -` as they are.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;

use anyhow::{anyhow, bail, Result};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The API group of an `apiVersion` (`apps` for `apps/v1`), from the kinds table.
pub use crate::pipeline::kinds::group_of;

/// Identity used to compare old and new trees. The API *group* (not the version) is part of it,
/// so moving `apps/v1beta2` to `apps/v1` updates an object instead of pruning it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectId {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub id: ObjectId,
    pub api_version: String,
    pub body: Value,
    /// `file:line` of the document.
    pub source: String,
    /// Cluster-scoped kind (built in, or declared so by a CRD in the same deploy).
    pub cluster: bool,
}

impl Object {
    pub fn is_foundation(&self) -> bool {
        is_foundation_kind(&self.id.group, &self.id.kind)
    }
}

/// Objects other objects need to exist first: namespaces and custom resource definitions.
pub fn is_foundation_kind(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}

/// One YAML document of a stream: the line it starts on, how many columns of that line the
/// `--- ` marker took, and its text.
struct YamlDoc {
    line: usize,
    shift: usize,
    text: String,
}

/// Splits a YAML stream at document markers.
fn split_documents(text: &str) -> Vec<YamlDoc> {
    let mut docs = Vec::new();
    let mut doc = YamlDoc {
        line: 1,
        shift: 0,
        text: String::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line == "...";
        if marker {
            let next = YamlDoc {
                line: i + 2,
                shift: 0,
                text: String::new(),
            };
            docs.push(std::mem::replace(&mut doc, next));
            if let Some(rest) = line.strip_prefix("--- ") {
                doc.text.push_str(rest);
                doc.text.push('\n');
                doc.line = i + 1;
                doc.shift = 4;
            }
            continue;
        }
        doc.text.push_str(line);
        doc.text.push('\n');
    }
    docs.push(doc);
    docs
}

fn is_blank_document(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// Parses every document of a manifest file into objects. `default_namespace` fills in the
/// namespace of namespaced objects that have none.
pub fn parse(text: &str, path: &str, default_namespace: Option<&str>) -> Result<Vec<Object>> {
    parse_with(text, path, default_namespace, &BTreeSet::new())
}

pub fn parse_with(
    text: &str,
    path: &str,
    default_namespace: Option<&str>,
    cluster_custom: &BTreeSet<(String, String)>,
) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for doc in documents(text, path) {
        let (line, value) = doc?;
        let source = format!("{path}:{line}");
        push_object(
            value,
            &source,
            default_namespace,
            cluster_custom,
            &mut objects,
        )?;
    }
    Ok(objects)
}

/// The documents of a manifest file, with the line each starts on; blank and null documents
/// are left out. Like kubectl, a `*.json` file starting with `{` is a stream of JSON values;
/// anything else is multi-document YAML.
fn documents<'t>(
    text: &'t str,
    path: &'t str,
) -> Box<dyn Iterator<Item = Result<(usize, Value)>> + 't> {
    if is_json_path(path) && text.trim_start().starts_with('{') {
        return Box::new(json_documents(text, path));
    }
    Box::new(
        split_documents(text)
            .into_iter()
            .filter(|d| !is_blank_document(&d.text))
            .map(move |d| yaml_document(&d, path).map(|v| (d.line, v)))
            .filter(|d| !matches!(d, Ok((_, Value::Null)))),
    )
}

fn yaml_document(doc: &YamlDoc, path: &str) -> Result<Value> {
    let budget = Cell::new(node_budget(doc.text.len()));
    Node { budget: &budget }
        .deserialize(serde_yaml_ng::Deserializer::from_str(&doc.text))
        .map_err(|e| yaml_error(&e, path, doc))
}

fn json_documents<'t>(
    text: &'t str,
    path: &'t str,
) -> impl Iterator<Item = Result<(usize, Value)>> + 't {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<JsonDoc>();
    // A stream ends at its first error: where the next value starts is not known.
    let mut failed = false;
    // Lines counted up to `counted`, so a long stream is scanned once.
    let (mut line, mut counted) = (1, 0);
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let rest = &text[stream.byte_offset()..];
        let start = text.len() - rest.trim_start().len();
        line += text.as_bytes()[counted..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted = start;
        match stream.next()? {
            Ok(JsonDoc(value)) => Some(Ok((line, value))),
            Err(e) => {
                failed = true;
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                Some(Err(if msg.starts_with(DUPLICATE) {
                    let column = key_start(text, e.line(), e.column());
                    anyhow!("{path}:{}:{column}: {msg}", e.line())
                } else {
                    anyhow!("{path}:{}:{}: invalid JSON: {msg}", e.line(), e.column())
                }))
            }
        }
    })
}

/// serde_json places an error in a key at its closing quote; a duplicate key is named where
/// it starts, as in YAML.
fn key_start(text: &str, line: usize, column: usize) -> usize {
    let Some(l) = text.lines().nth(line.saturating_sub(1)) else {
        return column;
    };
    let b = l.as_bytes();
    let close = column.saturating_sub(1).min(b.len());
    (0..close)
        .rev()
        .find(|&i| b[i] == b'"' && (i == 0 || b[i - 1] != b'\\'))
        .map_or(column, |i| i + 1)
}

/// `path:LINE:COL: invalid YAML: …` for an error in `doc`; its own message for a duplicate key
/// and for an alias bomb.
fn yaml_error(e: &serde_yaml_ng::Error, path: &str, doc: &YamlDoc) -> anyhow::Error {
    let (line, column) = match e.location() {
        Some(l) if l.line() == 1 => (doc.line, l.column() + doc.shift),
        Some(l) => (doc.line + l.line() - 1, l.column()),
        // Only the repetition limit has no location: name the document.
        None => (doc.line, 1),
    };
    let at = format!("{path}:{line}:{column}");
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    // serde_yaml_ng puts the path to a mapping before a message raised inside it.
    if let Some(i) = msg.find(DUPLICATE) {
        return anyhow!("{at}: {}", &msg[i..]);
    }
    if msg == "repetition limit exceeded" || msg.ends_with(EXPANSION) {
        return anyhow!("{at}: invalid YAML: {EXPANSION} (an alias bomb?)");
    }
    anyhow!("{at}: invalid YAML: {msg}")
}

/// Whether every document of a file is well-formed YAML or JSON (whatever it holds); the first
/// error, with its file, line and column, if not.
pub fn check_syntax(text: &str, path: &str) -> Result<()> {
    documents(text, path).try_for_each(|d| d.map(|_| ()))
}

const DUPLICATE: &str = "duplicate key \"";
const EXPANSION: &str = "aliases expand beyond the expansion limit";

/// Nodes a document may hold beyond its size in bytes. Without aliases a node takes at least
/// a byte; aliases may repeat nodes, but a few kilobytes must not become gigabytes ("billion
/// laughs"). serde_yaml_ng stops most bombs first (at a hundred alias jumps per event); this
/// also stops the ones that repeat a large node many times. kubectl's YAML library allows
/// about the same: documents of up to 400 000 nodes expand freely.
const EXTRA_NODES: usize = 400_000;

fn node_budget(bytes: usize) -> usize {
    bytes.saturating_add(EXTRA_NODES)
}

/// Deserializes a document into JSON, refusing duplicate keys in a mapping (kubectl refuses
/// them at apply time; here they are named with their line and column, at no extra parse)
/// and documents expanding beyond their node budget.
#[derive(Clone, Copy)]
struct Node<'a> {
    budget: &'a Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let left = self.budget.get();
        if left == 0 {
            return Err(de::Error::custom(EXPANSION));
        }
        self.budget.set(left - 1);
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    // Integers beyond 64 bits become floats, as in kubectl.
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| float(v as f64), Value::from))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| float(v as f64), Value::from))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key(&out))? {
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A mapping key, refused when the mapping already has it. The error is raised while the key
/// is read, so the parser puts the key's own line and column on it.
struct Key<'m>(&'m Map<String, Value>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.0.contains_key(v) {
            return Err(E::custom(format_args!("duplicate key {v:?}")));
        }
        Ok(v.to_owned())
    }
}

/// One value of a JSON stream (no aliases in JSON: the budget never runs out).
struct JsonDoc(Value);

impl<'de> Deserialize<'de> for JsonDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonDoc, D::Error> {
        let budget = Cell::new(usize::MAX);
        Node { budget: &budget }.deserialize(d).map(JsonDoc)
    }
}

fn push_object(
    value: Value,
    source: &str,
    default_namespace: Option<&str>,
    cluster_custom: &BTreeSet<(String, String)>,
    out: &mut Vec<Object>,
) -> Result<()> {
    let Some(map) = value.as_object() else {
        // What a repository using Git LFS holds for the file: three `key value` lines, which
        // YAML reads as one string.
        if value.as_str().is_some_and(is_lfs_pointer) {
            bail!(
                "{source}: a Git LFS pointer, not the manifest: hookops reads the objects git \
                 stores, and LFS keeps the content elsewhere; keep manifests out of LFS \
                 (.gitattributes)"
            );
        }
        bail!("{source}: a manifest document must be a mapping");
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    // A list, as kubectl decodes one: any document with an `items` list (`v1 List`, typed
    // lists such as `RoleBindingList`), whatever its kind. Items without apiVersion and kind
    // are of the list's kind without "List", at the list's apiVersion (D5).
    if let Some(items) = map.get("items").and_then(Value::as_array) {
        for item in items {
            let mut item = item.clone();
            if let (Some(obj), Some(v), Some(k)) = (item.as_object_mut(), api_version, kind) {
                let k = k.strip_suffix("List").unwrap_or(k);
                if !obj.contains_key("apiVersion") && !obj.contains_key("kind") && !k.is_empty() {
                    obj.insert("apiVersion".into(), Value::String(v.to_string()));
                    obj.insert("kind".into(), Value::String(k.to_string()));
                }
            }
            push_object(item, source, default_namespace, cluster_custom, out)?;
        }
        return Ok(());
    }
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        bail!("{source}: document has no apiVersion and kind");
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            // A hook Job is created anew each run (`kubectl create`): generateName names it.
            value
                .pointer("/metadata/annotations/hookops.io~1hook")
                .and(value.pointer("/metadata/generateName"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        });
    let Some(name) = name else {
        if value.pointer("/metadata/generateName").is_some() {
            bail!(
                "{source}: {kind} has no metadata.name (generateName is only for hookops.io/hook Jobs)"
            );
        }
        bail!("{source}: {kind} has no metadata.name");
    };
    let group = group_of(api_version).to_string();
    // The built-in table of identity.rs; the identity stage resolves the rest (CRDs of the tree,
    // the cluster's discovery) before anything is compared or applied.
    let cluster = crate::pipeline::kinds::builtin_scope(&group, kind)
        == Some(crate::pipeline::kinds::Scope::Cluster)
        || cluster_custom.contains(&(group.clone(), kind.to_string()));
    let namespace = if cluster {
        None
    } else {
        value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| default_namespace.map(str::to_string))
    };
    let id = ObjectId {
        group,
        kind: kind.to_string(),
        namespace,
        name: name.to_string(),
    };
    let api_version = api_version.to_string();
    out.push(Object {
        id,
        api_version,
        body: value,
        source: source.to_string(),
        cluster,
    });
    Ok(())
}

/// Whether a file's content is what a repository using Git LFS stores for it.
pub fn is_lfs_pointer(text: &str) -> bool {
    text.starts_with("version https://git-lfs.github.com/spec/")
}

/// Whether a file holds Kubernetes objects (for target discovery): a document with
/// `apiVersion` and `kind`. A document that does not parse counts when it looks like one (a
/// top-level `apiVersion` or `kind` key), so that a broken manifest is reported, not skipped.
pub fn looks_like_kube(text: &str, path: &str) -> bool {
    documents(text, path).any(|d| match d {
        Ok((_, v)) => v.get("apiVersion").is_some() && v.get("kind").is_some(),
        Err(_) => sniff(text),
    })
}

/// A line-based guess that needs no parse: in YAML a line starting with an `apiVersion:` or
/// `kind:` key (quoted or not); in JSON (or YAML in flow style) such a key in the outermost
/// mapping. A template (`{{ … }}`: Helm, Go templates, Jinja) is rendered by another tool
/// before kubectl sees it, so it is not a broken manifest.
fn sniff(text: &str) -> bool {
    if text.contains("{{") {
        return false;
    }
    let key_line = |l: &str| {
        let l = l.strip_prefix(['"', '\'']).unwrap_or(l);
        ["apiVersion", "kind"].iter().any(|k| {
            l.strip_prefix(k).is_some_and(|rest| {
                let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
                rest.trim_start_matches([' ', '\t']).starts_with(':')
            })
        })
    };
    text.lines().any(key_line) || outer_json_key(text)
}

/// Whether the outermost `{…}` of a (possibly broken) JSON text has an `"apiVersion"` or
/// `"kind"` key.
fn outer_json_key(text: &str) -> bool {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(b.len());
                let key = &b[start.min(end)..end];
                let colon = b
                    .get(end + 1..)
                    .and_then(|r| r.iter().find(|c| !c.is_ascii_whitespace()))
                    == Some(&b':');
                if depth == 1 && colon && (key == b"apiVersion" || key == b"kind") {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Files kubectl applies from a directory: YAML and JSON.
pub fn is_manifest_path(path: &str) -> bool {
    is_manifest_name(path.as_bytes())
}

/// [`is_manifest_path`] of a name that may not be UTF-8.
pub fn is_manifest_name(name: &[u8]) -> bool {
    name.ends_with(b".yaml") || name.ends_with(b".yml") || name.ends_with(b".json")
}

fn is_json_path(path: &str) -> bool {
    path.ends_with(".json")
}

/// A YAML stream of the objects, JSON per document, for `kubectl apply -f -`.
pub fn to_stream<'a>(objects: impl IntoIterator<Item = &'a Object>) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&o.body.to_string());
        out.push('\n');
    }
    out
}

/// A stream of stubs naming objects (for `kubectl delete -f -`).
pub fn stubs_stream<'a>(ids: impl IntoIterator<Item = &'a (ObjectId, String)>) -> String {
    let mut out = String::new();
    for (id, api_version) in ids {
        let mut metadata = serde_json::json!({ "name": id.name });
        if let Some(ns) = &id.namespace {
            metadata["namespace"] = Value::String(ns.clone());
        }
        let stub =
            serde_json::json!({ "apiVersion": api_version, "kind": id.kind, "metadata": metadata });
        out.push_str("---\n");
        out.push_str(&stub.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_lines() {
        let text = "# comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: prod\n";
        let objs = parse(text, "k8s/a.yaml", Some("dflt")).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].id.namespace.as_deref(), Some("dflt"));
        assert_eq!(objs[1].id.group, "apps");
        assert_eq!(objs[1].id.namespace.as_deref(), Some("prod"));
        assert_eq!(objs[1].source, "k8s/a.yaml:8");
    }

    #[test]
    fn invalid_yaml_names_file_line_and_column() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: [unclosed\n";
        let err = parse(text, "k8s/b.yaml", None).unwrap_err().to_string();
        assert!(err.starts_with("k8s/b.yaml:"), "{err}");
        assert!(err.contains("invalid YAML"), "{err}");
        let line: usize = err.split(':').nth(1).unwrap().parse().unwrap();
        assert!(line >= 6, "{err}");
        let tab = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n\ta: 1\n";
        assert_eq!(
            parse(tab, "t.yaml", None).unwrap_err().to_string(),
            "t.yaml:6:1: invalid YAML: found character that cannot start any token"
        );
        // After `--- ` on the same line, columns still count from the start of the line.
        let err = check_syntax("a: 1\n--- {b: @}\n", "m.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.yaml:2:9: invalid YAML: found character that cannot start any token"
        );
    }

    #[test]
    fn duplicate_keys_name_key_line_and_column() {
        let flow =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\ndata: {a: \"1\", a: \"2\"}\n";
        assert_eq!(
            parse(flow, "d.yaml", None).unwrap_err().to_string(),
            "d.yaml:5:16: duplicate key \"a\""
        );
        let block = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\ndata:\n  a: \"1\"\n  b: \"2\"\n  a: \"3\"\n";
        assert_eq!(
            parse(block, "d.yaml", None).unwrap_err().to_string(),
            "d.yaml:8:3: duplicate key \"a\""
        );
        let top = "---\nkind: ConfigMap\nkind: Secret\n";
        assert_eq!(
            check_syntax(top, "d.yaml").unwrap_err().to_string(),
            "d.yaml:3:1: duplicate key \"kind\""
        );
        let json = "{\"apiVersion\": \"v1\",\n \"apiVersion\": \"v2\"}";
        assert_eq!(
            check_syntax(json, "d.json").unwrap_err().to_string(),
            "d.json:2:2: duplicate key \"apiVersion\""
        );
        // The same key in different mappings is fine.
        let ok = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {name: b}\n";
        assert_eq!(parse(ok, "ok.yaml", None).unwrap().len(), 1);
    }

    /// "Billion laughs": nine levels of nine aliases. Refused fast, naming the limit.
    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb =
            String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n");
        bomb.push_str("  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
        for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("  {name}: &{name} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let err = parse(&bomb, "b.yaml", None).unwrap_err().to_string();
        assert_eq!(
            err,
            "b.yaml:1:1: invalid YAML: aliases expand beyond the expansion limit (an alias bomb?)"
        );
        assert!(looks_like_kube(&bomb, "b.yaml"));
        // One large node repeated many times: not deep, but as bad.
        let mut wide = format!("big: &big [{}]\nuse:\n", vec!["x"; 5000].join(","));
        wide.push_str(&"- *big\n".repeat(200));
        let err = check_syntax(&wide, "w.yaml").unwrap_err().to_string();
        assert!(
            err.contains("aliases expand beyond the expansion limit"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Aliases as people use them are fine.
        let fine = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: &l {app: web}\n  annotations: *l\n";
        let objs = parse(fine, "f.yaml", None).unwrap();
        assert_eq!(objs[0].body["metadata"]["annotations"]["app"], "web");
    }

    #[test]
    fn json_files_are_streams_of_documents() {
        let one =
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}}";
        let objs = parse(one, "x/a.json", Some("ns")).unwrap();
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].source, "x/a.json:1");
        assert_eq!(objs[0].id.namespace.as_deref(), Some("ns"));
        let list = "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n  {\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}},\n  {\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"b\"}}]}\n";
        assert_eq!(parse(list, "l.json", None).unwrap().len(), 2);
        let stream = format!("{one}\n\n{one}\n");
        let objs = parse(&stream, "s.json", None).unwrap();
        assert_eq!(objs[1].source, "s.json:3");
        let err = parse("{\n  \"kind\": \"ConfigMap\",\n}\n", "e.json", None).unwrap_err();
        assert_eq!(err.to_string(), "e.json:3:1: invalid JSON: trailing comma");
        // A *.json file that does not start with `{` is YAML to kubectl.
        assert_eq!(
            parse(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\n",
                "y.json",
                None
            )
            .unwrap()
            .len(),
            1
        );
    }

    #[test]
    fn discovery_sniffing() {
        let kube = |text: &str, path: &str| looks_like_kube(text, path);
        assert!(kube("apiVersion: v1\nkind: ConfigMap\n", "a.yaml"));
        assert!(!kube("on: push\njobs: {}\n", "a.yaml"));
        assert!(!kube("{{ template }}", "a.yaml"));
        let helm = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include \"x\" . }}\n{{- if .Values.y }}\n";
        assert!(!kube(helm, "chart/templates/d.yaml"));
        // Broken, but meant as a manifest: reported rather than skipped.
        assert!(kube(
            "apiVersion: v1\nkind: ConfigMap\ndata:\n\ta: 1\n",
            "a.yaml"
        ));
        assert!(kube("\"kind\" : [broken\n", "a.yaml"));
        assert!(kube(
            "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n}\n",
            "a.json"
        ));
        assert!(kube(
            "{\"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"x\",}}",
            "a.json"
        ));
        // Broken, and not a manifest: nested keys, or keys that only start the same.
        assert!(!kube("{\"spec\": {\"apiVersion\": \"v1\"},}", "a.json"));
        assert!(!kube("x: [\n  kind: a\nkinds: b\n", "a.yaml"));
        // JSON that is not Kubernetes.
        assert!(!kube(
            "{\"name\": \"web\", \"version\": \"1.0.0\"}",
            "package.json"
        ));
        assert!(!kube(
            "{\"compilerOptions\": {\"strict\": true}}",
            "tsconfig.json"
        ));
        assert!(kube(
            "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": []}",
            "l.json"
        ));
        assert!(
            is_manifest_path("a/b.json") && is_manifest_path("c.yml") && !is_manifest_path("d.txt")
        );
    }

    #[test]
    fn cluster_scoped_have_no_namespace() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n";
        let objs = parse(text, "ns.yaml", Some("x")).unwrap();
        assert_eq!(objs[0].id.namespace, None);
        assert!(objs[0].is_foundation());
    }

    #[test]
    fn lists_expand_and_missing_names_fail() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n";
        assert_eq!(parse(text, "l.yaml", None).unwrap().len(), 2);
        let err = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x}\n",
            "g.yaml",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no metadata.name"));
    }

    #[test]
    fn typed_lists_expand_as_kubectl_decodes_them() {
        // A typed list: any kind with an `items` list (issue 25: a monitoring bundle ships two).
        let text = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBindingList\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: RoleBinding\n  metadata: {name: a, namespace: mon}\n  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n- metadata: {name: b, namespace: mon}\n  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n";
        let objs = parse(text, "rb.yaml", None).unwrap();
        let ids: Vec<String> = objs.iter().map(|o| o.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "RoleBinding.rbac.authorization.k8s.io mon/a",
                "RoleBinding.rbac.authorization.k8s.io mon/b"
            ]
        );
        // An item without apiVersion and kind takes the list's.
        assert_eq!(objs[1].api_version, "rbac.authorization.k8s.io/v1");
        assert!(parse(
            "apiVersion: v1\nkind: ConfigMapList\nitems: []\n",
            "e.yaml",
            None
        )
        .unwrap()
        .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s, "x.yaml", Some("ns"));
            let _ = looks_like_kube(&s, "x.yaml");
            let _ = parse(&s, "x.json", Some("ns"));
            let _ = looks_like_kube(&s, "x.json");
        }
    }
    /// Manifests assembled from YAML's and Kubernetes' own pieces (anchors, aliases, merge
    /// keys, flow collections, documents, BOMs, control characters): every object that parses
    /// has a kind, a name and its file.
    #[test]
    fn fuzz_manifest() {
        let tokens: Vec<String> = [
            "apiVersion: v1\n",
            "kind: ConfigMap\n",
            "kind: Namespace\n",
            "metadata:\n",
            "  name: x\n",
            "  namespace: y\n",
            "  generateName: g\n",
            "data:\n",
            "  k: v\n",
            "---\n",
            "...\n",
            "&a ",
            "*a",
            "<<: ",
            "- ",
            ": ",
            "\n",
            "  ",
            "{",
            "}",
            "[",
            "]",
            "\"",
            "'",
            ",",
            "#",
            "\u{feff}",
            "!!binary ",
            "%YAML 1.2\n",
            "? ",
            "|\n",
            ">-\n",
            "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\"}}",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        crate::fuzz::run("manifest", crate::fuzz::assembled(tokens, 24), |s| {
            for path in ["x.yaml", "x.json"] {
                if let Ok(objects) = parse(s, path, Some("ns")) {
                    for o in objects {
                        assert!(!o.id.kind.is_empty() && !o.id.name.is_empty(), "{o:?}");
                        assert!(o.source.starts_with(path), "{o:?}");
                    }
                }
                let _ = looks_like_kube(s, path);
            }
        });
    }
}
