//! Kubernetes manifests: multi-document YAML into objects with an identity (group, kind,
//! namespace, name) and a source location for error messages. Objects are kept as JSON so they
//! can be streamed to `kubectl apply -f -` as they are.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::Value;

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

/// Built-in kinds without a namespace. Custom kinds are cluster-scoped when a CRD in the same
/// deploy says so (`cluster_kinds`); otherwise they are taken as namespaced.
const CLUSTER_KINDS: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("apiregistration.k8s.io", "APIService"),
];

pub fn group_of(api_version: &str) -> &str {
    match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

/// Cluster-scoped custom kinds declared by CRDs among `objects` (group, kind).
pub fn cluster_kinds(objects: &[Object]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .filter(|o| o.id.kind == "CustomResourceDefinition")
        .filter(|o| o.body.pointer("/spec/scope").and_then(Value::as_str) == Some("Cluster"))
        .filter_map(|o| {
            let group = o.body.pointer("/spec/group")?.as_str()?;
            let kind = o.body.pointer("/spec/names/kind")?.as_str()?;
            Some((group.to_string(), kind.to_string()))
        })
        .collect()
}

/// Splits a YAML stream at document markers, returning (first line, text) per document.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line == "...";
        if marker {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            if let Some(rest) = line.strip_prefix("--- ") {
                current.push_str(rest);
                current.push('\n');
                start = i + 1;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
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
    for (line, doc) in split_documents(text) {
        if is_blank_document(&doc) {
            continue;
        }
        let value: Value = serde_yaml_ng::from_str(&doc).map_err(|e| yaml_error(&e, path, line))?;
        if value.is_null() {
            continue;
        }
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

/// `path:line: invalid YAML: …` for a document starting at `line` of the file.
fn yaml_error(e: &serde_yaml_ng::Error, path: &str, line: usize) -> anyhow::Error {
    let at = e.location().map(|l| l.line() + line - 1).unwrap_or(line);
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    anyhow::anyhow!("{path}:{at}: invalid YAML: {msg}")
}

/// Whether every document of a file is well-formed YAML (whatever it holds); the first error,
/// with its file and line, if not.
pub fn check_yaml(text: &str, path: &str) -> Result<()> {
    for (line, doc) in split_documents(text) {
        if !is_blank_document(&doc) {
            serde_yaml_ng::from_str::<Value>(&doc).map_err(|e| yaml_error(&e, path, line))?;
        }
    }
    Ok(())
}

fn push_object(
    value: Value,
    source: &str,
    default_namespace: Option<&str>,
    cluster_custom: &BTreeSet<(String, String)>,
    out: &mut Vec<Object>,
) -> Result<()> {
    let Some(map) = value.as_object() else {
        bail!("{source}: a manifest document must be a mapping");
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        bail!("{source}: document has no apiVersion and kind");
    };
    if kind.ends_with("List") && api_version == "v1" {
        let items = map
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for item in items {
            push_object(item, source, default_namespace, cluster_custom, out)?;
        }
        return Ok(());
    }
    let name = value.pointer("/metadata/name").and_then(Value::as_str);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        bail!("{source}: {kind} has no metadata.name (generateName is not supported)");
    };
    let group = group_of(api_version).to_string();
    let cluster = CLUSTER_KINDS.contains(&(group.as_str(), kind))
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

/// Whether a file looks like Kubernetes YAML (for target discovery): it parses and at least
/// one document has `apiVersion` and `kind`.
pub fn looks_like_kube(text: &str) -> bool {
    split_documents(text).iter().any(|(_, doc)| {
        !is_blank_document(doc)
            && serde_yaml_ng::from_str::<Value>(doc)
                .map(|v| v.get("apiVersion").is_some() && v.get("kind").is_some())
                .unwrap_or(false)
    })
}

pub fn is_yaml_path(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
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
    fn invalid_yaml_names_file_and_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: [unclosed\n";
        let err = parse(text, "k8s/b.yaml", None).unwrap_err().to_string();
        assert!(err.starts_with("k8s/b.yaml:"), "{err}");
        assert!(err.contains("invalid YAML"), "{err}");
        let line: usize = err.split(':').nth(1).unwrap().parse().unwrap();
        assert!(line >= 6, "{err}");
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
    fn discovery_sniffing() {
        assert!(looks_like_kube("apiVersion: v1\nkind: ConfigMap\n"));
        assert!(!looks_like_kube("on: push\njobs: {}\n"));
        assert!(!looks_like_kube("{{ template }}"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s, "x.yaml", Some("ns"));
            let _ = looks_like_kube(&s);
        }
    }
}
