package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/raft-elector/raft-elector/pkg/bootstrap"
	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/pkg/localapi"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

// Defaults of the command line, named so the docs and the chart can refer to them.
const (
	DefaultPeerPort          = "4041"
	DefaultPeerAddr          = ":" + DefaultPeerPort
	DefaultLocalAddr         = "127.0.0.1:4040"
	DefaultOpsAddr           = ":4042"
	DefaultDataDir           = "/var/lib/raft-elector"
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = time.Second
	DefaultLabelKey          = "raft-elector/role"
	DefaultLeaderValue       = "leader"
	DefaultFollowerValue     = "follower"
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "text"
	DefaultAuthMaxSkew       = transport.DefaultMaxClockSkew
	envPrefix                = "RAFT_ELECTOR_"
)

// Bounds of --auth-max-skew. Below a second, requests would expire in flight on a loaded
// node; above ten minutes a captured request stays replayable (to a member that restarted and
// lost its replay cache) for needlessly long.
const (
	minAuthMaxSkew = time.Second
	maxAuthMaxSkew = 10 * time.Minute
	// replayLoadFactor is how many requests per heartbeat interval a member is assumed to
	// receive at most (its leader's heartbeats, catch-up appends, votes), with a wide margin;
	// each is remembered for up to twice the skew window.
	replayLoadFactor = 8
)

// config is the validated configuration of one member.
type config struct {
	ID                string
	ClusterID         string
	Discovery         string
	Peers             []discovery.Member
	Namespace         string
	Selector          string
	PodName           string
	PodUID            string
	Kubeconfig        string
	PeerPort          int
	PeerAddr          string
	AdvertiseAddr     string
	LocalAddr         string
	OpsAddr           string
	DataDir           string
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	ReportedLease     time.Duration
	ShutdownTimeout   time.Duration
	LabelKey          string
	LeaderValue       string
	FollowerValue     string
	LogLevel          string
	LogFormat         string
	AuthSecretFile    string
	AuthMaxSkew       time.Duration
	// AuthAcceptUnsigned is the transition mode for turning authentication on or off in a
	// running cluster: sign, verify signatures present, accept unsigned messages.
	AuthAcceptUnsigned bool
	// AuthKeys is the opened --auth-secret-file (nil without one): validated at parse time,
	// re-read while the member runs.
	AuthKeys *transport.KeyFile
	// MaxVoters caps the voters (Kubernetes mode: the rest are learners).
	MaxVoters int
	// BootstrapObject is the ConfigMap that decides who bootstraps (Kubernetes mode).
	BootstrapObject string
	// RecoverAfter is how long a member without a leader, whose configuration has lost a
	// majority of its voters' pods, waits before it re-bootstraps (Kubernetes mode).
	RecoverAfter time.Duration

	// continueFrom is the local API store of this process's previous incarnation of the
	// member (it rejoined a replaced cluster), whose index sequence the new one continues.
	continueFrom *localapi.Store
	// replacedBy is the cluster id that replaced the one this process's member ran in: its
	// state of the old cluster is discarded and it joins through the bootstrap object.
	replacedBy string
	// termFloor is the last term that member reported: the rejoining member starts above it.
	termFloor uint64
}

// usageError is a bad flag or environment variable: one line, exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	// A value from the command line or the environment may hold a line break (the flag
	// package and net.SplitHostPort repeat it unquoted): escape it, so the error stays one line.
	return &usageError{msg: usageOneLine.Replace(fmt.Sprintf(format, args...))}
}

var usageOneLine = strings.NewReplacer("\r", `\r`, "\n", `\n`)

// envName is the environment variable that sets a flag: --peer-addr → RAFT_ELECTOR_PEER_ADDR.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its environment variable.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = usagef("invalid value %q for %s (--%s): %v", v, envName(f.Name), f.Name, serr)
			}
		}
	})
	return err
}

// parseMemberFlags parses the flags of a member from args and the environment.
func parseMemberFlags(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("raft-elector", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &config{}
	podIP := getenv("POD_IP")
	fs.StringVar(&c.ID, "id", getenv("POD_NAME"), "this member's id; in Kubernetes mode the pod name (default $POD_NAME)")
	fs.StringVar(&c.PodUID, "pod-uid", getenv("POD_UID"), "kubernetes discovery: this pod's UID, part of the member identity (default $POD_UID)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubernetes discovery: kubeconfig file (default: the in-cluster service account)")
	fs.StringVar(&c.ClusterID, "cluster-id", "", "cluster id carried by every peer message (static discovery: default derived from the member ids)")
	fs.StringVar(&c.Discovery, "discovery", "", "how members are found: kubernetes or static (default static when --peers is set, else kubernetes)")
	peers := fs.String("peers", "", "static discovery: id=host:port,... (may include this member)")
	fs.StringVar(&c.Namespace, "namespace", getenv("POD_NAMESPACE"), "kubernetes discovery: namespace of the pods (default $POD_NAMESPACE)")
	fs.StringVar(&c.Selector, "selector", "", "kubernetes discovery: label selector of the pods that form one cluster")
	fs.StringVar(&c.PeerAddr, "peer-addr", DefaultPeerAddr, "listen address of the peer protocol")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "address peers reach this member at (default $POD_IP and the port of --peer-addr)")
	fs.StringVar(&c.LocalAddr, "local-addr", DefaultLocalAddr, "listen address of the local API (GET /leader)")
	fs.StringVar(&c.OpsAddr, "ops-addr", DefaultOpsAddr, "listen address of /metrics, /healthz, /readyz")
	fs.StringVar(&c.DataDir, "data-dir", DefaultDataDir, "directory of the durable term and vote")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", DefaultHeartbeatInterval, "how often the leader sends heartbeats")
	fs.DurationVar(&c.ElectionTimeout, "election-timeout", DefaultElectionTimeout, "minimum election timeout; each timeout is drawn from [t, 2t)")
	fs.DurationVar(&c.ReportedLease, "reported-lease", 0, "lease the leader reports to the application (default 3 heartbeat intervals; capped at the protocol lease)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 0, "how long a leader waits for a successor on SIGTERM (default 2 election timeouts)")
	fs.StringVar(&c.LabelKey, "label-key", DefaultLabelKey, "pod label that tells leader from follower")
	fs.StringVar(&c.LeaderValue, "leader-label-value", DefaultLeaderValue, "label value of the leader pod")
	fs.StringVar(&c.FollowerValue, "follower-label-value", DefaultFollowerValue, "label value of the other pods")
	fs.StringVar(&c.LogLevel, "log-level", DefaultLogLevel, "trace, debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", DefaultLogFormat, "text or json")
	fs.StringVar(&c.AuthSecretFile, "auth-secret-file", "", "file of peer authentication keys, one per line: the first signs, all are accepted; re-read when it changes (docs/security.md)")
	fs.BoolVar(&c.AuthAcceptUnsigned, "auth-accept-unsigned", false, "with --auth-secret-file: also accept unsigned peer requests and replies; only while turning authentication on or off in a running cluster (docs/security.md)")
	fs.DurationVar(&c.AuthMaxSkew, "auth-max-skew", DefaultAuthMaxSkew, "with --auth-secret-file: how far a signed request's timestamp may lie from this member's clock; older ones are refused as replays")
	fs.IntVar(&c.MaxVoters, "max-voters", 5, "kubernetes discovery: the most voters the leader promotes; other members are learners")
	fs.StringVar(&c.BootstrapObject, "bootstrap-object", "", "kubernetes discovery: ConfigMap that decides which pod bootstraps the cluster (default raft-elector-<hash of namespace and selector>)")
	fs.DurationVar(&c.RecoverAfter, "recover-after", 0, "kubernetes discovery: how long a member waits without a leader, once a majority of voters' pods are gone, before it starts a new cluster generation (default 10 election timeouts)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: raft-elector [flags]   (every flag also reads "+envPrefix+"<FLAG>)\n       raft-elector demo [--nodes N] [--chaos]")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (subcommands: demo)", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return nil, err
	}
	if c.AdvertiseAddr == "" && podIP != "" {
		// The pod's address at the port this member listens on: --peer-addr=:5041 alone must
		// not advertise the default port.
		port := DefaultPeerPort
		if _, p, err := net.SplitHostPort(c.PeerAddr); err == nil && p != "" && p != "0" {
			port = p
		}
		c.AdvertiseAddr = net.JoinHostPort(podIP, port)
	}
	if c.Discovery == "" {
		c.Discovery = "kubernetes"
		if *peers != "" {
			c.Discovery = "static"
		}
	}
	if err := c.finish(*peers); err != nil {
		return nil, err
	}
	return c, nil
}

// finish validates the configuration and fills in derived defaults.
func (c *config) finish(peers string) error {
	if c.ID == "" {
		return usagef("--id is empty and $POD_NAME is not set")
	}
	if len(c.ID) > raft.MaxIDLength {
		return usagef("--id is longer than %d bytes", raft.MaxIDLength)
	}
	switch c.Discovery {
	case "static":
		if peers == "" {
			return usagef("--peers is required with --discovery=static")
		}
		members, err := discovery.ParseStatic(peers)
		if err != nil {
			return usagef("--peers: %v", err)
		}
		found := false
		for _, m := range members {
			found = found || m.ID == c.ID
		}
		if !found {
			return usagef("--peers does not list this member's --id %q", c.ID)
		}
		c.Peers = members
		if c.ClusterID == "" {
			sum := sha256.Sum256([]byte(strings.Join(discovery.IDs(members), "\n")))
			c.ClusterID = "static-" + hex.EncodeToString(sum[:6])
		}
	case "kubernetes":
		if err := c.finishKubernetes(); err != nil {
			return err
		}
	default:
		return usagef("--discovery must be kubernetes or static, not %q", c.Discovery)
	}
	if len(c.ClusterID) > raft.MaxIDLength {
		return usagef("--cluster-id is longer than %d bytes", raft.MaxIDLength)
	}
	for _, a := range []struct{ flag, v string }{{"peer-addr", c.PeerAddr}, {"local-addr", c.LocalAddr}, {"ops-addr", c.OpsAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return usagef("--%s %q is not host:port: %v", a.flag, a.v, err)
		}
	}
	if c.AdvertiseAddr != "" {
		if err := discovery.CheckAddr(c.AdvertiseAddr); err != nil {
			return usagef("--advertise-addr: %v", err)
		}
	}
	c.PeerPort = portOf(c.AdvertiseAddr)
	if c.PeerPort == 0 {
		c.PeerPort = portOf(c.PeerAddr)
	}
	if c.Discovery == "kubernetes" && c.PeerPort == 0 {
		return usagef("--peer-addr %q has no port that peers could reach; set --advertise-addr", c.PeerAddr)
	}
	if c.DataDir == "" {
		return usagef("--data-dir is empty")
	}
	if c.HeartbeatInterval < 5*time.Millisecond {
		return usagef("--heartbeat-interval %v is below the minimum 5ms", c.HeartbeatInterval)
	}
	if c.ElectionTimeout < 3*c.HeartbeatInterval {
		return usagef("--election-timeout %v must be at least 3 × --heartbeat-interval (%v) so the lease is renewed before it runs out",
			c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.ElectionTimeout > 5*time.Minute {
		return usagef("--election-timeout %v is above the maximum 5m", c.ElectionTimeout)
	}
	if c.ReportedLease < 0 {
		return usagef("--reported-lease %v is negative", c.ReportedLease)
	}
	if c.ReportedLease != 0 && c.ReportedLease < c.HeartbeatInterval {
		return usagef("--reported-lease %v is shorter than --heartbeat-interval %v: it would lapse between heartbeats", c.ReportedLease, c.HeartbeatInterval)
	}
	if c.ShutdownTimeout < 0 {
		return usagef("--shutdown-timeout %v is negative", c.ShutdownTimeout)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 2 * c.ElectionTimeout
	}
	if c.LabelKey == "" || c.LeaderValue == "" || c.FollowerValue == "" || c.LeaderValue == c.FollowerValue {
		return usagef("--label-key, --leader-label-value and --follower-label-value must be set and the two values differ")
	}
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "error":
	default:
		return usagef("--log-level must be trace, debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return usagef("--log-format must be text or json, not %q", c.LogFormat)
	}
	return c.finishAuth()
}

// finishAuth validates peer authentication: the key file is read and parsed now, so a member
// never starts with keys it cannot use.
func (c *config) finishAuth() error {
	if c.AuthMaxSkew == 0 { // as with the other durations, zero means the default
		c.AuthMaxSkew = DefaultAuthMaxSkew
	}
	if c.AuthSecretFile == "" {
		if c.AuthMaxSkew != DefaultAuthMaxSkew {
			return usagef("--auth-max-skew has no effect without --auth-secret-file")
		}
		if c.AuthAcceptUnsigned {
			return usagef("--auth-accept-unsigned needs --auth-secret-file: a member without keys accepts unsigned messages anyway")
		}
		return nil
	}
	if c.AuthMaxSkew < minAuthMaxSkew || c.AuthMaxSkew > maxAuthMaxSkew {
		return usagef("--auth-max-skew %v must be between %v and %v", c.AuthMaxSkew, minAuthMaxSkew, maxAuthMaxSkew)
	}
	// The replay cache remembers each request for up to twice the window and refuses requests
	// when full; it must hold what a member receives in that time with room to spare.
	if limit := time.Duration(transport.DefaultReplayCacheSize) * c.HeartbeatInterval / (2 * replayLoadFactor); c.AuthMaxSkew > limit {
		return usagef("--auth-max-skew %v is too long for --heartbeat-interval %v: the replay cache could fill up; use at most %v",
			c.AuthMaxSkew, c.HeartbeatInterval, limit.Truncate(time.Second))
	}
	keys, err := transport.OpenKeyFile(c.AuthSecretFile)
	if err != nil {
		return usagef("--auth-secret-file: %v", err)
	}
	c.AuthKeys = keys
	return nil
}

// finishKubernetes validates the settings of Kubernetes discovery. The member id becomes
// <pod name>_<pod uid>, so a pod re-created under the same name is a new member.
func (c *config) finishKubernetes() error {
	c.PodName = c.ID
	if c.PodUID == "" {
		return usagef("--pod-uid is empty and $POD_UID is not set (give the pod's metadata.uid through the downward API)")
	}
	if errs := validation.IsDNS1123Subdomain(c.PodName); len(errs) > 0 {
		return usagef("--id %q is not a pod name: %s", c.PodName, strings.Join(errs, "; "))
	}
	if strings.Contains(c.PodUID, discovery.PodIDSeparator) || len(c.PodUID) > 64 {
		return usagef("--pod-uid %q is not a pod UID", c.PodUID)
	}
	c.ID = discovery.PodID(c.PodName, c.PodUID)
	if c.Namespace == "" {
		return usagef("--namespace is empty and $POD_NAMESPACE is not set")
	}
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		return usagef("--namespace %q: %s", c.Namespace, strings.Join(errs, "; "))
	}
	if c.Selector == "" {
		return usagef("--selector is required with --discovery=kubernetes (the labels of the pods that form one cluster)")
	}
	sel, err := labels.Parse(c.Selector)
	if err != nil {
		return usagef("--selector %q: %v", c.Selector, err)
	}
	if sel.Empty() {
		return usagef("--selector %q selects every pod; name the labels of this application's pods", c.Selector)
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return usagef("--kubeconfig: %v", err)
		}
	}
	if c.MaxVoters < 1 || c.MaxVoters > 15 {
		return usagef("--max-voters %d must be between 1 and 15", c.MaxVoters)
	}
	if c.BootstrapObject == "" {
		c.BootstrapObject = bootstrap.DefaultName(c.Namespace, sel.String())
	}
	if errs := validation.IsDNS1123Subdomain(c.BootstrapObject); len(errs) > 0 {
		return usagef("--bootstrap-object %q is not a ConfigMap name: %s", c.BootstrapObject, strings.Join(errs, "; "))
	}
	if c.RecoverAfter == 0 {
		c.RecoverAfter = 10 * c.ElectionTimeout
	}
	if c.RecoverAfter < 2*c.ElectionTimeout {
		return usagef("--recover-after %v must be at least two election timeouts (%v)", c.RecoverAfter, 2*c.ElectionTimeout)
	}
	if c.ClusterID == "" {
		// The prefix of the cluster ids the bootstrap object hands out. Two applications in
		// one namespace (two selectors) never share a cluster id, so they never exchange
		// votes even if a pod IP is reused.
		sum := sha256.Sum256([]byte(c.Namespace + "\n" + sel.String()))
		c.ClusterID = "k8s-" + hex.EncodeToString(sum[:6])
	}
	if err := bootstrap.CheckBase(c.ClusterID); err != nil {
		return usagef("--cluster-id %v (in Kubernetes mode it prefixes the ids the bootstrap object hands out)", err)
	}
	return nil
}

func portOf(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return 0
	}
	return p
}
