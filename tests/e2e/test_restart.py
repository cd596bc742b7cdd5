"""SIGUSR2: the process re-executes itself, hands its listening sockets to the new process, and drains —
while clients keep connecting, not one of them is refused."""

import os
import signal
import ssl
import threading
import time

import pytest

from harness import stop_and_reap, ConfigFile, echo_roundtrip, free_port, listener_config, start_run, stop_all, tls_connect, \
    wait_log_after
from systemd_helpers import NotifyReceiver


class ConnectionStream:
    """A thread opening new TLS connections back to back (handshake, echo round trip, close) and counting
    every one that failed in any way. Bounded in count and time."""

    def __init__(self, port: int, ctx: ssl.SSLContext, max_seconds: float = 90, max_connections: int = 20000):
        self.port, self.ctx = port, ctx
        self.max_seconds, self.max_connections = max_seconds, max_connections
        self.ok = 0
        self.failures: list[str] = []
        self.ok_times: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="connection-stream", daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline and n < self.max_connections:
            n += 1
            payload = b"conn %d" % n
            try:
                with tls_connect(self.port, self.ctx, timeout=10) as s:
                    if echo_roundtrip(s, payload, timeout=10) != payload:
                        raise AssertionError("echo mismatch")
                self.ok += 1
                self.ok_times.append(time.monotonic())
            except Exception as e:  # noqa: BLE001 — every failure counts, whatever its kind
                self.failures.append(f"#{n} at {time.monotonic():.3f}: {type(e).__name__}: {e}")

    def ok_since(self, t: float) -> int:
        return sum(1 for x in self.ok_times if x > t)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "connection stream did not stop"


def test_sigusr2_restart_refuses_no_connection(proxy, tls, subreaper):
    notify = NotifyReceiver()
    try:
        p = proxy(extra=["--workers", "2", "--shutdown-timeout", "60s"], env={"NOTIFY_SOCKET": notify.address})
        notify.wait("READY", "1")
        long_lived = tls.connect(p.port)
        assert echo_roundtrip(long_lived, b"opened before the restart") == b"opened before the restart"

        stream = ConnectionStream(p.port, tls.ctx())
        try:
            time.sleep(0.5)
            mark = len(p.records)
            p.send_signal(signal.SIGUSR2)
            started = wait_log_after(p, mark, "restart: new process started", timeout=10)
            child = int(started["restart.pid"])
            subreaper.append(child)
            assert child != p.pid
            # A second SIGUSR2 while one is under way starts nothing.
            os.kill(p.pid, signal.SIGUSR2)
            wait_log_after(p, mark, timeout=10, pred=lambda r: r.get("msg") in (
                "restart already in progress: ignoring SIGUSR2", "restart ignored while draining"))

            handed = wait_log_after(p, mark, "restart: handing over, draining", timeout=30)
            assert handed["restart.pid"] == str(child)
            # The new process adopted the very sockets (both workers' SO_REUSEPORT queues), binding nothing.
            wait_log_after(p, mark, "listening", timeout=10, **{"listen.source": "restart"})
            notify.wait("MAINPID", str(child), timeout=10)
            t_handover = time.monotonic()

            time.sleep(1.0)
            # The old process still serves what it had, then exits 0 once that is done.
            assert echo_roundtrip(long_lived, b"still here") == b"still here"
            assert p.alive(), "the old process must drain, not exit with a connection open"
            long_lived.close()
            assert p.wait(20) == 0
            t_exit = time.monotonic()

            time.sleep(1.0)  # the new process alone now
        finally:
            stream.stop()

        assert stream.failures == [], f"{len(stream.failures)} of {stream.ok + len(stream.failures)} " \
                                      f"connections failed:\n" + "\n".join(stream.failures[:20])
        assert stream.ok_since(t_handover) > 0 and stream.ok_since(t_exit) > 0, \
            f"no connection after the handover/exit (ok={stream.ok})"
        assert len(p.logs("restart: new process started")) == 1
        os.kill(child, 0)  # the new process serves on
        assert tls_connect(p.port, tls.ctx()).close() is None
        assert stop_and_reap(child, timeout=15) == 0
        subreaper.remove(child)
    finally:
        notify.close()


def test_failed_restart_keeps_serving(proxy, tls, pki, tmp_path, subreaper):
    import shutil
    cert = tmp_path / "server.pem"
    shutil.copy(pki["server"].cert, cert)
    p = proxy(cert=str(cert))
    cert.unlink()  # the new process cannot start: it loads its certificate afresh
    mark = len(p.records)
    p.send_signal(signal.SIGUSR2)
    started = wait_log_after(p, mark, "restart: new process started", timeout=10)
    subreaper.append(int(started["restart.pid"]))
    failed = wait_log_after(p, mark, "restart failed: still serving", timeout=30)
    assert failed["restart.pid"] == started["restart.pid"]
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"still the old process") == b"still the old process"
    assert p.alive()
    wait_log_after(p, mark, "restart: process exited", timeout=10)  # reaped, no zombie left


def test_sigusr2_restart_of_run_config_hands_over_every_listener(request, pki, tls, backend, tmp_path, subreaper):
    """Several listeners, more workers than one: every worker's socket of every listener is handed over, and
    the new process re-reads the configuration file (a policy change made before the restart applies)."""
    ports = [free_port(), free_port()]
    config = ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, f"l{i}", port, backend("echo").address, rules=[{"name": "ok", "cn": "client-allowed"}])
        for i, port in enumerate(ports)
    ], workers=3)
    p = start_run(config)
    try:
        p.wait_log("listening", timeout=20)
        for port in ports:
            with tls.connect(port) as s:
                assert echo_roundtrip(s, b"before") == b"before"
        # Read by the new process only: admit every client of the CA on l1 from now on.
        config.listener("l1")["policy"] = {"allow-all": True}
        config.write()
        time.sleep(0.5)  # the old process may reload it first (file watching); either way it is valid
        mark = len(p.records)
        p.send_signal(signal.SIGUSR2)
        started = wait_log_after(p, mark, "restart: new process started", timeout=10)
        child = int(started["restart.pid"])
        subreaper.append(child)
        assert started["restart.sockets"] == "l0=3,l1=3"
        wait_log_after(p, mark, "restart: handing over, draining", timeout=30)
        assert p.wait(20) == 0
        sources = {r["listener"]: r["listen.source"] for r in p.records[mark:] if r.get("msg") == "listening"}
        assert sources == {"l0": "restart", "l1": "restart"}
        for port in ports:
            with tls.connect(port) as s:
                assert echo_roundtrip(s, b"after") == b"after"
        with tls.connect(ports[1], "denied") as s:  # allowed by the file the new process read
            assert echo_roundtrip(s, b"policy from the file") == b"policy from the file"
        assert stop_and_reap(child, timeout=15) == 0
        subreaper.remove(child)
    finally:
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        problems = stop_all([p], failed)
        assert not problems, problems


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_sigusr2_restart_hands_over_the_status_endpoint(proxy, tls, subreaper, kind):
    """The status socket goes to the new process too: probes never see a refused connection, /status names
    the new pid after the handover, and the old process neither keeps answering nor removes the socket file."""
    import json
    import socket as socketlib
    if kind == "tcp":
        sport = free_port()
        status_arg, connect_to = f"127.0.0.1:{sport}", ("127.0.0.1", sport)
    else:
        path = f"/tmp/portcullis-restart-status-{os.getpid()}-{free_port()}.sock"
        status_arg, connect_to = f"unix:{path}", path

    def get(path_: str) -> tuple[int, bytes]:
        family = socketlib.AF_INET if kind == "tcp" else socketlib.AF_UNIX
        with socketlib.socket(family, socketlib.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(connect_to)
            s.sendall(f"GET {path_} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    p = proxy(extra=["--status", status_arg, "--shutdown-timeout", "30s"])
    p.wait_log("status endpoint listening")
    assert json.loads(get("/status")[1])["pid"] == p.pid
    failures: list[str] = []
    probes = [0]
    stop = threading.Event()

    def probe():
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                assert get("/healthz")[0] == 200
                probes[0] += 1
            except Exception as e:  # noqa: BLE001
                failures.append(f"{type(e).__name__}: {e}")
            time.sleep(0.01)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    try:
        mark = len(p.records)
        p.send_signal(signal.SIGUSR2)
        started = wait_log_after(p, mark, "restart: new process started", timeout=10)
        child = int(started["restart.pid"])
        subreaper.append(child)
        assert "@status=1" in started["restart.sockets"]
        wait_log_after(p, mark, "restart: handing over, draining", timeout=30)
        assert p.wait(20) == 0
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(10)
    assert failures == [], failures[:5]
    assert probes[0] > 10
    assert json.loads(get("/status")[1])["pid"] == child
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"after") == b"after"
    assert stop_and_reap(child, timeout=15) == 0
    subreaper.remove(child)
    if kind == "unix":
        assert not os.path.exists(path)  # removed by the process that served it last


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges to nobody")
def test_sigusr2_restart_after_a_privilege_drop(proxy, tls, pki, tmp_path, subreaper):
    """Started as root with --user nobody: the re-executed process is already nobody, keeps being nobody,
    reads the (nobody-readable) key again and takes over the sockets."""
    import pwd
    import shutil
    nobody = pwd.getpwnam("nobody")
    import tempfile
    from pathlib import Path
    d = Path(tempfile.mkdtemp(prefix="portcullis-nobody-", dir="/tmp"))  # pytest's tmp is root-only (0700)
    try:
        _restart_as_nobody(d, nobody, proxy, tls, pki, subreaper)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _restart_as_nobody(d, nobody, proxy, tls, pki, subreaper):
    import shutil
    os.chmod(d, 0o755)
    cert, key = d / "server.pem", d / "server.key"
    shutil.copy(pki["server"].cert, cert)
    shutil.copy(pki["server"].key, key)
    os.chown(key, nobody.pw_uid, nobody.pw_gid)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    ca = d / "ca.pem"
    shutil.copy(pki.ca, ca)
    os.chmod(ca, 0o644)
    p = proxy(cert=str(cert), key=str(key), cacert=str(ca), extra=["--user", "nobody"])
    p.wait_log("dropped privileges")
    mark = len(p.records)
    p.send_signal(signal.SIGUSR2)
    started = wait_log_after(p, mark, "restart: new process started", timeout=10)
    child = int(started["restart.pid"])
    subreaper.append(child)
    wait_log_after(p, mark, "restart: handing over, draining", timeout=30)
    assert p.wait(20) == 0
    uid_line = next(line for line in open(f"/proc/{child}/status") if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"served by nobody") == b"served by nobody"
    assert stop_and_reap(child, timeout=15) == 0
    subreaper.remove(child)
