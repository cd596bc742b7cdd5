"""pytest fixtures for the Portcullis end-to-end suite.

Fixtures (see harness.py for the classes):
  pki                       session-scoped test PKI (pki.py); pki["allowed"].cert / .key / .fingerprint / …
  backend(mode="echo", unix=False) -> Backend      factory; closed at test end
  echo_backend              a Backend("echo")
  proxy(target=…, allow=["--allow-cn", "client-allowed"], extra=[], cert=…, key=…, cacert=…,
        port=None, wait=True) -> Portcullis
                            factory; starts `portcullis server --log-format json`, waits for "listening",
                            stops every process by PID at test end (SIGTERM, SIGKILL after 10 s) and fails
                            the test if one died of a signal we did not send
  tls                       TLS client helpers bound to the pki: tls.ctx(cred), tls.connect(port, cred),
                            tls.refused(port, cred) -> Refusal, tls.bio(port, cred) -> BioClient
  redis_server              a redis-server on a free loopback port (stopped by PID); .port
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (Backend, BioClient, Portcullis, binary_path, client_context, expect_refused,  # noqa: E402
                     free_port, tls_connect)
from pki import PKI  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def portcullis_bin():
    p = binary_path()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"portcullis binary not found at {p} (build it, or set PORTCULLIS_BIN)")
    return p


@pytest.fixture
def backend():
    made: list[Backend] = []

    def make(mode: str = "echo", unix: bool = False, unix_path: str | None = None) -> Backend:
        if unix and not unix_path:
            unix_path = f"/tmp/portcullis-e2e-{os.getpid()}-{free_port()}.sock"
        b = Backend(mode, unix_path=unix_path)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def echo_backend(backend) -> Backend:
    return backend("echo")


@pytest.fixture
def proxy(request, pki, portcullis_bin, tmp_path):
    started: list[Portcullis] = []

    def start(target: str | None = None, allow: list[str] | None = None, extra: list[str] | None = None, *,
              cert: str | None = None, key: str | None = None, cacert: str | None = None,
              port: int | None = None, wait: bool = True, env: dict | None = None) -> Portcullis:
        if target is None:
            target = request.getfixturevalue("echo_backend").address
        port = port or free_port()
        args = ["server", "--listen", f"127.0.0.1:{port}", "--target", target,
                "--cert", cert or pki["server"].cert, "--key", key or pki["server"].key,
                "--cacert", cacert or pki.ca,
                *(allow if allow is not None else ["--allow-cn", "client-allowed"]),
                "--log-format", "json", "--log-level", "info",
                *(extra or [])]
        p = Portcullis(args, env=env, port=port)
        started.append(p)
        if wait:
            p.wait_listening()
        return p

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = []
    for p in started:
        try:
            p.stop(timeout=10)
        except Exception as e:  # noqa: BLE001
            problems.append(f"pid {p.pid}: stop failed: {e}")
        why = p.crashed()
        if why:
            problems.append(f"pid {p.pid} {why}; stderr tail:\n{p.tail(60)}")
        if failed:
            sys.stdout.write(f"\n--- portcullis pid {p.pid} rc={p.proc.returncode} cmd: {' '.join(p.cmd)}\n"
                             f"{p.tail(60)}\n")
    if problems:
        pytest.fail("\n".join(problems))


class TLSHelpers:
    def __init__(self, pki):
        self.pki = pki

    def ctx(self, cred: str | None = "allowed", **kw):
        return client_context(self.pki, cred, **kw)

    def connect(self, port: int, cred: str | None = "allowed", *, ctx=None, timeout: float = 5.0, session=None,
                suppress_ragged_eofs: bool = True):
        return tls_connect(port, ctx or self.ctx(cred), timeout=timeout, session=session,
                           suppress_ragged_eofs=suppress_ragged_eofs)

    def refused(self, port: int, cred: str | None = "allowed", *, ctx=None, read_timeout: float = 3.0):
        return expect_refused(port, ctx or self.ctx(cred), read_timeout=read_timeout)

    def bio(self, port: int, cred: str | None = "allowed", *, ctx=None, timeout: float = 10.0) -> BioClient:
        return BioClient(port, ctx or self.ctx(cred), timeout=timeout)


@pytest.fixture(scope="session")
def tls(pki) -> TLSHelpers:
    return TLSHelpers(pki)


class RedisServer:
    def __init__(self, tmpdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmpdir), "--daemonize", "no", "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

        def ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.proc.stdout.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(64).startswith(b"+PONG")
            except OSError:
                return False

        harness.wait_until(ping, 10, interval=0.1, what="redis-server PING")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    r = RedisServer(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def wait_for():
    return harness.wait_until


def pytest_report_header(config):
    return [f"portcullis binary: {binary_path()}",
            f"asan log dir: {harness.asan_log_dir() or '-'}"]


# Keep every test bounded even if a helper forgets a deadline.
@pytest.fixture(autouse=True)
def _watchdog(request):
    import faulthandler
    faulthandler.dump_traceback_later(240, exit=False)
    yield
    faulthandler.cancel_dump_traceback_later()


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    """Makes this test process the reaper of orphaned descendants, so a restarted portcullis (the old
    process's child, orphaned when it exits) can be waited for and reaped here by its pid. Append the pids
    to the yielded list: each is stopped at the end."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    successors: list[int] = []
    yield successors
    for pid in successors:
        harness.stop_and_reap(pid, timeout=10)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def recorder():
    """Makes recording TLS servers (`harness.TLSRecorder`: what a peer did), closed at the end."""
    made = []

    def make(cert, key, client_ca=None):
        r = harness.TLSRecorder(cert, key, client_ca)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def client_proxy(request, pki, portcullis_bin):
    """Starts client-mode sidecars (`harness.ClientSidecars.start`), stopped by PID at the end (a crash fails
    the test)."""
    s = harness.ClientSidecars(pki)
    yield s.start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = s.stop(failed)
    if problems:
        pytest.fail("\n".join(problems))
