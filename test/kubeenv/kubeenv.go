// Package kubeenv starts a real Kubernetes API for integration tests: an etcd and a
// kube-apiserver, built from the Go module proxy by hack/kube/build.sh into .cache/kube/bin and
// run as child processes of the test on loopback ports.
//
// What is real: the API server itself, its storage in etcd, watches and resourceVersions,
// authentication by static token and by service account tokens from the TokenRequest API,
// RBAC authorization, validation, the status subresource, admission (minus ServiceAccount, see
// below) and the server's own /metrics.
//
// What is missing, on purpose: there is no kubelet, scheduler or controller manager. Nothing runs
// containers, so tests create Pod objects and set their status themselves (CreateRunningPod) for
// processes they run on 127.0.0.x. Without the controllers, a deleted namespace stays Terminating,
// a pod with a node name stays Terminating after a graceful delete until someone deletes it with
// a zero grace period (exactly what a kubelet would do), and no "default" service account appears
// in new namespaces. The ServiceAccount admission plugin is disabled for that last reason: it
// rejects any pod whose service account does not exist, and there is no kubelet to mount the
// token it would inject.
//
// Guarantees: every child process is in its own process group and is killed by Stop, by the
// cleanup of StartT and, on Linux, by the kernel when the test binary dies (Pdeathsig), so a
// killed test leaves no orphans. Start waits for etcd's /health and the API server's /readyz
// with a deadline, never a fixed sleep; when it fails, its error carries the tail of the logs.
//
// The binaries are not built on demand: a test that cannot find them fails with a message
// saying to run hack/kube/build.sh (`make test` runs it first).
package kubeenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminUser is the user name of Env.AdminConfig; it is in the group system:masters.
const AdminUser = "kubeenv-admin"

// ServiceClusterIPRange is the --service-cluster-ip-range of the API server.
const ServiceClusterIPRange = "10.96.0.0/24"

// ServiceAccountIssuer is the issuer (and API audience) of service account tokens.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

const (
	defaultStartTimeout = 2 * time.Minute
	killTimeout         = 30 * time.Second
	logTailLines        = 40
	// Ports are chosen by binding :0 and closing the listener, so another process can take one
	// before etcd or kube-apiserver binds it. Rare; a second attempt with new ports fixes it.
	startAttempts = 3
)

// Options configure Start.
type Options struct {
	// Dir holds everything the environment writes: etcd's data, keys and certificates,
	// kubeconfigs and the logs etcd.log and kube-apiserver.log. Required; t.TempDir() is right.
	Dir string
	// Logf receives one line per state change (started, ready, stopped). Optional.
	Logf func(format string, args ...any)
	// BinDir holds the kube-apiserver and etcd binaries. Default: $KUBE_ENV_DIR/bin when set,
	// else .cache/kube/bin at the repository root (found by walking up from the working
	// directory to the directory holding go.mod and hack/kube/build.sh).
	BinDir string
	// StartTimeout bounds the start of each process until it is ready (default 2 minutes: a
	// loaded CI machine can take tens of seconds; an idle one about 4).
	StartTimeout time.Duration
	// APIServerArgs are appended to the kube-apiserver command line after the defaults: a
	// repeated scalar flag overrides the default (the last occurrence wins), a repeated list
	// flag such as --disable-admission-plugins adds to it.
	APIServerArgs []string
}

// Env is a running etcd and kube-apiserver. Its methods are safe for concurrent use.
type Env struct {
	// Host is the API server's URL, https://127.0.0.1:<port>. It stays the same across
	// StopAPIServer and StartAPIServer.
	Host string
	// AdminConfig authenticates with a static token as AdminUser (group system:masters).
	// Each use should copy it (rest.CopyConfig) before changing it.
	AdminConfig *rest.Config
	// AdminClient is a clientset built from AdminConfig.
	AdminClient kubernetes.Interface
	// AdminKubeconfig is a kubeconfig file for AdminConfig.
	AdminKubeconfig string
	// CAFile is the PEM file of the CA that signed the API server's certificate.
	CAFile string

	opts          Options
	apiServerBin  string
	etcdBin       string
	creds         *credentials
	etcdURL       string
	apiServerArgs []string
	readyClient   *http.Client

	mu        sync.Mutex
	etcd      *process
	apiServer *process
	stopped   bool
}

// Start runs etcd, then kube-apiserver, and returns once the API server reports ready. ctx
// bounds the start only; the processes run until Stop. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if opts.Dir == "" {
		return nil, errors.New("kubeenv: Options.Dir is required (use t.TempDir())")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = defaultStartTimeout
	}
	binDir, err := resolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	e := &Env{
		opts:         opts,
		apiServerBin: filepath.Join(binDir, "kube-apiserver"),
		etcdBin:      filepath.Join(binDir, "etcd"),
	}
	for _, bin := range []string{e.apiServerBin, e.etcdBin} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("kubeenv: %s not found: run hack/kube/build.sh (or `make kube-env`) "+
				"to build the Kubernetes test environment (minutes the first time, cached in .cache/kube): %w", bin, err)
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("kubeenv: %w", err)
	}
	if e.creds, err = writeCredentials(opts.Dir); err != nil {
		return nil, fmt.Errorf("kubeenv: %w", err)
	}
	e.CAFile = e.creds.caFile
	defer func() {
		if err != nil {
			_ = e.Stop()
		}
	}()

	if err := e.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := e.startAPIServerFirstTime(ctx); err != nil {
		return nil, err
	}
	if e.AdminClient, err = kubernetes.NewForConfig(e.AdminConfig); err != nil {
		return nil, fmt.Errorf("kubeenv: admin client: %w", err)
	}
	e.AdminKubeconfig = filepath.Join(opts.Dir, "admin.kubeconfig")
	if err := e.Kubeconfig(e.AdminKubeconfig, e.AdminConfig); err != nil {
		return nil, err
	}
	return e, nil
}

// resolveBinDir finds the folder hack/kube/build.sh writes the binaries to.
func resolveBinDir(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if d := os.Getenv("KUBE_ENV_DIR"); d != "" {
		return filepath.Join(d, "bin"), nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kubeenv: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if fileExists(filepath.Join(dir, "go.mod")) && fileExists(filepath.Join(dir, "hack", "kube", "build.sh")) {
			return filepath.Join(dir, ".cache", "kube", "bin"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("kubeenv: no repository root (go.mod beside hack/kube/build.sh) above %s; "+
				"set KUBE_ENV_DIR to the folder hack/kube/build.sh built into", wd)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *Env) startEtcd(ctx context.Context) error {
	dataDir := filepath.Join(e.opts.Dir, "etcd")
	logPath := filepath.Join(e.opts.Dir, "etcd.log")
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		clientPort, err := freePort()
		if err != nil {
			return fmt.Errorf("kubeenv: pick etcd client port: %w", err)
		}
		peerPort, err := freePort()
		if err != nil {
			return fmt.Errorf("kubeenv: pick etcd peer port: %w", err)
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
		// A failed attempt may have initialised the data dir with other peer URLs.
		if err := os.RemoveAll(dataDir); err != nil {
			return fmt.Errorf("kubeenv: %w", err)
		}
		args := []string{
			"--name=kubeenv",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=kubeenv=" + peerURL,
			"--initial-cluster-state=new",
			// No fsync: the data must survive a restart of kube-apiserver (and even a SIGKILL
			// of etcd, since the page cache outlives the process), not a machine crash; and
			// fsync latency on a shared CI disk would make API writes slow and erratic.
			"--unsafe-no-fsync",
			"--log-level=warn",
		}
		begin := time.Now()
		p, err := startProcess("etcd", e.etcdBin, args, logPath)
		if err != nil {
			return fmt.Errorf("kubeenv: %w", err)
		}
		client := &http.Client{Timeout: 2 * time.Second}
		err = waitReady(ctx, p, e.opts.StartTimeout, func(ctx context.Context) error {
			return etcdHealthy(ctx, client, clientURL)
		})
		if err == nil {
			e.mu.Lock()
			e.etcd = p
			e.mu.Unlock()
			e.etcdURL = clientURL
			e.opts.Logf("kubeenv: etcd ready on %s in %s", clientURL, time.Since(begin).Round(time.Millisecond))
			return nil
		}
		_ = p.kill(killTimeout)
		lastErr = fmt.Errorf("kubeenv: etcd did not become healthy: %w\n--- tail of %s:\n%s", err, logPath, p.logTail(logTailLines))
		if !portCollision(p) {
			return lastErr
		}
		e.opts.Logf("kubeenv: etcd port taken (attempt %d of %d), retrying with new ports", attempt, startAttempts)
	}
	return lastErr
}

func etcdHealthy(ctx context.Context, client *http.Client, clientURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("/health: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// portCollision reports whether a process that failed to start did so because its port was
// taken between freePort and its bind.
func portCollision(p *process) bool {
	return strings.Contains(p.logTail(logTailLines), "address already in use")
}

func (e *Env) startAPIServerFirstTime(ctx context.Context) error {
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("kubeenv: pick kube-apiserver port: %w", err)
		}
		e.Host = "https://127.0.0.1:" + strconv.Itoa(port)
		e.apiServerArgs = e.apiServerFlags(port)
		e.AdminConfig = &rest.Config{
			Host:            e.Host,
			BearerToken:     e.creds.adminToken,
			TLSClientConfig: rest.TLSClientConfig{CAData: e.creds.caPEM},
			// Test setup creates many objects; client-go's default of 5 QPS would throttle it.
			QPS:   100,
			Burst: 200,
		}
		if e.readyClient, err = rest.HTTPClientFor(e.AdminConfig); err != nil {
			return fmt.Errorf("kubeenv: %w", err)
		}
		p, err := e.runAPIServer(ctx)
		if err == nil {
			return nil
		}
		lastErr = err
		if p == nil || !portCollision(p) {
			return lastErr
		}
		e.opts.Logf("kubeenv: kube-apiserver port taken (attempt %d of %d), retrying with a new port", attempt, startAttempts)
	}
	return lastErr
}

// apiServerFlags is the kube-apiserver command line. See the package doc for why ServiceAccount
// admission is off.
func (e *Env) apiServerFlags(port int) []string {
	args := []string{
		"--etcd-servers=" + e.etcdURL,
		"--bind-address=127.0.0.1",
		// Without it kube-apiserver looks for the address of the default route, which a test
		// machine may not have.
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + e.creds.servingCert,
		"--tls-private-key-file=" + e.creds.servingKey,
		// Only used if the files above were missing; keeps kube-apiserver from writing into
		// its working directory.
		"--cert-dir=" + filepath.Join(e.opts.Dir, "apiserver-certs"),
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + e.creds.saKey,
		"--service-account-signing-key-file=" + e.creds.saKey,
		"--token-auth-file=" + e.creds.tokenFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--disable-admission-plugins=ServiceAccount",
		// The "kubernetes" Service's endpoints would be 127.0.0.1, which Endpoints validation
		// rejects; and the reconciler's writes would add to the request counts tests measure.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--v=1",
	}
	return append(args, e.opts.APIServerArgs...)
}

// runAPIServer starts kube-apiserver with e.apiServerArgs and waits for /readyz. On failure the
// process is killed and returned (for its log) along with the error.
func (e *Env) runAPIServer(ctx context.Context) (*process, error) {
	logPath := filepath.Join(e.opts.Dir, "kube-apiserver.log")
	begin := time.Now()
	p, err := startProcess("kube-apiserver", e.apiServerBin, e.apiServerArgs, logPath)
	if err != nil {
		return nil, fmt.Errorf("kubeenv: %w", err)
	}
	err = waitReady(ctx, p, e.opts.StartTimeout, func(ctx context.Context) error {
		return e.apiServerReady(ctx)
	})
	if err != nil {
		_ = p.kill(killTimeout)
		return p, fmt.Errorf("kubeenv: kube-apiserver did not become ready: %w\n--- tail of %s:\n%s",
			err, logPath, p.logTail(logTailLines))
	}
	e.mu.Lock()
	e.apiServer = p
	e.mu.Unlock()
	e.opts.Logf("kubeenv: kube-apiserver ready on %s in %s", e.Host, time.Since(begin).Round(time.Millisecond))
	return p, nil
}

func (e *Env) apiServerReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// ?verbose lists the checks that still fail, which is what a timeout should report.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.Host+"/readyz?verbose", nil)
	if err != nil {
		return err
	}
	resp, err := e.readyClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK {
		var failing []string
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "[-]") {
				failing = append(failing, line)
			}
		}
		if len(failing) == 0 {
			failing = append(failing, strings.TrimSpace(string(body)))
		}
		return fmt.Errorf("/readyz: %s: %s", resp.Status, strings.Join(failing, "; "))
	}
	return nil
}

// waitReady polls ready until it succeeds, the process exits, ctx ends or timeout passes.
func waitReady(ctx context.Context, p *process, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	const interval = 50 * time.Millisecond
	var lastErr error
	for {
		if exited, err := p.exited(); exited {
			return err
		}
		if lastErr = ready(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), lastErr)
		case <-time.After(interval):
		}
	}
}

// StopAPIServer kills kube-apiserver (SIGKILL, like a crash or a lost node: clients see
// connections reset) and waits until it is gone. etcd keeps running with all the data.
// Stopping a stopped API server does nothing.
func (e *Env) StopAPIServer() error {
	e.mu.Lock()
	p := e.apiServer
	e.apiServer = nil
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.kill(killTimeout); err != nil {
		return fmt.Errorf("kubeenv: stop kube-apiserver: %w", err)
	}
	e.opts.Logf("kubeenv: kube-apiserver stopped")
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the same port,
// certificates, tokens and etcd, and waits until it is ready. Service account tokens issued
// before stay valid.
func (e *Env) StartAPIServer(ctx context.Context) error {
	e.mu.Lock()
	running, stopped := e.apiServer != nil, e.stopped
	e.mu.Unlock()
	if stopped {
		return errors.New("kubeenv: StartAPIServer after Stop")
	}
	if running {
		return errors.New("kubeenv: kube-apiserver is already running")
	}
	_, err := e.runAPIServer(ctx)
	return err
}

// Stop kills kube-apiserver and etcd and waits until they are gone. It is idempotent.
func (e *Env) Stop() error {
	e.mu.Lock()
	e.stopped = true
	apiServer, etcd := e.apiServer, e.etcd
	e.apiServer, e.etcd = nil, nil
	e.mu.Unlock()
	return errors.Join(apiServer.kill(killTimeout), etcd.kill(killTimeout))
}

// LogTails returns the last lines of the etcd and kube-apiserver logs, for a failing test.
func (e *Env) LogTails() string {
	var b strings.Builder
	for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
		path := filepath.Join(e.opts.Dir, name)
		fmt.Fprintf(&b, "--- tail of %s:\n%s\n", path, fileTail(path, logTailLines))
	}
	return b.String()
}

// Metrics returns the API server's /metrics text (Prometheus exposition format), read as the
// admin. SumMetric adds up samples from it.
func (e *Env) Metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.Host+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := e.readyClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("kubeenv: get /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("kubeenv: read /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("kubeenv: get /metrics: %s", resp.Status)
	}
	return string(body), nil
}

// Kubeconfig writes a kubeconfig file that reaches the API server with cfg's bearer token (as
// built by AdminConfig or ServiceAccountConfig), for processes started with --kubeconfig.
func (e *Env) Kubeconfig(path string, cfg *rest.Config) error {
	if cfg.BearerToken == "" {
		return errors.New("kubeenv: Kubeconfig needs a config with a bearer token")
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubeenv"] = &clientcmdapi.Cluster{Server: e.Host, CertificateAuthorityData: e.creds.caPEM}
	kc.AuthInfos["kubeenv"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["kubeenv"] = &clientcmdapi.Context{Cluster: "kubeenv", AuthInfo: "kubeenv"}
	kc.CurrentContext = "kubeenv"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("kubeenv: write kubeconfig %s: %w", path, err)
	}
	return nil
}

// ServiceAccountConfig asks the TokenRequest API for a token of the service account
// namespace/name (which must exist) and returns a config that authenticates with it, plus a
// kubeconfig file for the same identity. Requests made with it are authorized by RBAC against
// the account's RoleBindings, as for a pod running under that service account. The token is
// valid for 24 hours, across API server restarts. client-go's default rate limits are kept, as
// a sidecar would have them.
func (e *Env) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, string, error) {
	lifetime := int64((24 * time.Hour).Seconds())
	tr, err := e.AdminClient.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &lifetime}},
		metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("kubeenv: token for service account %s/%s: %w", namespace, name, err)
	}
	cfg := &rest.Config{
		Host:            e.Host,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.creds.caPEM},
	}
	path := filepath.Join(e.opts.Dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	if err := e.Kubeconfig(path, cfg); err != nil {
		return nil, "", err
	}
	return cfg, path, nil
}
