#!/usr/bin/env bash
# F12 (D8): an edit of a manifest under an unused kustomize Component is not reported by the push
# that changes it (the push that added the Component did report it).
# Expected at push 2: a warning naming components/c/extra.yaml (or the unused Component).
# Observed: `no deploy targets changed (1 paths)`, nothing else.
. "$(dirname "$0")/prelude.sh"
put components/c/kustomization.yaml $'apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- extra.yaml\n'
put components/c/extra.yaml "$(cm o-cm-1 t1)"
put app/cm.yaml "$(cm o-cm-2 t2)"
push 1
put components/c/extra.yaml "$(cm o-cm-1 t3)"
push 2
show
