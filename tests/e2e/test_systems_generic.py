"""Generic: an HTTP service behind Portcullis (examples/generic), the same scenario as examples/generic/run.sh.

  curl --cert / openssl s_client ──mTLS──▶ server sidecar ──▶ python3 -m http.server (loopback)
  plain curl ─▶ client sidecar ──mTLS──▶ server sidecar ──▶ (same server)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from harness import free_port, wait_until


class HTTPServer:
    """python3 -m http.server on a free loopback port, serving `root`; requests are counted from its log."""

    def __init__(self, root, log_path):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                                      "--directory", str(root), str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def up():
            import socket
            assert self.proc.poll() is None, "http.server exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, 10, what="http.server")

    def requests(self) -> int:
        return open(self.log_path, "rb").read().count(b'"GET ')

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_text("hello through portcullis\n")
    blob = os.urandom(1 << 20)
    (root / "blob.bin").write_bytes(blob)
    s = HTTPServer(root, tmp_path / "http.log")
    s.blob_sha = hashlib.sha256(blob).hexdigest()
    yield s
    s.stop()


def curl(port: int, path: str, pki, cred: str | None = "allowed", *extra: str) -> subprocess.CompletedProcess:
    args = ["curl", "-sS", "--max-time", "10", "--cacert", pki.ca, "--resolve", f"localhost:{port}:127.0.0.1"]
    if cred:
        args += ["--cert", pki[cred].cert, "--key", pki[cred].key]
    return subprocess.run([*args, *extra, f"https://localhost:{port}{path}"], capture_output=True, timeout=20,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(autouse=True)
def _tools():
    for t in ("curl", "openssl"):
        if not shutil.which(t):
            pytest.fail(f"{t} is not installed (scripts/install-deps test)")


def test_openssl_s_client_gets_the_page(pki, proxy, web):
    p = proxy(target=f"127.0.0.1:{web.port}")
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{p.port}", "-servername", "localhost",
                        "-CAfile", pki.ca, "-verify_return_error", "-cert", pki["allowed"].cert,
                        "-key", pki["allowed"].key, "-brief", "-ign_eof"],
                       input=b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n", capture_output=True, timeout=20)
    assert b"200 OK" in r.stdout and b"hello through portcullis" in r.stdout, r.stdout + r.stderr
    assert b"Protocol version: TLSv1.3" in r.stderr, r.stderr
    audit = p.wait_log("connection closed")
    assert audit["tls.peer.subject"].startswith("CN=client-allowed") and audit["tls.version"] == "TLSv1.3"


def test_curl_cert_downloads_intact(pki, proxy, web):
    p = proxy(target=f"127.0.0.1:{web.port}")
    r = curl(p.port, "/blob.bin", pki)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == web.blob_sha


@pytest.mark.parametrize("cred,alert,error", [
    ("denied", "alert certificate unknown", "denied"),
    (None, "alert certificate required", "no_certificate"),
    ("other-ca", "alert unknown ca", "unknown_ca"),
])
def test_curl_refused_and_server_sees_nothing(pki, proxy, web, cred, alert, error):
    p = proxy(target=f"127.0.0.1:{web.port}")
    before = web.requests()
    r = curl(p.port, "/hello.txt", pki, cred)
    assert r.returncode != 0 and b"hello" not in r.stdout
    assert alert in r.stderr.decode(), r.stderr
    p.wait_log("handshake failed", **{"handshake.error": error})
    assert web.requests() == before
    assert not p.logs("connection closed")


def test_plain_curl_through_the_pair(pki, proxy, client_proxy, web):
    server = proxy(target=f"127.0.0.1:{web.port}")
    client = client_proxy(f"127.0.0.1:{server.port}")  # default: the server must be valid for 127.0.0.1
    r = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{client.port}/blob.bin"],
                       capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == web.blob_sha
    assert server.wait_log("connection closed")["tls.peer.subject"].startswith("CN=client-allowed")
    assert "CN=localhost" in client.wait_log("connection closed")["tls.peer.subject"]
