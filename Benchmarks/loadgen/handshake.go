package main

import (
	"fmt"
	"sync"
	"time"
)

// dialBackoff paces a goroutine after a failed TCP connect: such failures
// (nothing listening, no free local port) persist, and retrying at once would
// only turn a dead target into a busy loop.
const dialBackoff = 10 * time.Millisecond

// handshakeWorker opens and closes connections in a loop; one per goroutine.
type handshakeWorker struct {
	conn    connector
	probe   bool
	ok      int64 // connections counted as handshakes
	resumed int64 // of which resumed a session
	latency histogram
	errors  errorCounts
}

// run opens connections until end. An attempt started before end runs to
// completion (within the connector's timeout) and counts.
func (w *handshakeWorker) run(end time.Time) {
	for time.Now().Before(end) {
		start := time.Now()
		conn, resumed, err := w.conn.open(w.probe)
		if err != nil {
			w.errors.add(err)
			if _, isDial := err.(dialError); isDial {
				time.Sleep(dialBackoff)
			}
			continue
		}
		w.latency.record(time.Since(start))
		w.ok++
		if resumed {
			w.resumed++
		}
		conn.Close()
	}
}

// runHandshake measures new connections per second with -c goroutines, each
// opening one connection at a time.
func runHandshake(o *options) *report {
	base := newConnector(o)
	if o.resume && o.sharedCache {
		base = base.withOwnSessionCache() // one cache, copied by value into every worker below
	}
	workers := make([]*handshakeWorker, o.concurrency)
	for i := range workers {
		conn := base
		if o.resume && !o.sharedCache {
			conn = base.withOwnSessionCache()
		}
		workers[i] = &handshakeWorker{conn: conn, probe: o.probe == "echo", errors: errorCounts{}}
	}

	cpu := startCPUMeter(o.pid)
	start := time.Now()
	end := start.Add(o.duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *handshakeWorker) {
			defer wg.Done()
			w.run(end)
		}(w)
	}
	wg.Wait()
	// The clock runs until the last attempt is done, since those attempts count.
	elapsed := time.Since(start)
	cpuSeconds, cpuOK := cpu.stop()

	total := &handshakeWorker{errors: errorCounts{}}
	for _, w := range workers {
		total.ok += w.ok
		total.resumed += w.resumed
		total.latency.merge(&w.latency)
		total.errors.merge(w.errors)
	}
	return handshakeReport(o, total, elapsed, cpuSeconds, cpuOK)
}

func handshakeReport(o *options, total *handshakeWorker, elapsed time.Duration, cpuSeconds float64, cpuOK bool) *report {
	workload := "handshake"
	if o.resume {
		workload = "handshake-resumed"
	}
	rep := newReport(o, workload, map[string]string{
		"concurrency":  fmt.Sprint(o.concurrency),
		"duration_s":   seconds(o.duration),
		"resume":       fmt.Sprint(o.resume),
		"shared_cache": fmt.Sprint(o.sharedCache),
		"probe":        o.probe,
	})
	r := &rep.Results
	r.Handshakes = int64p(total.ok)
	r.HandshakesPerSecond = perSecond(total.ok, elapsed)
	if o.resume {
		r.ResumedFraction = perUnit(float64(total.resumed), total.ok, 1, 4)
	}
	r.Latency = total.latency.summary()
	r.Errors = total.errors
	r.ElapsedS = round(elapsed.Seconds(), 3)
	if cpuOK {
		rep.CPU = &cpuReport{
			TargetSeconds:  round(cpuSeconds, 2),
			PerHandshakeMS: perUnit(cpuSeconds, total.ok, 1e3, 3),
		}
	}
	return rep
}
