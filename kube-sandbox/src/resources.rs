//! The resource types the sandbox serves (built-in ones plus those defined by
//! stored CustomResourceDefinitions), the discovery documents describing them,
//! and the server-side defaults kubectl relies on.

use crate::builtin::BUILTIN;
pub use crate::discovery::{Builtin, Sub, ALL_VERBS, GET_PATCH_UPDATE};
use crate::store::Store;
use serde_json::{json, Map, Value};

pub const CRD_KEY: &str = "apiextensions.k8s.io/customresourcedefinitions";
pub const NAMESPACE_KEY: &str = "/namespaces";

#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource, and so a generation bumped by spec changes.
    pub status: bool,
    /// Has a `/scale` subresource.
    pub scale: bool,
    /// What discovery lists and the sandbox allows on the resource itself
    /// (405 for the others).
    pub verbs: &'static [&'static str],
}

impl ResourceType {
    /// Where objects of this type live in the store; versions share storage.
    pub fn type_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// "deployments.apps", as the real server names resources in messages.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub struct Registry {
    types: Vec<ResourceType>,
    builtin_count: usize,
}

impl Registry {
    pub fn new() -> Registry {
        let types: Vec<ResourceType> = BUILTIN
            .iter()
            .map(|b| {
                let has = |sub: &str| b.subresources.iter().any(|s| s.name == sub);
                ResourceType {
                    group: b.group.into(),
                    version: b.version.into(),
                    kind: b.kind.into(),
                    plural: b.plural.into(),
                    singular: b.singular.into(),
                    namespaced: b.namespaced,
                    short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                    categories: b.categories.iter().map(|s| s.to_string()).collect(),
                    status: has("status"),
                    scale: has("scale"),
                    verbs: b.verbs,
                }
            })
            .collect();
        let builtin_count = types.len();
        Registry {
            types,
            builtin_count,
        }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.iter()
    }

    /// Re-derives the custom resource types from the stored CRDs.
    pub fn refresh_crds(&mut self, store: &Store) {
        self.types.truncate(self.builtin_count);
        for crd in store.list(CRD_KEY, None) {
            self.types.extend(crd_types(crd));
        }
    }
}

fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let strings = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = s(&names["kind"]);
    let plural = s(&names["plural"]);
    let singular = match s(&names["singular"]) {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let empty = Vec::new();
    spec["versions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .map(|v| ResourceType {
            group: s(&spec["group"]),
            version: s(&v["name"]),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: v["subresources"]["status"].is_object(),
            scale: false,
            verbs: ALL_VERBS,
        })
        .collect()
}

/// The generated table's entry for a built-in type.
fn builtin(t: &ResourceType) -> Option<&'static Builtin> {
    BUILTIN
        .iter()
        .find(|b| b.group == t.group && b.version == t.version && b.plural == t.plural)
}

/// `/api` and `/apis` entries: (group, versions), core group first.
fn groups(reg: &Registry) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (g, v) in reg.all().map(|t| (t.group.clone(), t.version.clone())) {
        match out.iter_mut().find(|(og, _)| *og == g) {
            Some((_, vs)) if !vs.contains(&v) => vs.push(v),
            Some(_) => {}
            None => out.push((g, vec![v])),
        }
    }
    out
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = groups(reg)
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let (g, vs) = groups(reg)
        .into_iter()
        .find(|(g, _)| g == group && !g.is_empty())?;
    let mut doc = group_doc(&g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in reg
        .all()
        .filter(|t| t.group == group && t.version == version)
    {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": t.verbs});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        // Subresources as the real server lists them, those the sandbox serves.
        let served = |s: &&Sub| (s.name == "status" && t.status) || (s.name == "scale" && t.scale);
        match builtin(t) {
            Some(b) => {
                for s in b.subresources.iter().filter(served) {
                    let mut r = json!({"name": format!("{}/{}", t.plural, s.name), "singularName": "",
                        "namespaced": t.namespaced, "kind": s.kind, "verbs": s.verbs});
                    if !s.group.is_empty() {
                        r["group"] = json!(s.group);
                        r["version"] = json!(s.version);
                    }
                    resources.push(r);
                }
            }
            None if t.status => resources.push(
                json!({"name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": GET_PATCH_UPDATE}),
            ),
            None => {}
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just made {key} an object"),
    }
}

fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

/// Fills in what the real API server defaults and kubectl reads back
/// (rollout status needs replicas and update strategies, for instance).
pub fn apply_defaults(rt: &ResourceType, o: &mut Value, cluster_ip: impl FnOnce() -> String) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => {
            let spec = obj(o, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
        }
        ("apps", "ReplicaSet") => default(obj(o, "spec"), "replicas", json!(1)),
        ("apps", "StatefulSet") => {
            let spec = obj(o, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
        }
        ("apps", "DaemonSet") => {
            let spec = obj(o, "spec");
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        ("batch", "Job") => {
            let spec = obj(o, "spec");
            default(spec, "backoffLimit", json!(6));
            default(spec, "completions", json!(1));
            default(spec, "parallelism", json!(1));
        }
        ("", "Namespace") => {
            let name = o["metadata"]["name"].clone();
            obj(&mut o["metadata"], "labels").insert("kubernetes.io/metadata.name".into(), name);
            default(obj(o, "spec"), "finalizers", json!(["kubernetes"]));
            obj(o, "status").insert("phase".into(), json!("Active"));
        }
        ("", "Secret") => {
            if let Some(m) = o.as_object_mut() {
                default(m, "type", json!("Opaque"));
            }
            if let Some(Value::Object(string_data)) =
                o.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                let data = obj(o, "data");
                for (k, v) in string_data {
                    data.insert(k, json!(base64(v.as_str().unwrap_or_default().as_bytes())));
                }
            }
        }
        ("", "Service") => {
            let spec = obj(o, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if spec
                .get("clusterIP")
                .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
            {
                spec.insert("clusterIP".into(), json!(cluster_ip()));
            }
            let ip = spec["clusterIP"].clone();
            default(spec, "clusterIPs", json!([ip]));
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    default(p, "targetPort", port);
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let names = o["spec"]["names"].clone();
            let stored: Vec<Value> = o["spec"]["versions"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v["storage"] == json!(true))
                        .map(|v| v["name"].clone())
                        .collect()
                })
                .unwrap_or_default();
            o["status"] = json!({"acceptedNames": names, "storedVersions": stored, "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted"}]});
        }
        _ => {}
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn discovery_lists_short_names_and_subresources() {
        let reg = Registry::new();
        let apps = resource_list(&reg, "apps", "v1").unwrap();
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/status") && names.contains(&"deployments/scale"));
        assert!(resource_list(&reg, "apps", "v2").is_none());
        assert!(api_group_list(&reg)["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "batch"));
    }

    #[test]
    fn table_is_what_v1_32_serves_by_default() {
        let has = |g: &str, p: &str| BUILTIN.iter().any(|b| b.group == g && b.plural == p);
        for (g, p) in [
            ("", "persistentvolumeclaims"),
            ("", "replicationcontrollers"),
            ("batch", "cronjobs"),
            ("policy", "poddisruptionbudgets"),
            ("storage.k8s.io", "storageclasses"),
            ("coordination.k8s.io", "leases"),
        ] {
            assert!(has(g, p), "{g} {p}");
        }
        for (g, p) in [
            ("resource.k8s.io", "resourceclaims"),
            ("networking.k8s.io", "servicecidrs"),
            ("networking.k8s.io", "ipaddresses"),
            ("storage.k8s.io", "volumeattributesclasses"),
        ] {
            assert!(!has(g, p), "{g} {p} is not on by default in 1.32");
        }
        assert!(BUILTIN
            .iter()
            .all(|b| !b.version.contains("alpha") && !b.version.contains("beta")));
        let pods = BUILTIN.iter().find(|b| b.plural == "pods").unwrap();
        assert!(!pods.subresources.iter().any(|s| s.name == "resize"));

        let reg = Registry::new();
        let autoscaling = api_group(&reg, "autoscaling").unwrap();
        assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
        assert_eq!(autoscaling["versions"].as_array().unwrap().len(), 2);
        let core = resource_list(&reg, "", "v1").unwrap();
        let find = |n: &str| {
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == n)
                .cloned()
        };
        assert_eq!(
            find("replicationcontrollers/scale").unwrap()["group"],
            "autoscaling"
        );
        assert!(find("pods/status").is_some() && find("pods/log").is_none());
        let ns_verbs = find("namespaces").unwrap()["verbs"].clone();
        assert!(!ns_verbs
            .as_array()
            .unwrap()
            .contains(&json!("deletecollection")));
    }
}
