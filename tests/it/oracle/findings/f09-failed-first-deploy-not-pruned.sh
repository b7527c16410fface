#!/usr/bin/env bash
# F9 (D10): after a failed first deploy (one target broken, a kustomize target applied), a push
# that deletes everything prunes nothing: `whole tree: nothing deployed yet: no deploy targets
# changed`, although the inventory holds what the failed attempt applied. (With a kubectl
# target in place of the kustomize one, the object is pruned.)
# Expected after push 2: o-cm-1 deleted (inventory − declared), pointer at push 2.
# Observed: o-cm-1 stays live and stays in the inventory; the record says succeeded.
. "$(dirname "$0")/prelude.sh"
put m/broken.yaml $'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n'
put app/kustomization.yaml $'resources:\n- cm.yaml\n'
put app/cm.yaml "$(cm o-cm-1 t1)"
push 1; live
del m/broken.yaml
del app/kustomization.yaml
del app/cm.yaml
push 2; live
show
