"""`--listen unix:PATH` and `--listen systemd:NAME` (and the same values for a listener's `listen:` key), as
ghostunnel and stunnel users write them: a Unix stream socket Portcullis binds, owns and removes, or the
sockets systemd passed under a FileDescriptorName=. Real binary, real certificates, Python ssl over AF_UNIX,
real socket activation by /usr/bin/systemd-socket-activate."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import stat
import struct
import tempfile
import threading
import time

import pytest

from harness import (AcceptingServer, stop_and_reap, ConfigFile, Portcullis, echo_roundtrip, free_port, listener_config,
                     run_portcullis_once, start_run, stop_all, tls_connect, wait_log_after, wait_until)
from systemd_helpers import activation_wrapper, listening_socket

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def sockdir():
    """A short directory for socket paths (sun_path holds 107 bytes; pytest's tmp_path can be longer)."""
    d = tempfile.mkdtemp(prefix="pc-listen-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def started(request):
    """Portcullis processes this test starts itself; stopped by PID at the end (crashes fail the test)."""
    procs: list[Portcullis] = []
    yield procs
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(procs, failed)
    if problems:
        pytest.fail("\n".join(problems))


def server_args(pki, listen: str, target: str, *extra: str) -> list[str]:
    return ["server", "--listen", listen, "--target", target,
            "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
            "--allow-cn", "client-allowed", "--log-format", "json", "--log-level", "info", *extra]


def start_server(started, pki, listen: str, target: str, *extra: str, env: dict | None = None,
                 wrapper: list[str] | None = None, pass_fds: tuple = (), wait: bool = True) -> Portcullis:
    p = Portcullis(server_args(pki, listen, target, *extra), env=env, wrapper=wrapper, pass_fds=pass_fds)
    started.append(p)
    if wait:
        p.wait_listening()
    return p


def unix_tls(path: str, ctx: ssl.SSLContext, timeout: float = 5.0) -> ssl.SSLSocket:
    """A TLS connection over AF_UNIX, handshaken (server name 'localhost', as the test certificates carry)."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.connect(path)
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def unix_refused(path: str, ctx: ssl.SSLContext) -> str:
    """Connect over AF_UNIX, handshake, read once: the peer must refuse us with a TLS alert (TLS 1.3 reports
    a refused client certificate on the client's first read). Returns the error text."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(5)
    raw.connect(path)
    try:
        try:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
        except ssl.SSLError as e:
            return str(e)
        s.settimeout(3)
        with pytest.raises(ssl.SSLError) as refused:
            data = s.recv(1)
            raise AssertionError(f"not refused: read {data!r}")
        s.close()
        return str(refused.value)
    finally:
        raw.close()


def plain_unix(path: str, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def inode(path: str) -> int:
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode), f"{path} is not a socket"
    return st.st_ino


def is_listening(path: str) -> bool:
    try:
        plain_unix(path, timeout=1).close()
        return True
    except OSError:
        return False


class UnixEchoBackend(AcceptingServer):
    """Not needed for targets (the conftest backend does TCP and Unix); used as a *live* socket in the way."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self._start_accepting()

    def _serve(self, c: socket.socket):
        c.close()

    def close(self):
        self._closed = True
        self.sock.close()
        self.thread.join(2)


# ----------------------------------------------------------------------------------------------------------
# server mode: admission, audit line, socket file
# ----------------------------------------------------------------------------------------------------------
def test_server_unix_listener_admits_allowed_refuses_denied(started, pki, tls, backend, sockdir):
    echo = backend("echo")
    path = os.path.join(sockdir, "tls.sock")
    p = start_server(started, pki, f"unix:{path}", echo.address, "--workers", "2")
    rec = p.logs("listening")[0]
    assert rec["listen.address"] == f"unix:{path}" and rec["listen.source"] == "bound", rec
    # Local: no --unsafe-listen was needed. The file is a socket with the umask's mode, ours.
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid()

    for i in range(4):  # both workers share the one socket (duplicated descriptors): all served
        with unix_tls(path, tls.ctx("allowed")) as s:
            assert s.version() == "TLSv1.3"
            assert echo_roundtrip(s, b"over a unix socket %d" % i) == b"over a unix socket %d" % i
    closed = p.wait_log("connection closed", timeout=5)
    # A Unix client has no address: the audit line names the socket and the peer process (SO_PEERCRED).
    assert closed["conn.peer"] == f"unix:{path}", closed
    assert closed["conn.peer.pid"] == str(os.getpid()) and closed["conn.peer.uid"] == str(os.getuid()), closed
    assert closed["tls.peer.subject"].startswith("CN=client-allowed"), closed

    accepted = echo.accepted
    text = unix_refused(path, tls.ctx("denied"))
    assert "alert" in text.lower() or "certificate" in text.lower(), text
    failed = p.wait_log("handshake failed", timeout=5)
    assert failed["conn.peer"] == f"unix:{path}" and failed["handshake.error"] == "denied", failed
    time.sleep(0.3)  # nothing may arrive late either
    assert echo.accepted == accepted, "a denied client's connection reached the backend"


def test_socket_file_removed_on_sigterm_and_kept_by_no_one_else(started, pki, tls, echo_backend, sockdir):
    path = os.path.join(sockdir, "tls.sock")
    p = start_server(started, pki, f"unix:{path}", echo_backend.address)
    with unix_tls(path, tls.ctx()) as s:
        assert echo_roundtrip(s, b"before exit") == b"before exit"
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    assert not os.path.lexists(path), "the socket file outlived a clean exit"


def test_stale_socket_replaced_regular_file_and_live_socket_refused(started, pki, tls, echo_backend, sockdir):
    # A crashed process leaves its socket file behind: bound, nobody listening.
    stale = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    assert os.path.lexists(stale) and not is_listening(stale)
    start_server(started, pki, f"unix:{stale}", echo_backend.address)
    # (tmpfs reuses inode numbers at once, so an inode comparison proves nothing: being served does.)
    with unix_tls(stale, tls.ctx()) as c:
        assert echo_roundtrip(c, b"after a crash") == b"after a crash"

    # A regular file is never removed: one line naming the flag and the fix.
    regular = os.path.join(sockdir, "data.txt")
    with open(regular, "w") as f:
        f.write("precious\n")
    r = run_portcullis_once(server_args(pki, f"unix:{regular}", echo_backend.address))
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert f"--listen 'unix:{regular}': a file that is not a socket is in the way" in lines[0], r.stderr
    assert open(regular).read() == "precious\n"

    # A live socket (another process accepts on it) is not stolen either.
    live_path = os.path.join(sockdir, "live.sock")
    live = UnixEchoBackend(live_path)
    try:
        r = run_portcullis_once(server_args(pki, f"unix:{live_path}", echo_backend.address))
        assert r.returncode != 0
        assert f"--listen 'unix:{live_path}': another process listens on this socket" in r.stderr, r.stderr
        assert is_listening(live_path)
    finally:
        live.close()

    # A relative path is refused before anything is touched.
    r = run_portcullis_once(server_args(pki, "unix:relative.sock", echo_backend.address))
    assert r.returncode != 0
    assert "--listen (config key listen): 'unix:relative.sock' is not an absolute socket path" in r.stderr, r.stderr
    # And one too long for sun_path.
    long_path = "/tmp/" + "x" * 110
    r = run_portcullis_once(server_args(pki, f"unix:{long_path}", echo_backend.address))
    assert r.returncode != 0 and "is too long: a socket path is at most 107 bytes" in r.stderr, r.stderr


# ----------------------------------------------------------------------------------------------------------
# client mode
# ----------------------------------------------------------------------------------------------------------
def test_client_mode_unix_listener_tunnels_over_mtls(started, proxy, pki, backend, sockdir):
    echo = backend("echo")
    server = proxy(target=echo.address)
    path = os.path.join(sockdir, "app.sock")
    c = pki["allowed"]
    client = Portcullis(["client", "--listen", f"unix:{path}", "--target", f"localhost:{server.port}",
                         "--cert", c.cert, "--key", c.key, "--cacert", pki.ca,
                         "--log-format", "json", "--log-level", "info"], name="portcullis-client")
    started.append(client)
    rec = client.wait_listening()
    assert rec["listen.address"] == f"unix:{path}", rec
    with plain_unix(path) as app:
        app.sendall(b"plaintext from a local app")
        assert recv_all(app, 26) == b"plaintext from a local app"
    # The server saw an mTLS client with our certificate; the sidecar's audit line names the local peer.
    admitted = server.wait_log("connection closed", timeout=5)
    assert admitted["tls.peer.subject"].startswith("CN=client-allowed"), admitted
    local = client.wait_log("connection closed", timeout=5)
    assert local["conn.peer"] == f"unix:{path}" and local["conn.peer.uid"] == str(os.getuid()), local
    client.send_signal(signal.SIGTERM)
    assert client.wait(15) == 0
    assert not os.path.lexists(path)


def recv_all(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


# ----------------------------------------------------------------------------------------------------------
# reload and restart
# ----------------------------------------------------------------------------------------------------------
def unix_listener(pki, name: str, path: str, target: str) -> dict:
    d = listener_config(pki, name, 0, target, rules=[{"name": "allowed", "cn": "client-allowed"}])
    d["listen"] = f"unix:{path}"
    return d


def test_sighup_keeps_the_socket_and_a_new_path_rebinds(started, pki, tls, echo_backend, sockdir, tmp_path):
    path = os.path.join(sockdir, "a.sock")
    config = ConfigFile(tmp_path / "portcullis.yaml", [unix_listener(pki, "app", path, echo_backend.address)])
    p = start_run(config)
    started.append(p)
    p.wait_listening()
    original = inode(path)
    held = unix_tls(path, tls.ctx())
    assert echo_roundtrip(held, b"before reload") == b"before reload"

    mark = len(p.records)
    p.send_signal(signal.SIGHUP)
    wait_log_after(p, mark, "reloaded", timeout=10)
    assert inode(path) == original, "an unchanged unix listener was rebound"
    with unix_tls(path, tls.ctx()) as s:
        assert echo_roundtrip(s, b"after reload") == b"after reload"
    assert echo_roundtrip(held, b"held across reload") == b"held across reload"

    # A changed path: the new socket is bound, the old file removed, live connections kept.
    moved = os.path.join(sockdir, "b.sock")
    config.listener("app")["listen"] = f"unix:{moved}"
    config.write()
    mark = len(p.records)
    p.send_signal(signal.SIGHUP)
    wait_log_after(p, mark, "reloaded", timeout=10)
    with unix_tls(moved, tls.ctx()) as s:
        assert echo_roundtrip(s, b"on the new path") == b"on the new path"
    assert not os.path.lexists(path), "the old socket file was left behind"
    assert echo_roundtrip(held, b"still held") == b"still held"
    held.close()
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    assert not os.path.lexists(moved)


def test_sigusr2_restart_keeps_the_unix_socket(started, pki, tls, echo_backend, sockdir, subreaper):
    path = os.path.join(sockdir, "tls.sock")
    p = start_server(started, pki, f"unix:{path}", echo_backend.address, "--workers", "2", "--shutdown-timeout", "30s")
    original = inode(path)
    held = unix_tls(path, tls.ctx())
    assert echo_roundtrip(held, b"opened before the restart") == b"opened before the restart"

    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def stream():
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            try:
                with unix_tls(path, tls.ctx(), timeout=10) as s:
                    if echo_roundtrip(s, b"conn %d" % n) != b"conn %d" % n:
                        raise AssertionError("echo mismatch")
                served[0] += 1
            except Exception as e:  # noqa: BLE001 — every failure counts
                failures.append(f"#{n}: {type(e).__name__}: {e}")

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        wait_until(lambda: served[0] >= 5, 10, what="connections before the restart")
        mark = len(p.records)
        p.send_signal(signal.SIGUSR2)
        child = int(wait_log_after(p, mark, "restart: new process started", timeout=10)["restart.pid"])
        subreaper.append(child)
        wait_log_after(p, mark, "restart: handing over, draining", timeout=30)
        # The successor adopted the very socket (binding would have found it live and failed).
        adopted = wait_log_after(p, mark, "listening", timeout=10, **{"listen.source": "restart"})
        assert adopted["listen.address"] == f"unix:{path}", adopted
        before_exit = served[0]
        # The old process still serves what it had, then exits; it must leave the successor's socket file.
        assert echo_roundtrip(held, b"held during the handover") == b"held during the handover"
        held.close()
        assert p.wait(30) == 0
        wait_until(lambda: served[0] >= before_exit + 5, 15, what="connections after the old process exited")
    finally:
        stop.set()
        t.join(30)
    assert not failures, f"{len(failures)} connection(s) failed across the restart: {failures[:5]}"
    assert os.path.lexists(path) and inode(path) == original, "the socket file was removed or replaced by the restart"
    with unix_tls(path, tls.ctx()) as s:
        assert echo_roundtrip(s, b"served by the successor") == b"served by the successor"

    # The successor owns the file now: its clean exit removes it.
    subreaper.remove(child)
    assert stop_and_reap(child, timeout=15) == 0
    assert not os.path.lexists(path), "the successor left the socket file behind"


# ----------------------------------------------------------------------------------------------------------
# systemd:NAME
# ----------------------------------------------------------------------------------------------------------
def socket_activate(listen: str, name: str) -> list[str]:
    """argv prefix: systemd-socket-activate binds `listen`, waits for the first connection, then execs the
    binary in place (same pid) with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES=name."""
    exe = shutil.which("systemd-socket-activate")
    if not exe:
        pytest.fail("systemd-socket-activate is not installed (apt-get install systemd)")
    return [exe, "-l", listen, f"--fdname={name}"]


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_systemd_name_uses_the_passed_socket(started, pki, tls, echo_backend, sockdir, kind):
    if kind == "tcp":
        port = free_port()
        listen = f"127.0.0.1:{port}"
    else:
        path = os.path.join(sockdir, "activated.sock")
        listen = path
    p = start_server(started, pki, "systemd:web", echo_backend.address, "--workers", "2",
                     wrapper=socket_activate(listen, "web"), wait=False)

    def connect():
        return tls_connect(port, tls.ctx(), timeout=20) if kind == "tcp" else unix_tls(listen, tls.ctx(), timeout=20)

    def ready():
        return os.path.lexists(listen) if kind == "unix" else port_open(port)

    wait_until(ready, 10, what="systemd-socket-activate to listen")
    # The first connection makes systemd-socket-activate exec portcullis; it waits in the queue meanwhile.
    with connect() as s:
        assert echo_roundtrip(s, b"activated", timeout=20) == b"activated"
    rec = p.wait_listening()
    assert rec["listen.source"] == "systemd", rec
    expected = f"127.0.0.1:{port}" if kind == "tcp" else f"unix:{listen}"
    assert rec["listen.address"] == expected, rec
    assert not p.logs("listening", pred=lambda r: r.get("listen.source") == "bound")

    # A reload keeps systemd's socket (nothing to bind).
    p.send_signal(signal.SIGHUP)
    p.wait_log("reloaded", timeout=10)
    with connect() as s:
        assert echo_roundtrip(s, b"after reload") == b"after reload"
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    if kind == "unix":
        # The file belongs to the socket unit (systemd-socket-activate here), not to us.
        assert os.path.lexists(listen), "portcullis removed a socket file systemd owns"


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_systemd_name_picks_its_own_name_among_several(started, pki, tls, echo_backend):
    web, other = listening_socket(), listening_socket()
    fds = [other.fileno(), web.fileno()]
    p = start_server(started, pki, "systemd:web", echo_backend.address,
                     env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "other:web"},
                     wrapper=activation_wrapper(fds), pass_fds=tuple(fds))
    web_port, other_port = web.getsockname()[1], other.getsockname()[1]
    web.close()
    other.close()
    assert p.logs("listening")[0]["listen.address"] == f"127.0.0.1:{web_port}"
    with tls_connect(web_port, tls.ctx()) as s:
        assert echo_roundtrip(s, b"by name") == b"by name"
    p.wait_log("inherited socket matches no listener: closing it", timeout=5)
    wait_until(lambda: not port_open(other_port), 5, what="the unclaimed socket to close")


def test_systemd_name_without_sockets_fails_in_one_line(pki, echo_backend):
    r = run_portcullis_once(server_args(pki, "systemd:web", echo_backend.address))
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "--listen 'systemd:web': systemd passed no sockets" in lines[0], r.stderr
    assert "FileDescriptorName=web" in lines[0], r.stderr


def test_systemd_name_with_other_names_lists_them(started, pki, echo_backend):
    sock = listening_socket()
    fds = [sock.fileno()]
    p = Portcullis(server_args(pki, "systemd:web", echo_backend.address),
                   env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "api"}, wrapper=activation_wrapper(fds), pass_fds=tuple(fds))
    started.append(p)
    sock.close()
    assert p.wait(15) != 0
    text = "\n".join(p.lines)
    assert "--listen 'systemd:web': systemd passed no socket named 'web' (passed: api)" in text, text
    assert "FileDescriptorName=web" in text


def test_client_mode_systemd_socket_off_loopback_needs_unsafe_listen(started, pki, sockdir):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))  # bound, never connected to from outside: the check is on the address alone
    sock.listen(8)
    fds = [sock.fileno()]
    c = pki["allowed"]
    p = Portcullis(["client", "--listen", "systemd:out", "--target", "localhost:1", "--cert", c.cert, "--key", c.key,
                    "--cacert", pki.ca, "--log-format", "json"],
                   env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "out"}, wrapper=activation_wrapper(fds), pass_fds=tuple(fds))
    started.append(p)
    sock.close()
    assert p.wait(15) != 0
    text = "\n".join(p.lines)
    assert "--listen 'systemd:out': systemd passed a socket on 0.0.0.0:" in text and "not on loopback" in text, text


# ----------------------------------------------------------------------------------------------------------
# PROXY protocol v2 from a unix listener
# ----------------------------------------------------------------------------------------------------------
def read_exact(c: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        d = c.recv(n - len(buf))
        if not d:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


def tlvs(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        t, n = data[i], struct.unpack("!H", data[i + 1:i + 3])[0]
        assert i + 3 + n <= len(data), f"TLV 0x{t:02x} overruns the header"
        out[t] = data[i + 3:i + 3 + n]
        i += 3 + n
    return out


class UnixFamilyBackend(AcceptingServer):
    """A TCP target that parses one PROXY v2 header of family AF_UNIX/STREAM (0x31), records it, then echoes."""

    def __init__(self):
        self.headers: list[dict] = []
        self.errors: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(16)
        self._start_accepting()

    def _serve(self, c: socket.socket):
        c.settimeout(10)
        try:
            fixed = read_exact(c, 16)
            assert fixed[:12] == SIGNATURE and fixed[12] == 0x21, fixed
            body = read_exact(c, struct.unpack("!H", fixed[14:16])[0])
            src, dst = body[:108], body[108:216]
            top = tlvs(body[216:])
            ssl_block = top[0x20]
            with self.lock:
                self.headers.append({"family": fixed[13], "src": src.rstrip(b"\0"), "dst": dst.rstrip(b"\0"),
                                     "src_raw": src, "tlvs": top, "ssl": tlvs(ssl_block[5:]), "client": ssl_block[0]})
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except (AssertionError, OSError, KeyError) as e:
            with self.lock:
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            c.close()

    def close(self):
        self._closed = True
        self.sock.close()
        self.thread.join(2)


def test_proxy_protocol_v2_from_a_unix_listener(started, pki, tls, sockdir):
    target = UnixFamilyBackend()
    try:
        path = os.path.join(sockdir, "pp.sock")
        start_server(started, pki, f"unix:{path}", target.address, "--proxy-protocol", "v2")
        with unix_tls(path, tls.ctx()) as s:
            assert echo_roundtrip(s, b"after the header") == b"after the header"
        wait_until(lambda: target.headers or target.errors, 5, what="the target to parse a header")
        assert not target.errors, target.errors
        h = target.headers[0]
        assert h["family"] == 0x31, f"family 0x{h['family']:02x}, want 0x31 (AF_UNIX, STREAM)"
        assert h["src"] == b"" and h["src_raw"] == b"\0" * 108  # a Unix client has no address of its own
        assert h["dst"] == path.encode()
        assert h["ssl"][0x22] == b"client-allowed"  # the identity TLVs are there as for TCP clients
        assert h["ssl"][0x21] == b"TLSv1.3"
        assert h["client"] & 0x01
    finally:
        target.close()


# ----------------------------------------------------------------------------------------------------------
# --user: the socket is bound as root, then handed to the user
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root: run the suite as root (CI does)")
def test_user_switch_hands_the_socket_file_to_the_user(started, pki, tls, echo_backend, sockdir):
    import pwd
    nobody = pwd.getpwnam("nobody")
    os.chmod(sockdir, 0o1777)  # like /run/portcullis (RuntimeDirectory=): the user may remove its socket
    path = os.path.join(sockdir, "tls.sock")
    p = Portcullis(server_args(pki, f"unix:{path}", echo_backend.address, "--user", "nobody"), allow_root=False)
    started.append(p)
    p.wait_listening()
    p.wait_log("dropped privileges", timeout=5)
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), "the socket file still belongs to root"
    with unix_tls(path, tls.ctx()) as s:
        assert echo_roundtrip(s, b"as nobody") == b"as nobody"
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    assert not os.path.lexists(path), "the unprivileged process could not remove its socket file"


def test_per_source_handshake_limit_counts_a_unix_client_by_its_uid(started, pki, tls, echo_backend, sockdir):
    path = os.path.join(sockdir, "tls.sock")
    p = start_server(started, pki, f"unix:{path}", echo_backend.address, "--workers", "1",
                     "--max-handshakes-per-source", "1")
    stalled = plain_unix(path)  # connected, never says hello: one handshake in progress for our uid
    try:
        # One worker, one accept queue: the stalled connection is accepted (and counted) before this one.
        second = plain_unix(path)
        second.settimeout(5)
        assert second.recv(1) == b"", "a second handshake from the same user was not refused"
        second.close()
        refused = p.wait_log("connection refused: per-source handshake limit", timeout=5)
        assert refused["conn.peer"] == f"unix:{path}" and refused["conn.peer.uid"] == str(os.getuid()), refused
    finally:
        stalled.close()
    # Once the stalled one is gone, the user may handshake again.
    wait_until(lambda: try_echo(path, tls), 10, what="a handshake after the stalled one closed")


def try_echo(path: str, tls) -> bool:
    try:
        with unix_tls(path, tls.ctx()) as s:
            return echo_roundtrip(s, b"again") == b"again"
    except (OSError, ssl.SSLError):
        return False


def test_sigusr2_after_a_path_change_binds_the_new_path(started, pki, tls, echo_backend, sockdir, tmp_path, subreaper):
    old, new = os.path.join(sockdir, "old.sock"), os.path.join(sockdir, "new.sock")
    config = ConfigFile(tmp_path / "portcullis.yaml", [unix_listener(pki, "app", old, echo_backend.address)])
    p = start_run(config)
    started.append(p)
    p.wait_listening()
    config.listener("app")["listen"] = f"unix:{new}"
    config.write()
    # SIGUSR2 at once, usually inside the file watcher's 300 ms debounce: the reload it would trigger is then
    # ignored (a restart is in progress), so the new process is the one that meets the changed path and binds
    # it. On a slow machine the reload may come first (the old process moves to the new path and hands that
    # socket over): either way the new path is served and the old one is not.
    mark = len(p.records)
    p.send_signal(signal.SIGUSR2)
    child = int(wait_log_after(p, mark, "restart: new process started", timeout=10)["restart.pid"])
    subreaper.append(child)
    wait_log_after(p, mark, "restart: handing over, draining", timeout=30)
    fresh = wait_log_after(p, mark, "listening", timeout=10, **{"listen.address": f"unix:{new}"})
    # Never the old path's socket handed over under the listener's name.
    assert fresh["listen.source"] in ("bound", "restart"), fresh
    assert p.wait(30) == 0
    with unix_tls(new, tls.ctx()) as s:
        assert echo_roundtrip(s, b"on the new path") == b"on the new path"
    assert not is_listening(old), "the old path is still served after the restart"


# ----------------------------------------------------------------------------------------------------------
# --status systemd:NAME (ghostunnel accepts it too)
# ----------------------------------------------------------------------------------------------------------
def http_status(port: int, path: str, ctx: ssl.SSLContext | None = None) -> bytes:
    """The raw answer to one GET on the status port (over TLS with `ctx`)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        return got
    finally:
        s.close()


@pytest.mark.parametrize("scheme", ["", "https://"])
def test_status_on_a_socket_systemd_passed(started, pki, tls, echo_backend, scheme):
    web, status = listening_socket(), listening_socket()
    fds = [web.fileno(), status.fileno()]
    p = start_server(started, pki, "systemd:web", echo_backend.address, "--status", f"{scheme}systemd:status",
                     env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:status"},
                     wrapper=activation_wrapper(fds), pass_fds=tuple(fds))
    web_port, status_port = web.getsockname()[1], status.getsockname()[1]
    web.close()
    status.close()
    line = p.wait_log("status endpoint listening", timeout=10)
    assert line["status.address"] == f"{scheme}systemd:status", line
    ctx = ssl.create_default_context(cafile=pki.ca) if scheme else None
    answer = http_status(status_port, "/healthz", ctx)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b'"ok":true' in http_status(status_port, "/_status", ctx).replace(b" ", b"")
    with tls_connect(web_port, tls.ctx()) as s:
        assert echo_roundtrip(s, b"beside status") == b"beside status"
    assert not p.logs("inherited socket matches no listener: closing it")


def test_status_systemd_name_not_passed_fails_in_one_line(pki, echo_backend):
    sock = listening_socket()
    fds = [sock.fileno()]
    p = Portcullis(server_args(pki, "systemd:web", echo_backend.address, "--status", "systemd:status"),
                   env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}, wrapper=activation_wrapper(fds), pass_fds=tuple(fds))
    sock.close()
    try:
        assert p.wait(15) != 0
    finally:
        p.stop()
    errors = [line for line in p.lines if "systemd:status" in line]
    assert errors and "--status 'systemd:status': systemd passed no socket named 'status'" in errors[0], p.lines
    assert "FileDescriptorName=status" in errors[0]


def test_sigusr2_hands_over_a_systemd_status_socket(started, pki, tls, echo_backend, subreaper):
    web, status = listening_socket(), listening_socket()
    fds = [web.fileno(), status.fileno()]
    p = start_server(started, pki, "systemd:web", echo_backend.address, "--status", "systemd:status",
                     env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:status"},
                     wrapper=activation_wrapper(fds), pass_fds=tuple(fds))
    web_port, status_port = web.getsockname()[1], status.getsockname()[1]
    web.close()
    status.close()
    p.wait_log("status endpoint listening", timeout=10)
    assert http_status(status_port, "/healthz").startswith(b"HTTP/1.1 200")
    mark = len(p.records)
    p.send_signal(signal.SIGUSR2)
    child = int(wait_log_after(p, mark, "restart: new process started", timeout=10)["restart.pid"])
    subreaper.append(child)
    # The successor has no LISTEN_FDS: it serves the status socket the old process handed over.
    wait_log_after(p, mark, "status endpoint listening", timeout=10)
    assert p.wait(30) == 0
    assert http_status(status_port, "/healthz").startswith(b"HTTP/1.1 200")
    with tls_connect(web_port, tls.ctx()) as s:
        assert echo_roundtrip(s, b"after the restart") == b"after the restart"
    subreaper.remove(child)
    assert stop_and_reap(child, timeout=15) == 0
