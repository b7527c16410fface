#!/usr/bin/env bash
# F18 (D3.1, D10; F1 after a failed attempt, F17's family): a base is deployed as a target of its
# own; a push adds an overlay using it and fails on another target (a document without a name),
# so the overlay is applied but the pointer stays; the next push deletes the overlay. The base is
# a target again (D3.1: "its objects stay"), yet hookops prunes the deleted overlay's objects,
# which are the base's.
# Expected after push 3: o-cm-1 live (t1), no DELETE; `broken` fails again.
# Observed: `ov kustomize applied 0, pruned 1`, DELETE o-ctx/o-cm-1 → 200; `plan --from 0000…`
# of the same commit says `deploy base … apply ConfigMap o-ctx/o-cm-1`.
. "$(dirname "$0")/prelude.sh"
put base/kustomization.yaml $'resources:\n- cm.yaml\n'
put base/cm.yaml "$(cm o-cm-1 t1)"
push 1; live
put broken/noname.yaml $'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    a: b\n'
put ov/kustomization.yaml $'resources:\n- ../base\n'
push 2; live
del ov/kustomization.yaml
push 3; live
show
