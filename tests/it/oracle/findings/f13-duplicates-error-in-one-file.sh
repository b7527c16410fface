#!/usr/bin/env bash
# F13 (D7): with duplicates = "error", two different copies of one object in the same file are
# only a warning ("declared 2 times in one file: the last copy is applied"); D7 makes every
# declaration of one identity with different content fail its target, with no exception for
# one file.
# Expected: target app fails naming app/cm.yaml; pointer unset.
# Observed: `app kubectl applied 1 … ok`, deployed.
ENV_EXTRA='duplicates = "error"'
. "$(dirname "$0")/prelude.sh"
put app/cm.yaml "$(cm o-cm-1 t1)
---
$(cm o-cm-1 t2)"
push 1
show
