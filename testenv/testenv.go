package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
)

type testenv struct {
	dir   string // the caller's directory: kubeconfigs, pid, ready, log
	state string // temporary: etcd data, certificates, keys (removed on exit)

	etcd    *embed.Etcd
	apiDone chan struct{}
}

func (t *testenv) path(name string) string  { return filepath.Join(t.dir, name) }
func (t *testenv) spath(name string) string { return filepath.Join(t.state, name) }

// start brings everything up and writes DIR/ready last. Errors of components that fail later
// are sent to failed.
func (t *testenv) start(ctx context.Context, failed chan<- error) error {
	begin := time.Now()
	if err := writeAtomic(t.path("pid"), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return err
	}
	etcdURL, err := t.startEtcd()
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	klog.Infof("etcd ready at %s after %v", etcdURL, time.Since(begin))

	token := randomHex(24)
	tokens := fmt.Sprintf("%s,testenv-admin,testenv-admin,\"system:masters\"\n", token)
	if err := os.WriteFile(t.spath("tokens.csv"), []byte(tokens), 0o600); err != nil {
		return err
	}
	if err := writeRSAKey(t.spath("sa.key")); err != nil {
		return err
	}

	startControllers, err := t.prepareControllers(t.path("admin.kubeconfig"), t.spath("certs/apiserver.crt"))
	if err != nil {
		return fmt.Errorf("kube-controller-manager options: %w", err)
	}
	server, err := t.startAPIServer(ctx, etcdURL, failed)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	ca, err := os.ReadFile(t.spath("certs/apiserver.crt"))
	if err != nil {
		return fmt.Errorf("kube-apiserver serving certificate: %w", err)
	}
	if err := writeKubeconfig(t.path("admin.kubeconfig"), server, ca, "testenv-admin", token, "default"); err != nil {
		return err
	}
	cfg := &rest.Config{Host: server, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}, QPS: 100, Burst: 200}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := waitReadyz(ctx, client, 90*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver /readyz: %w", err)
	}
	klog.Infof("kube-apiserver ready at %s after %v", server, time.Since(begin))

	if err := startControllers(ctx, failed); err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	if err := startKubelet(ctx, client, failed); err != nil {
		return fmt.Errorf("fake kubelet: %w", err)
	}
	if err := poll(ctx, 60*time.Second, func() (bool, error) {
		_, err := client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("namespace default never appeared: %w", err)
	}
	if err := poll(ctx, 60*time.Second, func() (bool, error) {
		_, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("node %s never appeared: %w", nodeName, err)
	}
	deployerToken, err := createDeployer(ctx, client)
	if err != nil {
		return fmt.Errorf("deployer service account: %w", err)
	}
	if err := writeKubeconfig(t.path("deployer.kubeconfig"), server, ca, "hookops-deployer", deployerToken, "default"); err != nil {
		return err
	}
	took := time.Since(begin)
	klog.Infof("testenv ready at %s after %v", server, took)
	if err := writeAtomic(t.path("ready"), []byte(fmt.Sprintf("%s\nstartup_ms %d\n", server, took.Milliseconds())), 0o644); err != nil {
		return err
	}
	fmt.Printf("testenv ready %s\n", server)
	os.Stdout.Sync()
	return nil
}

func (t *testenv) stop(timeout time.Duration) {
	deadline := time.After(timeout)
	if t.apiDone != nil {
		select {
		case <-t.apiDone:
		case <-deadline:
			klog.Warning("kube-apiserver did not stop in time")
		}
	}
	if t.etcd != nil {
		done := make(chan struct{})
		go func() { t.etcd.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			klog.Warning("etcd did not stop in time")
		}
	}
}

func (t *testenv) startEtcd() (string, error) {
	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = t.spath("etcd")
	cfg.UnsafeNoFsync = true // a throw-away single member: no fsync
	// etcd dials its own advertised client URL, so the ports must be real: take two free
	// ones (the OS does not hand them out again at once).
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", err
	}
	t.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return "", err
	case <-time.After(60 * time.Second):
		return "", fmt.Errorf("not ready after 60s")
	}
	return "http://" + e.Clients[0].Addr().String(), nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitReadyz(ctx context.Context, client kubernetes.Interface, timeout time.Duration) error {
	var last string
	err := poll(ctx, timeout, func() (bool, error) {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		return string(body) == "ok", nil
	})
	if err != nil && last != "" {
		return fmt.Errorf("%w (last answer: %s)", err, last)
	}
	return err
}

func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) { return cond() })
}

func writeKubeconfig(path, server string, ca []byte, user, token, namespace string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: user, Namespace: namespace}
	cfg.CurrentContext = "testenv"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeAtomic(path, data, 0o600)
}

// writeAtomic writes a temporary file and renames it, so a reader never sees half a file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
