package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/leaderelection"
)

// Defaults of the command line. The three timings are client-go's, as the core Kubernetes
// components use them: what a user of tools/leaderelection gets without tuning.
const (
	defaultLeaseName     = "lease-elector"
	defaultLeaseDuration = 15 * time.Second
	defaultRenewDeadline = 10 * time.Second
	defaultRetryPeriod   = 2 * time.Second
	defaultLocalAddr     = "127.0.0.1:4040"
	defaultOpsAddr       = ":4041"
	defaultLogLevel      = "info"
	defaultKubeAPIQPS    = 5
	defaultKubeAPIBurst  = 10
	envPrefix            = "LEASE_ELECTOR_"

	// maxIDLength is raft-elector's bound on member ids; the Lease itself has none.
	maxIDLength = 320
	// maxLeaseDuration keeps leaseDurationSeconds far inside the Lease's int32.
	maxLeaseDuration = time.Hour
)

// config is the validated command line.
type config struct {
	ID              string
	Namespace       string
	LeaseName       string
	Kubeconfig      string
	LeaseDuration   time.Duration
	RenewDeadline   time.Duration
	RetryPeriod     time.Duration
	ReleaseOnCancel bool
	LocalAddr       string
	OpsAddr         string
	LogLevel        string
	KubeAPIQPS      float64
	KubeAPIBurst    int
}

// usageError is a bad flag or environment variable: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef escapes line breaks a value may carry, so the error stays one line.
func usagef(format string, args ...any) error {
	return &usageError{msg: strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(fmt.Sprintf(format, args...))}
}

// envName is the environment variable of a flag: --lease-name → LEASE_ELECTOR_LEASE_NAME.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags reads the command line, then the environment for every flag not given on it,
// and validates the result. It touches no network; --help writes the usage to usage and
// returns flag.ErrHelp.
func parseFlags(args []string, getenv func(string) string, usage io.Writer) (*config, error) {
	fs := flag.NewFlagSet("lease-elector", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &config{}
	fs.StringVar(&c.ID, "id", getenv("POD_NAME"), "candidate identity written into the Lease (default $POD_NAME)")
	fs.StringVar(&c.Namespace, "namespace", getenv("POD_NAMESPACE"), "namespace of the Lease (default $POD_NAMESPACE)")
	fs.StringVar(&c.LeaseName, "lease-name", defaultLeaseName, "name of the Lease (a DNS-1123 subdomain)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: the in-cluster service account)")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", defaultLeaseDuration, "how long a Lease is valid without a renewal (whole seconds)")
	fs.DurationVar(&c.RenewDeadline, "renew-deadline", defaultRenewDeadline, "how long the leader retries renewing before it gives up")
	fs.DurationVar(&c.RetryPeriod, "retry-period", defaultRetryPeriod, "time between attempts to acquire or renew")
	fs.BoolVar(&c.ReleaseOnCancel, "release-on-cancel", true, "on SIGTERM, release the Lease so a successor need not wait for it to expire")
	fs.StringVar(&c.LocalAddr, "local-addr", defaultLocalAddr, "listen address of the local API (GET /leader)")
	fs.StringVar(&c.OpsAddr, "ops-addr", defaultOpsAddr, "listen address of /healthz, /readyz, /metrics")
	fs.StringVar(&c.LogLevel, "log-level", defaultLogLevel, "info or debug")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", defaultKubeAPIQPS, "client-side rate limit of API requests per second (client-go's default 5); aggressive timings need more: each retry period is a get and, for the leader, an update")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", defaultKubeAPIBurst, "client-side burst of API requests (client-go's default 10)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(usage)
			fmt.Fprintln(usage, "usage: lease-elector [flags]   (every flag also reads "+envPrefix+"<FLAG>; flags win)")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q; lease-elector takes flags only", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); envErr == nil && !given[f.Name] && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usagef("invalid value %q for %s (--%s): %v", v, envName(f.Name), f.Name, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config) validate() error {
	switch {
	case c.ID == "":
		return usagef("--id is empty and $POD_NAME is not set")
	case len(c.ID) > maxIDLength:
		return usagef("--id is longer than %d bytes", maxIDLength)
	case strings.ContainsFunc(c.ID, unicode.IsControl):
		return usagef("--id %q contains control characters", c.ID)
	case c.Namespace == "":
		return usagef("--namespace is empty and $POD_NAMESPACE is not set")
	}
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		return usagef("--namespace %q is not a namespace name: %s", c.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(c.LeaseName); len(errs) > 0 {
		return usagef("--lease-name %q is not a Lease name: %s", c.LeaseName, strings.Join(errs, "; "))
	}
	if !(c.KubeAPIQPS > 0) || c.KubeAPIQPS > 1e6 {
		return usagef("--kube-api-qps %v must be above 0 and at most 1e6", c.KubeAPIQPS)
	}
	if c.KubeAPIBurst < 1 || c.KubeAPIBurst > 1e6 {
		return usagef("--kube-api-burst %d must be between 1 and 1e6", c.KubeAPIBurst)
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return usagef("--kubeconfig: %v", err)
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"lease-duration", c.LeaseDuration}, {"renew-deadline", c.RenewDeadline}, {"retry-period", c.RetryPeriod}} {
		if d.v <= 0 {
			return usagef("--%s %v must be positive", d.flag, d.v)
		}
	}
	// The Lease stores leaseDurationSeconds as whole seconds (client-go truncates): 1.5s
	// would tell the other candidates 1s, less than a renew deadline the holder relies on.
	if c.LeaseDuration%time.Second != 0 || c.LeaseDuration > maxLeaseDuration {
		return usagef("--lease-duration %v must be whole seconds, at most %v (the Lease stores leaseDurationSeconds)", c.LeaseDuration, maxLeaseDuration)
	}
	// client-go's NewLeaderElector checks, with our flag names.
	if c.LeaseDuration <= c.RenewDeadline {
		return usagef("--lease-duration %v must be greater than --renew-deadline %v", c.LeaseDuration, c.RenewDeadline)
	}
	if c.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(c.RetryPeriod)) {
		return usagef("--renew-deadline %v must be greater than %v × --retry-period %v", c.RenewDeadline, leaderelection.JitterFactor, c.RetryPeriod)
	}
	for _, a := range []struct{ flag, v string }{{"local-addr", c.LocalAddr}, {"ops-addr", c.OpsAddr}} {
		_, port, err := net.SplitHostPort(a.v)
		if err != nil {
			return usagef("--%s %q is not host:port: %v", a.flag, a.v, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil {
			return usagef("--%s %q: port %q is not a number from 0 to 65535", a.flag, a.v, port)
		} else if p != 0 && a.flag == "ops-addr" && a.v == c.LocalAddr {
			return usagef("--ops-addr %q is the same as --local-addr", a.v)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "info", "debug":
		c.LogLevel = strings.ToLower(c.LogLevel)
	default:
		return usagef("--log-level must be info or debug, not %q", c.LogLevel)
	}
	return nil
}
