#!/usr/bin/env bash
# F4 (D5; issue 25 #5): a typed list of a group other than the core group (RoleBindingList) is
# refused; kubectl applies its items (a core ConfigMapList is accepted).
# Expected: the target deploys RoleBinding o-ctx/o-rb-1 and ConfigMap o-ctx/o-cm-1.
# Observed: `app/rbl.yaml:1: RoleBindingList has no metadata.name`, the push fails.
. "$(dirname "$0")/prelude.sh"
put app/cml.yaml $'apiVersion: v1\nkind: ConfigMapList\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: o-cm-1\n  data:\n    v: "1"\n'
put app/rbl.yaml $'apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBindingList\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: RoleBinding\n  metadata:\n    name: o-rb-1\n  roleRef:\n    apiGroup: rbac.authorization.k8s.io\n    kind: ClusterRole\n    name: view\n  subjects:\n  - kind: ServiceAccount\n    name: default\n    namespace: o-ctx\n'
push 1
show
