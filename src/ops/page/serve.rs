//! `GET /` on `watch --listen` (with `[web] serve = true`): the status page of the mirror,
//! rendered on request. Renders are serialised and reused for a short while, so a burst of
//! requests (the listener serves at most 16 at once) costs one render, not sixteen. The answer
//! is plain data; `webhook.rs` sends it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backends::repo::Session;

/// How long a rendered page is served again before the next request renders a new one.
const FRESH: Duration = Duration::from_secs(2);

static CACHE: Mutex<Option<(Instant, Arc<String>)>> = Mutex::new(None);

/// Answers one GET request for `path` (its query string ignored) with the page of the
/// repository at `git_dir`: 200 for `/` and `/index.html`, 404 for anything else, 500 (with
/// no detail: the port may face the internet; the log has it) when the page cannot be made.
pub fn get(git_dir: &Path, path: &str) -> Answer {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path != "/" && path != "/index.html" {
        return answer(404, "text/plain; charset=utf-8", b"not found\n");
    }
    match page(git_dir) {
        Ok(html) => answer(200, "text/html; charset=utf-8", html.as_bytes()),
        Err(e) => {
            log::warn!("status page: {}", crate::out::error_line(&e));
            answer(
                500,
                "text/plain; charset=utf-8",
                b"status page unavailable\n",
            )
        }
    }
}

/// An HTTP answer: status, headers (lowercase names) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

fn page(git_dir: &Path) -> anyhow::Result<Arc<String>> {
    // Held while rendering: concurrent requests wait for this render and share it.
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, html)) = cache.as_ref() {
        if at.elapsed() < FRESH {
            return Ok(Arc::clone(html));
        }
    }
    let session = Session::open(Some(git_dir))?;
    let html = Arc::new(super::render_session(&session)?);
    *cache = Some((Instant::now(), Arc::clone(&html)));
    Ok(html)
}

fn answer(status: u16, content_type: &str, body: &[u8]) -> Answer {
    let csp = format!(
        "{}; frame-ancestors 'none'",
        super::html::content_security_policy()
    );
    Answer {
        status,
        headers: vec![
            ("content-type", content_type.to_string()),
            ("content-security-policy", csp),
            ("x-content-type-options", "nosniff".into()),
            ("referrer-policy", "no-referrer".into()),
            ("cache-control", "no-store".into()),
        ],
        body: body.to_vec(),
    }
}
