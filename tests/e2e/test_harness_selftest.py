"""The harness checked against reference tools (openssl s_server, redis), without the portcullis binary.

If these fail, fix the harness before believing any other failure. Run alone with `-m selftest`.
"""

import signal
import socket
import ssl
import subprocess
import time

import pytest

from harness import free_port, wait_until

pytestmark = pytest.mark.selftest


def test_selftest_pki_chains_verify(pki):
    for name in ("server", "server2", "allowed", "denied", "rsa", "p384", "ed25519", "spiffe", "two-cn",
                 "server-eku", "chained"):
        rc, out = pki.verify(name)
        assert rc == 0, f"{name}: {out}"
    rc, out = pki.verify("other-ca", pki.other_ca)
    assert rc == 0, out
    rc, out = pki.verify("other-ca")
    assert rc != 0 and "unable to get local issuer certificate" in out
    rc, out = pki.verify("expired")
    assert rc != 0 and "certificate has expired" in out
    r = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", pki.ca, pki["server-eku"].cert],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unsuitable certificate purpose" in r.stdout + r.stderr
    r = subprocess.run(["openssl", "verify", "-CApath", pki.ca_dir, pki["allowed"].cert], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["openssl", "pkey", "-in", pki["server-enc"].key, "-passin",
                        f"file:{pki['server-enc'].passphrase_file}", "-noout"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert pki["allowed"].subject_rfc2253 == "CN=client-allowed,OU=payments,O=Portcullis Test"
    assert pki["allowed"].fingerprint.startswith("sha256:") and len(pki["allowed"].fingerprint) == 71


@pytest.fixture
def s_server(pki):
    port = free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-Verify", "1", "-verify_return_error",
         "-CAfile", pki.ca, "-cert", pki["server"].cert, "-key", pki["server"].key, "-tls1_3", "-rev"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(up, 10, what="s_server")
    time.sleep(0.2)
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_selftest_tls_helpers_against_s_server(s_server, tls):
    s = tls.connect(s_server, "allowed")
    assert s.version() == "TLSv1.3"
    s.sendall(b"hello\n")
    s.settimeout(5)
    assert s.recv(100) == b"olleh\n"
    s.close()

    r = tls.refused(s_server, "other-ca")
    assert "unknown ca" in r.lower, r
    assert r.stage == "first-read", r
    r = tls.refused(s_server, None)
    assert "certificate required" in r.lower, r
    r = tls.refused(s_server, "expired")
    assert "certificate expired" in r.lower, r
    r = tls.refused(s_server, "server-eku")
    assert "unsupported certificate" in r.lower, r
    # TLS 1.2 only client against a TLS 1.3 only server: refused in the handshake itself.
    r = tls.refused(s_server, ctx=tls.ctx("allowed", max_version=ssl.TLSVersion.TLSv1_2))
    assert r.stage == "handshake", r
    # The refusal helper must notice a connection that was NOT refused.
    with pytest.raises(AssertionError, match="not refused"):
        tls.refused(s_server, "allowed", read_timeout=1)


def test_selftest_bio_client_against_s_server(s_server, tls):
    c = tls.bio(s_server, "allowed")
    assert c.version() == "TLSv1.3"
    c.send(b"abc\n")
    assert c.recv() == b"cba\n"
    c.close()


def test_selftest_redis_fixture(redis_server):
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as s:
        s.sendall(b"SET k v\r\n")
        assert s.recv(100) == b"+OK\r\n"
    pid = redis_server.pid
    redis_server.stop()
    assert redis_server.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(pid, 0)
