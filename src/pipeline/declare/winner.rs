//! The declaration order of an environment and the winner of an identity declared more than
//! once (architecture.md, D7): targets in `hookops.toml` order, else by path compared component
//! by component; within a kubectl target its files as `kubectl apply -R -f DIR` reads them
//! (component by component, byte order of names); within a file, document order (a file's own
//! repeats are settled when it is parsed: `last_of_each`). The last declaration wins.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Target;
use crate::pipeline::manifest::{Object, ObjectId};

/// A unit's place in the declaration order; places compare as the order says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    target: (usize, Vec<String>),
    unit: (u8, Vec<String>),
}

/// The order of one tree's targets.
#[derive(Debug, Clone, Default)]
pub struct Order {
    /// Positions in `hookops.toml`, when the tree has one.
    declared: Option<BTreeMap<String, usize>>,
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

impl Order {
    /// `declared`: the targets of the tree's `hookops.toml`, if it has one.
    pub fn new(declared: Option<&[Target]>) -> Order {
        Order {
            declared: declared.map(|ts| {
                ts.iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect()
            }),
        }
    }

    /// Where unit `unit` of target `target` (by name) stands.
    pub fn place(&self, target: &str, unit: &str) -> Place {
        let target = match &self.declared {
            // A name hookops.toml no longer lists belongs to no target any more: first, so it
            // never wins over a declared one.
            Some(names) => match names.get(target) {
                Some(i) => (i + 1, Vec::new()),
                None => (0, components(target)),
            },
            None => (0, components(target)),
        };
        let unit = match unit.split_once(':') {
            Some(("f", path)) => (0, components(path)),
            // A target's Vault-generated Secrets come after its files.
            Some(("s", _)) => (1, Vec::new()),
            _ => (0, Vec::new()),
        };
        Place { target, unit }
    }

    /// The winning unit among `units` (unit key, target name): the last in the order.
    pub fn winner<'a>(&self, units: &'a [(String, String)]) -> Option<&'a (String, String)> {
        units.iter().max_by_key(|(u, t)| self.place(t, u))
    }
}

/// An identity one unit declares more than once.
#[derive(Debug)]
pub struct Repeat {
    pub id: ObjectId,
    /// `file:line` of every copy, in order.
    pub sources: Vec<String>,
    /// Not all copies say the same.
    pub differ: bool,
}

/// Keeps, of each identity a unit declares more than once, the last copy, in place of the
/// first (kubectl applies both, and the last one stays); returns the identities repeated.
pub fn last_of_each(objects: &mut Vec<Object>) -> Vec<Repeat> {
    let mut last: BTreeMap<ObjectId, usize> = BTreeMap::new();
    for (i, o) in objects.iter().enumerate() {
        last.insert(o.id.clone(), i);
    }
    if last.len() == objects.len() {
        return Vec::new();
    }
    let mut repeats: BTreeMap<ObjectId, Repeat> = BTreeMap::new();
    for o in objects.iter() {
        let winner = &objects[last[&o.id]];
        let r = repeats.entry(o.id.clone()).or_insert_with(|| Repeat {
            id: o.id.clone(),
            sources: Vec::new(),
            differ: false,
        });
        r.sources.push(o.source.clone());
        r.differ |= !same_content(o, winner);
    }
    let keep: BTreeSet<usize> = last.values().copied().collect();
    let mut i = 0;
    objects.retain(|_| {
        i += 1;
        keep.contains(&(i - 1))
    });
    repeats
        .into_values()
        .filter(|r| r.sources.len() > 1)
        .collect()
}

/// Whether two declarations of one identity say the same (the namespace as resolved).
pub fn same_content(a: &Object, b: &Object) -> bool {
    let norm = |o: &Object| {
        let mut body = o.body.clone();
        if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("namespace");
        }
        body
    };
    a.id == b.id && norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetType;

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            ..crate::pipeline::declare::targets::placeholder(name)
        }
    }

    fn u(unit: &str, target: &str) -> (String, String) {
        (unit.to_string(), target.to_string())
    }

    #[test]
    fn files_in_the_order_kubectl_reads_a_directory() {
        let o = Order::new(None);
        // `kubectl apply -R -f a` reads a/b/x.yaml (directory "b" sorts before "b.yaml")
        // before a/b.yaml, though "a/b.yaml" < "a/b/x.yaml" as strings.
        let units = [u("f:a/b.yaml", "a"), u("f:a/b/x.yaml", "a")];
        assert_eq!(o.winner(&units).unwrap().0, "f:a/b.yaml");
        let units = [u("f:a/b-c.yaml", "a"), u("f:a/b/x.yaml", "a")];
        assert_eq!(o.winner(&units).unwrap().0, "f:a/b-c.yaml");
        // Across discovered targets: by path, component by component.
        let units = [
            u("f:apps/x.yaml", "apps"),
            u("k:apps-prod", "apps-prod"),
            u("f:apps/sub/y.yaml", "apps/sub"),
        ];
        assert_eq!(o.winner(&units).unwrap().0, "k:apps-prod");
        assert_eq!(
            Order::new(None)
                .winner(&[u("f:z.yaml", "."), u("f:a/y.yaml", "a")])
                .unwrap()
                .0,
            "f:a/y.yaml"
        );
    }

    #[test]
    fn declared_targets_in_the_order_of_hookops_toml() {
        let ts = [target("zeta"), target("alpha")];
        let o = Order::new(Some(&ts));
        let units = [u("f:b.yaml", "alpha"), u("f:a.yaml", "zeta")];
        assert_eq!(o.winner(&units).unwrap().0, "f:b.yaml");
        // A target's Vault Secrets after its files.
        let units = [u("s:zeta", "zeta"), u("f:z/z.yaml", "zeta")];
        assert_eq!(o.winner(&units).unwrap().0, "s:zeta");
        assert_eq!(ts[0].kind, TargetType::Kubectl);
    }

    #[test]
    fn a_file_keeps_its_last_copy_of_an_object() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {v: \"1\"}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {v: \"2\"}\n";
        let mut objs = crate::pipeline::manifest::parse(text, "f.yaml", Some("d")).unwrap();
        let repeated = last_of_each(&mut objs);
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].id.name, "b");
        assert_eq!(objs[1].body["data"]["v"], "2");
        assert_eq!(repeated.len(), 1);
        assert_eq!(repeated[0].sources, ["f.yaml:1", "f.yaml:10"]);
        assert!(repeated[0].differ);
        assert!(!same_content(&objs[0], &objs[1]));
    }
}
