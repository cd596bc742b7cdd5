"""PROXY protocol v2 to the target (`proxy-protocol: v2`, `--proxy-protocol v2`): a test backend parses the
header byte by byte, checks every field against what the client itself sees, then echoes the payload."""

from __future__ import annotations

import socket
import struct

import pytest

from harness import AcceptingServer, ConfigFile, echo_roundtrip, free_port, listener_config, start_run, stop_all, wait_until

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _recv_exact(c: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        d = c.recv(n - len(buf))
        if not d:
            raise AssertionError(f"EOF after {len(buf)} of {n} header bytes")
        buf += d
    return bytes(buf)


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Splits a TLV area into (type, value), asserting the lengths add up exactly."""
    out, i = [], 0
    while i < len(data):
        assert i + 3 <= len(data), f"truncated TLV header at {i}"
        t, n = data[i], struct.unpack("!H", data[i + 1:i + 3])[0]
        assert i + 3 + n <= len(data), f"TLV 0x{t:02x} claims {n} bytes, {len(data) - i - 3} left"
        out.append((t, data[i + 3:i + 3 + n]))
        i += 3 + n
    return out


def parse_v2(c: socket.socket) -> dict:
    """Reads exactly one PROXY v2 header from `c` and returns its fields."""
    fixed = _recv_exact(c, 16)
    assert fixed[:12] == SIGNATURE, f"bad signature {fixed[:12]!r}"
    assert fixed[12] == 0x21, f"version/command 0x{fixed[12]:02x}, want 0x21 (v2, PROXY)"
    family = fixed[13]
    length = struct.unpack("!H", fixed[14:16])[0]
    body = _recv_exact(c, length)
    if family == 0x11:
        src, dst = socket.inet_ntop(socket.AF_INET, body[0:4]), socket.inet_ntop(socket.AF_INET, body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
        rest = body[12:]
    elif family == 0x21:
        src, dst = socket.inet_ntop(socket.AF_INET6, body[0:16]), socket.inet_ntop(socket.AF_INET6, body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
        rest = body[36:]
    else:
        raise AssertionError(f"family 0x{family:02x}, want 0x11 (TCP4) or 0x21 (TCP6)")
    tlvs = _tlvs(rest)
    types = [t for t, _ in tlvs]
    assert len(types) == len(set(types)), f"repeated TLV types {types}"
    top = dict(tlvs)
    ssl_block = top.get(0x20)
    ssl = None
    if ssl_block is not None:
        assert len(ssl_block) >= 5
        sub = _tlvs(ssl_block[5:])
        ssl = {"client": ssl_block[0], "verify": struct.unpack("!I", ssl_block[1:5])[0], "sub": dict(sub),
               "sub_types": [t for t, _ in sub]}
    return {"family": family, "src": (src, sport), "dst": (dst, dport), "tlvs": top, "types": types, "ssl": ssl}


class ProxyV2Backend(AcceptingServer):
    """Plaintext target that requires a PROXY v2 header, records it, then echoes. `raw=True` records the first
    bytes verbatim instead (to prove that no header is sent)."""

    def __init__(self, raw: bool = False):
        self.raw = raw
        self.headers: list[dict] = []
        self.first_bytes: list[bytes] = []
        self.errors: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(16)
        self._start_accepting()

    def _serve(self, c: socket.socket):
        c.settimeout(10)
        try:
            if self.raw:
                first = c.recv(65536)
                with self.lock:
                    self.first_bytes.append(first)
                c.sendall(first)
            else:
                header = parse_v2(c)
                with self.lock:
                    self.headers.append(header)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except (AssertionError, OSError) as e:
            with self.lock:
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            c.close()

    def close(self):
        self._closed = True
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def pp_backend():
    made: list[ProxyV2Backend] = []

    def make(raw: bool = False) -> ProxyV2Backend:
        b = ProxyV2Backend(raw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def _roundtrip_and_header(backend: ProxyV2Backend, s, payload: bytes) -> dict:
    assert echo_roundtrip(s, payload) == payload, "payload after the header did not arrive intact"
    wait_until(lambda: backend.headers or backend.errors, 5, what="the backend to parse a header")
    assert not backend.errors, backend.errors
    assert len(backend.headers) == 1
    return backend.headers[0]


def _check_common(h: dict, s, proxy_port: int, *, cn: str):
    client_ip, client_port = s.getsockname()[:2]
    assert h["family"] == 0x11
    assert h["src"] == (client_ip, client_port), "source is not the TLS client's address"
    assert h["dst"] == ("127.0.0.1", proxy_port), "destination is not the address the client connected to"
    ssl = h["ssl"]
    assert ssl is not None, "no PP2_TYPE_SSL TLV"
    assert ssl["client"] == 0x07, f"client flags 0x{ssl['client']:02x}: want SSL|CERT_CONN|CERT_SESS"
    assert ssl["verify"] == 0
    assert ssl["sub"][0x21] == b"TLSv1.3" == s.version().encode()
    assert ssl["sub"][0x23] == s.cipher()[0].encode(), "cipher differs from what the client negotiated"
    assert ssl["sub"][0x22] == cn.encode()
    assert set(ssl["sub_types"]) == {0x21, 0x22, 0x23}
    assert h["tlvs"][0x02] == b"localhost", "PP2_TYPE_AUTHORITY should carry the SNI"
    assert h["tlvs"][0x05].isdigit(), "PP2_TYPE_UNIQUE_ID should be the decimal connection id"


def test_header_from_server_flags_with_every_field(proxy, pp_backend, tls):
    backend = pp_backend()
    p = proxy(target=backend.address, allow=["--allow-cn", "client-allowed"], extra=["--proxy-protocol", "v2"])
    s = tls.connect(p.port, "allowed")
    try:
        payload = b"hello after the header\n" * 100
        h = _roundtrip_and_header(backend, s, payload)
        _check_common(h, s, p.port, cn="client-allowed")
        assert h["tlvs"][0xE1] == b"cn=client-allowed", "rule name TLV"
        assert 0xE0 not in h["tlvs"], "this client has no URI SAN"
        assert sorted(h["types"]) == [0x02, 0x05, 0x20, 0xE1]
    finally:
        s.close()
    rec = p.wait_log("connection closed", timeout=5)
    assert h["tlvs"][0x05] == rec["conn.id"].encode()
    assert rec["bytes.up"] == str(len(payload)), "the header must not count as client bytes"


def test_header_from_config_file_carries_spiffe_id_and_rule_name(pp_backend, pki, tls, tmp_path):
    backend = pp_backend()
    port = free_port()
    cfg = ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, "pp", port, backend.address, rules=[
            {"name": "prod-workers", "spiffe": "spiffe://example.org/ns/prod/**"},
        ], **{"proxy-protocol": "v2"}),
    ])
    p = start_run(cfg)
    failed = True
    try:
        p.wait_log("listening", timeout=20, listener="pp")
        s = tls.connect(port, "spiffe")
        try:
            h = _roundtrip_and_header(backend, s, b"x")
            _check_common(h, s, port, cn="worker")
            assert h["tlvs"][0xE0] == b"spiffe://example.org/ns/prod/sa/worker"
            assert h["tlvs"][0xE1] == b"prod-workers"
        finally:
            s.close()
        failed = False
    finally:
        problems = stop_all([p], failed)
    assert not problems, problems


def test_header_to_a_unix_socket_target_still_carries_tcp_addresses(proxy, tls, tmp_path):
    path = str(tmp_path / "pp.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(10)
    p = proxy(target=f"unix:{path}", extra=["--proxy-protocol", "v2"])
    s = tls.connect(p.port, "allowed")
    try:
        s.sendall(b"ping")
        c, _ = server.accept()
        c.settimeout(10)
        h = parse_v2(c)
        assert c.recv(4) == b"ping"
        c.close()
        assert h["family"] == 0x11
        assert h["src"] == s.getsockname()[:2]
        assert h["dst"] == ("127.0.0.1", p.port)
    finally:
        s.close()
        server.close()


def test_without_proxy_protocol_no_header_is_sent(proxy, pp_backend, tls):
    backend = pp_backend(raw=True)
    p = proxy(target=backend.address)
    s = tls.connect(p.port, "allowed")
    try:
        assert echo_roundtrip(s, b"plain start") == b"plain start"
    finally:
        s.close()
    assert backend.first_bytes and backend.first_bytes[0].startswith(b"plain start")
    assert not backend.first_bytes[0].startswith(SIGNATURE[:4])


def test_denied_client_never_reaches_the_backend(proxy, pp_backend, tls):
    backend = pp_backend()
    p = proxy(target=backend.address, extra=["--proxy-protocol", "v2"])
    refusal = tls.refused(p.port, "denied")
    assert refusal.stage in ("handshake", "first-read"), refusal
    p.wait_log("handshake failed", timeout=5)
    assert backend.accepted == 0 and not backend.headers


def test_bad_value_and_client_mode_are_refused(tmp_path, pki):
    from harness import run_portcullis_once
    r = run_portcullis_once(["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1",
                             "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                             "--allow-all", "--proxy-protocol", "v1"])
    assert r.returncode == 2
    assert r.stderr.strip() == ("portcullis: --proxy-protocol (config key proxy-protocol): 'v1' is not a PROXY protocol version: use v2 "
                                "(send a PROXY v2 header to the target) or off (the default)")
    cfg = ConfigFile(tmp_path / "client.yaml", [{
        "name": "c", "mode": "client", "listen": "127.0.0.1:0", "target": "127.0.0.1:4443", "proxy-protocol": "v2",
        "tls": {"cert": pki["allowed"].cert, "key": pki["allowed"].key, "cacert": pki.ca}}])
    r = run_portcullis_once(["check", "--config", str(cfg)])
    assert r.returncode != 0
    assert "listeners[0].proxy-protocol: applies to server mode only" in r.stderr, r.stderr
