//! The `[web]` table of the server config: where the status page is written, how much history
//! it shows, how commits link to the forge, and whether `watch --listen` serves it. A leaf
//! module (no hookops imports) so that `config` can hold it without depending on the page.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// Attempts per environment in the timeline unless configured.
pub const DEFAULT_TIMELINE: usize = 50;

/// Upper bound for `timeline`: keeps the page small and its render fast whatever the history.
pub const MAX_TIMELINE: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Rewritten atomically after every deploy, rollback and drift check.
    pub page: Option<PathBuf>,
    /// Attempts per environment in the timeline (1 to 1000).
    #[serde(default = "default_timeline", deserialize_with = "timeline")]
    pub timeline: usize,
    /// Commit links: `{commit}` is replaced by the full commit id.
    #[serde(default, deserialize_with = "commit_url")]
    pub commit_url: Option<String>,
    /// `watch --listen` also answers `GET /` with the page (off: that port often faces the
    /// internet).
    #[serde(default)]
    pub serve: bool,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            page: None,
            timeline: DEFAULT_TIMELINE,
            commit_url: None,
            serve: false,
        }
    }
}

fn default_timeline() -> usize {
    DEFAULT_TIMELINE
}

fn timeline<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 || n > MAX_TIMELINE {
        return Err(serde::de::Error::custom(format!(
            "[web] timeline must be 1 to {MAX_TIMELINE}, not {n}"
        )));
    }
    Ok(n)
}

/// An `http(s)://` URL holding `{commit}`: the page puts it in `href`s, so a `javascript:`
/// URL or a template that links every commit to the same place is refused at load time.
fn commit_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    check_commit_url(&url).map_err(serde::de::Error::custom)?;
    Ok(Some(url))
}

pub fn check_commit_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(format!(
            "[web] commit_url must start with https:// or http://, not {url:?}"
        ));
    }
    if !url.contains("{commit}") {
        return Err(format!(
            "[web] commit_url must contain {{commit}} (replaced by the commit id): {url:?}"
        ));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("[web] commit_url must not contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrap {
        #[serde(default)]
        web: Web,
    }

    fn parse(text: &str) -> Result<Web, String> {
        toml::from_str::<Wrap>(text)
            .map(|w| w.web)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        let w = parse("").unwrap();
        assert_eq!(w.timeline, 50);
        assert!(!w.serve && w.page.is_none() && w.commit_url.is_none());
        let w = parse(
            "[web]\npage = \"/srv/www/status.html\"\ntimeline = 20\nserve = true\ncommit_url = \"https://git.example/infra/commit/{commit}\"\n",
        )
        .unwrap();
        assert_eq!(w.timeline, 20);
        assert!(w.serve);
        assert_eq!(
            w.commit_url.as_deref(),
            Some("https://git.example/infra/commit/{commit}")
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("[web]\ntimeline = 0\n", "1 to 1000"),
            ("[web]\ntimeline = 5000\n", "1 to 1000"),
            (
                "[web]\ncommit_url = \"javascript:alert(1)//{commit}\"\n",
                "https://",
            ),
            ("[web]\ncommit_url = \"https://git.example/\"\n", "{commit}"),
            ("[web]\ncommit_url = \"https://x/{commit} y\"\n", "spaces"),
            ("[web]\nallowed = 1\n", "unknown field"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
