//! Several hosts, one environment (lock = "lease", docs/ha.md): around an attempt that holds
//! the file lock, the environment's Lease is taken (waiting while another host holds it), the
//! other hosts' records and pointers are fetched (`[sync] peers`) so this host's pointer
//! follows the newest successful deploy of any of them, and the attempt of a holder that died
//! is recorded as interrupted. `deploy.rs` then reads the inventory's cluster copy and runs
//! the attempt with every cluster write fenced.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use git2::Oid;

use crate::backends::lease::{self, Acquired, Client, Identity, InFlight, Observed};
use crate::backends::remote;
use crate::backends::repo::Session;
use crate::out::say;
use crate::pipeline::plan::short_id;
use crate::record::notes::Recorder;
use crate::record::payload::{Action, Outcome, Report};

/// What the attempt about to run is, for the Lease's annotations.
pub fn in_flight(
    env: &str,
    action: Action,
    commit: Oid,
    ref_name: &str,
    started: &str,
) -> InFlight {
    InFlight {
        env: env.to_string(),
        action: action_name(action).to_string(),
        commit: commit.to_string(),
        ref_name: ref_name.to_string(),
        targets: Vec::new(),
        started_at: started.to_string(),
    }
}

/// The first 7 characters of a commit id read from the cluster (whatever it holds).
fn short(commit: &str) -> &str {
    commit
        .char_indices()
        .nth(7)
        .map_or(commit, |(i, _)| &commit[..i])
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Deploy => "deploy",
        Action::Rollback => "rollback",
        Action::Drift => "drift",
    }
}

/// Says who holds the Lease while this host waits, and gives up when the branch moved on
/// (`coalesce`: a newer push is waiting behind this one for the file lock).
struct Wait<'a> {
    session: &'a Session,
    env: &'a str,
    ref_name: &'a str,
    to: Oid,
    coalesce: bool,
}

impl lease::Waiting for Wait<'_> {
    fn held_by(&mut self, l: &Observed) {
        let what = InFlight::of(l)
            .map(|f| {
                format!(
                    ", {} of {} in flight",
                    f.action,
                    crate::config::printable(short(&f.commit))
                )
            })
            .unwrap_or_default();
        say(&format!(
            "{}: waiting for the Lease: held by {} since {}{what}",
            self.env,
            crate::config::printable(l.holder.as_deref().unwrap_or("?")),
            crate::config::printable(l.acquire_time.as_deref().unwrap_or("?")),
        ));
    }

    fn give_up(&mut self) -> Option<String> {
        if !self.coalesce {
            return None;
        }
        let tip = self.session.repo.refname_to_id(self.ref_name).ok()?;
        (tip != self.to).then(|| format!("superseded by {tip}"))
    }
}

/// Takes `env`'s Lease for an attempt described by `flight`; then, holding it, brings in the
/// peers' records and pointer and records the attempt of a holder that died.
pub fn take(
    session: &Session,
    recorder: &Recorder,
    env: &crate::config::Environment,
    flight: InFlight,
    coalesce: bool,
) -> Result<Acquired> {
    let me = Identity {
        host: session.host(),
        pid: std::process::id(),
        repository: session.git_dir.display().to_string(),
    };
    let kubectl = session.kubectl(env, crate::backends::mask::Masker::new())?;
    let client = Client::new(kubectl, env.lease(), me);
    let to = Oid::from_str(&flight.commit).context("the attempt's commit")?;
    let ref_name = flight.ref_name.clone();
    let mut wait = Wait {
        session,
        env: &env.name,
        ref_name: &ref_name,
        to,
        coalesce,
    };
    let held = match lease::acquire(client, flight, &mut wait)? {
        Acquired::Held(h) => h,
        gave_up => return Ok(gave_up),
    };
    let settled = (|| {
        if !session.config.sync.peers.is_empty() {
            match remote::fetch_peers(session) {
                Ok(()) => follow_pointer(session, &env.name)?,
                Err(e) => say(&format!(
                    "{}: peers: {} (this host's pointer may be behind)",
                    env.name,
                    crate::out::error_line(&e)
                )),
            }
        }
        match &held.taken_from {
            Some(dead) => record_taken_over(session, recorder, &env.name, dead),
            None => Ok(()),
        }
    })();
    if let Err(e) = settled {
        if let Err(r) = held.release() {
            log::info!("releasing the Lease: {r:#}");
        }
        return Err(e);
    }
    Ok(Acquired::Held(held))
}

/// The newest successful deploy or rollback of `env` recorded on `commit`: its finish time.
fn newest_success(session: &Session, env: &str, commit: Oid) -> Option<String> {
    let note = crate::record::notes::read(&session.repo, commit).ok()??;
    let records = crate::record::parse_note(&note).ok()?;
    records
        .iter()
        .filter_map(|r| serde_json::from_str::<Report>(&r.payload).ok())
        .filter(|r| r.env == env && r.result == Outcome::Succeeded)
        .filter(|r| matches!(r.action, Action::Deploy | Action::Rollback))
        .map(|r| r.finished_at)
        .max()
}

/// This host's pointer of `env` moves to the peers' when their newest successful record
/// there is newer than the one on ours (a rollback too: it is the newest deploy then).
pub fn follow_pointer(session: &Session, env: &str) -> Result<()> {
    let local = session.pointer(env);
    let mut best: Option<(String, Oid)> =
        local.and_then(|p| newest_success(session, env, p).map(|t| (t, p)));
    let mut candidates: BTreeMap<Oid, ()> = BTreeMap::new();
    for glob in remote::peer_pointer_globs(env) {
        for r in session
            .repo
            .references_glob(&glob)
            .with_context(|| format!("listing {glob}"))?
            .flatten()
        {
            if let Some(id) = r.target() {
                candidates.insert(id, ());
            }
        }
    }
    for (c, ()) in candidates {
        if let Some(t) = newest_success(session, env, c) {
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, c));
            }
        }
    }
    let Some((when, to)) = best else {
        return Ok(());
    };
    if Some(to) == local {
        return Ok(());
    }
    let name = crate::config::pointer_ref(env);
    let msg = format!("hookops: {env} follows a peer's deploy of {to} (finished {when})");
    crate::gitref::swap(&session.repo, &name, to, local, &msg)
        .with_context(|| format!("moving {name}"))?;
    say(&format!(
        "{env}: deployed pointer follows another host's deploy of {} (finished {when})",
        short_id(to)
    ));
    Ok(())
}

/// A holder that stopped renewing the Lease mid-attempt: its attempt gets a `failed` record
/// (`interrupted`) on its commit, with its own start time, unless a record of it is here
/// already (its host's own recovery, fetched from a peer). A commit this repository lacks is
/// named in the output instead.
fn record_taken_over(
    session: &Session,
    recorder: &Recorder,
    env: &str,
    dead: &Observed,
) -> Result<()> {
    let holder = crate::config::printable(dead.holder.as_deref().unwrap_or("?")).into_owned();
    // Before it named its targets the attempt had written nothing (they are announced before
    // its first write), and its own host's journal knows of it.
    let Some(flight) = InFlight::of(dead).filter(|f| !f.targets.is_empty()) else {
        say(&format!(
            "{env}: took the Lease over from {holder}: it had not started writing"
        ));
        return Ok(());
    };
    let host = dead.annotation(lease::HOST).unwrap_or("another host");
    let targets = format!(" (targets {})", flight.targets.join(", "));
    let what = format!(
        "{} of {} started {} by {}{targets}",
        flight.action,
        crate::config::printable(short(&flight.commit)),
        flight.started_at,
        crate::config::printable(host),
    );
    say(&format!(
        "{env}: took the Lease over from {holder}: the {what} was interrupted"
    ));
    let commit = match Oid::from_str(&flight.commit) {
        Ok(c) if session.repo.find_commit(c).is_ok() => c,
        _ => {
            say(&format!(
                "{env}: {} is not in this repository: its interruption is recorded by its own host",
                crate::config::printable(&flight.commit)
            ));
            return Ok(());
        }
    };
    let action: Action =
        serde_json::from_value(serde_json::json!(flight.action)).unwrap_or(Action::Deploy);
    let already = crate::record::notes::read(&session.repo, commit)
        .ok()
        .flatten()
        .and_then(|n| crate::record::parse_note(&n).ok())
        .is_some_and(|recs| {
            recs.iter()
                .filter_map(|r| serde_json::from_str::<Report>(&r.payload).ok())
                .any(|r| r.env == env && r.action == action && r.started_at == flight.started_at)
        });
    if already {
        return Ok(());
    }
    let rep = recorder.report(
        env,
        action,
        Outcome::Failed,
        &flight.commit,
        &flight.ref_name,
        &flight.started_at,
    );
    let rep = Report {
        host: session.host(),
        reason: Some(format!(
            "interrupted: {host} stopped renewing the Lease{targets}; taken over by {}",
            session.host()
        )),
        ..rep
    };
    recorder.write(&session.repo, commit, &rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures::{commit, repo};

    #[test]
    fn the_pointer_follows_the_newest_success_of_any_host_rollbacks_included() {
        let (dir, repo) = repo();
        let c1 = commit(&repo, None, &[("a.yaml", Some("a: 1\n"))]);
        let c2 = commit(&repo, Some(c1), &[("a.yaml", Some("a: 2\n"))]);
        let recorder = Recorder { signer: None };
        let record = |c: Oid, action: Action, result: Outcome, finished: &str| {
            let rep = recorder.report(
                "e",
                action,
                result,
                &c.to_string(),
                "refs/heads/main",
                finished,
            );
            let rep = Report {
                finished_at: finished.to_string(),
                ..rep
            };
            recorder.write(&repo, c, &rep).unwrap();
        };
        let session = Session::open(Some(dir.path())).unwrap();
        let point = |name: &str, c: Oid| {
            session.repo.reference(name, c, true, "t").unwrap();
        };
        // Ours: c2, deployed at 10:00. A peer's: c1, rolled back to at 11:00.
        record(
            c2,
            Action::Deploy,
            Outcome::Succeeded,
            "2026-01-01T10:00:00Z",
        );
        record(
            c1,
            Action::Rollback,
            Outcome::Succeeded,
            "2026-01-01T11:00:00Z",
        );
        point("refs/hookops/deployed/e", c2);
        point("refs/hookops/peers/0123456789ab/deployed/e", c1);
        follow_pointer(&session, "e").unwrap();
        assert_eq!(session.pointer("e"), Some(c1), "the rollback is the newest");

        // The peer moves to c2 with a failed deploy newer than anything: only successes count,
        // and c2's (10:00) is older than c1's rollback.
        record(c2, Action::Deploy, Outcome::Failed, "2026-01-01T13:00:00Z");
        point("refs/hookops/peers/0123456789ab/deployed/e", c2);
        follow_pointer(&session, "e").unwrap();
        assert_eq!(session.pointer("e"), Some(c1));
        // Then it deploys c2 successfully: followed.
        record(
            c2,
            Action::Deploy,
            Outcome::Succeeded,
            "2026-01-01T14:00:00Z",
        );
        follow_pointer(&session, "e").unwrap();
        assert_eq!(session.pointer("e"), Some(c2));
        // Another environment's records do not count either.
        assert!(newest_success(&session, "other", c1).is_none());
    }
}
