#!/usr/bin/env bash
# Helm for chart targets' tests (docs/helm.md): built once from the Go module proxy into
# target/tools/helm, rebuilt only when the pinned version or Go changes. Prints its path.
#
#   scripts/helm.sh build
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=v4.3.2
out_dir=${CARGO_TARGET_DIR:-$root/target}/tools
bin=$out_dir/helm
stamp=$bin.stamp

case ${1:-} in
build) ;;
*) echo "usage: scripts/helm.sh build" >&2; exit 2 ;;
esac
command -v go >/dev/null || { echo "helm.sh: go is required (it builds helm)" >&2; exit 1; }
mkdir -p "$out_dir"
exec 9>"$out_dir/.helm.lock"
flock 9
want="$version $(go version)"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "helm.sh: $bin is up to date" >&2
else
  start=$SECONDS
  echo "helm.sh: building helm $version into $out_dir (a cold build takes several minutes)" >&2
  GOBIN=$out_dir nice -n 10 go install "helm.sh/helm/v4/cmd/helm@$version"
  echo "$want" >"$stamp"
  echo "helm.sh: built $bin in $((SECONDS - start)) s" >&2
fi
echo "$bin"
