#!/usr/bin/env bash
# The long soak test (issue 17): N pushes (default 300) from concurrent pushers across several
# environments while the kube sandbox injects faults and running hookops processes are
# SIGKILLed, in sync and async mode, then the invariants (docs/operations.md, "Soak test").
#
#   scripts/soak.sh [PUSHES] [extra cargo test args…]
#   scripts/soak.sh --hosts 2 [PUSHES] [extra cargo test args…]
#
# --hosts 2 is the two-host mode (issue 31, docs/ha.md): two hookops hosts of one environment
# with lock = "lease" against the real test cluster, pushes to both at once, the Lease's
# holder SIGKILLed now and then (default 40 pushes).
#
# HOOKOPS_SOAK_PUSHERS, HOOKOPS_SOAK_ENVS and HOOKOPS_SOAK_SEED pass through; the seed of a
# failed run is printed, and HOOKOPS_SOAK_SEED=that reruns it with the same choices.
set -euo pipefail
cd "$(dirname "$0")/.."
test_name=soak::
default=300
if [ "${1:-}" = "--hosts" ]; then
  [ "${2:-}" = 2 ] || { echo "soak.sh: --hosts takes 2" >&2; exit 2; }
  shift 2
  test_name=lease::soak_two_hosts
  default=40
fi
pushes="${1:-$default}"
shift || true
export HOOKOPS_SOAK_PUSHES="$pushes"
# One mode at a time: both at once would share the machine's cores and time out each other.
exec cargo test --locked --test it "$test_name" -- --nocapture --test-threads=1 "$@"
