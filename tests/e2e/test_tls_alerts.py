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
