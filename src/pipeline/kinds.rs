//! Which kinds have a namespace: the built-in kinds of Kubernetes 1.27–1.34 (a table), the API
//! group of an `apiVersion`, and what `kubectl api-resources` says of the others. `identity`
//! adds the CRDs of the tree and resolves namespaces with it.

use std::collections::BTreeMap;

/// Built-in kinds that have no namespace.
const CLUSTER: &[(&str, &[&str])] = &[
    (
        "",
        &["Namespace", "Node", "PersistentVolume", "ComponentStatus"],
    ),
    (
        "admissionregistration.k8s.io",
        &[
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
        ],
    ),
    ("apiextensions.k8s.io", &["CustomResourceDefinition"]),
    ("apiregistration.k8s.io", &["APIService"]),
    (
        "authentication.k8s.io",
        &["TokenReview", "SelfSubjectReview"],
    ),
    (
        "authorization.k8s.io",
        &[
            "SubjectAccessReview",
            "SelfSubjectAccessReview",
            "SelfSubjectRulesReview",
        ],
    ),
    (
        "certificates.k8s.io",
        &["CertificateSigningRequest", "ClusterTrustBundle"],
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        &["FlowSchema", "PriorityLevelConfiguration"],
    ),
    ("internal.apiserver.k8s.io", &["StorageVersion"]),
    (
        "networking.k8s.io",
        &["IngressClass", "IPAddress", "ServiceCIDR"],
    ),
    ("node.k8s.io", &["RuntimeClass"]),
    (
        "rbac.authorization.k8s.io",
        &["ClusterRole", "ClusterRoleBinding"],
    ),
    ("resource.k8s.io", &["DeviceClass", "ResourceSlice"]),
    ("scheduling.k8s.io", &["PriorityClass"]),
    (
        "storage.k8s.io",
        &[
            "StorageClass",
            "CSIDriver",
            "CSINode",
            "VolumeAttachment",
            "VolumeAttributesClass",
        ],
    ),
    ("storagemigration.k8s.io", &["StorageVersionMigration"]),
];

/// Built-in kinds that live in a namespace.
const NAMESPACED: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "Pod",
            "Service",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "ReplicationController",
            "Endpoints",
            "Event",
            "LimitRange",
            "ResourceQuota",
            "PodTemplate",
            "Binding",
        ],
    ),
    (
        "apps",
        &[
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "ControllerRevision",
        ],
    ),
    ("autoscaling", &["HorizontalPodAutoscaler"]),
    ("batch", &["Job", "CronJob"]),
    ("authorization.k8s.io", &["LocalSubjectAccessReview"]),
    ("coordination.k8s.io", &["Lease", "LeaseCandidate"]),
    ("discovery.k8s.io", &["EndpointSlice"]),
    ("events.k8s.io", &["Event"]),
    ("networking.k8s.io", &["NetworkPolicy", "Ingress"]),
    ("policy", &["PodDisruptionBudget"]),
    ("rbac.authorization.k8s.io", &["Role", "RoleBinding"]),
    (
        "resource.k8s.io",
        &["ResourceClaim", "ResourceClaimTemplate"],
    ),
    ("storage.k8s.io", &["CSIStorageCapacity"]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    Namespaced,
    Cluster,
}

fn lookup(table: &[(&str, &[&str])], group: &str, kind: &str) -> bool {
    table
        .iter()
        .any(|(g, kinds)| *g == group && kinds.contains(&kind))
}

/// The scope of a built-in kind, if it is one.
pub fn builtin_scope(group: &str, kind: &str) -> Option<Scope> {
    if lookup(CLUSTER, group, kind) {
        Some(Scope::Cluster)
    } else if lookup(NAMESPACED, group, kind) {
        Some(Scope::Namespaced)
    } else {
        None
    }
}

/// `group/kind`, the key of a custom kind's scope.
pub fn kind_key(group: &str, kind: &str) -> String {
    format!("{group}/{kind}")
}

/// The API group of an `apiVersion`: `apps` for `apps/v1`, empty for the core `v1`.
pub fn group_of(api_version: &str) -> &str {
    match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

/// The rows of `kubectl api-resources -o wide --no-headers` (its columns: NAME, SHORTNAMES
/// (may be blank), APIVERSION, NAMESPACED, KIND, VERBS, …): (apiVersion, namespaced, kind).
fn api_resources(text: &str) -> impl Iterator<Item = (&str, bool, &str)> {
    text.lines().filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let i = cols
            .iter()
            .position(|c| *c == "true" || *c == "false")
            .filter(|i| *i >= 2 && *i + 1 < cols.len())?;
        Some((cols[i - 1], cols[i] == "true", cols[i + 1]))
    })
}

/// Kinds and scopes from `kubectl api-resources -o wide --no-headers`.
pub fn parse_api_resources(text: &str) -> BTreeMap<String, Scope> {
    api_resources(text)
        .map(|(version, namespaced, kind)| {
            let scope = if namespaced {
                Scope::Namespaced
            } else {
                Scope::Cluster
            };
            (kind_key(group_of(version), kind), scope)
        })
        .collect()
}

/// The apiVersion each kind is served at, `group/kind` → `apiVersion`, from the same output
/// (discovery lists each kind once, at its group's preferred version).
pub fn parse_served_versions(text: &str) -> BTreeMap<String, String> {
    api_resources(text)
        .map(|(version, _, kind)| (kind_key(group_of(version), kind), version.to_string()))
        .collect()
}
