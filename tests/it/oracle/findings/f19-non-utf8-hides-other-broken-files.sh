#!/usr/bin/env bash
# F19 (D3.3, D9): a kubectl target holding a manifest whose name is not UTF-8 and a YAML file
# that is not a manifest fails naming only the non-UTF-8 file; the pusher renames it and fails
# again on the other. D9: every broken file is named in one go.
# Expected: app fails naming app/bad-\xff\xfe.yaml and app/values.yaml:1 (document has no
# apiVersion and kind).
# Observed: only `app/bad-\xff\xfe.yaml: the file name is not UTF-8 …`.
. "$(dirname "$0")/prelude.sh"
put $'app/bad-\xff\xfe.yaml' "$(cm o-cm-1 t1)"
put app/values.yaml $'replicas: 3\nimage:\n  tag: "1.0"\n'
push 1
show
