//! `hookops diff REF`: what deploying REF would change in its environments' clusters, from the
//! operator's side: the change table and live diff the gate shows a pusher (commands/gate.rs,
//! pipeline/livediff.rs), uncapped and without a time budget, and what the gate's policies
//! would refuse. Exit status as `git diff --exit-code`: 0 nothing would change, 1 something
//! would, 2 something could not be compared. The diff of a pending commit is kept for the
//! status page (ops/pending.rs).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::backends::repo::Session;
use crate::cli::RangeArgs;
use crate::commands::emit;
use crate::commands::gate::{self, Preview};
use crate::commands::hooks::{pick_envs, resolve_range};
use crate::pipeline::livediff::{Caps, ObjectDiff, Printer};
use crate::pipeline::policies;

pub fn run(repo: Option<&Path>, range: &RangeArgs, json: bool) -> Result<ExitCode> {
    let session = Session::open(repo)?;
    let (ref_name, from_arg, to) = resolve_range(&session, range)?;
    let mut printer = Printer::new(Caps {
        rows: usize::MAX,
        object_lines: usize::MAX,
        lines: usize::MAX,
    });
    let mut report = Vec::new();
    let (mut changes, mut trouble) = (false, false);
    for env in pick_envs(&session, &ref_name, range.env.as_deref())? {
        let from = match from_arg {
            Some(f) => f,
            None => session.pointer(&env.name),
        };
        let plan = gate::plan_for(&session, &env, from, to, None)?;
        let preview = gate::preview(&session, &env, plan, true, None)?;
        changes |= preview.changes();
        trouble |= preview.objects.iter().any(Result::is_err)
            || preview.terraform.iter().flatten().any(Result::is_err);
        let refusals = policies::refusals(&env, &preview.plan, &preview.compared());
        let lines = gate::preview_lines(&env, &ref_name, &preview, &mut printer, true, 0);
        if session.pointer(&env.name) != Some(to) {
            if let Err(e) =
                crate::ops::pending::save(&session, &env.name, to, "hookops diff", &lines)
            {
                log::info!("{}: keeping the diff for the status page: {e:#}", env.name);
            }
        }
        if json {
            report.push(to_json(&env.name, &preview, &refusals));
            continue;
        }
        for l in &lines {
            emit(l)?;
        }
        for r in &refusals {
            emit(&format!(
                "  the gate would refuse this push: {}",
                crate::out::clean_line(r)
            ))?;
        }
    }
    if json {
        emit(&serde_json::Value::Array(report).to_string())?;
    }
    Ok(if trouble {
        ExitCode::from(2)
    } else if changes {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn to_json(env: &str, p: &Preview, refusals: &[String]) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = p
        .plan
        .targets
        .iter()
        .zip(&p.objects)
        .zip(&p.terraform)
        .map(|((tp, objects), tf)| {
            serde_json::json!({
                "target": tp.target.name,
                "type": tp.target.kind.to_string(),
                "error": objects.as_ref().err(),
                "objects": objects.as_deref().unwrap_or_default().iter().map(ObjectDiff::to_json).collect::<Vec<_>>(),
                "terraform": tf.as_ref().map(|r| match r {
                    Ok(s) => serde_json::json!({"summary": s}),
                    Err(e) => serde_json::json!({"error": e}),
                }),
            })
        })
        .collect();
    serde_json::json!({
        "env": env,
        "from": p.plan.from.map(|f| f.to_string()),
        "to": p.plan.to.to_string(),
        "targets": targets,
        "refused": refusals,
    })
}
