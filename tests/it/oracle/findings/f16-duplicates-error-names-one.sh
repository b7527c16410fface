#!/usr/bin/env bash
# F16 (D7, D9): with duplicates = "error", a target holding several differing duplicates is
# failed naming only the first identity: a/y.yaml and b/y.yaml (o-cm-2) are never named, so a
# pusher fixes o-cm-1 and fails again. D9: every broken file is named in one go.
# Expected: a and b fail naming a/x.yaml, b/x.yaml (o-cm-1) and a/y.yaml, b/y.yaml (o-cm-2).
# Observed: only `ConfigMap o-ctx/o-cm-1 is declared 2 times (a/x.yaml:1, b/x.yaml:1) …`.
ENV_EXTRA='duplicates = "error"'
. "$(dirname "$0")/prelude.sh"
put a/x.yaml "$(cm o-cm-1 t1)"
put a/y.yaml "$(cm o-cm-2 t2)"
put b/x.yaml "$(cm o-cm-1 t3)"
put b/y.yaml "$(cm o-cm-2 t4)"
push 1
show
