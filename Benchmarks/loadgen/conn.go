package main

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connector opens connections to the target the same way for every workload.
// A copy per goroutine is cheap; with -resume each copy gets its own
// tls.Config carrying its own session cache.
type connector struct {
	target    string
	tlsConfig *tls.Config // nil: plaintext
	suite     string      // the cipher suite the server must pick
	timeout   time.Duration
}

func newConnector(o *options) connector {
	return connector{target: o.target, tlsConfig: o.tlsConfig, suite: o.suite, timeout: o.timeout}
}

// withOwnSessionCache returns a copy of c whose connections resume each
// other's sessions (one remembered session: the latest ticket).
func (c connector) withOwnSessionCache() connector {
	if c.tlsConfig != nil {
		c.tlsConfig = c.tlsConfig.Clone()
		c.tlsConfig.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	return c
}

// open dials the target, completes the TLS handshake and, with probe, echoes
// one byte. One deadline, c.timeout from now, bounds all of it. On success the
// connection is returned with no deadline left on it; resumed tells whether
// the TLS session was resumed.
//
// The probe matters: in TLS 1.3 the client's handshake is done before the
// server has looked at the client certificate, so a refused client learns it
// only from its first read (an alert, EOF or a reset). The echoed byte is
// proof that the server admitted us and that the service behind it answers.
// It also makes Go's client read the session ticket, which arrives after the
// handshake, so that -resume has a session to offer next time.
func (c connector) open(probe bool) (net.Conn, bool, error) {
	deadline := time.Now().Add(c.timeout)
	dialer := net.Dialer{Deadline: deadline}
	raw, err := dialer.Dial("tcp", c.target)
	if err != nil {
		return nil, false, dialError{err}
	}
	conn, resumed, err := c.establish(raw, deadline, probe)
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	return conn, resumed, nil
}

// establish runs the handshake and the probe on a fresh TCP connection. It
// always returns the connection to close: raw, or the TLS one on top of it.
func (c connector) establish(raw net.Conn, deadline time.Time, probe bool) (conn net.Conn, resumed bool, err error) {
	conn = raw
	if err = raw.SetDeadline(deadline); err != nil {
		return conn, false, err
	}
	if c.tlsConfig != nil {
		tc := tls.Client(raw, c.tlsConfig)
		conn = tc
		if err = tc.Handshake(); err != nil {
			return conn, false, err
		}
		state := tc.ConnectionState()
		if got := tls.CipherSuiteName(state.CipherSuite); got != c.suite {
			reportWrongSuite(got, c.suite)
			return conn, false, errWrongSuite
		}
		resumed = state.DidResume
	}
	if probe {
		if err = echoOneByte(conn); err != nil {
			return conn, false, err
		}
	}
	return conn, resumed, conn.SetDeadline(time.Time{})
}

// wrongSuiteOnce: the error count says how often the server chose another
// suite, one warning says which (it is the same every time).
var wrongSuiteOnce sync.Once

func reportWrongSuite(got, want string) {
	wrongSuiteOnce.Do(func() {
		warnf("the server negotiated %s, not -suite %s; such connections count as wrong-suite errors", got, want)
	})
}

// echoOneByte writes one byte and expects the same byte back.
func echoOneByte(conn net.Conn) error {
	const probeByte = 'p'
	var buf [1]byte
	buf[0] = probeByte
	if _, err := conn.Write(buf[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(conn, buf[:]); err != nil {
		return err
	}
	if buf[0] != probeByte {
		return errMismatch
	}
	return nil
}

// openMany opens n connections (handshake and 1-byte echo each) with at most
// parallel being opened at once, and starts none after budgetEnd (zero: no
// budget). It returns those that opened and the errors of the others.
func openMany(c connector, n, parallel int, budgetEnd time.Time) ([]net.Conn, errorCounts) {
	if parallel > n {
		parallel = n
	}
	slots := make([]net.Conn, n) // slot i is written by the one goroutine that claimed i
	var next atomic.Int64
	perWorker := make([]errorCounts, parallel)
	var wg sync.WaitGroup
	for g := range perWorker {
		errs := errorCounts{}
		perWorker[g] = errs
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || (!budgetEnd.IsZero() && time.Now().After(budgetEnd)) {
					return
				}
				conn, _, err := c.open(true)
				if err != nil {
					errs.add(err)
					continue
				}
				slots[i] = conn
			}
		}()
	}
	wg.Wait()

	conns := make([]net.Conn, 0, n)
	for _, conn := range slots {
		if conn != nil {
			conns = append(conns, conn)
		}
	}
	all := errorCounts{}
	for _, errs := range perWorker {
		all.merge(errs)
	}
	return conns, all
}
