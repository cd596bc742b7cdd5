"""ghostunnel's connection limits, with its spellings: `--max-conn-lifetime` closes a connection that long
after its accept however busy it is (close_notify and FIN both ways), and `--max-concurrent-conns N` holds
clients beyond N in the kernel's accept queue until a slot frees (ghostunnel's semaphore before Accept,
HAProxy's maxconn) instead of refusing them."""

from __future__ import annotations

import socket
import ssl
import threading
import time

from harness import echo_roundtrip, free_port, wait_until
from test_status_metrics import metric, scrape


# --- --max-conn-lifetime -----------------------------------------------------------------------------

def test_a_busy_connection_is_closed_at_its_max_lifetime_and_new_ones_are_accepted(proxy, tls, backend):
    b = backend("echo")
    sport = free_port()
    p = proxy(target=b.address, extra=["--max-conn-lifetime", "2s", "--status", f"127.0.0.1:{sport}"])
    # suppress_ragged_eofs=False: a b"" read below means a close_notify came, not a bare FIN.
    s = tls.connect(p.port, suppress_ragged_eofs=False)
    t0 = time.monotonic()
    sent = 0
    closed_after = None
    while time.monotonic() - t0 < 6:
        try:
            got = echo_roundtrip(s, b"busy", timeout=3)
        except AssertionError as e:  # recv_exact: EOF
            assert "EOF after 0 of 4 bytes" in str(e), e
            closed_after = time.monotonic() - t0
            break
        assert got == b"busy"
        sent += 1
        time.sleep(0.05)
    s.close()
    assert closed_after is not None, "a busy connection outlived --max-conn-lifetime 2s by 4 s"
    assert 1.7 <= closed_after <= 3.5, f"closed {closed_after:.2f} s after the handshake, want ~2 s"
    assert sent >= 20, f"only {sent} round trips: the connection was not kept busy"
    line = p.wait_log("connection closed", timeout=5)
    assert line["close.reason"] == "max lifetime", line
    assert 1900 <= int(line["conn.duration_ms"]) <= 3500, line
    assert b.eof_event.wait(5), "the backend did not get a FIN"
    wait_until(lambda: metric(scrape(sport), "portcullis_connections_closed_total", listener="server",
                              reason="max_lifetime") == 1, timeout=5, what="max_lifetime counted")
    # The listener keeps accepting.
    with tls.connect(p.port) as again:
        assert echo_roundtrip(again, b"new") == b"new"


def test_zero_is_no_cap(proxy, tls):
    p = proxy(extra=["--max-conn-lifetime", "0s"])
    s = tls.connect(p.port)
    time.sleep(1.5)  # nothing to wait for: the assertion is that the connection is still there
    assert echo_roundtrip(s, b"still") == b"still"
    s.close()


# --- --max-concurrent-conns holds -----------------------------------------------------------------------

class PendingHandshake:
    """A TLS client whose ClientHello is on the wire and whose handshake the test completes later."""

    def __init__(self, port: int, ctx: ssl.SSLContext):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)  # the kernel completes the TCP handshake
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.sock.sendall(self.outgoing.read())

    def answered_within(self, seconds: float) -> bool:
        """Whether the server sent anything (its ServerHello) within `seconds`."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        assert data, "the held connection was closed instead of answered"
        self.incoming.write(data)
        return True

    def finish(self, payload: bytes) -> bytes:
        self.sock.settimeout(10)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                assert data, "closed during the handshake"
                self.incoming.write(data)
        self.tls.write(payload)
        self._flush()
        got = b""
        while len(got) < len(payload):
            try:
                got += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                assert data, "closed before the echo"
                self.incoming.write(data)
        return got

    def _flush(self):
        pending = self.outgoing.read()
        if pending:
            self.sock.sendall(pending)

    def close(self):
        self.sock.close()


def test_clients_beyond_the_limit_wait_and_are_served_when_a_slot_frees(proxy, tls):
    sport = free_port()
    # Two workers: the freed slot may be on the other worker than the held client (it must be woken).
    p = proxy(extra=["--max-concurrent-conns", "2", "--workers", "2", "--status", f"127.0.0.1:{sport}"])
    a, b = tls.connect(p.port), tls.connect(p.port)
    assert echo_roundtrip(a, b"a") == b"a" and echo_roundtrip(b, b"b") == b"b"

    held = PendingHandshake(p.port, tls.ctx("allowed"))
    assert not held.answered_within(1.5), "a third client got a handshake while two connections are open"
    values = scrape(sport)
    assert metric(values, "portcullis_accept_pauses_total", listener="server") >= 1
    assert metric(values, "portcullis_accept_paused_workers", listener="server") >= 1
    assert metric(values, "portcullis_connections_accepted_total", listener="server") == 2
    assert metric(values, "portcullis_connections_closed_total", listener="server", reason="limit_reached") == 0
    p.wait_log("listener at its connection limit: new clients wait in the accept queue")
    # The open ones are unaffected.
    assert echo_roundtrip(a, b"a2") == b"a2" and echo_roundtrip(b, b"b2") == b"b2"

    a.close()
    assert held.answered_within(5), "the held client was not served after a slot freed"
    assert held.finish(b"c") == b"c"
    assert echo_roundtrip(b, b"b3") == b"b3"
    held.close()
    b.close()
    wait_until(lambda: metric(scrape(sport), "portcullis_connections_active", listener="server") == 0,
               timeout=5, what="all connections closed")
    assert metric(scrape(sport), "portcullis_accept_paused_workers", listener="server") == 0


def test_many_held_clients_are_served_in_turn_none_refused(proxy, tls):
    """Twelve clients through a limit of two on two workers: every one is eventually echoed, never refused,
    and never more than two are served at once."""
    p = proxy(extra=["--max-concurrent-conns", "2", "--workers", "2"])
    lock = threading.Lock()
    state = {"open": 0, "peak": 0, "ok": 0, "errors": []}

    def client(i: int):
        try:
            with tls.connect(p.port, timeout=30) as s:
                assert echo_roundtrip(s, b"x%d" % i, timeout=30) == b"x%d" % i
                with lock:
                    state["open"] += 1
                    state["peak"] = max(state["peak"], state["open"])
                time.sleep(0.3)
                with lock:
                    state["open"] -= 1
                    state["ok"] += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                state["errors"].append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not state["errors"], state["errors"]
    assert state["ok"] == 12
    assert state["peak"] <= 2, f"{state['peak']} connections served at once with --max-concurrent-conns 2"
    assert not p.logs("connection refused: limit reached")
