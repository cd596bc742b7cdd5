"""Who is refused, how (a TLS alert inside the handshake), and what the log and the target see."""

import os
import socket
import ssl
import time

import pytest

from harness import echo_roundtrip, read_until_closed


def _client_hello(tls) -> bytes:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls.ctx("allowed").wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello


def test_rejects_client_without_certificate(proxy, tls):
    p = proxy()
    r = tls.refused(p.port, None)
    assert "certificate required" in r.lower, r


def test_rejects_untrusted_ca(proxy, tls):
    p = proxy()
    r = tls.refused(p.port, "other-ca")
    assert "unknown ca" in r.lower, r


def test_rejects_expired_client(proxy, tls):
    p = proxy()
    r = tls.refused(p.port, "expired")
    assert "certificate expired" in r.lower, r


def test_rejects_not_allowlisted_with_alert(proxy, tls):
    p = proxy()
    r = tls.refused(p.port, "denied")
    assert "access denied" in r.lower or "certificate unknown" in r.lower, \
        f"want alert access_denied or certificate_unknown, got {r}"


def test_rejects_two_common_names(proxy, tls):
    # The certificate says CN=client-allowed and CN=evil: ambiguous, so no CN rule may admit it.
    p = proxy(allow=["--allow-cn", "client-allowed", "--allow-cn", "evil"])
    r = tls.refused(p.port, "two-cn")
    assert "alert" in r.lower, f"want a TLS alert, got {r}"
    with tls.connect(p.port, "allowed") as s:
        assert echo_roundtrip(s, b"ok") == b"ok"


def test_rejects_client_without_clientauth_eku(proxy, tls):
    p = proxy(allow=["--allow-all"])
    r = tls.refused(p.port, "server-eku")
    assert "alert" in r.lower, f"want a TLS alert, got {r}"
    with tls.connect(p.port, "allowed") as s:
        assert echo_roundtrip(s, b"ok") == b"ok"


REFUSED = [None, "other-ca", "expired", "denied", "two-cn", "server-eku"]


def test_target_sees_no_connection_for_refused_peers(proxy, tls, backend):
    b = backend("echo")
    p = proxy(target=b.address)
    seen = {}
    for cred in REFUSED:
        seen[cred] = tls.refused(p.port, cred)
    # refused clients that write at once (before they learn of the refusal) must not reach the target either
    for cred in REFUSED:
        raw = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        try:
            s = tls.ctx(cred).wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"SECRET PAYLOAD\n")
            read_until_closed(s, timeout=3)
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()
    # a TLS 1.2 client (refused by version) and a plaintext one
    tls.refused(p.port, ctx=tls.ctx("allowed", max_version=ssl.TLSVersion.TLSv1_2))
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        read_until_closed(s, timeout=5)
    time.sleep(0.3)
    assert b.accepted == 0, f"target accepted {b.accepted} connection(s) from refused peers: {seen}"
    assert b.bytes_in == 0
    with tls.connect(p.port, "allowed") as s:
        assert echo_roundtrip(s, b"hi") == b"hi"
    assert b.accepted == 1


@pytest.mark.parametrize("cred,error", [
    (None, {"no_certificate"}),
    ("other-ca", {"unknown_ca"}),
    ("expired", {"expired"}),
    ("denied", {"denied"}),
    ("two-cn", {"denied", "bad_certificate"}),
    ("server-eku", {"bad_certificate", "denied"}),
], ids=["no-cert", "other-ca", "expired", "denied", "two-cn", "server-eku"])
def test_handshake_failure_logged_with_error_class(proxy, tls, cred, error):
    p = proxy()
    tls.refused(p.port, cred)
    rec = p.wait_log("handshake failed", timeout=5)
    assert rec.get("handshake.error") in error, rec
    assert rec.get("conn.peer", "").startswith("127.0.0.1:"), rec
    assert rec.get("handshake.detail"), rec
    assert not p.logs("connection closed"), "a refused peer must not get a 'connection closed' audit line"


def test_denial_logged_with_reason(proxy, tls, pki):
    p = proxy()
    r = tls.refused(p.port, "denied")
    rec = p.wait_log("handshake failed", timeout=5)
    assert rec["handshake.error"] == "denied", rec
    assert rec["handshake.detail"].startswith("denied: no rule matched"), rec
    assert "client-denied" in rec["handshake.detail"] or "closest" in rec["handshake.detail"], rec
    assert rec["tls.peer.subject"] == pki["denied"].subject_rfc2253, rec
    assert rec["level"] in ("info", "notice", "warning", "error"), rec
    # the refused peer is told nothing beyond the alert
    assert "no rule matched" not in r.text


def test_garbage_and_plaintext_http_close_only_that_connection(proxy, tls):
    p = proxy(extra=["--handshake-timeout", "3s"])
    good = tls.connect(p.port)
    assert echo_roundtrip(good, b"before") == b"before"
    bad_inputs = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        os.urandom(4096),
        b"\x16\x03\x01\xff\xff" + os.urandom(200),  # TLS record header claiming 64 KiB
        b"\x16\x03\x03\x00\x05\x01\x00\x00\x01\x00",  # handshake message with nonsense length
        b"\x00" * 10000,
    ]
    for data in bad_inputs:
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            try:
                s.sendall(data)
            except OSError:
                pass
            t0 = time.monotonic()
            got, how = read_until_closed(s, timeout=5)
            assert time.monotonic() - t0 < 5
            assert b"HTTP" not in got
    assert p.alive()
    assert echo_roundtrip(good, b"after") == b"after"
    good.close()
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"new") == b"new"


def test_truncated_client_hello(proxy, tls):
    p = proxy(extra=["--handshake-timeout", "1s"])
    hello = _client_hello(tls)
    # half a ClientHello, then the client goes away
    for cut in (1, 5, len(hello) // 2, len(hello) - 1):
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(hello[:cut])
    # half a ClientHello, then the client waits: the handshake deadline must close it
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(hello[: len(hello) // 2])
        t0 = time.monotonic()
        read_until_closed(s, timeout=6)
        assert time.monotonic() - t0 < 5
    assert p.alive()
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"still fine") == b"still fine"


def test_handshake_timeout(proxy, tls):
    p = proxy(extra=["--handshake-timeout", "1s"])
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        peer = "127.0.0.1:%d" % s.getsockname()[1]
        t0 = time.monotonic()
        data, how = read_until_closed(s, timeout=8)
        elapsed = time.monotonic() - t0
    assert data == b"" or data[:1] == b"\x15", data  # nothing, or an alert record
    assert 0.7 <= elapsed <= 4, f"silent connection closed after {elapsed:.2f}s, want about 1s"
    rec = p.wait_log("handshake failed", timeout=5)
    assert rec["handshake.error"] == "timeout", rec
    assert rec["conn.peer"] == peer, rec
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"ok") == b"ok"


def test_handshake_failure_log_is_rate_limited(proxy, tls):
    """A flood of bad clients must not flood the log (the 'handshake failed' line is rate-limited)."""
    p = proxy()
    n = 200
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                s.recv(100)
            except OSError:
                pass
    time.sleep(0.5)
    lines = len(p.logs("handshake failed"))
    assert 1 <= lines < n, f"{lines} 'handshake failed' lines for {n} bad clients"
    assert p.alive()
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"ok") == b"ok"
