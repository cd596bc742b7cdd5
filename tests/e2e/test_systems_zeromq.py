"""ZeroMQ through a Portcullis pair (examples/zeromq), the same scenario as examples/zeromq/run.sh.

  REQ ─▶ client sidecar ──mTLS──▶ server sidecar ─▶ REP (bound on loopback)
  SUB ─▶ client sidecar ──mTLS──▶ server sidecar ─▶ PUB (bound on loopback)

The checks live in examples/zeromq/check.py (pyzmq).
"""

from __future__ import annotations

import signal

import pytest

from harness import free_port, load_example_module, wait_until

check = load_example_module("zeromq")
SERVER_FLAGS = ["--shutdown-timeout", "1s"]  # ZMTP connections never end on their own: keep drains short


@pytest.fixture
def zctx():
    zmq = pytest.importorskip("zmq", reason="pyzmq is not installed (scripts/install-deps test)")
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def rep(zctx):
    r = check.RepServer(free_port(), zctx)
    yield r
    r.close()


def test_reqrep_10000_through_the_pair(proxy, client_proxy, rep, zctx):
    server = proxy(target=f"127.0.0.1:{rep.port}", extra=SERVER_FLAGS)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    line = check.check_reqrep(client.port, 10_000, zctx)
    assert "10000 of 10000" in line
    assert rep.served == 10_000


def test_pubsub_100000_counted_through_the_pair(proxy, client_proxy, zctx):
    pub_port = free_port()
    server = proxy(target=f"127.0.0.1:{pub_port}", extra=SERVER_FLAGS)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    assert "100000 of 100000" in check.check_pubsub(pub_port, client.port, 100_000, zctx)


def test_refused_client_certificate_reaches_no_zeromq_peer(proxy, client_proxy, rep, zctx):
    server = proxy(target=f"127.0.0.1:{rep.port}", extra=SERVER_FLAGS)
    client = client_proxy(f"127.0.0.1:{server.port}", cred="denied", extra=["--verify-dns", "localhost"])
    check.check_refused(rep, client.port, zctx, wait_s=1.5)
    server.wait_log("handshake failed", **{"handshake.error": "denied"})
    assert not server.logs("connection closed")


def test_server_sidecar_restart_mid_stream_zeromq_reconnects(proxy, client_proxy, rep, zctx):
    server = proxy(target=f"127.0.0.1:{rep.port}", extra=SERVER_FLAGS)
    client = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    replacement = []

    def restart():
        server.send_signal(signal.SIGTERM)
        server.wait(15)  # drains for up to 1 s, then cuts the ZMTP connection (exit code 1)
        replacement.append(proxy(target=f"127.0.0.1:{rep.port}", extra=SERVER_FLAGS, port=server.port))

    line = check.check_restart(client.port, restart, before=200, after=200, ctx=zctx)
    assert ", 200 after" in line, line
    # The old sidecar drained for its 1 s and then cut the ZMTP connection (exit code 1: connections were cut).
    assert server.proc.returncode == 1, server.tail()
    assert server.logs("connection closed", **{"close.reason": "shutdown timeout"}), server.tail()
    # The replacement relayed the reconnected ZMTP connection (its audit line comes when the REQ closes).
    assert replacement
    audit = replacement[0].wait_log("connection closed", timeout=5)
    assert audit["tls.peer.subject"].startswith("CN=client-allowed") and int(audit["bytes.up"]) > 0
    # The client sidecar closed the app's connection when the server went away, then relayed the new one.
    wait_until(lambda: len(client.logs("connection closed")) >= 2, 5, what="two closed connections on the client")
