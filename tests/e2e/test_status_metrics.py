"""The status endpoint: /metrics (exact counter values after a known sequence), /healthz, /readyz (flips
with the target), /status, robustness against malformed and slow requests, and quiet handshake logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import time

import pytest

from harness import (Backend, ConfigFile, echo_roundtrip, expect_refused, free_port, listener_config, start_run,
                     stop_all, tls_connect, wait_until)


# --- a minimal HTTP client (stdlib http.client would hide malformed-request handling) ---------------

def http_raw(port_or_path, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes."""
    if isinstance(port_or_path, int):
        s = socket.create_connection(("127.0.0.1", port_or_path), timeout=timeout)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(port_or_path)
    try:
        s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def http_get(port_or_path, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    raw = http_raw(port_or_path, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert int(headers["content-length"]) == (len(body) if method != "HEAD" else int(headers["content-length"]))
    return status, headers, body


def scrape(port) -> dict[str, float]:
    """`name{labels}` -> value, labels sorted as the exposition gives them."""
    status, headers, body = http_get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        values[key] = float(value)
    return values


def metric(values: dict, name: str, **labels) -> float:
    """The value of one series; labels must match exactly (order-insensitive)."""
    want = {k: str(v) for k, v in labels.items()}
    for key, value in values.items():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?", key)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == want:
            return value
    raise KeyError(f"{name}{want} not in metrics:\n" + "\n".join(k for k in values if k.startswith(name)))


@pytest.fixture
def started(request):
    procs = []
    yield procs
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(procs, failed)
    assert not problems, problems


def run_with_status(tmp_path, started, pki, target: str, *, status=None, rules=None, **top):
    port = free_port()
    status = status or f"127.0.0.1:{free_port()}"
    cfg = ConfigFile(tmp_path / "portcullis.yaml",
                     [listener_config(pki, "payments", port, target,
                                      rules=rules or [{"name": "payments-team", "cn": "client-allowed"}])],
                     status={"listen": status}, **top)
    p = start_run(cfg)
    started.append(p)
    p.wait_listening()
    p.wait_log("status endpoint listening")
    status_addr = int(status.rsplit(":", 1)[1]) if not status.startswith("unix:") else status[5:]
    return p, port, status_addr, cfg


def test_metrics_count_a_known_sequence_exactly(tmp_path, started, pki, tls, backend):
    b = backend("echo")
    p, port, sport, _ = run_with_status(tmp_path, started, pki, b.address)

    for _ in range(3):                                   # 3 admitted, 100 bytes each way
        s = tls.connect(port, "allowed")
        assert echo_roundtrip(s, b"x" * 100) == b"x" * 100
        s.close()
    for _ in range(2):                                   # 2 denied by policy
        tls.refused(port, "denied")
    tls.refused(port, "other-ca")                        # unknown CA
    tls.refused(port, "expired")                         # expired
    tls.refused(port, None)                              # no certificate
    socket.create_connection(("127.0.0.1", port)).close()  # a TCP health check: peer closed

    wait_until(lambda: metric(scrape(sport), "portcullis_connections_active", listener="payments") == 0
               and sum(v for k, v in scrape(sport).items() if k.startswith("portcullis_connections_closed_total")) == 9,
               timeout=10, what="all 9 connections closed")
    m = scrape(sport)
    L = {"listener": "payments"}
    assert metric(m, "portcullis_connections_accepted_total", **L) == 9
    assert metric(m, "portcullis_connections_closed_total", reason="normal", **L) == 3
    assert metric(m, "portcullis_connections_closed_total", reason="handshake_failed", **L) == 6
    assert metric(m, "portcullis_connections_closed_total", reason="target_connect_failed", **L) == 0
    assert metric(m, "portcullis_handshakes_total", result="full", **L) == 3
    assert metric(m, "portcullis_handshakes_total", result="resumed", **L) == 0
    assert metric(m, "portcullis_handshakes_total", result="failed", **L) == 6
    assert metric(m, "portcullis_handshake_failures_total", reason="denied", **L) == 2
    assert metric(m, "portcullis_handshake_failures_total", reason="unknown_ca", **L) == 1
    assert metric(m, "portcullis_handshake_failures_total", reason="expired", **L) == 1
    assert metric(m, "portcullis_handshake_failures_total", reason="no_certificate", **L) == 1
    assert metric(m, "portcullis_handshake_failures_total", reason="peer_closed", **L) == 1
    assert metric(m, "portcullis_handshake_failures_total", reason="timeout", **L) == 0
    assert metric(m, "portcullis_policy_decisions_total", decision="allow", rule="payments-team", **L) == 3
    assert metric(m, "portcullis_policy_decisions_total", decision="deny", rule="", **L) == 2
    assert metric(m, "portcullis_bytes_total", direction="up", **L) == 300
    assert metric(m, "portcullis_bytes_total", direction="down", **L) == 300
    assert metric(m, "portcullis_target_connect_failures_total", **L) == 0
    assert metric(m, "portcullis_handshake_duration_seconds_count", **L) == 3
    assert metric(m, "portcullis_connection_duration_seconds_count", **L) == 9
    # Our certificate: valid for a while yet.
    assert 0 < metric(m, "portcullis_certificate_expiry_seconds", **L) < 20 * 365 * 86400
    assert metric(m, "portcullis_config_generation") == 1
    assert metric(m, "portcullis_reloads_total", result="success") == 0
    # Cardinality: no raw subject, address or fingerprint ever becomes a label value.
    text = "\n".join(m)
    assert "client-allowed" not in text and "client-denied" not in text and "127.0.0.1" not in text

    # A resumed handshake, a target that is down, and a successful reload are counted too.
    ctx = tls.ctx("allowed")
    s = tls_connect(port, ctx)
    assert echo_roundtrip(s, b"ping") == b"ping"
    session = s.session
    s.close()
    s = tls_connect(port, ctx, session=session)
    assert s.session_reused
    assert echo_roundtrip(s, b"pong") == b"pong"
    s.close()
    b.close()
    s = tls.connect(port, "allowed")                      # handshake succeeds, target refuses
    assert s.recv(1) == b""
    s.close()
    p.send_signal(signal.SIGHUP)
    p.wait_log("reloaded")
    wait_until(lambda: metric(scrape(sport), "portcullis_target_connect_failures_total", **L) == 1, timeout=10,
               what="target connect failure counted")
    m = scrape(sport)
    assert metric(m, "portcullis_handshakes_total", result="resumed", **L) == 1
    assert metric(m, "portcullis_handshakes_total", result="full", **L) == 5
    assert metric(m, "portcullis_bytes_total", direction="up", **L) == 308
    assert metric(m, "portcullis_reloads_total", result="success") == 1
    assert metric(m, "portcullis_config_generation") == 2
    wait_until(lambda: metric(scrape(sport), "portcullis_connections_closed_total", reason="target_connect_failed", **L) == 1,
               timeout=10, what="close reason counted")


def test_readyz_follows_the_target(tmp_path, started, pki):
    path = f"/tmp/portcullis-ready-{os.getpid()}-{free_port()}.sock"
    b = Backend("echo", unix_path=path)
    try:
        p, port, sport, _ = run_with_status(tmp_path, started, pki, f"unix:{path}")
        # Ready once every worker accepts (they start just after the "listening" line).
        wait_until(lambda: http_get(sport, "/readyz")[0] == 200, timeout=10, what="/readyz 200 at start")
        status, _, body = http_get(sport, "/readyz")
        doc = json.loads(body)
        assert status == 200, doc
        assert doc["status"] == "ready" and doc["problems"] == []
        assert doc["listeners"][0] == {"name": "payments", "accepting": True, "certificate_valid": True,
                                       "target_reachable": True}
        accepted_before = b.accepted
        for _ in range(20):                                   # probes in a tight loop hit the cache
            assert http_get(sport, "/readyz")[0] == 200
        assert b.accepted - accepted_before <= 1

        b.close()
        wait_until(lambda: http_get(sport, "/readyz")[0] == 503, timeout=10, what="/readyz 503 after target stop")
        status, _, body = http_get(sport, "/readyz")
        doc = json.loads(body)
        assert doc["status"] == "not ready"
        assert any("payments" in problem and "unreachable" in problem for problem in doc["problems"]), doc
        assert doc["listeners"][0]["target_reachable"] is False
        assert http_get(sport, "/healthz")[0] == 200          # alive, just not ready

        b = Backend("echo", unix_path=path)
        wait_until(lambda: http_get(sport, "/readyz")[0] == 200, timeout=10, what="/readyz 200 after target return")
    finally:
        b.close()


def test_status_document(tmp_path, started, pki, tls, backend):
    b = backend("echo")
    p, port, sport, cfg = run_with_status(tmp_path, started, pki, b.address)
    s = tls.connect(port, "allowed")
    assert echo_roundtrip(s, b"hi") == b"hi"
    status, headers, body = http_get(sport, "/status")
    assert status == 200 and headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", doc["version"])
    assert doc["pid"] == p.pid
    assert doc["uptime_seconds"] >= 0 and doc["config_generation"] == 1 and doc["draining"] is False
    assert doc["connections_open"] == 1
    (listener,) = doc["listeners"]
    assert listener["name"] == "payments" and listener["mode"] == "server"
    assert listener["listen"] == f"127.0.0.1:{port}" and listener["target"] == b.address
    assert listener["connections_active"] == 1 and listener["generation"] == 1
    assert listener["certificate"]["subject"] == pki["server"].subject_rfc2253
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", listener["certificate"]["not_after"])
    assert listener["certificate"]["seconds_to_expiry"] > 0
    s.close()

    p.send_signal(signal.SIGHUP)
    p.wait_log("reloaded")
    doc = json.loads(http_get(sport, "/status")[2])
    assert doc["config_generation"] == 2 and doc["listeners"][0]["generation"] == 2

    # HEAD, unknown paths, other methods.
    status, headers, body = http_get(sport, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert http_get(sport, "/nope")[0] == 404
    status, headers, _ = http_get(sport, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert http_get(sport, "/healthz?verbose=1")[0] == 200


def test_malformed_and_slow_requests_leave_the_proxy_serving(tmp_path, started, pki, tls, backend):
    b = backend("echo")
    p, port, sport, _ = run_with_status(tmp_path, started, pki, b.address)
    assert http_raw(sport, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert http_raw(sport, b"GET /healthz HTTP/9.9\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert http_raw(sport, b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 10000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    assert http_raw(sport, b"\x16\x03\x01\x00\xff" + os.urandom(300)).startswith(b"HTTP/1.1 400 ")

    # Slowloris: a head trickled one byte at a time never completes; the server answers 408 and closes
    # within its 5 s deadline, while everything else goes on being served.
    slow = socket.create_connection(("127.0.0.1", sport), timeout=15)
    idle = [socket.create_connection(("127.0.0.1", sport)) for _ in range(70)]  # beyond the 64-connection cap
    started_at = time.monotonic()
    served = 0
    for i, byte in enumerate(b"GET /healthz HTTP/1.1\r\nX: " + b"y" * 40):
        try:
            slow.send(bytes([byte]))
        except OSError:
            break
        if i % 8 == 0:
            s = tls.connect(port, "allowed")
            assert echo_roundtrip(s, b"still serving") == b"still serving"
            s.close()
            served += 1
        time.sleep(0.15)
        if time.monotonic() - started_at > 8:
            break
    reply = b""
    try:
        while chunk := slow.recv(4096):
            reply += chunk
    except OSError:
        pass
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert time.monotonic() - started_at < 9
    assert served >= 3
    for s in idle:
        s.close()
    wait_until(lambda: http_get(sport, "/healthz")[0] == 200, timeout=10, what="/healthz after the flood")
    assert p.alive()


def test_status_on_a_unix_socket(tmp_path, started, pki, backend):
    b = backend("echo")
    path = f"/tmp/portcullis-status-{os.getpid()}-{free_port()}.sock"
    p, port, spath, _ = run_with_status(tmp_path, started, pki, b.address, status=f"unix:{path}")
    status, _, body = http_get(spath, "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert "portcullis_build_info" in http_get(spath, "/metrics")[2].decode()


def test_status_flag_on_the_server_command(proxy, pki, tls):
    sport = free_port()
    p = proxy(extra=["--status", f"127.0.0.1:{sport}"])
    p.wait_log("status endpoint listening")
    assert http_get(sport, "/healthz")[0] == 200
    s = tls.connect(p.port, "allowed")
    s.close()
    wait_until(lambda: metric(scrape(sport), "portcullis_handshakes_total", listener="server", result="full") == 1,
               timeout=10, what="handshake counted")


def test_status_address_errors(proxy, pki, tmp_path):
    from harness import run_portcullis_once
    base = ["server", "--listen", f"127.0.0.1:{free_port()}", "--target", "127.0.0.1:9", "--cert", pki["server"].cert,
            "--key", pki["server"].key, "--cacert", pki.ca, "--allow-all"]
    r = run_portcullis_once(base + ["--status", "0.0.0.0:9100"])
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "--status" in line and "not a loopback address" in line and "--unsafe-status" in line
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = run_portcullis_once(base + ["--status", f"127.0.0.1:{busy.getsockname()[1]}"])
        assert r.returncode != 0
        assert "--status" in r.stderr and "address already in use" in r.stderr
    finally:
        busy.close()


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_handshake_failures(proxy, tls, quiet):
    p = proxy(extra=["--quiet-handshake-failures"] if quiet else [])
    for _ in range(3):
        socket.create_connection(("127.0.0.1", p.port)).close()  # health checker: connect, leave
    tls.refused(p.port, "denied")                                 # a certificate was presented: always audited
    p.wait_log("handshake failed", **{"handshake.error": "denied"})
    time.sleep(0.3)
    eof_lines = p.logs("handshake failed", **{"handshake.error": "peer_closed"})
    assert (len(eof_lines) == 0) if quiet else (len(eof_lines) >= 1)
    denied = p.logs("handshake failed", **{"handshake.error": "denied"})[0]
    assert denied["listener"] == "server" and denied["config.generation"] == "1"


def test_example_alerts_use_only_exported_metrics(tmp_path, started, pki, tls, backend):
    """examples/prometheus/alerts.yml must not reference a metric /metrics does not export."""
    b = backend("echo")
    crl = tmp_path / "ca.crl"
    from pki import make_crl
    make_crl(pki, crl)
    port = free_port()
    sport = free_port()
    cfg = ConfigFile(tmp_path / "p.yaml", [listener_config(pki, "payments", port, b.address, allow_all=True,
                                                           tls={"crl": [str(crl)], "crl-scope": "leaf"})],
                     status={"listen": f"127.0.0.1:{sport}"})
    p = start_run(cfg)
    started.append(p)
    p.wait_listening()
    s = tls.connect(port, "allowed")
    s.close()
    exported = {re.sub(r"\{.*", "", key) for key in scrape(sport)}
    text = (os.path.dirname(os.path.abspath(__file__)) + "/../../examples/prometheus/alerts.yml")
    used = set(re.findall(r"\bportcullis_[a-z_]+", open(text).read()))
    assert used, "no metrics found in alerts.yml"
    missing = sorted(used - exported)
    assert not missing, f"alerts.yml uses metrics /metrics does not export: {missing}"
