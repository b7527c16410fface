#!/usr/bin/env bash
# The real Kubernetes test cluster: kube-apiserver + etcd + controllers + a fake kubelet in one
# Go program (testenv/, docs/test-cluster.md).
#
#   scripts/test-cluster.sh build   build target/testenv/hookops-testenv once; rebuilt only when
#                                   testenv/*.go, go.mod, go.sum or the Go version change.
#                                   Prints the binary's path on stdout.
#   scripts/test-cluster.sh DIR     build if needed, start it in the background (logs in DIR),
#                                   wait for DIR/ready (120 s at most) and return.
#                                   Stop it with: kill $(cat DIR/pid)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out_dir=${CARGO_TARGET_DIR:-$root/target}/testenv
bin=$out_dir/hookops-testenv
stamp=$bin.stamp

say() { echo "test-cluster: $*" >&2; }

require_tools() {
  local missing=()
  command -v go >/dev/null || missing+=(go)
  command -v kubectl >/dev/null || missing+=(kubectl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "missing required tool(s): ${missing[*]} (go builds the cluster, kubectl talks to it)"
    exit 1
  fi
}

build() {
  require_tools
  mkdir -p "$out_dir"
  # One build at a time (parallel test binaries or CI steps share the cache).
  exec 9>"$out_dir/.lock"
  flock 9
  local hash
  hash=$(cd "$root/testenv" && { cat go.mod go.sum ./*.go "$root/scripts/test-cluster.sh"; go version; } | sha256sum | cut -d' ' -f1)
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
    say "$bin is up to date (build took 0 s)"
  else
    local start=$SECONDS
    say "building $bin from testenv/ (a cold build takes several minutes)"
    # The Kubernetes version the server reports (/version) is stamped in at link time, as
    # Kubernetes' own build does; kubectl's dispatcher picks its client from it.
    local kver pkg=k8s.io/component-base/version
    kver=$(cd "$root/testenv" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
    local minor=${kver#v1.}
    minor=${minor%%.*}
    (cd "$root/testenv" && nice -n 10 go build -trimpath -ldflags "-X $pkg.gitVersion=$kver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.gitCommit=hookops-testenv" -o "$bin.tmp" .)
    mv "$bin.tmp" "$bin"
    echo "$hash" >"$stamp"
    say "built $bin in $((SECONDS - start)) s"
  fi
  exec 9>&-
  echo "$bin"
}

start() {
  local dir=$1
  build >/dev/null
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -f "$dir/ready"
  local begin=$SECONDS
  nohup "$bin" --dir "$dir" >"$dir/stdout.log" 2>"$dir/stderr.log" </dev/null &
  local pid=$!
  while [ ! -f "$dir/ready" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "hookops-testenv exited before it was ready; last lines of $dir/testenv.log:"
      tail -n 30 "$dir/testenv.log" "$dir/stderr.log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ $((SECONDS - begin)) -ge 120 ]; then
      say "not ready after 120 s; last lines of $dir/testenv.log:"
      tail -n 30 "$dir/testenv.log" >&2 || true
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  say "ready in $((SECONDS - begin)) s at $(head -n1 "$dir/ready")"
  say "kubeconfigs: $dir/admin.kubeconfig (cluster-admin), $dir/deployer.kubeconfig (hookops-deployer)"
  say "stop it with: kill \$(cat $dir/pid)"
}

case "${1:-}" in
  build) build ;;
  "" | -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "${1:-}" ] || exit 2
    ;;
  *) start "$1" ;;
esac
