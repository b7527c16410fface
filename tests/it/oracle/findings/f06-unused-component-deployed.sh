#!/usr/bin/env bash
# F6 (D3.1, D8): a kustomize Component that no kustomization uses is deployed as a target of
# its own; D3.1 says a Component is never a target, and an unused one is reported (D8).
# Expected: no target; plan and the push report components/c/ as unused; nothing applied.
# Observed: `components/c kustomize applied 1`; ConfigMap o-ctx/o-cm-1 created.
. "$(dirname "$0")/prelude.sh"
put components/c/kustomization.yaml $'apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- extra.yaml\n'
put components/c/extra.yaml "$(cm o-cm-1 t1)"
push 1
show
