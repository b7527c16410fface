//! What the server holds and what it was asked during a push: the kube sandbox (its objects
//! and its request log) or the real test cluster (kubectl as admin, and the API server's audit
//! log `DIR/audit.log` when the test cluster writes one).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::eval::{group_of, Id};
use super::gen::Names;
use crate::cluster::Cluster;
use crate::util::World;

/// (apiVersion, kind, plural, namespaced) of every kind the generator writes.
pub fn kinds(names: &Names) -> Vec<(String, &'static str, &'static str, bool)> {
    vec![
        ("v1".into(), "ConfigMap", "configmaps", true),
        ("v1".into(), "Secret", "secrets", true),
        ("v1".into(), "ServiceAccount", "serviceaccounts", true),
        ("v1".into(), "Namespace", "namespaces", false),
        (
            "rbac.authorization.k8s.io/v1".into(),
            "ClusterRole",
            "clusterroles",
            false,
        ),
        (
            "rbac.authorization.k8s.io/v1".into(),
            "RoleBinding",
            "rolebindings",
            true,
        ),
        (
            "apiextensions.k8s.io/v1".into(),
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        (format!("{}/v1", names.group), "Widget", "widgets", true),
        (format!("{}/v1", names.group), "Gadget", "gadgets", false),
    ]
}

/// One write the server answered, as an identity.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: String,
    pub id: Id,
    pub status: u16,
    /// A server-side apply (PATCH application/apply-patch+yaml).
    pub apply: bool,
}

pub enum Backend {
    Sandbox,
    Cluster(&'static Cluster),
}

impl Backend {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster(_))
    }
}

/// Is this object one of this history's (by name prefix)?
pub fn ours(names: &Names, id: &Id) -> bool {
    let p = format!("{}-", names.prefix);
    id.name.starts_with(&p)
        || (id.kind == "CustomResourceDefinition" && id.name.ends_with(&names.group))
}

fn id_of(v: &Value, namespaced: bool) -> Id {
    Id {
        group: group_of(v["apiVersion"].as_str().unwrap_or("")).to_string(),
        kind: v["kind"].as_str().unwrap_or("").to_string(),
        namespace: namespaced.then(|| {
            v.pointer("/metadata/namespace")
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        }),
        name: v
            .pointer("/metadata/name")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string(),
    }
}

/// Every object of this history on the server, by identity.
pub fn objects(backend: &Backend, world: &World, names: &Names) -> BTreeMap<Id, Value> {
    let mut out = BTreeMap::new();
    match backend {
        Backend::Sandbox => {
            for (av, kind, _, namespaced) in kinds(names) {
                for mut v in world.sandbox().objects(&av, kind) {
                    // The sandbox stores what was sent; make apiVersion/kind explicit.
                    v["apiVersion"] = Value::String(av.clone());
                    v["kind"] = Value::String(kind.to_string());
                    let id = id_of(&v, namespaced);
                    if ours(names, &id) {
                        out.insert(id, v);
                    }
                }
            }
        }
        Backend::Cluster(c) => {
            let crds = crd_kinds(backend, world, names);
            let mut resources: Vec<String> = Vec::new();
            let mut scoped: BTreeMap<String, bool> = BTreeMap::new();
            for (av, kind, plural, namespaced) in kinds(names) {
                let g = group_of(&av).to_string();
                if g == names.group && !crds.contains_key(&(g.clone(), kind.to_string())) {
                    continue;
                }
                let r = if g.is_empty() {
                    plural.to_string()
                } else {
                    format!("{plural}.{g}")
                };
                scoped.insert(kind.to_string(), namespaced);
                resources.push(r);
            }
            let out_k = c.kubectl(&["get", &resources.join(","), "-A", "-o", "json"]);
            assert!(
                out_k.status.success(),
                "kubectl get: {}",
                String::from_utf8_lossy(&out_k.stderr)
            );
            let list: Value = serde_json::from_slice(&out_k.stdout).expect("kubectl JSON");
            for v in list["items"].as_array().cloned().unwrap_or_default() {
                let kind = v["kind"].as_str().unwrap_or("");
                let namespaced = scoped.get(kind).copied().unwrap_or(true);
                let id = id_of(&v, namespaced);
                if ours(names, &id) {
                    out.insert(id, v);
                }
            }
        }
    }
    out
}

/// The custom kinds the server serves (from this history's CRDs): (group, kind) → namespaced.
pub fn crd_kinds(
    backend: &Backend,
    world: &World,
    names: &Names,
) -> BTreeMap<(String, String), bool> {
    let crds: Vec<Value> = match backend {
        Backend::Sandbox => world
            .sandbox()
            .objects("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        Backend::Cluster(c) => {
            let out = c.kubectl(&["get", "customresourcedefinitions", "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v["items"].as_array().cloned().unwrap_or_default()
        }
    };
    crds.iter()
        .filter(|c| c.pointer("/spec/group").and_then(|g| g.as_str()) == Some(&names.group))
        .map(|c| {
            (
                (
                    names.group.clone(),
                    c.pointer("/spec/names/kind")
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        .to_string(),
                ),
                c.pointer("/spec/scope").and_then(|x| x.as_str()) != Some("Cluster"),
            )
        })
        .collect()
}

/// The plural → (group, kind, namespaced) table for reading request paths.
fn plurals(names: &Names) -> BTreeMap<(String, String), (&'static str, bool)> {
    kinds(names)
        .into_iter()
        .map(|(av, kind, plural, namespaced)| {
            (
                (group_of(&av).to_string(), plural.to_string()),
                (kind, namespaced),
            )
        })
        .collect()
}

/// `/api/v1/namespaces/NS/configmaps/NAME?…` → identity.
pub fn id_from_path(names: &Names, path: &str) -> Option<Id> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match *parts.first()? {
        "api" => ("".to_string(), &parts[2.min(parts.len())..]),
        "apis" => (parts.get(1)?.to_string(), &parts[3.min(parts.len())..]),
        _ => return None,
    };
    let (ns, plural, name) = match rest {
        ["namespaces", ns, plural, name] => (Some(ns.to_string()), *plural, *name),
        [plural, name] => (None, *plural, *name),
        _ => return None,
    };
    let (kind, namespaced) = plurals(names)
        .get(&(group.clone(), plural.to_string()))
        .copied()?;
    Some(Id {
        group,
        kind: kind.to_string(),
        namespace: if namespaced { ns } else { None },
        name: name.to_string(),
    })
}

/// Writes served since `mark` (the sandbox's request-log length, or the audit log's size).
pub fn writes_since(
    backend: &Backend,
    world: &World,
    names: &Names,
    mark: usize,
) -> Option<Vec<Write>> {
    match backend {
        Backend::Sandbox => Some(
            world
                .sandbox()
                .requests()
                .into_iter()
                .skip(mark)
                .filter(|r| r.method != "GET")
                .filter_map(|r| {
                    let id = id_from_path(names, &r.path)?;
                    Some(Write {
                        apply: r.method == "PATCH"
                            && r.content_type
                                .as_deref()
                                .unwrap_or("")
                                .contains("apply-patch"),
                        method: r.method,
                        id,
                        status: r.status,
                    })
                })
                .filter(|w| ours(names, &w.id))
                .collect(),
        ),
        Backend::Cluster(c) => {
            let log = c.dir().join("audit.log");
            let text = std::fs::read(&log).ok()?;
            let text = String::from_utf8_lossy(&text[mark.min(text.len())..]).into_owned();
            Some(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|e| e["stage"] == "ResponseComplete")
                    .filter_map(|e| audit_write(names, &e))
                    .filter(|w| ours(names, &w.id))
                    .collect(),
            )
        }
    }
}

fn audit_write(names: &Names, e: &Value) -> Option<Write> {
    let verb = e["verb"].as_str()?;
    let method = match verb {
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" => "DELETE",
        _ => return None,
    };
    let uri = e["requestURI"].as_str()?;
    let id = id_from_path(names, uri)?;
    let status = e
        .pointer("/responseStatus/code")
        .and_then(|c| c.as_u64())
        .unwrap_or(0) as u16;
    // The audit log keeps no content type; an apply is a patch sent with fieldManager=hookops
    // by kubectl's server-side apply (`force=true`).
    let apply = verb == "patch" && uri.contains("fieldManager=hookops");
    Some(Write {
        method: method.into(),
        id,
        status,
        apply,
    })
}

/// Where the next push's writes start.
pub fn mark(backend: &Backend, world: &World) -> usize {
    match backend {
        Backend::Sandbox => world.sandbox().requests().len(),
        Backend::Cluster(c) => std::fs::metadata(c.dir().join("audit.log"))
            .map(|m| m.len() as usize)
            .unwrap_or(0),
    }
}

/// Namespaces a history needs before its first push.
pub fn create_namespaces(backend: &Backend, world: &World, names: &Names) {
    let docs: Vec<String> = names
        .namespaces
        .iter()
        .filter(|n| *n != "default")
        .map(|ns| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))
        .collect();
    let mut c = world.base_command("kubectl");
    c.arg("--kubeconfig").arg(&world.kubeconfig).args([
        "apply",
        "--server-side",
        "--field-manager=oracle-setup",
        "-f",
        "-",
    ]);
    let out = crate::util::run_with_stdin(&mut c, &docs.join("---\n"));
    assert!(out.ok(), "kubectl apply namespaces: {}", out.all());
    let _ = backend;
}

/// Deletes what a history made on the shared cluster (its namespaces, cluster-scoped objects
/// and CRDs), without waiting.
pub fn clean_cluster(c: &Cluster, names: &Names, kubeconfig: &Path) {
    let _ = kubeconfig;
    let g = &names.group;
    let _ = c.kubectl(&[
        "delete",
        "--ignore-not-found",
        "--wait=false",
        &format!("customresourcedefinitions/widgets.{g}"),
        &format!("customresourcedefinitions/gadgets.{g}"),
    ]);
    let out = c.kubectl(&["get", "namespaces,clusterroles", "-o", "name"]);
    let p = format!("/{}-", names.prefix);
    let victims: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_string)
        .collect();
    if !victims.is_empty() {
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        args.extend(victims.iter().map(String::as_str));
        let _ = c.kubectl(&args);
    }
}
