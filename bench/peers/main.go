// Command peers runs issue 28's scenarios against a real Kubernetes API server for three
// appliers, alternating, and prints medians, ratios and API request counts:
//
//   - hookops: a real `git push` into a bare repository whose post-receive hook is hookops;
//   - Flux's engine: github.com/fluxcd/pkg/ssa as kustomize-controller's reconcile drives it
//     (ApplyAllStaged, inventory prune with DeleteAll, WaitForSet of the change set), held in
//     this process like the controller holds it (warm REST mapper, no process start);
//   - bare kubectl: `kubectl apply --server-side` of the same files (the floor of a first
//     deploy, the naive full apply of a changed tree).
//
// scripts/bench-peers.sh builds this program, starts the test cluster and runs it; see
// docs/performance.md ("Against Flux's engine") for what is and is not comparable.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

var (
	kubeconfig  = flag.String("kubeconfig", "", "admin kubeconfig of the cluster")
	hookopsBin  = flag.String("hookops", "", "the hookops binary (release build)")
	kubectlBin  = flag.String("kubectl", "kubectl", "kubectl for the bare-kubectl side and for hookops")
	work        = flag.String("work", "", "scratch directory (fixtures, repositories)")
	runs        = flag.Int("runs", 5, "repetitions per side and scenario")
	only        = flag.String("only", "", "comma-separated scenario numbers (default: 1-5)")
	concurrency = flag.Int("concurrent-ssa", 4, "Flux's engine: concurrent dry-runs (kustomize-controller's --concurrent-ssa)")
	bigPrune    = flag.Int("prune-objects", 20000, "scenario 6 (only with -only 6): objects applied, then pruned")
	bareRuns    = flag.Int("bare-runs", 1, "runs of bare kubectl in scenarios 1 and 2 (~80 s each with kubectl 1.32/1.33)")
)

func main() {
	flag.Parse()
	if *kubeconfig == "" || *hookopsBin == "" || *work == "" {
		fmt.Fprintln(os.Stderr, "usage: peers -kubeconfig FILE -hookops BIN -work DIR [-runs N] [-only 1,2]")
		os.Exit(2)
	}
	for _, p := range []*string{hookopsBin, work, kubeconfig} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fatal(err)
		}
		*p = abs
	}
	b, err := newBench()
	if err != nil {
		fatal(err)
	}
	chosen := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			chosen[s] = true
		}
	}
	want := func(n string) bool { return len(chosen) == 0 && n != "6" || chosen[n] }
	var rows []row
	if want("1") {
		rows = append(rows, b.firstDeploy("1", "first deploy, 1,000 objects in one directory", 1, 1000))
	}
	if want("2") {
		rows = append(rows, b.firstDeploy("2", "first deploy, 10 directories × 100", 10, 100))
	}
	if want("3") || want("4") || want("5") {
		st := b.steady()
		if want("3") {
			rows = append(rows, b.oneChange(st, "3", "2,000 deployed, one ConfigMap changed", false))
		}
		if want("4") {
			rows = append(rows, b.oneChange(st, "4", "2,000 deployed, one Deployment image changed", true))
		}
		if want("5") {
			rows = append(rows, b.deleteDir(st, "5", "delete a directory of 100 objects"))
		}
	}
	if want("6") {
		rows = append(rows, b.bigPrune("6", fmt.Sprintf("prune %d objects (1 run)", *bigPrune)))
	}
	printTable(rows)
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "peers: %v\n", err)
	os.Exit(1)
}

type bench struct {
	cfg     *rest.Config
	mgr     *ssa.ResourceManager
	kube    *kubernetes.Clientset
	ctx     context.Context
	idle    float64 // background requests per second (controllers, the fake kubelet)
	scrapes float64 // requests one scrape itself adds
}

func newBench() (*bench, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return nil, err
	}
	// No client-side rate limit (kustomize-controller's flags default to --kube-api-qps=50
	// --kube-api-burst=300, which would cap it at 50 requests a second): the engine's best case.
	cfg.QPS = -1
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Mapper: mapper, HTTPClient: httpClient})
	if err != nil {
		return nil, err
	}
	poller := polling.NewStatusPoller(c, mapper, polling.Options{})
	mgr := ssa.NewResourceManager(c, poller, ssa.Owner{Field: "kustomize-controller", Group: "kustomize.toolkit.fluxcd.io"})
	mgr.SetConcurrency(*concurrency)
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, mgr: mgr, kube: kube, ctx: context.Background()}
	// Calibrate what a scrape and the idle cluster add to the request counter.
	a := b.requests()
	c1 := b.requests()
	time.Sleep(2 * time.Second)
	c2 := b.requests()
	b.scrapes = c1 - a
	b.idle = math.Max(0, (c2-c1-b.scrapes)/2)
	if a == 0 {
		return nil, fmt.Errorf("the server's /metrics has no apiserver_request_total")
	}
	fmt.Fprintf(os.Stderr, "peers: %.0f requests so far; idle cluster: %.1f requests/s; a scrape counts %.0f\n", a, b.idle, b.scrapes)
	return b, nil
}

// requests is the sum of the server's apiserver_request_total.
func (b *bench) requests() float64 {
	raw, err := b.kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(b.ctx)
	if err != nil {
		fatal(fmt.Errorf("scraping /metrics: %w", err))
	}
	total := 0.0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}

// measure runs f, returning its wall time and the API requests it caused (background
// subtracted).
func (b *bench) measure(f func()) sample {
	before := b.requests()
	start := time.Now()
	f()
	d := time.Since(start)
	after := b.requests()
	n := after - before - b.scrapes - b.idle*d.Seconds()
	return sample{d: d, req: math.Max(0, n)}
}

type sample struct {
	d   time.Duration
	req float64
}

type side struct {
	name    string
	samples []sample
}

type row struct {
	num, title string
	sides      [3]side // hookops, flux, kubectl
	note       string
}

// alternate runs the three sides runs times, rotating their order each round; the third
// (bare kubectl) only in the first `third` rounds.
func alternate(runs, third int, f [3]func(run int) sample) [3][]sample {
	var out [3][]sample
	for r := 0; r < runs; r++ {
		for k := 0; k < 3; k++ {
			i := (r + k) % 3
			if i == 2 && r >= third {
				continue
			}
			out[i] = append(out[i], f[i](r))
		}
	}
	return out
}

// ---- fixtures ----

func configMap(ns, name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  key: %q\n  other: \"some text that makes the object a little larger than a toy\"\n", name, ns, value)
}

func deployment(ns, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: %s
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: %s
`, ns, image)
}

func namespaceDoc(ns string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns)
}

func write(path, text string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		fatal(err)
	}
}

// tree writes a namespace directory and dirs × per ConfigMaps (one a file) under root.
func tree(root, ns string, dirs, per int) {
	write(filepath.Join(root, "0-namespace", "namespace.yaml"), namespaceDoc(ns))
	for d := 0; d < dirs; d++ {
		dir := "apps"
		if dirs > 1 {
			dir = fmt.Sprintf("d%02d", d)
		}
		for i := 0; i < per; i++ {
			name := fmt.Sprintf("cm-%02d-%04d", d, i)
			write(filepath.Join(root, dir, name+".yaml"), configMap(ns, name, "v0"))
		}
	}
}

// ---- the three appliers ----

func run(dir string, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		fatal(fmt.Errorf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out))
	}
	return string(out)
}

// repo is a bare repository with hookops installed and a clone to push from.
type repo struct{ bare, clone string }

func newRepo(at string) repo {
	r := repo{bare: at + ".git", clone: at}
	_ = os.RemoveAll(r.bare)
	_ = os.RemoveAll(r.clone)
	run(*work, "git", "init", "-q", "--bare", "-b", "main", r.bare)
	run(*work, *hookopsBin, "install", r.bare)
	write(filepath.Join(r.bare, "hookops", "config.toml"), fmt.Sprintf(
		"[[environment]]\nname = \"bench\"\nbranch = \"main\"\nkubeconfig = %q\n\n[tools]\nkubectl = %q\n", *kubeconfig, *kubectlBin))
	run(*work, "git", "init", "-q", "-b", "main", r.clone)
	run(r.clone, "git", "remote", "add", "origin", r.bare)
	return r
}

func (r repo) commit(msg string) {
	run(r.clone, "git", "add", "-A")
	run(r.clone, "git", "commit", "-q", "--allow-empty", "-m", msg)
}

// push pushes HEAD and fails the benchmark unless hookops recorded a success for it.
func (r repo) push() {
	out := run(r.clone, "git", "push", "-q", "origin", "HEAD:main")
	head := strings.TrimSpace(run(r.clone, "git", "rev-parse", "HEAD"))
	note := run(r.bare, "git", "notes", "--ref", "hookops", "show", head)
	records := strings.Split(note, "hookops-record v1")
	last := records[len(records)-1]
	if !strings.Contains(last, `"result":"succeeded"`) {
		fatal(fmt.Errorf("hookops did not deploy %s:\n%s\n%s", head, out, last))
	}
}

func kubectl(args ...string) {
	run(*work, *kubectlBin, append([]string{"--kubeconfig", *kubeconfig}, args...)...)
}

// flux is one Kustomization's state for the engine: its inventory of applied objects.
type flux struct {
	name      string
	inventory object.ObjMetadataSet
	versions  map[object.ObjMetadata]string
	// pruneOnly is the duration of the last reconcile's prune phase.
	pruneOnly time.Duration
}

func readObjects(root string) []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		o, err := utils.ReadObjects(f)
		objs = append(objs, o...)
		return err
	})
	if err != nil {
		fatal(err)
	}
	return objs
}

// reconcile does what kustomize-controller's reconcile does with the engine once the
// artifact is built: owner labels, ApplyAllStaged, prune of what left the inventory,
// WaitForSet of the change set (`wait: true`).
func (b *bench) reconcile(k *flux, root string) {
	objects := readObjects(root)
	b.mgr.SetOwnerLabels(objects, k.name, "flux-system")
	opts := ssa.DefaultApplyOptions()
	opts.Cleanup = ssa.ApplyCleanupOptions{
		Annotations: []string{corev1.LastAppliedConfigAnnotation},
		FieldManagers: []ssa.FieldManager{
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationApply},
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "before-first-apply", OperationType: metav1.ManagedFieldsOperationUpdate},
		},
	}
	cs, err := b.mgr.ApplyAllStaged(b.ctx, objects, opts)
	if err != nil {
		fatal(fmt.Errorf("flux apply: %w", err))
	}
	current := cs.ToObjMetadataSet()
	stale := k.inventory.Diff(current)
	start := time.Now()
	if len(stale) > 0 {
		var del []*unstructured.Unstructured
		for _, id := range stale {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(id.GroupKind.WithVersion(k.versions[id]))
			u.SetNamespace(id.Namespace)
			u.SetName(id.Name)
			del = append(del, u)
		}
		if _, err := b.mgr.DeleteAll(b.ctx, del, ssa.DeleteOptions{
			PropagationPolicy: metav1.DeletePropagationBackground,
			Inclusions:        b.mgr.GetOwnerLabels(k.name, "flux-system"),
		}); err != nil {
			fatal(fmt.Errorf("flux prune: %w", err))
		}
	}
	k.pruneOnly = time.Since(start)
	k.inventory = current
	k.versions = map[object.ObjMetadata]string{}
	for _, e := range cs.Entries {
		k.versions[e.ObjMetadata] = e.GroupVersion
	}
	if err := b.mgr.WaitForSet(current, ssa.WaitOptions{Interval: 2 * time.Second, Timeout: 5 * time.Minute, FailFast: true}); err != nil {
		fatal(fmt.Errorf("flux wait: %w", err))
	}
}

// ---- scenarios ----

func (b *bench) firstDeploy(num, title string, dirs, per int) row {
	fmt.Fprintf(os.Stderr, "peers: scenario %s: %s\n", num, title)
	s := alternate(*runs, *bareRuns, [3]func(int) sample{
		func(r int) sample {
			rp := newRepo(filepath.Join(*work, fmt.Sprintf("s%s-h%d", num, r)))
			tree(rp.clone, fmt.Sprintf("p%s-h%d", num, r), dirs, per)
			rp.commit("first")
			return b.measure(rp.push)
		},
		func(r int) sample {
			root := filepath.Join(*work, fmt.Sprintf("s%s-f%d", num, r))
			tree(root, fmt.Sprintf("p%s-f%d", num, r), dirs, per)
			k := &flux{name: fmt.Sprintf("s%s-f%d", num, r)}
			return b.measure(func() { b.reconcile(k, root) })
		},
		func(r int) sample {
			root := filepath.Join(*work, fmt.Sprintf("s%s-k%d", num, r))
			tree(root, fmt.Sprintf("p%s-k%d", num, r), dirs, per)
			return b.measure(func() {
				kubectl("apply", "--server-side", "--field-manager=bare", "-R", "-f", root)
			})
		},
	})
	return mkrow(num, title, s, "")
}

// steadyState is one deployed tree of 2,000 objects per side (20 directories × 99 ConfigMaps
// plus a Deployment of 2 replicas, a namespace, and 19 padding ConfigMaps).
type steadyState struct {
	hook  repo
	flux  *flux
	fluxD string
	kubeD string
}

func steadyTree(root, ns string) {
	tree(root, ns, 20, 99)
	for i := 0; i < 19; i++ {
		write(filepath.Join(root, "pad", fmt.Sprintf("pad-%02d.yaml", i)), configMap(ns, fmt.Sprintf("pad-%02d", i), "v0"))
	}
	write(filepath.Join(root, "web", "deployment.yaml"), deployment(ns, "web:0"))
}

func (b *bench) steady() *steadyState {
	fmt.Fprintln(os.Stderr, "peers: deploying the steady-state trees (2,000 objects per side)")
	st := &steadyState{
		hook:  newRepo(filepath.Join(*work, "steady-h")),
		flux:  &flux{name: "steady"},
		fluxD: filepath.Join(*work, "steady-f"),
		kubeD: filepath.Join(*work, "steady-k"),
	}
	steadyTree(st.hook.clone, "steady-h")
	st.hook.commit("steady")
	st.hook.push()
	steadyTree(st.fluxD, "steady-f")
	b.reconcile(st.flux, st.fluxD)
	steadyTree(st.kubeD, "steady-k")
	// Set-up only, untimed: without kubectl 1.32/1.33's per-object OpenAPI decode.
	kubectl("apply", "--server-side", "--validate=false", "--field-manager=bare", "-R", "-f", st.kubeD)
	return st
}

func (b *bench) oneChange(st *steadyState, num, title string, image bool) row {
	fmt.Fprintf(os.Stderr, "peers: scenario %s: %s\n", num, title)
	change := func(root, ns string, r int) string {
		if image {
			p := filepath.Join(root, "web", "deployment.yaml")
			write(p, deployment(ns, fmt.Sprintf("web:%s-%d", num, r+1)))
			return p
		}
		p := filepath.Join(root, "d07", "cm-07-0042.yaml")
		write(p, configMap(ns, "cm-07-0042", fmt.Sprintf("v%s-%d", num, r+1)))
		return p
	}
	s := alternate(*runs, *runs, [3]func(int) sample{
		func(r int) sample {
			change(st.hook.clone, "steady-h", r)
			st.hook.commit("change")
			return b.measure(st.hook.push)
		},
		func(r int) sample {
			change(st.fluxD, "steady-f", r)
			return b.measure(func() { b.reconcile(st.flux, st.fluxD) })
		},
		func(r int) sample {
			file := change(st.kubeD, "steady-k", r)
			return b.measure(func() {
				kubectl("apply", "--server-side", "--field-manager=bare", "-f", file)
				if image {
					kubectl("rollout", "status", "-n", "steady-k", "deployment/web", "--timeout=300s")
				}
			})
		},
	})
	note := "Flux: one reconcile of the whole tree; kubectl: `apply --server-side -f` of the changed file (by hand)"
	return mkrow(num, title, s, note)
}

func (b *bench) deleteDir(st *steadyState, num, title string) row {
	fmt.Fprintf(os.Stderr, "peers: scenario %s: %s\n", num, title)
	extra := func(root, ns string) string {
		dir := filepath.Join(root, "extra")
		for i := 0; i < 100; i++ {
			name := fmt.Sprintf("extra-%03d", i)
			write(filepath.Join(dir, name+".yaml"), configMap(ns, name, "v0"))
		}
		return dir
	}
	s := alternate(*runs, *runs, [3]func(int) sample{
		func(r int) sample {
			dir := extra(st.hook.clone, "steady-h")
			st.hook.commit("add extra")
			st.hook.push()
			_ = os.RemoveAll(dir)
			st.hook.commit("remove extra")
			return b.measure(st.hook.push)
		},
		func(r int) sample {
			dir := extra(st.fluxD, "steady-f")
			b.reconcile(st.flux, st.fluxD)
			_ = os.RemoveAll(dir)
			smp := b.measure(func() { b.reconcile(st.flux, st.fluxD) })
			// Only the prune phase counts (the figure); its requests are not split out.
			smp.d = st.flux.pruneOnly
			return smp
		},
		func(r int) sample {
			dir := extra(st.kubeD, "steady-k")
			kubectl("apply", "--server-side", "--validate=false", "--field-manager=bare", "-f", dir)
			smp := b.measure(func() { kubectl("delete", "-f", dir) })
			_ = os.RemoveAll(dir)
			return smp
		},
	})
	return mkrow(num, title, s, "Flux: its prune phase only (requests: the whole reconcile); kubectl: `delete -f` of the directory")
}

func (b *bench) bigPrune(num, title string) row {
	fmt.Fprintf(os.Stderr, "peers: scenario %s: %s\n", num, title)
	per := *bigPrune / 100
	var out [3][]sample
	rp := newRepo(filepath.Join(*work, "prune-h"))
	tree(rp.clone, "prune-h", 100, per)
	rp.commit("many")
	applied := b.measure(rp.push)
	for _, d := range mustGlob(filepath.Join(rp.clone, "d*")) {
		_ = os.RemoveAll(d)
	}
	rp.commit("none")
	out[0] = append(out[0], b.measure(rp.push))
	root := filepath.Join(*work, "prune-f")
	tree(root, "prune-f", 100, per)
	k := &flux{name: "prune"}
	b.reconcile(k, root)
	for _, d := range mustGlob(filepath.Join(root, "d*")) {
		_ = os.RemoveAll(d)
	}
	smp := b.measure(func() { b.reconcile(k, root) })
	smp.d = k.pruneOnly
	out[1] = append(out[1], smp)
	root = filepath.Join(*work, "prune-k")
	tree(root, "prune-k", 100, per)
	kubectl("apply", "--server-side", "--validate=false", "--field-manager=bare", "-R", "-f", root)
	out[2] = append(out[2], b.measure(func() {
		for _, d := range mustGlob(filepath.Join(root, "d*")) {
			kubectl("delete", "-f", d)
		}
	}))
	return mkrow(num, title, out, fmt.Sprintf("hookops applied them in %s", round(applied.d)))
}

func mustGlob(p string) []string {
	m, err := filepath.Glob(p)
	if err != nil {
		fatal(err)
	}
	return m
}

// ---- output ----

func mkrow(num, title string, s [3][]sample, note string) row {
	r := row{num: num, title: title, note: note}
	for i, n := range []string{"hookops", "flux", "kubectl"} {
		r.sides[i] = side{name: n, samples: s[i]}
		fmt.Fprintf(os.Stderr, "peers:   %-8s", n)
		for _, x := range s[i] {
			fmt.Fprintf(os.Stderr, " %s (%.0f req)", round(x.d), x.req)
		}
		fmt.Fprintln(os.Stderr)
	}
	return r
}

func median(s []sample) (time.Duration, float64) {
	ds := make([]time.Duration, len(s))
	rs := make([]float64, len(s))
	for i, x := range s {
		ds[i], rs[i] = x.d, x.req
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	sort.Float64s(rs)
	n := len(s)
	if n == 0 {
		return 0, 0
	}
	if n%2 == 1 {
		return ds[n/2], rs[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2, (rs[n/2-1] + rs[n/2]) / 2
}

func round(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func printTable(rows []row) {
	fmt.Println()
	fmt.Println("| scenario | hookops (git push) | Flux's engine | bare kubectl SSA | hookops ÷ Flux | requests: hookops / Flux / kubectl |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rows {
		hd, hr := median(r.sides[0].samples)
		fd, fr := median(r.sides[1].samples)
		kd, kr := median(r.sides[2].samples)
		ratio := "-"
		if fd > 0 {
			ratio = fmt.Sprintf("%.3f", hd.Seconds()/fd.Seconds())
		}
		fmt.Printf("| %s. %s | %s | %s | %s | %s | %.0f / %.0f / %.0f |\n", r.num, r.title, round(hd), round(fd), round(kd), ratio, hr, fr, kr)
	}
	for _, r := range rows {
		if r.note != "" {
			fmt.Printf("\n%s: %s", r.num, r.note)
		}
	}
	fmt.Printf("\n\nbare kubectl in scenarios 1 and 2: %d run(s)", *bareRuns)
	fmt.Printf("\nmedians of %d alternating runs per side; requests: the server's apiserver_request_total, before and after, less the idle rate\n", *runs)
}
