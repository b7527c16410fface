package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// auditPolicy logs every write verb of every user at Metadata level (who, what object, when,
// the answer's code; no bodies, so no Secret data), once per request: the tests read it to
// check who wrote what and when (docs/test-cluster.md). Events are left out: controllers
// write them all the time and no test asks about them.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  resources:
  - group: ""
    resources: ["events"]
  - group: "events.k8s.io"
    resources: ["events"]
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

// startAPIServer runs the real kube-apiserver in a goroutine, serving TLS on a listener the
// OS gave a free loopback port (no bind-then-close race). It returns the server's URL.
func (t *testenv) startAPIServer(ctx context.Context, etcdURL string, failed chan<- error) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	policy := t.path("audit-policy.yaml")
	if err := writeAtomic(policy, []byte(auditPolicy), 0o644); err != nil {
		return "", err
	}

	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + t.spath("certs"), // self-signed serving certificate generated here
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--token-auth-file=" + t.spath("tokens.csv"),
		"--service-account-key-file=" + t.spath("sa.key"),
		"--service-account-signing-key-file=" + t.spath("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--enable-priority-and-fairness=false",
		// The "kubernetes" Service's endpoints would be 127.0.0.1, which endpoint
		// validation refuses; nothing in the test cluster routes to it anyway.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--allow-privileged=true",
		// Every write, at Metadata level, one JSON line per request (auditPolicy), written
		// before the response is sent ("blocking"), so a test reads what the server accepted.
		"--audit-log-path=" + t.path("audit.log"),
		"--audit-policy-file=" + policy,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	s.SecureServing.Listener = ln
	s.SecureServing.BindPort = port
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return "", err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return "", err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return "", utilerrors.NewAggregate(errs)
	}
	t.apiDone = make(chan struct{})
	go func() {
		defer close(t.apiDone)
		err := app.Run(ctx, completed)
		if ctx.Err() == nil {
			failed <- fmt.Errorf("kube-apiserver stopped: %v", err)
		} else if err != nil {
			klog.Infof("kube-apiserver stopped: %v", err)
		}
	}()
	return fmt.Sprintf("https://127.0.0.1:%d", port), nil
}
