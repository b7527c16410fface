//! The apply stage of one Kubernetes target: pre-deploy hooks, then its objects wave by wave
//! (`hookops.io/wave`, lowest first, each healthy before the next; Namespaces and CRDs first of
//! all), create-only objects created when missing, immutable-field refusals re-created where
//! `force` allows, prunes, health, post-deploy hooks; on-failure hooks when it fails.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::backends::kube::Kubectl;
use crate::backends::process::Output;
use crate::config::Environment;
use crate::pipeline::annotations::{self, ApplyMode, Hook};
use crate::pipeline::health;
use crate::pipeline::inventory;
use crate::pipeline::kinds::{self, kind_key};
use crate::pipeline::manifest::{self, Object, ObjectId};
use crate::pipeline::plan::TargetPlan;
use crate::record::payload::TargetReport;

type Outcome = std::result::Result<(), Failure>;

/// Whether a target needs the wave-by-wave path (and so cannot share a kubectl call).
pub fn needs_steps(tp: &TargetPlan) -> bool {
    !tp.hooks.is_empty()
        || tp.target.force
        || tp.apply.iter().any(|o| {
            annotations::controls(o)
                .is_ok_and(|c| c.wave != 0 || c.force || c.apply == ApplyMode::CreateOnly)
        })
}

/// Objects `kubectl delete -o name` reports as deleted (one `kind/name` line each; objects
/// already gone print nothing with `--ignore-not-found`).
fn deleted(stdout: &str) -> usize {
    stdout.lines().filter(|l| l.contains('/')).count()
}

/// Whether kubectl could not map a kind to a resource of the server.
fn unmapped(stderr: &str) -> bool {
    [
        "resource mapping not found",
        "no matches for kind",
        "the server doesn't have a resource type",
        "could not find the requested resource",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// Objects kubectl reports as written (`kind/name serverside-applied`, `created`, …).
pub fn applied_lines(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| {
            let last = l.rsplit(' ').next().unwrap_or("");
            matches!(
                last,
                "serverside-applied" | "created" | "configured" | "unchanged"
            ) && l.contains('/')
        })
        .count()
}

/// The manifests of one kubectl apply: the objects of built-in kinds as one `v1` `List`
/// document (from `LIST_FROM` of them on), then custom resources as documents of their own.
///
/// kubectl 1.32 and 1.33 ask, before every document they send, whether the server supports
/// strict field validation for its kind, and answer by decoding the group's whole OpenAPI v3
/// document again (about 20 ms for `v1`: 22 s of a 1,000-object apply;
/// kubernetes/kubernetes#127095). A `List` is no kind the server serves, so for it kubectl
/// validates the items against the OpenAPI v2 schema instead, read once per process, and then
/// sends every item with `fieldValidation=Strict` as before: unknown and duplicate fields are
/// refused by kubectl and by the server. Custom resources stay separate documents: their
/// groups' v3 documents are small, and the v2 schema the server publishes can lag a CRD
/// changed moments before, which would refuse a field the new schema allows.
pub fn apply_stream(objects: &[&Object]) -> String {
    let (builtin, custom): (Vec<&Object>, Vec<&Object>) = objects
        .iter()
        .partition(|o| kinds::builtin_scope(&o.id.group, &o.id.kind).is_some());
    if builtin.len() >= LIST_FROM {
        let mut list = String::from("{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[");
        for (i, o) in builtin.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            list.push_str(&o.body.to_string());
        }
        list.push_str("]}\n");
        // A stream that opens with `{` is read by kubectl as concatenated JSON values (the
        // fast decoder): a `---` after the List would be a syntax error there, so the custom
        // resources follow as bare JSON values.
        for o in custom {
            list.push_str(&o.body.to_string());
            list.push('\n');
        }
        return list;
    }
    let mut out = manifest::to_stream(builtin);
    out.push_str(&manifest::to_stream(custom));
    out
}

/// From this many objects of built-in kinds on, a kubectl apply gets them as one `List` (see
/// `apply_stream`).
pub const LIST_FROM: usize = 2;
/// Above this many objects, an apply is split over `PARALLEL_CALLS` kubectl processes
/// (Namespaces and CRDs first, in a call of their own): kubectl sends one request per object,
/// one after another, so two processes keep the server's cores busy.
const PARALLEL_APPLY: usize = 300;

/// Server-side applies `objects` (field manager `hookops`, conflicts forced) the cheapest way
/// kubectl allows: as a `List` (`apply_stream`), in parallel calls above
/// `PARALLEL_APPLY`. The outputs of several calls are merged in order.
pub fn apply_objects(
    kubectl: &Kubectl,
    objects: &[&Object],
    ns: Option<&str>,
) -> anyhow::Result<Output> {
    let stream = apply_stream;
    if objects.len() <= PARALLEL_APPLY {
        let out = kubectl.apply(stream(objects), ns, None)?;
        return named_refusal(kubectl, objects, ns, out);
    }
    let (foundations, rest): (Vec<&Object>, Vec<&Object>) =
        objects.iter().copied().partition(|o| o.is_foundation());
    let first = match foundations.is_empty() {
        true => None,
        false => {
            let out = kubectl.apply(stream(&foundations), ns, None)?;
            if !out.success() {
                return Ok(out);
            }
            Some(out)
        }
    };
    let chunks: Vec<&[&Object]> = rest.chunks(rest.len().div_ceil(PARALLEL_CALLS)).collect();
    let mut out = in_parallel(&chunks, |chunk| kubectl.apply(stream(chunk), ns, None))?;
    if let Some(first) = first {
        out.stdout.insert_str(0, &first.stdout);
        out.stderr.insert_str(0, &first.stderr);
    }
    Ok(out)
}

/// kubectl validates a whole `List` before it sends anything, and its refusal of an item
/// names no object (`ValidationError(Deployment.spec): unknown field …`). Refused so, the same
/// objects are sent again as a server-side dry run, a document each, whose refusals name the
/// object (`failed to create typed patch object (web/web; apps/v1, Kind=Deployment): …`):
/// nothing is written, and those lines lead the refusal.
fn named_refusal(
    kubectl: &Kubectl,
    objects: &[&Object],
    ns: Option<&str>,
    mut out: Output,
) -> anyhow::Result<Output> {
    let listed = objects
        .iter()
        .filter(|o| kinds::builtin_scope(&o.id.group, &o.id.kind).is_some())
        .count()
        >= LIST_FROM;
    if out.success() || !listed || !out.stderr.contains("ValidationError(") {
        return Ok(out);
    }
    let dry = kubectl.apply(
        manifest::to_stream(objects.iter().copied()),
        ns,
        Some("server"),
    )?;
    let named: Vec<&str> = dry
        .stderr
        .lines()
        .filter(|l| l.starts_with("Error from server") || l.starts_with("error:"))
        .collect();
    if !named.is_empty() {
        out.stderr = format!("{}\n{}", named.join("\n"), out.stderr);
    }
    Ok(out)
}

/// Above this many objects, a prune is split over `PARALLEL_CALLS` kubectl processes: each
/// deletion is one request, sent one after another by a kubectl, so two processes on the 2+
/// cores of a server halve the wait once the process start (~0.1 s of CPU) is paid back.
const PARALLEL_PRUNE: usize = 200;
const PARALLEL_CALLS: usize = 2;

/// Deletes the stale objects `ids` (already-gone ones are fine), in one kubectl call, or in
/// `PARALLEL_CALLS` at once for a large prune; their outputs merged in order.
pub fn delete_stale(
    kubectl: &Kubectl,
    ids: &[(ObjectId, String)],
    ns: Option<&str>,
) -> anyhow::Result<Output> {
    let parts = if ids.len() > PARALLEL_PRUNE {
        PARALLEL_CALLS
    } else {
        1
    };
    let chunks: Vec<&[(ObjectId, String)]> = ids.chunks(ids.len().div_ceil(parts)).collect();
    in_parallel(&chunks, |chunk| {
        kubectl.delete(manifest::stubs_stream(chunk.iter()), ns)
    })
}

/// Runs `call` on every chunk at once (one thread each) and merges the outputs: stdout and
/// stderr in chunk order, the first failing exit code, the longest elapsed time.
pub fn in_parallel<T: Sync>(
    chunks: &[T],
    call: impl Fn(&T) -> anyhow::Result<Output> + Sync,
) -> anyhow::Result<Output> {
    let outputs: Vec<anyhow::Result<Output>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|c| {
                let call = &call;
                scope.spawn(move || call(c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a kubectl thread panicked")))
            })
            .collect()
    });
    let mut merged = Output {
        code: Some(0),
        stdout: String::new(),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    };
    for out in outputs {
        let out = out?;
        merged.stdout.push_str(&out.stdout);
        merged.stderr.push_str(&out.stderr);
        merged.elapsed = merged.elapsed.max(out.elapsed);
        if merged.success() && !out.success() {
            merged.code = out.code;
        }
    }
    Ok(merged)
}

pub struct Run<'a> {
    pub env: &'a Environment,
    pub kubectl: &'a Kubectl,
    pub tp: &'a TargetPlan,
    /// The target's objects, generated Secrets included.
    pub objects: Vec<&'a Object>,
    /// A shared kubectl call already applied them.
    pub applied: bool,
}

impl Run<'_> {
    fn ns(&self) -> Option<&str> {
        self.tp.target.namespace.as_deref()
    }

    fn progress(&self) -> impl FnMut(&str) -> crate::out::SlowGuard + '_ {
        move |line: &str| {
            crate::out::say_if_slow(
                format!("{}: {}: {line}", self.env.name, self.tp.target.name),
                crate::out::SLOW,
            )
        }
    }

    fn timeout(&self) -> Duration {
        self.env.health_timeout(self.tp.target.timeout)
    }

    pub fn run(&self, r: &mut TargetReport) -> Outcome {
        let result = self.steps(r);
        if result.is_err() {
            for h in self.hooks(Hook::OnFailure) {
                // Its own failure is in the record; the target's reason stays the first one.
                let _ = self.run_hook(h, Hook::OnFailure, r);
            }
        }
        result
    }

    fn steps(&self, r: &mut TargetReport) -> Outcome {
        for h in self.hooks(Hook::PreDeploy) {
            self.run_hook(h, Hook::PreDeploy, r)?;
        }
        if self.applied {
            r.applied = self.objects.len();
        } else {
            let waves = self.waves();
            let several = waves.len() > 1;
            for (wave, objs) in &waves {
                self.apply_wave(*wave, objs, r)?;
                if several {
                    self.healthy(objs)?;
                }
            }
        }
        if !self.tp.prune.is_empty() {
            self.prune(r)?;
        }
        self.healthy(&self.objects)?;
        for h in self.hooks(Hook::PostDeploy) {
            self.run_hook(h, Hook::PostDeploy, r)?;
        }
        Ok(())
    }

    /// Deletes what the target prunes (architecture.md, D10), counting only what existed.
    /// An object whose kind the server does not map (a version it stopped serving, a CRD that
    /// went) is named through the version of its group the server serves, and one whose kind
    /// the server does not serve at all cannot exist there: it is settled without a request.
    fn prune(&self, r: &mut TargetReport) -> Outcome {
        let mut stubs = self.tp.prune.clone();
        for retry in [false, true] {
            let out = delete_stale(self.kubectl, &stubs, self.ns()).map_err(Failure::Tool)?;
            r.pruned += deleted(&out.stdout);
            if out.success() {
                r.settled
                    .extend(stubs.iter().map(|(id, _)| inventory::key(id)));
                return Ok(());
            }
            if retry || !unmapped(&out.stderr) {
                return Err(Failure::Refused {
                    call: "kubectl delete",
                    why: out.reason(),
                });
            }
            let served = self.served_versions()?;
            let mut left = Vec::new();
            for (id, version) in stubs {
                match served.get(&kind_key(&id.group, &id.kind)) {
                    Some(served) => left.push((id, served.clone())),
                    None => {
                        crate::out::say(&format!(
                            "{}: {}: {id} ({version}): the cluster serves no version of its kind, \
                             so it cannot exist there; forgotten",
                            self.env.name, self.tp.target.name
                        ));
                        r.settled.push(inventory::key(&id));
                    }
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            stubs = left;
        }
        Ok(())
    }

    /// The version of each kind the server serves, `group/kind` → `apiVersion` (discovery's
    /// preferred version), from `kubectl api-resources`.
    fn served_versions(&self) -> std::result::Result<BTreeMap<String, String>, Failure> {
        let out = self
            .kubectl
            .raw(["api-resources", "-o", "wide", "--no-headers"])
            .map_err(Failure::Tool)?;
        if !out.success() {
            return Err(Failure::Refused {
                call: "kubectl api-resources",
                why: out.reason(),
            });
        }
        Ok(kinds::parse_served_versions(&out.stdout))
    }

    fn healthy(&self, objects: &[&Object]) -> Outcome {
        let mut progress = self.progress();
        match health::wait(self.kubectl, objects, self.timeout(), &mut progress) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(u)) => Err(Failure::Unhealthy(Box::new(u))),
            Err(e) => Err(Failure::Tool(e)),
        }
    }

    fn hooks(&self, which: Hook) -> impl Iterator<Item = &Object> {
        self.tp
            .hooks
            .iter()
            .filter(move |o| annotations::controls(o).is_ok_and(|c| c.hook == Some(which)))
    }

    /// Waves in order. Namespaces and CRDs come before everything: in a call of their own when
    /// there is a CRD (a custom resource cannot be mapped before its CRD exists), else at the
    /// head of the lowest wave's call.
    fn waves(&self) -> Vec<(i64, Vec<&Object>)> {
        let (foundations, rest): (Vec<&Object>, Vec<&Object>) = self
            .objects
            .iter()
            .copied()
            .partition(|o| o.is_foundation());
        let mut by: BTreeMap<i64, Vec<&Object>> = BTreeMap::new();
        for o in rest {
            let wave = annotations::controls(o).map(|c| c.wave).unwrap_or(0);
            by.entry(wave).or_default().push(o);
        }
        let mut out: Vec<(i64, Vec<&Object>)> = by.into_iter().collect();
        if foundations.is_empty() {
            return out;
        }
        let has_crd = foundations
            .iter()
            .any(|o| o.id.kind == "CustomResourceDefinition");
        match out.first_mut() {
            Some((_, first)) if !has_crd => {
                let mut merged = foundations;
                merged.append(first);
                *first = merged;
            }
            _ => out.insert(0, (i64::MIN, foundations)),
        }
        out
    }

    fn apply_wave(&self, wave: i64, objs: &[&Object], r: &mut TargetReport) -> Outcome {
        let (create_only, normal): (Vec<&Object>, Vec<&Object>) = objs.iter().partition(|o| {
            annotations::controls(o).is_ok_and(|c| c.apply == ApplyMode::CreateOnly)
        });
        if !normal.is_empty() {
            self.apply_forcing(&normal, r)?;
        }
        if !create_only.is_empty() {
            let out = self
                .kubectl
                .create(manifest::to_stream(create_only.iter().copied()), self.ns())
                .map_err(Failure::Tool)?;
            let refused: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| l.contains("Error") && !l.contains("AlreadyExists"))
                .collect();
            if !refused.is_empty() {
                return Err(Failure::Refused {
                    call: "kubectl create (create-only)",
                    why: refused[0].to_string(),
                });
            }
            r.applied += out.stdout.lines().filter(|l| l.contains('/')).count();
        }
        log::debug!("{}: wave {wave} applied", self.tp.target.name);
        Ok(())
    }

    /// Server-side apply; when the server refuses an update because a field is immutable, the
    /// objects that allow it (`hookops.io/force: enabled`, or `force = true` on the target) are
    /// deleted and applied again, once. Without it, the server's message and a hint.
    fn apply_forcing(&self, objs: &[&Object], r: &mut TargetReport) -> Outcome {
        let out = apply_objects(self.kubectl, objs, self.ns()).map_err(Failure::Tool)?;
        if out.success() {
            r.applied += objs.len();
            return Ok(());
        }
        let text = format!("{}\n{}", out.stderr, out.stdout);
        let immutable: Vec<&Object> = objs
            .iter()
            .copied()
            .filter(|o| refused_as_immutable(&text, &o.id))
            .collect();
        if immutable.is_empty() {
            r.applied += applied_lines(&out.stdout);
            return Err(Failure::Refused {
                call: "kubectl apply",
                why: locate(&out.reason(), objs),
            });
        }
        let forced: Vec<&Object> = immutable
            .iter()
            .copied()
            .filter(|o| self.tp.target.force || annotations::controls(o).is_ok_and(|c| c.force))
            .collect();
        if forced.len() < immutable.len() {
            r.applied += applied_lines(&out.stdout);
            let o = immutable
                .iter()
                .find(|o| !forced.iter().any(|f| f.id == o.id))
                .unwrap_or(&immutable[0]);
            return Err(Failure::Immutable {
                object: Box::new(o.id.clone()),
                why: immutable_line(&text).unwrap_or_else(|| out.reason()),
            });
        }
        let stubs: Vec<(ObjectId, String)> = forced
            .iter()
            .map(|o| (o.id.clone(), o.api_version.clone()))
            .collect();
        crate::out::say(&format!(
            "{}: {}: re-creating {} (immutable field changed)",
            self.env.name,
            self.tp.target.name,
            forced
                .iter()
                .map(|o| o.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let del = self
            .kubectl
            .delete_and_wait(manifest::stubs_stream(&stubs), self.ns())
            .map_err(Failure::Tool)?;
        if !del.success() {
            return Err(Failure::Refused {
                call: "kubectl delete (force)",
                why: del.reason(),
            });
        }
        r.recreated.extend(forced.iter().map(|o| o.id.to_string()));
        let again = apply_objects(self.kubectl, objs, self.ns()).map_err(Failure::Tool)?;
        if !again.success() {
            r.applied += applied_lines(&again.stdout);
            return Err(Failure::Refused {
                call: "kubectl apply (after re-creating)",
                why: again.reason(),
            });
        }
        r.applied += objs.len();
        Ok(())
    }

    /// Runs one hook Job: earlier runs deleted first (`hook-delete: before-run`, the default),
    /// created with `kubectl create` (so `generateName` works), waited for; deleted right away
    /// with `hook-delete: on-success` (both with `before-run,on-success`).
    fn run_hook(&self, job: &Object, which: Hook, r: &mut TargetReport) -> Outcome {
        let controls = annotations::controls(job).unwrap_or_default();
        let ns = job
            .id
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let label = hook_label(&self.env.name, &self.tp.target.name, &job.id.name);
        let mut body = job.body.clone();
        body["metadata"]["labels"]["hookops.io/hook-id"] = Value::String(label.clone());
        body["metadata"]["namespace"] = Value::String(ns.clone());
        if controls.hook_delete.before_run {
            let _ =
                self.kubectl
                    .delete_selected("jobs", &format!("hookops.io/hook-id={label}"), &ns);
        }
        let out = self
            .kubectl
            .create(format!("---\n{body}\n"), Some(&ns))
            .map_err(Failure::Tool)?;
        if !out.success() {
            let why = Failure::HookNotStarted {
                hook: which,
                job: Box::new(job.id.clone()),
                why: out.reason(),
            };
            r.hooks
                .push(format!("{} {}: failed to start", which.as_str(), job.id));
            return Err(why);
        }
        let created = out
            .stdout
            .lines()
            .find_map(|l| l.trim().rsplit_once('/').map(|(_, n)| n.to_string()))
            .unwrap_or_else(|| job.id.name.clone());
        let mut running = job.clone();
        running.id.name = created.clone();
        running.id.namespace = Some(ns.clone());
        let shown = format!("{} Job {ns}/{created}", which.as_str());
        let result = self.healthy(&[&running]);
        r.hooks.push(format!(
            "{shown}: {}",
            if result.is_ok() {
                "succeeded"
            } else {
                "failed"
            }
        ));
        if result.is_ok() && controls.hook_delete.on_success {
            let _ =
                self.kubectl
                    .delete_selected("jobs", &format!("hookops.io/hook-id={label}"), &ns);
        }
        result.map_err(|e| Failure::Hook {
            hook: which,
            job: format!("{ns}/{created}"),
            cause: Box::new(e),
        })
    }
}

/// The label that finds a hook's earlier Jobs: environment, target and hook, hashed to fit a
/// label value.
fn hook_label(env: &str, target: &str, hook: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{env}\0{target}\0{hook}").as_bytes());
    d[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the server's output refuses `id` because a field is immutable.
fn refused_as_immutable(text: &str, id: &ObjectId) -> bool {
    text.lines().any(|l| {
        annotations::is_immutable_error(l)
            && l.contains(&format!("\"{}\"", id.name))
            && l.to_ascii_lowercase()
                .contains(&id.kind.to_ascii_lowercase())
    })
}

/// The server's immutable-field message, without the whole object it quotes (a Job's template
/// comes back as one very long line): its head and its tail.
fn immutable_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| annotations::is_immutable_error(l))?
        .trim();
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= 400 {
        return Some(line.to_string());
    }
    let head: String = chars[..200].iter().collect();
    let tail: String = chars[chars.len() - 120..].iter().collect();
    Some(format!("{head} … {tail}"))
}

/// Why a Kubernetes target failed. Its text is the reason that is printed and recorded.
#[derive(Debug)]
pub enum Failure {
    /// kubectl could not be run, or its answer not read.
    Tool(anyhow::Error),
    /// kubectl (or the server through it) refused a call: which one, and its reason.
    Refused { call: &'static str, why: String },
    /// The server refused an update because a field is immutable, and the object may not be
    /// deleted and re-created.
    Immutable { object: Box<ObjectId>, why: String },
    /// An object did not become healthy.
    Unhealthy(Box<health::Unhealthy>),
    /// A hook Job could not be created.
    HookNotStarted {
        hook: Hook,
        job: Box<ObjectId>,
        why: String,
    },
    /// A hook Job (`namespace/name`) ran and failed.
    Hook {
        hook: Hook,
        job: String,
        cause: Box<Failure>,
    },
}

/// kubectl's reason with the object and file it is about, where kubectl names neither (the
/// manifests went on stdin): `namespaces "nope" not found`, `name: "x" … from "STDIN": no
/// matches for kind "Foo"`, `ConfigMap "x" is invalid`.
pub fn locate(why: &str, objects: &[&Object]) -> String {
    let mentioned = |o: &&&Object| {
        let name = format!("\"{}\"", o.id.name);
        o.id.namespace
            .as_ref()
            .is_some_and(|ns| why.contains(&format!("namespaces \"{ns}\" not found")))
            || (why.contains(&format!("kind \"{}\"", o.id.kind))
                && why.contains(&format!("name: {name}")))
            || why.contains(&format!("{} {name}", o.id.kind))
    };
    match objects.iter().find(mentioned) {
        Some(o) => format!(
            "{}: {} ({})",
            o.source,
            why.replace("from \"STDIN\": ", ""),
            o.id
        ),
        None => why.to_string(),
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Tool(e) => write!(f, "{e:#}"),
            Failure::Refused { call, why } => write!(f, "{call}: {why}"),
            Failure::Immutable { object, why } => write!(
                f,
                "kubectl apply: {why} (an immutable field of {object} changed: annotate it hookops.io/force: enabled, or set force = true on the target, to delete and re-create it)"
            ),
            Failure::Unhealthy(u) => write!(f, "unhealthy: {u}"),
            Failure::HookNotStarted { hook, job, why } => {
                write!(f, "{} hook {job}: kubectl create: {why}", hook.as_str())
            }
            Failure::Hook { hook, job, cause } => {
                write!(f, "{} Job {job}: {cause}", hook.as_str())
            }
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_refusals_name_their_object() {
        let id = ObjectId {
            group: "batch".into(),
            kind: "Job".into(),
            namespace: Some("a".into()),
            name: "migrate".into(),
        };
        let text = "Error from server (Invalid): Job.batch \"migrate\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{}: field is immutable";
        assert!(refused_as_immutable(text, &id));
        assert!(!refused_as_immutable(
            &text.replace("migrate", "other"),
            &id
        ));
    }

    #[test]
    fn built_in_kinds_go_as_one_list_custom_resources_apart() {
        let objs = crate::pipeline::manifest::parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
            "x.yaml",
            Some("ns"),
        )
        .unwrap();
        let refs: Vec<&Object> = objs.iter().collect();
        let stream = apply_stream(&refs);
        // kubectl reads a stream opening with `{` as concatenated JSON values: it must be
        // exactly that, with no YAML separator (oracle finding F15).
        let docs: Vec<Value> = serde_json::Deserializer::from_str(&stream)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}: {stream}"));
        let list = &docs[0];
        assert_eq!(list["kind"], "List");
        let items: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kind"].as_str().unwrap())
            .collect();
        assert_eq!(items, ["ConfigMap", "Deployment"]);
        assert_eq!(docs.len(), 2, "{stream}");
        assert_eq!(docs[1]["kind"], "Widget", "{stream}");
        // One built-in object: a document of its own (one v3 decode costs what v2 would).
        let one = apply_stream(&refs[..1]);
        assert!(
            one.starts_with("---\n{") && one.contains("\"kind\":\"ConfigMap\""),
            "{one}"
        );
    }

    #[test]
    fn kubectl_reasons_name_the_file_and_object() {
        let object = |kind: &str, ns: &str, name: &str, source: &str| Object {
            id: ObjectId {
                group: String::new(),
                kind: kind.into(),
                namespace: Some(ns.into()),
                name: name.into(),
            },
            api_version: "v1".into(),
            body: serde_json::Value::Null,
            source: source.into(),
            cluster: false,
        };
        let a = object("ConfigMap", "web", "a", "k8s/a.yaml:1");
        let b = object("Widget", "nope", "w", "k8s/w.yaml:4");
        let objs = [&a, &b];
        assert_eq!(
            locate("namespaces \"nope\" not found", &objs),
            "k8s/w.yaml:4: namespaces \"nope\" not found (Widget nope/w)"
        );
        assert_eq!(
            locate(
                "resource mapping not found for name: \"w\" namespace: \"nope\" from \"STDIN\": no matches for kind \"Widget\" in version \"x/v1\"",
                &objs
            ),
            "k8s/w.yaml:4: resource mapping not found for name: \"w\" namespace: \"nope\" no matches for kind \"Widget\" in version \"x/v1\" (Widget nope/w)"
        );
        assert_eq!(
            locate("the server is on fire", &objs),
            "the server is on fire"
        );
    }

    #[test]
    fn hook_labels_fit_a_label_value() {
        let l = hook_label("prod", "apps/web", "migrate-");
        assert_eq!(l.len(), 24);
        assert_ne!(l, hook_label("prod", "apps/web", "seed-"));
    }

    #[test]
    fn failures_read_as_the_record_has_always_said() {
        let job = ObjectId {
            group: "batch".into(),
            kind: "Job".into(),
            namespace: Some("apps".into()),
            name: "migrate".into(),
        };
        let cases: Vec<(Failure, &str)> = vec![
            (
                Failure::Tool(anyhow::anyhow!("no such file").context("running kubectl")),
                "running kubectl: no such file",
            ),
            (
                Failure::Refused {
                    call: "kubectl delete",
                    why: "Error from server (Forbidden)".into(),
                },
                "kubectl delete: Error from server (Forbidden)",
            ),
            (
                Failure::Immutable {
                    object: Box::new(job.clone()),
                    why: "field is immutable".into(),
                },
                "kubectl apply: field is immutable (an immutable field of Job.batch apps/migrate changed: annotate it hookops.io/force: enabled, or set force = true on the target, to delete and re-create it)",
            ),
            (
                Failure::Unhealthy(Box::new(health::Unhealthy::NotInTime {
                    object: job.clone(),
                    secs: 30,
                    status: "1 active, 0 succeeded, 0 failed".into(),
                })),
                "unhealthy: Job.batch apps/migrate: not healthy within 30s: 1 active, 0 succeeded, 0 failed",
            ),
            (
                Failure::HookNotStarted {
                    hook: Hook::PreDeploy,
                    job: Box::new(job.clone()),
                    why: "forbidden".into(),
                },
                "pre-deploy hook Job.batch apps/migrate: kubectl create: forbidden",
            ),
            (
                Failure::Hook {
                    hook: Hook::PostDeploy,
                    job: "apps/migrate-x7k2p".into(),
                    cause: Box::new(Failure::Unhealthy(Box::new(health::Unhealthy::Failed {
                        object: job,
                        why: "job failed: BackoffLimitExceeded".into(),
                    }))),
                },
                "post-deploy Job apps/migrate-x7k2p: unhealthy: Job.batch apps/migrate: job failed: BackoffLimitExceeded",
            ),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text, "{failure:?}");
        }
    }
}
