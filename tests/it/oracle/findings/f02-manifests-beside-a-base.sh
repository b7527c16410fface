#!/usr/bin/env bash
# F2 (D3.2; issue 25 #2): a directory holding its own manifests above a kustomize root (a base
# or an overlay below it) is not a target: its objects are never applied, and a broken file
# there is never reported.
# Expected after push 1: targets m (kubectl: m/install.yaml) and ov (kustomize); ConfigMap
# o-ctx/o-cm-2 live. After push 2: target m fails naming m/broken.yaml, the pointer stays.
# Observed: only ov deploys; push 2 says `no deploy targets changed`-like success and moves the
# pointer; plan --from 0000… has no target m.
. "$(dirname "$0")/prelude.sh"
put m/base/kustomization.yaml $'resources:\n- cm.yaml\n'
put m/base/cm.yaml "$(cm o-cm-1 t1)"
put m/install.yaml "$(cm o-cm-2 t2)"
put ov/kustomization.yaml $'resources:\n- ../m/base\n'
push 1
put m/broken.yaml $'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n'
push 2
show
