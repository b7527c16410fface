#!/usr/bin/env bash
# hookops against Flux's engine and bare kubectl on the real test cluster (issue 28).
#
#   scripts/bench-peers.sh                 all scenarios (1-5), 5 alternating runs per side
#   scripts/bench-peers.sh --runs 3        fewer runs
#   scripts/bench-peers.sh --only 1,3      some scenarios (6: prune 20,000 objects, one run)
#   scripts/bench-peers.sh --kubectl PATH  another kubectl for hookops and the bare side
#   scripts/bench-peers.sh --bare-runs 5   bare kubectl in every round of scenarios 1-2 (~80 s each)
#
# Builds hookops (release), the Go program bench/peers (github.com/fluxcd/pkg/ssa v0.78.0, from
# the Go module proxy) and the test cluster (scripts/test-cluster.sh), starts the cluster in a
# temporary directory, runs bench/peers, prints its table, and stops the cluster. Not part of
# .ci/run: it takes 10-20 minutes. docs/performance.md ("Against Flux's engine") reads it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs | --only | --kubectl | --prune-objects | --bare-runs)
      args+=("-${1#--}" "$2")
      shift 2
      ;;
    -h | --help)
      sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench-peers: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
done
for tool in go git kubectl cargo; do
  command -v "$tool" >/dev/null || {
    echo "bench-peers: $tool is needed" >&2
    exit 1
  }
done

say() { echo "bench-peers: $*" >&2; }

say "building hookops (release)"
(cd "$root" && cargo build --release --quiet --bin hookops)
say "building bench/peers"
mkdir -p "$target/bench"
(cd "$root/bench/peers" && go build -trimpath -o "$target/bench/peers" .)
"$root/scripts/test-cluster.sh" build >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/hookops-peers.XXXXXX")
cleanup() {
  if [ -f "$work/cluster/pid" ]; then
    kill "$(cat "$work/cluster/pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -f "$work/cluster/pid" ] || break; sleep 0.2; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
"$root/scripts/test-cluster.sh" "$work/cluster"
kubectl_version=$(kubectl --kubeconfig "$work/cluster/admin.kubeconfig" version -o json 2>/dev/null |
  sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tr '\n' ' ')
say "kubectl and server versions: $kubectl_version"
mkdir -p "$work/runs"
"$target/bench/peers" -kubeconfig "$work/cluster/admin.kubeconfig" \
  -hookops "$target/release/hookops" -work "$work/runs" "${args[@]}"
