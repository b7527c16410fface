#!/usr/bin/env bash
# The long soak test (issue 17): N pushes (default 300) from concurrent pushers across several
# environments while the kube sandbox injects faults and running hookops processes are
# SIGKILLed, in sync and async mode, then the invariants (docs/operations.md, "Soak test").
#
#   scripts/soak.sh [PUSHES] [extra cargo test args…]
#
# HOOKOPS_SOAK_PUSHERS, HOOKOPS_SOAK_ENVS and HOOKOPS_SOAK_SEED pass through; the seed of a
# failed run is printed, and HOOKOPS_SOAK_SEED=that reruns it with the same choices.
set -euo pipefail
cd "$(dirname "$0")/.."
pushes="${1:-300}"
shift || true
export HOOKOPS_SOAK_PUSHES="$pushes"
# One mode at a time: both at once would share the machine's cores and time out each other.
exec cargo test --locked --test it soak -- --nocapture --test-threads=1 "$@"
