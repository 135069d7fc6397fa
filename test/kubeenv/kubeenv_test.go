package kubeenv

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	appNamespace   = "app"
	otherNamespace = "other"
	serviceAccount = "elector"
	roleLabel      = "raft-elector/role"
)

// TestAPIServerRBACAndRestart runs the real environment end to end: the objects a sidecar
// deployment has (service account, Role, RoleBinding, pods with status), the sidecar's view of
// them through its service account token (allowed in its namespace, 403 outside it, 409 on a
// stale resourceVersion precondition), and an API server outage after which the data is back.
func TestAPIServerRBACAndRestart(t *testing.T) {
	begin := time.Now()
	env := StartT(t, Options{})
	t.Logf("environment ready in %s", time.Since(begin).Round(time.Millisecond))
	ctx := t.Context()
	admin := env.AdminClient

	for _, ns := range []string{appNamespace, otherNamespace} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createSidecarRBAC(t, ctx, admin)

	labels := map[string]string{"app": "demo"}
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "demo-" + string(rune('0'+i)), Labels: labels}}
		pod.Spec.ServiceAccountName = serviceAccount
		got, err := CreateRunningPod(ctx, admin, appNamespace, pod, ip)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase != corev1.PodRunning || got.Status.PodIP != ip || !podReady(got) || got.Spec.NodeName != NodeName {
			t.Fatalf("pod %s stored as phase=%s podIP=%s ready=%v node=%q; want Running, %s, ready, %q",
				got.Name, got.Status.Phase, got.Status.PodIP, podReady(got), got.Spec.NodeName, ip, NodeName)
		}
	}
	if _, err := CreateRunningPod(ctx, admin, otherNamespace,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stranger"}}, "127.0.0.4"); err != nil {
		t.Fatal(err)
	}

	// The sidecar's identity, loaded from the kubeconfig file as the sidecar would with --kubeconfig.
	_, kubeconfig, err := env.ServiceAccountConfig(ctx, appNamespace, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	saConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sidecar, err := kubernetes.NewForConfig(saConfig)
	if err != nil {
		t.Fatal(err)
	}
	review, err := sidecar.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "system:serviceaccount:" + appNamespace + ":" + serviceAccount; review.Status.UserInfo.Username != want {
		t.Fatalf("authenticated as %q, want %q", review.Status.UserInfo.Username, want)
	}

	pods, err := sidecar.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=demo"})
	if err != nil {
		t.Fatalf("list pods in own namespace as the service account: %v", err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("listed %d pods, want 2", len(pods.Items))
	}

	leader := pods.Items[0]
	patched, err := patchRoleLabel(ctx, sidecar, appNamespace, leader.Name, leader.ResourceVersion, "leader")
	if err != nil {
		t.Fatalf("patch with the current resourceVersion: %v", err)
	}
	if patched.Labels[roleLabel] != "leader" || patched.ResourceVersion == leader.ResourceVersion {
		t.Fatalf("after patch: labels=%v resourceVersion=%s (was %s)", patched.Labels, patched.ResourceVersion, leader.ResourceVersion)
	}
	// A patch from a former leader that read the pod before the one above must not land.
	_, err = patchRoleLabel(ctx, sidecar, appNamespace, leader.Name, leader.ResourceVersion, "follower")
	if !apierrors.IsConflict(err) {
		t.Fatalf("patch with a stale resourceVersion: got %v, want 409 Conflict", err)
	}

	_, err = sidecar.CoreV1().Pods(otherNamespace).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list pods in another namespace: got %v, want 403 Forbidden", err)
	}
	_, err = patchRoleLabel(ctx, sidecar, otherNamespace, "stranger", "", "leader")
	if !apierrors.IsForbidden(err) {
		t.Fatalf("patch a pod in another namespace: got %v, want 403 Forbidden", err)
	}
	err = sidecar.CoreV1().Pods(appNamespace).Delete(ctx, leader.Name, metav1.DeleteOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("delete a pod (not in the Role): got %v, want 403 Forbidden", err)
	}

	metrics, err := env.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	patches, err := SumMetric(metrics, "apiserver_request_total", map[string]string{"resource": "pods", "verb": "PATCH"})
	if err != nil {
		t.Fatal(err)
	}
	// At least the two patches in the app namespace, the conflicted one included.
	if patches < 2 {
		t.Fatalf("apiserver_request_total{resource=pods,verb=PATCH} = %v, want at least 2", patches)
	}

	outage := time.Now()
	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = sidecar.CoreV1().Pods(appNamespace).List(short, metav1.ListOptions{})
	cancel()
	if err == nil {
		t.Fatal("list pods succeeded while the API server was stopped")
	}
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server outage and restart took %s", time.Since(outage).Round(time.Millisecond))

	// The token issued before the outage still works, and etcd kept everything.
	pods, err = sidecar.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=demo"})
	if err != nil {
		t.Fatalf("list pods after the restart: %v", err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("after the restart: %d pods, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		if !podReady(&p) || p.Status.PodIP == "" {
			t.Errorf("after the restart pod %s lost its status: %+v", p.Name, p.Status)
		}
		if p.Name == leader.Name && (p.Labels[roleLabel] != "leader" || p.ResourceVersion != patched.ResourceVersion) {
			t.Errorf("after the restart pod %s has labels %v resourceVersion %s, want %s=leader at %s",
				p.Name, p.Labels, p.ResourceVersion, roleLabel, patched.ResourceVersion)
		}
	}
	t.Logf("whole test took %s", time.Since(begin).Round(time.Millisecond))
}

// createSidecarRBAC creates the service account of the sidecar and the Role issue 3 asks for:
// get/list/watch/patch pods in its own namespace, nothing else.
func createSidecarRBAC(t *testing.T, ctx context.Context, admin kubernetes.Interface) {
	t.Helper()
	if _, err := admin.CoreV1().ServiceAccounts(appNamespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "raft-elector"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""},
			Resources: []string{"pods"},
			Verbs:     []string{"get", "list", "watch", "patch"},
		}},
	}
	if _, err := admin.RbacV1().Roles(appNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "raft-elector"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: appNamespace}},
	}
	if _, err := admin.RbacV1().RoleBindings(appNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// patchRoleLabel sets the role label with a JSON merge patch. A non-empty resourceVersion in
// the patch is a precondition: the API server answers 409 Conflict if the pod has changed since.
func patchRoleLabel(ctx context.Context, client kubernetes.Interface, namespace, name, resourceVersion, role string) (*corev1.Pod, error) {
	meta := map[string]any{"labels": map[string]string{roleLabel: role}}
	if resourceVersion != "" {
		meta["resourceVersion"] = resourceVersion
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return nil, err
	}
	return client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestStartWithoutBinariesSaysHowToBuildThem(t *testing.T) {
	_, err := Start(t.Context(), Options{Dir: t.TempDir(), BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "hack/kube/build.sh") {
		t.Fatalf("Start with an empty BinDir: got %v, want an error naming hack/kube/build.sh", err)
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",resource="pods",verb="LIST"} 3
apiserver_request_total{code="409",component="apiserver",resource="pods",verb="PATCH"} 1
apiserver_request_total{code="200",component="apiserver",resource="pods",verb="PATCH"} 2
apiserver_request_total{code="200",component="apiserver",resource="leases",verb="PUT"} 40
apiserver_request_total_other{resource="pods"} 100
apiserver_weird{path="a\"b,c}d",resource="pods"} 7
up 1
`
	for _, tc := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"apiserver_request_total", nil, 46},
		{"apiserver_request_total", map[string]string{"resource": "pods"}, 6},
		{"apiserver_request_total", map[string]string{"resource": "pods", "verb": "PATCH"}, 3},
		{"apiserver_request_total", map[string]string{"resource": "pods", "verb": "PATCH", "code": "409"}, 1},
		{"apiserver_request_total", map[string]string{"resource": "nodes"}, 0},
		{"apiserver_weird", map[string]string{"path": `a"b,c}d`}, 7},
		{"up", nil, 1},
	} {
		got, err := SumMetric(text, tc.name, tc.match)
		if err != nil {
			t.Fatalf("SumMetric(%s, %v): %v", tc.name, tc.match, err)
		}
		if got != tc.want {
			t.Errorf("SumMetric(%s, %v) = %v, want %v", tc.name, tc.match, got, tc.want)
		}
	}
}
