package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	deployerNamespace = "hookops-system"
	deployerName      = "hookops-deployer"
)

// deployerRules are the least-privilege rules docs/security.md gives hookops' deployer, verbatim.
var deployerRules = []rbacv1.PolicyRule{{
	APIGroups: []string{"", "apps", "batch", "networking.k8s.io"},
	Resources: []string{"configmaps", "secrets", "services", "serviceaccounts", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "ingresses"},
	Verbs:     []string{"get", "list", "watch", "create", "update", "patch", "delete"},
}, {
	// lock = "lease": the Lease itself (environments.md, ha.md); its inventory copy is a
	// ConfigMap, which the rule above already grants.
	APIGroups: []string{"coordination.k8s.io"},
	Resources: []string{"leases"},
	Verbs:     []string{"get", "create", "update"},
}}

// createDeployer makes the ServiceAccount hookops-deployer in hookops-system with a
// service-account-token Secret (filled by the real token controller, as docs/security.md
// does it), a ClusterRole with deployerRules and a ClusterRoleBinding: the docs bind a Role per
// allowed namespace, but tests make a fresh namespace each, so the test cluster grants the same
// rules in every namespace. It returns the token.
func createDeployer(ctx context.Context, client kubernetes.Interface) (string, error) {
	core := client.CoreV1()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: deployerNamespace}}, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return "", err
	}
	if _, err := core.ServiceAccounts(deployerNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: deployerName}}, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return "", err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: deployerName + "-token", Annotations: map[string]string{corev1.ServiceAccountNameKey: deployerName}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}
	if _, err := core.Secrets(deployerNamespace).Create(ctx, secret, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return "", err
	}
	rbac := client.RbacV1()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: deployerName}, Rules: deployerRules}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return "", err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: deployerName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: deployerName, Namespace: deployerNamespace}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: deployerName},
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return "", err
	}
	var token string
	err := poll(ctx, 60*time.Second, func() (bool, error) {
		s, err := core.Secrets(deployerNamespace).Get(ctx, secret.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		token = string(s.Data[corev1.ServiceAccountTokenKey])
		return token != "", nil
	})
	if err != nil {
		return "", fmt.Errorf("the token controller never filled secret %s/%s: %w", deployerNamespace, secret.Name, err)
	}
	return token, nil
}
