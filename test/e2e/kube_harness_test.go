package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"

	"github.com/raft-elector/raft-elector/test/kubeenv"
)

// The Kubernetes-mode harness. Members are raft-elector processes started with
// --discovery=kubernetes against a real kube-apiserver (test/kubeenv), authenticated as the
// service account of deploy/rbac.yaml, each standing for a Pod object the test creates with
// status.podIP set to the member's own loopback address 127.0.X.N. Discovery reaches a member
// at podIP:<peer port>, and the peer port is taken from a member's own --advertise-addr, so all
// members of one application share one port P, each on its own IP. There is no fault proxy:
// faults are signals (SIGKILL, SIGSTOP, SIGTERM), pod deletions and API server outages.

const (
	// roleLabel and its values are the defaults of --label-key and the label values.
	roleLabel     = "raft-elector/role"
	roleLeader    = "leader"
	roleFollower  = "follower"
	sidecarSA     = "raft-elector" // the ServiceAccount of deploy/rbac.yaml
	kubeSettle    = 30 * time.Second
	apiCallBudget = 10 * time.Second
)

// startKubeEnv starts a kube-apiserver and etcd for one test; they are stopped by its cleanup.
func startKubeEnv(t *testing.T) *kubeenv.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("Kubernetes tests are skipped in -short mode")
	}
	begin := time.Now()
	env := kubeenv.StartT(t, kubeenv.Options{})
	t.Logf("kube-apiserver and etcd ready in %s", time.Since(begin).Round(time.Millisecond))
	return env
}

// createNamespace creates a namespace as the admin.
func createNamespace(t *testing.T, env *kubeenv.Env, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	if _, err := env.AdminClient.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
}

// installSidecarRBAC creates, in ns, exactly the objects of deploy/rbac.yaml (NAMESPACE
// replaced by ns): the sidecar's ServiceAccount, its Role and the RoleBinding. It returns a
// kubeconfig file that authenticates as that ServiceAccount with a token from the TokenRequest
// API, as the sidecar would be in a pod.
func installSidecarRBAC(t *testing.T, env *kubeenv.Env, ns string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "deploy", "rbac.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	admin := env.AdminClient
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(bytes.ReplaceAll(raw, []byte("NAMESPACE"), []byte(ns)))))
	var kinds []string
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if onlyComments(doc) {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode a document of %s: %v", path, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = admin.CoreV1().ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = admin.RbacV1().Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s holds a %T; the test installs ServiceAccounts, Roles and RoleBindings only", path, obj)
		}
		if err != nil {
			t.Fatalf("create %T from %s in %s: %v", obj, path, ns, err)
		}
		kinds = append(kinds, obj.GetObjectKind().GroupVersionKind().Kind)
	}
	if !slices.Contains(kinds, "ServiceAccount") || !slices.Contains(kinds, "Role") || !slices.Contains(kinds, "RoleBinding") {
		t.Fatalf("%s holds %v; want a ServiceAccount, a Role and a RoleBinding", path, kinds)
	}
	_, kubeconfig, err := env.ServiceAccountConfig(ctx, ns, sidecarSA)
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

func onlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// pickPeerPort returns a port P such that P, P+1 and P+2 are free on every one of ips: P is the
// peer port of every member, P+1 its --local-addr port and P+2 its --ops-addr port, each on the
// member's own IP. Ports come from below the ephemeral range (see freePort).
func pickPeerPort(t *testing.T, ips []string) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	low := ephemeralLow()
	const floor = 20000
	if low-floor < 2000 {
		low = 60000
	}
	for range 500 {
		p := floor + rand.IntN(low-floor-3)
		if portsUsed[p] || portsUsed[p+1] || portsUsed[p+2] {
			continue
		}
		if portsFree(ips, p, p+1, p+2) {
			portsUsed[p], portsUsed[p+1], portsUsed[p+2] = true, true, true
			return p
		}
	}
	t.Fatalf("no port P with P..P+2 free on %v", ips)
	return 0
}

func portsFree(ips []string, ports ...int) bool {
	var open []net.Listener
	defer func() {
		for _, l := range open {
			l.Close()
		}
	}()
	for _, ip := range ips {
		for _, p := range ports {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				return false
			}
			open = append(open, l)
		}
	}
	return true
}

// kubePod is one Pod object of an application.
type kubePod struct {
	Name string
	IP   string // status.podIP; empty for a pod created Pending without an address
	// Phase, when set, replaces the phase Running of a pod with an IP (through the status
	// subresource, as a kubelet reports it) before any member starts.
	Phase corev1.PodPhase
	UID   string
	Run   bool // whether a raft-elector process runs for it
}

// kubeAppConfig describes one application: its pods in a namespace, matched by app=<App>.
type kubeAppConfig struct {
	Namespace string
	App       string // the pods carry app=<App>; the members run with --selector=app=<App>
	// Kubeconfig authenticates the members (installSidecarRBAC).
	Kubeconfig string
	// PeerPort is P (pickPeerPort over the IPs of every member that will ever listen on them).
	PeerPort int
	// Pods are created Running at their IP, in order, before any member starts. Those with
	// Run set get a member process, in the Cluster in the same order.
	Pods []kubePod
	// EnvIdentity names a pod whose member gets its pod name, UID and namespace from the
	// downward-API variables POD_NAME, POD_UID and POD_NAMESPACE instead of flags.
	EnvIdentity string
	// ExtraArgs are appended to every member's command line.
	ExtraArgs []string
	// Heartbeat, Election and PollInterval are those of the Cluster (Config); zero for its
	// defaults.
	Heartbeat, Election, PollInterval time.Duration
}

// kubeApp is an application running raft-elector in Kubernetes mode: its pods, the cluster of
// member processes (with the lease checker polling every /leader), and a watch on the pods'
// role labels.
type kubeApp struct {
	t       *testing.T
	env     *kubeenv.Env
	cfg     kubeAppConfig
	pods    map[string]*kubePod
	Cluster *Cluster
	Labels  *labelWatch
	Started time.Time // just before the member processes were started
}

// startKubeApp creates the application's pods, starts watching their labels, then starts a
// member for each pod with Run set, and returns once every member listens.
func startKubeApp(t *testing.T, env *kubeenv.Env, cfg kubeAppConfig) *kubeApp {
	t.Helper()
	a := &kubeApp{t: t, env: env, cfg: cfg, pods: map[string]*kubePod{}}
	for i := range cfg.Pods {
		p := &cfg.Pods[i]
		pod := a.createPod(p.Name, p.IP)
		p.UID = string(pod.UID)
		if p.Phase != "" {
			ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
			_, err := kubeenv.UpdatePodStatus(ctx, env.AdminClient, cfg.Namespace, p.Name, func(pod *corev1.Pod) { pod.Status.Phase = p.Phase })
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		a.pods[p.Name] = p
	}
	a.Labels = watchRoleLabels(t, env, cfg.Namespace, a.Selector())
	var names []string
	var running []*kubePod
	for i := range cfg.Pods {
		if cfg.Pods[i].Run {
			names = append(names, cfg.Pods[i].Name)
			running = append(running, &cfg.Pods[i])
		}
	}
	binary(t) // built on first use: not part of the members' start
	a.Started = time.Now()
	a.Cluster = NewCluster(t, Config{
		Members:      len(names),
		Names:        names,
		ExtraArgs:    cfg.ExtraArgs,
		Heartbeat:    cfg.Heartbeat,
		Election:     cfg.Election,
		PollInterval: cfg.PollInterval,
		Addrs: func(i int) (string, string, string) {
			ip := running[i].IP
			return net.JoinHostPort(ip, strconv.Itoa(cfg.PeerPort)),
				net.JoinHostPort(ip, strconv.Itoa(cfg.PeerPort+1)),
				net.JoinHostPort(ip, strconv.Itoa(cfg.PeerPort+2))
		},
		DiscoveryArgs: a.discoveryArgs,
		MemberEnv: func(m *Member) []string {
			if m.ID != cfg.EnvIdentity {
				return nil
			}
			return []string{"POD_NAME=" + m.ID, "POD_UID=" + a.pods[m.ID].UID, "POD_NAMESPACE=" + cfg.Namespace}
		},
	})
	return a
}

// Selector is the label selector of the application's pods.
func (a *kubeApp) Selector() string { return "app=" + a.cfg.App }

func (a *kubeApp) discoveryArgs(m *Member) []string {
	p := a.pods[m.ID]
	args := []string{
		"--discovery=kubernetes",
		"--selector=" + a.Selector(),
		"--kubeconfig=" + a.cfg.Kubeconfig,
		"--advertise-addr=" + net.JoinHostPort(p.IP, strconv.Itoa(a.cfg.PeerPort)),
	}
	if m.ID != a.cfg.EnvIdentity {
		args = append(args, "--id="+p.Name, "--pod-uid="+p.UID, "--namespace="+a.cfg.Namespace)
	}
	return args
}

// createPod creates a pod of the application as the admin: Running at ip (phase Running,
// status.podIP, ready) when ip is set, else scheduled but Pending without an address.
func (a *kubeApp) createPod(name, ip string) *corev1.Pod {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.t.Context(), apiCallBudget)
	defer cancel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": a.cfg.App}}}
	pod.Spec.ServiceAccountName = sidecarSA
	if ip == "" {
		pod.Spec.NodeName = kubeenv.NodeName
		pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "kubeenv.invalid/app"}}
		created, err := a.env.AdminClient.CoreV1().Pods(a.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			a.t.Fatalf("create pending pod %s/%s: %v", a.cfg.Namespace, name, err)
		}
		return created
	}
	created, err := kubeenv.CreateRunningPod(ctx, a.env.AdminClient, a.cfg.Namespace, pod, ip)
	if err != nil {
		a.t.Fatal(err)
	}
	return created
}

// Index returns the cluster index of the member for pod name.
func (a *kubeApp) Index(name string) int {
	a.t.Helper()
	i := a.Cluster.Index(name)
	if i < 0 {
		a.t.Fatalf("no member runs for pod %s", name)
	}
	return i
}

// Name is the pod name of member i.
func (a *kubeApp) Name(i int) string { return a.Cluster.Members[i].ID }

// DeletePod deletes a pod as the admin: gracefully (it stays, terminating, with a
// deletionTimestamp, since no kubelet finishes the deletion) or with a zero grace period.
func (a *kubeApp) DeletePod(name string, force bool) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.t.Context(), apiCallBudget)
	defer cancel()
	if force {
		if err := kubeenv.ForceDeletePod(ctx, a.env.AdminClient, a.cfg.Namespace, name); err != nil {
			a.t.Fatal(err)
		}
		a.Cluster.Logf("force-deleted pod %s", name)
		return
	}
	if err := a.env.AdminClient.CoreV1().Pods(a.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		a.t.Fatalf("delete pod %s/%s: %v", a.cfg.Namespace, name, err)
	}
	a.Cluster.Logf("deleted pod %s (graceful: it is terminating)", name)
}

// GetPod reads a pod as the admin.
func (a *kubeApp) GetPod(name string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(a.t.Context(), apiCallBudget)
	defer cancel()
	return a.env.AdminClient.CoreV1().Pods(a.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
}

// WaitLabels waits until the role labels of the named pods are as wanted ("" for no label),
// as the watch sees them, and returns when that was seen.
func (a *kubeApp) WaitLabels(want map[string]string, timeout time.Duration) time.Time {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := a.Labels.Current()
		ok := true
		for name, v := range want {
			ok = ok && got[name] == v
		}
		if ok {
			a.Cluster.Logf("labels of %s: %s", a.Selector(), formatLabels(got))
			return time.Now()
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("labels of %s not %s within %v; they are %s; latest answers:%s",
				a.Selector(), formatLabels(want), timeout, formatLabels(got), a.Cluster.DescribeLatest())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LabelsFor is the label set wanted when leader leads: leader on its pod, follower on every
// other pod that has a running member, and the given extras.
func (a *kubeApp) LabelsFor(leader int, extra map[string]string) map[string]string {
	want := map[string]string{}
	for i, m := range a.Cluster.Members {
		if i == leader {
			want[m.ID] = roleLeader
		} else if m.Running() {
			want[m.ID] = roleFollower
		}
	}
	for k, v := range extra {
		want[k] = v
	}
	return want
}

func formatLabels(m map[string]string) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		v := m[k]
		if v == "" {
			v = "(none)"
		}
		parts = append(parts, k+"="+v)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// Metric reads member i's /metrics and sums the samples of name whose labels include match.
func (a *kubeApp) Metric(i int, name string, match map[string]string) (float64, error) {
	code, body, err := a.Cluster.get(a.Cluster.Members[i].OpsAddr(), "/metrics", 2*time.Second)
	if err != nil {
		return 0, err
	}
	if code != 200 {
		return 0, fmt.Errorf("%s /metrics: status %d", a.Name(i), code)
	}
	return kubeenv.SumMetric(string(body), name, match)
}

// WaitMetric waits until member i's metric equals want and returns when it was seen.
func (a *kubeApp) WaitMetric(i int, name string, match map[string]string, want float64, timeout time.Duration) time.Time {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := a.Metric(i, name, match)
		if err == nil && got == want {
			a.Cluster.Logf("%s: %s%v = %v", a.Name(i), name, match, got)
			return time.Now()
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: %s%v = %v (err %v), want %v within %v", a.Name(i), name, match, got, err, want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Healthz returns the status code of member i's /healthz.
func (a *kubeApp) Healthz(i int) (int, error) {
	code, _, err := a.Cluster.get(a.Cluster.Members[i].OpsAddr(), "/healthz", 2*time.Second)
	return code, err
}

// WaitLog waits until member i's log contains every one of the substrings (case-insensitive)
// on one line written by the member, and returns that line.
func (a *kubeApp) WaitLog(i int, timeout time.Duration, substrings ...string) string {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if line := findLogLine(a.Cluster.Members[i].LogPath, substrings...); line != "" {
			return line
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s logged no line with all of %q within %v; last lines:\n%s",
				a.Name(i), substrings, timeout, tailLines(a.Cluster.Members[i].LogPath, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func findLogLine(path string, substrings ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "=== e2e:") {
			continue // the harness's own line with the command
		}
		low := strings.ToLower(line)
		all := true
		for _, s := range substrings {
			all = all && strings.Contains(low, strings.ToLower(s))
		}
		if all {
			return line
		}
	}
	return ""
}

// --- The role-label watch ---

// labelWatch follows the application's pods through an informer, as the admin, and keeps
// every version of each pod it sees. At the end of the test (and on Check) it fails the test if
// two pods were ever labelled leader at once, judged in the API server's own order: a label
// value holds from the resourceVersion of the version that set it to that of the pod's next
// version (or its deletion). resourceVersions are compared as integers, which is what etcd
// makes them. Versions the watch never saw (the API server was down, the informer relisted) are
// unknown: the check then judges the versions it did see, which can miss a short overlap but
// not invent one unless a pod's label changed twice inside such a gap.
type labelWatch struct {
	t        *testing.T
	ns, sel  string
	informer cache.SharedIndexInformer

	mu       sync.Mutex
	versions map[string][]podVersion // by pod name, ascending resourceVersion
}

type podVersion struct {
	rv      uint64
	label   string
	deleted bool
}

func watchRoleLabels(t *testing.T, env *kubeenv.Env, ns, selector string) *labelWatch {
	t.Helper()
	w := &labelWatch{t: t, ns: ns, sel: selector, versions: map[string][]podVersion{}}
	factory := informers.NewSharedInformerFactoryWithOptions(env.AdminClient, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	w.informer = factory.Core().V1().Pods().Informer()
	if _, err := w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.record(obj, false) },
		UpdateFunc: func(_, obj any) { w.record(obj, false) },
		DeleteFunc: func(obj any) { w.record(obj, true) },
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	syncCtx, syncCancel := context.WithTimeout(ctx, kubeSettle)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), w.informer.HasSynced) {
		cancel()
		factory.Shutdown()
		t.Fatalf("the watch on pods %s in %s did not sync", selector, ns)
	}
	t.Cleanup(func() {
		// The members are stopped by now (their cleanup ran first); the last versions are in.
		w.Check()
		cancel()
		factory.Shutdown()
	})
	return w
}

func (w *labelWatch) record(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	rv, err := strconv.ParseUint(pod.ResourceVersion, 10, 64)
	if err != nil {
		w.t.Errorf("pod %s has resourceVersion %q, not an integer", pod.Name, pod.ResourceVersion)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	vs := w.versions[pod.Name]
	if n := len(vs); n > 0 && (vs[n-1].rv > rv || (vs[n-1].rv == rv && !deleted)) {
		return // a relist replaying what we have
	}
	w.versions[pod.Name] = append(vs, podVersion{rv: rv, label: pod.Labels[roleLabel], deleted: deleted})
}

// Current returns the role label of every pod that exists, as last seen.
func (w *labelWatch) Current() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for name, vs := range w.versions {
		if last := vs[len(vs)-1]; !last.deleted {
			out[name] = last.label
		}
	}
	return out
}

// Overlaps lists every pair of pods that were labelled leader at once.
func (w *labelWatch) Overlaps() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	type span struct {
		pod        string
		start, end uint64 // [start, end); end 0 means still so
	}
	var spans []span
	for name, vs := range w.versions {
		for k, v := range vs {
			if v.deleted || v.label != roleLeader {
				continue
			}
			s := span{pod: name, start: v.rv}
			if k+1 < len(vs) {
				s.end = vs[k+1].rv
			}
			spans = append(spans, s)
		}
	}
	var out []string
	for x := range spans {
		for y := x + 1; y < len(spans); y++ {
			a, b := spans[x], spans[y]
			if a.pod == b.pod {
				continue
			}
			if (b.end == 0 || a.start < b.end) && (a.end == 0 || b.start < a.end) {
				out = append(out, fmt.Sprintf("%s labelled %s in resourceVersions [%d, %s) and %s in [%d, %s)",
					a.pod, roleLeader, a.start, rvEnd(a.end), b.pod, b.start, rvEnd(b.end)))
			}
		}
	}
	sort.Strings(out)
	return out
}

func rvEnd(rv uint64) string {
	if rv == 0 {
		return "now"
	}
	return strconv.FormatUint(rv, 10)
}

// Check fails the test if two pods were ever labelled leader at once.
func (w *labelWatch) Check() {
	w.t.Helper()
	for _, o := range w.Overlaps() {
		w.t.Errorf("two pods of %s in %s labelled %s at once: %s", w.sel, w.ns, roleLeader, o)
	}
}

// --- API server request counts ---

// The verbs apiserver_request_total reports (the API server's CleanVerb): HTTP methods, with
// LIST and WATCH for reads of collections, APPLY for server-side apply and DELETECOLLECTION;
// CREATE and UPDATE are valid names too, though requests report POST and PUT.
var (
	apiReadVerbs  = []string{"GET", "LIST", "WATCH"}
	apiWriteVerbs = []string{"POST", "CREATE", "PUT", "UPDATE", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
)

// apiCounts is one reading of the API server's request counters.
type apiCounts struct {
	at     time.Time
	byVerb map[string]map[string]float64 // resource → verb → apiserver_request_total
	// saDispatched is apiserver_flowcontrol_dispatched_requests_total of the flow schema
	// "service-accounts": every request of a service account outside kube-system, whatever
	// its resource. The admin (system:masters) is exempt and not counted there.
	saDispatched float64
	// watches is apiserver_longrunning_requests (a gauge) by resource, for verb WATCH.
	watches map[string]float64
}

func readAPICounts(t *testing.T, env *kubeenv.Env, resources ...string) apiCounts {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	text, err := env.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := apiCounts{at: time.Now(), byVerb: map[string]map[string]float64{}, watches: map[string]float64{}}
	for _, res := range resources {
		c.byVerb[res] = map[string]float64{}
		for _, verb := range append(slices.Clone(apiReadVerbs), apiWriteVerbs...) {
			v, err := kubeenv.SumMetric(text, "apiserver_request_total", map[string]string{"resource": res, "verb": verb})
			if err != nil {
				t.Fatal(err)
			}
			c.byVerb[res][verb] = v
		}
		w, err := kubeenv.SumMetric(text, "apiserver_longrunning_requests", map[string]string{"resource": res, "verb": "WATCH"})
		if err != nil {
			t.Fatal(err)
		}
		c.watches[res] = w
	}
	if c.saDispatched, err = kubeenv.SumMetric(text, "apiserver_flowcontrol_dispatched_requests_total",
		map[string]string{"flow_schema": "service-accounts"}); err != nil {
		t.Fatal(err)
	}
	return c
}

// apiDelta is what happened between two readings.
type apiDelta struct {
	window       time.Duration
	byVerb       map[string]map[string]float64
	saDispatched float64
}

func diffAPICounts(before, after apiCounts) apiDelta {
	d := apiDelta{window: after.at.Sub(before.at), byVerb: map[string]map[string]float64{}, saDispatched: after.saDispatched - before.saDispatched}
	for res, verbs := range after.byVerb {
		d.byVerb[res] = map[string]float64{}
		for verb, v := range verbs {
			d.byVerb[res][verb] = v - before.byVerb[res][verb]
		}
	}
	return d
}

// total and writes sum a resource's requests over every verb, or the write verbs.
func (d apiDelta) total(res string) float64 {
	var s float64
	for _, v := range d.byVerb[res] {
		s += v
	}
	return s
}

func (d apiDelta) writes(res string) float64 {
	var s float64
	for _, verb := range apiWriteVerbs {
		s += d.byVerb[res][verb]
	}
	return s
}

// perMemberMinute turns a count over the window into a rate per member per minute.
func (d apiDelta) perMemberMinute(n float64, members int) float64 {
	return n / float64(members) / d.window.Minutes()
}

// verbs formats the non-zero verb counts of a resource.
func (d apiDelta) verbs(res string) string {
	var parts []string
	for _, verb := range append(slices.Clone(apiReadVerbs), apiWriteVerbs...) {
		if v := d.byVerb[res][verb]; v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%v", verb, v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// WaitVoters waits until each of members has want voters in its configuration: the cluster's
// membership has settled (new pods join as learners and are promoted one at a time).
func (a *kubeApp) WaitVoters(members []int, want int, timeout time.Duration) {
	a.t.Helper()
	for _, i := range members {
		a.WaitMetric(i, "raft_elector_peers", voters, float64(want), timeout)
	}
}

// --- Pods that come and go while the application runs ---

// kubeNewPod is a pod added to a running application by AddPods.
type kubeNewPod struct {
	Name, IP string
	// Node is the pod's spec.nodeName (default kubeenv.NodeName) and Zone its
	// topology.kubernetes.io/zone label (default none): what the planner spreads voters over.
	Node, Zone string
}

// AddPod creates a Running pod at ip, as a controller scaling the application up would, starts
// a member for it with the flags the others got, and returns the member's index once it
// listens. ip must have been among the IPs the application's PeerPort was picked for.
func (a *kubeApp) AddPod(name, ip string) int {
	a.t.Helper()
	return a.AddPods(kubeNewPod{Name: name, IP: ip})[0]
}

// AddPods creates the pods in order, then starts their members all at once, and returns their
// indexes once every one listens. A pod name is a member slot: it cannot come back.
func (a *kubeApp) AddPods(pods ...kubeNewPod) []int {
	a.t.Helper()
	names := make([]string, len(pods))
	for k, np := range pods {
		if _, dup := a.pods[np.Name]; dup {
			a.t.Fatalf("pod %s was already part of the application: add pods under new names", np.Name)
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: np.Name, Labels: map[string]string{"app": a.cfg.App}}}
		pod.Spec.ServiceAccountName = sidecarSA
		pod.Spec.NodeName = np.Node
		if np.Zone != "" {
			pod.Labels[corev1.LabelTopologyZone] = np.Zone
		}
		ctx, cancel := context.WithTimeout(a.t.Context(), apiCallBudget)
		created, err := kubeenv.CreateRunningPod(ctx, a.env.AdminClient, a.cfg.Namespace, pod, np.IP)
		cancel()
		if err != nil {
			a.t.Fatal(err)
		}
		a.pods[np.Name] = &kubePod{Name: np.Name, IP: np.IP, UID: string(created.UID), Run: true}
		names[k] = np.Name
	}
	port := a.cfg.PeerPort
	added, err := a.Cluster.addMembers(names, func(k int) (string, string, string) {
		ip := pods[k].IP
		return net.JoinHostPort(ip, strconv.Itoa(port)),
			net.JoinHostPort(ip, strconv.Itoa(port+1)),
			net.JoinHostPort(ip, strconv.Itoa(port+2))
	})
	if err != nil {
		a.t.Fatalf("start members for new pods: %v", err)
	}
	return added
}

// TerminatePod stops a pod as a kubelet does on a graceful deletion: the pod is deleted (it
// turns terminating), its member gets SIGTERM, and once the process has exited the pod is
// deleted with a zero grace period. It returns the member's exit code and when it exited.
func (a *kubeApp) TerminatePod(name string, timeout time.Duration) (int, time.Time) {
	a.t.Helper()
	i := a.Index(name)
	a.DeletePod(name, false)
	a.Cluster.Terminate(i)
	code, exited := a.Cluster.WaitExit(i, timeout)
	a.DeletePod(name, true)
	return code, exited
}

// addMembers adds members with the given ids and addresses to a running cluster without fault
// proxies (Config.Addrs), starts them, and returns their indexes once every one listens. The
// lease checker's pollers read Members, so they stop while it grows and start again at once,
// for every member: the checker misses a few milliseconds of answers and invents none.
func (c *Cluster) addMembers(ids []string, addrs func(k int) (peer, local, ops string)) ([]int, error) {
	c.t.Helper()
	if c.links != nil {
		return nil, errors.New("a cluster with fault proxies cannot grow: its links are fixed at start")
	}
	var added []*Member
	var idx []int
	for k, id := range ids {
		if c.Index(id) >= 0 || slices.ContainsFunc(added, func(m *Member) bool { return m.ID == id }) {
			return nil, fmt.Errorf("member %s exists already", id)
		}
		m := &Member{Index: len(c.Members) + k, ID: id, c: c}
		m.DataDir = filepath.Join(c.Dir, id, "data")
		m.LogPath = filepath.Join(c.Dir, id+".log")
		if err := os.MkdirAll(m.DataDir, 0o755); err != nil {
			return nil, err
		}
		m.peerAddr, m.localAddr, m.opsAddr = addrs(k)
		added = append(added, m)
		idx = append(idx, m.Index)
	}

	close(c.stopPoll)
	c.pollWG.Wait()
	c.Members = append(c.Members, added...)
	n := len(c.Members)
	for range added {
		c.connected = append(c.connected, true)
		c.group = append(c.group, 0)
	}
	blocked := make([][]bool, n)
	for i := range blocked {
		blocked[i] = make([]bool, n)
		if i < len(c.blocked) {
			copy(blocked[i], c.blocked[i])
		}
	}
	c.blocked = blocked
	c.stopPoll = make(chan struct{})
	for _, m := range c.Members {
		c.pollWG.Go(func() { c.pollLoop(m) })
	}

	c.Logf("adding %d members %s", len(added), c.IDs(idx))
	errs := make([]error, len(added))
	var wg sync.WaitGroup
	for k, m := range added {
		wg.Go(func() { errs[k] = m.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return idx, nil
}
