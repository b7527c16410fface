//! Every built-in kind of Kubernetes v1.32 (the generated table in
//! src/builtin.rs) through the real kubectl: one manifest of each kind a
//! GitOps repository commonly holds is applied, read back and deleted, and
//! `kubectl api-resources` lists the whole table.

mod common;

use common::Cluster;
use kube_sandbox::BUILTIN;
use serde_json::Value;

const MANIFESTS: &str = include_str!("fixtures/builtin-kinds.yaml");

/// (apiVersion, kind, name, namespaced) of each object in MANIFESTS.
const OBJECTS: &[(&str, &str, &str, bool)] = &[
    ("storage.k8s.io/v1", "StorageClass", "fast", false),
    ("v1", "PersistentVolume", "data-pv", false),
    ("v1", "PersistentVolumeClaim", "data", true),
    ("batch/v1", "CronJob", "nightly", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "web", true),
    ("policy/v1", "PodDisruptionBudget", "web", true),
    ("networking.k8s.io/v1", "NetworkPolicy", "web", true),
    ("v1", "ReplicationController", "legacy", true),
    ("v1", "Endpoints", "external-db", true),
    ("networking.k8s.io/v1", "Ingress", "web", true),
    ("rbac.authorization.k8s.io/v1", "Role", "reader", true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "node-reader",
        false,
    ),
    ("scheduling.k8s.io/v1", "PriorityClass", "important", false),
    ("v1", "LimitRange", "defaults", true),
    ("v1", "ResourceQuota", "compute", true),
    ("coordination.k8s.io/v1", "Lease", "leader", true),
];

fn stored(
    c: &Cluster,
    api_version: &str,
    kind: &str,
    name: &str,
    namespaced: bool,
) -> Option<Value> {
    let ns = namespaced.then_some("default");
    c.sandbox.object(api_version, kind, ns, name)
}

#[test]
fn server_side_apply_get_and_delete_of_common_builtin_kinds() {
    let Some(c) = Cluster::start() else { return };
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=hookops",
        "-f",
        "-",
    ];
    let out = c.kubectl_stdin(&ssa, MANIFESTS).ok();
    assert_eq!(
        out.stdout.matches("serverside-applied").count(),
        OBJECTS.len(),
        "{}",
        out.stdout
    );
    for &(av, kind, name, namespaced) in OBJECTS {
        let o = stored(&c, av, kind, name, namespaced)
            .unwrap_or_else(|| panic!("{kind} {name} not stored"));
        assert_eq!(o["metadata"]["namespace"].is_string(), namespaced, "{o}");
        assert_eq!(o["metadata"]["managedFields"][0]["manager"], "hookops");
    }
    let pvc = stored(&c, "v1", "PersistentVolumeClaim", "data", true).unwrap();
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
    let cj = stored(&c, "batch/v1", "CronJob", "nightly", true).unwrap();
    assert_eq!(cj["spec"]["schedule"], "0 3 * * *");

    // Read back through kubectl, each object with the apiVersion it was applied with.
    let got = c
        .kubectl_stdin(&["get", "-f", "-", "-o", "json"], MANIFESTS)
        .ok();
    let list: Value = serde_json::from_str(&got.stdout).expect("kubectl get -o json");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), OBJECTS.len(), "{}", got.stdout);
    for (item, &(av, kind, name, _)) in items.iter().zip(OBJECTS) {
        assert_eq!(
            (
                item["apiVersion"].as_str(),
                item["kind"].as_str(),
                item["metadata"]["name"].as_str()
            ),
            (Some(av), Some(kind), Some(name))
        );
    }
    // By resource name and short name, as people type them.
    let names = c
        .kubectl(&[
            "get",
            "pvc,sc,pv,cj,hpa,pdb,netpol,rc,ep,ing,roles,clusterroles,pc,limits,quota,leases",
            "-o",
            "name",
        ])
        .ok();
    for &(_, _, name, _) in OBJECTS {
        assert!(
            names.stdout.contains(&format!("/{name}\n")),
            "{name}: {}",
            names.stdout
        );
    }

    // Applying the same manifests again changes nothing but is accepted.
    c.kubectl_stdin(&ssa, MANIFESTS).ok();
    c.kubectl(&["scale", "rc/legacy", "--replicas=3"]).ok();
    let rc = stored(&c, "v1", "ReplicationController", "legacy", true).unwrap();
    assert_eq!(rc["spec"]["replicas"], 3);

    let del = c
        .kubectl_stdin(&["delete", "-f", "-", "--wait"], MANIFESTS)
        .ok();
    assert_eq!(
        del.stdout.matches(" deleted").count(),
        OBJECTS.len(),
        "{}",
        del.stdout
    );
    for &(av, kind, name, namespaced) in OBJECTS {
        assert!(
            stored(&c, av, kind, name, namespaced).is_none(),
            "{kind} {name} left"
        );
    }
}

#[test]
fn client_side_apply_of_common_builtin_kinds() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(MANIFESTS).ok();
    assert_eq!(
        out.stdout.matches(" created").count(),
        OBJECTS.len(),
        "{}",
        out.stdout
    );
    let again = c.apply(MANIFESTS).ok();
    // kubectl always re-sends a PodDisruptionBudget's selector (its patch
    // strategy is "replace"), so the real server says "configured" there too.
    assert_eq!(
        again.stdout.matches(" unchanged").count(),
        OBJECTS.len() - 1,
        "{}",
        again.stdout
    );
    assert!(again
        .stdout
        .contains("poddisruptionbudget.policy/web configured"));
    let diff = c.kubectl_stdin(&["diff", "-f", "-"], MANIFESTS);
    assert_eq!(diff.code, 0, "{}{}", diff.stdout, diff.stderr);
}

/// `kubectl api-resources -o wide` as rows of column name to cell.
fn api_resources(c: &Cluster) -> Vec<std::collections::HashMap<String, String>> {
    let out = c.kubectl(&["api-resources", "-o", "wide"]).ok();
    let mut lines = out.stdout.lines();
    let header = lines.next().expect("header");
    // Columns start where a header word starts; cells may be empty.
    let starts: Vec<(usize, &str)> = header
        .split_whitespace()
        .map(|w| (header.find(w).expect("column"), w))
        .collect();
    lines
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(i, &(start, name))| {
                    let end = starts
                        .get(i + 1)
                        .map_or(line.len(), |s| s.0.min(line.len()));
                    let cell = line.get(start.min(line.len())..end).unwrap_or_default();
                    (name.to_string(), cell.trim().to_string())
                })
                .collect()
        })
        .collect()
}

fn check_api_resources(kubectl: &str) {
    let Some(c) = Cluster::with_kubectl(kubectl) else {
        return;
    };
    let rows = api_resources(&c);
    for b in BUILTIN {
        // kubectl lists each group's preferred version (the first one in the table).
        let preferred = BUILTIN.iter().find(|p| p.group == b.group).unwrap().version;
        let api_version = match b.group {
            "" => b.version.to_string(),
            g => format!("{g}/{preferred}"),
        };
        let row = rows
            .iter()
            .find(|r| r["NAME"] == b.plural && r["APIVERSION"] == api_version)
            .unwrap_or_else(|| panic!("{kubectl}: {} {api_version} not listed", b.plural));
        if b.version == preferred {
            assert_eq!(row["KIND"], b.kind);
            assert_eq!(row["NAMESPACED"], b.namespaced.to_string(), "{}", b.plural);
            assert_eq!(row["VERBS"], b.verbs.join(","), "{}", b.plural);
            assert_eq!(row["SHORTNAMES"], b.short_names.join(","), "{}", b.plural);
            assert_eq!(row["CATEGORIES"], b.categories.join(","), "{}", b.plural);
        }
    }
    // The non-preferred versions are in their group version's own document.
    for b in BUILTIN
        .iter()
        .filter(|b| b.group == "autoscaling" && b.version == "v1")
    {
        let path = format!("/apis/{}/{}", b.group, b.version);
        let doc: Value = serde_json::from_str(&c.kubectl(&["get", "--raw", &path]).ok().stdout)
            .expect("discovery json");
        assert!(doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == b.plural));
    }
}

#[test]
fn api_resources_lists_every_builtin_resource() {
    check_api_resources("/usr/bin/kubectl");
}

#[test]
fn api_resources_lists_every_builtin_resource_kubectl_1_27() {
    check_api_resources("/usr/lib/google-cloud-sdk/bin/kubectl.1.27");
}

#[test]
fn api_resources_lists_every_builtin_resource_kubectl_1_33() {
    check_api_resources("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
}

#[test]
fn computed_resources_and_refused_verbs() {
    use common::raw::request;
    let sandbox = kube_sandbox::Sandbox::start().expect("start sandbox");
    let port = sandbox.port();
    let json = |(code, body): (u16, String)| -> (u16, Value) {
        (code, serde_json::from_str(&body).expect("json body"))
    };

    let review = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview",
        "spec":{"user":"bob","resourceAttributes":{"verb":"get","resource":"pods"}}}"#;
    let (code, sar) = json(request(
        port,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        Some(review),
    ));
    assert_eq!((code, &sar["status"]["allowed"]), (201, &Value::Bool(true)));
    let local = review.replace("SubjectAccessReview", "LocalSubjectAccessReview");
    let (code, lsar) = json(request(
        port,
        "POST",
        "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews",
        Some(&local),
    ));
    assert_eq!(code, 201, "{lsar}");
    assert_eq!(lsar["kind"], "LocalSubjectAccessReview");
    let (code, tr) = json(request(
        port,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"x"}}"#,
        ),
    ));
    assert_eq!(
        (code, &tr["status"]["authenticated"]),
        (201, &Value::Bool(true))
    );

    // Verbs a resource does not have are refused as the real server does.
    for (method, path) in [
        ("GET", "/apis/authorization.k8s.io/v1/subjectaccessreviews"),
        ("DELETE", "/api/v1/namespaces"),
        ("POST", "/api/v1/componentstatuses"),
        ("GET", "/api/v1/namespaces/default/bindings"),
    ] {
        let (code, status) = json(request(port, method, path, Some("{}")));
        assert_eq!(code, 405, "{method} {path}: {status}");
        assert_eq!(status["reason"], "MethodNotAllowed");
    }

    let (code, cs) = json(request(port, "GET", "/api/v1/componentstatuses", None));
    assert_eq!(code, 200);
    assert_eq!(cs["items"].as_array().map(Vec::len), Some(3), "{cs}");
    let (code, etcd) = json(request(
        port,
        "GET",
        "/api/v1/componentstatuses/etcd-0",
        None,
    ));
    assert_eq!(
        (code, &etcd["conditions"][0]["type"]),
        (200, &json_str("Healthy"))
    );

    // A Binding assigns a pod to a node, once.
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let (code, _) = request(port, "POST", "/api/v1/namespaces/default/pods", Some(pod));
    assert_eq!(code, 201);
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},
        "target":{"kind":"Node","name":"node-1"}}"#;
    let bindings = "/api/v1/namespaces/default/bindings";
    let (code, body) = request(port, "POST", bindings, Some(binding));
    assert_eq!(code, 201, "{body}");
    let p = sandbox
        .object("v1", "Pod", Some("default"), "p")
        .expect("pod");
    assert_eq!(p["spec"]["nodeName"], "node-1");
    let (code, body) = request(port, "POST", bindings, Some(binding));
    assert_eq!(code, 409, "{body}");
    let (code, _) = request(
        port,
        "POST",
        bindings,
        Some(&binding.replace("\"p\"", "\"missing\"")),
    );
    assert_eq!(code, 404);
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_string())
}

#[test]
fn kubectl_get_componentstatuses_and_auth() {
    let Some(c) = Cluster::start() else { return };
    let cs = c.kubectl(&["get", "componentstatuses", "-o", "name"]).ok();
    assert!(
        cs.stdout.contains("componentstatus/etcd-0"),
        "{}",
        cs.stdout
    );
    let can = c.kubectl(&["auth", "can-i", "create", "cronjobs"]).ok();
    assert_eq!(can.stdout.trim(), "yes");
}
