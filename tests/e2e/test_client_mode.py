"""Client mode: `portcullis client` accepts plaintext on loopback and opens mutual TLS to the target.

A server that fails verification (wrong name, untrusted CA, missing SPIFFE ID) is never sent a byte of the
application's data: the local connection is closed, the server-side sidecar's backend sees nothing, and a
recording TLS server sees no completed handshake and no application byte. When the remote is down, the local
connection is closed at once. The pair (client sidecar → server sidecar) carries 50 MB both ways intact and
propagates half-close.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

import pytest

from harness import free_port, read_until_closed, recv_exact
from pki import issue_leaf

SECRET = b"AUTH hunter2\r\nSET plaintext-must-not-leak 1\r\n"


@pytest.fixture(scope="module")
def spiffe_server(pki):
    """A server certificate for localhost that also carries the SPIFFE ID spiffe://example.org/x."""
    return issue_leaf(pki, "server-spiffe-x", "/O=Portcullis Test/CN=localhost", eku="serverAuth",
                      san="DNS:localhost,IP:127.0.0.1,URI:spiffe://example.org/x")


def app_gets_closed(port: int, timeout: float = 5.0) -> tuple[str, float]:
    """Connect as a plaintext application, send SECRET, and wait for the sidecar to close us.
    Returns (how it closed, seconds from connect to close). Fails if it is still open after `timeout`."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(SECRET)
        except OSError:
            pass  # already closed: fine
        data, how = read_until_closed(s, timeout)
        assert data == b"", f"the application was sent {data[:60]!r}"
        return how, time.monotonic() - t0
    finally:
        s.close()


def refused_server_case(proxy, client_proxy, recorder, pki, backend, *, server_cred="server", extra=(),
                        cacert=None):
    """Run one refused-server scenario twice: against a server sidecar (its backend must see nothing) and
    against a recording TLS server (no completed handshake, no application byte). Returns the client log."""
    server = proxy(target=backend.address, cert=pki[server_cred].cert, key=pki[server_cred].key)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=list(extra), cacert=cacert)
    how, _ = app_gets_closed(client.port)
    line = client.wait_log("handshake failed", timeout=5)
    assert backend.accepted == 0 and backend.bytes_in == 0, "the backend behind the refused server saw the app"
    assert not server.logs("connection closed"), "the server sidecar relayed a connection"

    rec = recorder(pki[server_cred].cert, pki[server_cred].key, client_ca=pki.ca)
    client2 = client_proxy(f"127.0.0.1:{rec.port}", extra=list(extra), cacert=cacert)
    app_gets_closed(client2.port)
    client2.wait_log("handshake failed", timeout=5)
    time.sleep(0.2)
    assert rec.accepted >= 1, "the client sidecar never dialled the recording server"
    assert rec.handshakes_ok == 0, f"a handshake with the refused server completed ({rec.handshake_errors})"
    assert rec.app_bytes == 0, f"{rec.app_bytes} application bytes reached the refused server"
    return line, how


def test_wrong_server_name_refused_nothing_sent(proxy, client_proxy, recorder, pki, backend):
    line, how = refused_server_case(proxy, client_proxy, recorder, pki, backend("echo"),
                                    extra=["--override-server-name", "other.example"])
    assert line["handshake.error"] == "bad_certificate" and "hostname mismatch" in line["handshake.detail"], line


def test_untrusted_server_ca_refused_nothing_sent(proxy, client_proxy, recorder, pki, backend):
    line, _ = refused_server_case(proxy, client_proxy, recorder, pki, backend("echo"), cacert=pki.other_ca)
    assert line["handshake.error"] == "unknown_ca", line


def test_server_without_expected_spiffe_id_refused(proxy, client_proxy, recorder, pki, backend):
    line, _ = refused_server_case(proxy, client_proxy, recorder, pki, backend("echo"),
                                  extra=["--verify-uri", "spiffe://example.org/x"])
    assert line["handshake.error"] == "denied" and "uri" in line["handshake.detail"], line
    assert line["tls.peer.subject"].startswith("CN=localhost")  # tls.peer.* describe the server


def test_server_with_expected_spiffe_id_admitted(proxy, client_proxy, pki, backend, spiffe_server):
    b = backend("echo")
    server = proxy(target=b.address, cert=spiffe_server.cert, key=spiffe_server.key)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-uri", "spiffe://example.org/x"])
    with socket.create_connection(("127.0.0.1", client.port), timeout=5) as s:
        s.sendall(b"hello spiffe")
        assert recv_exact(s, 12, 5) == b"hello spiffe"
    audit = client.wait_log("connection closed")
    assert "spiffe://example.org/x" in (audit.get("tls.peer.spiffe_id", "") + audit.get("tls.peer.sans", "")), audit


def test_default_name_check_admits_matching_server(proxy, client_proxy, pki, backend):
    """No --verify-* flag: the target host (127.0.0.1, an IP SAN of the server cert) is the expected name;
    --override-server-name localhost (a DNS SAN) works too."""
    b = backend("echo")
    server = proxy(target=b.address)
    for extra in ([], ["--override-server-name", "localhost"]):
        client = client_proxy(f"127.0.0.1:{server.port}", extra=extra)
        with socket.create_connection(("127.0.0.1", client.port), timeout=5) as s:
            s.sendall(b"ping")
            assert recv_exact(s, 4, 5) == b"ping"


def test_remote_down_local_connection_closed_promptly(client_proxy):
    dead = free_port()  # nothing listens here
    client = client_proxy(f"127.0.0.1:{dead}")
    how, secs = app_gets_closed(client.port, timeout=5)
    assert secs < 2.0, f"the local connection stayed open {secs:.2f}s with the remote down"
    line = client.wait_log(pred=lambda r: r.get("msg") in ("connection closed", "handshake failed"), timeout=3)
    assert line.get("handshake.error") == "target_unreachable" or "connect" in line.get("close.reason", ""), line
    # Again, several at once: each closed promptly, none left half-open.
    results = []

    def one():
        results.append(app_gets_closed(client.port, timeout=5)[1])
    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(results) == 8 and max(results) < 2.0, results


def test_pair_50mb_both_ways_sha256(proxy, client_proxy, pki, backend):
    b = backend("echo")
    server = proxy(target=b.address)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    size = 50 * 1024 * 1024
    payload = os.urandom(size)
    s = socket.create_connection(("127.0.0.1", client.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    err = []

    def send():
        try:
            view = memoryview(payload)
            for off in range(0, size, 1 << 20):
                s.sendall(view[off:off + (1 << 20)])
            s.shutdown(socket.SHUT_WR)
        except OSError as e:  # pragma: no cover - reported below
            err.append(e)
    t0 = time.monotonic()
    t = threading.Thread(target=send)
    t.start()
    h = hashlib.sha256()
    got = 0
    s.settimeout(30)
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        h.update(d)
        got += len(d)
    dt = time.monotonic() - t0
    t.join(30)
    s.close()
    assert not err, err
    assert got == size, f"got {got} of {size} bytes back"
    assert h.hexdigest() == hashlib.sha256(payload).hexdigest()
    print(f"pair: 50 MB up and 50 MB down through client+server sidecars in {dt:.2f}s "
          f"({2 * size / dt / 1e6:.0f} MB/s combined)")
    caudit = client.wait_log("connection closed", timeout=10)
    saudit = server.wait_log("connection closed", timeout=10)
    assert int(caudit["bytes.up"]) == size and int(caudit["bytes.down"]) == size, caudit
    assert int(saudit["bytes.up"]) == size and int(saudit["bytes.down"]) == size, saudit
    assert caudit["tls.version"] == "TLSv1.3" and "CN=localhost" in caudit["tls.peer.subject"]
    assert saudit["tls.peer.subject"].startswith("CN=client-allowed")
    assert caudit["close.reason"] == "done" and saudit["close.reason"] == "done"


def test_pair_half_close(proxy, client_proxy, backend):
    """App shuts down its write side; the backend sees EOF, answers after it ("BYE n"), and the app still
    receives that answer, then EOF."""
    b = backend("trailer")
    server = proxy(target=b.address)
    client = client_proxy(f"127.0.0.1:{server.port}")
    with socket.create_connection(("127.0.0.1", client.port), timeout=10) as s:
        s.sendall(b"x" * 100_000)
        s.shutdown(socket.SHUT_WR)
        data, how = read_until_closed(s, 10)
    assert how == "eof", how
    assert data == b"x" * 100_000 + b"BYE 100000\n", data[-40:]
    assert b.eofs == 1
    assert client.wait_log("connection closed")["close.reason"] == "done"
    assert server.wait_log("connection closed")["close.reason"] == "done"


def test_server_refuses_client_certificate_local_connection_closed(proxy, client_proxy, backend):
    """The other direction: the server sidecar refuses the client sidecar's certificate; the app's
    connection is closed and the backend sees nothing."""
    b = backend("echo")
    server = proxy(target=b.address)
    client = client_proxy(f"127.0.0.1:{server.port}", cred="denied")
    how, secs = app_gets_closed(client.port)
    assert secs < 3.0
    server.wait_log("handshake failed", **{"handshake.error": "denied"})
    assert b.accepted == 0


def test_remote_dies_mid_connection_local_closed_promptly(proxy, client_proxy, backend):
    """An established pair connection whose server side vanishes (SIGKILL: no close_notify, the kernel
    closes its socket): the app's connection is closed within 2 s, and new connections are closed at once."""
    import signal
    b = backend("echo")
    server = proxy(target=b.address)
    client = client_proxy(f"127.0.0.1:{server.port}")
    s = socket.create_connection(("127.0.0.1", client.port), timeout=5)
    try:
        s.sendall(b"ping")
        assert recv_exact(s, 4, 5) == b"ping"
        server.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        data, how = read_until_closed(s, 5)
        secs = time.monotonic() - t0
    finally:
        s.close()
    assert data == b"" and secs < 2.0, (how, secs)
    line = client.wait_log("connection closed", timeout=3)
    assert line["close.reason"], line
    assert app_gets_closed(client.port)[1] < 2.0


def test_client_mode_resumes_sessions_with_the_remote(proxy, client_proxy, backend):
    """The second connection through the client sidecar resumes the TLS session the first one got (no full
    handshake to the remote), and the server sidecar still admits it; after a reload of the client (which
    may have changed its CA or --verify-* rules) the server is verified in full again."""
    b = backend("echo")
    server = proxy(target=b.address)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--workers", "1"])

    def one_round_trip(n: int):
        with socket.create_connection(("127.0.0.1", client.port), timeout=10) as s:
            s.sendall(b"ping %d" % n)
            assert recv_exact(s, len(b"ping %d" % n)) == b"ping %d" % n

    for n in range(3):
        one_round_trip(n)
    wait = time.monotonic() + 10
    while len(client.logs("connection closed")) < 3 and time.monotonic() < wait:
        time.sleep(0.05)
    # Close lines come in the order connections finish tearing down: order them by connection number.
    by_id = lambda records: sorted(records, key=lambda r: int(r["conn.id"]))  # noqa: E731
    closed = by_id(client.logs("connection closed"))
    assert [r["tls.resumed"] for r in closed] == ["false", "true", "true"], closed
    assert all(r["policy.rule"] == "server-name=127.0.0.1" for r in closed)
    wait = time.monotonic() + 10
    while len(server.logs("connection closed")) < 3 and time.monotonic() < wait:
        time.sleep(0.05)
    server_side = by_id(server.logs("connection closed"))
    assert [r["tls.resumed"] for r in server_side] == ["false", "true", "true"]

    client.send_signal(signal.SIGHUP)
    client.wait_log("reloaded")
    one_round_trip(3)
    wait = time.monotonic() + 10
    while len(client.logs("connection closed")) < 4 and time.monotonic() < wait:
        time.sleep(0.05)
    assert by_id(client.logs("connection closed"))[3]["tls.resumed"] == "false"
