//! The object store: every object as JSON, one global resourceVersion counter,
//! and the event history that watches replay and follow.
//!
//! Objects are keyed by their resource type ("group/plural", group empty for
//! core) and (namespace, name); the namespace is empty for cluster-scoped
//! objects. A `BTreeMap` keeps lists in etcd's order (namespace, then name).

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many events watches can resume from; older resourceVersions get 410 Gone.
const EVENT_HISTORY: usize = 200_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub type_key: String,
    pub namespace: String,
    pub object: Value,
}

pub type ObjKey = (String, String);

#[derive(Default)]
pub struct Store {
    rv: u64,
    objects: HashMap<String, BTreeMap<ObjKey, Value>>,
    events: VecDeque<Event>,
    /// Last server-side-apply configuration per object and field manager, so a
    /// manager that stops applying a field gets it removed.
    applied: HashMap<(String, String, String), HashMap<String, Value>>,
    seed: u64,
}

impl Store {
    pub fn new() -> Store {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Store {
            seed: nanos ^ (u64::from(std::process::id()) << 32) | 1,
            ..Store::default()
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can resume after without missing events.
    pub fn oldest_resumable_rv(&self) -> u64 {
        self.events.front().map_or(self.rv, |e| e.rv - 1)
    }

    pub fn get(&self, type_key: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(type_key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of one type, in one namespace or (`None`) all of them.
    pub fn list<'a>(
        &'a self,
        type_key: &str,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(type_key)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ons, _), _)| ns.is_none_or(|n| n == ons))
            .map(|(_, v)| v)
    }

    /// Every stored object with its type key and (namespace, name).
    pub fn all(&self) -> impl Iterator<Item = (&str, &ObjKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| m.iter().map(move |(key, v)| (k.as_str(), key, v)))
    }

    /// Stores `obj` under a fresh resourceVersion, records the event, and
    /// returns the stored object.
    pub fn put(&mut self, type_key: &str, ns: &str, name: &str, mut obj: Value) -> Value {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let map = self.objects.entry(type_key.to_string()).or_default();
        let kind = if map
            .insert((ns.to_string(), name.to_string()), obj.clone())
            .is_some()
        {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(rv, kind, type_key, ns, obj.clone());
        obj
    }

    pub fn remove(&mut self, type_key: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(type_key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.applied
            .remove(&(type_key.to_string(), ns.to_string(), name.to_string()));
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.record(rv, EventType::Deleted, type_key, ns, obj.clone());
        Some(obj)
    }

    fn record(&mut self, rv: u64, kind: EventType, type_key: &str, ns: &str, object: Value) {
        if self.events.len() >= EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            rv,
            kind,
            type_key: type_key.to_string(),
            namespace: ns.to_string(),
            object,
        });
    }

    /// Events with a resourceVersion greater than `after`, oldest first.
    pub fn events_after(&self, after: u64) -> impl Iterator<Item = &Event> {
        let start = self.events.partition_point(|e| e.rv <= after);
        self.events.range(start..)
    }

    pub fn applied_config(
        &self,
        type_key: &str,
        ns: &str,
        name: &str,
        manager: &str,
    ) -> Option<&Value> {
        self.applied
            .get(&(type_key.to_string(), ns.to_string(), name.to_string()))?
            .get(manager)
    }

    pub fn set_applied_config(
        &mut self,
        type_key: &str,
        ns: &str,
        name: &str,
        manager: &str,
        config: Value,
    ) {
        self.applied
            .entry((type_key.to_string(), ns.to_string(), name.to_string()))
            .or_default()
            .insert(manager.to_string(), config);
    }

    /// A random-looking RFC 4122 version 4 UUID; uniqueness within one
    /// sandbox is all that matters, so a xorshift generator is enough.
    pub fn new_uid(&mut self) -> String {
        let mut next = || {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.seed
        };
        let (a, b) = (next(), next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    /// Five lowercase alphanumerics for `metadata.generateName`.
    pub fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = u64::from_str_radix(&self.new_uid()[..8], 16).unwrap_or(0);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}

/// The current time as RFC 3339 UTC with second precision, as Kubernetes
/// writes creationTimestamp.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_remove_record_events_in_order() {
        let mut s = Store::new();
        s.put(
            "/configmaps",
            "default",
            "a",
            json!({"metadata": {"name": "a"}}),
        );
        s.put(
            "/configmaps",
            "default",
            "a",
            json!({"metadata": {"name": "a"}}),
        );
        s.remove("/configmaps", "default", "a");
        let kinds: Vec<_> = s.events_after(1).map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventType::Modified, EventType::Deleted]);
        assert_eq!(s.current_rv(), 3);
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z') && t.starts_with("20"));
    }

    #[test]
    fn uids_are_distinct() {
        let mut s = Store::new();
        assert_ne!(s.new_uid(), s.new_uid());
    }
}
