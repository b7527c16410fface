#!/usr/bin/env bash
# The demo: a scratch bare repository and clone, the hook installed, examples/demo (a Terraform
# root with terraform_data and Kubernetes manifests) pushed through the real hook, then a one-file
# change, the notes log and a verification of the record with ssh-keygen.
#
# It deploys to a kube-sandbox (the bundled Kubernetes API emulator) started for the demo on
# 127.0.0.1 and stopped at its end: never to a cluster you did not name, whatever your current
# kubectl context is. `--context NAME` deploys to that context of your kubeconfig instead
# (it creates namespace `web` there, with a ConfigMap and a Deployment, and leaves them).
# Usage: scripts/demo.sh [--context NAME] [path/to/hookops]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
context=
if [ "${1:-}" = --context ]; then
  [ $# -ge 2 ] || { echo "demo: --context needs a kubectl context name" >&2; exit 2; }
  context=$2
  shift 2
fi
hookops=${1:-$(command -v hookops || echo "$here/target/release/hookops")}
sandbox_bin="$(dirname "$hookops")/kube-sandbox"
[ -x "$sandbox_bin" ] || sandbox_bin=$(command -v kube-sandbox || true)
for tool in git kubectl terraform ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is required" >&2; exit 1; }
done

demo=$(mktemp -d "${TMPDIR:-/tmp}/hookops-demo.XXXXXX")
sandbox_pid=
cleanup() { [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
export TF_CLI_CONFIG_FILE=/dev/null CHECKPOINT_DISABLE=1
export GIT_CONFIG_GLOBAL="$demo/gitconfig" GIT_CONFIG_NOSYSTEM=1
printf '[user]\n\tname = Demo\n\temail = demo@example.invalid\n[init]\n\tdefaultBranch = main\n' > "$GIT_CONFIG_GLOBAL"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "cluster"
if [ -n "$context" ]; then
  kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
  case "$kubeconfig" in
    *:*) echo "demo: KUBECONFIG lists several files; set it to the one holding context $context" >&2; exit 1 ;;
  esac
  kubectl --kubeconfig "$kubeconfig" config get-contexts "$context" >/dev/null 2>&1 ||
    { echo "demo: $kubeconfig has no context named $context" >&2; exit 1; }
  echo "using the kubectl context you named: $context (of $kubeconfig)"
else
  [ -x "$sandbox_bin" ] || { echo "demo: the kube-sandbox binary is missing (./install.sh installs it beside hookops)" >&2; exit 1; }
  "$sandbox_bin" --listen 127.0.0.1:0 --port-file "$demo/sandbox.port" --log "$demo/sandbox.log" &
  sandbox_pid=$!
  for _ in $(seq 100); do [ -s "$demo/sandbox.port" ] && break; sleep 0.05; done
  [ -s "$demo/sandbox.port" ] || { echo "demo: kube-sandbox did not start (see $demo/sandbox.log)" >&2; exit 1; }
  port=$(cat "$demo/sandbox.port")
  kubeconfig="$demo/kubeconfig"
  context=sandbox
  cat > "$kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: sandbox, cluster: {server: "http://127.0.0.1:$port"}}]
users: [{name: sandbox, user: {}}]
contexts: [{name: sandbox, context: {cluster: sandbox, user: sandbox}}]
current-context: sandbox
KC
  # Nothing the demo runs may fall back to your own kubeconfig.
  export KUBECONFIG="$kubeconfig"
  echo "using a kube-sandbox (a Kubernetes API emulator) on 127.0.0.1:$port, not your clusters"
  echo "(./install.sh --context NAME deploys the demo to a kubectl context of yours instead)"
fi

step "server: a bare repository with the hook installed"
git init -q --bare "$demo/server.git"
"$hookops" install "$demo/server.git"
ssh-keygen -q -t ed25519 -N '' -C hookops-demo -f "$demo/signing_ed25519"
echo "deployer@demo namespaces=\"hookops\" $(cat "$demo/signing_ed25519.pub")" > "$demo/allowed_signers"
mkdir -p "$demo/server.git/hookops"
cat > "$demo/server.git/hookops/config.toml" <<CFG
[[environment]]
name = "prod"
branch = "main"
kubeconfig = "$kubeconfig"
context = "$context"
# The demo's root only holds terraform_data; on a real server, "apply" lets every pusher of
# this branch run code as the hook user (local-exec): docs/security.md.
terraform = "apply"

[signing]
key = "$demo/signing_ed25519"
allowed_signers = "$demo/allowed_signers"

[web]
page = "$demo/status.html"
CFG
cat "$demo/server.git/hookops/config.toml"

step "push the example (Terraform root + Kubernetes manifests)"
git clone -q "$demo/server.git" "$demo/work" 2>/dev/null
cp -r "$here/examples/demo/." "$demo/work/"
git -C "$demo/work" add -A
git -C "$demo/work" commit -q -m "demo: first deploy"
git -C "$demo/work" push origin main

step "change one file: only its target deploys"
sed -i 's/replicas: 2/replicas: 3/' "$demo/work/k8s/web/deployment.yaml"
git -C "$demo/work" commit -q -am "web: three replicas"
git -C "$demo/work" push origin main

step "the audit log: git log --notes=hookops"
git -C "$demo/server.git" log --notes=hookops -2

step "verify the record with hookops and with stock ssh-keygen"
"$hookops" --repo "$demo/server.git" verify main --allowed-signers "$demo/allowed_signers"
note=$(git -C "$demo/server.git" notes --ref=hookops show main)
printf '%s' "$(printf '%s\n' "$note" | grep -m1 '^{')" > "$demo/payload"
printf '%s\n' "$note" | sed -n '/BEGIN SSH SIGNATURE/,/END SSH SIGNATURE/p' > "$demo/record.sig"
ssh-keygen -Y verify -f "$demo/allowed_signers" -I deployer@demo -n hookops -s "$demo/record.sig" < "$demo/payload"

step "status"
"$hookops" --repo "$demo/server.git" status
echo
echo "status page (rewritten after every deploy): file://$demo/status.html"
echo "demo files are in $demo"
