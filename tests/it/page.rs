//! The status page (issue 21): rendered for a repository with two environments on two
//! branches (the kube sandbox), a failed deploy and its rollback, a drift record and a
//! tampered record, then loaded in a real headless Chromium. The assertions are on the DOM as
//! the browser built it (`--dump-dom`): environment rows, timeline entries, rollback links,
//! hostile subjects shown as text with no element injected, and the page's own script having
//! run without an error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    configmap, deployment, namespace, require, tools_present, Run, World, FAIL_ROLLOUT,
};

/// A commit subject and an author name a pusher might try (git strips `<` and `>` from names).
const HOSTILE_SUBJECT: &str =
    "<script>document.title='pwned'</script> \"onmouseover=alert(1) <img src=x onerror=alert(2)>";
const HOSTILE_AUTHOR: &str = "Mallory \"onmouseover=alert(3) &amp; x";
/// A target name from hookops.toml (declared names may hold any printable text).
const HOSTILE_TARGET: &str = "<i>stg</i> \"onclick=alert(4)";

fn world() -> Option<World> {
    if !tools_present() {
        return None;
    }
    let mut w = World::new();
    w.start_sandbox();
    let env = |name: &str, branch: &str| {
        format!(
            "[[environment]]\nname = \"{name}\"\nbranch = \"{branch}\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n\n",
            w.kubeconfig.display()
        )
    };
    w.write_server_config(&format!(
        "{}{}[signing]\nkey = \"{}\"\nallowed_signers = \"{}\"\n\n[web]\npage = \"{}\"\ncommit_url = \"https://git.example/infra/commit/{{commit}}\"\n",
        env("prod", "main"),
        env("staging", "staging"),
        w.key.display(),
        w.allowed_signers.display(),
        page_file(&w).display(),
    ));
    Some(w)
}

fn page_file(w: &World) -> PathBuf {
    w.tmp.path().join("www/status.html")
}

fn app(w: &World, image: &str, annotations: &str) {
    for (path, text) in [
        ("k8s/ns/ns.yaml", namespace("app")),
        (
            "k8s/app/deploy.yaml",
            deployment("web", "app", image, annotations),
        ),
        ("k8s/app/cm.yaml", configmap("settings", Some("app"), image)),
    ] {
        let p = w.clone.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    w.in_clone(&["add", "-A"]).assert_ok();
}

/// The repository of the test: prod deployed, a failed deploy rolled back, a drift check that
/// found drift; staging on its own branch with one deploy whose record was then tampered with.
/// Returns (good, bad, staging) commits.
fn history(w: &World) -> (String, String, String) {
    app(w, "web:1", "");
    w.in_clone(&["commit", "-q", "-m", "app web:1"]).assert_ok();
    let good = w.head();
    w.push().assert_ok();
    // The hook leaves the page to a detached render: it appears shortly after the push.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(page_file(w))
        .unwrap_or_default()
        .contains(&format!("title=\"{good}\""))
    {
        assert!(Instant::now() < deadline, "the hook never wrote [web] page");
        std::thread::sleep(Duration::from_millis(50));
    }

    app(w, "web:2", FAIL_ROLLOUT);
    let author = format!("user.name={HOSTILE_AUTHOR}");
    w.in_clone(&["-c", &author, "commit", "-q", "-m", HOSTILE_SUBJECT])
        .assert_ok();
    let bad = w.head();
    let out = w.push();
    assert!(out.all().contains("rolling back"), "{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(good.as_str()));

    // Staging: its own branch with its own tree.
    w.in_clone(&["checkout", "-q", "--orphan", "staging"])
        .assert_ok();
    w.in_clone(&["rm", "-q", "-r", "-f", "."]).assert_ok();
    let staging = w.commit(
        &[
            (
                "hookops.toml",
                &format!(
                    "[[target]]\nname = {HOSTILE_TARGET:?}\npath = \"stg\"\ntype = \"kubectl\"\n"
                ),
            ),
            ("stg/ns.yaml", &namespace("stg")),
            ("stg/cm.yaml", &configmap("settings", Some("stg"), "s1")),
        ],
        "staging: settings",
    );
    w.push_args(&["origin", "staging"]).assert_ok();
    assert_eq!(w.pointer("staging").as_deref(), Some(staging.as_str()));

    // Drift: an out-of-band edit, found by `hookops drift`.
    let k = Command::new("kubectl")
        .args(["--kubeconfig", w.kubeconfig.to_str().unwrap()])
        .args([
            "-n",
            "app",
            "patch",
            "configmap",
            "settings",
            "--type=merge",
        ])
        .args(["-p", r#"{"data":{"value":"edited"}}"#])
        .output()
        .unwrap();
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    let out = w.hookops(&["drift", "--env", "prod"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    (good, bad, staging)
}

/// Rewrites staging's record as someone with push access to the notes ref could: the
/// signature no longer matches.
fn tamper(w: &World, commit: &str) {
    let note = w.note(commit);
    let tampered = note.replacen("\"host\":\"", "\"host\":\"tampered-", 1);
    assert_ne!(note, tampered);
    w.replace_note(commit, &tampered);
}

/// Headless Chromium, isolated (its own profile, no network services), with its console on
/// stderr.
fn chromium(w: &World, args: &[&str], url: &str) -> Run {
    let profile = tempfile::tempdir_in(w.tmp.path()).unwrap();
    Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .env("HOME", &w.home)
        .stdin(Stdio::null())
        .output()
        .expect("chromium")
        .into()
}

/// The DOM as Chromium rendered `url`, after checking that its console reported no error.
fn rendered_dom(w: &World, url: &str) -> String {
    let out = chromium(w, &["--dump-dom"], url);
    assert!(out.ok(), "chromium failed: {}", out.stderr);
    let console: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .collect();
    assert!(console.is_empty(), "console output: {console:#?}");
    assert!(out.stdout.contains("</html>"), "{}", out.stdout);
    out.stdout
}

/// The element that starts at the first occurrence of `start` (an opening tag's prefix),
/// up to its closing `</tag>` (no nesting of the same tag inside).
fn element<'a>(dom: &'a str, start: &str, tag: &str) -> &'a str {
    let i = dom
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in the DOM"));
    let end = dom[i..]
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("{start}: no </{tag}>"));
    &dom[i..i + end]
}

/// The text of some HTML: tags dropped, the entities the serialiser writes decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[test]
fn status_page_in_a_real_browser() {
    let Some(w) = world() else { return };
    if !require("chromium") {
        return;
    }
    let (good, bad, staging) = history(&w);

    // `[web] page` was rewritten after every attempt, the drift check included.
    let refreshed = std::fs::read_to_string(page_file(&w)).expect("[web] page written");
    assert!(refreshed.contains("class=\"drifted\""), "{refreshed}");

    tamper(&w, &staging);
    let file = w.tmp.path().join("out/status.html");
    w.hookops(&["status", "--html", file.to_str().unwrap()])
        .assert_ok();
    let html = std::fs::read_to_string(&file).unwrap();
    let stdout = w.hookops(&["status", "--html"]);
    stdout.assert_ok();
    assert_eq!(
        stdout.stdout.len(),
        html.len(),
        "stdout and FILE render alike"
    );

    let dom = rendered_dom(&w, &format!("file://{}", file.display()));
    // The page's own script ran, without an error, and is the only script in the DOM.
    let root = &dom[dom.find("<html").unwrap()..];
    let root = &root[..root.find('>').unwrap()];
    assert!(root.contains("data-js=\"ok\""), "{root}");
    assert!(!root.contains("data-js-error"), "{root}");
    assert_eq!(dom.matches("<script").count(), 1, "{dom}");
    assert!(dom.contains("<title>hookops: server.git</title>"));

    // Environment rows as the browser shows them.
    let prod = text(element(&dom, "<tr class=\"env", "tr"));
    assert!(prod.starts_with("prodmain"), "{prod}");
    for needle in [
        &good[..10],
        "app web:1",
        "Test Pusher",
        "1 commit waiting",
        "succeeded rollback of",
        "drifted: k8s/app (",
    ] {
        assert!(
            prod.contains(needle),
            "{needle:?} not in the prod row: {prod}"
        );
    }
    let prod_row = element(&dom, "<tr class=\"env", "tr");
    assert!(prod_row.contains("data-state=\"drifted\""), "{prod_row}");
    assert!(
        prod_row.contains(&format!("href=\"https://git.example/infra/commit/{good}\"")),
        "{prod_row}"
    );
    // Inventory: the namespace, the Deployment and the ConfigMap.
    assert!(
        prod_row.contains("<td class=\"objects\">3</td>"),
        "{prod_row}"
    );
    let stg_row = element(&dom, "<tr class=\"env state-ok\" id=\"row-staging\"", "tr");
    let stg = text(stg_row);
    for needle in [
        "staging: settings",
        "up to date",
        "succeeded deploy of",
        "never checked",
    ] {
        assert!(
            stg.contains(needle),
            "{needle:?} not in the staging row: {stg}"
        );
    }
    assert!(
        stg_row.contains("<td class=\"objects\">2</td>"),
        "{stg_row}"
    );

    // Timelines: four attempts on prod (deploy, failed deploy, rollback, drift), one on staging.
    let prod_section = element(&dom, "<section class=\"env\" id=\"env-prod\"", "section");
    let stg_section = element(&dom, "<section class=\"env\" id=\"env-staging\"", "section");
    assert_eq!(prod_section.matches("<li class=\"attempt").count(), 4);
    assert_eq!(stg_section.matches("<li class=\"attempt").count(), 1);
    let actions: Vec<&str> = prod_section
        .split("data-action=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert_eq!(
        actions,
        ["drift", "rollback", "deploy", "deploy"],
        "newest first"
    );

    // The failed deploy links to its rollback and back.
    let failed = element(
        prod_section,
        "<li class=\"attempt res-failed act-deploy",
        "li",
    );
    let rollback = element(
        prod_section,
        "<li class=\"attempt res-succeeded act-rollback",
        "li",
    );
    let id = |li: &str| {
        li.split("id=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    assert!(
        failed.contains(&format!("rolled back to <a href=\"#{}\">", id(rollback))),
        "{failed}"
    );
    assert!(
        rollback.contains(&format!("rolled back from <a href=\"#{}\">", id(failed))),
        "{rollback}"
    );
    assert!(failed.contains(&bad[..10]));
    assert!(text(failed).contains("unhealthy"), "{}", text(failed));
    assert!(failed.contains("sig-good"), "{failed}");
    // The chart: a bar per deploy and rollback in the attempt lane and per target lane, each
    // linked to its entry.
    let svg = element(prod_section, "<svg", "svg");
    assert!(svg.contains(&format!("href=\"#{}\"", id(failed))), "{svg}");
    assert!(svg.contains("class=\"c-failed\""), "{svg}");

    // The tampered record is flagged, in its entry and at the top.
    let stg_entry = element(stg_section, "<li class=\"attempt", "li");
    assert!(stg_entry.contains("BAD signature"), "{stg_entry}");
    assert!(dom.contains("id=\"bad-signatures\""));

    // Hostile text is text: escaped in the DOM, shown verbatim, no element injected.
    assert!(!dom.contains("<img"), "an injected element");
    assert!(!dom.contains("<i>stg"), "an injected element");
    assert!(!dom.contains("pwned</title>"));
    assert!(!dom.contains(" onmouseover=") && !dom.contains(" onclick="));
    let shown = text(&dom);
    assert!(shown.contains(HOSTILE_SUBJECT), "subject not shown as text");
    assert!(
        shown.contains(HOSTILE_TARGET),
        "target name not shown as text"
    );
    assert!(
        shown.contains("Mallory \"onmouseover=alert(3) &amp; x"),
        "author not shown as text"
    );
    // No secret or private path leaks into the page.
    let key = std::fs::read_to_string(&w.key).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    assert!(!html.contains(key_body));
    assert!(!html.contains(w.key.to_str().unwrap()));
    assert!(!html.contains(w.kubeconfig.to_str().unwrap()));

    // A screenshot renders (a real layout pass over the whole page).
    let png = w.tmp.path().join("page.png");
    let out = chromium(
        &w,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
            "--hide-scrollbars",
        ],
        &format!("file://{}", file.display()),
    );
    assert!(out.ok(), "{}", out.stderr);
    let bytes = std::fs::read(&png).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{}",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("HOOKOPS_PAGE_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}

/// `watch --listen` answers `GET /` with the page only when `[web] serve = true`.
#[test]
fn watch_serves_the_page_only_when_enabled() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    w.start_sandbox();
    w.configure("", "");
    w.commit(
        &[("k8s/cm.yaml", &configmap("one", Some("default"), "1"))],
        "one <b>",
    );
    w.push().assert_ok();
    let secret = w.tmp.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    for serve in [false, true] {
        let mirror = w.tmp.path().join(format!("mirror-{serve}.git"));
        std::fs::create_dir_all(mirror.join("hookops")).unwrap();
        std::fs::write(
            mirror.join("hookops/config.toml"),
            format!(
                "[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n\n[web]\nserve = {serve}\n",
                w.kubeconfig.display()
            ),
        )
        .unwrap();
        let mut watch = WatchProcess::start(&w, &mirror, &secret);
        let (status, head, body) = get(&watch.addr, "/");
        if serve {
            assert_eq!(status, 200, "{head}");
            assert!(head.contains("Content-Type: text/html"), "{head}");
            assert!(head.contains("frame-ancestors 'none'"), "{head}");
            assert!(body.contains("data-env=\"prod\""), "{body}");
            assert!(body.contains("one &lt;b&gt;"), "{body}");
            assert_eq!(get(&watch.addr, "/other").0, 404);
            assert!(!body.contains("s3cret"));
        } else {
            assert_eq!(status, 405, "{head}");
        }
        watch.stop();
    }
}

struct WatchProcess {
    child: std::process::Child,
    addr: String,
}

impl WatchProcess {
    fn start(w: &World, mirror: &Path, secret: &Path) -> WatchProcess {
        let mut c = w.base_command(crate::util::hookops_bin());
        c.arg("--repo")
            .arg(mirror)
            .args(["watch", "--remote"])
            .arg(format!("file://{}", w.server.display()))
            .args(["--interval", "1h", "--listen", "127.0.0.1:0"])
            .arg("--webhook-secret-file")
            .arg(secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("hookops watch");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = Instant::now();
        let mut addr = None;
        // Until it listens and has deployed once (the page then has a record to show).
        while let Some(Ok(line)) = lines.next() {
            if let Some(a) = line.strip_prefix("hookops: watch: listening on ") {
                addr = Some(a.to_string());
            }
            if line.contains("watch: following") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "watch did not start"
            );
        }
        std::thread::spawn(move || for _ in lines {});
        WatchProcess {
            child,
            addr: addr.expect("watch: listening on"),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One GET: status, headers, body.
fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {resp:?}"));
    (status, head.to_string(), body.to_string())
}

/// In async mode the worker writes `[web] page` after its deploy, and the page it leaves does
/// not call its own (finished) queue entry a queued deploy.
#[test]
fn async_worker_leaves_no_stale_queued_state() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    w.start_sandbox();
    let page = page_file(&w);
    w.configure(
        "",
        &format!(
            "[deploy]\nmode = \"async\"\n\n[web]\npage = \"{}\"\n",
            page.display()
        ),
    );
    let c = w.commit(
        &[("k8s/a.yaml", &configmap("a", Some("default"), "1"))],
        "one",
    );
    let out = w.push();
    assert!(out.all().contains("deploy queued"), "{}", out.all());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let html = std::fs::read_to_string(&page).unwrap_or_default();
        let queue_empty = std::fs::read_dir(w.server.join("hookops/queue"))
            .map(|d| d.count() == 0)
            .unwrap_or(true);
        if queue_empty
            && html.contains(&format!("title=\"{c}\""))
            && !html.contains("deploy queued")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the finished deploy without a queued one:\n{html}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
