//! Renders a `Page` as one self-contained HTML document: inline CSS, an inline SVG chart per
//! environment and one small inline script, each allowed by its hash in the page's own
//! Content-Security-Policy, which allows nothing else (no other script, no external fetch).
//! Pure: no git, no clock, no environment.
//!
//! Subjects, author names, target names, reasons and every other record field come from
//! pushers: each goes through `escape` (text and attribute values alike, always in double
//! quotes). Only commit ids that parse as full hex ids become links.

use std::collections::HashMap;
use std::fmt::Write;

use sha2::{Digest, Sha256};

use super::{Attempt, EnvView, Page, Related, Relation, Signature, Summary};
use crate::record::payload::{Action, Outcome, Report, TargetReport};

/// Targets listed per timeline entry (failed ones first); the rest are counted.
const MAX_TARGETS: usize = 20;
/// Per-target lanes in an environment's chart.
const MAX_LANES: usize = 8;
/// Characters of a reason or subject shown (the full text is in `hookops history`).
const MAX_TEXT: usize = 300;
const MAX_SUBJECT: usize = 120;
/// Objects listed from a record's `kept`, `recreated` or `hooks`.
const MAX_LIST: usize = 5;

/// The page's only script: relative times beside `<time class="rel">`, then a marker
/// (`data-js="ok"` on `<html>`, or `data-js-error`) that tests read from the rendered DOM.
pub const SCRIPT: &str = r#"(function () {
  var root = document.documentElement;
  try {
    var now = Date.now();
    var units = [[86400000, "d"], [3600000, "h"], [60000, "min"], [1000, "s"]];
    var rel = function (ms) {
      var a = Math.abs(ms);
      for (var i = 0; i < units.length; i++) {
        if (a >= units[i][0] || i === units.length - 1) {
          var n = Math.floor(a / units[i][0]) + " " + units[i][1];
          return ms < 0 ? "in " + n : n + " ago";
        }
      }
    };
    var times = document.querySelectorAll("time.rel[datetime]");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (isNaN(at)) continue;
      var ago = document.createElement("span");
      ago.className = "ago";
      ago.textContent = " (" + rel(now - at) + ")";
      times[i].parentNode.insertBefore(ago, times[i].nextSibling);
    }
    root.setAttribute("data-js", "ok");
  } catch (e) {
    root.setAttribute("data-js-error", String(e));
  }
})();"#;

const STYLE: &str = r#"
:root{--ok:#1a7f37;--bad:#cf222e;--back:#bf8700;--skip:#8c959f;--fg:#1f2328;--dim:#59636e;--bg:#fff;--line:#d1d9e0;--soft:#f6f8fa}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--dim:#9198a1;--bg:#0d1117;--line:#3d444d;--soft:#151b23}}
*{box-sizing:border-box}
body{margin:0;padding:16px 24px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}
code,.commit,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
a{color:#0969da}a.commit{text-decoration:none}
.meta,.sub,.count,.host,.branch,.ago{color:var(--dim);font-size:12.5px}
.warn{border:1px solid var(--bad);background:rgba(207,34,46,.08);padding:6px 10px;border-radius:6px;margin:8px 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line)}
thead th{font-size:12px;color:var(--dim);font-weight:600}
tr.env>th{border-left:4px solid var(--skip)}
tr.state-ok>th{border-left-color:var(--ok)}tr.state-failed>th{border-left-color:var(--bad)}tr.state-drifted>th{border-left-color:var(--back)}
.badge{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:var(--skip)}
.r-succeeded{background:var(--ok)}.r-failed{background:var(--bad)}.r-rolled_back{background:var(--back)}.r-skipped{background:var(--skip)}
.drifted{color:var(--back);font-weight:600}.failed{color:var(--bad);font-weight:600}.insync{color:var(--ok)}
.reason{white-space:pre-wrap;word-break:break-word;margin:2px 0}.related{margin:2px 0}
ol.timeline{list-style:none;padding:0;margin:0}
li.attempt{border:1px solid var(--line);border-left:4px solid var(--skip);border-radius:6px;padding:6px 10px;margin:6px 0}
li.attempt.res-succeeded{border-left-color:var(--ok)}li.attempt.res-failed{border-left-color:var(--bad)}li.attempt.res-rolled_back{border-left-color:var(--back)}
li.attempt:target{outline:2px solid #0969da}
.head>*{margin-right:8px}.action{font-weight:600}
.sig{font-size:12px;padding:0 6px;border-radius:10px;border:1px solid var(--line)}
.sig-good{color:var(--ok)}.sig-bad,.sig-unknown,.sig-expired{color:#fff;background:var(--bad);border-color:var(--bad);font-weight:600}.sig-unsigned,.sig-unchecked{color:var(--dim)}
table.targets{width:auto;margin-top:4px;font-size:12.5px}table.targets td{padding:2px 8px;border:0}
svg.chart{width:100%;max-width:960px;height:auto;background:var(--soft);border-radius:6px}
svg .c-succeeded{fill:var(--ok)}svg .c-failed{fill:var(--bad)}svg .c-rolled_back{fill:var(--back)}svg .c-skipped{fill:var(--skip)}
svg .base{stroke:var(--line)}svg text{fill:var(--dim);font-size:11px}svg text.lane{fill:var(--fg)}
.legend span{margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
footer{margin-top:24px;color:var(--dim);font-size:12.5px}
"#;

/// Escapes text for HTML text and double-quoted attribute values. What `out::is_unsafe` names
/// (control characters, the invisible bidirectional controls that could make a subject read
/// as something else) is shown as `\u{…}`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if crate::out::is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", base64(&Sha256::digest(text.as_bytes())))
}

/// The page's Content-Security-Policy: its own script and style (by hash) and nothing else.
/// (`frame-ancestors` only works as a header; `serve` adds it there.)
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    )
}

fn short(hex: &str) -> &str {
    hex.get(..10).unwrap_or(hex)
}

fn is_full_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A commit: a link when `[web] commit_url` is set and `id` is a full hex id, else its short
/// id (the full one as a tooltip). Record fields are untrusted, so anything else is text.
fn commit_ref(page: &Page, id: &str) -> String {
    if !is_full_id(id) {
        return format!("<code class=\"commit\">{}</code>", escape(&clip(id, 40)));
    }
    match &page.commit_url {
        Some(url) => format!(
            "<a class=\"commit\" href=\"{}\" title=\"{id}\">{}</a>",
            escape(&url.replace("{commit}", id)),
            short(id)
        ),
        None => format!("<code class=\"commit\" title=\"{id}\">{}</code>", short(id)),
    }
}

/// A record time as `<time>` (UTC), or the raw text when it does not parse.
fn time(raw: &str, relative: bool) -> String {
    match chrono::DateTime::parse_from_rfc3339(raw) {
        Ok(t) => {
            let t = t.with_timezone(&chrono::Utc);
            format!(
                "<time{} datetime=\"{}\">{}</time>",
                if relative { " class=\"rel\"" } else { "" },
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )
        }
        Err(_) => format!("<span class=\"mono\">{}</span>", escape(&clip(raw, 40))),
    }
}

pub fn duration(ms: i64) -> String {
    match ms {
        ms if ms < 0 => "?".into(),
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

fn action(a: Action) -> &'static str {
    a.as_str()
}

fn badge(result: Outcome) -> String {
    format!("<span class=\"badge r-{0}\">{0}</span>", result.as_str())
}

fn signature(sig: &Signature) -> String {
    let (class, text) = match sig {
        Signature::Good(p) => ("good", format!("✓ signed by {p}")),
        Signature::Bad => ("bad", "✗ BAD signature".to_string()),
        Signature::UnknownKey(fp) => ("unknown", format!("✗ unknown key {fp}")),
        Signature::Expired(p) => ("expired", format!("✗ {p}: outside the key's validity")),
        Signature::Unsigned => ("unsigned", "unsigned".to_string()),
        Signature::NotChecked => ("unchecked", "signed (key not checked)".to_string()),
    };
    format!(
        "<span class=\"sig sig-{class}\">{}</span>",
        escape(&clip(&text, 120))
    )
}

fn drifted_targets(r: &Report) -> Vec<&TargetReport> {
    r.targets
        .iter()
        .filter(|t| t.drifted.unwrap_or(0) > 0)
        .collect()
}

/// The environment row's state: the border colour, and a word for tests and scripts.
fn state(env: &EnvView) -> &'static str {
    let failed = env
        .last
        .as_ref()
        .is_some_and(|l| l.report.result == Outcome::Failed);
    let drifted = env.drift.as_ref().is_some_and(|d| {
        env.deployed.as_ref().is_some_and(|c| c.id == d.commit)
            && !drifted_targets(&d.report).is_empty()
    });
    match (&env.deployed, failed, drifted) {
        (None, false, _) => "never",
        (_, true, _) => "failed",
        (_, _, true) => "drifted",
        _ => "ok",
    }
}

/// Links to a summary's timeline entry when it has one.
fn entry_link(s: &Summary, inner: &str) -> String {
    match &s.anchor {
        Some(a) => format!("<a href=\"#{}\">{inner}</a>", escape(a)),
        None => inner.to_string(),
    }
}

fn env_row(page: &Page, env: &EnvView, out: &mut String) {
    let name = escape(&env.name);
    let _ = write!(
        out,
        "<tr class=\"env state-{state}\" id=\"row-{name}\" data-env=\"{name}\" data-state=\"{state}\">\
         <th><a href=\"#env-{name}\">{name}</a><div class=\"branch\">{}</div></th>",
        escape(env.branch.strip_prefix("refs/heads/").unwrap_or(&env.branch)),
        state = state(env),
    );
    out.push_str("<td class=\"deployed\">");
    match &env.deployed {
        Some(c) => {
            let _ = write!(
                out,
                "{} <span class=\"subject\">{}</span><div class=\"sub\">{}{}</div>",
                commit_ref(page, &c.id.to_string()),
                escape(&clip(&c.subject, MAX_SUBJECT)),
                escape(&c.author),
                if c.time.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", time(&c.time, false))
                }
            );
        }
        None => out.push_str("<span class=\"sub\">never deployed</span>"),
    }
    out.push_str("</td><td class=\"pending\">");
    match (env.pending, env.tip) {
        (Some(0), _) => out.push_str("up to date"),
        (Some(n), tip) => {
            let _ = write!(
                out,
                "<strong>{}</strong> waiting{}",
                plural(n, "commit", "commits"),
                tip.map(|t| format!(
                    "<div class=\"sub\">tip {}</div>",
                    commit_ref(page, &t.to_string())
                ))
                .unwrap_or_default()
            );
        }
        (None, _) => out.push_str("<span class=\"sub\">branch not found</span>"),
    }
    out.push_str("</td><td class=\"last\">");
    match &env.last {
        Some(l) => {
            let r = &l.report;
            let _ = write!(
                out,
                "{} {} of {}<div class=\"sub\">{}</div>",
                entry_link(l, &badge(r.result)),
                action(r.action),
                commit_ref(page, &l.commit.to_string()),
                time(&r.finished_at, true)
            );
            if let Some(reason) = &r.reason {
                let _ = write!(
                    out,
                    "<p class=\"reason\">{}</p>",
                    escape(&clip(reason, MAX_TEXT))
                );
            }
        }
        None => out.push_str("<span class=\"sub\">no attempts</span>"),
    }
    out.push_str("</td><td class=\"drift\">");
    match &env.drift {
        Some(d) => {
            let drifted = drifted_targets(&d.report);
            let text = if !drifted.is_empty() {
                let names: Vec<String> = drifted
                    .iter()
                    .take(MAX_LIST)
                    .map(|t| format!("{} ({})", clip(&t.name, 60), t.drifted.unwrap_or(0)))
                    .collect();
                let more = drifted.len().saturating_sub(MAX_LIST);
                format!(
                    "<span class=\"drifted\">drifted</span>: {}{}",
                    escape(&names.join(", ")),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            } else if d.report.result == Outcome::Succeeded {
                "<span class=\"insync\">in sync</span>".to_string()
            } else {
                format!(
                    "<span class=\"failed\">check failed</span>: {}",
                    escape(&clip(d.report.reason.as_deref().unwrap_or(""), MAX_TEXT))
                )
            };
            let _ = write!(
                out,
                "{}<div class=\"sub\">{}",
                entry_link(d, &text),
                time(&d.report.finished_at, true)
            );
            if env.deployed.as_ref().is_some_and(|c| c.id != d.commit) {
                let _ = write!(
                    out,
                    " · checked {}, not the deployed commit",
                    commit_ref(page, &d.commit.to_string())
                );
            }
            out.push_str("</div>");
        }
        None => out.push_str("<span class=\"sub\">never checked</span>"),
    }
    let _ = writeln!(
        out,
        "</td><td class=\"queue\">{}</td><td class=\"objects\">{}</td></tr>",
        if env.queued {
            "<strong>deploy queued</strong>"
        } else {
            "<span class=\"sub\">none</span>"
        },
        env.objects.map(thousands).unwrap_or_else(|| "—".into())
    );
}

fn related(page: &Page, r: &Related) -> String {
    let target = match &r.anchor {
        Some(a) => format!(
            "<a href=\"#{}\">{}</a>",
            escape(a),
            escape(short(&clip(&r.commit, 40)))
        ),
        None => commit_ref(page, &r.commit),
    };
    let label = match r.relation {
        Relation::RolledBackTo => "rolled back to",
        Relation::RolledBackFrom => "rolled back from",
    };
    format!("<p class=\"related\">{label} {target}</p>")
}

fn target_row(t: &TargetReport, out: &mut String) {
    let mut counts = format!("applied {}, pruned {}", t.applied, t.pruned);
    if let Some(d) = t.drifted {
        let _ = write!(counts, ", drifted {d}");
    }
    let _ = write!(
        out,
        "<tr class=\"target res-{r}\"><td class=\"tname\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
        escape(&clip(&t.name, 120)),
        escape(&clip(&t.kind, 20)),
        badge(t.result),
        counts,
        duration(t.duration_ms as i64),
        escape(&clip(t.reason.as_deref().unwrap_or(""), MAX_TEXT)),
        r = t.result.as_str(),
    );
    for (label, list) in [("re-created", &t.recreated), ("hooks", &t.hooks)] {
        if !list.is_empty() {
            let _ = write!(
                out,
                "<tr><td></td><td colspan=\"5\" class=\"sub\">{label}: {}</td></tr>",
                escape(&list_text(list))
            );
        }
    }
}

fn list_text(list: &[String]) -> String {
    let shown: Vec<String> = list.iter().take(MAX_LIST).map(|s| clip(s, 120)).collect();
    let more = list.len().saturating_sub(MAX_LIST);
    if more > 0 {
        format!("{} and {more} more", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

fn entry(page: &Page, a: &Attempt, out: &mut String) {
    let r = &a.report;
    let _ = write!(
        out,
        "<li class=\"attempt res-{res} act-{act}\" id=\"{id}\" data-result=\"{res}\" data-action=\"{act}\">\
         <div class=\"head\">{when} <span class=\"action\">{act}</span> {badge} {commit} <span class=\"subject\">{subject}</span>{author} <span class=\"dur\">{dur}</span> {sig}</div>",
        id = escape(&a.anchor),
        res = r.result.as_str(),
        act = action(r.action),
        when = time(&r.finished_at, false),
        badge = badge(r.result),
        commit = commit_ref(page, &a.commit.to_string()),
        subject = escape(&clip(a.subject.as_deref().unwrap_or(""), MAX_SUBJECT)),
        author = a
            .author
            .as_deref()
            .map(|n| format!(" <span class=\"sub\">by {}</span>", escape(&clip(n, 80))))
            .unwrap_or_default(),
        dur = r.duration_ms().map(duration).unwrap_or_default(),
        sig = signature(&a.signature),
    );
    if let Some(reason) = &r.reason {
        let _ = write!(
            out,
            "<p class=\"reason\">{}</p>",
            escape(&clip(reason, MAX_TEXT))
        );
    }
    if let Some(rel) = &a.related {
        out.push_str(&related(page, rel));
    }
    if !r.kept.is_empty() {
        let _ = write!(
            out,
            "<p class=\"sub\">kept (not pruned): {}</p>",
            escape(&list_text(&r.kept))
        );
    }
    if !r.targets.is_empty() {
        out.push_str("<table class=\"targets\">");
        // Failed targets first, so a cap never hides one.
        let mut order: Vec<&TargetReport> = r.targets.iter().collect();
        order.sort_by_key(|t| t.result == Outcome::Succeeded);
        for t in order.iter().take(MAX_TARGETS) {
            target_row(t, out);
        }
        let hidden = &order[order.len().min(MAX_TARGETS)..];
        if !hidden.is_empty() {
            let mut by: HashMap<&str, usize> = HashMap::new();
            for t in hidden {
                *by.entry(t.result.as_str()).or_default() += 1;
            }
            let mut parts: Vec<String> = by.iter().map(|(k, n)| format!("{n} {k}")).collect();
            parts.sort();
            let _ = write!(
                out,
                "<tr><td colspan=\"6\" class=\"sub\">and {} more targets ({})</td></tr>",
                hidden.len(),
                parts.join(", ")
            );
        }
        out.push_str("</table>");
    }
    let _ = writeln!(
        out,
        "<div class=\"host\">on {}{}</div></li>",
        escape(&clip(&r.host, 80)),
        r.hookops_version
            .as_deref()
            .map(|v| format!(" · hookops {}", escape(&clip(v, 20))))
            .unwrap_or_default()
    );
}

// ---- chart -------------------------------------------------------------------------------

const W: f64 = 960.0;
const LEFT: f64 = 180.0;
const RIGHT: f64 = 12.0;
const TOP_LANE: f64 = 80.0;
const LANE: f64 = 24.0;
const GAP: f64 = 10.0;

/// One bar: the entry it links to, its result, its duration and its tooltip.
struct Bar<'a> {
    anchor: &'a str,
    result: Outcome,
    ms: i64,
    tip: String,
}

/// Deploy and rollback durations over time (oldest left): a lane for whole attempts, then
/// one per target (those that failed most, then the slowest), each bar coloured by result
/// and linked to its timeline entry. Each lane has its own scale, printed at its left.
fn chart(env: &EnvView) -> String {
    let attempts: Vec<&Attempt> = env
        .timeline
        .iter()
        .rev()
        .filter(|a| a.report.action != Action::Drift)
        .collect();
    if attempts.is_empty() {
        return "<p class=\"sub\">no deploys to chart yet</p>".into();
    }
    let n = attempts.len();
    let slot = ((W - LEFT - RIGHT) / n as f64).min(40.0);
    let bar_w = (slot * 0.72).max(1.0);

    // Targets ranked: most non-succeeded results, then the slowest, then by name.
    let mut stats: HashMap<&str, (usize, u64)> = HashMap::new();
    for a in &attempts {
        for t in &a.report.targets {
            let s = stats.entry(t.name.as_str()).or_default();
            s.0 += usize::from(t.result != Outcome::Succeeded);
            s.1 = s.1.max(t.duration_ms);
        }
    }
    let mut names: Vec<(&str, (usize, u64))> = stats.into_iter().collect();
    names.sort_by(|a, b| {
        b.1 .0
            .cmp(&a.1 .0)
            .then(b.1 .1.cmp(&a.1 .1))
            .then(a.0.cmp(b.0))
    });
    let more = names.len().saturating_sub(MAX_LANES);
    names.truncate(MAX_LANES);

    let height = 8.0 + TOP_LANE + GAP + names.len() as f64 * (LANE + GAP) + 22.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"durations of the last {n} deploys and rollbacks of {env}\">\
         <title>durations of the last {n} deploys and rollbacks of {env}</title>",
        env = escape(&env.name)
    );
    let whole: Vec<Bar> = attempts
        .iter()
        .map(|a| Bar {
            anchor: &a.anchor,
            result: a.report.result,
            ms: a.report.duration_ms().unwrap_or(0).max(0),
            tip: format!(
                "{} {} {} · {} · {}",
                action(a.report.action),
                short(&a.commit.to_string()),
                a.report.result.as_str(),
                a.report.duration_ms().map(duration).unwrap_or_default(),
                a.report.finished_at
            ),
        })
        .collect();
    let mut y = 8.0;
    lane(&mut svg, "attempt", &whole, y, TOP_LANE, slot, bar_w, n);
    y += TOP_LANE + GAP;
    for (name, _) in &names {
        let bars: Vec<Bar> = attempts
            .iter()
            .map(
                |a| match a.report.targets.iter().find(|t| t.name == *name) {
                    Some(t) => Bar {
                        anchor: &a.anchor,
                        result: t.result,
                        ms: t.duration_ms as i64,
                        tip: format!(
                            "{} in {} {} · {} · {}{}",
                            clip(name, 60),
                            action(a.report.action),
                            short(&a.commit.to_string()),
                            t.result.as_str(),
                            duration(t.duration_ms as i64),
                            t.reason
                                .as_deref()
                                .map(|r| format!(" · {}", clip(r, 160)))
                                .unwrap_or_default()
                        ),
                    },
                    // Not part of that attempt: no bar.
                    None => Bar {
                        anchor: &a.anchor,
                        result: Outcome::Skipped,
                        ms: -1,
                        tip: String::new(),
                    },
                },
            )
            .collect();
        lane(&mut svg, name, &bars, y, LANE, slot, bar_w, n);
        y += LANE + GAP;
    }
    // The axis: the first attempt's time under the first bar, the last one's under the last
    // bar (far enough right not to overlap when there are only a few bars).
    let (first, last) = (
        axis_time(&attempts[0].report.finished_at),
        axis_time(&attempts[n - 1].report.finished_at),
    );
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{:.0}\">{first}</text>",
        y + 6.0
    );
    if last != first {
        let _ = write!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{last}</text>",
            (LEFT + slot * n as f64).max(LEFT + 300.0),
            y + 6.0
        );
    }
    svg.push_str("</svg>");
    if more > 0 {
        let _ = write!(
            svg,
            "<p class=\"sub\">{} not charted (fewer failures, faster)</p>",
            plural(more, "more target", "more targets")
        );
    }
    svg
}

/// A time on the chart's axis: to the minute, UTC.
fn axis_time(raw: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(raw) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
        Err(_) => escape(&clip(raw, 20)),
    }
}

#[allow(clippy::too_many_arguments)]
fn lane(svg: &mut String, name: &str, bars: &[Bar], top: f64, h: f64, slot: f64, w: f64, n: usize) {
    let max = bars.iter().map(|b| b.ms).max().unwrap_or(0).max(1);
    let bottom = top + h;
    let _ = write!(
        svg,
        "<text class=\"lane\" x=\"4\" y=\"{:.0}\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>\
         <line class=\"base\" x1=\"{LEFT}\" x2=\"{:.0}\" y1=\"{bottom}\" y2=\"{bottom}\"/>",
        top + 14.0,
        // Room for the scale beside a one-line lane's name.
        escape(&clip(name, if h > LANE { 22 } else { 17 })),
        LEFT - 6.0,
        top + if h > LANE { 28.0 } else { 14.0 },
        if h > LANE {
            format!("max {}", duration(max))
        } else {
            duration(max)
        },
        LEFT + slot * n as f64,
    );
    for (i, b) in bars.iter().enumerate() {
        if b.ms < 0 {
            continue;
        }
        let bh = (h * b.ms as f64 / max as f64).max(2.0);
        let _ = write!(
            svg,
            "<a href=\"#{}\"><rect class=\"c-{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{bh:.1}\"><title>{}</title></rect></a>",
            escape(b.anchor),
            b.result.as_str(),
            LEFT + slot * i as f64 + (slot - w) / 2.0,
            bottom - bh,
            escape(&b.tip),
        );
    }
}

// ---- the page ----------------------------------------------------------------------------

/// The whole document.
pub fn render(page: &Page) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = escape(&page.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"generator\" content=\"hookops {version}\">\n\
         <title>hookops: {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n\
         <h1>hookops · {title}</h1>\n<p class=\"meta\">generated {generated} from {records} · signatures {checked}</p>\n",
        csp = escape(&content_security_policy()),
        version = env!("CARGO_PKG_VERSION"),
        generated = time(&page.generated_at, true),
        records = plural(page.records, "record", "records"),
        checked = if page.signers {
            "checked against <code>[signing] allowed_signers</code>"
        } else {
            "not checked against keys (no <code>[signing] allowed_signers</code>)"
        },
    );
    let bad: Vec<&Attempt> = page
        .envs
        .iter()
        .flat_map(|e| &e.timeline)
        .filter(|a| {
            matches!(
                a.signature,
                Signature::Bad | Signature::UnknownKey(_) | Signature::Expired(_)
            )
        })
        .collect();
    if let Some(first) = bad.first() {
        let _ = writeln!(
            out,
            "<p class=\"warn\" id=\"bad-signatures\">{} shown here did not verify (first: <a href=\"#{}\">{} of {}</a>); check them with <code>hookops verify</code></p>",
            plural(bad.len(), "record", "records"),
            escape(&first.anchor),
            escape(&first.report.env),
            short(&first.commit.to_string())
        );
    }
    if page.unreadable > 0 {
        let _ = writeln!(
            out,
            "<p class=\"warn\">{} could not be read (see <code>hookops history -v</code>)</p>",
            plural(page.unreadable, "note or record", "notes or records")
        );
    }
    out.push_str(
        "</header>\n<main>\n<section id=\"environments\">\n<h2>Environments</h2>\n<table class=\"envs\">\n\
         <thead><tr><th>environment</th><th>deployed</th><th>branch</th><th>last deploy or rollback</th><th>drift</th><th>queue</th><th>objects</th></tr></thead>\n<tbody>\n",
    );
    for env in &page.envs {
        env_row(page, env, &mut out);
    }
    if page.envs.is_empty() {
        out.push_str("<tr><td colspan=\"7\">no environments</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    for env in &page.envs {
        let name = escape(&env.name);
        let _ = write!(
            out,
            "<section class=\"env\" id=\"env-{name}\" data-env=\"{name}\">\n<h2>{name} <span class=\"branch\">{}</span></h2>\n\
             <p class=\"count\">the last {} of {}</p>\n{}\n<ol class=\"timeline\">\n",
            escape(&env.branch),
            thousands(env.timeline.len()),
            plural(env.attempts, "attempt", "attempts"),
            chart(env)
        );
        for a in &env.timeline {
            entry(page, a, &mut out);
        }
        out.push_str("</ol>\n</section>\n");
    }
    let _ = write!(
        out,
        "</main>\n<footer>\n<p class=\"legend\"><span><i class=\"r-succeeded\"></i>succeeded</span><span><i class=\"r-failed\"></i>failed</span>\
         <span><i class=\"r-rolled_back\"></i>rolled back</span><span><i class=\"r-skipped\"></i>skipped</span></p>\n\
         <p>Rendered by hookops {} from <code>refs/notes/hookops</code>, <code>refs/hookops/deployed/*</code>, <code>refs/hookops/inventory/*</code> and the branches. \
         Full history: <code>hookops history</code>; signatures: <code>hookops verify</code>.</p>\n</footer>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::page::{CommitInfo, Summary};
    use crate::record::payload::TargetReport;
    use git2::Oid;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    fn report(result: Outcome, action: Action, at: &str, targets: Vec<TargetReport>) -> Report {
        Report {
            env: "prod".into(),
            action,
            result,
            commit: oid(1).to_string(),
            from: None,
            ref_name: "refs/heads/main".into(),
            started_at: "2026-01-02T03:04:00.000Z".into(),
            finished_at: at.into(),
            host: "deploy-1".into(),
            signer: None,
            targets,
            reason: None,
            rolled_back_to: None,
            kept: Vec::new(),
            hookops_version: None,
        }
    }

    const HOSTILE: &str =
        "<script>alert(1)</script> \"onmouseover=alert(2) '<img src=x onerror=alert(3)>";

    fn page() -> Page {
        let mut t = TargetReport::new(HOSTILE, "kubectl");
        t.result = Outcome::Failed;
        t.reason = Some(HOSTILE.into());
        t.duration_ms = 1500;
        let mut failed = report(
            Outcome::Failed,
            Action::Deploy,
            "2026-01-02T03:04:05.000Z",
            vec![t],
        );
        failed.reason = Some(format!("web failed: {HOSTILE}"));
        let attempt = Attempt {
            anchor: "a-prod-1".into(),
            commit: oid(2),
            subject: Some(HOSTILE.into()),
            author: Some(HOSTILE.into()),
            report: failed.clone(),
            signature: Signature::Bad,
            related: Some(Related {
                relation: Relation::RolledBackTo,
                commit: "\"><script>x</script>".into(),
                anchor: None,
            }),
        };
        Page {
            title: "<b>repo</b>".into(),
            generated_at: "2026-01-02T03:05:00Z".into(),
            envs: vec![EnvView {
                name: "prod".into(),
                branch: "refs/heads/main".into(),
                tip: Some(oid(2)),
                deployed: Some(CommitInfo {
                    id: oid(1),
                    subject: HOSTILE.into(),
                    author: HOSTILE.into(),
                    time: "2026-01-02T03:00:00Z".into(),
                }),
                pending: Some(1),
                queued: true,
                objects: Some(12_345),
                last: Some(Summary {
                    commit: oid(2),
                    report: failed,
                    anchor: Some("a-prod-1".into()),
                }),
                drift: None,
                timeline: vec![attempt],
                attempts: 1,
            }],
            commit_url: Some("https://git.example/c/{commit}".into()),
            signers: true,
            records: 1,
            unreadable: 0,
        }
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let html = render(&page());
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("\"onmouseover"), "{html}");
        assert!(!html.contains("<b>repo"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &quot;onmouseover=alert(2)"));
        // The only script element is the page's own.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        // A record's commit field that is not an id never becomes a link.
        assert!(!html.contains("href=\"https://git.example/c/\\\""));
        assert!(html.contains(&format!("href=\"https://git.example/c/{}\"", oid(1))));
        assert!(html.contains("12,345"));
        assert!(html.contains("deploy queued"));
        assert!(html.contains("BAD signature"));
        assert!(html.contains("id=\"bad-signatures\""));
    }

    #[test]
    fn escape_covers_quotes_controls_and_bidi() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(escape("x\u{1b}[31m"), "x\\u{1b}[31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hi", 2), "hi");
    }

    #[test]
    fn csp_hashes_match_the_inline_script_and_style() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hell"), "aGVsbA==");
        assert_eq!(base64(b"hel"), "aGVs");
        let csp = content_security_policy();
        assert!(csp.contains(&csp_hash(SCRIPT)) && csp.contains(&csp_hash(STYLE)));
        assert!(csp.starts_with("default-src 'none'"));
    }

    #[test]
    fn durations_and_numbers() {
        assert_eq!(duration(412), "412 ms");
        assert_eq!(duration(4100), "4.1 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn chart_has_a_bar_per_attempt_and_lane() {
        let mut p = page();
        let mut ok = p.envs[0].timeline[0].clone();
        ok.anchor = "a-prod-0".into();
        ok.report.result = Outcome::Succeeded;
        ok.report.targets[0].result = Outcome::Succeeded;
        p.envs[0].timeline.insert(0, ok);
        let svg = chart(&p.envs[0]);
        // Two attempts, one target: two bars in the attempt lane, two in the target's.
        assert_eq!(svg.matches("<rect").count(), 4, "{svg}");
        assert_eq!(svg.matches("class=\"c-failed\"").count(), 2);
        assert!(svg.contains("href=\"#a-prod-0\""));
    }
}
