"""What running ghostunnel's own integration tests against Portcullis found (docs/GHOSTUNNEL-COMPAT.md), each
pinned here in our own words: `ghostunnel.conn.timeout` in /_metrics counts a connection closed by
--max-conn-lifetime (ghostunnel's lifetime test polls exactly that); ghostunnel's older `--connect-proxy`
spelling is refused in one line like `--proxy`; and an SPKI pin narrows who is admitted but never replaces
the chain check (the deliberate difference the README states)."""

from __future__ import annotations

import base64

import pytest

from harness import ClientSidecars, echo_roundtrip, free_port, run_portcullis_once, wait_until
from pki import issue_leaf
from test_ghostunnel_flags import app_is_closed_unanswered
from test_ghostunnel_status import ghostunnel_metrics


def b64_pin(cred) -> str:
    """ghostunnel's pin form: base64 of the SPKI's SHA-256."""
    return base64.b64encode(bytes.fromhex(cred.spki.removeprefix("sha256:"))).decode()


def test_conn_timeout_counts_a_connection_closed_at_its_max_lifetime(proxy, tls, backend):
    b = backend("echo")
    sport = free_port()
    p = proxy(target=b.address, extra=["--max-conn-lifetime", "1s", "--status", f"127.0.0.1:{sport}"])
    p.wait_log("status endpoint listening")
    assert ghostunnel_metrics(sport)["ghostunnel.conn.timeout"] == 0
    s = tls.connect(p.port)
    try:
        assert echo_roundtrip(s, b"held") == b"held"
        line = p.wait_log("connection closed", timeout=5)
        assert line["close.reason"] == "max lifetime", line
    finally:
        s.close()
    wait_until(lambda: ghostunnel_metrics(sport)["ghostunnel.conn.timeout"] == 1, timeout=5,
               what="ghostunnel.conn.timeout == 1 after one max-lifetime close")
    # A connection the client closes itself is no timeout.
    with tls.connect(p.port) as again:
        assert echo_roundtrip(again, b"quick") == b"quick"
    wait_until(lambda: ghostunnel_metrics(sport)["ghostunnel.conn.open"] == 0, timeout=5, what="conn.open 0")
    assert ghostunnel_metrics(sport)["ghostunnel.conn.timeout"] == 1


@pytest.mark.parametrize("mode", ["server", "client"])
def test_old_connect_proxy_spelling_is_refused_in_one_line(mode, pki):
    auth = ["--allow-all"] if mode == "server" else []
    r = run_portcullis_once([mode, "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2",
                             "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                             *auth, "--connect-proxy=http://127.0.0.1:3128"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("portcullis: --connect-proxy"), r.stderr
    assert "--target must be reachable directly" in lines[0], r.stderr


def test_allow_spki_pin_never_admits_a_certificate_outside_cacert(proxy, tls, pki):
    # ghostunnel accepts a pinned key whatever signed it; here the pin is one more rule after the chain check.
    p = proxy(allow=[f"--allow-spki-pin={b64_pin(pki['other-ca'])}", f"--allow-spki-pin={b64_pin(pki['allowed'])}"])
    with tls.connect(p.port, "allowed") as s:
        assert echo_roundtrip(s, b"pinned") == b"pinned"
    refusal = tls.refused(p.port, "other-ca")
    assert "unknown ca" in refusal.lower, refusal
    line = p.wait_log("handshake failed", timeout=5)
    assert line["handshake.error"] == "unknown_ca", line


def test_verify_spki_pin_never_trusts_a_server_outside_cacert(proxy, pki):
    outsider = issue_leaf(pki, "findings-server-otherca", "/O=Somebody Else/CN=localhost", ca="otherca",
                          san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    server = proxy(cert=outsider.cert, key=outsider.key)
    sidecars = ClientSidecars(pki)
    try:
        c = sidecars.start(f"127.0.0.1:{server.port}", extra=["--verify-spki-pin", b64_pin(outsider)])
        app_is_closed_unanswered(c.port)
        line = c.wait_log("handshake failed", timeout=5)
        assert "unable to get local issuer certificate" in line["handshake.detail"], line
    finally:
        sidecars.stop(False)
