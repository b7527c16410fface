//! What a pusher sees, as snapshots: the exit status, stdout and stderr of a real `git push`
//! (the hooks' lines arrive as `remote: …`) for the main scenarios, kept in
//! `snapshots/pusher/`. Commit ids, times, durations, temporary paths, ports and pids are
//! replaced by placeholders so the text is the same on every run; anything else that changes
//! shows as a snapshot diff, to review (`cargo insta review`, or `INSTA_UPDATE=always`) and
//! commit with the change that caused it.

use insta::assert_snapshot;

use crate::core::commit_first_tree;
use crate::safety::app;
use crate::util::{configmap, namespace, sandboxed, Run, World, FAIL_ROLLOUT};

/// `git push origin REFSPECS` as a pusher types it: not `-q`, so git's own report of each ref
/// is part of what is seen.
fn push(w: &World, refspecs: &[&str]) -> Run {
    let mut args = vec!["push", "origin"];
    args.extend_from_slice(refspecs);
    w.in_clone(&args)
}

/// Snapshots `out` as `name`. `commits` names the commits the test made, so a line that
/// mentions one says which (`[good]`) rather than only that it is a commit.
#[track_caller]
fn assert_pusher_sees(name: &str, out: &Run, commits: &[(&str, &str)]) {
    assert_output_in("snapshots/pusher", name, out, commits);
}

/// Snapshots what a hookops command printed (`snapshots/commands/NAME.snap`), with the same
/// placeholders as what a pusher sees: the messages a user meets outside a push.
#[track_caller]
pub(crate) fn assert_command_output(name: &str, out: &Run, commits: &[(&str, &str)]) {
    assert_output_in("snapshots/commands", name, out, commits);
}

#[track_caller]
fn assert_output_in(dir: &str, name: &str, out: &Run, commits: &[(&str, &str)]) {
    let text = format!(
        "exit status: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        out.code.map_or("signal".to_string(), |c| c.to_string()),
        out.stdout,
        out.stderr
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (commit, label) in commits {
        // Full or abbreviated (git and hookops print 7 or more digits).
        settings.add_filter(&format!(r"\b{}[0-9a-f]{{0,33}}\b", &commit[..7]), *label);
    }
    for (pattern, replacement) in [
        // git pads each `remote:` line with blanks (to clear the rest of a terminal line).
        (r"(?m)[ \t]+$", ""),
        // Lines hookops prints only when a wait lasts over a second (out::say_if_slow).
        (
            r"(?m)^remote: hookops: [^:\n]+: [^:\n]+: waiting for .*\n",
            "",
        ),
        (
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            "[uuid]",
        ),
        // Any other object id: notes commits, trees, git's `old..new` of a ref it updated.
        (r"\b[0-9a-f]{7,40}\b", "[id]"),
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?",
            "[time]",
        ),
        // A target line's time is right-aligned: its padding varies with its width.
        (r" +(\d+\.\d+s  )", " $1"),
        (r"\b\d+(\.\d+)? ?(ms|s)\b", "[duration]"),
        (r"(/[\w.-]+)*/\.tmp\w+", "[tmp]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"\bpid \d+", "pid [pid]"),
    ] {
        settings.add_filter(pattern, replacement);
    }
    settings.bind(|| assert_snapshot!(name, text));
}

#[test]
fn first_deploy() {
    let Some(w) = sandboxed("") else { return };
    // One target at a time: parallel targets' lines (Terraform's, the others') interleave
    // differently from run to run.
    w.configure("", "[deploy]\nparallel = 1\n");
    let first = commit_first_tree(&w);
    let out = push(&w, &["HEAD:main"]);
    assert_pusher_sees("first_deploy", &out, &[(&first, "[first]")]);
}

#[test]
fn one_file_change() {
    let Some(w) = sandboxed("") else { return };
    let first = commit_first_tree(&w);
    w.push().assert_ok();
    let change = w.commit(
        &[("k8s/web/a.yaml", &configmap("a", None, "2"))],
        "change a",
    );
    let out = push(&w, &["HEAD:main"]);
    assert_pusher_sees(
        "one_file_change",
        &out,
        &[(&first, "[first]"), (&change, "[change]")],
    );
}

#[test]
fn failed_health_check_is_rolled_back() {
    let Some(w) = sandboxed("") else { return };
    let good = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let bad = app(&w, "web:2", FAIL_ROLLOUT, "2");
    let out = push(&w, &["HEAD:main"]);
    assert_pusher_sees(
        "failed_health_check_is_rolled_back",
        &out,
        &[(&good, "[good]"), (&bad, "[bad]")],
    );
}

#[test]
fn gate_rejects_a_broken_manifest() {
    let Some(w) = sandboxed("") else { return };
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    let good = app(&w, "web:1", "", "1");
    w.push().assert_ok();
    let broken = w.commit(
        &[(
            "k8s/app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\n",
        )],
        "broken yaml",
    );
    let out = push(&w, &["HEAD:main"]);
    assert_pusher_sees(
        "gate_rejects_a_broken_manifest",
        &out,
        &[(&good, "[good]"), (&broken, "[broken]")],
    );
}

#[test]
fn several_refs_in_one_push() {
    let Some(w) = sandboxed("") else { return };
    w.configure(
        "",
        &format!(
            "[[environment]]\nname = \"staging\"\nbranch = \"staging\"\nkubeconfig = \"{}\"\ncontext = \"sandbox\"\n",
            w.kubeconfig.display()
        ),
    );
    let main = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace("app")),
            ("k8s/app/cm.yaml", &configmap("settings", Some("app"), "1")),
        ],
        "app",
    );
    // Staging's branch has a tree of its own, so the two environments share no object.
    w.in_clone(&["checkout", "-q", "--orphan", "staging"])
        .assert_ok();
    w.in_clone(&["rm", "-q", "-r", "-f", "."]).assert_ok();
    let staging = w.commit(
        &[
            ("k8s/ns/ns.yaml", &namespace("app-staging")),
            (
                "k8s/app/cm.yaml",
                &configmap("settings", Some("app-staging"), "2"),
            ),
        ],
        "app on staging",
    );
    let out = push(&w, &["main", "staging"]);
    assert_pusher_sees(
        "several_refs_in_one_push",
        &out,
        &[(&main, "[main]"), (&staging, "[staging]")],
    );
}
