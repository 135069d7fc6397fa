package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/raft-elector/raft-elector/pkg/localapi"
)

// watchConfig is the command line of `raft-elector watch`.
type watchConfig struct {
	url     *url.URL
	listen  string
	once    bool
	timeout time.Duration
	wait    time.Duration
}

// runWatch is `raft-elector watch`: the small application the Helm chart runs beside the
// sidecar, and a tool for people. It long-polls the local API and prints one line per change of
// the answer. With --listen it also serves GET / with the latest answer (200 when a leader is
// known, 503 otherwise), so a Service that selects the leader label can be shown to reach the
// leader. With --once it asks once (retrying until --timeout) and exits 0 when the answer names a
// leader: the chart's `helm test` uses that against the leader Service.
func runWatch(args []string, stdout, stderr io.Writer) int {
	c, err := parseWatchFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "raft-elector watch: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if c.once {
		return watchOnce(ctx, c, stdout, stderr)
	}
	var ln net.Listener
	if c.listen != "" {
		if ln, err = net.Listen("tcp", c.listen); err != nil {
			fmt.Fprintf(stderr, "raft-elector watch: --listen: %v\n", err)
			return 1
		}
	}
	return watchLoop(ctx, c, ln, stdout, stderr)
}

func parseWatchFlags(args []string, stderr io.Writer) (*watchConfig, error) {
	fs := flag.NewFlagSet("raft-elector watch", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	rawURL := fs.String("url", "http://"+DefaultLocalAddr+"/leader", "the answer to watch: the local API's /leader, or another watcher's GET /")
	c := &watchConfig{}
	fs.StringVar(&c.listen, "listen", "", "serve GET / with the latest answer on this address (e.g. :8080)")
	fs.BoolVar(&c.once, "once", false, "ask once, retrying until --timeout; exit 0 when the answer names a leader")
	fs.DurationVar(&c.timeout, "timeout", time.Minute, "with --once: how long to keep asking")
	fs.DurationVar(&c.wait, "wait", localapi.DefaultWait, "how long each long poll waits for a change")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: raft-elector watch [--url URL] [--listen ADDR] [--once [--timeout D]]")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q is not an http(s) URL", *rawURL)
	}
	c.url = u
	if c.listen != "" {
		if _, _, err := net.SplitHostPort(c.listen); err != nil {
			return nil, usagef("--listen %q: %v", c.listen, err)
		}
	}
	if c.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v must be positive", c.timeout)
	}
	if c.wait <= 0 || c.wait > localapi.MaxWait {
		return nil, fmt.Errorf("--wait %v must be positive and at most %v", c.wait, localapi.MaxWait)
	}
	if c.once && c.listen != "" {
		return nil, errors.New("--once and --listen exclude each other")
	}
	return c, nil
}

// fetched is one answer: the body as received, its decoding and the HTTP status.
type fetched struct {
	code   int
	body   []byte
	answer localapi.Answer
}

// fetch asks u once. Any answer with a body of the local API's shape counts, 503 included (no
// leader known); other statuses and undecodable bodies are errors.
func fetch(ctx context.Context, client *http.Client, u *url.URL) (fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fetched{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fetched{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fetched{}, err
	}
	f := fetched{code: resp.StatusCode, body: body}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return f, fmt.Errorf("%s answered %s", u.Redacted(), resp.Status)
	}
	if err := json.Unmarshal(body, &f.answer); err != nil {
		return f, fmt.Errorf("%s answered %s with a body that is not a leader answer: %v", u.Redacted(), resp.Status, err)
	}
	return f, nil
}

func watchOnce(ctx context.Context, c *watchConfig, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var last error
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		f, err := fetch(ctx, client, c.url)
		switch {
		case err != nil:
			last = err
		case f.code == http.StatusOK && f.answer.Name != "":
			fmt.Fprintf(stdout, "leader %s term %d (answered by %s)\n", f.answer.Name, f.answer.Term, f.answer.Self)
			return 0
		default:
			last = fmt.Errorf("%s knows no leader (status %d)", c.url.Redacted(), f.code)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "raft-elector watch: no leader within %v: %v\n", c.timeout, last)
			return 1
		case <-time.After(delay):
		}
	}
}

// latest is what the --listen server answers: the last answer fetched, or the error that stands
// in for it.
type latest struct {
	mu  sync.Mutex
	f   fetched
	err error
}

func (l *latest) set(f fetched, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f, l.err = f, err
}

func (l *latest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.URL.Path != "/" {
		http.Error(w, "not found; try GET /", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	l.mu.Lock()
	f, err := l.f, l.err
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if err != nil || f.body == nil {
		msg := "no answer from the local API yet"
		if err != nil {
			msg = err.Error()
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(struct {
			Error string `json:"error"`
		}{msg})
		return
	}
	code := http.StatusOK
	if f.answer.Name == "" {
		code = http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	_, _ = w.Write(f.body)
}

// watchLoop follows c.url until ctx ends, serving the latest answer on ln when ln is not nil.
func watchLoop(ctx context.Context, c *watchConfig, ln net.Listener, stdout, stderr io.Writer) int {
	l := &latest{}
	if ln != nil {
		srv := &http.Server{Handler: l, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	client := &http.Client{Timeout: c.wait + 10*time.Second}
	var (
		have    bool
		prev    localapi.Answer
		failing bool
		delay   time.Duration
	)
	for ctx.Err() == nil {
		u := *c.url
		q := u.Query()
		if have {
			q.Set("index", strconv.FormatUint(prev.Index, 10))
			q.Set("wait", c.wait.String())
		}
		u.RawQuery = q.Encode()
		f, err := fetch(ctx, client, &u)
		if ctx.Err() != nil {
			break
		}
		l.set(f, err)
		if err != nil {
			if !failing {
				fmt.Fprintf(stderr, "%s watch: %v (retrying)\n", time.Now().UTC().Format(time.RFC3339Nano), err)
			}
			failing = true
			have = false
			delay = min(max(2*delay, 100*time.Millisecond), 2*time.Second)
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			continue
		}
		failing, delay = false, 0
		a := f.answer
		// The index alone could miss a change across a restart of the sidecar, which numbers
		// its answers from 1 again.
		if !have || a.Index != prev.Index || a.Name != prev.Name || a.Term != prev.Term ||
			a.IsLeader != prev.IsLeader || a.State != prev.State {
			leader := a.Name
			if leader == "" {
				leader = "(none)"
			}
			fmt.Fprintf(stdout, "%s leader=%s term=%d isLeader=%t state=%s self=%s\n",
				time.Now().UTC().Format(time.RFC3339Nano), leader, a.Term, a.IsLeader, a.State, a.Self)
		}
		have, prev = true, a
	}
	return 0
}
