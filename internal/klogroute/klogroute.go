// Package klogroute sends client-go's klog output through an hclog logger, each line once and
// in the logger's format: klog's errors and warnings as such, its info lines at debug.
//
// klog's defaults write a line to the output of its own severity and of every lower one
// (three times for an error when all share one writer), and errors once more straight to
// stderr, in klog's format, past the logger.
package klogroute

import (
	"flag"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"
	"k8s.io/klog/v2"
)

// Route makes log the only destination of klog's lines. It changes klog's global state.
func Route(log hclog.Logger) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{
		"logtostderr":     "false",
		"one_output":      "true",  // not once more for every lower severity
		"stderrthreshold": "FATAL", // not also straight to stderr
	} {
		if err := fs.Set(name, value); err != nil {
			panic(fmt.Sprintf("klog flag %s: %v", name, err))
		}
	}
	klog.SetOutput(Writer{log})
}

// Writer turns one klog line ("E0102 15:04:05.000000 123 file.go:42] msg") into a log line
// of the severity the line starts with.
type Writer struct{ Log hclog.Logger }

func (w Writer) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := hclog.Debug
	if line != "" {
		switch line[0] {
		case 'W':
			level = hclog.Warn
		case 'E', 'F':
			level = hclog.Error
		}
	}
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[i+2:]
	}
	w.Log.Log(level, line)
	return len(p), nil
}
