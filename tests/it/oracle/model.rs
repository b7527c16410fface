//! The model-based run: every snapshot of a history is committed and pushed through the real
//! hook, then hookops' behaviour is compared with the evaluator's answer for the pushed tree
//! (the checks are listed in [`Check`]). A failing history is shrunk (steps dropped, then
//! files dropped from every step, while the same check still fails) and written out as a
//! replayable shell script.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::eval::{self, Declared, Env, Id};
use super::gen::{Blob, Gen, Names, Tree};
use super::live::{self, Backend};
use crate::util::World;

const ZERO: &str = "0000000000000000000000000000000000000000";

/// What is compared after a push. The name is the category a failure is shrunk by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The record's result and the deployed pointer (D9): a push whose tree the evaluator
    /// finds whole succeeds and moves the pointer; one with a failing target fails, keeps the
    /// pointer, and names every broken file.
    Result,
    /// hookops' from-scratch plan lists the evaluator's targets and objects (D3–D7), every
    /// declaring file of a duplicate (D7), and the unread files (D8).
    Plan,
    /// No DELETE during the push for an identity the pushed tree declares, for what a failing
    /// target declared before, or for a kept object (D9, D10).
    Delete,
    /// After a success: the server holds exactly what the tree declares, winners' content,
    /// plus what the docs keep (D7, D10). After a failure: the healthy targets' objects.
    State,
    /// Counts printed and recorded equal what the server did (D10).
    Counts,
    /// The inventory declares exactly the evaluator's identities.
    Inventory,
    /// A push that changes a file no target reads says so (D8).
    Unread,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub check: Check,
    /// The rule or kind of discrepancy (`D7-content`, `D10-pruned`…): with `check`, what a
    /// shrink keeps failing and what `HOOKOPS_ORACLE_IGNORE` names.
    pub rule: &'static str,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Failure {
    /// The push (0-based) that failed.
    pub step: usize,
    pub violations: Vec<Violation>,
}

impl Failure {
    /// (check, rule) of every violation.
    pub fn signatures(&self) -> BTreeSet<(Check, &'static str)> {
        self.violations.iter().map(|v| (v.check, v.rule)).collect()
    }

    /// The first (most basic) violation's signature.
    pub fn first(&self) -> (Check, &'static str) {
        (self.violations[0].check, self.violations[0].rule)
    }

    pub fn describe(&self) -> String {
        let mut s = format!("push {} (1-based):\n", self.step + 1);
        for v in &self.violations {
            let _ = writeln!(s, "  [{:?} {}] {}", v.check, v.rule, v.message);
        }
        s
    }
}

/// How a history is run.
#[derive(Clone)]
pub struct Setup {
    pub backend: BackendKind,
    /// Checks or rules (`Unread`, `D8`, `State/D7-content`) not counted as failures: to look
    /// past a known finding while exploring (`HOOKOPS_ORACLE_IGNORE`); empty by default.
    pub ignore: BTreeSet<String>,
    pub duplicates_error: bool,
    /// The context namespace is `default` (else a namespace of the history's own).
    pub ctx_default: bool,
}

#[derive(Clone, Copy)]
pub enum BackendKind {
    Sandbox,
    Cluster,
}

fn ours_names(setup: &Setup, backend: &Backend, seed: u64) -> Names {
    let prefix = match backend {
        Backend::Sandbox => "o".to_string(),
        Backend::Cluster(c) => c.unique("or"),
    };
    let mut namespaces = vec![format!("{prefix}-a"), format!("{prefix}-b")];
    let ctx_ns = if setup.ctx_default && !backend.is_cluster() {
        "default".to_string()
    } else {
        format!("{prefix}-ctx")
    };
    namespaces.push(ctx_ns.clone());
    let _ = seed;
    Names {
        group: format!("{prefix}.oracle.test"),
        prefix,
        namespaces,
        ctx_ns,
    }
}

/// One world running one history.
pub struct Session {
    pub world: World,
    backend: Backend,
    pub names: Names,
    setup: Setup,
    prev: Tree,
    /// Kept objects (Namespaces, CRDs, `prune: disabled`) seen on the server: never deleted.
    kept_seen: BTreeSet<Id>,
    /// Per target, what it declared the last time it was whole.
    last_whole: BTreeMap<String, BTreeSet<Id>>,
    pub env_extra: String,
}

fn kept_kind(id: &Id) -> bool {
    (id.group.is_empty() && id.kind == "Namespace")
        || id.kind == "CustomResourceDefinition"
        || id.name.contains("-keep-")
}

impl Session {
    pub fn new(setup: &Setup, seed: u64) -> Option<Session> {
        let (world, backend) = match setup.backend {
            BackendKind::Sandbox => {
                if !crate::util::tools_present() {
                    return None;
                }
                let mut w = World::new();
                w.start_sandbox();
                (w, Backend::Sandbox)
            }
            BackendKind::Cluster => {
                if !crate::util::tools_present() {
                    return None;
                }
                let c = crate::cluster::shared()?;
                let mut w = World::new();
                w.use_cluster();
                (w, Backend::Cluster(c))
            }
        };
        let names = ours_names(setup, &backend, seed);
        let mut env_extra = String::from("on_failure = \"stop\"\n");
        if setup.duplicates_error {
            env_extra.push_str("duplicates = \"error\"\n");
        }
        world.configure(&env_extra, "");
        let mut c = world.base_command("kubectl");
        c.arg("--kubeconfig").arg(&world.kubeconfig).args([
            "config",
            "set-context",
            "sandbox",
            "--namespace",
            &names.ctx_ns,
        ]);
        crate::util::run(&mut c).assert_ok();
        live::create_namespaces(&backend, &world, &names);
        Some(Session {
            world,
            backend,
            names,
            setup: setup.clone(),
            prev: Tree::new(),
            kept_seen: BTreeSet::new(),
            last_whole: BTreeMap::new(),
            env_extra,
        })
    }

    pub fn gen(&self, seed: u64, without: BTreeSet<String>) -> Gen {
        Gen::new(seed, self.names.clone(), without)
    }

    /// Makes the clone's working tree `tree` and commits it.
    fn commit(&mut self, step: usize, tree: &Tree) -> String {
        let clone = self.world.clone.clone();
        for p in self.prev.keys() {
            if !tree.contains_key(p) {
                let _ = std::fs::remove_file(clone.join(p));
            }
        }
        for (p, b) in tree {
            if self.prev.get(p) != Some(b) {
                let full = clone.join(p);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, b.bytes()).unwrap();
            }
        }
        remove_empty_dirs(&clone);
        self.world.in_clone(&["add", "-A"]).assert_ok();
        self.world
            .in_clone(&[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("step {}", step + 1),
            ])
            .assert_ok();
        self.world.head()
    }

    /// Pushes `tree` as push number `step` and checks everything; the evaluator's answer for
    /// it on success.
    pub fn push(&mut self, step: usize, tree: &Tree) -> Result<Declared, Failure> {
        let t0 = Instant::now();
        let commit = self.commit(step, tree);
        let t_commit = t0.elapsed();
        let cluster_kinds = live::crd_kinds(&self.backend, &self.world, &self.names);
        let pointer_before = self.world.pointer("prod");
        let live_before = live::objects(&self.backend, &self.world, &self.names);
        for id in live_before.keys() {
            if kept_kind(id) {
                self.kept_seen.insert(id.clone());
            }
        }
        let mark = live::mark(&self.backend, &self.world);
        let t1 = Instant::now();
        let out = self.world.push();
        let t_push = t1.elapsed();
        let writes = live::writes_since(&self.backend, &self.world, &self.names, mark);
        if writes.is_none() && step == 0 {
            eprintln!(
                "oracle: NOTE: the test cluster writes no audit log (DIR/audit.log): DELETE requests and exact counts are not checked on it; pruned counts are checked against what disappeared"
            );
        }
        let env = Env {
            context_ns: self.names.ctx_ns.clone(),
            duplicates_error: self.setup.duplicates_error,
            cluster_kinds,
        };
        let t2 = Instant::now();
        let decl = eval::evaluate(&self.world.clone, &env);
        let t_eval = t2.elapsed();
        let record = self.world.records(&commit).pop();
        let pushed = out.all();
        let mut v = Vec::new();
        let failing = decl.failing();
        let ok_expected = failing.is_empty();

        // Result and pointer (D9).
        let result = record
            .as_ref()
            .map(|r| r["result"].as_str().unwrap_or("").to_string());
        let pointer = self.world.pointer("prod");
        if ok_expected {
            if result.as_deref().is_some_and(|r| r != "succeeded") {
                v.push(viol(
                    Check::Result,
                    "D9-outcome",
                    format!(
                        "the evaluator finds every target whole, but the record says {:?}: {}",
                        result.unwrap_or_default(),
                        record.as_ref().map(eval_reasons).unwrap_or_default()
                    ),
                ));
            } else if pointer.as_deref() != Some(commit.as_str()) {
                v.push(viol(Check::Result, "D9-pointer", format!(
                    "the evaluator finds every target whole, but the pointer is {pointer:?}, not the pushed commit (record: {:?})",
                    record.as_ref().map(|r| r["result"].clone())
                )));
            }
        } else {
            if result.as_deref() == Some("succeeded") || pointer.as_deref() == Some(commit.as_str())
            {
                v.push(viol(Check::Result, "D9-outcome", format!(
                    "targets {failing:?} fail ({}), but the push recorded {:?} and the pointer is {:?}",
                    failures_text(&decl),
                    result,
                    pointer.as_ref().map(|p| p == &commit)
                )));
            } else if pointer != pointer_before {
                v.push(viol(
                    Check::Result,
                    "D9-pointer",
                    "a failed push moved the pointer".into(),
                ));
            }
            for t in decl.targets.iter().filter(|t| !t.failures.is_empty()) {
                for f in &t.broken_files {
                    let shown = eval::show(f);
                    // kustomize's own error names the target and what it could not read.
                    let kustomize = t.kind == eval::Kind::Kustomize && pushed.contains(&t.name);
                    let named = if f.to_str().is_some() {
                        pushed.contains(&shown) || kustomize
                    } else {
                        pushed.contains(&t.name) && pushed.contains("UTF-8")
                    };
                    if !named {
                        v.push(viol(
                            Check::Result,
                            "D9-named",
                            format!(
                                "target {} fails ({}), but the push output does not name {shown}",
                                t.name,
                                t.failures.join("; ")
                            ),
                        ));
                    }
                }
            }
        }

        // Deletes (D9, D10).
        let mut protected: BTreeMap<Id, (&'static str, String)> = BTreeMap::new();
        for id in decl.objects.keys() {
            protected.insert(
                id.clone(),
                ("D10-declared", "the pushed tree declares it".into()),
            );
        }
        // What targets that fail themselves declared when last whole (not those skipped as
        // dependents: whether a target depends on one whose CRD or Namespace already exists is
        // not in the definition).
        let failing = decl.failing();
        for (t, ids) in &self.last_whole {
            if !failing.contains(t) {
                continue;
            }
            for id in ids {
                protected.entry(id.clone()).or_insert_with(|| {
                    (
                        "D9-untouched",
                        format!("its target {t} fails in this push: nothing of it is pruned"),
                    )
                });
            }
        }
        let deletes: Vec<&live::Write> = writes
            .iter()
            .flatten()
            .filter(|w| w.method == "DELETE")
            .collect();
        for w in &deletes {
            if let Some((rule, why)) = protected.get(&w.id) {
                let rule = *rule;
                v.push(viol(
                    Check::Delete,
                    rule,
                    format!("DELETE {} (answered {}) although {why}", w.id, w.status),
                ));
            } else if kept_kind(&w.id) {
                v.push(viol(
                    Check::Delete,
                    "D10-kept",
                    format!(
                        "DELETE {} (answered {}): kept objects are never pruned",
                        w.id, w.status
                    ),
                ));
            }
        }

        // Counts (D10).
        if let (Some(rec), Some(writes)) = (&record, &writes) {
            v.extend(check_counts(rec, writes, &decl, &pushed));
        } else if let (Some(rec), None) = (&record, &writes) {
            // No server log (the cluster without an audit log): what disappeared is a floor.
            let live_after = live::objects(&self.backend, &self.world, &self.names);
            let gone = live_before
                .keys()
                .filter(|k| !live_after.contains_key(*k))
                .count() as u64;
            let pruned: u64 = targets_of(rec)
                .iter()
                .map(|t| t["pruned"].as_u64().unwrap_or(0))
                .sum();
            if pruned != gone {
                v.push(viol(
                    Check::Counts,
                    "D10-pruned",
                    format!("recorded pruned {pruned}, but {gone} objects disappeared"),
                ));
            }
        } else if let (None, Some(writes)) = (&record, &writes) {
            let done: Vec<String> = writes
                .iter()
                .filter(|w| (200..300).contains(&w.status))
                .map(|w| format!("{} {}", w.method, w.id))
                .collect();
            if !done.is_empty() {
                v.push(viol(
                    Check::Counts,
                    "unrecorded",
                    format!("the server did {done:?}, but the push wrote no record"),
                ));
            }
        }

        // State.
        let live_after = live::objects(&self.backend, &self.world, &self.names);
        let succeeded = ok_expected && v.iter().all(|x| x.check != Check::Result);
        if succeeded {
            v.extend(check_state(&decl, &live_after, &self.kept_seen, None));
        } else if !ok_expected {
            // Only what healthy targets alone declare, now and at the last whole push: what a
            // failing target declares cannot be known, and nothing of it changes (D9).
            let healthy = decl.healthy();
            let mut decl_now = decl.clone();
            let unknown: BTreeSet<&Id> = self
                .last_whole
                .iter()
                .filter(|(t, _)| !healthy.contains(*t))
                .flat_map(|(_, ids)| ids.iter())
                .collect();
            decl_now.objects.retain(|id, _| !unknown.contains(id));
            v.extend(check_state(
                &decl_now,
                &live_after,
                &self.kept_seen,
                Some(&healthy),
            ));
        }

        // D8 in the push's output.
        for (f, why) in &decl.unread {
            let p = PathBuf::from(f);
            if self.prev.get(&p) != tree.get(&p)
                && tree.contains_key(&p)
                && !decl.reported(f, &pushed)
            {
                v.push(viol(
                    Check::Unread,
                    "D8",
                    format!("{f} changed and {why}, but the push does not say so"),
                ));
            }
        }

        // The from-scratch plan and the inventory.
        if succeeded {
            let t3 = Instant::now();
            v.extend(self.check_plan(&decl));
            if verbose() {
                eprintln!("oracle:   plan check {:.2}s", t3.elapsed().as_secs_f64());
            }
            v.extend(self.check_inventory(&decl));
        }

        for id in live_after.keys() {
            if kept_kind(id) {
                self.kept_seen.insert(id.clone());
            }
        }
        self.prev = tree.clone();
        let failing = decl.failing();
        self.last_whole
            .retain(|t, _| decl.targets.iter().any(|x| &x.name == t));
        for t in decl.targets.iter().filter(|t| !failing.contains(&t.name)) {
            let ids = decl
                .objects
                .iter()
                .filter(|(_, ds)| ds.iter().any(|d| d.target == t.name))
                .map(|(id, _)| id.clone())
                .collect();
            self.last_whole.insert(t.name.clone(), ids);
        }
        if verbose() {
            eprintln!(
                "oracle: push {}: commit {:.2}s, push {:.2}s, evaluate {:.2}s, all {:.2}s; {} targets, {} objects",
                step + 1,
                t_commit.as_secs_f64(),
                t_push.as_secs_f64(),
                t_eval.as_secs_f64(),
                t0.elapsed().as_secs_f64(),
                decl.targets.len(),
                decl.objects.len()
            );
        }
        v.retain(|x| {
            let c = format!("{:?}", x.check);
            !(self.setup.ignore.contains(&c)
                || self.setup.ignore.contains(x.rule)
                || self.setup.ignore.contains(&format!("{c}/{}", x.rule)))
        });
        if v.is_empty() {
            Ok(decl)
        } else {
            v.sort_by_key(|x| (x.check, x.rule));
            let mut f = Failure {
                step,
                violations: v,
            };
            let (check, rule) = f.first();
            f.violations.push(viol(
                check,
                rule,
                format!("push output:\n{}", indent(&pushed)),
            ));
            Err(f)
        }
    }

    fn check_plan(&self, decl: &Declared) -> Vec<Violation> {
        let mut v = Vec::new();
        // One plan (it renders every kustomize target): the JSON, whose `warnings` carry the
        // duplicate and unread-file reports.
        let out = self
            .world
            .hookops(&["plan", "main", "--from", ZERO, "--json"]);
        if !out.ok() {
            v.push(viol(
                Check::Plan,
                "plan-runs",
                format!("plan --from 0000… fails: {}", out.all()),
            ));
            return v;
        }
        let plan: Value = match serde_json::from_str(&out.stdout) {
            Ok(p) => p,
            Err(e) => {
                v.push(viol(
                    Check::Plan,
                    "plan-runs",
                    format!("plan --json: {e}: {}", out.stdout),
                ));
                return v;
            }
        };
        let mut planned = plan_targets(&plan);
        // `plan` asks no cluster: a kind only the cluster knows has an unknown scope there
        // (namespace `*`), which is right for a plan.
        for id in &decl.scope_from_cluster {
            let star = id_key(&Id {
                namespace: Some("*".into()),
                ..id.clone()
            });
            for (_, objs) in planned.values_mut() {
                if let Some(src) = objs.remove(&star) {
                    objs.insert(id_key(id), src);
                }
            }
        }
        let expected: BTreeMap<String, String> = decl
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.kind.as_str().to_string()))
            .collect();
        let got: BTreeMap<String, String> = planned
            .iter()
            .map(|(n, (k, _))| (n.clone(), k.clone()))
            .collect();
        if got != expected {
            v.push(viol(
                Check::Plan,
                "D3",
                format!(
                    "targets differ (D3): the evaluator says {}; plan --from 0000… says {}",
                    show_map(&expected),
                    show_map(&got)
                ),
            ));
        }
        // Each target applies the objects whose winning declaration is its own (D7), from the
        // winner's file.
        let mut want: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (id, ds) in &decl.objects {
            let w = ds.last().unwrap();
            want.entry(w.target.clone())
                .or_default()
                .insert(id_key(id), w.file.clone());
        }
        for (name, (_, objs)) in &planned {
            if !expected.contains_key(name) {
                continue;
            }
            let w = want.remove(name).unwrap_or_default();
            let wk: BTreeSet<&String> = w.keys().collect();
            let ok: BTreeSet<&String> = objs.keys().collect();
            if wk != ok {
                let missing: Vec<_> = wk.difference(&ok).collect();
                let extra: Vec<_> = ok.difference(&wk).collect();
                v.push(viol(Check::Plan, "D7-apply", format!(
                    "target {name}: plan --from 0000… applies objects the evaluator does not give it, or misses some (D4-D7): extra {extra:?}, missing {missing:?}"
                )));
                continue;
            }
            let kind = &expected[name];
            for (k, file) in &w {
                let src = &objs[k];
                if kind == "kubectl" && !src.starts_with(&format!("{file}:")) {
                    v.push(viol(Check::Plan, "D7-source", format!(
                        "target {name}: {k} is applied from {src}, but the last declaration (D7) is in {file}"
                    )));
                }
            }
        }
        for (name, w) in want {
            if !w.is_empty() && got.contains_key(&name) {
                v.push(viol(
                    Check::Plan,
                    "D7-apply",
                    format!("target {name}: plan lists none of {:?}", w.keys()),
                ));
            }
        }
        // D7: every declaring file of a duplicate; D8: every unread file.
        let text = out.all();
        for id in decl.duplicates() {
            for d in &decl.objects[&id] {
                // A kustomize target's declaration is named by the target (its output has no
                // file of its own).
                let kustomize = expected.get(&d.target).map(String::as_str) == Some("kustomize");
                let named = text.contains(&d.file) || (kustomize && text.contains(&d.target));
                if !named {
                    v.push(viol(
                        Check::Plan,
                        "D7-warning",
                        format!(
                            "{id} is declared {} times, but plan does not name {} (D7)",
                            decl.objects[&id].len(),
                            d.file
                        ),
                    ));
                }
            }
        }
        for (f, why) in &decl.unread {
            if !decl.reported(f, &text) {
                v.push(viol(
                    Check::Plan,
                    "D8",
                    format!("{f}: {why}, but plan does not report it"),
                ));
            }
        }
        v
    }

    fn check_inventory(&self, decl: &Declared) -> Vec<Violation> {
        let inv = read_inventory(&self.world.server, "prod");
        let declaring: BTreeSet<String> = inv
            .iter()
            .filter(|(_, e)| e["by"].as_array().is_some_and(|b| !b.is_empty()))
            .map(|(k, _)| k.clone())
            .collect();
        let want: BTreeSet<String> = decl.objects.keys().map(id_key).collect();
        if declaring == want {
            return Vec::new();
        }
        let missing: Vec<_> = want.difference(&declaring).collect();
        let extra: Vec<_> = declaring.difference(&want).collect();
        vec![viol(Check::Inventory, "inventory", format!(
            "the inventory's declared identities differ from the tree's: extra {extra:?}, missing {missing:?}"
        ))]
    }

    pub fn finish(self) {
        if let Backend::Cluster(c) = self.backend {
            live::clean_cluster(c, &self.names, &self.world.kubeconfig);
        }
    }
}

/// `HOOKOPS_ORACLE_VERBOSE=1`: where each push's time goes.
fn verbose() -> bool {
    std::env::var_os("HOOKOPS_ORACLE_VERBOSE").is_some_and(|v| v != "0")
}

fn viol(check: Check, rule: &'static str, message: String) -> Violation {
    Violation {
        check,
        rule,
        message,
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn show_map(m: &BTreeMap<String, String>) -> String {
    let v: Vec<String> = m.iter().map(|(n, k)| format!("{n} ({k})")).collect();
    format!("[{}]", v.join(", "))
}

fn failures_text(d: &Declared) -> String {
    d.targets
        .iter()
        .flat_map(|t| t.failures.iter().cloned())
        .collect::<Vec<_>>()
        .join("; ")
}

fn eval_reasons(r: &Value) -> String {
    crate::util::reasons(r)
}

fn targets_of(rec: &Value) -> Vec<Value> {
    rec["targets"].as_array().cloned().unwrap_or_default()
}

/// The identity as the inventory spells it: `group|Kind|namespace|name`.
pub fn id_key(id: &Id) -> String {
    format!(
        "{}|{}|{}|{}",
        id.group,
        id.kind,
        id.namespace.as_deref().unwrap_or(""),
        id.name
    )
}

/// (name → (type, identity → source)) from `plan --json`.
fn plan_targets(plan: &Value) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    for t in plan["targets"].as_array().cloned().unwrap_or_default() {
        let name = t["name"].as_str().unwrap_or("").to_string();
        let kind = t["type"].as_str().unwrap_or("").to_string();
        let mut objs = BTreeMap::new();
        for o in t["apply"].as_array().cloned().unwrap_or_default() {
            objs.insert(
                plan_object_key(&o),
                o["source"].as_str().unwrap_or("").to_string(),
            );
        }
        out.insert(name, (kind, objs));
    }
    out
}

fn plan_object_key(o: &Value) -> String {
    let av = o["apiVersion"].as_str().unwrap_or("");
    format!(
        "{}|{}|{}|{}",
        o["group"].as_str().unwrap_or(eval::group_of(av)),
        o["kind"].as_str().unwrap_or(""),
        o["namespace"].as_str().unwrap_or(""),
        o["name"].as_str().unwrap_or("")
    )
}

/// The inventory's `objects/` entries: identity key → entry.
pub fn read_inventory(server: &Path, env: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Ok(repo) = git2::Repository::open_bare(server) else {
        return out;
    };
    let Ok(tree) = repo
        .revparse_single(&format!("refs/hookops/inventory/{env}"))
        .and_then(|o| o.peel_to_tree())
    else {
        return out;
    };
    let Ok(objects) = tree
        .get_path(Path::new("objects"))
        .and_then(|e| e.to_object(&repo))
    else {
        return out;
    };
    let Some(objects) = objects.as_tree() else {
        return out;
    };
    let _ = objects.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if let Ok(blob) = entry.to_object(&repo).and_then(|o| o.peel_to_blob()) {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(blob.content()) {
                out.extend(m);
            }
        }
        git2::TreeWalkResult::Ok
    });
    out
}

/// Counts: recorded per target = what the server did, and printed = recorded.
fn check_counts(
    rec: &Value,
    writes: &[live::Write],
    decl: &Declared,
    pushed: &str,
) -> Vec<Violation> {
    let mut v = Vec::new();
    let ok = |s: u16| (200..300).contains(&s);
    // Objects the server accepted (an object applied twice, by a shared kubectl call and again
    // alone after it failed, is one object applied).
    let mut applied: Vec<&live::Write> =
        writes.iter().filter(|w| w.apply && ok(w.status)).collect();
    applied.sort_by(|a, b| a.id.cmp(&b.id));
    applied.dedup_by(|a, b| a.id == b.id);
    let pruned: BTreeSet<&Id> = writes
        .iter()
        .filter(|w| w.method == "DELETE" && ok(w.status))
        .map(|w| &w.id)
        .collect();
    let targets = targets_of(rec);
    let rec_applied: u64 = targets
        .iter()
        .map(|t| t["applied"].as_u64().unwrap_or(0))
        .sum();
    let rec_pruned: u64 = targets
        .iter()
        .map(|t| t["pruned"].as_u64().unwrap_or(0))
        .sum();
    if rec_applied != applied.len() as u64 {
        v.push(viol(Check::Counts, "D10-applied", format!(
            "recorded applied {rec_applied} in all, but the server accepted applies of {} objects: {:?}",
            applied.len(),
            applied.iter().map(|w| w.id.to_string()).collect::<Vec<_>>()
        )));
    }
    if rec_pruned != pruned.len() as u64 {
        let all_deletes: Vec<String> = writes
            .iter()
            .filter(|w| w.method == "DELETE")
            .map(|w| format!("{} -> {}", w.id, w.status))
            .collect();
        v.push(viol(Check::Counts, "D10-pruned", format!(
            "recorded pruned {rec_pruned} in all, but {} objects were deleted: DELETEs {all_deletes:?}",
            pruned.len()
        )));
    }
    // Per target: an applied object belongs to the target of its winning declaration (D7).
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for w in &applied {
        match decl.winner(&w.id) {
            Some(d) => *per.entry(d.target.clone()).or_default() += 1,
            None => v.push(viol(
                Check::Counts,
                "applied-undeclared",
                format!(
                    "{} was applied, but the pushed tree does not declare it",
                    w.id
                ),
            )),
        }
    }
    for t in &targets {
        let name = t["name"].as_str().unwrap_or("");
        let a = t["applied"].as_u64().unwrap_or(0);
        let want = per.get(name).copied().unwrap_or(0);
        if a != want && rec_applied == applied.len() as u64 {
            v.push(viol(Check::Counts, "D7-applier", format!(
                "target {name}: recorded applied {a}, but the server accepted {want} applies of objects it wins (D7)"
            )));
        }
        // Printed = recorded.
        if let Some(line) = printed_line(pushed, name) {
            let pa = number_after(&line, "applied ");
            let pp = number_after(&line, "pruned ").unwrap_or(0);
            if pa.is_some_and(|x| x != a) || pp != t["pruned"].as_u64().unwrap_or(0) {
                v.push(viol(
                    Check::Counts,
                    "printed",
                    format!(
                        "target {name}: printed `{}` but recorded applied {a}, pruned {}",
                        line.trim(),
                        t["pruned"]
                    ),
                ));
            }
        }
    }
    v
}

/// The pusher's summary line of a target: `hookops: prod: NAME  TYPE  applied …`.
fn printed_line(pushed: &str, name: &str) -> Option<String> {
    pushed
        .lines()
        .filter_map(|l| l.split_once("hookops: prod: ").map(|(_, r)| r))
        .find(|r| {
            r.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(' ') && (rest.contains(" applied ") || rest.contains(" pruned "))
            })
        })
        .map(str::to_string)
}

fn number_after(line: &str, word: &str) -> Option<u64> {
    let i = line.find(word)? + word.len();
    line[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The server against the evaluator. `healthy`: after a failed push, only identities
/// declared by healthy targets alone are checked.
fn check_state(
    decl: &Declared,
    live: &BTreeMap<Id, Value>,
    kept_seen: &BTreeSet<Id>,
    healthy: Option<&BTreeSet<String>>,
) -> Vec<Violation> {
    let mut v = Vec::new();
    for (id, ds) in &decl.objects {
        if decl.unknown_scope.contains(id) {
            continue;
        }
        if let Some(h) = healthy {
            if ds.iter().any(|d| !h.contains(&d.target)) {
                continue;
            }
        }
        let w = ds.last().unwrap();
        let Some(obj) = live.get(id) else {
            v.push(viol(
                Check::State,
                "D10-missing",
                format!(
                    "{id} is declared ({}), but the server does not have it",
                    decls_text(ds)
                ),
            ));
            continue;
        };
        let want = w.doc.pointer("/metadata/annotations/oracle.test~1v");
        let got = obj.pointer("/metadata/annotations/oracle.test~1v");
        if let Some(want) = want.filter(|w| Some(*w) != got) {
            v.push(viol(Check::State, "D7-content", format!(
                "{id}: the server has version {}, the winning declaration ({}:{}, last of {}) says {want} (D7)",
                got.map(|x| x.to_string()).unwrap_or("none".into()),
                w.file,
                w.line,
                decls_text(ds),
            )));
        } else if id.kind == "ConfigMap"
            && id.group.is_empty()
            && w.doc.get("data") != obj.get("data")
        {
            v.push(viol(
                Check::State,
                "D7-content",
                format!(
                    "{id}: the server's data {} is not the winner's {} ({}:{}) (D7)",
                    obj.get("data").cloned().unwrap_or(Value::Null),
                    w.doc.get("data").cloned().unwrap_or(Value::Null),
                    w.file,
                    w.line
                ),
            ));
        }
    }
    if healthy.is_none() {
        for id in live.keys() {
            if !decl.objects.contains_key(id) && !kept_kind(id) {
                v.push(viol(Check::State, "D10-not-pruned", format!("{id} is on the server, but the tree no longer declares it (D10: not pruned)")));
            }
        }
    }
    for id in kept_seen {
        if !live.contains_key(id) {
            v.push(viol(
                Check::State,
                "D10-kept",
                format!("{id} was kept (Namespace, CRD or prune: disabled), but it is gone (D10)"),
            ));
        }
    }
    v
}

fn decls_text(ds: &[eval::Decl]) -> String {
    ds.iter()
        .map(|d| format!("{}:{} in {}", d.file, d.line, d.target))
        .collect::<Vec<_>>()
        .join(", ")
}

fn remove_empty_dirs(root: &Path) {
    fn walk(p: &Path) -> bool {
        let mut empty = true;
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if e.file_name().as_bytes() == b".git" {
                    empty = false;
                    continue;
                }
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if walk(&path) {
                        let _ = std::fs::remove_dir(&path);
                    } else {
                        empty = false;
                    }
                } else {
                    empty = false;
                }
            }
        }
        empty
    }
    walk(root);
}

/// A generated history and where it failed.
pub struct Outcome {
    pub names: Names,
    pub env_extra: String,
    pub trees: Vec<Tree>,
    /// What each step did, for the report.
    pub did: Vec<Vec<String>>,
    pub failure: Option<Failure>,
    pub pushes: usize,
}

/// Generates and runs one history of `pushes` pushes from `seed`, stopping at the first
/// failing push.
pub fn run_history(
    setup: &Setup,
    seed: u64,
    pushes: usize,
    without: &BTreeSet<String>,
) -> Option<Outcome> {
    let mut s = Session::new(setup, seed)?;
    let mut gen = s.gen(seed, without.clone());
    let mut trees = Vec::new();
    let mut did = Vec::new();
    let mut broken: Vec<PathBuf> = Vec::new();
    let mut prev = Tree::new();
    let mut failure = None;
    for step in 0..pushes {
        let (tree, ops) = gen.step(&prev, &broken);
        trees.push(tree.clone());
        did.push(ops);
        match s.push(step, &tree) {
            Ok(d) => {
                broken = d
                    .targets
                    .iter()
                    .flat_map(|t| t.broken_files.iter().cloned())
                    .collect();
            }
            Err(f) => {
                failure = Some(f);
                break;
            }
        }
        prev = tree;
    }
    let n = trees.len();
    let names = s.names.clone();
    let env_extra = s.env_extra.clone();
    s.finish();
    Some(Outcome {
        names,
        env_extra,
        trees,
        did,
        failure,
        pushes: n,
    })
}

/// Replays fixed snapshots in a fresh world; the first failure. Trees written for `names`
/// are renamed to the new world's names (they differ on the shared cluster).
pub fn replay_trees(setup: &Setup, names: &Names, trees: &[Tree]) -> Option<Failure> {
    let mut s = Session::new(setup, 0)?;
    let mut out = None;
    for (i, t) in trees.iter().enumerate() {
        let t = rename(t, &names.prefix, &s.names.prefix);
        if let Err(f) = s.push(i, &t) {
            out = Some(f);
            break;
        }
    }
    s.finish();
    out
}

/// Shrinks a failing history while a push still fails the same (check, rule), within
/// `budget`: first a guess (only the files the failure names, and every kustomization), then
/// delta debugging over steps, directories and files (from every step at once), then steps
/// again.
pub fn shrink(
    setup: &Setup,
    names: &Names,
    trees: &[Tree],
    failure: &Failure,
    budget: Duration,
) -> (Vec<Tree>, Failure) {
    let deadline = Instant::now() + budget;
    let want = failure.first();
    let still = |cand: &[(usize, Tree)]| -> Option<Failure> {
        if cand.is_empty() || Instant::now() >= deadline {
            return None;
        }
        let plain: Vec<Tree> = cand.iter().map(|(_, t)| t.clone()).collect();
        replay_trees(setup, names, &plain).filter(|f| f.signatures().contains(&want))
    };
    let mut best: Vec<(usize, Tree)> = trees[..=failure.step].iter().cloned().enumerate().collect();
    let mut best_f = failure.clone();
    let mut take =
        |cand: Vec<(usize, Tree)>, best: &mut Vec<(usize, Tree)>, best_f: &mut Failure| -> bool {
            if cand == *best {
                return false;
            }
            match still(&cand) {
                Some(f) => {
                    *best = cand[..=f.step].to_vec();
                    *best_f = f;
                    true
                }
                None => false,
            }
        };

    // The guess: the last tree, cut to what the failure names.
    let text: String = failure
        .violations
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mentioned: BTreeSet<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with(&format!("{}-", names.prefix)))
        .map(str::to_string)
        .collect();
    let relevant = |p: &Path, b: &Blob| {
        let shown = p.to_string_lossy();
        p.file_name().is_some_and(|n| n == "kustomization.yaml")
            || text.contains(shown.as_ref())
            || match b {
                Blob::Text(t) => {
                    let t = String::from_utf8_lossy(t);
                    mentioned.iter().any(|m| t.contains(m.as_str()))
                }
                Blob::Big(_) => true,
            }
    };
    let cut = |t: &Tree| -> Tree {
        t.iter()
            .filter(|(p, b)| relevant(p, b))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect()
    };
    let last = best.len() - 1;
    let guesses = [
        best.iter().map(|(i, t)| (*i, cut(t))).collect::<Vec<_>>(),
        vec![(best[last].0, best[last].1.clone())],
    ];
    for g in guesses {
        take(g, &mut best, &mut best_f);
    }

    // Steps, directories, files.
    let steps: Vec<usize> = best.iter().map(|(i, _)| *i).collect();
    ddmin(steps, &mut best, &mut best_f, &mut take, &|b, drop| {
        b.iter()
            .filter(|(i, _)| !drop.contains(i))
            .cloned()
            .collect()
    });
    let dirs: Vec<PathBuf> = best
        .iter()
        .flat_map(|(_, t)| t.keys().filter_map(|p| p.parent().map(Path::to_path_buf)))
        .filter(|d| !d.as_os_str().is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ddmin(dirs, &mut best, &mut best_f, &mut take, &|b, drop| {
        b.iter()
            .map(|(i, t)| {
                (
                    *i,
                    t.iter()
                        .filter(|(p, _)| !drop.iter().any(|d| p.starts_with(d)))
                        .map(|(p, x)| (p.clone(), x.clone()))
                        .collect(),
                )
            })
            .collect()
    });
    let files: Vec<PathBuf> = best
        .iter()
        .flat_map(|(_, t)| t.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ddmin(files, &mut best, &mut best_f, &mut take, &|b, drop| {
        b.iter()
            .map(|(i, t)| {
                (
                    *i,
                    t.iter()
                        .filter(|(p, _)| !drop.contains(p))
                        .map(|(p, x)| (p.clone(), x.clone()))
                        .collect(),
                )
            })
            .collect()
    });
    let steps: Vec<usize> = best.iter().map(|(i, _)| *i).collect();
    ddmin(steps, &mut best, &mut best_f, &mut take, &|b, drop| {
        b.iter()
            .filter(|(i, _)| !drop.contains(i))
            .cloned()
            .collect()
    });
    (best.into_iter().map(|(_, t)| t).collect(), best_f)
}

type Steps = Vec<(usize, Tree)>;

/// Delta debugging: drops chunks of `units` (halving the chunk size) while `take` accepts the
/// history `make` builds without them.
fn ddmin<T: Clone>(
    mut units: Vec<T>,
    best: &mut Steps,
    best_f: &mut Failure,
    take: &mut dyn FnMut(Steps, &mut Steps, &mut Failure) -> bool,
    make: &dyn Fn(&Steps, &[T]) -> Steps,
) {
    let mut chunk = units.len().div_ceil(2).max(1);
    while !units.is_empty() {
        let mut i = 0;
        while i < units.len() {
            let end = (i + chunk).min(units.len());
            let cand = make(best, &units[i..end]);
            if take(cand, best, best_f) {
                units.drain(i..end);
            } else {
                i = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// `tree` with the name prefix `from` replaced by `to` in paths and contents.
fn rename(tree: &Tree, from: &str, to: &str) -> Tree {
    if from == to {
        return tree.clone();
    }
    let swap = |b: &[u8]| -> Vec<u8> {
        let b = replace_bytes(
            b,
            format!("{from}-").as_bytes(),
            format!("{to}-").as_bytes(),
        );
        replace_bytes(
            &b,
            format!("{from}.oracle").as_bytes(),
            format!("{to}.oracle").as_bytes(),
        )
    };
    tree.iter()
        .map(|(p, b)| {
            let p = PathBuf::from(
                std::ffi::OsStr::from_bytes(&swap(p.as_os_str().as_bytes())).to_os_string(),
            );
            let b = match b {
                Blob::Text(t) => Blob::Text(swap(t)),
                Blob::Big(h) => {
                    Blob::Big(String::from_utf8_lossy(&swap(h.as_bytes())).into_owned())
                }
            };
            (p, b)
        })
        .collect()
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
