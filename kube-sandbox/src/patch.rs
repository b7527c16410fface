//! The four PATCH flavours kubectl sends: JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902), strategic merge patch, and the merge half of
//! server-side apply.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The list fields whose items strategic merge patch matches by a key rather
/// than replacing the list; the same table serves server-side apply.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Applies a strategic merge patch, honouring `$patch: replace|delete|merge`,
/// `$retainKeys` and `$deleteFromPrimitiveList/`; `$setElementOrder/` keys are
/// accepted and dropped (order is kept as stored, new items appended).
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(Value::Object(strip_directives(p))),
        Some("delete") => return Ok(Value::Null),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k)));
    }
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(gone)) = (out.get_mut(field), v.as_array()) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown strategic merge patch directive {k}"));
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(_) => {
                let merged = strategic_merge(out.get(k).unwrap_or(&Value::Null), v)?;
                if merged.is_null() {
                    out.remove(k);
                } else {
                    out.insert(k.clone(), merged);
                }
            }
            Value::Array(items) => {
                let merged = merge_list(k, out.get(k), items)?;
                out.insert(k.clone(), merged);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Value::Object(out))
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(field: &str, current: Option<&Value>, items: &[Value]) -> Result<Value, String> {
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let current = match current {
        Some(Value::Array(c)) if !replace_all => c.clone(),
        _ => Vec::new(),
    };
    let Some(key) = merge_key(field, items).filter(|_| items.iter().all(Value::is_object)) else {
        if replace_all {
            let kept = items.iter().filter(|i| i.get("$patch").is_none()).cloned();
            return Ok(Value::Array(kept.collect()));
        }
        return Ok(Value::Array(items.to_vec()));
    };
    let mut out = current;
    for item in items {
        let directive = item.get("$patch").and_then(Value::as_str);
        if directive == Some("replace") {
            continue;
        }
        let id = item.get(key);
        let pos = id.and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
        match (directive, pos) {
            (Some("delete"), Some(i)) => {
                out.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => {
                let merged = strategic_merge(&out[i], item)?;
                out[i] = merged;
            }
            (_, None) => out.push(Value::Object(strip_directives(
                item.as_object().ok_or("list item is not an object")?,
            ))),
        }
    }
    Ok(Value::Array(out))
}

/// RFC 6902 JSON patch. Errors are messages for a 422/400 Status.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{name} at {path} needs a value"))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{name} at {path} needs \"from\""))
        };
        match name {
            "add" => add(target, path, value()?)?,
            "remove" => {
                take(target, path)?;
            }
            "replace" => {
                take(target, path)?;
                add(target, path, value()?)?;
            }
            "move" => {
                let v = take(target, from()?)?;
                add(target, path, v)?;
            }
            "copy" => {
                let v = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or(format!("path {path} not found"))?;
                add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let idx = path
        .rfind('/')
        .ok_or(format!("invalid JSON pointer {path:?}"))?;
    let last = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..idx].to_string(), last))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| format!("bad index in {path}"))?
            };
            if i > a.len() {
                return Err(format!("index out of range in {path}"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("path {parent:?} not found")),
    }
}

fn take(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("path {path:?} not found");
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            (i < a.len()).then(|| a.remove(i)).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

/// The server-side apply merge: drop what `manager` applied before and no
/// longer applies, then merge the new configuration in. Lists with a merge
/// key merge item by item; other lists are replaced.
pub fn apply(current: &mut Value, previous: Option<&Value>, config: &Value) {
    if let Some(prev) = previous {
        remove_dropped(current, prev, config);
    }
    apply_merge(current, config, "");
}

fn remove_dropped(current: &mut Value, prev: &Value, config: &Value) {
    let (Value::Object(cur), Value::Object(prev)) = (current, prev) else {
        return;
    };
    for (k, pv) in prev {
        match config.get(k) {
            None => {
                cur.remove(k);
            }
            Some(cv) => match (cur.get_mut(k), pv, cv) {
                (Some(c @ Value::Object(_)), Value::Object(_), Value::Object(_)) => {
                    remove_dropped(c, pv, cv)
                }
                (Some(Value::Array(c)), Value::Array(p), Value::Array(n)) => {
                    if let Some(key) = merge_key(k, p) {
                        c.retain(|item| {
                            let id = item.get(key);
                            !p.iter().any(|x| x.get(key) == id)
                                || n.iter().any(|x| x.get(key) == id)
                        });
                    }
                }
                _ => {}
            },
        }
    }
}

fn apply_merge(current: &mut Value, config: &Value, field: &str) {
    match (current, config) {
        (Value::Object(cur), Value::Object(cfg)) => {
            for (k, v) in cfg {
                match cur.get_mut(k) {
                    Some(c) if !v.is_null() => apply_merge(c, v, k),
                    _ => {
                        cur.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(cur), Value::Array(cfg)) => match merge_key(field, cfg) {
            Some(key) if cfg.iter().all(|i| i.get(key).is_some()) => {
                let mut out = Vec::with_capacity(cfg.len());
                for item in cfg {
                    let mut merged = cur
                        .iter()
                        .find(|c| c.get(key) == item.get(key))
                        .cloned()
                        .unwrap_or(Value::Null);
                    apply_merge(&mut merged, item, "");
                    out.push(merged);
                }
                // Items other managers added stay, after the applied ones.
                out.extend(
                    cur.iter()
                        .filter(|c| !cfg.iter().any(|i| i.get(key) == c.get(key)))
                        .cloned(),
                );
                *cur = out;
            }
            _ => *cur = cfg.clone(),
        },
        (cur, cfg) => *cur = cfg.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_nulls() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]}});
        let out = strategic_merge(&t, &p).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}]}})
        );
    }

    #[test]
    fn strategic_replace_directive() {
        let t = json!({"data": {"a": "1", "b": "2"}});
        let out = strategic_merge(&t, &json!({"data": {"$patch": "replace", "c": "3"}})).unwrap();
        assert_eq!(out, json!({"data": {"c": "3"}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 2},
                {"op": "move", "from": "/b", "path": "/d"},
                {"op": "remove", "path": "/a/0"}
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"a": [2, 3], "d": {"c": 2}}));
        assert!(json_patch(&mut t, &json!([{"op": "test", "path": "/a/0", "value": 9}])).is_err());
    }

    #[test]
    fn apply_removes_fields_dropped_by_the_same_manager() {
        let mut cur = json!({"data": {"a": "1", "b": "2", "other": "x"}});
        let prev = json!({"data": {"a": "1", "b": "2"}});
        apply(&mut cur, Some(&prev), &json!({"data": {"a": "3"}}));
        assert_eq!(cur, json!({"data": {"a": "3", "other": "x"}}));
    }
}
