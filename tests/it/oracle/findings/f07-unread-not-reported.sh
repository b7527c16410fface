#!/usr/bin/env bash
# F7 (D8): a manifest that no target reads is never reported: neither by plan nor by the push
# that adds it (here: a file in a base that its kustomization does not list, and a manifest in
# a subdirectory of an overlay).
# Expected: plan and push 2 name base/extra.yaml and ov/sub/x.yaml as read by no target.
# Observed: push 2 says nothing about them (no target changed); plan neither.
. "$(dirname "$0")/prelude.sh"
put base/kustomization.yaml $'resources:\n- cm.yaml\n'
put base/cm.yaml "$(cm o-cm-1 t1)"
put ov/kustomization.yaml $'resources:\n- ../base\n'
push 1
put base/extra.yaml "$(cm o-cm-2 t2)"
put ov/sub/x.yaml "$(cm o-cm-3 t3)"
push 2
show
