#!/usr/bin/env bash
# F5 (D3.3, D9; issue 25 #7): a manifest whose file name is not UTF-8, added to a deployed
# tree, is skipped in silence: the push succeeds and the pointer moves past it, in an existing
# target (app) and in a new directory (new). (A first deploy does fail, with `non-UTF-8 file
# name`, without naming the file.)
# Expected: push 2 fails, naming app/bad-\xff\xfe.yaml and new/bad-\xff\xfe.yaml; pointer stays.
# Observed: push 2 succeeds (`no deploy targets changed` or `app applied 0`), o-cm-2 and
# o-cm-3 are never applied, `drift` would say in sync.
. "$(dirname "$0")/prelude.sh"
put app/ok.yaml "$(cm o-cm-1 t1)"
push 1
put $'app/bad-\xff\xfe.yaml' "$(cm o-cm-2 t2)"
put $'new/bad-\xff\xfe.yaml' "$(cm o-cm-3 t3)"
push 2
show
