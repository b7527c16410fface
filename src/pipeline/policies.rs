//! Policies on what a push would change, per environment (`max_prune`, `protect_kinds` in the
//! server config; docs/gate.md): decided by the gate from the whole plan and the whole live
//! comparison, never from the diff as printed (which caps and a time budget may cut). An
//! object whose change is unknown (not compared: gate mode "local", the budget ran out, the
//! comparison failed) counts as changed.

use crate::config::Environment;
use crate::pipeline::livediff::{Change, ObjectDiff};
use crate::pipeline::manifest::ObjectId;
use crate::pipeline::plan::{Plan, TargetPlan};

/// How many objects a refusal names before "and N more".
const NAMED: usize = 5;

/// What one target's live comparison found: its objects' changes, or that it failed.
pub type Compared<'a> = Option<&'a [ObjectDiff]>;

/// The reasons `env`'s policies refuse `plan`, one line each (empty: allowed). `compared[i]`
/// is the live comparison of `plan.targets[i]` (None: none was made or it failed).
pub fn refusals(env: &Environment, plan: &Plan, compared: &[Compared]) -> Vec<String> {
    let mut out = Vec::new();
    let prunes: Vec<&ObjectId> = plan
        .targets
        .iter()
        .filter(|t| t.blocked().is_none())
        .flat_map(|t| t.prune.iter().map(|(id, _)| id))
        .collect();
    if let Some(max) = env.max_prune {
        if prunes.len() > max {
            out.push(format!(
                "would prune {} objects, more than max_prune = {max} of environment {}: {}",
                prunes.len(),
                env.name,
                named(prunes.iter().copied())
            ));
        }
    }
    if env.protect_kinds.is_empty() {
        return out;
    }
    let deleted: Vec<&ObjectId> = prunes
        .iter()
        .copied()
        .filter(|id| protected(env, id))
        .collect();
    if !deleted.is_empty() {
        out.push(format!(
            "would delete {} (protect_kinds of environment {})",
            named(deleted.into_iter()),
            env.name
        ));
    }
    let mut changed: Vec<&ObjectId> = Vec::new();
    let mut unknown: Vec<&ObjectId> = Vec::new();
    for (i, tp) in plan.targets.iter().enumerate() {
        if tp.blocked().is_some() {
            continue;
        }
        let objects = compared.get(i).copied().flatten();
        for id in applied(tp).filter(|id| protected(env, id)) {
            let found =
                objects.and_then(|o| o.iter().find(|d| &d.id == id && d.change != Change::Prune));
            match found.map(|d| d.change) {
                Some(Change::Update) => changed.push(id),
                Some(Change::Create | Change::Unchanged) => {}
                _ => unknown.push(id),
            }
        }
    }
    if !changed.is_empty() {
        out.push(format!(
            "would change {} (protect_kinds of environment {})",
            named(changed.into_iter()),
            env.name
        ));
    }
    if !unknown.is_empty() {
        out.push(format!(
            "may change {}: not compared with the live object{}, so counted as changed \
             (protect_kinds of environment {})",
            named(unknown.iter().copied()),
            if unknown.len() == 1 { "" } else { "s" },
            env.name
        ));
    }
    out
}

/// The identities a target applies: its objects and its Vault-generated Secrets.
fn applied(tp: &TargetPlan) -> impl Iterator<Item = &ObjectId> {
    tp.apply.iter().map(|o| &o.id).chain(&tp.secret_ids)
}

/// Whether `id`'s kind is in `protect_kinds` (`Kind`, any group; or `Kind.group`).
fn protected(env: &Environment, id: &ObjectId) -> bool {
    env.protect_kinds.iter().any(|k| match k.split_once('.') {
        Some((kind, group)) => kind == id.kind && group == id.group,
        None => *k == id.kind,
    })
}

fn named<'a>(ids: impl ExactSizeIterator<Item = &'a ObjectId>) -> String {
    let n = ids.len();
    let mut names: Vec<String> = ids.take(NAMED).map(|id| id.to_string()).collect();
    if n > NAMED {
        names.push(format!("and {} more", n - NAMED));
    }
    crate::out::clean_line(&names.join(", ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Target, TargetType};
    use crate::pipeline::manifest::Object;
    use crate::pipeline::plan::Step;

    fn id(kind: &str, group: &str, name: &str) -> ObjectId {
        ObjectId {
            group: group.into(),
            kind: kind.into(),
            namespace: Some("app".into()),
            name: name.into(),
        }
    }

    fn object(id: ObjectId) -> Object {
        Object {
            api_version: "v1".into(),
            body: serde_json::Value::Null,
            source: format!("k8s/{}.yaml:1", id.name),
            cluster: false,
            id,
        }
    }

    fn target(apply: Vec<ObjectId>, prune: Vec<ObjectId>) -> TargetPlan {
        let target: Target =
            toml::from_str("name = \"web\"\npath = \"k8s\"\ntype = \"kubectl\"").unwrap();
        assert_eq!(target.kind, TargetType::Kubectl);
        TargetPlan {
            target,
            step: Step::Deploy,
            apply: apply.into_iter().map(object).collect(),
            prune: prune.into_iter().map(|i| (i, "v1".to_string())).collect(),
            files: Vec::new(),
            uses: Vec::new(),
            closure: Vec::new(),
            refused: None,
            error: None,
            secret_ids: Vec::new(),
            hooks: Vec::new(),
            chart: None,
        }
    }

    fn plan(targets: Vec<TargetPlan>) -> Plan {
        Plan {
            from: None,
            to: git2::Oid::zero(),
            changed_paths: 0,
            targets,
            kept: Vec::new(),
            warnings: Vec::new(),
            references: Default::default(),
            left_out: Vec::new(),
        }
    }

    fn diff(id: ObjectId, change: Change) -> ObjectDiff {
        ObjectDiff {
            id,
            source: None,
            change,
            diff: String::new(),
            compared: change != Change::Apply,
        }
    }

    fn env(extra: &str) -> Environment {
        let text = format!("[[environment]]\nname = \"prod\"\nbranch = \"main\"\n{extra}");
        crate::config::ServerConfig::parse(&text, "config.toml")
            .unwrap()
            .environment
            .remove(0)
    }

    #[test]
    fn more_prunes_than_the_limit_are_refused_naming_them() {
        let prunes: Vec<ObjectId> = (0..7)
            .map(|i| id("ConfigMap", "", &format!("c{i}")))
            .collect();
        let p = plan(vec![target(Vec::new(), prunes)]);
        assert!(refusals(&env("max_prune = 7"), &p, &[None]).is_empty());
        let r = refusals(&env("max_prune = 6"), &p, &[None]);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with("would prune 7 objects, more than max_prune = 6 of environment prod: ConfigMap app/c0,"),
            "{}",
            r[0]
        );
        assert!(r[0].ends_with("and 2 more"), "{}", r[0]);
    }

    #[test]
    fn protected_kinds_may_be_created_but_not_deleted_or_changed() {
        let pvc = id("PersistentVolumeClaim", "", "data");
        let e = env("protect_kinds = [\"PersistentVolumeClaim\", \"Namespace\"]");
        let created = [diff(pvc.clone(), Change::Create)];
        let p = plan(vec![target(vec![pvc.clone()], Vec::new())]);
        assert!(refusals(&e, &p, &[Some(&created)]).is_empty());
        let same = [diff(pvc.clone(), Change::Unchanged)];
        assert!(refusals(&e, &p, &[Some(&same)]).is_empty());
        let updated = [diff(pvc.clone(), Change::Update)];
        let r = refusals(&e, &p, &[Some(&updated)]);
        assert_eq!(
            r,
            ["would change PersistentVolumeClaim app/data (protect_kinds of environment prod)"]
        );
        // Not compared (budget, local mode, a failed comparison): counted as a change.
        let unseen = [diff(pvc.clone(), Change::Apply)];
        for compared in [Some(&unseen[..]), None] {
            let r = refusals(&e, &p, &[compared]);
            assert_eq!(r.len(), 1);
            assert!(r[0].starts_with("may change PersistentVolumeClaim app/data: not compared"));
        }
        let gone = plan(vec![target(Vec::new(), vec![pvc])]);
        let r = refusals(&e, &gone, &[None]);
        assert_eq!(
            r,
            ["would delete PersistentVolumeClaim app/data (protect_kinds of environment prod)"]
        );
    }

    #[test]
    fn a_kind_with_its_group_matches_that_group_only() {
        let e = env("protect_kinds = [\"Certificate.cert-manager.io\"]");
        let ours = id("Certificate", "cert-manager.io", "tls");
        let other = id("Certificate", "example.com", "tls");
        let p = plan(vec![target(Vec::new(), vec![ours, other])]);
        let r = refusals(&e, &p, &[None]);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("Certificate.cert-manager.io app/tls"),
            "{}",
            r[0]
        );
        assert!(!r[0].contains("example.com"), "{}", r[0]);
    }
}
