//! Built-in resources that are computed instead of stored: the reviews
//! (access, rules, token, self-subject), Binding (assigns a pod to a node)
//! and ComponentStatus (a fixed, healthy control plane).

use super::{
    commit, method_not_allowed, parse_body, present, write_opts, ApiError, Reply, Request,
};
use super::{Result, Target};
use crate::resources::ResourceType;
use crate::State;
use serde_json::{json, Value};

/// Whether `rt` is answered here rather than from the store.
pub fn serves(rt: &ResourceType) -> bool {
    rt.verbs == ["create"] || (rt.group.is_empty() && rt.kind == "ComponentStatus")
}

pub fn handle(st: &mut State, rt: &ResourceType, req: &Request, t: &Target) -> Result<Reply> {
    match (req.method.as_str(), rt.kind.as_str()) {
        ("GET", "ComponentStatus") => component_statuses(rt, t.name),
        ("POST", "Binding") => binding(st, req, t.ns),
        ("POST", _) => review(rt, req),
        _ => Err(method_not_allowed(req)),
    }
}

/// A review answered from nothing but the kind: the sandbox allows
/// everything and everyone is its admin.
fn review(rt: &ResourceType, req: &Request) -> Result<Reply> {
    // kubectl 1.31+ sends reviews as protobuf; the answer does not depend on
    // the request, so an undecodable body is fine.
    let mut body = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    body["apiVersion"] = json!(rt.api_version());
    body["kind"] = json!(rt.kind);
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    let user = json!({"username": "kube-sandbox:admin",
        "groups": ["system:masters", "system:authenticated"]});
    let status = match rt.kind.as_str() {
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            json!({"allowed": true, "reason": "kube-sandbox allows everything"})
        }
        "SelfSubjectRulesReview" => json!({"incomplete": false,
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}),
        "TokenReview" => json!({"authenticated": true, "user": user,
            "audiences": body["spec"]["audiences"].as_array().cloned().unwrap_or_default()}),
        "SelfSubjectReview" => json!({"userInfo": user}),
        _ => Value::Null,
    };
    if !status.is_null() {
        body["status"] = status;
    }
    Ok(Reply::json(201, &body))
}

/// `POST .../namespaces/NS/bindings`: sets the pod's `spec.nodeName`, once.
fn binding(st: &mut State, req: &Request, ns: &str) -> Result<Reply> {
    let body = parse_body(req)?;
    let pod = body["metadata"]["name"].as_str().unwrap_or_default();
    let node = body["target"]["name"].as_str().unwrap_or_default();
    let pods = st
        .registry
        .find("", "v1", "pods")
        .cloned()
        .ok_or_else(super::not_found_path)?;
    if pod.is_empty() || node.is_empty() {
        let e = "target.name: Required value: a binding names a pod (metadata.name) and a node (target.name)";
        return Err(ApiError::invalid(&pods, pod, e));
    }
    let old = st
        .store
        .get(&pods.type_key(), ns, pod)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&pods, pod))?;
    if let Some(current) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(ApiError::new(
            409,
            format!("Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is already assigned to node \"{current}\""),
        ));
    }
    let mut obj = old.clone();
    obj["spec"]["nodeName"] = json!(node);
    let dry_run = req.param("dryRun") == Some("All");
    let opts = write_opts(req, "Update", None, dry_run);
    commit(st, &pods, ns, pod, Some(&old), obj, &opts)?;
    Ok(Reply::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// The control plane's components, always healthy.
fn component_statuses(rt: &ResourceType, name: Option<&str>) -> Result<Reply> {
    let items: Vec<Value> = ["controller-manager", "etcd-0", "scheduler"]
        .iter()
        .map(|n| {
            present(
                rt,
                json!({"kind": "ComponentStatus", "metadata": {"name": n},
                    "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]}),
            )
        })
        .collect();
    match name {
        None => Ok(Reply::json(
            200,
            &json!({"kind": "ComponentStatusList", "apiVersion": rt.api_version(),
                "metadata": {}, "items": items}),
        )),
        Some(name) => items
            .into_iter()
            .find(|i| i["metadata"]["name"] == name)
            .map(|i| Reply::json(200, &i))
            .ok_or_else(|| ApiError::not_found(rt, name)),
    }
}
