"""Valkey/Redis behind Portcullis (examples/valkey): the same scenario as examples/valkey/run.sh, on the
pytest fixtures. redis-server stands in for valkey-server (protocol-identical for this purpose).

  redis-cli --tls / redis-py ssl=True ──mTLS──▶ server sidecar ──▶ redis-server (loopback)
  plain redis-py ─▶ client sidecar ──mTLS──▶ server sidecar ──▶ redis-server

The checks themselves live in examples/valkey/check.py so that the example and the test cannot drift apart.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness import load_example_module

check = load_example_module("valkey")


@pytest.fixture
def certs(pki):
    return {"ca": pki.ca, "app-1": (pki["allowed"].cert, pki["allowed"].key),
            "intruder": (pki["denied"].cert, pki["denied"].key)}


@pytest.fixture
def stats(redis_server):
    s = check.ServerStats(redis_server.port)
    yield s
    s.close()


def cli(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_redis_cli_tls_admitted_and_intruder_never_reaches_server(pki, proxy, redis_server, stats):
    if not shutil.which("redis-cli"):
        pytest.fail("redis-cli is not installed (apt-get install redis-tools)")
    p = proxy(target=f"127.0.0.1:{redis_server.port}")
    base = ["--tls", "--cacert", pki.ca, "-h", "127.0.0.1", "-p", str(p.port)]
    ok = ["--cert", pki["allowed"].cert, "--key", pki["allowed"].key]
    assert cli(*base, *ok, "SET", "greeting", "hello through portcullis").stdout.strip() == "OK"
    assert cli(*base, *ok, "GET", "greeting").stdout.strip() == "hello through portcullis"

    before = stats.connections()
    r = cli(*base, "--cert", pki["denied"].cert, "--key", pki["denied"].key, "GET", "greeting")
    assert "hello" not in r.stdout, r.stdout
    assert stats.connections() == before, "the intruder's redis-cli reached redis-server"
    line = p.wait_log("handshake failed", **{"handshake.error": "denied"})
    assert "client-denied" in line["tls.peer.subject"]
    audit = p.wait_log("connection closed")
    assert audit["tls.peer.subject"].startswith("CN=client-allowed")


def test_redis_py_tls_keys_big_value_pubsub(proxy, redis_server, stats, certs):
    p = proxy(target=f"127.0.0.1:{redis_server.port}")
    r = check.tls_client(p.port, certs)
    try:
        assert "10000 values equal" in check.check_keys(r, 10_000)
        assert "equal" in check.check_big_value(r, 10 * 1024 * 1024)
    finally:
        r.close()
    assert "1000 of 1000" in check.check_pubsub(lambda: check.tls_client(p.port, certs), stats, 1000)


def test_redis_py_denied_certificate_never_reaches_server(proxy, redis_server, stats, certs):
    p = proxy(target=f"127.0.0.1:{redis_server.port}")
    line = check.check_refused(
        lambda: check.tls_client(p.port, certs, "intruder", retry=check.Retry(check.NoBackoff(), 0)),
        stats, "redis-py as intruder")
    assert "refused" in line
    assert p.logs("handshake failed", **{"handshake.error": "denied"})
    assert not p.logs("connection closed"), "an intruder connection was relayed"


def test_pair_plain_redis_py_through_client_and_server_sidecars(proxy, client_proxy, redis_server, stats, certs):
    server = proxy(target=f"127.0.0.1:{redis_server.port}")
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    r = check.plain_client(client.port)
    try:
        assert "10000 values equal" in check.check_keys(r, 10_000)
        assert "equal" in check.check_big_value(r, 10 * 1024 * 1024)
    finally:
        r.close()
    assert "1000 of 1000" in check.check_pubsub(lambda: check.plain_client(client.port), stats, 1000)
    # The server sidecar saw the client sidecar's certificate; the client sidecar saw the server's.
    audit = server.wait_log("connection closed")
    assert audit["tls.peer.subject"].startswith("CN=client-allowed")
    caudit = client.wait_log("connection closed")
    assert "CN=localhost" in caudit["tls.peer.subject"]


def test_pair_denied_client_certificate_never_reaches_server(proxy, client_proxy, redis_server, stats):
    server = proxy(target=f"127.0.0.1:{redis_server.port}")
    client = client_proxy(f"127.0.0.1:{server.port}", cred="denied", extra=["--verify-dns", "localhost"])
    line = check.check_refused(lambda: check.plain_client(client.port, retry=check.Retry(check.NoBackoff(), 0)),
                               stats, "plain redis-py via a client sidecar holding the intruder certificate")
    assert "refused" in line
    server.wait_log("handshake failed", **{"handshake.error": "denied"})
