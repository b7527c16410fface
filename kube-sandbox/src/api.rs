//! Request routing and the API verbs: discovery, get/list/watch, create,
//! update, the PATCH flavours, delete, and the `/status` and `/scale`
//! subresources, with the bookkeeping (uid, resourceVersion, generation,
//! managedFields) the real server does on every write.

use crate::controllers;
use crate::patch;
use crate::resources::{self, ResourceType, CRD_KEY, NAMESPACE_KEY};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{now_rfc3339, Store};
use crate::{Shared, State};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod computed;

const JSON: &str = "application/json";
const OPENAPI_V2_CT: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// An OpenAPI v2 document with only `swagger: "2.0"` set, in protobuf:
/// enough for kubectl's client-side validation to proceed.
const OPENAPI_V2: &[u8] = &[0x0a, 0x03, b'2', b'.', b'0'];

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type without parameters such as `; charset=utf-8`.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|c| c.split(';').next().unwrap_or_default().trim())
    }
}

pub enum Reply {
    Body {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    Watch(Watch),
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply::Body {
            status,
            content_type: JSON,
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

pub struct Watch {
    type_key: String,
    api_version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    since: Option<u64>,
    timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason_for(code),
            message: message.into(),
            details: Value::Null,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> ApiError {
        self.details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        self
    }

    fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(404, format!("{} \"{name}\" not found", rt.qualified()))
            .with_details(rt, name)
    }

    /// 422 with a cause, which kubectl prints as "The Kind "name" is invalid: field: message".
    fn invalid(rt: &ResourceType, name: &str, message: &str) -> ApiError {
        let (field, detail) = message.split_once(": ").unwrap_or(("", message));
        let mut e = ApiError::new(422, format!("{} \"{name}\" is invalid: {message}", rt.kind))
            .with_details(rt, name);
        e.details["kind"] = json!(rt.kind);
        e.details["causes"] =
            json!([{"reason": "FieldValueInvalid", "message": detail, "field": field}]);
        e
    }

    pub fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code});
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }

    pub fn reply(&self) -> Reply {
        Reply::json(self.code, &self.status())
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn not_found_path() -> ApiError {
    ApiError::new(404, "the server could not find the requested resource")
}

fn method_not_allowed(req: &Request) -> ApiError {
    ApiError::new(
        405,
        format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method, req.path
        ),
    )
}

pub fn handle(shared: &Arc<Shared>, req: &Request) -> Reply {
    route(shared, req).unwrap_or_else(|e| e.reply())
}

fn route(shared: &Arc<Shared>, req: &Request) -> Result<Reply> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let discovery = |doc: Option<Value>| -> Result<Reply> {
        if req.method != "GET" {
            return Err(method_not_allowed(req));
        }
        doc.map(|d| Reply::json(200, &d)).ok_or_else(not_found_path)
    };
    match segs.as_slice() {
        ["version"] => discovery(Some(
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4",
            "gitCommit": "kube-sandbox", "gitTreeState": "clean", "buildDate": "2025-04-22T00:00:00Z",
            "goVersion": "go1.23.6", "compiler": "gc", "platform": "linux/amd64"}),
        )),
        ["healthz" | "livez" | "readyz", ..] => Ok(Reply::Body {
            status: 200,
            content_type: "text/plain",
            body: b"ok".to_vec(),
        }),
        ["openapi", "v2"] => Ok(Reply::Body {
            status: 200,
            content_type: OPENAPI_V2_CT,
            body: OPENAPI_V2.to_vec(),
        }),
        ["api"] => discovery(Some(resources::api_versions())),
        ["api", "v1"] => discovery(resources::resource_list(&shared.lock().registry, "", "v1")),
        ["apis"] => discovery(Some(resources::api_group_list(&shared.lock().registry))),
        ["apis", g] => discovery(resources::api_group(&shared.lock().registry, g)),
        ["apis", g, v] => discovery(resources::resource_list(&shared.lock().registry, g, v)),
        ["api", "v1", rest @ ..] => resource(shared, req, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource(shared, req, g, v, rest),
        _ => Err(not_found_path()),
    }
}

struct Target<'a> {
    ns: &'a str,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn resource(
    shared: &Arc<Shared>,
    req: &Request,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Reply> {
    // /namespaces/{ns}/{plural}/... except the namespace's own subresources.
    let (ns, plural, name, sub, extra) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
        {
            (
                Some(*ns),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
                tail.len() > 2,
            )
        }
        [plural, tail @ ..] => (
            None,
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
            tail.len() > 2,
        ),
        [] => return Err(not_found_path()),
    };
    let mut guard = shared.lock();
    let st = &mut *guard;
    let rt = st
        .registry
        .find(group, version, plural)
        .cloned()
        .ok_or_else(not_found_path)?;
    let scope_ok = match ns {
        Some(_) => rt.namespaced,
        None => !rt.namespaced || name.is_none(),
    };
    if extra || !scope_ok {
        return Err(not_found_path());
    }
    let target = Target {
        ns: ns.unwrap_or_default(),
        name,
        sub,
    };
    let reading = req.method == "GET";
    let result = dispatch(st, &rt, req, &target);
    let timers = std::mem::take(&mut st.timers);
    drop(guard);
    if !reading {
        shared.changed.notify_all();
    }
    for t in timers {
        crate::spawn_timer(shared, t);
    }
    result
}

/// The verb a request on the resource itself (not a subresource) asks for.
fn verb(req: &Request, t: &Target) -> Option<&'static str> {
    Some(match (req.method.as_str(), t.name, t.sub) {
        (_, _, Some(_)) => return None,
        ("GET", None, _) if is_true(req.param("watch")) => "watch",
        ("GET", None, _) => "list",
        ("GET", Some(_), _) => "get",
        ("POST", None, _) => "create",
        ("PUT", Some(_), _) => "update",
        ("PATCH", Some(_), _) => "patch",
        ("DELETE", Some(_), _) => "delete",
        ("DELETE", None, _) => "deletecollection",
        _ => return None,
    })
}

fn dispatch(st: &mut State, rt: &ResourceType, req: &Request, t: &Target) -> Result<Reply> {
    if verb(req, t).is_some_and(|v| !rt.allows(v)) {
        return Err(method_not_allowed(req));
    }
    if computed::serves(rt) {
        return computed::handle(st, rt, req, t);
    }
    let dry_run = req.param("dryRun") == Some("All");
    match (req.method.as_str(), t.name, t.sub) {
        ("GET", None, None) if is_true(req.param("watch")) => watch(st, rt, req, t.ns),
        ("GET", None, None) => list(st, rt, req, t.ns),
        ("POST", None, None) => create(st, rt, req, t.ns, dry_run),
        ("DELETE", None, None) => delete_collection(st, rt, req, t.ns, dry_run),
        ("GET", Some(name), None | Some("status")) if t.sub.is_none() || rt.status => {
            let obj = st
                .store
                .get(&rt.type_key(), t.ns, name)
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            Ok(Reply::json(200, &present(rt, obj.clone())))
        }
        ("PUT", Some(name), None | Some("status")) if t.sub.is_none() || rt.status => {
            update(st, rt, req, t.ns, name, t.sub, dry_run)
        }
        ("PATCH", Some(name), None | Some("status")) if t.sub.is_none() || rt.status => {
            patch_object(st, rt, req, t.ns, name, t.sub, dry_run)
        }
        ("DELETE", Some(name), None) => delete(st, rt, req, t.ns, name, dry_run),
        (_, Some(name), Some("scale")) if rt.scale => scale(st, rt, req, t.ns, name, dry_run),
        (_, _, Some(_)) if !matches!(t.sub, Some("status" | "scale")) => Err(not_found_path()),
        _ => Err(method_not_allowed(req)),
    }
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

/// Sets the apiVersion a client asked through, since all versions of a
/// custom resource share one stored copy.
fn present(rt: &ResourceType, mut obj: Value) -> Value {
    let av = rt.api_version();
    if obj["apiVersion"].as_str() != Some(av.as_str()) {
        obj["apiVersion"] = json!(av);
    }
    obj
}

fn parse_body(req: &Request) -> Result<Value> {
    if req.body.is_empty() {
        return Err(ApiError::new(400, "the request body is empty"));
    }
    match serde_json::from_slice(&req.body) {
        Ok(v) => Ok(v),
        Err(e) if req.content_type().is_some_and(|c| c.contains("yaml")) => {
            serde_yaml_ng::from_slice(&req.body)
                .map_err(|y| ApiError::new(400, format!("invalid body: {e}; as YAML: {y}")))
        }
        Err(e) => Err(ApiError::new(400, format!("invalid JSON body: {e}"))),
    }
}

fn selectors(req: &Request) -> Result<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::new(400, e))?;
    let fields = FieldSelector::parse(req.param("fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::new(400, e))?;
    Ok((labels, fields))
}

fn list(st: &State, rt: &ResourceType, req: &Request, ns: &str) -> Result<Reply> {
    let (labels, fields) = selectors(req)?;
    let scope = (!ns.is_empty()).then_some(ns);
    let items: Vec<Value> = st
        .store
        .list(&rt.type_key(), scope)
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| present(rt, o.clone()))
        .collect();
    Ok(Reply::json(
        200,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": st.store.current_rv().to_string()}, "items": items}),
    ))
}

fn watch(st: &State, rt: &ResourceType, req: &Request, ns: &str) -> Result<Reply> {
    let (labels, fields) = selectors(req)?;
    let since = match req.param("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::new(400, format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    // An unparseable or stale version is reported before any events.
    if since.is_some_and(|rv: u64| rv < st.store.oldest_resumable_rv()) {
        return Err(ApiError::new(
            410,
            format!(
                "too old resource version: {} ({})",
                since.unwrap_or_default(),
                st.store.oldest_resumable_rv()
            ),
        ));
    }
    Ok(Reply::Watch(Watch {
        type_key: rt.type_key(),
        api_version: rt.api_version(),
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        labels,
        fields,
        since,
        timeout,
    }))
}

fn event_line(kind: &str, object: &Value, api_version: &str) -> Vec<u8> {
    let mut line = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
    if object["apiVersion"].as_str() == Some(api_version) {
        serde_json::to_writer(&mut line, object).ok();
    } else {
        let mut o = object.clone();
        o["apiVersion"] = json!(api_version);
        serde_json::to_writer(&mut line, &o).ok();
    }
    line.extend_from_slice(b"}\n");
    line
}

/// Streams watch events through `send` until the client goes away
/// (`alive` returns false), the timeout passes, or the sandbox stops.
pub fn stream_watch(
    shared: &Shared,
    w: &Watch,
    send: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    alive: &mut dyn FnMut() -> bool,
) -> std::io::Result<()> {
    let deadline = w.timeout.map(|t| Instant::now() + t);
    let matches = |type_key: &str, ns: &str, obj: &Value| {
        type_key == w.type_key
            && w.namespace.as_deref().is_none_or(|n| n == ns)
            && w.labels.matches(obj)
            && w.fields.matches(obj)
    };
    let mut cursor = {
        let st = shared.lock();
        match w.since {
            Some(rv) => rv,
            None => {
                let initial: Vec<Vec<u8>> = st
                    .store
                    .list(&w.type_key, w.namespace.as_deref())
                    .filter(|o| w.labels.matches(o) && w.fields.matches(o))
                    .map(|o| event_line("ADDED", o, &w.api_version))
                    .collect();
                let rv = st.store.current_rv();
                drop(st);
                for line in initial {
                    send(&line)?;
                }
                rv
            }
        }
    };
    loop {
        if shared.is_shutdown() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        let lines: Vec<Vec<u8>> = {
            let mut st = shared.lock();
            if st.store.current_rv() <= cursor {
                st = shared
                    .changed
                    .wait_timeout(st, Duration::from_millis(500))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let lines = st
                .store
                .events_after(cursor)
                .filter(|e| matches(&e.type_key, &e.namespace, &e.object))
                .map(|e| event_line(e.kind.as_str(), &e.object, &w.api_version))
                .collect();
            cursor = st.store.current_rv();
            lines
        };
        if lines.is_empty() {
            if !alive() {
                return Ok(());
            }
            continue;
        }
        for line in lines {
            send(&line)?;
        }
    }
}

fn metadata(obj: &mut Value) -> Result<&mut Map<String, Value>> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::new(400, "the object must be a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::new(400, "metadata must be an object"))
}

fn string_field(obj: &Value, key: &str) -> Option<String> {
    obj["metadata"][key]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Rejects a body of another kind or API version than the URL names.
fn check_kind(rt: &ResourceType, obj: &mut Value) -> Result<()> {
    let av = rt.api_version();
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::new(400, "the object must be a JSON object"))?;
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != av => {
            return Err(ApiError::new(
                400,
                format!(
                "the API version in the data ({v}) does not match the expected API version ({av})"),
            ))
        }
        Some(_) => {}
        None => {
            map.insert("apiVersion".into(), json!(av));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => Err(ApiError::new(
            400,
            format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            ),
        )),
        Some(_) => Ok(()),
        None => {
            map.insert("kind".into(), json!(rt.kind));
            Ok(())
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Shape checks for the fields the sandbox itself reads and writes, so a
/// malformed object is refused instead of tripping the controllers.
fn check_shape(rt: &ResourceType, name: &str, obj: &Value) -> Result<()> {
    let string_map = |v: &Value| {
        v.is_null()
            || v.as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
    };
    for (path, meta) in [
        ("metadata", &obj["metadata"]),
        (
            "spec.template.metadata",
            &obj["spec"]["template"]["metadata"],
        ),
    ] {
        if !meta.is_null() && !meta.is_object() {
            return Err(ApiError::invalid(
                rt,
                name,
                &format!("{path}: Invalid value: must be an object"),
            ));
        }
        for field in ["labels", "annotations"] {
            if !string_map(&meta[field]) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &format!("{path}.{field}: Invalid value: must map strings to strings"),
                ));
            }
        }
    }
    for path in ["spec", "status"] {
        if !obj[path].is_null() && !obj[path].is_object() {
            return Err(ApiError::invalid(
                rt,
                name,
                &format!("{path}: Invalid value: must be an object"),
            ));
        }
    }
    if !valid_name(name) {
        return Err(ApiError::invalid(rt, name, &format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
    }
    Ok(())
}

fn ensure_namespace(st: &State, rt: &ResourceType, ns: &str) -> Result<()> {
    if rt.namespaced && st.store.get(NAMESPACE_KEY, "", ns).is_none() {
        let details = json!({"name": ns, "kind": "namespaces"});
        return Err(ApiError {
            details,
            ..ApiError::new(404, format!("namespaces \"{ns}\" not found"))
        });
    }
    Ok(())
}

struct WriteOpts<'a> {
    manager: String,
    operation: &'static str,
    subresource: Option<&'a str>,
    dry_run: bool,
    /// The server-side apply configuration (or /scale change), which is
    /// what the manager owns; other writes own what they wrote.
    applied: Option<&'a Value>,
}

fn write_opts<'a>(
    req: &Request,
    operation: &'static str,
    subresource: Option<&'a str>,
    dry_run: bool,
) -> WriteOpts<'a> {
    let manager = req
        .param("fieldManager")
        .map(String::from)
        .or_else(|| {
            req.header("user-agent")
                .and_then(|ua| ua.split('/').next())
                .map(String::from)
        })
        .unwrap_or_else(|| "unknown".into());
    WriteOpts {
        manager,
        operation,
        subresource,
        dry_run,
        applied: None,
    }
}

fn without(obj: &Value, skip: &[&str]) -> BTreeMap<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// FieldsV1 for a configuration: every object key as `f:key`, lists and
/// scalars as leaves. Coarser than the real server, but well-formed.
fn field_set(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (format!("f:{k}"), field_set(v)))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// The fields a write sets: the applied configuration for server-side
/// apply, otherwise the written object.
fn owned_fields(source: &Value, opts: &WriteOpts) -> Map<String, Value> {
    let mut fields = Map::new();
    for (k, v) in source.as_object().into_iter().flatten() {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let kept = without(
                    v,
                    &[
                        "name",
                        "namespace",
                        "uid",
                        "resourceVersion",
                        "generation",
                        "creationTimestamp",
                        "managedFields",
                    ],
                );
                if !kept.is_empty() {
                    fields.insert("f:metadata".into(), field_set(&json!(kept)));
                }
            }
            "status" if opts.subresource != Some("status") && opts.operation != "Apply" => {}
            _ => {
                fields.insert(format!("f:{k}"), field_set(v));
            }
        }
    }
    fields
}

fn managed_fields(
    old: Option<&Value>,
    obj: &mut Value,
    opts: &WriteOpts,
    fields: Map<String, Value>,
    api_version: &str,
) {
    let prior = old
        .map(|o| o["metadata"]["managedFields"].clone())
        .unwrap_or(Value::Null);
    let given = &obj["metadata"]["managedFields"];
    // A client that rewrites managedFields itself (kubectl's client-side to
    // server-side apply migration does) gets what it asked for.
    if given.as_array().is_some_and(|a| !a.is_empty()) && *given != prior {
        return;
    }
    let mut entry = json!({"manager": opts.manager, "operation": opts.operation, "apiVersion": api_version,
        "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields});
    if let Some(sub) = opts.subresource {
        entry["subresource"] = json!(sub);
    }
    let mut entries: Vec<Value> = prior.as_array().cloned().unwrap_or_default();
    entries.retain(|e| {
        !(e["manager"] == entry["manager"]
            && e["operation"] == entry["operation"]
            && e["subresource"] == entry["subresource"])
    });
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

/// The shared write path: identity and bookkeeping fields, status
/// subresource rules, defaults, generation, managedFields; then store and
/// run the controllers (unless dry run). Returns the object as stored.
fn commit(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    mut obj: Value,
    opts: &WriteOpts,
) -> Result<Value> {
    check_kind(rt, &mut obj)?;
    check_shape(rt, name, &obj)?;
    let fields = owned_fields(opts.applied.unwrap_or(&obj), opts);
    {
        let meta = metadata(&mut obj)?;
        meta.insert("name".into(), json!(name));
        if rt.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
    }
    match old {
        Some(old) => {
            let given_rv = string_field(&obj, "resourceVersion");
            if given_rv.is_some() && given_rv != string_field(old, "resourceVersion") {
                return Err(ApiError::new(409, format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", rt.qualified())).with_details(rt, name));
            }
            for key in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                match old["metadata"].get(key) {
                    Some(v) => obj["metadata"][key] = v.clone(),
                    None => {
                        metadata(&mut obj)?.remove(key);
                    }
                }
            }
            if opts.subresource == Some("status") {
                let status = obj.get("status").cloned();
                obj = old.clone();
                set_or_remove(&mut obj, "status", status);
            } else if rt.status {
                set_or_remove(&mut obj, "status", old.get("status").cloned());
            }
        }
        None => {
            let uid = st.store.new_uid();
            let meta = metadata(&mut obj)?;
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.remove("resourceVersion");
            if rt.status {
                meta.insert("generation".into(), json!(1));
                set_or_remove(&mut obj, "status", None);
            }
        }
    }
    let next_ip = &mut st.next_ip;
    resources::apply_defaults(rt, &mut obj, || {
        *next_ip += 1;
        format!("10.96.{}.{}", *next_ip / 250, *next_ip % 250 + 1)
    });
    if let Some(old) = old.filter(|_| rt.status) {
        let skip = ["metadata", "status"];
        if without(old, &skip) != without(&obj, &skip) {
            let g = old["metadata"]["generation"].as_u64().unwrap_or(0);
            obj["metadata"]["generation"] = json!(g + 1);
        }
    }
    managed_fields(old, &mut obj, opts, fields, &rt.api_version());
    if opts.dry_run {
        return Ok(obj);
    }
    let type_key = rt.type_key();
    let stored = st.store.put(&type_key, ns, name, obj);
    if type_key == CRD_KEY {
        st.registry.refresh_crds(&st.store);
    }
    let timers = controllers::reconcile(st, &type_key, ns, name);
    st.timers.extend(timers);
    Ok(stored)
}

fn set_or_remove(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Some(m) = obj.as_object_mut() {
        match value {
            Some(v) if !v.is_null() => {
                m.insert(key.into(), v);
            }
            _ => {
                m.remove(key);
            }
        }
    }
}

fn create(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    dry_run: bool,
) -> Result<Reply> {
    let mut obj = parse_body(req)?;
    check_kind(rt, &mut obj)?;
    metadata(&mut obj)?;
    let name = match (
        string_field(&obj, "name"),
        string_field(&obj, "generateName"),
    ) {
        (Some(n), _) => n,
        (None, Some(prefix)) => format!("{prefix}{}", st.store.random_suffix()),
        (None, None) => {
            return Err(ApiError::invalid(
                rt,
                "",
                "metadata.name: Required value: name or generateName is required",
            ))
        }
    };
    if rt.namespaced {
        if let Some(body_ns) = string_field(&obj, "namespace").filter(|b| b != ns) {
            return Err(ApiError::new(400, format!("the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})")));
        }
        ensure_namespace(st, rt, ns)?;
    }
    if st.store.get(&rt.type_key(), ns, &name).is_some() {
        return Err(
            ApiError::new(409, format!("{} \"{name}\" already exists", rt.qualified()))
                .with_details(rt, &name),
        );
    }
    let opts = write_opts(req, "Update", None, dry_run);
    let stored = commit(st, rt, ns, &name, None, obj, &opts)?;
    Ok(Reply::json(201, &present(rt, stored)))
}

fn check_name(obj: &mut Value, name: &str) -> Result<()> {
    match string_field(obj, "name") {
        Some(n) if n != name => Err(ApiError::new(
            400,
            format!("the name of the object ({n}) does not match the name on the URL ({name})"),
        )),
        Some(_) => Ok(()),
        None => {
            metadata(obj)?.insert("name".into(), json!(name));
            Ok(())
        }
    }
}

fn update(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    dry_run: bool,
) -> Result<Reply> {
    let mut obj = parse_body(req)?;
    check_kind(rt, &mut obj)?;
    check_name(&mut obj, name)?;
    let old = st
        .store
        .get(&rt.type_key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let opts = write_opts(req, "Update", sub, dry_run);
    let stored = commit(st, rt, ns, name, Some(&old), obj, &opts)?;
    Ok(Reply::json(200, &present(rt, stored)))
}

/// The object after applying a merge, strategic merge or JSON patch body.
fn patched(rt: &ResourceType, req: &Request, name: &str, old: &Value) -> Result<Value> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::new(400, format!("invalid JSON patch body: {e}")))?;
    let mut obj = old.clone();
    match req.content_type() {
        Some("application/merge-patch+json") => patch::merge_patch(&mut obj, &body),
        Some("application/strategic-merge-patch+json") => {
            obj = patch::strategic_merge(old, &body).map_err(|e| ApiError::new(400, e))?;
        }
        Some("application/json-patch+json") => {
            patch::json_patch(&mut obj, &body).map_err(|e| ApiError::invalid(rt, name, &e))?;
        }
        other => return Err(ApiError::new(415, format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {})", other.unwrap_or("none")))),
    }
    if string_field(&obj, "name").is_some_and(|n| n != name) {
        return Err(ApiError::invalid(
            rt,
            name,
            "metadata.name: Invalid value: field is immutable",
        ));
    }
    Ok(obj)
}

fn patch_object(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    dry_run: bool,
) -> Result<Reply> {
    let old = st.store.get(&rt.type_key(), ns, name).cloned();
    if req.content_type() == Some("application/apply-patch+yaml") {
        return apply(st, rt, req, ns, name, sub, old, dry_run);
    }
    let old = old.ok_or_else(|| ApiError::not_found(rt, name))?;
    let obj = patched(rt, req, name, &old)?;
    let opts = write_opts(req, "Update", sub, dry_run);
    let stored = commit(st, rt, ns, name, Some(&old), obj, &opts)?;
    Ok(Reply::json(200, &present(rt, stored)))
}

#[allow(clippy::too_many_arguments)]
fn apply(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    old: Option<Value>,
    dry_run: bool,
) -> Result<Reply> {
    let Some(manager) = req.param("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(ApiError::invalid(
            rt,
            name,
            "fieldManager: Required value: is required for apply patch",
        ));
    };
    let mut config = parse_body(req)?;
    if config.get("apiVersion").is_none() || config.get("kind").is_none() {
        return Err(ApiError::new(
            400,
            "apiVersion and kind must be set in an apply configuration",
        ));
    }
    check_kind(rt, &mut config)?;
    check_name(&mut config, name)?;
    let opts = WriteOpts {
        manager: manager.to_string(),
        operation: "Apply",
        subresource: sub,
        dry_run,
        applied: Some(&config),
    };
    let key = rt.type_key();
    let (stored, code) = match old {
        None => {
            ensure_namespace(st, rt, ns)?;
            (commit(st, rt, ns, name, None, config.clone(), &opts)?, 201)
        }
        Some(old) => {
            let mut obj = old.clone();
            let previous = st.store.applied_config(&key, ns, name, manager).cloned();
            patch::apply(&mut obj, previous.as_ref(), &config);
            // The applied configuration only sets a resourceVersion as a precondition.
            if string_field(&config, "resourceVersion").is_none() {
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            }
            (commit(st, rt, ns, name, Some(&old), obj, &opts)?, 200)
        }
    };
    if !dry_run {
        st.store.set_applied_config(&key, ns, name, manager, config);
    }
    Ok(Reply::json(code, &present(rt, stored)))
}

/// `/scale`: the replica count of a Deployment, ReplicaSet, StatefulSet or
/// ReplicationController seen as an autoscaling/v1 Scale.
fn scale(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    name: &str,
    dry_run: bool,
) -> Result<Reply> {
    let old = st
        .store
        .get(&rt.type_key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let as_scale = |o: &Value| {
        // A ReplicationController's selector is the label map itself.
        let labels = match rt.group.as_str() {
            "" => &o["spec"]["selector"],
            _ => &o["spec"]["selector"]["matchLabels"],
        };
        let selector: Vec<String> = labels
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": name, "namespace": ns, "uid": o["metadata"]["uid"],
                "resourceVersion": o["metadata"]["resourceVersion"], "creationTimestamp": o["metadata"]["creationTimestamp"]},
            "spec": {"replicas": o["spec"]["replicas"]},
            "status": {"replicas": o["status"]["replicas"].as_u64().unwrap_or(0), "selector": selector.join(",")}})
    };
    let current = as_scale(&old);
    let wanted = match req.method.as_str() {
        "GET" => return Ok(Reply::json(200, &current)),
        "PUT" => parse_body(req)?,
        "PATCH" => {
            let scale_rt = ResourceType {
                kind: "Scale".into(),
                ..rt.clone()
            };
            patched(&scale_rt, req, name, &current)?
        }
        _ => return Err(method_not_allowed(req)),
    };
    let replicas = wanted["spec"]["replicas"]
        .as_u64()
        .ok_or_else(|| ApiError::invalid(rt, name, "spec.replicas: Required value"))?;
    let mut obj = old.clone();
    obj["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str() {
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
    let owned = json!({"spec": {"replicas": replicas}});
    let opts = WriteOpts {
        applied: Some(&owned),
        ..write_opts(req, "Update", Some("scale"), dry_run)
    };
    let stored = commit(st, rt, ns, name, Some(&old), obj, &opts)?;
    Ok(Reply::json(200, &as_scale(&stored)))
}

/// DeleteOptions may come as a body or as query parameters.
fn delete_options(req: &Request) -> Result<(Value, bool)> {
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::new(400, format!("invalid DeleteOptions: {e}")))?
    };
    let dry_run = req.param("dryRun") == Some("All")
        || body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok((body, dry_run))
}

fn delete(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    name: &str,
    dry_run: bool,
) -> Result<Reply> {
    let (opts, body_dry_run) = delete_options(req)?;
    let key = rt.type_key();
    let obj = st
        .store
        .get(&key, ns, name)
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let pre = &opts["preconditions"];
    for (field, k) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if pre[field].is_string() && pre[field] != obj["metadata"][k] {
            return Err(ApiError::new(
                409,
                format!(
                    "Precondition failed: {field} in precondition: {}, {field} in object meta: {}",
                    pre[field], obj["metadata"][k]
                ),
            )
            .with_details(rt, name));
        }
    }
    let uid = obj["metadata"]["uid"].clone();
    if !(dry_run || body_dry_run) {
        let policy = opts["propagationPolicy"]
            .as_str()
            .or(req.param("propagationPolicy"))
            .unwrap_or("Background");
        let orphan = policy == "Orphan" || opts["orphanDependents"] == json!(true);
        remove_object(st, &key, ns, name, !orphan);
    }
    Ok(Reply::json(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": uid}}),
    ))
}

fn delete_collection(
    st: &mut State,
    rt: &ResourceType,
    req: &Request,
    ns: &str,
    dry_run: bool,
) -> Result<Reply> {
    let (labels, fields) = selectors(req)?;
    let (_, body_dry_run) = delete_options(req)?;
    let key = rt.type_key();
    let scope = (!ns.is_empty()).then_some(ns);
    let doomed: Vec<Value> = st
        .store
        .list(&key, scope)
        .filter(|o| labels.matches(o) && fields.matches(o))
        .cloned()
        .collect();
    if !(dry_run || body_dry_run) {
        for o in &doomed {
            let ons = o["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            remove_object(st, &key, ons, name, true);
        }
    }
    Ok(Reply::json(
        200,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": st.store.current_rv().to_string()}, "items": doomed}),
    ))
}

/// Deletes at once (no graceful phase), taking along the contents of a
/// namespace, the instances of a CRD, and (`cascade`) owned objects.
fn remove_object(st: &mut State, type_key: &str, ns: &str, name: &str, cascade: bool) {
    let Some(obj) = st.store.remove(type_key, ns, name) else {
        return;
    };
    st.ready_at
        .remove(&(type_key.to_string(), ns.to_string(), name.to_string()));
    let mut dependents: Vec<(String, String, String)> = Vec::new();
    if type_key == NAMESPACE_KEY {
        dependents.extend(objects_where(&st.store, |_, ons, _| ons == name));
    }
    if type_key == CRD_KEY {
        let group = obj["spec"]["group"].as_str().unwrap_or_default();
        let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
        let cr_key = format!("{group}/{plural}");
        dependents.extend(objects_where(&st.store, |k, _, _| k == cr_key));
    }
    if cascade {
        let uid = &obj["metadata"]["uid"];
        dependents.extend(objects_where(&st.store, |_, _, o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
        }));
    }
    for (k, ons, n) in dependents {
        remove_object(st, &k, &ons, &n, cascade);
    }
    if type_key == CRD_KEY {
        st.registry.refresh_crds(&st.store);
    }
}

fn objects_where(
    store: &Store,
    pred: impl Fn(&str, &str, &Value) -> bool,
) -> Vec<(String, String, String)> {
    store
        .all()
        .filter(|(k, (ns, _), o)| pred(k, ns, o))
        .map(|(k, (ns, name), _)| (k.to_string(), ns.clone(), name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc1123() {
        assert!(valid_name("web-1.example"));
        assert!(!valid_name("Web") && !valid_name("-a") && !valid_name(""));
    }

    #[test]
    fn error_status_has_kind_and_reason() {
        let s = ApiError::new(409, "x").status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(s["code"], 409);
    }
}
