# Sourced by the finding scripts beside it (FINDINGS.md): the world the oracle's replay scripts
# set up (a kube-sandbox, namespaces o-a, o-b and o-ctx, the context namespace o-ctx, a bare
# repository with the hook, environment prod with on_failure = "stop", a clone) and the verbs
# put PATH CONTENT, del PATH, push N, show. Run from a hookops checkout; uses
# target/debug/hookops (or $HOOKOPS) and builds the kube-sandbox binary.
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
"$ROOT/target/debug/kube-sandbox" --listen 127.0.0.1:0 --port-file "$W/port" --log "$W/requests.jsonl" >/dev/null &
SANDBOX=$!
trap 'kill $SANDBOX' EXIT
while [ ! -s "$W/port" ]; do sleep 0.1; done
cat > kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters: [{name: sandbox, cluster: {server: "http://127.0.0.1:$(cat "$W/port")"}}]
users: [{name: sandbox, user: {}}]
contexts: [{name: sandbox, context: {cluster: sandbox, user: sandbox, namespace: o-ctx}}]
current-context: sandbox
EOF
for ns in o-a o-b o-ctx; do
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns" | kubectl --kubeconfig kubeconfig apply --server-side -f - >/dev/null
done
git init -q --bare -b main server.git
"$HOOKOPS" --repo server.git install >/dev/null
cat > server.git/hookops/config.toml <<EOF
[[environment]]
name = "prod"
branch = "main"
kubeconfig = "$W/kubeconfig"
context = "sandbox"
on_failure = "stop"
${ENV_EXTRA:-}
EOF
git clone -q server.git work 2>/dev/null
cd work
put() { mkdir -p -- "$(dirname -- "$1")"; printf '%s' "$2" > "$1"; }
big() { mkdir -p -- "$(dirname -- "$1")"; { printf '%s' "$2"; yes '# padding to cross the size limit' | head -c 8454144 || true; } > "$1"; }
del() { rm -f -- "$1"; }
push() { git add -A && git commit -q --allow-empty -m "push $1" && echo "--- push $1" && git push -q origin HEAD:main; }
show() {
  echo "--- live"
  kubectl --kubeconfig ../kubeconfig get configmaps,secrets,serviceaccounts,rolebindings,clusterroles,namespaces -A \
    -o custom-columns='KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name,V:.metadata.annotations.oracle\.test/v' | grep ' o-' || true
  echo "--- record"
  git -C ../server.git notes --ref=hookops show HEAD | grep '^{' | tail -1
  echo "--- plan main --from 0000…"
  "$HOOKOPS" --repo ../server.git plan main --from 0000000000000000000000000000000000000000 || true
  echo "--- requests that wrote"
  grep -v '"method":"GET"' "$W/requests.jsonl" | grep -v 'fieldManager=kubectl' | sed 's/,"content_type":[^,]*//' | tail -n "${SHOW_WRITES:-20}"
}
# live: each ConfigMap of the history with its version (the oracle.test/v annotation)
live() {
  kubectl --kubeconfig ../kubeconfig get configmaps -A --no-headers \
    -o custom-columns='NS:.metadata.namespace,NAME:.metadata.name,V:.metadata.annotations.oracle\.test/v' | grep ' o-' | sed 's/^/live: /' || true
}
# cm NAME VERSION [NAMESPACE]: a ConfigMap document
cm() {
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n' "$1"
  if [ -n "${3:-}" ]; then printf '  namespace: %s\n' "$3"; fi
  printf '  annotations:\n    oracle.test/v: "%s"\ndata:\n  v: "%s"\n' "$2" "$2"
}
