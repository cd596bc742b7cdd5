package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// aliveProbeWindow is how long the liveness check waits for a read to time
// out: a connection that is still open has nothing to say in that window.
const aliveProbeWindow = 200 * time.Millisecond

// fdSlack covers the file descriptors loadgen needs besides the connections.
const fdSlack = 64

// runIdle opens -n connections, holds them for -settle and reports how much
// the target's memory grew per connection.
func runIdle(o *options) *report {
	checkFileLimit(o.connections)
	rss := rssSampler{pid: o.pid}
	rss.sampleBefore()

	cpu := startCPUMeter(o.pid)
	start := time.Now()
	conns, errs := openMany(newConnector(o), o.connections, o.concurrency, start.Add(o.duration))
	// CPU is taken over the opening only: per_handshake_ms, comparable with
	// the handshake workload's.
	cpuSeconds, cpuOK := cpu.stop()

	time.Sleep(o.settle)
	rss.sampleAfter()
	alive := keepAlive(conns, errs)
	closeAll(conns)
	elapsed := time.Since(start)

	rep := newReport(o, "idle", map[string]string{
		"connections":   fmt.Sprint(o.connections),
		"concurrency":   fmt.Sprint(o.concurrency),
		"settle_s":      seconds(o.settle),
		"open_budget_s": seconds(o.duration),
	})
	r := &rep.Results
	r.ConnectionsOpen = int64p(int64(len(alive)))
	if rss.ok {
		r.RSSKBBefore = int64p(rss.before)
		r.RSSKBAfter = int64p(rss.after)
		r.RSSKBPerConnection = perUnit(float64(rss.after-rss.before), int64(len(alive)), 1, 3)
	}
	r.Errors = errs
	r.ElapsedS = round(elapsed.Seconds(), 3)
	if cpuOK {
		rep.CPU = &cpuReport{
			TargetSeconds:  round(cpuSeconds, 2),
			PerHandshakeMS: perUnit(cpuSeconds, int64(len(conns)), 1e3, 3),
		}
	}
	return rep
}

// checkFileLimit raises RLIMIT_NOFILE and warns when it still cannot hold n
// connections (the surplus would fail with "too many open files").
func checkFileLimit(n int) {
	limit, err := raiseFileLimit()
	if err != nil {
		warnf("raising RLIMIT_NOFILE: %v", err)
		return
	}
	if uint64(n)+fdSlack > limit {
		warnf("-n %d: only %d file descriptors allowed (ulimit -n); expect errors", n, limit)
	}
}

// rssSampler reads the target's VmRSS (process tree) before and after.
type rssSampler struct {
	pid           int
	before, after int64
	ok            bool
}

func (s *rssSampler) sampleBefore() {
	if s.pid == 0 {
		return
	}
	kb, err := treeRSSKB(s.pid)
	if err != nil {
		warnf("-pid %d: %v; no memory figures", s.pid, err)
		return
	}
	s.before, s.ok = kb, true
}

func (s *rssSampler) sampleAfter() {
	if !s.ok {
		return
	}
	kb, err := treeRSSKB(s.pid)
	if err != nil {
		warnf("-pid %d: %v; no memory figures", s.pid, err)
		s.ok = false
		return
	}
	s.after = kb
}

// keepAlive returns the connections still open after the hold, so that
// memory is divided by connections the target really held. One closed by the
// target (an idle timeout, say) is counted in errs as "idle-closed:<kind>".
// All are checked at once, against one shared deadline.
func keepAlive(conns []net.Conn, errs errorCounts) []net.Conn {
	deadline := time.Now().Add(aliveProbeWindow)
	results := make([]error, len(conns)) // index i written only by goroutine i
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Add(1)
		go func(i int, conn net.Conn) {
			defer wg.Done()
			results[i] = checkOpen(conn, deadline)
		}(i, conn)
	}
	wg.Wait()

	alive := conns[:0:0]
	for i, err := range results {
		if err != nil {
			errs["idle-closed:"+errorKind(err)]++
			conns[i].Close()
			continue
		}
		alive = append(alive, conns[i])
	}
	return alive
}

// errUnexpectedData: an idle echo service has nothing to send.
var errUnexpectedData = kindError("unexpected-data")

// checkOpen reads until deadline: a timeout means the connection is open and
// quiet; anything else (EOF, reset, an alert, data) means it is not usable.
func checkOpen(conn net.Conn, deadline time.Time) error {
	if err := conn.SetReadDeadline(deadline); err != nil {
		return err
	}
	var buf [1]byte
	n, err := conn.Read(buf[:])
	switch {
	case n > 0:
		return errUnexpectedData
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	case err == nil:
		return errUnexpectedData // a zero-byte read without error: not expected either
	default:
		return err
	}
}

func closeAll(conns []net.Conn) {
	for _, conn := range conns {
		conn.Close()
	}
}
