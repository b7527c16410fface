//! Watches over raw HTTP: resuming from a resourceVersion, field selectors,
//! and delivery of later writes to an open stream.

mod common;

use common::raw::{next_event, open_watch, request};
use kube_sandbox::Sandbox;
use serde_json::Value;

fn create_configmap(port: u16, name: &str) -> Value {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v"}}}}"#
    );
    let (status, text) = request(
        port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&body),
    );
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn watch_resumes_after_a_resource_version() {
    let sandbox = Sandbox::start().expect("start");
    let port = sandbox.port();
    let first = create_configmap(port, "a");
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    create_configmap(port, "b");
    let (status, _) = request(
        port,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/a",
        None,
    );
    assert_eq!(status, 200);

    let mut w = open_watch(
        port,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
    );
    let e1 = next_event(&mut w);
    assert_eq!(
        (
            e1["type"].as_str(),
            e1["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    let e2 = next_event(&mut w);
    assert_eq!(
        (
            e2["type"].as_str(),
            e2["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("a"))
    );

    // Later writes reach the open stream.
    create_configmap(port, "c");
    let e3 = next_event(&mut w);
    assert_eq!(e3["object"]["metadata"]["name"], "c");
    sandbox.stop();
}

#[test]
fn watch_without_version_starts_with_current_objects_and_filters_by_field() {
    let sandbox = Sandbox::start().expect("start");
    let port = sandbox.port();
    create_configmap(port, "a");
    create_configmap(port, "b");
    let mut w = open_watch(
        port,
        "/api/v1/configmaps?watch=1&fieldSelector=metadata.name%3Db",
    );
    let e = next_event(&mut w);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
    let body = r#"{"data":{"k":"changed"}}"#;
    let s = &mut std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    use std::io::{Read, Write};
    for name in ["a", "b"] {
        write!(s, "PATCH /api/v1/namespaces/default/configmaps/{name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("send");
    }
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf).expect("response");
    let e = next_event(&mut w);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("MODIFIED"), Some("b"))
    );
    assert_eq!(e["object"]["data"]["k"], "changed");
}

#[test]
fn stale_resource_versions_conflict_on_update() {
    let sandbox = Sandbox::start().expect("start");
    let port = sandbox.port();
    let mut cm = create_configmap(port, "a");
    cm["data"]["k"] = "one".into();
    let (status, _) = request(
        port,
        "PUT",
        "/api/v1/namespaces/default/configmaps/a",
        Some(&cm.to_string()),
    );
    assert_eq!(status, 200);
    cm["data"]["k"] = "two".into();
    let (status, text) = request(
        port,
        "PUT",
        "/api/v1/namespaces/default/configmaps/a",
        Some(&cm.to_string()),
    );
    assert_eq!(status, 409, "{text}");
    let err: Value = serde_json::from_str(&text).expect("status json");
    assert_eq!(
        (err["kind"].as_str(), err["reason"].as_str()),
        (Some("Status"), Some("Conflict"))
    );
    let (status, _) = request(
        port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some("{not json"),
    );
    assert_eq!(status, 400);
    let (status, _) = request(
        port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x"}}"#),
    );
    assert_eq!(status, 400);
}
