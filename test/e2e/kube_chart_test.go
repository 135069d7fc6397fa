package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/raft-elector/raft-elector/pkg/localapi"
	"github.com/raft-elector/raft-elector/test/kubeenv"
)

// The Helm chart's wiring, end to end: the chart is rendered with the repository's own helm,
// every object is server-side applied to a real kube-apiserver, and the pods of the chart's
// workload are created from its pod template. Each pod's two containers then run as local
// processes with the container's own command line and environment, resolved the way a kubelet
// resolves them (downward API, $(VAR) references, volumes), and the sidecar authenticates with a
// token of the chart's ServiceAccount, so the chart's Role is what allows or refuses its calls.
//
// What a pod provides and a process here does not is substituted, and only that:
//   - its own network namespace: listen addresses on all interfaces (":4041") or on loopback
//     ("127.0.0.1:4040") bind to the pod's own IP instead, and the app reaches the local API at
//     that IP; the ports stay the chart's;
//   - its volumes: each mount path becomes a directory of the test (an emptyDir empty, a Secret
//     volume filled with the Secret's keys as read from the API server);
//   - the in-cluster service-account credentials: --kubeconfig with a TokenRequest token of
//     the pod's serviceAccountName.

const chartSubnet = 130

// helmBinary is the helm built by hack/helm/build.sh (make test builds it first), or $HELM_BIN.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HELM_BIN"); p != "" {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, ".cache", "helm", "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no helm at %s: run hack/helm/build.sh (make test does): %v", p, err)
	}
	return p
}

// renderChart runs helm template on deploy/helm/raft-elector and returns the objects, without
// the helm test hooks.
func renderChart(t *testing.T, release, ns string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helmBinary(t), append([]string{"template", release, filepath.Join(root, "deploy", "helm", "raft-elector"),
		"--namespace", ns}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read the rendered chart: %v", err)
		}
		if onlyComments(doc) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decode a rendered object: %v\n%s", err, doc)
		}
		if _, hook := u.GetAnnotations()["helm.sh/hook"]; hook {
			continue
		}
		objs = append(objs, u)
	}
	return objs
}

// applyObjects server-side applies objs in ns as the admin, so every field is checked against
// the API server's own schemas (unknown fields are errors).
func applyObjects(t *testing.T, env *kubeenv.Env, ns string, objs []*unstructured.Unstructured) {
	t.Helper()
	dc, err := dynamic.NewForConfig(env.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.AdminClient.Discovery()))
	ctx, cancel := context.WithTimeout(t.Context(), kubeSettle)
	defer cancel()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
		}
		data, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		_, err = dc.Resource(m.Resource).Namespace(ns).Patch(ctx, o.GetName(), "application/apply-patch+yaml", data,
			metav1.PatchOptions{FieldManager: "e2e-chart", Force: new(true), FieldValidation: "Strict"})
		if err != nil {
			t.Fatalf("server-side apply %s %s: %v", gvk.Kind, o.GetName(), err)
		}
	}
}

func findObject(t *testing.T, objs []*unstructured.Unstructured, kind string, match func(*unstructured.Unstructured) bool) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && (match == nil || match(o)) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the chart renders %d matching %s objects, want 1", len(found), kind)
	}
	return found[0]
}

// podRuntime is what a kubelet would give one pod here: its IP, its volumes as directories and
// its service-account credentials.
type podRuntime struct {
	pod        *corev1.Pod
	ip         string
	dir        string
	kubeconfig string
	mounts     map[string]string // volume name → directory
}

// newPodRuntime materializes pod's volumes under dir.
func newPodRuntime(t *testing.T, env *kubeenv.Env, pod *corev1.Pod, ip, dir, kubeconfig string) *podRuntime {
	t.Helper()
	r := &podRuntime{pod: pod, ip: ip, dir: dir, kubeconfig: kubeconfig, mounts: map[string]string{}}
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	for _, v := range pod.Spec.Volumes {
		d := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.EmptyDir != nil:
		case v.Secret != nil:
			s, err := env.AdminClient.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("volume %s: %v", v.Name, err)
			}
			files := map[string]string{}
			for k := range s.Data {
				files[k] = k
			}
			if len(v.Secret.Items) > 0 {
				files = map[string]string{}
				for _, it := range v.Secret.Items {
					files[it.Key] = it.Path
				}
			}
			for k, p := range files {
				data, ok := s.Data[k]
				if !ok {
					t.Fatalf("volume %s: secret %s has no key %s", v.Name, s.Name, k)
				}
				if err := os.WriteFile(filepath.Join(d, p), data, 0o400); err != nil {
					t.Fatal(err)
				}
			}
		default:
			t.Fatalf("volume %s: the test knows emptyDir and secret volumes only", v.Name)
		}
		r.mounts[v.Name] = d
	}
	return r
}

// command resolves container c of the pod to a local command line and environment.
func (r *podRuntime) command(t *testing.T, c corev1.Container) (args, env []string) {
	t.Helper()
	vars := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("container %s env %s: the test resolves fieldRef only", c.Name, e.Name)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = r.pod.Name
			case "metadata.namespace":
				v = r.pod.Namespace
			case "metadata.uid":
				v = string(r.pod.UID)
			case "status.podIP":
				v = r.ip
			default:
				t.Fatalf("container %s env %s: unknown fieldRef %s", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	if len(c.Command) > 1 {
		args = append(args, c.Command[1:]...)
	}
	for _, a := range c.Args {
		// The kubelet expands $(VAR) from the container's environment.
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		args = append(args, r.localize(t, c, a))
	}
	return args, env
}

// localize rewrites one argument: mount paths to the volumes' directories, listen addresses to
// the pod's IP.
func (r *podRuntime) localize(t *testing.T, c corev1.Container, a string) string {
	name, value, ok := strings.Cut(a, "=")
	if !ok {
		return a
	}
	for _, vm := range c.VolumeMounts {
		if value == vm.MountPath || strings.HasPrefix(value, vm.MountPath+"/") {
			d, ok := r.mounts[vm.Name]
			if !ok {
				t.Fatalf("container %s mounts unknown volume %s", c.Name, vm.Name)
			}
			return name + "=" + d + strings.TrimPrefix(value, vm.MountPath)
		}
	}
	if strings.HasSuffix(name, "-addr") || name == "--listen" {
		host, port, err := net.SplitHostPort(value)
		if err == nil && (host == "" || host == "0.0.0.0" || host == "127.0.0.1" || host == "localhost") {
			return name + "=" + net.JoinHostPort(r.ip, port)
		}
	}
	return a
}

func containerNamed(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("the pod template has no container %s", name)
	return corev1.Container{}
}

func flagValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// probeURL resolves an HTTP probe of c against the pod's IP.
func probeURL(t *testing.T, c corev1.Container, p *corev1.Probe, ip string) string {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("container %s: want an httpGet probe, have %+v", c.Name, p)
	}
	port := p.HTTPGet.Port.IntValue()
	if p.HTTPGet.Port.StrVal != "" {
		for _, cp := range c.Ports {
			if cp.Name == p.HTTPGet.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	if port == 0 {
		t.Fatalf("container %s: probe port %v is not one of its ports", c.Name, p.HTTPGet.Port)
	}
	return "http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + p.HTTPGet.Path
}

// appProcess is the chart's example app of one pod.
type appProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func startAppProcess(t *testing.T, bin string, args, env []string, logPath string) *appProcess {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &appProcess{cmd: cmd, done: make(chan struct{}), log: f}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("app log %s:\n%s", logPath, tailString(string(b), 30))
		}
	})
	return p
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// getAnswer asks a leader answer (local API or the app's GET /).
func getAnswer(url string) (int, localapi.Answer, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, localapi.Answer{}, err
	}
	defer resp.Body.Close()
	var a localapi.Answer
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(body, &a); err != nil {
		return resp.StatusCode, a, fmt.Errorf("%s: %v: %s", url, err, body)
	}
	return resp.StatusCode, a, nil
}

// TestKubeChartWiring installs the chart's objects and runs its workload's pods as the chart
// configures them: they elect a leader, label its pod so the chart's leader Service selects it
// and only it, the app beside each sidecar serves the pod's view, the probes answer, and a
// SIGTERM of the leader hands over to a pod that the Service then selects.
func TestKubeChartWiring(t *testing.T) {
	env := startKubeEnv(t)
	const ns, release, replicas = "chart", "web", 3
	createNamespace(t, env, ns)
	objs := renderChart(t, release, ns, "--set", "workload.replicas="+strconv.Itoa(replicas))
	applyObjects(t, env, ns, objs)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	depObj := findObject(t, objs, "Deployment", nil)
	dep, err := env.AdminClient.AppsV1().Deployments(ns).Get(ctx, depObj.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != replicas {
		t.Fatalf("deployment replicas %v, want %d", dep.Spec.Replicas, replicas)
	}
	tmpl := dep.Spec.Template
	sidecar := containerNamed(t, tmpl.Spec, "raft-elector")
	app := containerNamed(t, tmpl.Spec, "app")
	selector := flagValue(sidecar.Args, "--selector")
	sel, err := labels.Parse(selector)
	if err != nil || !sel.Matches(labels.Set(tmpl.Labels)) {
		t.Fatalf("--selector %q (%v) does not select the pod template's labels %v", selector, err, tmpl.Labels)
	}
	if !sel.Matches(labels.Set(dep.Spec.Selector.MatchLabels)) {
		t.Fatalf("--selector %q does not match the Deployment's selector %v", selector, dep.Spec.Selector.MatchLabels)
	}
	leaderSvcObj := findObject(t, objs, "Service", func(o *unstructured.Unstructured) bool {
		s, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector")
		return s[roleLabel] == roleLeader
	})
	leaderSvc, err := env.AdminClient.CoreV1().Services(ns).Get(ctx, leaderSvcObj.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Pods from the template, each at its own IP with the chart's ports free.
	var ips []string
	for n := 1; len(ips) < replicas && n < 250; n++ {
		ip := kubeIP(chartSubnet, n)
		if portsFree([]string{ip}, 4040, 4041, 4042, 8080) {
			ips = append(ips, ip)
		}
	}
	if len(ips) < replicas {
		t.Fatalf("no %d addresses in 127.0.%d.0/24 with ports 4040-4042 and 8080 free", replicas, chartSubnet)
	}
	_, kubeconfig, err := env.ServiceAccountConfig(ctx, ns, tmpl.Spec.ServiceAccountName)
	if err != nil {
		t.Fatalf("token for the chart's service account %q: %v", tmpl.Spec.ServiceAccountName, err)
	}
	labelWatch := watchRoleLabels(t, env, ns, selector)
	bin := binary(t)
	dir := t.TempDir()
	var (
		names    []string
		runtimes []*podRuntime
	)
	for i := range replicas {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", dep.Name, i), Labels: tmpl.Labels,
			Annotations: tmpl.Annotations}, Spec: *tmpl.Spec.DeepCopy()}
		created, err := kubeenv.CreateRunningPod(ctx, env.AdminClient, ns, pod, ips[i])
		if err != nil {
			t.Fatalf("create a pod from the chart's template: %v", err)
		}
		names = append(names, created.Name)
		runtimes = append(runtimes, newPodRuntime(t, env, created, ips[i], filepath.Join(dir, created.Name), kubeconfig))
	}
	commands := make([][]string, replicas)
	envs := make([][]string, replicas)
	for i, r := range runtimes {
		commands[i], envs[i] = r.command(t, sidecar)
		// The in-cluster credentials of the pod's service account.
		commands[i] = append(commands[i], "--kubeconfig="+r.kubeconfig)
	}
	t.Logf("sidecar of %s: %s %s", names[0], strings.Join(envs[0], " "), strings.Join(commands[0], " "))
	c := NewCluster(t, Config{
		Members: replicas,
		Names:   names,
		Addrs: func(i int) (string, string, string) {
			// What the chart's addresses become at the pod's IP; the command line must say the same.
			peer, local, ops := flagValue(commands[i], "--peer-addr"), flagValue(commands[i], "--local-addr"), flagValue(commands[i], "--ops-addr")
			if peer != net.JoinHostPort(ips[i], "4041") || local != net.JoinHostPort(ips[i], "4040") || ops != net.JoinHostPort(ips[i], "4042") {
				t.Fatalf("the chart's listen addresses at %s are %s, %s, %s; want the ports 4041, 4040, 4042", ips[i], peer, local, ops)
			}
			return peer, local, ops
		},
		CommandLine: func(m *Member) []string { return commands[m.Index] },
		MemberEnv:   func(m *Member) []string { return envs[m.Index] },
	})

	// The example app beside each sidecar, reaching the local API at the pod's address.
	for i, r := range runtimes {
		args, appEnv := r.command(t, app)
		if args[0] != "watch" {
			t.Fatalf("the app container runs %v; want raft-elector watch", args)
		}
		args = append(args, "--url=http://"+net.JoinHostPort(ips[i], "4040")+"/leader")
		startAppProcess(t, bin, args, appEnv, filepath.Join(dir, names[i]+"-app.log"))
	}

	leader, term, _ := c.WaitAgreedLeader(c.All(), kubeSettle)
	t.Logf("%s leads in term %d", names[leader], term)
	// The first pod bootstraps alone; the others join as learners and are promoted.
	c.WaitUntil(kubeSettle, fmt.Sprintf("%d voters in every member's configuration", replicas), func() bool {
		for i := range replicas {
			code, body, err := c.get(c.Members[i].OpsAddr(), "/metrics", 2*time.Second)
			if err != nil || code != http.StatusOK {
				return false
			}
			if v, err := kubeenv.SumMetric(string(body), "raft_elector_peers", map[string]string{"role": "voter"}); err != nil || v != replicas {
				return false
			}
		}
		return true
	})
	leader, term, _ = c.WaitAgreedLeader(c.All(), kubeSettle)
	checkChartPods(t, env, c, ns, leaderSvc.Spec.Selector, names, ips, leader, labelWatch)

	// The sidecar's probes, as the kubelet would call them.
	for i := range replicas {
		for what, p := range map[string]*corev1.Probe{"liveness": sidecar.LivenessProbe, "readiness": sidecar.ReadinessProbe} {
			url := probeURL(t, sidecar, p, ips[i])
			resp, err := (&http.Client{Timeout: time.Second}).Get(url)
			if err != nil {
				t.Errorf("%s %s probe %s: %v", names[i], what, url, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s probe %s: status %d", names[i], what, url, resp.StatusCode)
			}
		}
	}
	// The bootstrap object the chart created empty was filled by the bootstrapper (the Role
	// allows update of that one ConfigMap).
	cm, err := env.AdminClient.CoreV1().ConfigMaps(ns).Get(ctx, flagValue(sidecar.Args, "--bootstrap-object"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["cluster-id"] == "" {
		t.Errorf("bootstrap object %s was not filled: %v", cm.Name, cm.Data)
	}

	// A rolling update's step: the leader's pod is deleted and its sidecar gets SIGTERM; it hands
	// over, and the Service follows the label.
	stopped := time.Now()
	if err := env.AdminClient.CoreV1().Pods(ns).Delete(ctx, names[leader], metav1.DeleteOptions{GracePeriodSeconds: new(int64(30))}); err != nil {
		t.Fatal(err)
	}
	c.Terminate(leader)
	rest := c.Except(leader)
	next, nextTerm, at := c.WaitAgreedLeader(rest, kubeSettle)
	t.Logf("handover to %s in term %d, %v after the pod's deletion and SIGTERM", names[next], nextTerm, at.Sub(stopped).Round(time.Millisecond))
	if code, exited := c.WaitExit(leader, 30*time.Second); code != 0 {
		t.Fatalf("%s exited with %d, %v after SIGTERM", names[leader], code, exited.Sub(stopped))
	}
	if nextTerm <= term {
		t.Errorf("term %d after the handover, want more than %d", nextTerm, term)
	}
	var restNames, restIPs []string
	for _, i := range rest {
		restNames, restIPs = append(restNames, names[i]), append(restIPs, ips[i])
	}
	checkChartPods(t, env, c, ns, leaderSvc.Spec.Selector, restNames, restIPs, slices.Index(restNames, names[next]), labelWatch)
}

// checkChartPods waits until pod leader (an index into names) is the one pod the leader
// Service selects, the others are labelled follower, and every app serves its pod's view.
func checkChartPods(t *testing.T, env *kubeenv.Env, c *Cluster, ns string, svcSelector map[string]string, names, ips []string, leader int, w *labelWatch) {
	t.Helper()
	want := map[string]string{}
	for i, n := range names {
		want[n] = roleFollower
		if i == leader {
			want[n] = roleLeader
		}
	}
	c.WaitUntil(kubeSettle, "the role labels "+formatLabels(want), func() bool {
		cur := w.Current()
		for n, v := range want {
			if cur[n] != v {
				return false
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	pods, err := env.AdminClient.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svcSelector).String()})
	if err != nil {
		t.Fatal(err)
	}
	var selected []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			selected = append(selected, p.Name)
		}
	}
	if len(selected) != 1 || selected[0] != names[leader] {
		t.Errorf("the leader Service (selector %v) selects %v, want [%s]", svcSelector, selected, names[leader])
	}
	c.WaitUntil(kubeSettle, "every app to serve its pod's view", func() bool {
		for i, ip := range ips {
			code, a, err := getAnswer("http://" + net.JoinHostPort(ip, "8080") + "/")
			if err != nil || code != http.StatusOK || a.Name != names[leader] || a.IsLeader != (i == leader) {
				return false
			}
		}
		return true
	})
}
