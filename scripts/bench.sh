#!/usr/bin/env bash
# Push-to-deployed benchmarks (issue 7): builds the release binaries, generates the fixture
# repositories with `git fast-import` in a temporary directory (removed afterwards), runs every
# figure of docs/performance.md against its baseline in alternating runs against an in-process
# kube sandbox (stopped at the end), and prints a table of medians, ratios and PASS/MISS.
#
#   scripts/bench.sh                 # everything, 10 runs per side (figures 2-4: 5)
#   scripts/bench.sh --runs 20       # more runs
#   scripts/bench.sh --only 1,5      # some figures
#   scripts/bench.sh --parallel 8 --latency-ms 2 --keep
#
# Needs git, kubectl, ssh-keygen. Figures are medians on whatever machine runs this: compare
# the ratios, not the absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
exec cargo bench --bench pipeline -- "$@"
