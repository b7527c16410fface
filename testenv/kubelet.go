package main

// A fake kubelet: one Node, every pod bound to it and reported as its annotations ask.
//
// Rules (docs/test-cluster.md):
//   - Node "testenv-node" exists and is Ready, without taints.
//   - A pod with no spec.nodeName is bound to it (pods/binding), like the scheduler would.
//   - A bound pod of a Job (owner kind Job) turns Succeeded, or Failed when its annotations
//     carry kube-sandbox.io/fail-job or kube-sandbox.io/fail-rollout "true".
//   - Any other bound pod turns Running with conditions Ready and ContainersReady True and
//     every container ready, or, with kube-sandbox.io/fail-rollout "true", Running but never
//     ready (like a failing readiness probe).
//   - A pod being deleted with a grace period is deleted at once (grace 0), as a kubelet
//     does once its containers stopped: rollouts and namespace deletion finish.

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

const (
	nodeName       = "testenv-node"
	failRollout    = "kube-sandbox.io/fail-rollout"
	failJob        = "kube-sandbox.io/fail-job"
	kubeletVersion = "v1.34.4"
	kubeletWorkers = 4
)

type kubelet struct {
	client kubernetes.Interface
	pods   corelisters.PodLister
	queue  workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	nextIP int
	ips    map[string]string // pod UID -> IP
}

func startKubelet(ctx context.Context, client kubernetes.Interface, failed chan<- error) error {
	if err := ensureNode(ctx, client); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	podInformer := factory.Core().V1().Pods()
	k := &kubelet{
		client: client,
		pods:   podInformer.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](20*time.Millisecond, 5*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "fake-kubelet"}),
		ips: map[string]string{},
	}
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
	}()
	go func() {
		if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
			if ctx.Err() == nil {
				failed <- fmt.Errorf("fake kubelet: pod informer never synced")
			}
			return
		}
		for i := 0; i < kubeletWorkers; i++ {
			go k.work(ctx)
		}
	}()
	return nil
}

func (k *kubelet) work(ctx context.Context) {
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		err := k.sync(ctx, key)
		if err == nil {
			k.queue.Forget(key)
		} else if ctx.Err() == nil {
			if !apierrors.IsConflict(err) {
				klog.Warningf("fake kubelet: %s: %v", key, err)
			}
			k.queue.AddRateLimited(key)
		}
		k.queue.Done(key)
	}
}

func (k *kubelet) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	pods := k.client.CoreV1().Pods(ns)
	if pod.DeletionTimestamp != nil {
		if pod.DeletionGracePeriodSeconds != nil && *pod.DeletionGracePeriodSeconds == 0 {
			return nil // already finished; waiting for finalizers
		}
		zero := int64(0)
		uid := pod.UID
		err := pods.Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Spec.NodeName == "" {
		err := pods.Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: nodeName},
		}, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // gone, or bound meanwhile: the update event comes back here
		}
		return err
	}
	if pod.Spec.NodeName != nodeName {
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	status := k.status(pod)
	if sameStatus(&pod.Status, &status) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = status
	_, err = pods.UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func isJobPod(pod *corev1.Pod) bool {
	for _, o := range pod.OwnerReferences {
		if o.Kind == "Job" {
			return true
		}
	}
	return false
}

func (k *kubelet) ip(pod *corev1.Pod) string {
	if pod.Status.PodIP != "" {
		return pod.Status.PodIP
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	uid := string(pod.UID)
	if ip, ok := k.ips[uid]; ok {
		return ip
	}
	k.nextIP++
	ip := fmt.Sprintf("10.244.%d.%d", (k.nextIP/250)%250, k.nextIP%250+2)
	k.ips[uid] = ip
	return ip
}

// status is what the fake kubelet reports for a bound, live pod.
func (k *kubelet) status(pod *corev1.Pod) corev1.PodStatus {
	now := metav1.Now()
	ann := pod.Annotations
	failing := ann[failRollout] == "true"
	start := pod.Status.StartTime
	if start == nil {
		start = &now
	}
	ip := k.ip(pod)
	st := corev1.PodStatus{
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: start,
		QOSClass:  pod.Status.QOSClass,
	}
	var phase corev1.PodPhase
	ready := false
	terminated := false
	exitCode := int32(0)
	switch {
	case isJobPod(pod) && (failing || ann[failJob] == "true"):
		phase, terminated, exitCode = corev1.PodFailed, true, 1
	case isJobPod(pod):
		phase, terminated = corev1.PodSucceeded, true
	case failing:
		phase = corev1.PodRunning
	default:
		phase, ready = corev1.PodRunning, true
	}
	st.Phase = phase
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: now}
		for _, old := range pod.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	notReady := "ContainersNotReady"
	if terminated {
		notReady = "PodCompleted"
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, !terminated, ""),
		cond(corev1.PodInitialized, true, ""),
		cond(corev1.PodReady, ready, notReady),
		cond(corev1.ContainersReady, ready, notReady),
		cond(corev1.PodScheduled, true, ""),
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image,
			ContainerID: "fake://" + string(pod.UID) + "/" + c.Name,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: *start, FinishedAt: *start}},
		})
	}
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image,
			ContainerID: "fake://" + string(pod.UID) + "/" + c.Name,
			Ready:       ready,
		}
		if terminated {
			reason := "Completed"
			if exitCode != 0 {
				reason = "Error"
			}
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: exitCode, Reason: reason, StartedAt: *start, FinishedAt: now}
		} else {
			started := true
			cs.Started = &started
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *start}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	return st
}

func sameStatus(a, b *corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for i := range a.ContainerStatuses {
		if a.ContainerStatuses[i].Ready != b.ContainerStatuses[i].Ready {
			return false
		}
	}
	condition := func(s *corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
		for _, c := range s.Conditions {
			if c.Type == t {
				return c.Status
			}
		}
		return ""
	}
	return condition(a, corev1.PodReady) == condition(b, corev1.PodReady) &&
		condition(a, corev1.ContainersReady) == condition(b, corev1.ContainersReady)
}

// ensureNode registers the one Node, Ready and without the not-ready taint that the
// TaintNodesByCondition admission plugin puts on new nodes (there is no node lifecycle
// controller to take it off).
func ensureNode(ctx context.Context, client kubernetes.Interface) error {
	nodes := client.CoreV1().Nodes()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{
		"kubernetes.io/hostname": nodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
	}}}
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = nodes.Get(ctx, nodeName, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	if len(created.Spec.Taints) > 0 {
		created.Spec.Taints = nil
		if created, err = nodes.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	now := metav1.Now()
	resources := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("16"),
		corev1.ResourceMemory:           resource.MustParse("64Gi"),
		corev1.ResourcePods:             resource.MustParse("500"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	pressure := func(t corev1.NodeConditionType, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	created.Status = corev1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			pressure(corev1.NodeMemoryPressure, "KubeletHasSufficientMemory"),
			pressure(corev1.NodeDiskPressure, "KubeletHasNoDiskPressure"),
			pressure(corev1.NodePIDPressure, "KubeletHasSufficientPID"),
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "fake kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: nodeName}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: kubeletVersion, KubeProxyVersion: kubeletVersion,
			OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "fake://hookops-testenv", OSImage: "hookops testenv",
		},
	}
	_, err = nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func init() {
	runtime.ReallyCrash = false
}
