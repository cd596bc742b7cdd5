package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// options holds the parsed command line of one run.
type options struct {
	workload string

	// Common to every workload.
	target     string
	plaintext  bool
	certFile   string
	keyFile    string
	caFile     string
	serverName string
	suite      string
	group      string
	pid        int
	procs      int
	jsonOut    bool
	timeout    time.Duration

	// Workload-specific; only the flags of the chosen workload are defined.
	concurrency int           // handshake, rr, idle (opening)
	duration    time.Duration // handshake, rr: measured phase; idle: budget for opening
	resume      bool          // handshake
	sharedCache bool          // handshake -resume: one session cache for all goroutines
	probe       string        // handshake: "echo" or "none"
	size        int           // rr
	connections int           // idle
	settle      time.Duration // idle

	tlsConfig *tls.Config // nil with -plaintext
}

// helpRequest is returned by parseOptions for -h: not an error for the user,
// the caller prints usage and exits 0.
type helpRequest struct{ usage string }

func (h helpRequest) Error() string { return "help requested" }

const topUsage = `loadgen: load generator for TLS terminators, on Go's crypto/tls.

usage: loadgen WORKLOAD -target HOST:PORT [flags]

workloads:
  handshake  new connections per second (TLS handshake + 1-byte echo), -resume for resumed sessions
  rr         request/response latency and rate over -c kept-open connections
  idle       target memory per idle connection (-pid)

'loadgen WORKLOAD -h' lists the flags of a workload; see README.md for the JSON fields.
`

const maxMessageSize = 16 << 20

// tls13Groups are the key-exchange groups -group accepts.
var tls13Groups = map[string]tls.CurveID{
	"X25519": tls.X25519,
	"P-256":  tls.CurveP256,
	"P-384":  tls.CurveP384,
}

// parseOptions parses `WORKLOAD [flags]`. Every error it returns is a usage
// error whose message names the offending flag.
func parseOptions(args []string) (*options, error) {
	if len(args) == 0 {
		return nil, errors.New("missing workload: loadgen handshake|rr|idle -target HOST:PORT [flags] (-h for help)")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return nil, helpRequest{topUsage}
	case "handshake", "rr", "idle":
	default:
		return nil, fmt.Errorf("unknown workload %q: want handshake, rr or idle (the workload comes before the flags)", args[0])
	}

	o := &options{workload: args[0]}
	fs := o.flagSet()
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, helpRequest{workloadUsage(fs)}
		}
		return nil, err // the flag package's messages name the flag
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: every setting is a flag (-h for the list)", fs.Arg(0))
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if !o.plaintext {
		cfg, err := o.buildTLSConfig()
		if err != nil {
			return nil, err
		}
		o.tlsConfig = cfg
	}
	return o, nil
}

// flagSet defines the common flags and those of o.workload.
func (o *options) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("loadgen "+o.workload, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed by run, on one line

	fs.StringVar(&o.target, "target", "", "`HOST:PORT` of the terminator (or, with -plaintext, of the service itself) (required)")
	fs.BoolVar(&o.plaintext, "plaintext", false, "no TLS: measure the service directly, for the baseline")
	fs.StringVar(&o.certFile, "cert", "", "client certificate chain (PEM `file`)")
	fs.StringVar(&o.keyFile, "key", "", "private key for -cert (PEM `file`)")
	fs.StringVar(&o.caFile, "cacert", "", "CA certificates the server must chain to (PEM `file`; default: system roots)")
	fs.StringVar(&o.serverName, "servername", "", "SNI and name to verify (default: the host part of -target)")
	fs.StringVar(&o.suite, "suite", "TLS_AES_128_GCM_SHA256", "TLS 1.3 cipher suite the server must negotiate (others count as wrong-suite errors)")
	fs.StringVar(&o.group, "group", "X25519", "key-exchange group, the only one offered: X25519, P-256 or P-384")
	fs.IntVar(&o.pid, "pid", 0, "`PID` of the terminator: report its CPU time (and, for idle, memory) summed over its process tree")
	fs.IntVar(&o.procs, "procs", 0, "GOMAXPROCS for the load generator (default: Go's default, the CPU count)")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object on one line instead of the summary")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "deadline of each operation (connect+handshake+probe, or one request)")

	switch o.workload {
	case "handshake":
		fs.IntVar(&o.concurrency, "c", 16, "connections in flight at once")
		fs.DurationVar(&o.duration, "d", 5*time.Second, "how long to measure")
		fs.BoolVar(&o.resume, "resume", false, "resume each goroutine's previous session (reports resumed_fraction)")
		fs.BoolVar(&o.sharedCache, "shared-session-cache", false,
			"with -resume: all goroutines share one session cache (as an application with a connection pool does), so parallel connections offer the same latest ticket")
		fs.StringVar(&o.probe, "probe", "echo", "after the handshake: echo (write 1 byte, read it back: proves the server admitted us) or none")
	case "rr":
		fs.IntVar(&o.concurrency, "c", 32, "connections, each with one request in flight")
		fs.DurationVar(&o.duration, "d", 5*time.Second, "how long to measure")
		fs.IntVar(&o.size, "size", 64, "request size in `bytes` (the reply must be the same bytes)")
	case "idle":
		fs.IntVar(&o.connections, "n", 2000, "connections to open and hold")
		fs.IntVar(&o.concurrency, "c", 32, "connections being opened at once")
		fs.DurationVar(&o.settle, "settle", time.Second, "how long to hold them before reading the target's memory")
		fs.DurationVar(&o.duration, "d", 60*time.Second, "time budget for opening (no connection is started after it)")
	}
	return fs
}

func workloadUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s -target HOST:PORT [flags]\n\nflags:\n", fs.Name())
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// validate checks the values of the flags, not yet the files they name.
func (o *options) validate() error {
	if o.target == "" {
		return errors.New("-target is required (HOST:PORT)")
	}
	host, port, err := net.SplitHostPort(o.target)
	if err != nil || port == "" {
		return fmt.Errorf("-target %q: want HOST:PORT", o.target)
	}
	if o.serverName == "" {
		o.serverName = host
	}
	if o.timeout <= 0 {
		return fmt.Errorf("-timeout %v: must be positive", o.timeout)
	}
	if o.concurrency < 1 {
		return fmt.Errorf("-c %d: must be at least 1", o.concurrency)
	}
	if o.duration <= 0 {
		return fmt.Errorf("-d %v: must be positive", o.duration)
	}
	if o.procs < 0 {
		return fmt.Errorf("-procs %d: must be at least 1", o.procs)
	}
	if o.pid != 0 {
		if o.pid < 0 {
			return fmt.Errorf("-pid %d: not a process id", o.pid)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", o.pid)); err != nil {
			return fmt.Errorf("-pid %d: no such process", o.pid)
		}
	}
	if err := o.validateTLSFlags(); err != nil {
		return err
	}
	return o.validateWorkloadFlags()
}

func (o *options) validateTLSFlags() error {
	if !isTLS13Suite(o.suite) {
		return fmt.Errorf("-suite %q: not a TLS 1.3 cipher suite (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)", o.suite)
	}
	if _, ok := tls13Groups[o.group]; !ok {
		return fmt.Errorf("-group %q: want X25519, P-256 or P-384", o.group)
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return errors.New("-cert and -key go together")
	}
	if o.sharedCache && !o.resume {
		return errors.New("-shared-session-cache needs -resume")
	}
	if o.plaintext && o.resume {
		return errors.New("-resume needs TLS: drop -plaintext")
	}
	return nil
}

func (o *options) validateWorkloadFlags() error {
	switch o.workload {
	case "handshake":
		if o.probe != "echo" && o.probe != "none" {
			return fmt.Errorf("-probe %q: want echo or none", o.probe)
		}
		// Go's client stores a TLS 1.3 ticket only when a Read processes it;
		// without the echo's read no session would ever be offered.
		if o.resume && o.probe == "none" {
			return errors.New("-resume needs -probe echo (the session ticket is picked up by the echo's read)")
		}
	case "rr":
		if o.size < 1 || o.size > maxMessageSize {
			return fmt.Errorf("-size %d: want 1 to %d", o.size, maxMessageSize)
		}
	case "idle":
		if o.connections < 1 {
			return fmt.Errorf("-n %d: must be at least 1", o.connections)
		}
		if o.settle < 0 {
			return fmt.Errorf("-settle %v: must not be negative", o.settle)
		}
	}
	return nil
}

func isTLS13Suite(name string) bool {
	for _, s := range tls.CipherSuites() {
		if s.Name != name {
			continue
		}
		for _, v := range s.SupportedVersions {
			if v == tls.VersionTLS13 {
				return true
			}
		}
	}
	return false
}

// buildTLSConfig returns the client configuration shared by all connections:
// TLS 1.3 only, one key-exchange group. Go offers no way to restrict TLS 1.3
// cipher suites, so the suite is checked after each handshake instead.
func (o *options) buildTLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls13Groups[o.group]},
		ServerName:       o.serverName,
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("-cacert: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cacert %s: no PEM certificate in it", o.caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// targetLabel is the "target" field of the report, as `portcullis bench` writes it.
func (o *options) targetLabel() string {
	if o.plaintext {
		return o.target + " (plaintext)"
	}
	return o.target + " (TLS)"
}
