package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"time"
)

// report is one run's result. Its JSON follows `portcullis bench --json`
// (same field names and units) so one script can read both; pointer fields
// are omitted when they do not apply to the workload, while a zero that does
// apply (0 handshakes) is still printed.
type report struct {
	Tool       string            `json:"tool"`
	Go         string            `json:"go"`
	Workload   string            `json:"workload"`
	Target     string            `json:"target"`
	Parameters map[string]string `json:"parameters"`
	Results    results           `json:"results"`
	CPU        *cpuReport        `json:"cpu,omitempty"`
}

type results struct {
	Handshakes          *int64          `json:"handshakes,omitempty"`
	HandshakesPerSecond *float64        `json:"handshakes_per_second,omitempty"`
	ResumedFraction     *float64        `json:"resumed_fraction,omitempty"`
	Requests            *int64          `json:"requests,omitempty"`
	RequestsPerSecond   *float64        `json:"requests_per_second,omitempty"`
	Latency             *latencySummary `json:"latency_us,omitempty"`
	ConnectionsOpen     *int64          `json:"connections_open,omitempty"`
	RSSKBBefore         *int64          `json:"rss_kb_before,omitempty"`
	RSSKBAfter          *int64          `json:"rss_kb_after,omitempty"`
	RSSKBPerConnection  *float64        `json:"rss_kb_per_connection,omitempty"`
	Errors              errorCounts     `json:"errors"`
	ElapsedS            float64         `json:"elapsed_s"`
	Suite               string          `json:"suite,omitempty"`
	Group               string          `json:"group,omitempty"`
}

type cpuReport struct {
	TargetSeconds  float64  `json:"target_seconds"`
	PerHandshakeMS *float64 `json:"per_handshake_ms,omitempty"`
	PerRequestUS   *float64 `json:"per_request_us,omitempty"`
}

// newReport fills in what every workload reports the same way.
func newReport(o *options, workload string, params map[string]string) *report {
	params["timeout_s"] = seconds(o.timeout)
	params["procs"] = fmt.Sprint(runtime.GOMAXPROCS(0))
	if o.pid != 0 {
		params["pid"] = fmt.Sprint(o.pid)
	}
	if !o.plaintext {
		params["servername"] = o.serverName
	}
	rep := &report{
		Tool:       toolName,
		Go:         runtime.Version(),
		Workload:   workload,
		Target:     o.targetLabel(),
		Parameters: params,
		Results:    results{Errors: errorCounts{}},
	}
	if !o.plaintext {
		// Every counted connection negotiated exactly these (others are errors).
		rep.Results.Suite, rep.Results.Group = o.suite, o.group
	}
	return rep
}

// perUnit returns total/count, or nil when count is 0 (undefined).
func perUnit(total float64, count int64, scale float64, decimals int) *float64 {
	if count <= 0 {
		return nil
	}
	return float64p(round(total*scale/float64(count), decimals))
}

// perSecond returns n/elapsed, or 0 when nothing was measured (no time
// elapsed: e.g. rr without a single open connection).
func perSecond(n int64, elapsed time.Duration) *float64 {
	if elapsed <= 0 {
		return float64p(0)
	}
	return float64p(round(float64(n)/elapsed.Seconds(), 3))
}

func int64p(v int64) *int64       { return &v }
func float64p(v float64) *float64 { return &v }

func seconds(d time.Duration) string { return fmt.Sprint(d.Seconds()) }

func writeJSON(w io.Writer, rep *report) error {
	enc := json.NewEncoder(w) // Encode writes one line
	enc.SetEscapeHTML(false)
	return enc.Encode(rep)
}

// writeText prints a human-readable summary of rep.
func writeText(w io.Writer, rep *report) error {
	var b strings.Builder
	r := rep.Results
	fmt.Fprintf(&b, "%s, %s: %s against %s\n", rep.Tool, rep.Go, rep.Workload, rep.Target)
	fmt.Fprintf(&b, "  parameters   %s\n", formatParams(rep.Parameters))
	if r.Handshakes != nil {
		fmt.Fprintf(&b, "  handshakes   %d in %.3f s: %s/s\n", *r.Handshakes, r.ElapsedS, formatOpt(r.HandshakesPerSecond, 1))
	}
	if r.ResumedFraction != nil {
		fmt.Fprintf(&b, "  resumed      %.1f %%\n", *r.ResumedFraction*100)
	}
	if r.Requests != nil {
		fmt.Fprintf(&b, "  requests     %d in %.3f s: %s/s\n", *r.Requests, r.ElapsedS, formatOpt(r.RequestsPerSecond, 1))
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(&b, "  latency us   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f  (n=%d)\n",
			l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
	}
	if r.ConnectionsOpen != nil {
		fmt.Fprintf(&b, "  connections  %d open\n", *r.ConnectionsOpen)
	}
	if r.RSSKBBefore != nil && r.RSSKBAfter != nil {
		fmt.Fprintf(&b, "  target RSS   %d kB -> %d kB: %s kB per connection\n", *r.RSSKBBefore, *r.RSSKBAfter, formatOpt(r.RSSKBPerConnection, 2))
	}
	if c := rep.CPU; c != nil {
		fmt.Fprintf(&b, "  target CPU   %.2f s", c.TargetSeconds)
		if c.PerHandshakeMS != nil {
			fmt.Fprintf(&b, ", %.3f ms per handshake", *c.PerHandshakeMS)
		}
		if c.PerRequestUS != nil {
			fmt.Fprintf(&b, ", %.3f us per request", *c.PerRequestUS)
		}
		b.WriteString("\n")
	}
	if r.Suite != "" {
		fmt.Fprintf(&b, "  TLS          1.3, %s, %s\n", r.Suite, r.Group)
	}
	fmt.Fprintf(&b, "  errors       %s\n", formatErrors(r.Errors))
	fmt.Fprintf(&b, "  elapsed      %.3f s\n", r.ElapsedS)
	_, err := io.WriteString(w, b.String())
	return err
}

func formatOpt(v *float64, decimals int) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.*f", decimals, *v)
}

func formatParams(params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + params[k]
	}
	return strings.Join(parts, " ")
}

func formatErrors(errs errorCounts) string {
	if len(errs) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(errs))
	for k := range errs {
		kinds = append(kinds, k)
	}
	// Most frequent first: the kind that explains a run is usually the biggest.
	sort.Slice(kinds, func(i, j int) bool {
		if errs[kinds[i]] != errs[kinds[j]] {
			return errs[kinds[i]] > errs[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s=%d", k, errs[k])
	}
	return strings.Join(parts, " ")
}
