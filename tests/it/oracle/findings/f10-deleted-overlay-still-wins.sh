#!/usr/bin/env bash
# F10 (D7, D10): after a failed first deploy (one target broken) that applied an overlay, a push
# deleting the overlay leaves the deleted overlay's content live: hookops still counts the
# deleted overlay as a declaration and lets it win over the base, which is now a target.
# Expected after push 2: base is a target, o-cm-1 = t1 (the base's own content).
# Observed: `o-cm-1 is declared 2 times (base (kustomize):1, k:ov): ... k:ov wins`, t2 stays,
# WARN `reading k:ov of target ov: ... no such directory in the tree`.
. "$(dirname "$0")/prelude.sh"
put broken/cm.yaml $'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n'
put base/kustomization.yaml $'resources:\n- cm.yaml\n'
put base/cm.yaml "$(cm o-cm-1 t1)"
put ov/kustomization.yaml $'resources:\n- ../base\npatches:\n- path: patch.yaml\n'
put ov/patch.yaml "$(cm o-cm-1 t2)"
push 1; live
del ov/kustomization.yaml
del ov/patch.yaml
push 2; live
show
