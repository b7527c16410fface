//! Environments as directories (docs/environments.md): several environments follow one branch,
//! each deploying only the targets under its `paths`. This module decides which environments a
//! change concerns (the others are not even started), which API server each one deploys to
//! (environments sharing one take each other's locks and never prune what another declares),
//! and which targets no environment deploys.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use git2::{Oid, Repository, Sort, Tree};
use serde_json::Value;

use crate::backends::repo::Session;
use crate::config::{Environment, Target, TREE_CONFIG};
use crate::pipeline::declare::targets;
use crate::pipeline::diff::{self, Changes};
use crate::pipeline::inventory::Inventory;

/// Whether a change (the paths it touches, `new` the tree it leads to) can concern `env`: the
/// one place that decides whether an environment with `paths` is started at all. Today: a
/// changed path under the paths, a changed `hookops.toml`, or a changed path that a declared
/// target under the paths reads (`watch`). The reverse index of references (kustomize bases,
/// Terraform modules read from outside the paths) extends it here: a changed path that some
/// directory under the paths reads concerns the environment too.
pub fn concerns(env: &Environment, changes: &Changes, repo: &Repository, new: &Tree) -> bool {
    if env.paths.is_none() {
        return true;
    }
    if changes
        .paths
        .iter()
        .any(|p| env.includes(p) || p == TREE_CONFIG)
    {
        return true;
    }
    match targets::declared(repo, new, "new") {
        Ok(Some(declared)) => declared
            .iter()
            .filter(|t| env.includes(&t.path))
            .any(|t| changes.paths.iter().any(|p| t.owns(p))),
        Ok(None) => false,
        // The deploy reports it.
        Err(_) => true,
    }
}

/// Whether deploying `to` would do anything for `env`, judged from what changed since its
/// deployed pointer and since the tree its last attempt declared (a failed attempt is
/// retried by any push that concerns it). An environment that never deployed always is.
pub fn deploy_concerns(session: &Session, env: &Environment, to: Oid) -> Result<bool> {
    if env.paths.is_none() {
        return Ok(true);
    }
    let Some(pointer) = session.pointer(&env.name) else {
        return Ok(true);
    };
    if pointer == to {
        // Says "already deployed" itself.
        return Ok(true);
    }
    let repo = &session.repo;
    let new = targets::commit_tree(repo, to)?;
    let mut changes = diff::changed_paths(repo, Some(&targets::commit_tree(repo, pointer)?), &new)?;
    let base = Inventory::load(repo, &env.name)?.base;
    if let Some(base) = base.filter(|b| *b != pointer && *b != to) {
        if let Ok(tree) = targets::commit_tree(repo, base) {
            changes
                .paths
                .extend(diff::changed_paths(repo, Some(&tree), &new)?.paths);
        }
    }
    if concerns(env, &changes, repo, &new) {
        return Ok(true);
    }
    // A change to something a target under the paths references (a kustomize base or
    // component, a Terraform module), through the reference index of references.rs.
    let old = targets::commit_tree(repo, pointer)?;
    let references = crate::pipeline::references::References::for_change(
        repo,
        Some((pointer, &old)),
        (to, &new),
        &changes,
    )?;
    Ok(changes
        .paths
        .iter()
        .any(|p| references.users_of(p).iter().any(|u| env.includes(u))))
}

/// The commits on `tip` not reachable from `pointer` whose change (from their first parent)
/// concerns `env`: what `status` counts as pending for an environment with `paths`.
pub fn concerning_commits(
    repo: &Repository,
    env: &Environment,
    tip: Oid,
    pointer: Option<Oid>,
) -> Result<usize> {
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    let Some(pointer) = pointer else {
        // Nothing deployed yet: every commit is pending (and the history may be long).
        return Ok(walk.count());
    };
    walk.hide(pointer)?;
    let mut n = 0;
    for id in walk {
        let commit = repo.find_commit(id?)?;
        let tree = commit.tree()?;
        let parent = match commit.parent(0) {
            Ok(p) => Some(p.tree()?),
            Err(_) => None,
        };
        let changes = diff::changed_paths(repo, parent.as_ref(), &tree)?;
        if concerns(env, &changes, repo, &tree) {
            n += 1;
        }
    }
    Ok(n)
}

/// Commits on `tip` not yet deployed (not reachable from the pointer).
fn all_pending(session: &Session, tip: Oid, pointer: Option<Oid>) -> Result<usize> {
    let mut walk = session.repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL)?;
    walk.push(tip)?;
    if let Some(p) = pointer {
        walk.hide(p)?;
    }
    Ok(walk.count())
}

/// Commits on the environment's branch not yet deployed; for an environment with `paths`, only
/// those whose change concerns it (the others never start it).
pub fn pending_commits(session: &Session, env: &Environment) -> Result<Option<usize>> {
    let Ok(tip) = session.repo.refname_to_id(&env.ref_name()) else {
        return Ok(None);
    };
    let pointer = session.pointer(&env.name);
    if env.paths.is_some() {
        return concerning_commits(&session.repo, env, tip, pointer).map(Some);
    }
    all_pending(session, tip, pointer).map(Some)
}

/// The environment's `paths`, for messages: `clusters/staging, shared`.
pub fn paths_text(env: &Environment) -> String {
    env.paths.as_deref().unwrap_or_default().join(", ")
}

// ---- API servers ----------------------------------------------------------------------------

/// The API server an environment deploys to: the server URL of its kubeconfig context, or,
/// when that cannot be read, its kubeconfig and context (the same pair is the same server).
pub fn server(env: &Environment) -> String {
    let path = crate::pipeline::identity::kubeconfig_path(env.kubeconfig.as_deref());
    path.as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| server_in(&text, env.context.as_deref()))
        .unwrap_or_else(|| {
            format!(
                "kubeconfig {}, context {}",
                path.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(none)".into()),
                env.context.as_deref().unwrap_or("(current)")
            )
        })
}

/// The `server` of a kubeconfig context's cluster (`context`, else the current context).
fn server_in(text: &str, context: Option<&str>) -> Option<String> {
    let config: Value = serde_yaml_ng::from_str(text).ok()?;
    let wanted = match context {
        Some(c) => c.to_string(),
        None => config.get("current-context")?.as_str()?.to_string(),
    };
    let named = |list: &str, name: &str| -> Option<Value> {
        config
            .get(list)?
            .as_array()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let cluster = named("contexts", &wanted)?
        .pointer("/context/cluster")?
        .as_str()?
        .to_string();
    let url = named("clusters", &cluster)?
        .pointer("/cluster/server")?
        .as_str()?
        .trim_end_matches('/')
        .to_string();
    (!url.is_empty()).then_some(url)
}

/// The other environments (of any branch) that deploy to `env`'s API server.
pub fn sharing_server(all: &[Environment], env: &Environment) -> Vec<Environment> {
    if all.len() < 2 {
        return Vec::new();
    }
    let mine = server(env);
    all.iter()
        .filter(|e| e.name != env.name && server(e) == mine)
        .cloned()
        .collect()
}

/// The environments whose locks a run on `env` takes: its own and those of every environment
/// on the same API server, whose declarations its pruning reads (one's prune must never race
/// the other's apply of the same object).
pub fn lock_group(session: &Session, env: &Environment) -> Vec<String> {
    let mut names = vec![env.name.clone()];
    names.extend(
        sharing_server(&session.environments(), env)
            .into_iter()
            .map(|e| e.name),
    );
    names
}

/// Takes the locks of `lock_group`.
pub fn lock(session: &Session, env: &Environment) -> Result<crate::backends::repo::EnvLocks> {
    let names = lock_group(session, env);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    session.lock_envs(&refs)
}

/// Groups of environments that share an API server (two or more), by server.
pub fn shared_servers(all: &[Environment]) -> BTreeMap<String, Vec<String>> {
    let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if all.len() < 2 {
        return by_server;
    }
    for e in all {
        by_server.entry(server(e)).or_default().push(e.name.clone());
    }
    by_server.retain(|_, names| names.len() > 1);
    by_server
}

/// The warning about environments `names` sharing the API server `server` (`plan`, `doctor`).
pub fn shared_server_line(server: &str, names: &[String]) -> String {
    format!(
        "environments {} deploy to the same API server ({server}): they deploy one after the \
         other, and none prunes an object another one still declares",
        names.join(", ")
    )
}

// ---- targets no environment deploys -------------------------------------------------------

/// The targets that the changes `from..to` (each `from` None: the whole tree of `to`) touch
/// and that no environment of `envs` deploys, when every one of them has `paths` (an
/// environment without deploys the whole tree). Sorted by name, each once.
pub fn unplaced(
    repo: &Repository,
    envs: &[Environment],
    ranges: &[(Option<Oid>, Oid)],
) -> Result<Vec<Target>> {
    if envs.is_empty() || envs.iter().any(|e| e.paths.is_none()) {
        return Ok(Vec::new());
    }
    let mut out: BTreeMap<String, Target> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for &(from, to) in ranges {
        if !seen.insert((from, to)) {
            continue;
        }
        let new = targets::commit_tree(repo, to)?;
        let old = from.map(|f| targets::commit_tree(repo, f)).transpose()?;
        let changes = diff::changed_paths(repo, old.as_ref(), &new)?;
        let references = crate::pipeline::references::References::for_change(
            repo,
            from.zip(old.as_ref()),
            (to, &new),
            &changes,
        )?;
        let affected = targets::affected(repo, old.as_ref(), &new, &changes, "new", &references)?;
        for t in affected.deploy {
            if !envs.iter().any(|e| e.includes(&t.path)) {
                out.entry(t.name.clone()).or_insert(t);
            }
        }
    }
    Ok(out.into_values().collect())
}

/// The line that reports a target no environment deploys.
pub fn unplaced_line(t: &Target, envs: &[Environment]) -> String {
    format!(
        "{}: not deployed anywhere: {} is under none of the paths of {}",
        crate::config::printable(&t.name),
        if t.path.is_empty() {
            ".".into()
        } else {
            crate::config::printable(&t.path)
        },
        envs.iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn envs(text: &str) -> Vec<Environment> {
        ServerConfig::parse(text, "config.toml")
            .unwrap()
            .environment
    }

    #[test]
    fn paths_include_what_is_under_them() {
        let e = &envs(
            "[[environment]]\nname = \"prod\"\nbranch = \"main\"\npaths = [\"apps/production/\", \"infra\"]\n",
        )[0];
        assert_eq!(
            e.paths.as_deref().unwrap(),
            ["apps/production".to_string(), "infra".to_string()]
        );
        for yes in ["apps/production", "apps/production/web", "infra/x.tf"] {
            assert!(e.includes(yes), "{yes}");
        }
        for no in [
            "apps/productionx",
            "apps",
            "",
            "apps/staging/web",
            "infrastructure",
        ] {
            assert!(!e.includes(no), "{no}");
        }
        let whole = Environment::default_for("refs/heads/main");
        assert!(whole.includes("") && whole.includes("anything/at/all"));
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "[]",
            "[\"\"]",
            "[\"/\"]",
            "[\"../x\"]",
            "[\"/etc\"]",
            "[\"a//b\"]",
        ] {
            let text = format!("[[environment]]\nname = \"p\"\nbranch = \"main\"\npaths = {bad}\n");
            let err = ServerConfig::parse(&text, "config.toml")
                .map(|_| ())
                .unwrap_err();
            assert!(format!("{err:#}").contains("paths"), "{bad}: {err:#}");
        }
        let zero = "[deploy]\nenvironments_parallel = 0\n";
        assert!(ServerConfig::parse(zero, "config.toml").is_err());
        assert_eq!(
            ServerConfig::default().deploy.environments_parallel,
            4,
            "default"
        );
    }

    /// A tree of `files` in a fresh repository.
    fn tree<'r>(repo: &'r Repository, files: &[(&str, &str)]) -> Tree<'r> {
        let empty = repo.treebuilder(None).unwrap().write().unwrap();
        let mut b = git2::build::TreeUpdateBuilder::new();
        for (path, text) in files {
            let blob = repo.blob(text.as_bytes()).unwrap();
            b.upsert(*path, blob, git2::FileMode::Blob);
        }
        let id = b
            .create_updated(repo, &repo.find_tree(empty).unwrap())
            .unwrap();
        repo.find_tree(id).unwrap()
    }

    fn changed(paths: &[&str]) -> Changes {
        Changes {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Changes::default()
        }
    }

    #[test]
    fn a_change_concerns_the_environments_whose_paths_or_targets_it_touches() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let staging = &envs(
            "[[environment]]\nname = \"staging\"\nbranch = \"main\"\npaths = [\"apps/staging\"]\n",
        )[0];
        let plain = tree(&repo, &[("apps/staging/web/cm.yaml", "x")]);
        assert!(concerns(
            staging,
            &changed(&["apps/staging/web/cm.yaml"]),
            &repo,
            &plain
        ));
        assert!(!concerns(
            staging,
            &changed(&["apps/production/web/cm.yaml"]),
            &repo,
            &plain
        ));
        assert!(!concerns(
            staging,
            &changed(&["apps/base/web/cm.yaml"]),
            &repo,
            &plain
        ));
        assert!(concerns(staging, &changed(&[TREE_CONFIG]), &repo, &plain));
        let whole = Environment::default_for("refs/heads/main");
        assert!(concerns(
            &whole,
            &changed(&["anything.yaml"]),
            &repo,
            &plain
        ));
        // A declared target under the paths that watches the base is concerned by it.
        let declared = tree(
            &repo,
            &[(
                TREE_CONFIG,
                "[[target]]\nname = \"web\"\npath = \"apps/staging/web\"\ntype = \"kustomize\"\nwatch = [\"apps/base/web\"]\n",
            )],
        );
        assert!(concerns(
            staging,
            &changed(&["apps/base/web/cm.yaml"]),
            &repo,
            &declared
        ));
        assert!(!concerns(
            staging,
            &changed(&["apps/base/other/cm.yaml"]),
            &repo,
            &declared
        ));
        // A tree config that no longer parses: started, so that the deploy says why.
        let broken = tree(&repo, &[(TREE_CONFIG, "[[target]\n")]);
        assert!(concerns(
            staging,
            &changed(&["apps/base/x"]),
            &repo,
            &broken
        ));
    }

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://a.example:6443/\n- name: b\n  cluster:\n    server: https://b.example:6443\ncontexts:\n- name: one\n  context:\n    cluster: a\n    user: u\n- name: two\n  context:\n    cluster: a\n    user: v\n    namespace: x\n- name: three\n  context:\n    cluster: b\n    user: u\ncurrent-context: three\n";

    #[test]
    fn the_server_is_the_context_clusters_url() {
        assert_eq!(
            server_in(KUBECONFIG, Some("one")).as_deref(),
            Some("https://a.example:6443")
        );
        assert_eq!(
            server_in(KUBECONFIG, Some("two")),
            server_in(KUBECONFIG, Some("one"))
        );
        assert_eq!(
            server_in(KUBECONFIG, None).as_deref(),
            Some("https://b.example:6443")
        );
        assert_eq!(server_in(KUBECONFIG, Some("nope")), None);
        assert_eq!(server_in("not: [yaml", None), None);
    }

    #[test]
    fn environments_on_one_server_are_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(&kc, KUBECONFIG).unwrap();
        let all = envs(&format!(
            "[[environment]]\nname = \"a1\"\nbranch = \"main\"\nkubeconfig = {k:?}\ncontext = \"one\"\n\
             [[environment]]\nname = \"a2\"\nbranch = \"main\"\nkubeconfig = {k:?}\ncontext = \"two\"\n\
             [[environment]]\nname = \"b\"\nbranch = \"main\"\nkubeconfig = {k:?}\ncontext = \"three\"\n\
             [[environment]]\nname = \"m1\"\nbranch = \"main\"\nkubeconfig = \"/nonexistent\"\ncontext = \"c\"\n\
             [[environment]]\nname = \"m2\"\nbranch = \"dev\"\nkubeconfig = \"/nonexistent\"\ncontext = \"c\"\n",
            k = kc.display().to_string()
        ));
        let names = |v: Vec<Environment>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(sharing_server(&all, &all[0])), ["a2"]);
        assert!(sharing_server(&all, &all[2]).is_empty());
        // Unreadable kubeconfig: the same file and context is the same server.
        assert_eq!(names(sharing_server(&all, &all[3])), ["m2"]);
        let groups = shared_servers(&all);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups["https://a.example:6443"], ["a1", "a2"]);
        let line = shared_server_line("https://a.example:6443", &groups["https://a.example:6443"]);
        assert!(line.contains("a1, a2"), "{line}");
    }
}
