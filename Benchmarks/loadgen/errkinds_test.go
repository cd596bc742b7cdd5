package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestErrorKind(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{io.EOF, "eof"},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), "eof"},
		{&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "reset"},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, "timeout"},
		{dialError{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}, "dial:refused"},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}, "alert:certificate-required"},
		{errors.New("tls: server selected unsupported curve"), "tls:server-selected-unsupported-curve"},
		{errors.New("tls: received unexpected handshake message of type *tls.clientHelloMsg when waiting for *tls.serverHelloMsg"), "tls:unexpected-message"},
		{errWrongSuite, "wrong-suite"},
		{errMismatch, "mismatch"},
		{syscall.EMFILE, "too-many-open-files"},
		{errors.New("something odd happened!"), "other:something-odd-happened"},
	}
	for _, c := range cases {
		if got := errorKind(c.err); got != c.want {
			t.Errorf("errorKind(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestParseProcStatWithAwkwardName(t *testing.T) {
	line := "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 12345 0 0"
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.pid != 4242 || st.ppid != 17 || st.cpuTicks != 325 {
		t.Errorf("parsed %+v", st)
	}
}

func TestProcessTreeOfSelf(t *testing.T) {
	cpu, err := treeCPUSeconds(os.Getpid())
	if err != nil || cpu < 0 {
		t.Fatalf("treeCPUSeconds(self) = %v, %v", cpu, err)
	}
	rss, err := treeRSSKB(os.Getpid())
	if err != nil || rss <= 0 {
		t.Fatalf("treeRSSKB(self) = %v, %v", rss, err)
	}
}

func TestSlugCutsAtAWordBoundary(t *testing.T) {
	got := slug("received unexpected handshake message of type *tls.clientHelloMsg when waiting for *tls.serverHelloMsg")
	if want := "received-unexpected-handshake-message-of"; got != want {
		t.Errorf("slug = %q, want %q", got, want)
	}
	if got := slug("!!!"); got != "unknown" {
		t.Errorf("slug(!!!) = %q", got)
	}
}
