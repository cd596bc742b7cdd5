"""A fatal TLS error after the handshake is told to the peer: the alert OpenSSL queued goes out, then the FIN,
instead of a bare close. Driven with raw records written under a real TLS 1.3 session (Python `ssl` over
memory BIOs, so the test controls every byte on the wire)."""

import os
import socket
import ssl

from harness import echo_roundtrip


class RawTLS:
    """A TLS client whose ciphertext the test sees and can add to."""

    def __init__(self, port: int, ctx: ssl.SSLContext):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                assert data, "server closed during the handshake"
                self.incoming.write(data)
        self._flush()

    def _flush(self):
        pending = self.outgoing.read()
        if pending:
            self.sock.sendall(pending)

    def send(self, data: bytes):
        self.tls.write(data)
        self._flush()

    def send_raw(self, record: bytes):
        self.sock.sendall(record)

    def read_until_closed(self) -> tuple[bytes, str]:
        """Plaintext read until the end, and how it ended: the SSL error text, 'eof', or 'reset'."""
        got = b""
        while True:
            try:
                got += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                return got, f"ssl: {e}"
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return got, "reset"
            if not data:
                self.incoming.write_eof()
                try:
                    got += self.tls.read(65536)
                except ssl.SSLError as e:
                    return got, f"ssl: {e}"
                return got, "eof"
            self.incoming.write(data)


def test_a_corrupt_record_after_the_handshake_gets_a_bad_record_mac_alert(proxy, tls, backend):
    b = backend("echo")
    p = proxy(target=b.address)
    c = RawTLS(p.port, tls.ctx("allowed"))
    assert echo_roundtrip_raw(c, b"hello") == b"hello"  # the connection works
    # Then a forged record: application data whose tag cannot verify.
    c.send_raw(b"\x17\x03\x03\x00\x20" + os.urandom(32))
    data, how = c.read_until_closed()
    assert data == b""
    assert "BAD_RECORD_MAC" in how.upper() or "bad record mac" in how.lower(), how
    line = p.wait_log("connection closed", timeout=5)
    assert line["close.reason"].startswith("TLS error from client"), line


def test_an_oversized_record_gets_a_record_overflow_alert(proxy, tls, backend):
    b = backend("echo")
    p = proxy(target=b.address)
    c = RawTLS(p.port, tls.ctx("allowed"))
    assert echo_roundtrip_raw(c, b"ping") == b"ping"
    # TLS 1.3 caps a protected record at 2^14 + 256 bytes; this header announces more.
    c.send_raw(b"\x17\x03\x03\x48\x01" + os.urandom(0x4801))
    _, how = c.read_until_closed()
    assert "RECORD_OVERFLOW" in how.upper() or "record overflow" in how.lower(), how


def echo_roundtrip_raw(c: RawTLS, payload: bytes) -> bytes:
    c.send(payload)
    got = b""
    while len(got) < len(payload):
        try:
            got += c.tls.read(65536)
        except ssl.SSLWantReadError:
            data = c.sock.recv(65536)
            assert data, "closed"
            c.incoming.write(data)
    return got


def test_a_change_cipher_spec_after_the_handshake_gets_an_unexpected_message_alert(proxy, tls, backend):
    """TLS 1.3 allows a compatibility ChangeCipherSpec only during the handshake (RFC 8446, 5)."""
    b = backend("echo")
    p = proxy(target=b.address)
    c = RawTLS(p.port, tls.ctx("allowed"))
    assert echo_roundtrip_raw(c, b"ping") == b"ping"
    c.send_raw(b"\x14\x03\x03\x00\x01\x01")
    _, how = c.read_until_closed()
    assert "UNEXPECTED_MESSAGE" in how.upper() or "unexpected message" in how.lower(), how


# ----------------------------------------------------------------------------------------------
# Records Python's ssl cannot forge: encrypted handshake and alert messages with bad contents.
# tlslite-ng completes a real mTLS 1.3 handshake, then its record layer encrypts whatever we hand it
# under the session's traffic keys.
# ----------------------------------------------------------------------------------------------

import warnings  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # tlslite-ng imports asyncore
    from tlslite import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey
    from tlslite.constants import AlertDescription, ContentType
    from tlslite.errors import TLSAbruptCloseError, TLSRemoteAlert
    from tlslite.messages import Message


class ForgingClient:
    """An mTLS 1.3 client (tlslite-ng) that can encrypt any content type and payload as one record."""

    def __init__(self, port: int, pki, cred: str = "allowed"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # tlslite closes its socket on a fatal alert: a second descriptor sees what comes after it.
        self.after = self.sock.dup()
        self.conn = TLSConnection(self.sock)
        with open(pki[cred].cert) as f:
            chain = X509CertChain()
            chain.parsePemList(f.read())
        with open(pki[cred].key) as f:
            key = parsePEMKey(f.read(), private=True)
        settings = HandshakeSettings()
        settings.minVersion = settings.maxVersion = (3, 4)
        # tlslite-ng sends a compressed Certificate (RFC 8879) that the server never offered to take.
        settings.certificate_compression_send = []
        settings.certificate_compression_receive = []
        self.conn.handshakeClientCert(chain, key, settings=settings, serverName="localhost")

    def roundtrip(self, payload: bytes) -> bytes:
        self.conn.write(payload)
        got = b""
        while len(got) < len(payload):
            got += bytes(self.conn.read(max=65536, min=1))
        return got

    def send_record(self, content_type: int, payload: bytes):
        """One record whose inner plaintext is `payload` + `content_type` (TLS 1.3 hides the real type)."""
        for _ in self.conn._recordLayer.sendRecord(Message(content_type, bytearray(payload))):
            pass

    def alert_then_close(self) -> tuple[str, str]:
        """The alert the server sent (its name), then how the connection went on: 'eof', 'reset', 'open'
        (nothing within 5 s) or the unexpected bytes."""
        try:
            data = self.conn.read(max=65536, min=1)
            self.after.close()
            return f"data {bytes(data)!r} instead of an alert", "open"
        except TLSRemoteAlert as alert:
            name = AlertDescription.toStr(alert.description)
        except TLSAbruptCloseError:
            self.after.close()
            return "no alert (the connection ended)", "eof"
        self.after.settimeout(5)
        try:
            rest = self.after.recv(65536)
            then = "eof" if rest == b"" else f"bytes {rest!r}"
        except ConnectionResetError:
            then = "reset"
        except socket.timeout:
            then = "open"
        finally:
            self.after.close()
        return name, then


def assert_alert_then_close(proxy, backend, pki, content_type: int, payload: bytes, alert: str, reason: str):
    """After a working round trip through the real binary, one forged record: the client gets `alert`, then
    the FIN; the audit line says `reason` (OpenSSL's); the backend got the round trip's bytes and nothing else."""
    b = backend("echo")
    p = proxy(target=b.address)
    c = ForgingClient(p.port, pki)
    assert c.roundtrip(b"hello") == b"hello"
    c.send_record(content_type, payload)
    got, then = c.alert_then_close()
    assert (got, then) == (alert, "eof")
    line = p.wait_log("connection closed", timeout=5)
    assert line["close.reason"] == f"TLS error from client: {reason}", line
    assert line["bytes.up"] == "5", line
    assert b.eof_event.wait(5), "the backend's connection was not shut down"
    assert b.bytes_in == 5, f"the backend got {b.bytes_in} bytes, want only the 5 of the round trip"


def test_a_key_update_with_an_invalid_request_gets_an_illegal_parameter_alert(proxy, backend, pki):
    """RFC 8446 4.6.3: request_update other than 0 or 1 is illegal_parameter."""
    key_update = bytes([24, 0, 0, 1, 2])  # KeyUpdate, length 1, request_update = 2
    assert_alert_then_close(proxy, backend, pki, ContentType.handshake, key_update, "illegal_parameter", "bad key update")


def test_a_record_whose_inner_plaintext_is_all_zeros_gets_an_unexpected_message_alert(proxy, backend, pki):
    """RFC 8446 5.4: no non-zero octet in the inner plaintext (no content type) is unexpected_message."""
    assert_alert_then_close(proxy, backend, pki, 0, b"", "unexpected_message", "bad record type")


def test_an_empty_alert_record_gets_an_unexpected_message_alert(proxy, backend, pki):
    """A zero-length alert record: OpenSSL 3 answers unexpected_message ("bad length"), as for any empty
    non-application-data record under TLS 1.3 (RFC 8446 5.1 forbids zero-length alert and handshake fragments)."""
    assert_alert_then_close(proxy, backend, pki, ContentType.alert, b"", "unexpected_message", "bad length")


# ----------------------------------------------------------------------------------------------
# The README's refusal table: a client without a certificate.
# ----------------------------------------------------------------------------------------------

def test_a_tls12_client_without_a_certificate_gets_handshake_failure(proxy, tls, backend):
    """TLS 1.2 has no certificate_required alert: OpenSSL refuses an empty client Certificate with
    handshake_failure, and the client sees it in the handshake itself (TLS 1.3: certificate_required)."""
    b = backend("echo")
    p = proxy(target=b.address, extra=["--min-tls", "1.2"])
    ctx = tls.ctx(None, max_version=ssl.TLSVersion.TLSv1_2)
    refusal = tls.refused(p.port, ctx=ctx)
    assert refusal.stage == "handshake", refusal
    assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in refusal.text.upper(), refusal
    line = p.wait_log("handshake failed", timeout=5)
    assert line["handshake.error"] == "no_certificate", line
    assert b.bytes_in == 0 and not b.conns


def test_a_tls13_client_without_a_certificate_gets_certificate_required(proxy, tls, backend):
    b = backend("echo")
    p = proxy(target=b.address, extra=["--min-tls", "1.2"])
    refusal = tls.refused(p.port, ctx=tls.ctx(None))
    assert "CERTIFICATE_REQUIRED" in refusal.text.upper(), refusal
    assert p.wait_log("handshake failed", timeout=5)["handshake.error"] == "no_certificate"
    assert b.bytes_in == 0 and not b.conns
