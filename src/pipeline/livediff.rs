//! Live against declared: what applying a set of declared objects (and deleting a set of
//! prunes) would change in a cluster, object by object, with a unified diff of each, like
//! `flux diff` and `argocd app diff`. `drift` shows it for the deployed commit; the push-time
//! diff (the gate, `hookops diff REF`) feeds it a commit not yet deployed.
//!
//! One `kubectl diff --server-side` per group of targets that share a namespace setting (the
//! server computes the merge, managed fields are left out and Secret values masked by kubectl),
//! falling back to one call per target when a shared call fails so that a failure is its own
//! target's; one `kubectl get` for every prune. Unchanged objects cost no output: they are
//! the declared objects kubectl diff did not name.
//!
//! The push-time diff has a time budget (`diff_until`): a call still running at the deadline
//! is stopped and its objects are left "not compared" (`Change::Apply`, prunes without a
//! diff), and `render` prints a kapp-style change table and the diffs within caps per object
//! and per push, each cut saying how much more there was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::backends::kube::Kubectl;
use crate::backends::process::{Deadline, Output, KILLED_AT_DEADLINE};
use crate::pipeline::manifest::{self, Object, ObjectId};

/// What one target declares: the objects it would apply, the ones it would delete.
pub struct Declared<'a> {
    pub target: &'a str,
    /// The target's `namespace` setting (kubectl's `--namespace`).
    pub namespace: Option<&'a str>,
    pub objects: &'a [Object],
    /// Objects to delete, with the apiVersion to name them by.
    pub prune: &'a [(ObjectId, String)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Create,
    Update,
    Prune,
    /// Applied, not compared with the live object (no cluster asked, or no time left).
    Apply,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Prune => "prune",
            Change::Apply => "apply",
            Change::Unchanged => "unchanged",
        }
    }
}

/// One object: how applying the declared objects would change it, and how.
#[derive(Debug, Clone)]
pub struct ObjectDiff {
    pub id: ObjectId,
    /// `file:line` of the declaration (none for a prune).
    pub source: Option<String>,
    pub change: Change,
    /// A unified diff, live (`---`) against declared (`+++`), Secret values masked; empty
    /// when unchanged or not compared.
    pub diff: String,
    /// Whether the live object was looked at (false: `Apply`, or a prune past the budget).
    pub compared: bool,
}

impl ObjectDiff {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "change": self.change.as_str(),
            "group": self.id.group,
            "kind": self.id.kind,
            "namespace": self.id.namespace,
            "name": self.id.name,
            "source": self.source,
            "diff": self.diff,
            "compared": self.compared,
        })
    }

    fn not_compared(o: &Object) -> ObjectDiff {
        ObjectDiff {
            id: o.id.clone(),
            source: Some(o.source.clone()),
            change: Change::Apply,
            diff: String::new(),
            compared: false,
        }
    }
}

/// Every object `targets` apply or prune, not compared with anything: what a push would do
/// when no cluster is asked (the gate in mode "local").
pub fn uncompared(targets: &[Declared]) -> Vec<Vec<ObjectDiff>> {
    targets
        .iter()
        .map(|t| {
            let mut v: Vec<ObjectDiff> = t.objects.iter().map(ObjectDiff::not_compared).collect();
            v.extend(t.prune.iter().map(|(id, _)| pruned_unseen(id)));
            v
        })
        .collect()
}

fn pruned_unseen(id: &ObjectId) -> ObjectDiff {
    ObjectDiff {
        id: id.clone(),
        source: None,
        change: Change::Prune,
        diff: String::new(),
        compared: false,
    }
}

/// Each object of each of `targets`, in their order (declared objects, then prunes that still
/// exist), with its change: a target's own error stays its own.
pub fn diff(kubectl: &Kubectl, targets: &[Declared]) -> Vec<Result<Vec<ObjectDiff>>> {
    diff_until(kubectl, targets, None).0
}

/// A kubectl call's outcome within the budget.
enum Call<T> {
    Done(Result<T>),
    /// The deadline passed before or while it ran.
    OutOfTime,
}

/// Runs `call` with `deadline` unless it has passed already; a call killed at the deadline is
/// out of time, not an error.
fn within<T>(
    deadline: Option<Instant>,
    call: impl FnOnce(Option<Deadline>) -> Result<Output>,
    then: impl FnOnce(Output) -> Result<T>,
) -> Call<T> {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Call::OutOfTime;
    }
    let limit: Option<Deadline> = deadline.map(|d| Arc::new(move || Some(d)) as Deadline);
    match call(limit) {
        Ok(out) if out.code.is_none() && out.stderr.ends_with(KILLED_AT_DEADLINE) => {
            Call::OutOfTime
        }
        Ok(out) => Call::Done(then(out)),
        Err(e) => Call::Done(Err(e)),
    }
}

/// `diff` with a deadline (None: none): whatever is not compared when it passes is reported
/// as such (`Change::Apply`, prunes without a diff). The second value: whether it passed.
pub fn diff_until(
    kubectl: &Kubectl,
    targets: &[Declared],
    deadline: Option<Instant>,
) -> (Vec<Result<Vec<ObjectDiff>>>, bool) {
    let mut out_of_time = false;
    let new = Foundations::of(targets.iter().flat_map(|t| t.objects.iter()));
    let mut results: Vec<Option<Result<Vec<ObjectDiff>>>> = targets.iter().map(|_| None).collect();
    // Targets with the same namespace setting share one kubectl diff.
    let mut groups: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        if !t.objects.is_empty() {
            groups.entry(t.namespace).or_default().push(i);
        }
    }
    for (namespace, members) in groups {
        let objects: Vec<&Object> = members
            .iter()
            .flat_map(|&i| targets[i].objects.iter())
            .collect();
        // Objects the budget left out: every declared object of the target, not compared.
        let uncompared = |i: usize| {
            Some(Ok(targets[i]
                .objects
                .iter()
                .map(ObjectDiff::not_compared)
                .collect()))
        };
        match kubectl_diff(kubectl, &objects, namespace, deadline, &new) {
            Call::Done(Ok(found)) => {
                for &i in &members {
                    let mine = found
                        .iter()
                        .filter(|d| targets[i].objects.iter().any(|o| o.id == d.id))
                        .cloned()
                        .collect();
                    results[i] = Some(Ok(mine));
                }
            }
            Call::Done(Err(e)) if members.len() == 1 => results[members[0]] = Some(Err(e)),
            Call::Done(Err(_)) => {
                for &i in &members {
                    let own: Vec<&Object> = targets[i].objects.iter().collect();
                    results[i] = match kubectl_diff(kubectl, &own, namespace, deadline, &new) {
                        Call::Done(r) => Some(r),
                        Call::OutOfTime => {
                            out_of_time = true;
                            uncompared(i)
                        }
                    };
                }
            }
            Call::OutOfTime => {
                out_of_time = true;
                for &i in &members {
                    results[i] = uncompared(i);
                }
            }
        }
    }
    let prunes: Vec<&(ObjectId, String)> = targets.iter().flat_map(|t| t.prune.iter()).collect();
    // None: out of time, every prune listed without a look at it.
    let live = if prunes.is_empty() {
        Some(Ok(Vec::new()))
    } else {
        match live_objects(kubectl, &prunes, deadline) {
            Call::Done(r) => Some(r),
            Call::OutOfTime => {
                out_of_time = true;
                None
            }
        }
    };
    let results = targets
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let mut found = r.unwrap_or_else(|| Ok(Vec::new()))?;
            for o in t.objects {
                if !found.iter().any(|d| d.id == o.id) {
                    found.push(ObjectDiff {
                        id: o.id.clone(),
                        source: Some(o.source.clone()),
                        change: Change::Unchanged,
                        diff: String::new(),
                        compared: true,
                    });
                }
            }
            if t.prune.is_empty() {
                return Ok(found);
            }
            let Some(live) = &live else {
                found.extend(t.prune.iter().map(|(id, _)| pruned_unseen(id)));
                return Ok(found);
            };
            let live = live.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            for (id, body) in live {
                if t.prune.iter().any(|(p, _)| p == id) {
                    found.push(ObjectDiff {
                        id: id.clone(),
                        source: None,
                        change: Change::Prune,
                        diff: removal(id, body),
                        compared: true,
                    });
                }
            }
            Ok(found)
        })
        .collect();
    (results, out_of_time)
}

/// The name kubectl diff gives an object's files: `[group.]version.kind.namespace.name`.
fn diff_name(o: &Object) -> String {
    let version = o.api_version.rsplit('/').next().unwrap_or(&o.api_version);
    let group = if o.id.group.is_empty() {
        String::new()
    } else {
        format!("{}.", o.id.group)
    };
    format!(
        "{group}{version}.{}.{}.{}",
        o.id.kind,
        o.id.namespace.as_deref().unwrap_or(""),
        o.id.name
    )
}

/// What the push itself creates that a dry run of the rest depends on: the namespaces and the
/// kinds (`group/kind`, of CRDs) it declares.
#[derive(Default)]
struct Foundations {
    namespaces: Vec<String>,
    kinds: Vec<String>,
}

impl Foundations {
    fn of<'a>(objects: impl Iterator<Item = &'a Object>) -> Foundations {
        let mut f = Foundations::default();
        for o in objects {
            if o.id.group.is_empty() && o.id.kind == "Namespace" {
                f.namespaces.push(o.id.name.clone());
            }
            if let Some((kind, _)) = crate::pipeline::identity::crd_scope(o) {
                f.kinds.push(kind);
            }
        }
        f
    }
}

/// `kubectl diff` of `objects`. The server refuses even a dry run in a namespace that does not
/// exist yet, or of a kind whose CRD it does not serve yet: the objects of a namespace or kind
/// it names missing that the push itself creates (`new`) are left out of the call and shown as
/// created, whole. Any other refusal is the call's error.
fn kubectl_diff(
    kubectl: &Kubectl,
    objects: &[&Object],
    namespace: Option<&str>,
    deadline: Option<Instant>,
    new: &Foundations,
) -> Call<Vec<ObjectDiff>> {
    let mut namespaces: Vec<String> = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    let waits = |o: &Object, namespaces: &[String], kinds: &[String]| {
        o.id.namespace
            .as_ref()
            .is_some_and(|n| namespaces.contains(n))
            || kinds.contains(&crate::pipeline::kinds::kind_key(&o.id.group, &o.id.kind))
    };
    loop {
        let sent: Vec<&Object> = objects
            .iter()
            .copied()
            .filter(|o| !waits(o, &namespaces, &kinds))
            .collect();
        let out = if sent.is_empty() {
            None
        } else {
            let call = within(
                deadline,
                |limit| kubectl.diff(manifest::to_stream(sent.iter().copied()), namespace, limit),
                Ok,
            );
            match call {
                Call::Done(Ok(out)) => Some(out),
                Call::Done(Err(e)) => return Call::Done(Err(e)),
                Call::OutOfTime => return Call::OutOfTime,
            }
        };
        let mut found = match out {
            None => Vec::new(),
            Some(out) if out.code == Some(0) => Vec::new(),
            Some(out) if out.code == Some(1) => parse(&out.stdout, &sent),
            Some(out) => {
                let more_ns: Vec<String> =
                    named_missing(&out.stderr, "namespaces \"", "\" not found")
                        .into_iter()
                        .filter(|n| new.namespaces.contains(n) && !namespaces.contains(n))
                        .collect();
                let more_kinds: Vec<String> = unmatched_kinds(&out.stderr)
                    .into_iter()
                    .filter(|k| new.kinds.contains(k) && !kinds.contains(k))
                    .collect();
                if more_ns.is_empty() && more_kinds.is_empty() {
                    return Call::Done(Err(anyhow::anyhow!("kubectl diff: {}", out.reason())));
                }
                namespaces.extend(more_ns);
                kinds.extend(more_kinds);
                continue;
            }
        };
        found.extend(
            objects
                .iter()
                .filter(|o| waits(o, &namespaces, &kinds))
                .map(|o| creation(o)),
        );
        return Call::Done(Ok(found));
    }
}

/// The names an error message quotes between `before` and `after` (`namespaces "web" not
/// found`).
fn named_missing(stderr: &str, before: &str, after: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = stderr;
    while let Some(at) = rest.find(before) {
        rest = &rest[at + before.len()..];
        let Some(end) = rest.find('"') else { break };
        let name = &rest[..end];
        if rest[end..].starts_with(after) && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &rest[end..];
    }
    out
}

/// The kinds kubectl could not map (`no matches for kind "Widget" in version "ex.com/v1"`), as
/// `group/kind`.
fn unmatched_kinds(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = stderr;
    while let Some(at) = rest.find("no matches for kind \"") {
        rest = &rest[at + "no matches for kind \"".len()..];
        let Some(end) = rest.find('"') else { break };
        let kind = &rest[..end];
        rest = &rest[end..];
        let Some(v) = rest.strip_prefix("\" in version \"") else {
            continue;
        };
        let Some(vend) = v.find('"') else { break };
        let key =
            crate::pipeline::kinds::kind_key(crate::pipeline::kinds::group_of(&v[..vend]), kind);
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// An object that does not exist yet: every line of its declared YAML added (Secret values
/// masked, as kubectl diff masks them).
fn creation(o: &Object) -> ObjectDiff {
    let mut body = o.body.clone();
    clean(&mut body);
    let yaml = serde_yaml_ng::to_string(&body).unwrap_or_else(|_| body.to_string());
    let lines: Vec<&str> = yaml.lines().collect();
    let mut diff = format!(
        "--- live {} (none)\n+++ declared {}\n@@ -0,0 +1,{} @@\n",
        o.id,
        o.source,
        lines.len()
    );
    for l in lines {
        diff.push('+');
        diff.push_str(l);
        diff.push('\n');
    }
    ObjectDiff {
        id: o.id.clone(),
        source: Some(o.source.clone()),
        change: Change::Create,
        diff,
        compared: true,
    }
}

/// Splits `diff -u -N` output into objects, naming each from the declared objects, with
/// headers that say live and declared instead of kubectl's temporary paths.
fn parse(text: &str, objects: &[&Object]) -> Vec<ObjectDiff> {
    let by_name: BTreeMap<String, &Object> = objects.iter().map(|o| (diff_name(o), *o)).collect();
    let mut out: Vec<ObjectDiff> = Vec::new();
    let mut current: Option<ObjectDiff> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("diff ") {
            out.extend(current.take());
            let file = rest
                .split_whitespace()
                .find(|w| w.contains('/'))
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or(rest);
            let (id, source) = match by_name.get(file) {
                Some(o) => (o.id.clone(), Some(o.source.clone())),
                None => (
                    ObjectId {
                        group: String::new(),
                        kind: "object".into(),
                        namespace: None,
                        name: file.to_string(),
                    },
                    None,
                ),
            };
            let diff = format!(
                "--- live {id}\n+++ declared {}\n",
                source.as_deref().unwrap_or("(git)")
            );
            current = Some(ObjectDiff {
                id,
                source,
                change: Change::Update,
                diff,
                compared: true,
            });
            continue;
        }
        let Some(d) = current.as_mut() else { continue };
        if line.starts_with("--- ") || line.starts_with("+++ ") {
            continue;
        }
        if line.starts_with("@@ -0,0 ") {
            d.change = Change::Create;
        }
        d.diff.push_str(line);
        d.diff.push('\n');
    }
    out.extend(current);
    for d in &mut out {
        // The server's dry run of a creation adds its uid, timestamps, defaults and status:
        // what the push declares says more, and reads the same whether or not the object
        // could be sent.
        if d.change == Change::Create {
            if let Some(o) = objects.iter().find(|o| o.id == d.id) {
                d.diff = creation(o).diff;
                continue;
            }
        }
        d.diff = without_generation(&d.diff);
        if !d
            .diff
            .lines()
            .any(|l| l.starts_with(['-', '+']) && !l.starts_with("--- ") && !l.starts_with("+++ "))
        {
            d.change = Change::Unchanged;
            d.diff.clear();
        }
    }
    out.retain(|d| d.change != Change::Unchanged);
    out
}

/// A diff without the server's `metadata.generation` bump (every spec change makes one, so it
/// says nothing): those lines go, a hunk left with no change goes, and the counts of the others
/// are made right again (their line numbers stay: they count the files as they are).
fn without_generation(diff: &str) -> String {
    let bump = |l: &str| {
        l.strip_prefix(['-', '+'])
            .and_then(|r| r.strip_prefix("  generation: "))
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    };
    if !diff.lines().any(bump) {
        return diff.to_string();
    }
    let mut out = String::new();
    let mut hunk: Option<(String, Vec<&str>)> = None;
    let flush = |out: &mut String, hunk: Option<(String, Vec<&str>)>| {
        let Some((header, lines)) = hunk else { return };
        if !lines.iter().any(|l| l.starts_with(['-', '+'])) {
            return;
        }
        let old = lines.iter().filter(|l| !l.starts_with('+')).count();
        let new = lines.iter().filter(|l| !l.starts_with('-')).count();
        out.push_str(&recount(&header, old, new));
        out.push('\n');
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in diff.lines() {
        if line.starts_with("@@ ") {
            flush(&mut out, hunk.take());
            hunk = Some((line.to_string(), Vec::new()));
        } else if let Some((_, lines)) = hunk.as_mut() {
            if !bump(line) {
                lines.push(line);
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    flush(&mut out, hunk);
    out
}

/// `@@ -a,b +c,d @@` with new counts.
fn recount(header: &str, old: usize, new: usize) -> String {
    let mut parts = header.split_whitespace();
    let (Some("@@"), Some(minus), Some(plus)) = (parts.next(), parts.next(), parts.next()) else {
        return header.to_string();
    };
    let start = |p: &str| p.split(',').next().unwrap_or(p).to_string();
    format!("@@ {},{old} {},{new} @@", start(minus), start(plus))
}

/// The live objects among `ids` (those that exist), each without its status and managed
/// fields: one `kubectl get`.
fn live_objects(
    kubectl: &Kubectl,
    ids: &[&(ObjectId, String)],
    deadline: Option<Instant>,
) -> Call<Vec<(ObjectId, Value)>> {
    within(
        deadline,
        |limit| kubectl.get_stream(manifest::stubs_stream(ids.iter().copied()), limit),
        |out| live_from(&out, ids),
    )
}

fn live_from(out: &Output, ids: &[&(ObjectId, String)]) -> Result<Vec<(ObjectId, Value)>> {
    if !out.success() {
        bail!("kubectl get: {}", out.reason());
    }
    if out.stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(&out.stdout)?;
    let items = match value.get("items").and_then(Value::as_array) {
        Some(items) if value["kind"] == "List" => items.clone(),
        _ => vec![value],
    };
    Ok(items
        .into_iter()
        .filter_map(|mut body| {
            let name = body["metadata"]["name"].as_str()?.to_string();
            let kind = body["kind"].as_str()?.to_string();
            let namespace = body["metadata"]["namespace"].as_str().map(str::to_string);
            let (id, _) = ids
                .iter()
                .find(|(id, _)| id.kind == kind && id.name == name && id.namespace == namespace)?;
            clean(&mut body);
            Some((id.clone(), body))
        })
        .collect())
}

/// What a diff should not show: status, managed fields, server bookkeeping, Secret values.
fn clean(body: &mut Value) {
    if let Some(o) = body.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = body["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    if body["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(values) = body[field].as_object_mut() {
                for v in values.values_mut() {
                    *v = Value::String("***".into());
                }
            }
        }
    }
}

/// An object going away: every line of its YAML removed.
fn removal(id: &ObjectId, body: &Value) -> String {
    let yaml = serde_yaml_ng::to_string(body).unwrap_or_else(|_| body.to_string());
    let lines: Vec<&str> = yaml.lines().collect();
    let mut s = format!(
        "--- live {id}\n+++ declared (no longer in git)\n@@ -1,{} +0,0 @@\n",
        lines.len()
    );
    for l in lines {
        s.push('-');
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// How much of a push's diff is printed: rows of the change table, lines of one object's
/// diff, lines of all diffs (per push, across its environments).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub rows: usize,
    pub object_lines: usize,
    pub lines: usize,
}

/// One target's part of a diff.
pub struct Section<'a> {
    pub target: &'a str,
    /// Its objects' changes, or why they could not be compared.
    pub objects: std::result::Result<&'a [ObjectDiff], String>,
    /// A Terraform root: its plan's summary line (or why there is none).
    pub summary: Option<String>,
}

/// Prints diffs within `Caps` shared by everything it prints (the environments of one push):
/// a kapp-style change table (op, kind, namespace, name, target), changes first, then the
/// unified diffs of what changes. Every cut says what it left out, and which setting to raise.
pub struct Printer {
    caps: Caps,
    rows_left: usize,
    lines_left: usize,
}

impl Printer {
    pub fn new(caps: Caps) -> Printer {
        Printer {
            caps,
            rows_left: caps.rows,
            lines_left: caps.lines,
        }
    }

    /// The lines (without a prefix) of one environment's sections.
    pub fn render(&mut self, sections: &[Section]) -> Vec<String> {
        let mut rows: Vec<(&str, &ObjectDiff)> = sections
            .iter()
            .filter_map(|s| s.objects.as_ref().ok().map(|o| (s.target, *o)))
            .flat_map(|(t, objects)| objects.iter().map(move |o| (t, o)))
            .collect();
        // Changes first (create, update, prune, not compared), unchanged last; stable within.
        rows.sort_by_key(|(_, o)| o.change);
        let mut out = Vec::new();
        if !rows.is_empty() {
            out.extend(self.table(&rows));
        }
        for s in sections {
            if let Err(why) = &s.objects {
                out.push(format!(
                    "target {}: not compared: {why}",
                    printable(s.target)
                ));
            }
            if let Some(summary) = &s.summary {
                out.push(format!(
                    "Terraform root {}: {}",
                    printable(s.target),
                    printable(summary)
                ));
            }
        }
        let with_diff: Vec<&ObjectDiff> = rows
            .iter()
            .map(|(_, o)| *o)
            .filter(|o| !o.diff.is_empty())
            .collect();
        for (i, o) in with_diff.iter().enumerate() {
            if self.lines_left == 0 {
                out.push(format!(
                    "… the diffs of {} more object{} not shown ([gate] diff_lines = {})",
                    with_diff.len() - i,
                    plural(with_diff.len() - i),
                    self.caps.lines
                ));
                break;
            }
            let lines: Vec<&str> = o.diff.lines().collect();
            let room = self.caps.object_lines.min(self.lines_left);
            let shown = lines.len().min(room);
            out.extend(lines[..shown].iter().map(|l| printable(l)));
            self.lines_left -= shown;
            if shown < lines.len() {
                let cap = if room == self.caps.object_lines {
                    format!("[gate] diff_lines_per_object = {}", self.caps.object_lines)
                } else {
                    format!("[gate] diff_lines = {}", self.caps.lines)
                };
                out.push(format!(
                    "… {} more line{} of this diff ({cap})",
                    lines.len() - shown,
                    plural(lines.len() - shown)
                ));
            }
        }
        out
    }

    fn table(&mut self, rows: &[(&str, &ObjectDiff)]) -> Vec<String> {
        let shown = rows.len().min(self.rows_left);
        self.rows_left -= shown;
        let cells: Vec<[String; 5]> = rows[..shown]
            .iter()
            .map(|(t, o)| {
                [
                    o.change.as_str().to_string(),
                    printable(&o.id.kind),
                    o.id.namespace
                        .as_deref()
                        .map_or_else(|| "(cluster)".to_string(), printable),
                    printable(&o.id.name),
                    printable(t),
                ]
            })
            .collect();
        let header = ["Op", "Kind", "Namespace", "Name", "Target"];
        let widths: Vec<usize> = (0..5)
            .map(|c| {
                crate::out::column_width(cells.iter().map(|r| r[c].as_str()).chain([header[c]]))
            })
            .collect();
        let line = |r: [&str; 5]| {
            let mut l = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c == 4 {
                    l.push_str(cell);
                } else {
                    l.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                }
            }
            l.trim_end().to_string()
        };
        let mut out = Vec::new();
        if shown > 0 {
            out.push(line(header));
        }
        for r in &cells {
            out.push(line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
        if shown < rows.len() {
            let unchanged = rows[shown..]
                .iter()
                .filter(|(_, o)| o.change == Change::Unchanged)
                .count();
            out.push(format!(
                "… {} more object{} ({unchanged} unchanged) not listed ([gate] table_rows = {})",
                rows.len() - shown,
                plural(rows.len() - shown),
                self.caps.rows
            ));
        }
        let mut counts: Vec<String> = Vec::new();
        for c in [
            Change::Create,
            Change::Update,
            Change::Prune,
            Change::Apply,
            Change::Unchanged,
        ] {
            let n = rows.iter().filter(|(_, o)| o.change == c).count();
            if n > 0 || c != Change::Apply {
                counts.push(format!("{n} {}", c.as_str()));
            }
        }
        out.push(format!("Op: {}", counts.join(", ")));
        out
    }
}

fn printable(s: &str) -> String {
    crate::out::clean_line(s).into_owned()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Object {
        Object {
            id: ObjectId {
                group: api_version
                    .rsplit_once('/')
                    .map(|(g, _)| g.to_string())
                    .unwrap_or_default(),
                kind: kind.into(),
                namespace: ns.map(str::to_string),
                name: name.into(),
            },
            api_version: api_version.into(),
            body: Value::Null,
            source: format!("k8s/{name}.yaml:1"),
            cluster: ns.is_none(),
        }
    }

    #[test]
    fn kubectl_diff_output_is_split_and_named_per_object() {
        let web = object("apps/v1", "Deployment", Some("web"), "web.v2");
        let mut ns = object("v1", "Namespace", None, "web");
        ns.body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}});
        let text = "diff -u -N /tmp/LIVE-1/apps.v1.Deployment.web.web.v2 /tmp/MERGED-2/apps.v1.Deployment.web.web.v2\n\
--- /tmp/LIVE-1/apps.v1.Deployment.web.web.v2\t2026-01-01\n\
+++ /tmp/MERGED-2/apps.v1.Deployment.web.web.v2\t2026-01-01\n\
@@ -5,1 +5,1 @@\n\
-  replicas: 2\n\
+  replicas: 3\n\
diff -u -N /tmp/LIVE-1/v1.Namespace..web /tmp/MERGED-2/v1.Namespace..web\n\
--- /tmp/LIVE-1/v1.Namespace..web\t1970-01-01\n\
+++ /tmp/MERGED-2/v1.Namespace..web\t2026-01-01\n\
@@ -0,0 +1,3 @@\n\
+apiVersion: v1\n\
+kind: Namespace\n";
        let found = parse(text, &[&web, &ns]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id, web.id);
        assert_eq!(found[0].change, Change::Update);
        assert_eq!(
            found[0].diff,
            "--- live Deployment.apps web/web.v2\n+++ declared k8s/web.v2.yaml:1\n@@ -5,1 +5,1 @@\n-  replicas: 2\n+  replicas: 3\n"
        );
        assert_eq!(found[1].id, ns.id);
        assert_eq!(found[1].change, Change::Create);
        assert_eq!(
            found[1].diff,
            "--- live Namespace web (none)\n+++ declared k8s/web.yaml:1\n@@ -0,0 +1,4 @@\n+apiVersion: v1\n+kind: Namespace\n+metadata:\n+  name: web\n"
        );
    }

    #[test]
    fn the_generation_bump_is_left_out_with_its_hunk() {
        let web = object("apps/v1", "Deployment", Some("web"), "web");
        let text = "diff -u -N /tmp/LIVE-1/apps.v1.Deployment.web.web /tmp/MERGED-2/apps.v1.Deployment.web.web\n\
--- /tmp/LIVE-1/apps.v1.Deployment.web.web\t2026-01-01\n\
+++ /tmp/MERGED-2/apps.v1.Deployment.web.web\t2026-01-01\n\
@@ -4,7 +4,7 @@\n  annotations:\n-  generation: 1\n+  generation: 2\n   name: web\n\
@@ -29,4 +29,5 @@\n   spec:\n-  - image: a\n+  - image: b\n+    x: 1\n-  generation: 3\n";
        let found = parse(text, &[&web]);
        assert_eq!(
            found[0].diff,
            "--- live Deployment.apps web/web\n+++ declared k8s/web.yaml:1\n@@ -29,2 +29,3 @@\n   spec:\n-  - image: a\n+  - image: b\n+    x: 1\n"
        );
        // Nothing but the bump: unchanged, not listed.
        let only = "diff -u -N /a/apps.v1.Deployment.web.web /b/apps.v1.Deployment.web.web\n@@ -4,2 +4,2 @@\n-  generation: 1\n+  generation: 2\n";
        assert!(parse(only, &[&web]).is_empty());
    }

    fn changed(name: &str, change: Change, lines: usize) -> ObjectDiff {
        let o = object("v1", "ConfigMap", Some("app"), name);
        let mut diff = format!("--- live {}\n+++ declared {}\n", o.id, o.source);
        for i in 0..lines.saturating_sub(2) {
            diff.push_str(&format!("+  k{i}: v\n"));
        }
        ObjectDiff {
            id: o.id,
            source: Some(o.source),
            change,
            diff: if change == Change::Unchanged {
                String::new()
            } else {
                diff
            },
            compared: true,
        }
    }

    #[test]
    fn the_table_puts_changes_first_and_every_cap_says_what_it_left_out() {
        let web = [
            changed("same", Change::Unchanged, 0),
            changed("b", Change::Update, 6),
            changed("a", Change::Create, 4),
        ];
        let api = [
            changed("c", Change::Prune, 4),
            changed("d", Change::Update, 4),
        ];
        let mut p = Printer::new(Caps {
            rows: 4,
            object_lines: 5,
            lines: 12,
        });
        let lines = p.render(&[
            Section {
                target: "web",
                objects: Ok(&web),
                summary: None,
            },
            Section {
                target: "api",
                objects: Ok(&api),
                summary: None,
            },
            Section {
                target: "infra",
                objects: Err("kubectl diff: refused".into()),
                summary: Some("Plan: 1 to add, 0 to change, 0 to destroy.".into()),
            },
        ]);
        let text = lines.join("\n");
        let expected = "\
Op      Kind       Namespace  Name  Target
create  ConfigMap  app        a     web
update  ConfigMap  app        b     web
update  ConfigMap  app        d     api
prune   ConfigMap  app        c     api
… 1 more object (1 unchanged) not listed ([gate] table_rows = 4)
Op: 1 create, 2 update, 1 prune, 1 unchanged
target infra: not compared: kubectl diff: refused
Terraform root infra: Plan: 1 to add, 0 to change, 0 to destroy.
--- live ConfigMap app/a
+++ declared k8s/a.yaml:1
+  k0: v
+  k1: v
--- live ConfigMap app/b
+++ declared k8s/b.yaml:1
+  k0: v
+  k1: v
+  k2: v
… 1 more line of this diff ([gate] diff_lines_per_object = 5)
--- live ConfigMap app/d
+++ declared k8s/d.yaml:1
+  k0: v
… 1 more line of this diff ([gate] diff_lines = 12)
… the diffs of 1 more object not shown ([gate] diff_lines = 12)";
        assert_eq!(text, expected);
        // The caps are the push's: a second environment gets what is left.
        let more = p.render(&[Section {
            target: "x",
            objects: Ok(&api[1..]),
            summary: None,
        }]);
        assert_eq!(
            more,
            [
                "… 1 more object (0 unchanged) not listed ([gate] table_rows = 4)",
                "Op: 0 create, 1 update, 0 prune, 0 unchanged",
                "… the diffs of 1 more object not shown ([gate] diff_lines = 12)"
            ]
        );
    }

    #[test]
    fn missing_namespaces_and_kinds_are_read_from_kubectl_errors() {
        let err = "Error from server (NotFound): namespaces \"web\" not found\n\
Error from server (NotFound): namespaces \"web\" not found\n\
error: resource mapping not found for name: \"w\" namespace: \"web\" from \"STDIN\": no matches for kind \"Widget\" in version \"ex.com/v1\"\n\
ensure CRDs are installed first\n";
        assert_eq!(named_missing(err, "namespaces \"", "\" not found"), ["web"]);
        assert_eq!(unmatched_kinds(err), ["ex.com/Widget"]);
        assert!(named_missing("namespaces \"x", "namespaces \"", "\" not found").is_empty());
    }

    #[test]
    fn a_pruned_secret_shows_no_value_and_no_bookkeeping() {
        let mut body = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "web", "uid": "u", "managedFields": [{}]},
            "data": {"password": "aHVudGVyMg=="},
            "status": {"x": 1}
        });
        clean(&mut body);
        let id = ObjectId {
            group: String::new(),
            kind: "Secret".into(),
            namespace: Some("web".into()),
            name: "db".into(),
        };
        let d = removal(&id, &body);
        assert!(d.contains("-  password: '***'"), "{d}");
        for gone in ["aHVudGVyMg", "uid", "managedFields", "status"] {
            assert!(!d.contains(gone), "{gone} in {d}");
        }
    }
}
