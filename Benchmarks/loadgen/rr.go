package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// rrWorker drives one connection: write a request, read the whole echo,
// check it, record the round trip. Buffers are allocated once.
type rrWorker struct {
	conn     net.Conn
	timeout  time.Duration
	request  []byte
	reply    []byte
	requests int64
	latency  histogram
	errors   errorCounts
}

func newRRWorker(conn net.Conn, size int, timeout time.Duration) *rrWorker {
	w := &rrWorker{
		conn:    conn,
		timeout: timeout,
		request: make([]byte, size),
		reply:   make([]byte, size),
		errors:  errorCounts{},
	}
	for i := range w.request {
		w.request[i] = byte('a' + i%26)
	}
	return w
}

// run sends requests until end; the request in flight at end completes and
// counts. A failed or corrupted round trip ends this connection: its stream
// can no longer be trusted.
func (w *rrWorker) run(end time.Time) {
	defer w.conn.Close()
	var seq uint64
	for {
		seq++
		w.stamp(seq)
		start := time.Now()
		if err := w.roundTrip(start.Add(w.timeout)); err != nil {
			w.errors.add(err)
			return
		}
		done := time.Now()
		w.latency.record(done.Sub(start))
		w.requests++
		if !done.Before(end) {
			return
		}
	}
}

// stamp writes the sequence number into the request, so that a stale or
// misrouted reply cannot pass for the right one.
func (w *rrWorker) stamp(seq uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	copy(w.request, b[:])
}

func (w *rrWorker) roundTrip(deadline time.Time) error {
	if err := w.conn.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := w.conn.Write(w.request); err != nil {
		return err
	}
	if _, err := io.ReadFull(w.conn, w.reply); err != nil {
		return err
	}
	if !bytes.Equal(w.reply, w.request) {
		return errMismatch
	}
	return nil
}

// runRR opens -c connections (untimed), then measures closed-loop
// request/response over all of them for -d.
func runRR(o *options) *report {
	conns, openErrors := openMany(newConnector(o), o.concurrency, o.concurrency, time.Time{})
	workers := make([]*rrWorker, len(conns))
	for i, conn := range conns {
		workers[i] = newRRWorker(conn, o.size, o.timeout)
	}

	cpu := startCPUMeter(o.pid)
	start := time.Now()
	end := start.Add(o.duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *rrWorker) {
			defer wg.Done()
			w.run(end)
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuSeconds, cpuOK := cpu.stop()

	var requests int64
	var latency histogram
	errs := openErrors
	for _, w := range workers {
		requests += w.requests
		latency.merge(&w.latency)
		errs.merge(w.errors)
	}

	rep := newReport(o, "rr", map[string]string{
		"connections":  fmt.Sprint(o.concurrency),
		"message_size": fmt.Sprint(o.size),
		"duration_s":   seconds(o.duration),
	})
	r := &rep.Results
	r.ConnectionsOpen = int64p(int64(len(conns)))
	r.Requests = int64p(requests)
	r.RequestsPerSecond = perSecond(requests, elapsed)
	r.Latency = latency.summary()
	r.Errors = errs
	r.ElapsedS = round(elapsed.Seconds(), 3)
	if cpuOK {
		rep.CPU = &cpuReport{
			TargetSeconds: round(cpuSeconds, 2),
			PerRequestUS:  perUnit(cpuSeconds, requests, 1e6, 3),
		}
	}
	return rep
}
