package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

// controllers are the kube-controller-manager controllers that run. Everything that needs
// real infrastructure (nodes' lifecycle, IPAM, volumes' binding and attachment, cloud,
// endpoints, HPA metrics, certificates) is left out.
var controllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"daemonset-controller",
	"job-controller",
	"cronjob-controller",
	"ttl-after-finished-controller",
	"namespace-controller",
	"garbage-collector-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller",
	"disruption-controller",
	"pod-garbage-collector-controller",
}

// prepareControllers parses the kube-controller-manager's options. It must run before the
// kube-apiserver's flags are built: both register the process-wide feature gates, and
// the controller manager changes a default (WatchListClient) that is frozen once the gates
// are added to a flag set. The returned function starts the controllers.
func (t *testenv) prepareControllers(kubeconfig, rootCA string) (func(ctx context.Context, failed chan<- error) error, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	all, disabled, aliases := kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases()
	named := s.Flags(all, disabled, aliases)
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file=" + t.spath("sa.key"),
		"--root-ca-file=" + rootCA,
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		// Faster reactions than production defaults: tests wait on these.
		"--concurrent-deployment-syncs=5",
		"--concurrent-replicaset-syncs=5",
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	s.ParsedFlags = &named
	return func(ctx context.Context, failed chan<- error) error {
		return t.runControllers(ctx, s, failed)
	}, nil
}

// runControllers runs the real kube-controller-manager's controllers in goroutines, without
// leader election or a serving port, as cluster-admin (no per-controller credentials).
func (t *testenv) runControllers(ctx context.Context, s *kcmoptions.KubeControllerManagerOptions, failed chan<- error) error {
	all, disabled, aliases := kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases()
	c, err := s.Config(ctx, all, disabled, aliases)
	if err != nil {
		return err
	}
	go func() {
		err := kcm.Run(ctx, c.Complete())
		if ctx.Err() == nil {
			failed <- fmt.Errorf("kube-controller-manager stopped: %v", err)
		} else if err != nil {
			klog.Infof("kube-controller-manager stopped: %v", err)
		}
	}()
	return nil
}
