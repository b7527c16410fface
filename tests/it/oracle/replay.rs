//! A history as a self-contained bash script: a kube-sandbox, a bare repository with the hook,
//! and every push as file writes and git commands, so a developer reproduces a finding without
//! the generator.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::gen::{Blob, Names, Tree};
use super::model::{Failure, Setup};

/// The rest of the set-up and the script's verbs: `put PATH CONTENT`, `big PATH HEAD` (HEAD
/// padded with comment lines past the size limit), `del PATH`, `push N` (commit and push; the
/// hook's output comes back as `remote:` lines), `show` (what is live, the last record, the
/// from-scratch plan).
const HELPERS: &str = r#"EOF
git clone -q server.git work 2>/dev/null
cd work
put() { mkdir -p -- "$(dirname -- "$1")"; printf '%s' "$2" > "$1"; }
big() { mkdir -p -- "$(dirname -- "$1")"; { printf '%s' "$2"; yes '# padding to cross the size limit' | head -c 8454144 || true; } > "$1"; }
del() { rm -f -- "$1"; }
push() { git add -A && git commit -q --allow-empty -m "push $1" && echo "--- push $1" && git push -q origin HEAD:main; }
show() {
  echo "--- live"
  kubectl --kubeconfig ../kubeconfig get configmaps,secrets,serviceaccounts,rolebindings,clusterroles,namespaces -A \
    -o custom-columns='KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name,V:.metadata.annotations.oracle\.test/v' | grep -v ' system:\| kube-\|<none>$' || true
  echo "--- record"
  git -C ../server.git notes --ref=hookops show HEAD | grep '^{' | tail -1
  echo "--- plan main --from 0000…"
  "$HOOKOPS" --repo ../server.git plan main --from 0000000000000000000000000000000000000000 || true
}
"#;

/// `$'…'` quoting of arbitrary bytes.
pub fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("$'");
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('\'');
    s
}

fn qp(p: &Path) -> String {
    quote(p.as_os_str().as_bytes())
}

/// The script. `names` are the history's (namespaces to create, the context namespace).
pub fn script(
    names: &Names,
    setup: &Setup,
    env_extra: &str,
    trees: &[Tree],
    failure: &Failure,
    seed: u64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(
        s,
        "# hookops oracle (tests/it/oracle): seed {seed}, shrunk to {} push(es); push {} fails {:?}.",
        trees.len(),
        failure.step + 1,
        failure.first()
    );
    let _ = writeln!(s, "# What the model saw at that push:");
    for v in &failure.violations {
        for (i, l) in v.message.lines().enumerate() {
            if i == 0 {
                let _ = writeln!(s, "#   [{:?} {}] {l}", v.check, v.rule);
            } else {
                let _ = writeln!(s, "#     {l}");
            }
        }
    }
    if setup.duplicates_error {
        let _ = writeln!(s, "# (environment with duplicates = \"error\")");
    }
    s.push_str(
        r#"#
# Run from a hookops checkout (builds the kube-sandbox binary; uses target/debug/hookops or
# $HOOKOPS). Leaves its world in a temporary directory and prints its path.
set -euo pipefail
ROOT=${HOOKOPS_ROOT:-$(git rev-parse --show-toplevel)}
HOOKOPS=${HOOKOPS:-$ROOT/target/debug/hookops}
(cd "$ROOT" && cargo build -q -p kube-sandbox --bin kube-sandbox)
W=$(mktemp -d)
echo "world: $W"
cd "$W"
export GIT_CONFIG_GLOBAL=$W/gitconfig GIT_CONFIG_NOSYSTEM=1 KUBECACHEDIR=$W/kubecache
export GIT_AUTHOR_DATE=2026-01-02T03:04:05Z GIT_COMMITTER_DATE=2026-01-02T03:04:05Z
git config --global user.name 'Test Pusher'
git config --global user.email pusher@example.test
git config --global init.defaultBranch main
"$ROOT/target/debug/kube-sandbox" --listen 127.0.0.1:0 --port-file "$W/port" --log "$W/requests.jsonl" &
SANDBOX=$!
trap 'kill $SANDBOX' EXIT
while [ ! -s "$W/port" ]; do sleep 0.1; done
cat > kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters: [{name: sandbox, cluster: {server: "http://127.0.0.1:$(cat "$W/port")"}}]
users: [{name: sandbox, user: {}}]
"#,
    );
    let _ = writeln!(
        s,
        "contexts: [{{name: sandbox, context: {{cluster: sandbox, user: sandbox, namespace: {}}}}}]",
        names.ctx_ns
    );
    s.push_str("current-context: sandbox\nEOF\n");
    for ns in names.namespaces.iter().filter(|n| *n != "default") {
        let _ = writeln!(
            s,
            "printf 'apiVersion: v1\\nkind: Namespace\\nmetadata:\\n  name: {ns}\\n' | kubectl --kubeconfig kubeconfig apply --server-side -f - >/dev/null"
        );
    }
    s.push_str("git init -q --bare -b main server.git\n\"$HOOKOPS\" --repo server.git install >/dev/null\n");
    s.push_str("cat > server.git/hookops/config.toml <<EOF\n[[environment]]\nname = \"prod\"\nbranch = \"main\"\nkubeconfig = \"$W/kubeconfig\"\ncontext = \"sandbox\"\n");
    s.push_str(env_extra);
    s.push_str(HELPERS);
    let empty = Tree::new();
    let mut prev = &empty;
    for (i, t) in trees.iter().enumerate() {
        let _ = writeln!(s, "\n# push {}", i + 1);
        for p in prev.keys().filter(|p| !t.contains_key(*p)) {
            let _ = writeln!(s, "del {}", qp(p));
        }
        for (p, b) in t.iter().filter(|(p, b)| prev.get(*p) != Some(*b)) {
            match b {
                Blob::Text(bytes) => {
                    let _ = writeln!(s, "put {} {}", qp(p), quote(bytes));
                }
                Blob::Big(head) => {
                    let _ = writeln!(s, "big {} {}", qp(p), quote(head.as_bytes()));
                }
            }
        }
        let _ = writeln!(s, "push {}", i + 1);
        prev = t;
    }
    s.push_str("\nshow\n");
    s
}
