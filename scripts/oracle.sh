#!/usr/bin/env bash
# The long run of issue 25's oracle (tests/it/oracle): thousands of generated pushes through the
# real hook against the kube sandbox, every one checked against the from-scratch evaluator of
# docs/architecture.md "What a tree declares". Goes on after a failing history; prints how many
# pushes ran, how many histories failed, their seeds and replay scripts.
#
#   scripts/oracle.sh [PUSHES] [SEED]        default: 3000 pushes, a seed from the clock
#
# Environment (tests/it/oracle/mod.rs has the full list): HOOKOPS_ORACLE_HISTORY (pushes per
# history, default 30), HOOKOPS_ORACLE_SHRINK_SECS (per failure, default 300 here),
# HOOKOPS_ORACLE_WITHOUT / HOOKOPS_ORACLE_IGNORE (to look past known findings),
# HOOKOPS_ORACLE_DUPLICATES, HOOKOPS_ORACLE_OUT (replay scripts, default target/oracle/),
# ORACLE_CLUSTER=1 to run against the real test cluster instead (slower).
set -euo pipefail
cd "$(dirname "$0")/.."

pushes=${1:-3000}
seed=${2:-$(( $(date +%s) % 1000000 ))}
out=${HOOKOPS_ORACLE_OUT:-$PWD/target/oracle}
log=$out/run-$seed.log
mkdir -p "$out"

if [ "${ORACLE_CLUSTER:-0}" = 1 ]; then
    test=oracle::cluster_histories
    export HOOKOPS_ORACLE_CLUSTER_PUSHES=$pushes
else
    test=oracle::sandbox_histories
    export HOOKOPS_ORACLE_PUSHES=$pushes
fi
export HOOKOPS_ORACLE_SEED=$seed HOOKOPS_ORACLE_KEEP_GOING=1 HOOKOPS_ORACLE_OUT=$out
export HOOKOPS_ORACLE_SHRINK_SECS=${HOOKOPS_ORACLE_SHRINK_SECS:-300}

cargo test -q --test it --no-run
echo "oracle: $pushes pushes from seed $seed ($test); log: $log" >&2
status=0
cargo test -q --test it "$test" -- --exact --nocapture >"$log" 2>&1 || status=$?

summary=$(grep -E '^oracle: [0-9]+ pushes in' "$log" | tail -1 || true)
if [ -z "$summary" ]; then
    echo "oracle: the run did not finish (exit $status); see $log" >&2
    tail -20 "$log" >&2
    exit 1
fi
pushes_run=$(sed -E 's/^oracle: ([0-9]+) pushes.*/\1/' <<<"$summary")
failing=$(sed -E 's/.* ([0-9]+) failing.*/\1/' <<<"$summary")
echo "pushes run:       $pushes_run"
echo "failures found:   $failing"
echo "seeds:            $(sed -E 's/.*seeds //' <<<"$summary")"
if [ "$failing" != 0 ]; then
    echo "failing seeds (first check and rule, replay script):"
    grep -E '^oracle: seed [0-9]+ \(HOOKOPS_ORACLE_SEED' "$log" |
        sed -E 's/^oracle: seed ([0-9]+) .*replay: ([^ ]+)$/  \1  \2/'
fi
exit "$status"
