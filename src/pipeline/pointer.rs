//! The last stage of a successful deploy: `refs/hookops/deployed/<env>` moves to the deployed
//! commit (compare-and-swap: refused if someone else moved it meanwhile), and with
//! `tag_deploys` a `deploy/<env>/<time>` tag marks it.

use anyhow::{Context, Result};
use git2::Oid;

use crate::backends::repo::Session;
use crate::config::Environment;

/// Moves `refs/hookops/deployed/<env>` from `old` to `new`, refusing if someone else moved it.
pub fn move_pointer(
    session: &Session,
    env: &Environment,
    old: Option<Oid>,
    new: Oid,
) -> Result<()> {
    let name = env.pointer_ref();
    let msg = format!("hookops: deployed {new}");
    let repo = &session.repo;
    crate::gitref::swap(repo, &name, new, old, &msg)
        .with_context(|| format!("moving {name} to {new} (it moved meanwhile?)"))?;
    Ok(())
}

/// `deploy/<env>/<UTC timestamp>`, with a counter when two deploys share a second.
pub fn tag(session: &Session, env: &str, commit: Oid) -> Result<()> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 0..100 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let name = format!("refs/tags/deploy/{env}/{stamp}{suffix}");
        if session.repo.find_reference(&name).is_ok() {
            continue;
        }
        session
            .repo
            .reference(&name, commit, false, "hookops: deploy tag")
            .with_context(|| format!("creating {name}"))?;
        return Ok(());
    }
    anyhow::bail!("too many deploy tags for {env} at {stamp}")
}
