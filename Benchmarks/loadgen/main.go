// Command loadgen is a load generator for TLS terminators built on Go's
// crypto/tls, so that the figures of `portcullis bench` (which runs on
// OpenSSL, like most of the terminators it measures) can be checked with a TLS
// stack that shares no code with them.
//
//	loadgen handshake|rr|idle -target HOST:PORT [flags]
//
// See README.md for the workloads, the flags and the JSON fields.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

const toolName = "loadgen (Go crypto/tls)"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, runs one workload and prints its report. It returns the
// process exit code: 0 when the run completed (whatever errors it counted),
// 2 on bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseOptions(args)
	var help helpRequest
	switch {
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.usage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	if opts.procs > 0 {
		runtime.GOMAXPROCS(opts.procs)
	}

	var rep *report
	switch opts.workload {
	case "handshake":
		rep = runHandshake(opts)
	case "rr":
		rep = runRR(opts)
	case "idle":
		rep = runIdle(opts)
	}

	if opts.jsonOut {
		err = writeJSON(stdout, rep)
	} else {
		err = writeText(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: writing the report: %v\n", err)
		return 1
	}
	return 0
}

// warnf reports a problem that does not stop the run (the report still
// follows, without the figures the problem made unavailable).
func warnf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "loadgen: warning: "+format+"\n", args...)
}
