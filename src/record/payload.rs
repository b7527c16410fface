//! The JSON payload of a record: what one deploy attempt did. `record.rs` turns it into signed
//! note text; `history` reads it back. Field names are public interface (DESIGN.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    RolledBack,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deploy,
    Rollback,
    Drift,
}

impl Action {
    /// As in the record: `deploy`, `rollback`, `drift`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Drift => "drift",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub result: Outcome,
    pub applied: usize,
    pub pruned: usize,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// drift: objects or resources that differ from the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted: Option<usize>,
    /// Objects deleted and created again because a field was immutable (`Kind ns/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recreated: Vec<String>,
    /// Hook Jobs run: `pre-deploy Job ns/name: succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// A chart target: the chart deployed (docs/records.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartRecord>,
    /// Identities (inventory keys) the prune step settled: deleted, found gone already, or of
    /// a kind the server does not serve (so they cannot exist there). The inventory forgets
    /// them; `pruned` counts only the deleted ones.
    #[serde(skip)]
    pub settled: Vec<String>,
}

impl TargetReport {
    /// A target that succeeded having done nothing yet; stages fill in what happened.
    pub fn new(name: &str, kind: impl ToString) -> TargetReport {
        TargetReport {
            name: name.to_string(),
            kind: kind.to_string(),
            result: Outcome::Succeeded,
            applied: 0,
            pruned: 0,
            duration_ms: 0,
            reason: None,
            drifted: None,
            recreated: Vec::new(),
            hooks: Vec::new(),
            chart: None,
            settled: Vec::new(),
        }
    }
}

/// The chart a chart target deployed: its name and version, its release, and for a remote
/// chart where it came from and the digest of the package rendered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChartRecord {
    pub name: String,
    pub version: String,
    pub release: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub env: String,
    pub action: Action,
    pub result: Outcome,
    pub commit: String,
    pub from: Option<String>,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub started_at: String,
    pub finished_at: String,
    pub host: String,
    pub signer: Option<String>,
    pub targets: Vec<TargetReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
    /// Objects no file declares any more that were not deleted, and why (`Kind ns/name: why`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hookops_version: Option<String>,
}

impl Report {
    /// The report with its free text cleaned (`out::clean`); names, ids and times as they are.
    pub fn cleaned(&self) -> Report {
        let clean = |s: &String| crate::out::clean(s).into_owned();
        let all = |v: &[String]| v.iter().map(clean).collect();
        let mut r = self.clone();
        r.reason = self.reason.as_ref().map(clean);
        r.kept = all(&self.kept);
        for t in &mut r.targets {
            t.reason = t.reason.as_ref().map(clean);
            t.recreated = all(&t.recreated);
            t.hooks = all(&t.hooks);
        }
        r
    }

    /// The compact one-line JSON that is signed.
    pub fn payload(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn duration_ms(&self) -> Option<i64> {
        let a = chrono::DateTime::parse_from_rfc3339(&self.started_at).ok()?;
        let b = chrono::DateTime::parse_from_rfc3339(&self.finished_at).ok()?;
        Some((b - a).num_milliseconds())
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_one_line_and_roundtrips() {
        let r = Report {
            env: "prod".into(),
            action: Action::Deploy,
            result: Outcome::RolledBack,
            commit: "c".into(),
            from: None,
            ref_name: "refs/heads/main".into(),
            started_at: now(),
            finished_at: now(),
            host: hostname(),
            signer: None,
            targets: vec![TargetReport {
                name: "web".into(),
                kind: "kubectl".into(),
                result: Outcome::Failed,
                applied: 3,
                pruned: 1,
                duration_ms: 5,
                reason: Some("line\nbreak".into()),
                drifted: None,
                recreated: Vec::new(),
                hooks: Vec::new(),
                chart: None,
                settled: Vec::new(),
            }],
            reason: None,
            rolled_back_to: Some("abc".into()),
            kept: Vec::new(),
            hookops_version: None,
        };
        let p = r.payload();
        assert!(!p.contains('\n'));
        assert!(p.starts_with(r#"{"env":"prod","action":"deploy","result":"rolled_back","#));
        let back: Report = serde_json::from_str(&p).unwrap();
        assert_eq!(back, r);
    }
}
