#!/usr/bin/env bash
# F14 (D10; same family as F10): a push adds a second overlay that patches an object of the
# base, and fails (duplicates = "error": different copies); the next push deletes the base and
# both overlays. hookops cannot read the failed attempt's overlay (`WARN reading k:ov2 …: no such
# directory in the tree`) and prunes nothing: the objects stay live and in the inventory
# although no file declares them.
# Expected after push 3: o-cm-1 and o-sa-1 deleted.
# Observed: `ov1 kustomize applied 0 … ok`, deployed; both objects stay.
ENV_EXTRA='duplicates = "error"'
. "$(dirname "$0")/prelude.sh"
put base/kustomization.yaml $'resources:\n- cm.yaml\n- sa.yaml\n'
put base/cm.yaml "$(cm o-cm-1 t1)"
put base/sa.yaml $'apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: o-sa-1\n'
put ov1/kustomization.yaml $'resources:\n- ../base\n'
push 1; live
put ov2/kustomization.yaml $'resources:\n- ../base\npatches:\n- path: patch.yaml\n'
put ov2/patch.yaml "$(cm o-cm-1 t2)"
push 2; live
del base/kustomization.yaml
del base/cm.yaml
del base/sa.yaml
del ov1/kustomization.yaml
del ov2/kustomization.yaml
del ov2/patch.yaml
push 3; live
show
