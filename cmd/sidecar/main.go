// Command raft-elector is the sidecar: it runs one member of a raft-elector cluster, or with
// the demo subcommand a whole local cluster in one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is the one exit point: it returns the process exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "watch":
			return runWatch(args[1:], stdout, stderr)
		case "version", "--version":
			fmt.Fprintln(stdout, "raft-elector", version)
			return 0
		}
	}
	c, err := parseMemberFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "raft-elector: %v\n", err)
		return 2
	}
	log := newLogger(c.LogLevel, c.LogFormat, stderr)
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)

	for {
		// A signal while starting (waiting for the API server, say) ends the wait.
		sctx, sstop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		m, err := startMember(sctx, c, log)
		interrupted := sctx.Err() != nil
		sstop()
		if err != nil {
			if interrupted {
				log.Info("shutting down while starting", "error", err)
				return 0
			}
			log.Error("cannot start", "error", err)
			fmt.Fprintf(stderr, "raft-elector: %v\n", err)
			return 1
		}
		select {
		case sig := <-sigc:
			log.Info("shutting down", "signal", sig.String())
			m.shutdown(true)
			return 0
		case err := <-m.runErr:
			log.Error("member failed", "error", err)
			m.shutdown(false)
			return 1
		case rec := <-m.replaced:
			// The cluster was replaced by a newer generation: start again to join it.
			m.shutdown(false)
			c.continueFrom = m.store
			c.replacedBy = rec.ClusterID
			c.termFloor = m.node.Status().Term
			log.Info("restarting the member", "cluster", rec.ClusterID)
		}
	}
}

func newLogger(level, format string, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            "raft-elector",
		Level:           hclog.LevelFromString(strings.ToLower(level)),
		JSONFormat:      format == "json",
		Output:          w,
		TimeFormat:      "2006-01-02T15:04:05.000Z07:00",
		IncludeLocation: false,
	})
}
