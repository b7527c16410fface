//! What operators watch, fed by the records the pipeline writes: the asynchronous deploy
//! `queue`, the Prometheus textfile (`metrics`), the alert webhook (`alerts`) and the status
//! `page`. After every attempt, outside the deploy lock, `after_attempts` brings the last three
//! up to date. All of it is best effort: nothing here changes an attempt's outcome.

pub mod alerts;
pub mod metrics;
pub mod page;
pub mod pending;
pub mod queue;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::backends::repo::Session;
use crate::record::payload::Report;

/// After the records `written` (outside the deploy lock, so that a dead webhook delays
/// nobody's deploy): the status page, then metrics and alerts for each record.
pub fn after_attempts(session: &Session, written: &[Report]) {
    if written.is_empty() {
        return;
    }
    page::refresh(session);
    for rep in written {
        let previous = metrics::after_attempt(session, rep);
        alerts::after_attempt(session, rep, previous);
    }
}

/// Temp file in the same directory, then rename: readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
