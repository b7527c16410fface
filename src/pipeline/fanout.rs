//! One push, many environments: the deploy requests of a push run in parallel, at most
//! `[deploy] environments_parallel` at once, each environment with its own lock, pointer,
//! inventory and record, so that one slow or failing cluster never holds up another.
//! Environments that share an API server run one after the other, in one lane (the prune of
//! one reads what the other declares). Every output line already names its environment, and
//! `say` writes whole lines, so parallel environments never interleave mid-line. At the end,
//! one line per environment says how it ended.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::backends::repo::Session;
use crate::out::say;
use crate::pipeline::deploy::{Deployer, Request};
use crate::pipeline::plan::short_id;
use crate::record::payload::{Outcome, Report};

/// What a push asks of one environment.
pub enum Job {
    Deploy(Box<Request>),
    /// Not started: the change cannot concern it (why, for the summary).
    NotStarted {
        env: String,
        why: String,
    },
}

/// How one environment ended, for the summary and the exit status.
pub struct Done {
    pub env: String,
    pub ok: bool,
    pub line: String,
}

/// Runs the jobs (in parallel lanes when there are several deploys) and returns how each
/// environment ended, in the order of `jobs`.
pub fn run(session: &Session, deployer: &mut Deployer, jobs: Vec<Job>) -> Vec<Done> {
    let limit = session.config.deploy.environments_parallel.max(1);
    let deploys = jobs.iter().filter(|j| matches!(j, Job::Deploy(_))).count();
    let mut done: Vec<Option<Done>> = Vec::new();
    let mut lanes: Vec<(String, Vec<(usize, Request)>)> = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        match job {
            Job::NotStarted { env, why } => done.push(Some(Done {
                env,
                ok: true,
                line: format!("not started: {why}"),
            })),
            Job::Deploy(req) if deploys < 2 || limit == 1 => {
                let result = deployer.run(&req);
                done.push(Some(finished(&req, result)));
            }
            Job::Deploy(req) => {
                let req = *req;
                done.push(None);
                let server = crate::pipeline::environments::server(&req.env);
                match lanes.iter_mut().find(|(s, _)| *s == server) {
                    Some((_, lane)) => lane.push((i, req)),
                    None => lanes.push((server, vec![(i, req)])),
                }
            }
        }
    }
    if !lanes.is_empty() {
        let workers = limit.min(lanes.len());
        let queue = Mutex::new(lanes.into_iter().map(|(_, l)| l).collect::<VecDeque<_>>());
        let results = Mutex::new(Vec::new());
        let (git_dir, config) = (&session.git_dir, &session.config);
        let after = deployer.after;
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    // The first lane is claimed before the session is opened (the slow part,
                    // under load): otherwise a worker that started first could run every lane
                    // while the others were still opening theirs.
                    let mut next = lock(&queue).pop_front();
                    // A repository handle of its own: git2 handles are not shared.
                    let own = Session::reopen(git_dir, config);
                    let mut deployer = own.as_ref().map_err(|e| format!("{e:#}")).and_then(|s| {
                        Deployer::new(s, after).map_err(|e| format!("signing key: {e:#}"))
                    });
                    while let Some(lane) = next.take() {
                        for (i, req) in lane {
                            let d = match &mut deployer {
                                Ok(d) => finished(&req, d.run(&req)),
                                Err(e) => finished(&req, Err(anyhow::anyhow!("{e}"))),
                            };
                            lock(&results).push((i, d));
                        }
                        next = lock(&queue).pop_front();
                    }
                });
            }
        });
        for (i, d) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
            done[i] = Some(d);
        }
    }
    done.into_iter().flatten().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a request ended; an error is printed here, as the line of its environment.
fn finished(req: &Request, result: anyhow::Result<Option<Report>>) -> Done {
    let env = req.env.name.clone();
    let (ok, line) = match result {
        Ok(None) => (true, format!("{} already deployed", short_id(req.to))),
        Ok(Some(rep)) => summary(&rep),
        Err(e) => {
            let why = crate::out::error_line(&e);
            say(&format!("{env}: error: {why}"));
            (false, format!("error: {why}"))
        }
    };
    Done { env, ok, line }
}

fn summary(rep: &Report) -> (bool, String) {
    let commit = rep.commit.get(..7).unwrap_or(&rep.commit);
    let secs = rep.duration_ms().unwrap_or(0) as f64 / 1000.0;
    match rep.result {
        Outcome::Succeeded if rep.targets.is_empty() => {
            (true, format!("{commit}: no deploy targets changed"))
        }
        Outcome::Succeeded => (
            true,
            format!(
                "deployed {commit} ({} target{}, {secs:.1}s)",
                rep.targets.len(),
                if rep.targets.len() == 1 { "" } else { "s" }
            ),
        ),
        Outcome::Skipped => (
            true,
            format!(
                "{commit} skipped: {}",
                rep.reason.as_deref().unwrap_or("nothing to do")
            ),
        ),
        Outcome::Failed | Outcome::RolledBack => (
            false,
            format!(
                "FAILED {commit} in {secs:.1}s: {}; {}",
                rep.reason.as_deref().unwrap_or("failed"),
                match rep.from.as_deref() {
                    Some(f) => format!("still deployed: {}", f.get(..7).unwrap_or(f)),
                    None => "nothing is marked deployed yet".into(),
                }
            ),
        ),
    }
}

/// The closing lines of a push that involved several environments: one per environment.
pub fn print_summary(done: &[Done]) {
    let width = done.iter().map(|d| d.env.len()).max().unwrap_or(0);
    for d in done {
        say(&format!("summary: {:<width$}  {}", d.env, d.line));
    }
}
