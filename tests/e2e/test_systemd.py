"""systemd integration without systemd: sd_notify messages caught on a test-owned NOTIFY_SOCKET, socket
activation with descriptors passed exactly as systemd passes them, and the example unit files."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import REPO_ROOT, Portcullis, binary_path, echo_roundtrip, free_port, stop_all, tls_connect
from systemd_helpers import NotifyReceiver, activation_wrapper, listening_socket, parse_unit

UNITS = REPO_ROOT / "examples" / "systemd"


@pytest.fixture
def notify():
    made: list[NotifyReceiver] = []

    def make(abstract: bool = False) -> NotifyReceiver:
        r = NotifyReceiver(abstract=abstract)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def started(request):
    """Portcullis processes this test starts itself (socket activation); stopped by PID at the end."""
    procs: list[Portcullis] = []
    yield procs
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(procs, failed)
    if problems:
        pytest.fail("\n".join(problems))


# ----------------------------------------------------------------------------------------------------------
# Type=notify
# ----------------------------------------------------------------------------------------------------------
def test_notify_ready_reload_watchdog_stopping(proxy, tls, notify):
    n = notify()
    p = proxy(env={"NOTIFY_SOCKET": n.address, "WATCHDOG_USEC": "200000"})
    i, ready = n.wait("READY", "1")
    assert "STATUS" in ready
    # READY=1 means accepting: a connection made right now is served.
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"ready means ready") == b"ready means ready"

    # WATCHDOG_USEC=200ms: a keep-alive every 100 ms.
    n.wait("WATCHDOG", "1", after=i + 1, timeout=3)
    j, _ = n.wait("WATCHDOG", "1", after=i + 1, timeout=3)
    n.wait("WATCHDOG", "1", after=j + 1, timeout=3)

    before = int(time.monotonic() * 1e6)
    mark = len(n.messages)
    p.send_signal(signal.SIGHUP)
    k, reloading = n.wait("RELOADING", "1", after=mark)
    after = int(time.monotonic() * 1e6)
    usec = int(reloading["MONOTONIC_USEC"])
    assert before <= usec <= after, f"MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC between {before} and {after}"
    _, reloaded = n.wait("READY", "1", after=k + 1)
    assert "reload failed" not in reloaded.get("STATUS", "")

    mark = len(n.messages)
    p.send_signal(signal.SIGTERM)
    _, stopping = n.wait("STOPPING", "1", after=mark)
    assert "draining" in stopping.get("STATUS", "")
    assert p.wait(10) == 0


def test_notify_abstract_socket_and_failed_reload_still_ready(proxy, tls, notify, pki, tmp_path):
    n = notify(abstract=True)
    cert = tmp_path / "server.pem"
    shutil.copy(pki["server"].cert, cert)
    p = proxy(cert=str(cert), env={"NOTIFY_SOCKET": n.address})
    i, _ = n.wait("READY", "1")
    assert not n.with_key("WATCHDOG"), "no WATCHDOG_USEC, yet keep-alives were sent"

    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    p.send_signal(signal.SIGHUP)
    k, _ = n.wait("RELOADING", "1", after=i + 1)
    _, ready = n.wait("READY", "1", after=k + 1)
    assert "reload failed" in ready.get("STATUS", ""), ready
    with tls.connect(p.port) as s:
        assert echo_roundtrip(s, b"old config serves") == b"old config serves"


def test_watchdog_for_another_pid_is_not_ours(proxy, notify):
    n = notify()
    proxy(env={"NOTIFY_SOCKET": n.address, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    n.wait("READY", "1")
    time.sleep(0.6)
    assert not n.with_key("WATCHDOG"), "WATCHDOG_PID names another process: its watchdog is not ours to feed"


# ----------------------------------------------------------------------------------------------------------
# Socket activation
# ----------------------------------------------------------------------------------------------------------
def _activated(started, pki, target, listen_port, fds, names, extra=()):
    env = {"LISTEN_FDS": str(len(fds))}
    if names is not None:
        env["LISTEN_FDNAMES"] = ":".join(names)
    args = ["server", "--listen", f"127.0.0.1:{listen_port}", "--target", target,
            "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
            "--allow-cn", "client-allowed", "--log-format", "json", "--workers", "2", *extra]
    p = Portcullis(args, env=env, port=listen_port, pass_fds=tuple(fds), wrapper=activation_wrapper(fds))
    started.append(p)
    return p


@pytest.mark.parametrize("by", ["name", "address"])
def test_socket_activation_serves_queued_and_new_connections(started, pki, tls, echo_backend, by):
    sock = listening_socket()
    port = sock.getsockname()[1]
    stray = listening_socket()  # passed too, but for no listener: must be closed, not left queueing
    stray_port = stray.getsockname()[1]

    # A client that connects and sends its ClientHello before portcullis exists: the kernel queues it.
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    early = tls.ctx().wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    outcome = {}

    def finish_early():
        try:
            early.do_handshake()
            outcome["echo"] = echo_roundtrip(early, b"queued before start", timeout=20)
        except Exception as e:  # noqa: BLE001
            outcome["error"] = repr(e)

    t = threading.Thread(target=finish_early, daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), f"the queued handshake ended before portcullis started: {outcome}"

    names = ["server", "stray"] if by == "name" else None
    p = _activated(started, pki, echo_backend.address, port, [sock.fileno(), stray.fileno()], names)
    sock.close()   # from here only portcullis holds the sockets
    stray.close()
    rec = p.wait_listening()
    assert rec.get("listen.source") == "systemd", rec
    p.wait_log("inherited socket matches no listener: closing it", timeout=5)

    t.join(20)
    assert outcome.get("echo") == b"queued before start", outcome
    early.close()
    with tls_connect(port, tls.ctx()) as s:
        assert echo_roundtrip(s, b"after start") == b"after start"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", stray_port), timeout=2).close()

    # A reload that keeps the listener's address keeps the inherited socket.
    p.send_signal(signal.SIGHUP)
    p.wait_log("reloaded", timeout=10)
    with tls_connect(port, tls.ctx()) as s:
        assert echo_roundtrip(s, b"after reload") == b"after reload"
    assert not p.logs("listening", pred=lambda r: r.get("listen.source") == "bound")
    assert not p.logs(pred=lambda r: r.get("level") == "error")


def test_socket_activation_rejects_a_non_listening_descriptor(started, pki, echo_backend):
    port = free_port()
    r, w = os.pipe()
    p = _activated(started, pki, echo_backend.address, port, [r], ["server"])
    os.close(r)
    os.close(w)
    p.wait_log("inherited descriptor is unusable: closing it", timeout=10)
    rec = p.wait_listening()
    assert rec.get("listen.source") == "bound"


# ----------------------------------------------------------------------------------------------------------
# The example units
# ----------------------------------------------------------------------------------------------------------
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
}


def test_service_unit_declares_notify_and_hardening():
    unit = parse_unit(UNITS / "portcullis@.service")
    service = unit["Service"]

    def one(key):
        assert key in service, f"[Service] has no {key}="
        return service[key][-1]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "all", "the SIGUSR2 successor notifies from a new pid"
    assert one("ExecStart").split()[1:] == ["run", "--config", "/etc/portcullis/%i.yaml"]
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("WatchdogSec")
    assert one("Restart") == "on-failure"
    for key, value in HARDENING.items():
        assert one(key) == value, f"{key}={one(key)}, expected {value}"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in " ".join(service["SystemCallFilter"]).split()
    assert "/etc/portcullis" in one("ReadOnlyPaths").split()
    assert one("User") and one("Group") or one("DynamicUser") == "yes"

    sock = parse_unit(UNITS / "portcullis@.socket")["Socket"]
    assert sock.get("ListenStream"), "the socket unit listens on nothing"
    assert sock.get("FileDescriptorName"), "FileDescriptorName= names the listener the socket is for"


def test_units_pass_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); the key check above still ran")
    # verify checks that ExecStart= exists: point it at the binary under test. An instance of the template
    # is verified (a template itself cannot be loaded), next to its socket unit.
    binary = str(binary_path())
    for name in ("portcullis@.service", "portcullis@.socket"):
        text = (UNITS / name).read_text().replace("/usr/local/bin/portcullis", binary)
        (tmp_path / name.replace("@.", "@demo.")).write_text(text)
    r = subprocess.run([tool, "verify", "--man=no", str(tmp_path / "portcullis@demo.socket"),
                        str(tmp_path / "portcullis@demo.service")],
                       capture_output=True, text=True, timeout=60)
    output = (r.stdout + r.stderr).strip()
    # Without systemd as PID 1 verify still parses and checks the units; it only cannot talk to a manager.
    problems = [line for line in output.splitlines()
                if "portcullis@demo" in line or "Unknown" in line or "Failed to" in line and "bus" not in line]
    assert r.returncode == 0 and not problems, f"systemd-analyze verify (rc={r.returncode}):\n{output}"
