"""Session resumption through the process-wide session store (stateful TLS 1.3 tickets), the ticket count and
cache size settings, and the --cipher-suites/--groups flags."""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import subprocess

import time

from harness import ConfigFile, echo_roundtrip, free_port, listener_config, start_run, tls_connect, wait_until
from test_status_metrics import metric, run_with_status, scrape, started  # noqa: F401  (fixture)


def first_session(tls, port, ctx):
    """A full handshake and one echo (which lets the ticket arrive); returns the session to resume."""
    s = tls_connect(port, ctx)
    assert echo_roundtrip(s, b"first") == b"first"
    session = s.session
    s.close()
    assert session is not None and session.has_ticket, "the server sent no session ticket"
    return session


def resumed(port, ctx, session) -> bool:
    s = tls_connect(port, ctx, session=session)
    try:
        assert echo_roundtrip(s, b"again") == b"again"
        return s.session_reused
    finally:
        s.close()


def test_a_ticket_resumes_on_every_worker(proxy, tls):
    # SO_REUSEPORT spreads connections over the workers: 24 resumptions land on both of them.
    p = proxy(extra=["--workers", "2"])
    ctx = tls.ctx("allowed")
    session = first_session(tls, p.port, ctx)
    assert all(resumed(p.port, ctx, session) for _ in range(24))
    wait_until(lambda: len([r for r in p.logs("connection closed") if r.get("tls.resumed") == "true"]) == 24,
               timeout=5, what="24 audit lines of resumed connections")


def test_one_ticket_serves_a_client_that_opens_connections_in_parallel(proxy, tls):
    # Python (like Go and OpenSSL's own clients) offers the one ticket it holds to every new connection.
    p = proxy(extra=["--workers", "2"])
    ctx = tls.ctx("allowed")
    session = first_session(tls, p.port, ctx)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: resumed(p.port, ctx, session), range(16)))
    assert all(results), results


def count_tickets(port: int, pki) -> int:
    """How many NewSessionTicket messages one connection receives (openssl s_client prints each)."""
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-tls1_3",
         "-cert", pki["allowed"].cert, "-key", pki["allowed"].key, "-CAfile", pki.ca],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        time.sleep(1.0)  # the echo and every ticket arrive; then end of input closes the connection
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"ping" in out, out.decode(errors="replace")
    return out.decode(errors="replace").count("Post-Handshake New Session Ticket arrived")


def test_the_ticket_count_is_what_the_flag_says(proxy, pki):
    assert count_tickets(proxy().port, pki) == 1, "one ticket by default"
    assert count_tickets(proxy(extra=["--session-ticket-count", "3"]).port, pki) == 3
    assert count_tickets(proxy(extra=["--session-ticket-count", "0"]).port, pki) == 0
    assert count_tickets(proxy(extra=["--no-session-tickets"]).port, pki) == 0


def test_a_session_from_one_listener_does_not_resume_on_another(tmp_path, started, pki, tls, echo_backend):
    a, b = free_port(), free_port()
    rules = [{"name": "app", "cn": "client-allowed"}]
    cfg = ConfigFile(tmp_path / "portcullis.yaml", [listener_config(pki, "a", a, echo_backend.address, rules=rules),
                                                    listener_config(pki, "b", b, echo_backend.address, rules=rules)])
    p = start_run(cfg)
    started.append(p)
    p.wait_listening()
    ctx = tls.ctx("allowed")
    session = first_session(tls, a, ctx)
    assert resumed(a, ctx, session)
    assert not resumed(b, ctx, session), "listener b resumed a session listener a issued"


def test_the_session_cache_is_bounded_and_counted(tmp_path, started, pki, tls, echo_backend):
    p, port, sport, _ = run_with_status(tmp_path, started, pki, echo_backend.address, **{"session-cache-size": 3})
    ctx = tls.ctx("allowed")
    sessions = [first_session(tls, port, ctx) for _ in range(5)]
    values = scrape(sport)
    assert metric(values, "portcullis_tls_session_cache_entries") == 3
    # The two oldest sessions were evicted: their tickets are misses and a full handshake follows.
    assert not resumed(port, ctx, sessions[0])
    assert resumed(port, ctx, sessions[4])
    values = scrape(sport)
    assert metric(values, "portcullis_tls_session_cache_lookups_total", result="hit") == 1
    assert metric(values, "portcullis_tls_session_cache_lookups_total", result="miss") == 1
    assert metric(values, "portcullis_handshakes_total", listener="payments", result="resumed") == 1


def test_cipher_suites_and_groups_flags_pin_the_server(proxy, tls, pki):
    p = proxy(extra=["--cipher-suites", "TLS_CHACHA20_POLY1305_SHA256", "--groups", "P-384"])
    with tls.connect(p.port) as s:
        assert s.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"
        assert echo_roundtrip(s, b"pinned") == b"pinned"
    rec = p.wait_log("connection closed", timeout=5)
    assert rec["tls.cipher"] == "TLS_CHACHA20_POLY1305_SHA256", rec
    # A client that offers only X25519 shares no group with the server: the handshake fails.
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{p.port}", "-tls1_3", "-groups", "X25519",
         "-cert", pki["allowed"].cert, "-key", pki["allowed"].key, "-CAfile", pki.ca],
        input=b"", capture_output=True, timeout=20)
    assert b"handshake failure" in out.stdout + out.stderr, out.stderr.decode(errors="replace")


def test_bad_cipher_flags_are_one_line_errors(portcullis_bin, pki):
    from harness import run_portcullis_once
    base = ["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", pki["server"].cert,
            "--key", pki["server"].key, "--cacert", pki.ca, "--allow-all"]
    r = run_portcullis_once(base + ["--cipher-suites", "RC4-MD5"])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(
        "--cipher-suites (config key tls.cipher-suites): 'RC4-MD5' is not a TLS 1.3 cipher suite: use TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, "
        "TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256"), r.stderr
    r = run_portcullis_once(base + ["--session-ticket-count", "2", "--no-session-tickets"])
    assert r.returncode == 2
    assert "--session-ticket-count and --no-session-tickets are mutually exclusive" in r.stderr, r.stderr


def test_client_mode_offers_only_the_pinned_suite(proxy, pki, tls):
    from harness import start_client, plain_connect
    server = proxy()
    c = start_client(pki, f"127.0.0.1:{server.port}", extra=["--cipher-suites", "TLS_AES_128_GCM_SHA256"])
    try:
        s = plain_connect(c.port)
        s.sendall(b"through the pair")
        got = b""
        while len(got) < 16:
            chunk = s.recv(64)
            assert chunk, "closed early"
            got += chunk
        assert got == b"through the pair"
        s.close()
        rec = server.wait_log("connection closed", timeout=5)
        assert rec["tls.cipher"] == "TLS_AES_128_GCM_SHA256", rec
    finally:
        c.stop()
