#!/usr/bin/env bash
# F17 (D3.1, D9, D10; "a failed attempt is reconciled"): an overlay `ov` is deployed; a push adds
# `ov2` using `ov` and a component that does not exist, so `ov2` fails to render, and `ov`, now
# referenced, stops being a target: that failed push prunes o-cm-1 (which `ov2` would declare).
# The next push deletes `ov2`: `ov` is a target again and declares o-cm-1, but hookops diffs
# from the pointer (push 1, where `ov` was deployed, unchanged since) and applies nothing.
# Expected after push 3: o-ctx/o-cm-1 live (t1), in the inventory.
# Observed: `ov2 kustomize applied 0 … ok`, deployed; o-cm-1 is gone, and `plan --from 0000…`
# of the same commit says `apply ConfigMap o-ctx/o-cm-1`.
. "$(dirname "$0")/prelude.sh"
put base/kustomization.yaml $'resources:\n- cm.yaml\n'
put base/cm.yaml "$(cm o-cm-1 t1)"
put ov/kustomization.yaml $'resources:\n- ../base\n'
push 1; live
put ov2/kustomization.yaml $'resources:\n- ../ov\ncomponents:\n- ../missing-component\n'
push 2; live
del ov2/kustomization.yaml
push 3; live
show
