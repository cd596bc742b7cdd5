"""Signals (SIGHUP reload, SIGTERM/SIGINT drain), connection limits, and surviving abusive peers."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import echo_roundtrip, peer_cn, read_until_closed, run_portcullis_once, wait_until


@pytest.fixture
def server_files(pki, tmp_path):
    """Copies of the server cert/key that a test may overwrite."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki["server"].cert, cert)
    shutil.copy(pki["server"].key, key)
    return cert, key


def _replace(dst, src):
    """Replace dst atomically (write a temp file, rename over)."""
    tmp = f"{dst}.new"
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


def test_sighup_reload_keeps_open_connection(proxy, tls, pki, server_files):
    cert, key = server_files
    p = proxy(cert=str(cert), key=str(key))
    old = tls.connect(p.port)
    assert peer_cn(old) == "localhost"
    assert echo_roundtrip(old, b"before reload") == b"before reload"

    _replace(key, pki["server2"].key)
    _replace(cert, pki["server2"].cert)
    p.send_signal(signal.SIGHUP)

    def new_cn():
        with tls.connect(p.port) as s:
            assert echo_roundtrip(s, b"x") == b"x"
            return peer_cn(s) == "portcullis-reloaded"

    wait_until(new_cn, 5, interval=0.2, what="a new connection to present the reloaded certificate")
    assert echo_roundtrip(old, b"after reload") == b"after reload"
    old.close()
    assert p.alive()
    assert not p.logs(pred=lambda r: r.get("level") == "error"), "reload logged an error"


@pytest.mark.parametrize("breakage", ["garbage-cert", "mismatched-key", "missing-cert"])
def test_sighup_broken_file_keeps_old_material(proxy, tls, pki, server_files, breakage):
    cert, key = server_files
    p = proxy(cert=str(cert), key=str(key))
    old = tls.connect(p.port)
    assert echo_roundtrip(old, b"one") == b"one"
    if breakage == "garbage-cert":
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    elif breakage == "mismatched-key":
        _replace(cert, pki["server2"].cert)  # key stays the old one: pair does not match
    else:
        cert.unlink()
    p.send_signal(signal.SIGHUP)
    rec = p.wait_log(timeout=5, pred=lambda r: r.get("level") == "error" and "reload" in r.get("msg", "").lower())
    assert rec
    time.sleep(0.2)
    assert p.alive(), "a broken file on reload must not stop the proxy"
    with tls.connect(p.port) as s:
        assert peer_cn(s) == "localhost", "old certificate should still be served"
        assert echo_roundtrip(s, b"two") == b"two"
    assert echo_roundtrip(old, b"three") == b"three"
    old.close()


def test_sighup_reloads_ca(proxy, tls, pki, tmp_path):
    """A CA bundle swapped on disk takes effect for new handshakes after SIGHUP."""
    ca = tmp_path / "ca.pem"
    shutil.copy(pki.ca, ca)
    p = proxy(cacert=str(ca), allow=["--allow-cn", "client-allowed"])
    assert tls.refused(p.port, "other-ca")
    ca.write_text(open(pki.ca).read() + open(pki.other_ca).read())
    p.send_signal(signal.SIGHUP)

    def other_ok():
        try:
            with tls.connect(p.port, "other-ca") as s:
                return echo_roundtrip(s, b"x", timeout=2) == b"x"
        except (ssl.SSLError, OSError, AssertionError):
            return False

    wait_until(other_ok, 5, interval=0.2, what="the client from the newly trusted CA to be admitted")


def test_sigterm_drains_open_connection(proxy, tls):
    p = proxy(extra=["--shutdown-timeout", "10s"])
    s = tls.connect(p.port)
    assert echo_roundtrip(s, b"before") == b"before"
    p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert p.alive(), "exited with a connection still open"
    assert echo_roundtrip(s, b"during drain") == b"during drain"
    # no new connections while draining
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        with tls.connect(p.port, timeout=2) as n:
            echo_roundtrip(n, b"new", timeout=2)
    s.close()
    rc = p.wait(timeout=5)
    assert rc == 0, f"exit code {rc} after a clean drain\n{p.tail()}"


def test_sigint_with_no_connections_exits_zero(proxy):
    p = proxy()
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=5) == 0


def test_sigterm_cuts_after_shutdown_timeout_nonzero_exit(proxy, tls):
    p = proxy(extra=["--shutdown-timeout", "1s"])
    s = tls.connect(p.port)
    assert echo_roundtrip(s, b"hold") == b"hold"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=8)
    elapsed = time.monotonic() - t0
    assert rc != 0 and rc > 0, f"exit code {rc}, want non-zero (connections were cut)"
    assert 0.8 <= elapsed <= 5, f"exited {elapsed:.1f}s after SIGTERM with --shutdown-timeout 1s"
    read_until_closed(s, timeout=3)  # the cut connection is closed, not left hanging
    s.close()


def test_max_concurrent_conns(proxy, tls):
    """At the limit a third client is held (TCP accepted by the kernel, no handshake) until a slot frees."""
    from test_ghostunnel_limits import PendingHandshake

    p = proxy(extra=["--max-concurrent-conns", "2", "--workers", "1"])
    a, b = tls.connect(p.port), tls.connect(p.port)
    assert echo_roundtrip(a, b"a") == b"a"
    assert echo_roundtrip(b, b"b") == b"b"
    c = PendingHandshake(p.port, tls.ctx("allowed"))
    assert not c.answered_within(1.5), "a third connection got a handshake at the limit"
    assert echo_roundtrip(a, b"a2") == b"a2"
    assert echo_roundtrip(b, b"b2") == b"b2"
    a.close()
    assert c.answered_within(5), "the held connection was not served after a slot freed"
    assert c.finish(b"c") == b"c"
    c.close()
    b.close()


def test_sigpipe_does_not_kill(proxy, tls, backend):
    """Peers that reset mid-transfer (SO_LINGER 0) on either side must not kill the process."""
    b = backend("echo")
    p = proxy(target=b.address)
    blob = os.urandom(1 << 20)
    # clients reset while the proxy is writing to them
    for _ in range(6):
        s = tls.connect(p.port)
        try:
            s.sendall(blob)
            s.recv(1000)
        except OSError:
            pass
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # the target resets while the proxy is writing to it
    conns = []
    for _ in range(3):
        s = tls.connect(p.port)
        conns.append(s)
        s.sendall(b"z" * 200_000)
    time.sleep(0.3)
    b.reset_all()

    def pump(s):
        try:
            s.settimeout(2)
            for _ in range(20):
                s.sendall(b"y" * 65536)
        except OSError:
            pass

    ts = [threading.Thread(target=pump, args=(s,)) for s in conns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    for s in conns:
        s.close()
    time.sleep(0.5)
    assert p.alive(), f"portcullis died: rc={p.proc.returncode}\n{p.tail()}"
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"alive") == b"alive"


def test_workers_share_port_without_stale_instances(proxy, tls):
    """--workers 2 binds the port twice with SO_REUSEPORT; a second proxy on the same port must be refused
    (pitfall 19), not silently share it."""
    p = proxy(extra=["--workers", "2"])
    for i in range(10):
        with tls.connect(p.port) as s:
            assert echo_roundtrip(s, b"w%d" % i) == b"w%d" % i
    try:
        r = run_portcullis_once(["server", "--listen", f"127.0.0.1:{p.port}", "--target", "127.0.0.1:9",
                                 "--cert", p.args[p.args.index("--cert") + 1],
                                 "--key", p.args[p.args.index("--key") + 1],
                                 "--cacert", p.args[p.args.index("--cacert") + 1], "--allow-all"], timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("a second instance started on the same port and shares it (SO_REUSEPORT, pitfall 19)")
    assert r.returncode != 0, "a second instance bound the same port"
    assert "--listen" in r.stderr, r.stderr
