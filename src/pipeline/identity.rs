//! Object identity as the API server resolves it: (API group, kind, namespace, name), where a
//! namespaced object without a namespace lives in the target's `namespace`, else the
//! environment's kubeconfig context namespace, else `default`, and a cluster-scoped kind has
//! none. Which kinds are namespaced comes from a table of the built-in kinds (Kubernetes
//! 1.27–1.34), the CRDs declared anywhere in the deployed tree, and, at deploy time, the
//! cluster's discovery. A kind none of them knows has an *unknown* scope: its identity
//! ignores the namespace (`*`), so a guess can never turn into a prune.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub use crate::pipeline::kinds::{builtin_scope, kind_key, parse_api_resources, Scope};
use crate::pipeline::manifest::{Object, ObjectId};

/// The scope a CRD declares for its kind: (`group/kind`, scope).
pub fn crd_scope(o: &Object) -> Option<(String, Scope)> {
    if o.id.group != "apiextensions.k8s.io" || o.id.kind != "CustomResourceDefinition" {
        return None;
    }
    let group = o.body.pointer("/spec/group")?.as_str()?;
    let kind = o.body.pointer("/spec/names/kind")?.as_str()?;
    let scope = match o.body.pointer("/spec/scope").and_then(Value::as_str) {
        Some("Cluster") => Scope::Cluster,
        _ => Scope::Namespaced,
    };
    Some((kind_key(group, kind), scope))
}

/// Resolves the identity of objects for one environment.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// The environment's default namespace: its kubeconfig context's, else `default`.
    pub env_namespace: String,
    /// Custom kinds: from CRDs in the deployed tree and from the cluster's discovery.
    pub custom: BTreeMap<String, Scope>,
}

impl Resolver {
    pub fn new(env_namespace: String) -> Resolver {
        Resolver {
            env_namespace,
            custom: BTreeMap::new(),
        }
    }

    pub fn scope(&self, group: &str, kind: &str) -> Option<Scope> {
        builtin_scope(group, kind).or_else(|| self.custom.get(&kind_key(group, kind)).copied())
    }

    /// Learns the kinds declared by CRDs among `objects`.
    pub fn learn(&mut self, objects: &[Object]) {
        for o in objects {
            if let Some((k, s)) = crd_scope(o) {
                self.custom.insert(k, s);
            }
        }
    }

    /// Resolves `o`'s namespace in place: `target_ns` is the target's `namespace` setting.
    /// Returns false when the kind's scope is unknown (its identity then ignores namespaces).
    pub fn resolve(&self, o: &mut Object, target_ns: Option<&str>) -> bool {
        let written = o
            .body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        match self.scope(&o.id.group, &o.id.kind) {
            Some(Scope::Cluster) => {
                o.id.namespace = None;
                o.cluster = true;
                true
            }
            Some(Scope::Namespaced) => {
                o.cluster = false;
                o.id.namespace = Some(
                    written
                        .or(target_ns)
                        .unwrap_or(&self.env_namespace)
                        .to_string(),
                );
                true
            }
            None => {
                o.cluster = false;
                o.id.namespace = Some(UNKNOWN_NS.to_string());
                false
            }
        }
    }
}

/// The namespace part of the identity of an object whose kind's scope is unknown.
pub const UNKNOWN_NS: &str = "*";

/// Whether an identity's scope was unknown when it was resolved.
pub fn is_unknown(id: &ObjectId) -> bool {
    id.namespace.as_deref() == Some(UNKNOWN_NS)
}

/// The namespace of a kubeconfig context (the environment's `context`, else the file's
/// current context), `default` when none is set or the file cannot be read. `kubeconfig` None
/// means kubectl's own default: `$KUBECONFIG` (first file), else `~/.kube/config`.
pub fn context_namespace(kubeconfig: Option<&Path>, context: Option<&str>) -> String {
    kubeconfig_path(kubeconfig)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| namespace_in(&text, context))
        .unwrap_or_else(|| "default".to_string())
}

/// The kubeconfig kubectl reads: the environment's, else the first of `$KUBECONFIG`, else
/// `~/.kube/config`.
pub fn kubeconfig_path(kubeconfig: Option<&Path>) -> Option<std::path::PathBuf> {
    match kubeconfig {
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os("KUBECONFIG")
            .and_then(|v| std::env::split_paths(&v).next())
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config"))),
    }
}

fn namespace_in(text: &str, context: Option<&str>) -> Option<String> {
    let config: Value = serde_yaml_ng::from_str(text).ok()?;
    let wanted = match context {
        Some(c) => c.to_string(),
        None => config.get("current-context")?.as_str()?.to_string(),
    };
    config
        .get("contexts")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(wanted.as_str()))?
        .pointer("/context/namespace")?
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::parse;

    fn one(text: &str) -> Object {
        parse(text, "x.yaml", None).unwrap().remove(0)
    }

    #[test]
    fn namespace_defaults_like_the_api_server() {
        let r = Resolver::new("team".into());
        let mut o = one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n");
        assert!(r.resolve(&mut o, None));
        assert_eq!(o.id.namespace.as_deref(), Some("team"));
        r.resolve(&mut o, Some("web"));
        assert_eq!(o.id.namespace.as_deref(), Some("web"));
        let mut o = one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: x\n");
        r.resolve(&mut o, Some("web"));
        assert_eq!(o.id.namespace.as_deref(), Some("x"));
        let mut o = one("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  namespace: x\n");
        r.resolve(&mut o, Some("web"));
        assert_eq!(o.id.namespace, None);
        assert!(o.cluster);
    }

    #[test]
    fn custom_kinds_from_crds_or_unknown() {
        let mut r = Resolver::new("default".into());
        let crd = one("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Cluster\n  names:\n    kind: Widget\n");
        let mut w = one("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n");
        assert!(!r.resolve(&mut w, None));
        assert!(is_unknown(&w.id));
        r.learn(&[crd]);
        assert!(r.resolve(&mut w, None));
        assert_eq!(w.id.namespace, None);
    }

    #[test]
    fn kubeconfig_context_namespace() {
        let text = "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context: {cluster: c, namespace: apps}\n- name: b\n  context: {cluster: c}\n";
        assert_eq!(namespace_in(text, None).as_deref(), Some("apps"));
        assert_eq!(namespace_in(text, Some("b")), None);
    }

    #[test]
    fn api_resources_columns() {
        let text = "bindings                                       v1                                true         Binding\nwidgets       wd      example.com/v1   false   Widget   [get list]\nconfigmaps    cm      v1               true    ConfigMap  [create]\n";
        let m = parse_api_resources(text);
        assert_eq!(m.get("example.com/Widget"), Some(&Scope::Cluster));
        assert_eq!(m.get("/ConfigMap"), Some(&Scope::Namespaced));
        assert_eq!(m.get("/Binding"), Some(&Scope::Namespaced));
    }
}
