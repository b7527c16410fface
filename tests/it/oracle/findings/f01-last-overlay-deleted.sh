#!/usr/bin/env bash
# F1 (D3.1, D10; issue 25 #1): deleting the last overlay of a base prunes the base's objects,
# which the pushed tree still declares (the base is a target of its own once unreferenced).
# Expected after push 2: ConfigMap o-ctx/o-cm-1 live (plan --from 0000… lists target `base`).
# Observed: `ov kustomize applied 0, pruned 1`, DELETE .../configmaps/o-cm-1 answered 200.
. "$(dirname "$0")/prelude.sh"
put base/kustomization.yaml $'resources:\n- cm.yaml\n'
put base/cm.yaml "$(cm o-cm-1 t1)"
put ov/kustomization.yaml $'resources:\n- ../base\n'
push 1
del ov/kustomization.yaml
push 2
show
