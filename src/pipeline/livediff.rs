//! Live against declared: what applying a set of declared objects (and deleting a set of
//! prunes) would change in a cluster, object by object, with a unified diff of each, like
//! `flux diff` and `argocd app diff`. `drift` shows it for the deployed commit; the push-time
//! diff (the gate, `hookops diff REF`) feeds it a commit not yet deployed.
//!
//! One `kubectl diff --server-side` per group of targets that share a namespace setting (the
//! server computes the merge, managed fields are left out and Secret values masked by kubectl),
//! falling back to one call per target when a shared call fails so that a failure is its own
//! target's; one `kubectl get` for every prune. Unchanged objects cost no output: they are
//! the declared objects kubectl diff did not name.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::backends::kube::Kubectl;
use crate::pipeline::manifest::{self, Object, ObjectId};

/// What one target declares: the objects it would apply, the ones it would delete.
pub struct Declared<'a> {
    pub target: &'a str,
    /// The target's `namespace` setting (kubectl's `--namespace`).
    pub namespace: Option<&'a str>,
    pub objects: &'a [Object],
    /// Objects to delete, with the apiVersion to name them by.
    pub prune: &'a [(ObjectId, String)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Prune,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Prune => "prune",
            Change::Unchanged => "unchanged",
        }
    }
}

/// One object: how applying the declared objects would change it, and how.
#[derive(Debug, Clone)]
pub struct ObjectDiff {
    pub id: ObjectId,
    /// `file:line` of the declaration (none for a prune).
    pub source: Option<String>,
    pub change: Change,
    /// A unified diff, live (`---`) against declared (`+++`), Secret values masked; empty
    /// when unchanged.
    pub diff: String,
}

impl ObjectDiff {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "change": self.change.as_str(),
            "group": self.id.group,
            "kind": self.id.kind,
            "namespace": self.id.namespace,
            "name": self.id.name,
            "source": self.source,
            "diff": self.diff,
        })
    }
}

/// Each object of each of `targets`, in their order (declared objects, then prunes that still
/// exist), with its change: a target's own error stays its own.
pub fn diff(kubectl: &Kubectl, targets: &[Declared]) -> Vec<Result<Vec<ObjectDiff>>> {
    let mut results: Vec<Option<Result<Vec<ObjectDiff>>>> = targets.iter().map(|_| None).collect();
    // Targets with the same namespace setting share one kubectl diff.
    let mut groups: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        if !t.objects.is_empty() {
            groups.entry(t.namespace).or_default().push(i);
        }
    }
    for (namespace, members) in groups {
        let objects: Vec<&Object> = members
            .iter()
            .flat_map(|&i| targets[i].objects.iter())
            .collect();
        match kubectl_diff(kubectl, &objects, namespace) {
            Ok(found) => {
                for &i in &members {
                    let mine = found
                        .iter()
                        .filter(|d| targets[i].objects.iter().any(|o| o.id == d.id))
                        .cloned()
                        .collect();
                    results[i] = Some(Ok(mine));
                }
            }
            Err(e) if members.len() == 1 => results[members[0]] = Some(Err(e)),
            Err(_) => {
                for &i in &members {
                    let own: Vec<&Object> = targets[i].objects.iter().collect();
                    results[i] = Some(kubectl_diff(kubectl, &own, namespace));
                }
            }
        }
    }
    let prunes: Vec<&(ObjectId, String)> = targets.iter().flat_map(|t| t.prune.iter()).collect();
    let live = if prunes.is_empty() {
        Ok(Vec::new())
    } else {
        live_objects(kubectl, &prunes)
    };
    targets
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let mut found = r.unwrap_or_else(|| Ok(Vec::new()))?;
            for o in t.objects {
                if !found.iter().any(|d| d.id == o.id) {
                    found.push(ObjectDiff {
                        id: o.id.clone(),
                        source: Some(o.source.clone()),
                        change: Change::Unchanged,
                        diff: String::new(),
                    });
                }
            }
            if !t.prune.is_empty() {
                let live = live.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                for (id, body) in live {
                    if t.prune.iter().any(|(p, _)| p == id) {
                        found.push(ObjectDiff {
                            id: id.clone(),
                            source: None,
                            change: Change::Prune,
                            diff: removal(id, body),
                        });
                    }
                }
            }
            Ok(found)
        })
        .collect()
}

/// The name kubectl diff gives an object's files: `[group.]version.kind.namespace.name`.
fn diff_name(o: &Object) -> String {
    let version = o.api_version.rsplit('/').next().unwrap_or(&o.api_version);
    let group = if o.id.group.is_empty() {
        String::new()
    } else {
        format!("{}.", o.id.group)
    };
    format!(
        "{group}{version}.{}.{}.{}",
        o.id.kind,
        o.id.namespace.as_deref().unwrap_or(""),
        o.id.name
    )
}

fn kubectl_diff(
    kubectl: &Kubectl,
    objects: &[&Object],
    namespace: Option<&str>,
) -> Result<Vec<ObjectDiff>> {
    let out = kubectl.diff(manifest::to_stream(objects.iter().copied()), namespace)?;
    match out.code {
        Some(0) => Ok(Vec::new()),
        Some(1) => Ok(parse(&out.stdout, objects)),
        _ => bail!("kubectl diff: {}", out.reason()),
    }
}

/// Splits `diff -u -N` output into objects, naming each from the declared objects, with
/// headers that say live and declared instead of kubectl's temporary paths.
fn parse(text: &str, objects: &[&Object]) -> Vec<ObjectDiff> {
    let by_name: BTreeMap<String, &Object> = objects.iter().map(|o| (diff_name(o), *o)).collect();
    let mut out: Vec<ObjectDiff> = Vec::new();
    let mut current: Option<ObjectDiff> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("diff ") {
            out.extend(current.take());
            let file = rest
                .split_whitespace()
                .find(|w| w.contains('/'))
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or(rest);
            let (id, source) = match by_name.get(file) {
                Some(o) => (o.id.clone(), Some(o.source.clone())),
                None => (
                    ObjectId {
                        group: String::new(),
                        kind: "object".into(),
                        namespace: None,
                        name: file.to_string(),
                    },
                    None,
                ),
            };
            let diff = format!(
                "--- live {id}\n+++ declared {}\n",
                source.as_deref().unwrap_or("(git)")
            );
            current = Some(ObjectDiff {
                id,
                source,
                change: Change::Update,
                diff,
            });
            continue;
        }
        let Some(d) = current.as_mut() else { continue };
        if line.starts_with("--- ") || line.starts_with("+++ ") {
            continue;
        }
        if line.starts_with("@@ -0,0 ") {
            d.change = Change::Create;
        }
        d.diff.push_str(line);
        d.diff.push('\n');
    }
    out.extend(current);
    out
}

/// The live objects among `ids` (those that exist), each without its status and managed
/// fields: one `kubectl get`.
fn live_objects(kubectl: &Kubectl, ids: &[&(ObjectId, String)]) -> Result<Vec<(ObjectId, Value)>> {
    let out = kubectl.get_stream(manifest::stubs_stream(ids.iter().copied()))?;
    if !out.success() {
        bail!("kubectl get: {}", out.reason());
    }
    if out.stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(&out.stdout)?;
    let items = match value.get("items").and_then(Value::as_array) {
        Some(items) if value["kind"] == "List" => items.clone(),
        _ => vec![value],
    };
    Ok(items
        .into_iter()
        .filter_map(|mut body| {
            let name = body["metadata"]["name"].as_str()?.to_string();
            let kind = body["kind"].as_str()?.to_string();
            let namespace = body["metadata"]["namespace"].as_str().map(str::to_string);
            let (id, _) = ids
                .iter()
                .find(|(id, _)| id.kind == kind && id.name == name && id.namespace == namespace)?;
            clean(&mut body);
            Some((id.clone(), body))
        })
        .collect())
}

/// What a diff should not show: status, managed fields, server bookkeeping, Secret values.
fn clean(body: &mut Value) {
    if let Some(o) = body.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = body["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    if body["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(values) = body[field].as_object_mut() {
                for v in values.values_mut() {
                    *v = Value::String("***".into());
                }
            }
        }
    }
}

/// An object going away: every line of its YAML removed.
fn removal(id: &ObjectId, body: &Value) -> String {
    let yaml = serde_yaml_ng::to_string(body).unwrap_or_else(|_| body.to_string());
    let lines: Vec<&str> = yaml.lines().collect();
    let mut s = format!(
        "--- live {id}\n+++ declared (no longer in git)\n@@ -1,{} +0,0 @@\n",
        lines.len()
    );
    for l in lines {
        s.push('-');
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Object {
        Object {
            id: ObjectId {
                group: api_version
                    .rsplit_once('/')
                    .map(|(g, _)| g.to_string())
                    .unwrap_or_default(),
                kind: kind.into(),
                namespace: ns.map(str::to_string),
                name: name.into(),
            },
            api_version: api_version.into(),
            body: Value::Null,
            source: format!("k8s/{name}.yaml:1"),
            cluster: ns.is_none(),
        }
    }

    #[test]
    fn kubectl_diff_output_is_split_and_named_per_object() {
        let web = object("apps/v1", "Deployment", Some("web"), "web.v2");
        let ns = object("v1", "Namespace", None, "web");
        let text = "diff -u -N /tmp/LIVE-1/apps.v1.Deployment.web.web.v2 /tmp/MERGED-2/apps.v1.Deployment.web.web.v2\n\
--- /tmp/LIVE-1/apps.v1.Deployment.web.web.v2\t2026-01-01\n\
+++ /tmp/MERGED-2/apps.v1.Deployment.web.web.v2\t2026-01-01\n\
@@ -5,1 +5,1 @@\n\
-  replicas: 2\n\
+  replicas: 3\n\
diff -u -N /tmp/LIVE-1/v1.Namespace..web /tmp/MERGED-2/v1.Namespace..web\n\
--- /tmp/LIVE-1/v1.Namespace..web\t1970-01-01\n\
+++ /tmp/MERGED-2/v1.Namespace..web\t2026-01-01\n\
@@ -0,0 +1,3 @@\n\
+apiVersion: v1\n\
+kind: Namespace\n";
        let found = parse(text, &[&web, &ns]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id, web.id);
        assert_eq!(found[0].change, Change::Update);
        assert_eq!(
            found[0].diff,
            "--- live Deployment.apps web/web.v2\n+++ declared k8s/web.v2.yaml:1\n@@ -5,1 +5,1 @@\n-  replicas: 2\n+  replicas: 3\n"
        );
        assert_eq!(found[1].id, ns.id);
        assert_eq!(found[1].change, Change::Create);
        assert!(!found[1].diff.contains("/tmp/"), "{}", found[1].diff);
    }

    #[test]
    fn a_pruned_secret_shows_no_value_and_no_bookkeeping() {
        let mut body = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "web", "uid": "u", "managedFields": [{}]},
            "data": {"password": "aHVudGVyMg=="},
            "status": {"x": 1}
        });
        clean(&mut body);
        let id = ObjectId {
            group: String::new(),
            kind: "Secret".into(),
            namespace: Some("web".into()),
            name: "db".into(),
        };
        let d = removal(&id, &body);
        assert!(d.contains("-  password: '***'"), "{d}");
        for gone in ["aHVudGVyMg", "uid", "managedFields", "status"] {
            assert!(!d.contains(gone), "{gone} in {d}");
        }
    }
}
