#!/usr/bin/env bash
# F11 (D3.3, D9): after a first deploy failed on a file name that is not UTF-8, the push that
# deletes the file fails again on the deleted file; the environment can only move on once
# another file of the tree changes.
# Expected after push 2: nothing declared, nothing to deploy, pointer at push 2.
# Observed: push 2 `d1 kubectl FAILED: d1/bad-\xff\xfe.yaml: the file name is not UTF-8 …`
# (the file is not in the pushed tree), pointer unset.
. "$(dirname "$0")/prelude.sh"
put $'d1/bad-\xff\xfe.yaml' "$(cm o-cm-1 t1)"
push 1
del $'d1/bad-\xff\xfe.yaml'
push 2
show
