package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// kindError is a failure loadgen detects itself rather than one returned by
// the network or TLS stack; its text is its error kind.
type kindError string

func (e kindError) Error() string { return string(e) }

const (
	errWrongSuite = kindError("wrong-suite") // the server picked another cipher suite than -suite
	errMismatch   = kindError("mismatch")    // the echo differs from what was sent
)

// dialError marks a failure to open the TCP connection, so that its kind gets
// the "dial:" prefix: a refused TCP connection and a refused TLS client are
// different findings.
type dialError struct{ err error }

func (e dialError) Error() string { return "dial: " + e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

// errorCounts counts errors by kind. Each goroutine owns one and they are
// merged once the goroutines are done, so no locking is needed.
type errorCounts map[string]int64

func (e errorCounts) add(err error) { e[errorKind(err)]++ }

func (e errorCounts) merge(other errorCounts) {
	for kind, n := range other {
		e[kind] += n
	}
}

// errorKind maps an error to a short, stable kind: "eof", "reset",
// "timeout", "alert:<alert>" (sent by the server), "tls:<reason>" (detected by
// our TLS stack), "dial:<kind>", "wrong-suite", "mismatch", ...
func errorKind(err error) string {
	var de dialError
	if errors.As(err, &de) {
		return "dial:" + errorKind(de.err)
	}
	if kind, ok := transportKind(err); ok {
		return kind
	}
	if kind, ok := tlsKind(err); ok {
		return kind
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return slug(errno.Error())
	}
	return "other:" + slug(err.Error())
}

// transportKind recognises end-of-stream, deadline and socket errors.
func transportKind(err error) (string, bool) {
	var ke kindError
	var ne net.Error
	switch {
	case errors.As(err, &ke):
		return string(ke), true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof", true
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout", true
	case errors.Is(err, syscall.ECONNRESET):
		return "reset", true
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused", true
	case errors.Is(err, syscall.EPIPE):
		return "broken-pipe", true
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout", true
	}
	return "", false
}

// tlsKind recognises alerts from the server and failures of our own TLS
// stack (certificate verification, protocol errors).
func tlsKind(err error) (string, bool) {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		// crypto/tls (before Go 1.21's tls.AlertError) reports alerts as
		// net.OpErrors: "remote error" for one received, "local error" for
		// one we sent.
		switch opErr.Op {
		case "remote error":
			return "alert:" + slug(strings.TrimPrefix(opErr.Err.Error(), "tls: ")), true
		case "local error":
			return "tls:" + slug(strings.TrimPrefix(opErr.Err.Error(), "tls: ")), true
		}
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recordHeader tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownAuthority):
		return "tls:unknown-authority", true
	case errors.As(err, &hostname):
		return "tls:hostname-mismatch", true
	case errors.As(err, &invalid):
		return "tls:certificate-invalid", true
	case errors.As(err, &recordHeader):
		return "tls:not-tls", true // typically a plaintext service on the other end
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "tls: received unexpected handshake message") {
		// Typically a server that is not TLS but echoes our ClientHello back.
		return "tls:unexpected-message", true
	}
	if strings.HasPrefix(msg, "tls: ") {
		return "tls:" + slug(strings.TrimPrefix(msg, "tls: ")), true
	}
	return "", false
}

// slug turns an error text into a compact JSON-friendly key: lower case,
// words joined by '-', cut at a word boundary to at most 40 characters.
func slug(text string) string {
	const maxLen = 40
	var b strings.Builder
	for _, word := range strings.FieldsFunc(strings.ToLower(text), isSeparator) {
		if b.Len() > 0 && b.Len()+1+len(word) > maxLen {
			break
		}
		if b.Len() > 0 {
			b.WriteByte('-')
		}
		b.WriteString(word)
	}
	s := b.String()
	if len(s) > maxLen { // a single overlong word
		s = s[:maxLen]
	}
	if s == "" {
		return "unknown"
	}
	return s
}

func isSeparator(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_')
}
