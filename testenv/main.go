// hookops-testenv: a real Kubernetes control plane for hookops' tests, in one process.
//
// It runs, on 127.0.0.1 with OS-chosen ports: an embedded etcd, the real kube-apiserver
// (k8s.io/kubernetes/cmd/kube-apiserver/app), the workload controllers of the real
// kube-controller-manager, and a fake kubelet (kubelet.go) that binds pods to one Node and
// reports them running. See docs/test-cluster.md in the repository.
//
//	hookops-testenv --dir DIR [--exit-with-stdin]
//
// writes DIR/admin.kubeconfig, DIR/deployer.kubeconfig, DIR/pid, DIR/testenv.log and, last,
// DIR/ready; prints "testenv ready <url>" on stdout; SIGTERM/SIGINT (or EOF on stdin with
// --exit-with-stdin) stop it with exit status 0 and remove its temporary data.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// realStderr is the process's stderr before it is redirected to DIR/testenv.log.
var realStderr = os.Stderr

func fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(realStderr, "hookops-testenv: %s\n", msg)
	klog.Errorf("fatal: %s", msg)
	klog.Flush()
	os.Exit(1)
}

func main() {
	dir := flag.String("dir", "", "directory for kubeconfigs, pid, ready and testenv.log (created if missing)")
	exitWithStdin := flag.Bool("exit-with-stdin", false, "stop when standard input reaches EOF")
	flag.Parse()
	if *dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: hookops-testenv --dir DIR [--exit-with-stdin]")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fatalf("%v", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		fatalf("%v", err)
	}
	os.Remove(filepath.Join(abs, "ready"))
	quietLogs(filepath.Join(abs, "testenv.log"))

	state, err := os.MkdirTemp("", "hookops-testenv-")
	if err != nil {
		fatalf("%v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan string, 4)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { s := <-sigs; stopped <- "signal " + s.String() }()
	if *exitWithStdin {
		go func() { io.Copy(io.Discard, os.Stdin); stopped <- "stdin closed" }()
	}

	env := &testenv{dir: abs, state: state}
	failed := make(chan error, 4)
	go func() {
		if err := env.start(ctx, failed); err != nil {
			failed <- err
		}
	}()

	exit := 0
	select {
	case why := <-stopped:
		klog.Infof("stopping: %s", why)
	case err := <-failed:
		fmt.Fprintf(realStderr, "hookops-testenv: %v (log: %s)\n", err, filepath.Join(abs, "testenv.log"))
		klog.Errorf("failed: %v", err)
		exit = 1
	}
	os.Remove(filepath.Join(abs, "ready"))
	cancel()
	env.stop(10 * time.Second)
	os.RemoveAll(state)
	os.Remove(filepath.Join(abs, "pid"))
	klog.Flush()
	os.Exit(exit)
}

// quietLogs sends klog, etcd's zap logger and anything else written to stderr (panics
// included) to path; stdout keeps only the "testenv ready" line.
func quietLogs(path string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fatalf("%v", err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		fatalf("dup stderr: %v", err)
	}
	realStderr = os.NewFile(uintptr(saved), "stderr")
	if err := syscall.Dup3(int(f.Fd()), 2, 0); err != nil {
		fatalf("redirect stderr: %v", err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.Set("logtostderr", "true") // stderr is the log file now
	fs.Set("v", "0")
}
