"""ghostunnel command lines, run with the binary name changed: each accepted ghostunnel flag admits or refuses a
client as ghostunnel would, and each flag without an equivalent gives one line saying what to use instead
(`GhostunnelFlags` in Sources/Config/Flags; README, *Moving from ghostunnel*)."""

from __future__ import annotations

import base64
import socket
import threading

import pytest

from harness import AcceptingServer, Portcullis, echo_roundtrip, free_port, plain_connect, run_portcullis_once, wait_until
from pki import issue_leaf

PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def b64_pin(cred) -> str:
    """ghostunnel's pin form: base64 of the SPKI's SHA-256."""
    return base64.b64encode(bytes.fromhex(cred.spki.removeprefix("sha256:"))).decode()


def app_is_closed_unanswered(port):
    """A plaintext app on a client sidecar whose server was refused: its bytes go nowhere, it is closed."""
    s = plain_connect(port)
    try:
        s.sendall(b"secret")
        s.settimeout(5)
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    finally:
        s.close()


def admitted(tls, port, cred="allowed"):
    s = tls.connect(port, cred)
    try:
        assert echo_roundtrip(s, b"ghost") == b"ghost"
    finally:
        s.close()


@pytest.mark.parametrize("allow", [
    ["--allow-dns-san", "client.payments.example.org"],
    ["--allow-email-san", "client@payments.example.org"],
    ["--allow-ip-san", "10.1.2.3"],
    ["--allow-ou", "payments"],
], ids=["allow-dns-san", "allow-email-san", "allow-ip-san", "allow-ou"])
def test_san_aliases_admit_and_refuse_like_ghostunnel(proxy, tls, allow):
    p = proxy(allow=allow)
    admitted(tls, p.port)
    tls.refused(p.port, "denied")


def test_allow_spki_pin_base64(proxy, tls, pki):
    p = proxy(allow=[f"--allow-spki-pin={b64_pin(pki['allowed'])}"])
    admitted(tls, p.port)
    tls.refused(p.port, "denied")


def test_keystore_combined_pem(tls, pki, tmp_path, echo_backend):
    combined = tmp_path / "combined.pem"
    combined.write_text(open(pki["server"].cert).read() + open(pki["server"].key).read())
    combined.chmod(0o600)
    port = free_port()
    p = Portcullis(["server", "--listen", f"127.0.0.1:{port}", "--target", echo_backend.address,
                    "--keystore", str(combined), "--cacert", pki.ca, "--allow-cn", "client-allowed",
                    "--log-format", "json"], port=port)
    try:
        # Level warning: the "listening" line (info) is silenced too, so wait for the port.
        wait_until(lambda: _accepts(port), 10, what="the port to accept")
        admitted(tls, port)
        tls.refused(port, "denied")
    finally:
        p.stop()


def test_keystore_neither_pkcs12_nor_pem_is_one_line(tmp_path, pki):
    # PKCS#12 keystores are accepted (test_ghostunnel_keystore_client.py); a file that is neither is one line.
    p12 = tmp_path / "id.p12"
    p12.write_bytes(b"\x30\x82\x01\x00not pem")
    r = run_portcullis_once(["server", "--keystore", str(p12), "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2",
                             "--cacert", pki.ca, "--allow-all"])
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "--keystore" in r.stderr and "neither PKCS#12" in r.stderr, r.stderr


class ProxyHeaderBackend(AcceptingServer):
    """Records the first 12 bytes of each connection (the PROXY v2 signature, or the client's data)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.firsts: list[bytes] = []
        self.closed = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(5)
            data = b""
            while len(data) < 12:
                chunk = c.recv(12 - len(data))
                if not chunk:
                    break
                data += chunk
            self.firsts.append(data)
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.mark.parametrize("flags", [["--proxy-protocol"], ["--proxy-protocol", "v2"]], ids=["bare", "v2"])
def test_bare_proxy_protocol_means_v2(proxy, tls, flags):
    backend = ProxyHeaderBackend()
    try:
        p = proxy(target=backend.address, extra=flags)
        s = tls.connect(p.port)
        s.sendall(b"0123456789abcdef")
        wait_until(lambda: backend.firsts, 5, what="a connection to the backend")
        s.close()
        assert backend.firsts[0] == PP2_SIGNATURE
    finally:
        backend.close()


def test_proxy_protocol_off_still_works(proxy, tls):
    p = proxy(extra=["--proxy-protocol", "off"])
    admitted(tls, p.port)


def _accepts(port) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_quiet_conns_silences_the_audit_line(tls, pki, echo_backend):
    # As ghostunnel writes it: no --log-level (an explicit one wins over --quiet).
    port = free_port()
    p = Portcullis(["server", "--listen", f"127.0.0.1:{port}", "--target", echo_backend.address,
                    "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                    "--allow-cn", "client-allowed", "--log-format", "json", "--quiet", "conns"], port=port)
    try:
        # Level warning: the "listening" line (info) is silenced too, so wait for the port.
        wait_until(lambda: _accepts(port), 10, what="the port to accept")
        admitted(tls, port)
        tls.refused(port, "denied")
        p.wait_log("handshake failed")
    finally:
        p.stop()
    assert not p.logs("connection closed")


def test_quiet_handshake_errs_silences_certificateless_peers(proxy, tls):
    p = proxy(extra=["--quiet=handshake-errs"])
    socket.create_connection(("127.0.0.1", p.port)).close()
    admitted(tls, p.port)
    p.wait_log("connection closed")
    assert not p.logs("handshake failed")


def test_max_tls_version_13_and_cipher_families(proxy, tls):
    p = proxy(extra=["--max-tls-version", "1.3", "--cipher-suites", "AES", "--disable-landlock"])
    s = tls.connect(p.port)
    try:
        assert s.version() == "TLSv1.3" and s.cipher()[0] in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384")
    finally:
        s.close()


def test_timed_reload(proxy):
    p = proxy(extra=["--timed-reload", "300ms"])
    p.wait_log("reloaded", timeout=5, **{"reload.trigger": "timed-reload"})


def test_client_verify_aliases_and_spki_pin(proxy, client_proxy, pki):
    server = proxy()
    target = f"127.0.0.1:{server.port}"
    for extra in (["--verify-dns-san", "localhost"], ["--verify-ip-san", "127.0.0.1"],
                  ["--verify-spki-pin", b64_pin(pki["server"])]):
        c = client_proxy(target, extra=extra)
        s = plain_connect(c.port)
        try:
            assert echo_roundtrip(s, b"ghost") == b"ghost"
        finally:
            s.close()
    wrong = client_proxy(target, extra=["--verify-spki-pin", b64_pin(pki["server2"])])
    app_is_closed_unanswered(wrong.port)


REFUSED = {
    "--enable-pprof": (["--enable-pprof"], "/_status"),
    "--max-tls-version": (["--max-tls-version", "1.2"], "--min-tls 1.2"),
    "--quiet": (["--quiet", "loud"], "handshake-errs"),
    "--allow-spki-pin": (["--allow-spki-pin", "not-base64!"], "sha256:HEX"),
    "--disable-authentication": (["--disable-authentication"], "--allow-all"),
    "--use-workload-api": (["--use-workload-api"], "spiffe-helper"),
    "--metrics-graphite": (["--metrics-graphite", "127.0.0.1:2003"], "/metrics"),
    "--allow-policy": (["--allow-policy", "bundle.tar.gz"], "policy.rules"),
    "--enable-shutdown": (["--enable-shutdown"], "SIGTERM"),
    "--auto-acme-cert": (["--auto-acme-cert", "x.example.org"], "certbot"),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refused_flags_give_one_line(case, pki):
    flags, hint = REFUSED[case]
    r = run_portcullis_once(["server", "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2",
                             "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                             "--allow-all", *flags])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"portcullis: {case}"), r.stderr
    assert hint in lines[0], r.stderr


def test_client_refuses_server_only_flags_the_usual_way(pki):
    r = run_portcullis_once(["client", "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2",
                             "--cert", pki["allowed"].cert, "--key", pki["allowed"].key, "--cacert", pki.ca,
                             "--proxy-protocol"])
    assert r.returncode != 0 and len(r.stderr.splitlines()) == 1, r.stderr


def test_allow_uri_san_admits_the_spiffe_id_only(proxy, tls):
    p = proxy(allow=["--allow-uri-san", "spiffe://example.org/ns/prod/sa/worker"])
    admitted(tls, p.port, cred="spiffe")
    tls.refused(p.port, "allowed")  # same CA, no such URI SAN


def test_client_verify_uri_san(proxy, client_proxy, pki):
    """--verify-uri-san: the server must carry the URI SAN; a server without it gets no application byte."""
    uri_server = issue_leaf(pki, "server-uri-ghost", "/O=Portcullis Test/CN=localhost", eku="serverAuth",
                            san="DNS:localhost,IP:127.0.0.1,URI:spiffe://example.org/ghost")
    good = proxy(cert=uri_server.cert, key=uri_server.key)
    c = client_proxy(f"127.0.0.1:{good.port}", extra=["--verify-uri-san", "spiffe://example.org/ghost"])
    s = plain_connect(c.port)
    try:
        assert echo_roundtrip(s, b"ghost") == b"ghost"
    finally:
        s.close()
    plain = proxy()  # pki["server"]: no URI SAN
    c2 = client_proxy(f"127.0.0.1:{plain.port}", extra=["--verify-uri-san", "spiffe://example.org/ghost"])
    app_is_closed_unanswered(c2.port)
    line = c2.wait_log("handshake failed", timeout=5)
    assert line["handshake.error"] == "denied", line
    assert not plain.logs("connection closed"), "the server without the URI SAN relayed a connection"
