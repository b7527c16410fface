#!/usr/bin/env bash
# The long fuzz run (docs/security.md, "Fuzzing"): each fuzz target of the library's tests for
# SECONDS (default 600) on the stable toolchain, one after the other, niced. Prints one line per
# target: how many inputs it saw and whether any failed (a failure prints the input and the seed
# to replay it with HOOKOPS_FUZZ_SEED). Not part of .ci/run: it takes ten minutes a target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: fuzz_hook_stdin fuzz_manifest
#                                             fuzz_kustomization fuzz_config fuzz_record_format
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_hook_stdin fuzz_manifest fuzz_kustomization fuzz_config fuzz_record_format)
fi
nice cargo test -q --lib --no-run
status=0
for t in "${targets[@]}"; do
  HOOKOPS_FUZZ_SECONDS=$seconds nice cargo test -q --lib "$t" -- --nocapture 2>&1 \
    | grep -E '^fuzz |panicked|failed' || status=1
done
exit $status
