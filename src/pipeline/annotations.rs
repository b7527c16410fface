//! Per-object controls: `hookops.io/` annotations on an object in the pushed manifest. They
//! steer how hookops applies, re-creates, orders and prunes that one object (the Flux and
//! Argo CD equivalents are in docs/annotations.md). Unknown keys and values are refused with the
//! object's file and line, in `plan`, the gate and the deploy. An annotation never lifts
//! policy: `allowed_namespaces` and `allow_cluster_scoped` see every object, hooks included.

use anyhow::{bail, Result};
use serde_json::Value;

use crate::pipeline::manifest::Object;

pub const PREFIX: &str = "hookops.io/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyMode {
    #[default]
    Apply,
    /// Created when missing, never updated (one-time Secrets, PVCs).
    CreateOnly,
    /// Left alone entirely: neither applied nor pruned.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreDeploy,
    PostDeploy,
    OnFailure,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::PreDeploy => "pre-deploy",
            Hook::PostDeploy => "post-deploy",
            Hook::OnFailure => "on-failure",
        }
    }
}

/// When finished Jobs of a hook are deleted: `before-run` (the default), `on-success`, or
/// both (`before-run,on-success`, what a chart hook's `before-hook-creation,hook-succeeded`
/// becomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookDelete {
    /// Finished hook Jobs of the target are deleted before the hook runs again.
    pub before_run: bool,
    /// Deleted as soon as it succeeded.
    pub on_success: bool,
}

impl Default for HookDelete {
    fn default() -> Self {
        HookDelete {
            before_run: true,
            on_success: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Controls {
    pub prune_disabled: bool,
    pub apply: ApplyMode,
    pub force: bool,
    pub wave: i64,
    pub hook: Option<Hook>,
    pub hook_delete: HookDelete,
}

impl Controls {
    /// What the annotations do, for `plan` ("" when nothing).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = self.hook {
            parts.push(format!("hook {}", h.as_str()));
        }
        match self.apply {
            ApplyMode::CreateOnly => parts.push("create-only".to_string()),
            ApplyMode::Disabled => parts.push("left alone (apply: disabled)".to_string()),
            ApplyMode::Apply => {}
        }
        if self.force {
            parts.push("re-created on an immutable-field change".to_string());
        }
        if self.wave != 0 {
            parts.push(format!("wave {}", self.wave));
        }
        if self.prune_disabled {
            parts.push("never pruned".to_string());
        }
        parts.join(", ")
    }
}

/// The controls an object's annotations ask for; an unknown `hookops.io/` key or value is an
/// error naming the object's file and line.
pub fn controls(o: &Object) -> Result<Controls> {
    let mut c = Controls::default();
    let Some(map) = o
        .body
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    else {
        return Ok(c);
    };
    for (key, value) in map {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let v = value.as_str().unwrap_or("");
        let bad = || {
            let expected = allowed(name);
            anyhow::anyhow!(
                "{}: {} {}: annotation {key}: {value} is not {}{expected}",
                o.source,
                o.id.kind,
                o.id.name,
                // "one of a, b" for a list, "an integer" as it is.
                if expected.contains(", ") {
                    "one of "
                } else {
                    ""
                },
            )
        };
        match name {
            "prune" => match v {
                "disabled" => c.prune_disabled = true,
                "enabled" => {}
                _ => return Err(bad()),
            },
            "apply" => {
                c.apply = match v {
                    "create-only" => ApplyMode::CreateOnly,
                    "disabled" => ApplyMode::Disabled,
                    "enabled" => ApplyMode::Apply,
                    _ => return Err(bad()),
                }
            }
            "force" => match v {
                "enabled" => c.force = true,
                "disabled" => {}
                _ => return Err(bad()),
            },
            "wave" => c.wave = v.trim().parse().map_err(|_| bad())?,
            "hook" => {
                c.hook = Some(match v {
                    "pre-deploy" => Hook::PreDeploy,
                    "post-deploy" => Hook::PostDeploy,
                    "on-failure" => Hook::OnFailure,
                    _ => return Err(bad()),
                })
            }
            "hook-delete" => {
                let mut d = HookDelete {
                    before_run: false,
                    on_success: false,
                };
                for part in v.split(',').map(str::trim) {
                    match part {
                        "before-run" => d.before_run = true,
                        "on-success" => d.on_success = true,
                        _ => return Err(bad()),
                    }
                }
                c.hook_delete = d;
            }
            _ => bail!(
                "{}: {} {}: unknown annotation {key} (hookops.io/ knows prune, apply, force, wave, hook, hook-delete)",
                o.source,
                o.id.kind,
                o.id.name
            ),
        }
    }
    if c.hook.is_some() && !(o.id.group == "batch" && o.id.kind == "Job") {
        bail!(
            "{}: {} {}: hookops.io/hook is for Jobs",
            o.source,
            o.id.kind,
            o.id.name
        );
    }
    Ok(c)
}

fn allowed(name: &str) -> &'static str {
    match name {
        "prune" => "disabled, enabled",
        "apply" => "create-only, disabled, enabled",
        "force" => "enabled, disabled",
        "wave" => "an integer",
        "hook" => "pre-deploy, post-deploy, on-failure",
        "hook-delete" => "before-run, on-success, before-run,on-success",
        _ => "",
    }
}

/// Whether a server error says an update was refused because a field cannot change.
pub fn is_immutable_error(text: &str) -> bool {
    text.contains("field is immutable")
        || text.contains("Forbidden: updates to")
        || text.contains("may not change once set")
        || text.contains("is immutable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::parse;

    fn obj(annotations: &str) -> Object {
        parse(
            &format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\n  annotations:\n{annotations}"),
            "k/job.yaml",
            None,
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn known_annotations() {
        let c = controls(&obj("    hookops.io/wave: \"-2\"\n    hookops.io/hook: pre-deploy\n    hookops.io/force: enabled\n    other.io/x: y\n")).unwrap();
        assert_eq!(c.wave, -2);
        assert_eq!(c.hook, Some(Hook::PreDeploy));
        assert!(c.force);
        assert!(c.describe().contains("hook pre-deploy"));
    }

    #[test]
    fn unknown_keys_and_values_name_file_and_line() {
        let e = controls(&obj("    hookops.io/prune: never\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k/job.yaml:1"), "{e}");
        assert!(e.contains("disabled, enabled"), "{e}");
        let e = controls(&obj("    hookops.io/sync-wave: \"1\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown annotation hookops.io/sync-wave"), "{e}");
    }

    #[test]
    fn immutable_errors() {
        assert!(is_immutable_error("The Job \"j\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"));
        assert!(!is_immutable_error("connection refused"));
    }
}
