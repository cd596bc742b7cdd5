"""Relaying: bytes in both directions, half-close, targets, interop with real clients, the audit line."""

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import echo_roundtrip, free_port, peer_cn, read_until_closed, recv_exact


def test_echo_roundtrip_sizes(proxy, tls):
    p = proxy()
    s = tls.connect(p.port)
    try:
        assert s.version() == "TLSv1.3"
        for size in (1, 2, 100, 1400, 16383, 16384, 16385, 65536, 300_000, 1_048_577):
            payload = os.urandom(size)
            assert echo_roundtrip(s, payload) == payload, f"size {size}"
    finally:
        s.close()


def test_many_sequential_connections(proxy, tls):
    p = proxy()
    ctx = tls.ctx("allowed")
    for i in range(30):
        with tls.connect(p.port, ctx=ctx) as s:
            assert echo_roundtrip(s, b"conn %d\n" % i) == b"conn %d\n" % i
    assert p.alive()


def test_concurrent_connections_with_two_workers(proxy, tls):
    p = proxy(extra=["--workers", "2"])
    ctx = tls.ctx("allowed")
    errors = []

    def one(i):
        try:
            for j in range(5):
                with tls.connect(p.port, ctx=ctx) as s:
                    msg = os.urandom(2000 + i * 7 + j)
                    assert echo_roundtrip(s, msg) == msg
        except Exception as e:  # noqa: BLE001
            errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_audit_line_fields(proxy, tls, pki):
    p = proxy()
    s = tls.connect(p.port)
    peer = "127.0.0.1:%d" % s.getsockname()[1]
    cipher = s.cipher()[0]
    up = os.urandom(1000)
    assert echo_roundtrip(s, up) == up
    s.sendall(b"x" * 234)
    recv_exact(s, 234)
    s.close()
    rec = p.wait_log("connection closed", timeout=5, **{"conn.peer": peer})
    for k, v in rec.items():
        if k not in ("ts", "level", "msg"):
            assert isinstance(v, str), f"{k} is {type(v).__name__}, want a JSON string: {rec}"
    assert rec["level"] == "info"
    assert rec["ts"]
    assert rec["conn.id"]
    assert rec["tls.version"] == "TLSv1.3"
    assert rec["tls.cipher"] == cipher
    assert rec["tls.resumed"] == "false"
    assert rec["tls.peer.subject"] == "CN=client-allowed,OU=payments,O=Portcullis Test"
    assert "client.payments.example.org" in rec["tls.peer.sans"]
    assert "10.1.2.3" in rec["tls.peer.sans"]
    assert rec["tls.peer.fingerprint"] == pki["allowed"].fingerprint
    assert "tls.peer.spiffe_id" not in rec or rec["tls.peer.spiffe_id"] == ""
    assert rec["policy.rule"] == "cn=client-allowed"
    assert rec["bytes.up"] == "1234"
    assert rec["bytes.down"] == "1234"
    assert int(rec["conn.duration_ms"]) >= 0
    assert rec["close.reason"]
    # exactly one audit line for this connection
    assert len(p.logs("connection closed", **{"conn.peer": peer})) == 1


@pytest.mark.parametrize("how", ["tcp-fin", "close-notify"])
def test_half_close_propagates(proxy, tls, backend, how):
    """Client stops writing -> target sees EOF -> target's remaining response still reaches the client."""
    b = backend("trailer")
    p = proxy(target=b.address)
    c = tls.bio(p.port)
    try:
        c.send(b"hello half-close\n")
        got = b""
        while len(got) < 17:
            got += c.recv()
        assert got == b"hello half-close\n"
        if how == "tcp-fin":
            c.shutdown_write()
        else:
            c.send_close_notify()
        assert b.eof_event.wait(5), "target never saw EOF after the client half-closed"
        rest = c.read_all(timeout=5)
        assert rest == b"BYE 17\n"
    finally:
        c.close()


def test_close_timeout_ends_half_closed_connection(proxy, tls, backend):
    """Client half-closes, target never finishes: --close-timeout bounds how long the rest may stay open."""
    b = backend("hold")
    p = proxy(target=b.address, extra=["--close-timeout", "1s"])
    c = tls.bio(p.port)
    try:
        c.send(b"x")
        assert c.recv() == b"x"
        c.send_close_notify()
        assert b.eof_event.wait(5), "target never saw EOF"
        t0 = time.monotonic()
        try:
            c.read_all(timeout=8)
        except ssl.SSLError:
            pass
        elapsed = time.monotonic() - t0
    finally:
        c.close()
    assert elapsed < 5, f"half-closed connection lingered {elapsed:.1f}s with --close-timeout 1s"
    p.wait_log("connection closed", timeout=5)


def test_client_with_intermediate_chain(proxy, tls):
    """The client sends leaf + intermediate; only the root is in --cacert."""
    p = proxy(allow=["--allow-cn", "client-chained"])
    with tls.connect(p.port, "chained") as s:
        assert echo_roundtrip(s, b"chain") == b"chain"
    rec = p.wait_log("connection closed", timeout=5)
    assert rec["tls.peer.subject"] == "CN=client-chained,O=Portcullis Test", rec


def test_target_close_propagates_to_client_with_close_notify(proxy, tls, backend):
    """Target speaks first and closes -> client gets the bytes, then a clean TLS end (close_notify)."""
    b = backend("banner")
    p = proxy(target=b.address)
    with tls.connect(p.port, suppress_ragged_eofs=False) as s:
        data, how = read_until_closed(s, timeout=5)
    assert data == b"HELLO FROM TARGET\n"
    assert how == "eof", f"stream ended with {how}, want close_notify then EOF"


def test_backend_down_closes_client(proxy, tls):
    dead = f"127.0.0.1:{free_port()}"
    p = proxy(target=dead, extra=["--connect-timeout", "2s"])
    s = tls.connect(p.port)
    peer = "127.0.0.1:%d" % s.getsockname()[1]
    try:
        s.sendall(b"anyone there?")
    except OSError:
        pass
    data, how = read_until_closed(s, timeout=6)
    s.close()
    assert data == b"", f"got {data!r} from a dead target ({how})"
    rec = p.wait_log("connection closed", timeout=5, **{"conn.peer": peer})
    assert rec["close.reason"].startswith("target connect failed"), rec
    assert p.alive()


def test_unix_socket_target(proxy, tls, backend):
    b = backend("echo", unix=True)
    p = proxy(target=b.address)
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"over a unix socket\n") == b"over a unix socket\n"
    assert b.accepted == 1


def test_session_resumption_works(proxy, tls):
    p = proxy()
    ctx = tls.ctx("allowed")
    s1 = tls.connect(p.port, ctx=ctx)
    assert echo_roundtrip(s1, b"first") == b"first"  # reading lets the TLS 1.3 tickets arrive
    sess = s1.session
    s1.close()
    assert sess is not None and sess.has_ticket, "server sent no session ticket"
    s2 = tls.connect(p.port, ctx=ctx, session=sess)
    peer2 = "127.0.0.1:%d" % s2.getsockname()[1]
    assert echo_roundtrip(s2, b"second") == b"second"
    assert s2.session_reused, "second connection was not resumed"
    s2.close()
    rec = p.wait_log("connection closed", timeout=5, **{"conn.peer": peer2})
    assert rec["tls.resumed"] == "true", rec
    assert rec["tls.peer.subject"] == "CN=client-allowed,OU=payments,O=Portcullis Test", rec
    assert rec["policy.rule"] == "cn=client-allowed", rec


@pytest.mark.parametrize("cred,cn", [("rsa", "client-rsa"), ("p384", "client-p384"),
                                     ("ed25519", "client-ed25519")])
def test_rsa_ecdsa_ed25519_clients(proxy, tls, cred, cn):
    p = proxy(allow=["--allow-cn", cn])
    with tls.connect(p.port, cred) as s:
        assert echo_roundtrip(s, b"key type %s" % cred.encode()) == b"key type %s" % cred.encode()
    rec = p.wait_log("connection closed", timeout=5)
    assert rec["policy.rule"] == f"cn={cn}"
    # and the other key types' CNs are not admitted by this rule
    assert tls.refused(p.port, "allowed")


def test_encrypted_key_with_passphrase_file(proxy, tls, pki):
    enc = pki["server-enc"]
    p = proxy(key=enc.key, extra=["--key-passphrase-file", enc.passphrase_file])
    with tls.connect(p.port) as s:
        assert peer_cn(s) == "localhost"
        assert echo_roundtrip(s, b"secret") == b"secret"


def test_cacert_directory(proxy, tls, pki):
    p = proxy(cacert=pki.ca_dir)
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"dir") == b"dir"
    assert tls.refused(p.port, "other-ca")


def test_tls12_refused_by_default_and_allowed_with_min_tls_12(proxy, tls):
    ctx12 = tls.ctx("allowed", max_version=ssl.TLSVersion.TLSv1_2)
    p = proxy()
    r = tls.refused(p.port, ctx=ctx12)
    assert r.stage == "handshake", r
    p2 = proxy(extra=["--min-tls", "1.2"])
    with tls.connect(p2.port, ctx=ctx12) as s:
        assert s.version() == "TLSv1.2"
        peer = "127.0.0.1:%d" % s.getsockname()[1]
        assert echo_roundtrip(s, b"twelve") == b"twelve"
    rec = p2.wait_log("connection closed", timeout=5, **{"conn.peer": peer})
    assert rec["tls.version"] == "TLSv1.2"
    # TLS 1.2 refusals happen inside the handshake
    r = tls.refused(p2.port, ctx=tls.ctx("denied", max_version=ssl.TLSVersion.TLSv1_2))
    assert r.stage == "handshake", r
    # and TLS 1.3 still works with --min-tls 1.2
    with tls.connect(p2.port) as s:
        assert s.version() == "TLSv1.3"


def test_openssl_s_client_interop(proxy, pki):
    p = proxy()
    c = pki["allowed"]
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{p.port}", "-servername", "localhost",
         "-cert", c.cert, "-key", c.key, "-CAfile", pki.ca, "-verify_return_error", "-verify_hostname", "localhost",
         "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
        reader.start()
        proc.stdin.write(b"hello from s_client\n")
        proc.stdin.flush()
        reader.join(10)
        assert out and out[0] == b"hello from s_client\n", f"s_client got {out!r}"
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    rec = p.wait_log("connection closed", timeout=5)
    assert rec["tls.peer.subject"].startswith("CN=client-allowed")


def test_redis_cli_tls_set_get(proxy, pki, redis_server):
    if not shutil.which("redis-cli"):
        pytest.fail("redis-cli is not installed (apt-get install redis-tools)")
    p = proxy(target=f"127.0.0.1:{redis_server.port}")
    c = pki["allowed"]
    base = ["redis-cli", "--tls", "--cert", c.cert, "--key", c.key, "--cacert", pki.ca, "--sni", "localhost",
            "-h", "127.0.0.1", "-p", str(p.port)]
    value = "portcullis-%d" % os.getpid()
    r = subprocess.run(base + ["SET", "e2e:key", value], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
    r = subprocess.run(base + ["GET", "e2e:key"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.strip() == value, r.stdout + r.stderr
    # the value really is in redis (read directly, bypassing the proxy)
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as s:
        s.sendall(b"GET e2e:key\r\n")
        assert s.recv(200) == b"$%d\r\n%s\r\n" % (len(value), value.encode())
    # and a denied client gets nothing from redis
    d = pki["denied"]
    r = subprocess.run(["redis-cli", "--tls", "--cert", d.cert, "--key", d.key, "--cacert", pki.ca, "--sni",
                        "localhost", "-h", "127.0.0.1", "-p", str(p.port), "GET", "e2e:key"],
                       capture_output=True, text=True, timeout=20)
    assert value not in r.stdout


def test_idle_timeout(proxy, tls):
    p = proxy(extra=["--idle-timeout", "1s"])
    s = tls.connect(p.port)
    peer = "127.0.0.1:%d" % s.getsockname()[1]
    # activity keeps it open past the timeout
    for _ in range(4):
        assert echo_roundtrip(s, b"tick") == b"tick"
        time.sleep(0.4)
    t0 = time.monotonic()
    data, how = read_until_closed(s, timeout=6)
    elapsed = time.monotonic() - t0
    s.close()
    assert data == b""
    assert 0.5 <= elapsed <= 5, f"idle connection closed after {elapsed:.1f}s ({how})"
    rec = p.wait_log("connection closed", timeout=5, **{"conn.peer": peer})
    assert rec["close.reason"], rec


def test_connections_quiet_past_the_buffer_sweep_keep_relaying(proxy, tls):
    """Connections quiet for 1 s give OpenSSL's record buffers back (the worker's sweep, every second); both a connection
    that went quiet and one that was mid-stream carry on intact afterwards, in both directions."""
    p = proxy()
    quiet = tls.connect(p.port)
    assert echo_roundtrip(quiet, b"before") == b"before"
    busy = tls.connect(p.port)
    payload = os.urandom(1 << 20)
    stop = time.monotonic() + 2.5
    while time.monotonic() < stop:                 # keeps one connection busy across the sweeps
        assert echo_roundtrip(busy, payload[:65536]) == payload[:65536]
        time.sleep(0.2)
    assert echo_roundtrip(quiet, b"after the sweep") == b"after the sweep"
    quiet.sendall(payload)
    assert recv_exact(quiet, len(payload), timeout=20) == payload
    assert echo_roundtrip(busy, b"still") == b"still"
    quiet.close()
    busy.close()
