package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// End-to-end tests against an in-process echo server on Go's own TLS stack,
// which, like Portcullis, requires and verifies a client certificate.

type testPKI struct {
	dir                    string
	caPool                 *x509.CertPool
	server                 tls.Certificate
	clientCert, clientKey  string // signed by the CA
	intruderCert, intruder string // signed by another CA
	caFile                 string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := makeCert(t, "test CA", nil, nil, true)
	otherCA, otherKey := makeCert(t, "other CA", nil, nil, true)
	serverCert, serverKey := makeCert(t, "localhost", caCert, caKey, false)
	clientCert, clientKey := makeCert(t, "bench-client", caCert, caKey, false)
	intruderCert, intruderKey := makeCert(t, "intruder", otherCA, otherKey, false)

	p := &testPKI{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(caCert)
	p.server = tls.Certificate{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)
	p.clientCert = writePEM(t, dir, "client.pem", "CERTIFICATE", clientCert.Raw)
	p.clientKey = writeKey(t, dir, "client.key", clientKey)
	p.intruderCert = writePEM(t, dir, "intruder.pem", "CERTIFICATE", intruderCert.Raw)
	p.intruder = writeKey(t, dir, "intruder.key", intruderKey)
	return p
}

func makeCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{cn},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
		tmpl.DNSNames, tmpl.IPAddresses, tmpl.ExtKeyUsage = nil, nil, nil
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t *testing.T, dir, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name, "PRIVATE KEY", der)
}

// startEchoServer serves TLS 1.3 echo on 127.0.0.1 until the test ends.
func startEchoServer(t *testing.T, p *testPKI) string {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.caPool,
		MinVersion:   tls.VersionTLS13,
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	return ln.Addr().String()
}

func mustParse(t *testing.T, args ...string) *options {
	t.Helper()
	o, err := parseOptions(args)
	if err != nil {
		t.Fatalf("parseOptions(%q): %v", args, err)
	}
	return o
}

func TestHandshakeFullAndResumed(t *testing.T) {
	p := newTestPKI(t)
	addr := startEchoServer(t, p)
	common := []string{"-target", addr, "-cert", p.clientCert, "-key", p.clientKey, "-cacert", p.caFile,
		"-servername", "localhost", "-c", "4", "-d", "300ms"}

	full := runHandshake(mustParse(t, append([]string{"handshake"}, common...)...))
	if *full.Results.Handshakes == 0 || len(full.Results.Errors) != 0 {
		t.Fatalf("full handshakes: %+v", full.Results)
	}

	resumed := runHandshake(mustParse(t, append([]string{"handshake", "-resume"}, common...)...))
	if resumed.Workload != "handshake-resumed" || len(resumed.Results.Errors) != 0 {
		t.Fatalf("resumed handshakes: %+v", resumed.Results)
	}
	// All but each goroutine's first connection resume.
	if f := *resumed.Results.ResumedFraction; f < 0.8 {
		t.Errorf("resumed_fraction = %v, want ~1", f)
	}
}

func TestIntruderIsNeverCounted(t *testing.T) {
	p := newTestPKI(t)
	addr := startEchoServer(t, p)
	rep := runHandshake(mustParse(t, "handshake", "-target", addr, "-cert", p.intruderCert, "-key", p.intruder,
		"-cacert", p.caFile, "-servername", "localhost", "-c", "2", "-d", "200ms"))
	if *rep.Results.Handshakes != 0 {
		t.Errorf("intruder got %d handshakes", *rep.Results.Handshakes)
	}
	if len(rep.Results.Errors) == 0 {
		t.Error("intruder: no errors counted")
	}
	for kind := range rep.Results.Errors {
		if !strings.HasPrefix(kind, "alert:") && kind != "eof" && kind != "reset" {
			t.Errorf("unexpected error kind %q", kind)
		}
	}
}

func TestRequestResponseAndIdle(t *testing.T) {
	p := newTestPKI(t)
	addr := startEchoServer(t, p)
	tlsArgs := []string{"-target", addr, "-cert", p.clientCert, "-key", p.clientKey, "-cacert", p.caFile}

	rr := runRR(mustParse(t, append([]string{"rr", "-c", "3", "-d", "200ms", "-size", "100"}, tlsArgs...)...))
	if *rr.Results.Requests == 0 || len(rr.Results.Errors) != 0 || rr.Results.Latency.Count != uint64(*rr.Results.Requests) {
		t.Fatalf("rr: %+v", rr.Results)
	}

	idle := runIdle(mustParse(t, append([]string{"idle", "-n", "20", "-c", "4", "-settle", "50ms",
		"-pid", fmt.Sprint(os.Getpid())}, tlsArgs...)...))
	if *idle.Results.ConnectionsOpen != 20 || len(idle.Results.Errors) != 0 {
		t.Fatalf("idle: %+v", idle.Results)
	}
}

func TestBadFlagsNameTheFlag(t *testing.T) {
	cases := map[string][]string{
		"-target":  {"handshake"},
		"-c":       {"rr", "-target", "127.0.0.1:1", "-c", "0"},
		"-group":   {"rr", "-target", "127.0.0.1:1", "-group", "P-521"},
		"-suite":   {"rr", "-target", "127.0.0.1:1", "-suite", "TLS_RSA_WITH_AES_128_CBC_SHA"},
		"-probe":   {"handshake", "-target", "127.0.0.1:1", "-probe", "maybe"},
		"-resume":  {"rr", "-target", "127.0.0.1:1", "-resume"},
		"-size":    {"rr", "-target", "127.0.0.1:1", "-size", "x"},
		"-cacert":  {"rr", "-target", "127.0.0.1:1", "-cacert", "/nonexistent"},
		"workload": {"bench"},
	}
	for name, args := range cases {
		var out, errOut strings.Builder
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		msg := errOut.String()
		if !strings.Contains(msg, name) || strings.Count(msg, "\n") != 1 {
			t.Errorf("%v: message %q should be one line naming %s", args, msg, name)
		}
	}
}
