#!/usr/bin/env bash
# F15 (D4, D9; since main's "first deploys as one v1 List per kubectl call"): a first deploy of a
# kubectl target with two files, one holding a custom resource whose CRD another target
# declares, fails in kubectl: `error parsing STDIN: json: offset 301: invalid character '-' in
# numeric literal`. Both ConfigMaps are applied, the Widget never is.
# Expected: crds and app deploy, o-wd-53 live, pointer at push 1.
# Observed: `app kubectl applied 2 … FAILED: kubectl apply: error: error parsing STDIN …`.
. "$(dirname "$0")/prelude.sh"
put app/m59.yaml $'apiVersion: o.oracle.test/v1\nkind: Widget\nmetadata:\n  name: o-wd-53\nspec:\n  v: "t54"\n---\n'"$(cm o-cm-57 t58)"
put app/m140.yml "$(cm o-cm-138 t139)"
put platform/crds/widgets.yaml $'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.o.oracle.test\nspec:\n  group: o.oracle.test\n  scope: Namespaced\n  names:\n    plural: widgets\n    singular: widget\n    kind: Widget\n    listKind: WidgetList\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n'
push 1
show
