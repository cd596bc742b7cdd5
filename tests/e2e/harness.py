"""Helpers for the Portcullis end-to-end tests: ports, backends, the proxy process, TLS clients.

Everything started here is stopped by PID (never by name), and every wait has a deadline.
conftest.py wraps these in pytest fixtures with finalizers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "portcullis"
LISTEN_TIMEOUT = 20.0

# Signals we send to stop things ourselves; a process that dies of anything else crashed.
_OUR_SIGNALS = {signal.SIGTERM, signal.SIGKILL, signal.SIGINT}


def binary_path() -> Path:
    p = Path(os.environ.get("PORTCULLIS_BIN", str(DEFAULT_BIN)))
    return p if p.is_absolute() else (REPO_ROOT / p)


def asan_log_dir() -> str | None:
    return os.environ.get("PORTCULLIS_ASAN_LOG_DIR") or None


# ----------------------------------------------------------------------------------------------
# Ports
# ----------------------------------------------------------------------------------------------
_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on now and that this session has not handed out before."""
    with _port_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port")


def wait_until(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------
# Plaintext backends (the proxy's target)
# ----------------------------------------------------------------------------------------------
class AcceptingServer:
    """A listening socket served by a daemon accept thread: each accepted connection is counted in
    `accepted`, kept in `conns`, and handed to `self._serve(c)` on a thread of its own. Subclasses set up
    `self.sock` (bound and listening) and call `self._start_accepting()`; `_closed` stops the loop."""

    def _start_accepting(self):
        self.lock = getattr(self, "lock", None) or threading.Lock()
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._closed = False
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, name=f"{type(self).__name__}-accept", daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self._closed:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket):
        raise NotImplementedError


class Backend(AcceptingServer):
    """Threaded plaintext server that counts everything.

    mode "echo":    echo bytes back; on EOF shut down write and close.
    mode "trailer": echo bytes back; on EOF wait 0.2 s, send b"BYE <n>\\n" (n = bytes received), close.
    mode "sink":    read and discard; on EOF close.
    mode "banner":  send b"HELLO FROM TARGET\n" at once, then shut down write and close (target ends first).
    mode "hold":    echo; on EOF keep its own side open (never answers the half-close) until close().
    unix_path: listen on a unix socket instead of 127.0.0.1:<free port>.
    """

    def __init__(self, mode: str = "echo", unix_path: str | None = None):
        assert mode in ("echo", "trailer", "sink", "banner", "hold")
        self.mode = mode
        self.unix_path = unix_path
        self.bytes_in = 0
        self.bytes_out = 0
        self.eofs = 0  # connections on which the backend saw EOF from the proxy
        self.eof_event = threading.Event()
        if unix_path:
            try:
                os.unlink(unix_path)
            except FileNotFoundError:
                pass
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.address = f"unix:{unix_path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.address = f"127.0.0.1:{self.port}"
        self.sock.listen(128)
        self._start_accepting()


    def _serve(self, c: socket.socket):
        total = 0
        try:
            c.settimeout(120)
            if self.mode == "banner":
                c.sendall(b"HELLO FROM TARGET\n")
                c.shutdown(socket.SHUT_WR)
                time.sleep(0.5)
                return
            while True:
                data = c.recv(262144)
                if not data:
                    break
                total += len(data)
                with self.lock:
                    self.bytes_in += len(data)
                if self.mode in ("echo", "trailer", "hold"):
                    c.sendall(data)
                    with self.lock:
                        self.bytes_out += len(data)
            with self.lock:
                self.eofs += 1
            self.eof_event.set()
            if self.mode == "trailer":
                time.sleep(0.2)
                c.sendall(b"BYE %d\n" % total)
            elif self.mode == "hold":
                while not self._closed:
                    time.sleep(0.1)
                return
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except (OSError, ValueError):  # reset by the proxy, or closed by close() at test end
            pass
        finally:
            c.close()

    def reset_all(self):
        """Abort every accepted connection with a TCP RST (SO_LINGER 0)."""
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(timeout=2)
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------
# The proxy process
# ----------------------------------------------------------------------------------------------
_SERVING_COMMANDS = ("server", "client", "run")


def with_root_guard(args: list[str], allow_root: bool = True) -> list[str]:
    """The tests run as root (CI does), and `server`/`client`/`run` refuse root without --user or --allow-root:
    append --allow-root unless the test chose (--user, --allow-root, or allow_root=False to see the refusal)."""
    args = [str(a) for a in args]
    if (allow_root and os.geteuid() == 0 and args and args[0] in _SERVING_COMMANDS
            and "--user" not in args and "--allow-root" not in args):
        args.append("--allow-root")
    return args


class ProcessDied(AssertionError):
    pass


class Portcullis:
    """One `portcullis server` process. stderr is parsed as JSON lines by a reader thread.

    .lines     all stderr lines (str);  .records  parsed JSON objects ({"raw": line} for non-JSON)
    .logs(msg=None, **where)      records with that msg whose keys equal the given values
                                  (pass dotted keys via a dict: .logs("connection closed", **{"conn.peer": p}))
    .wait_log(msg, timeout, pred=None, **where)   first matching record, waiting for it
    .send_signal(sig) / .stop(timeout) / .wait(timeout) / .alive() / .rss_kb()
    """

    def __init__(self, args: list[str], env: dict | None = None, port: int | None = None, name: str = "portcullis",
                 allow_root: bool = True, pass_fds: tuple = (), wrapper: list[str] | None = None):
        """pass_fds: descriptors the process inherits; wrapper: argv put before the binary (it must exec it,
        keeping the pid — e.g. a shell that sets LISTEN_PID=$$ for socket activation)."""
        self.args = with_root_guard(args, allow_root)
        self.port = port
        self.name = name
        self.lines: list[str] = []
        self.records: list[dict] = []
        self.stdout_lines: list[str] = []
        self.cond = threading.Condition()
        self.signals_sent: list[int] = []
        full_env = dict(os.environ)
        full_env.update(env or {})
        adir = asan_log_dir()
        if adir:
            full_env["ASAN_OPTIONS"] = f"detect_leaks=1:log_path={adir}/asan"
        tdir = os.environ.get("PORTCULLIS_TSAN_LOG_DIR")
        if tdir:
            suppressions = Path(__file__).with_name("tsan.supp")
            full_env["TSAN_OPTIONS"] = (f"log_path={tdir}/tsan:halt_on_error=0:second_deadlock_stack=1"
                                        + (f":suppressions={suppressions}" if suppressions.exists() else ""))
        self.cmd = (wrapper or []) + [str(binary_path())] + self.args
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env, start_new_session=True,
                                     pass_fds=pass_fds)
        self.pid = self.proc.pid
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err.start()
        self._t_out.start()

    # -- output ---------------------------------------------------------------------------------
    def _read_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    rec = {"raw": line}
            except ValueError:
                rec = {"raw": line}
            with self.cond:
                self.lines.append(line)
                self.records.append(rec)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _read_stdout(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.stdout_lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    @staticmethod
    def _matches(rec: dict, msg, where: dict, pred) -> bool:
        if msg is not None and rec.get("msg") != msg:
            return False
        for k, v in where.items():
            if rec.get(k) != v:
                return False
        return pred(rec) if pred else True

    def logs(self, msg: str | None = None, pred=None, **where) -> list[dict]:
        with self.cond:
            return [r for r in self.records if self._matches(r, msg, where, pred)]

    def wait_log(self, msg: str | None = None, timeout: float = 5.0, pred=None, **where) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.records:
                    if self._matches(r, msg, where, pred):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no log line msg={msg!r} {where} within {timeout}s; last lines:\n" + self.tail())
                if self.proc.poll() is not None and not self._t_err.is_alive():
                    raise ProcessDied(f"portcullis exited ({self.proc.returncode}) before logging "
                                      f"msg={msg!r} {where}:\n" + self.tail())
                self.cond.wait(min(left, 0.2))

    def tail(self, n: int = 40) -> str:
        with self.cond:
            return "\n".join(self.lines[-n:])

    def wait_listening(self, timeout: float = LISTEN_TIMEOUT) -> dict:
        rec = self.wait_log("listening", timeout=timeout)
        if self.port is not None:
            addr = rec.get("listen.address", "")
            assert addr.endswith(f":{self.port}"), f"listen.address {addr!r} is not port {self.port}"
        return rec

    # -- process control ------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int):
        if self.alive():
            self.signals_sent.append(sig)
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._t_err.join(timeout=2)
        return rc

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                return self.wait(10)
        return self.wait(5)

    def crashed(self) -> str | None:
        """Why the process died on its own (a signal we did not send), or None."""
        rc = self.proc.poll()
        if rc is not None and rc < 0 and -rc not in self.signals_sent:
            return f"died of signal {signal.Signals(-rc).name}"
        return None

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def run_portcullis_once(args: list[str], timeout: float = 20.0, allow_root: bool = True) -> subprocess.CompletedProcess:
    """Run the binary to completion (bad-flag tests). Text output. --allow-root as in with_root_guard."""
    env = dict(os.environ)
    adir = asan_log_dir()
    if adir:
        env["ASAN_OPTIONS"] = f"detect_leaks=1:log_path={adir}/asan"
    return subprocess.run([str(binary_path())] + with_root_guard(args, allow_root), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


# ----------------------------------------------------------------------------------------------
# TLS clients
# ----------------------------------------------------------------------------------------------
REFUSAL_ERRORS = (ssl.SSLError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def client_context(pki, cred: str | None = "allowed", *, ca: str | None = None,
                   min_version: ssl.TLSVersion | None = None,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """PROTOCOL_TLS_CLIENT context trusting the test CA, checking hostname 'localhost', with a client cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca or pki.ca)
    if cred:
        c = pki[cred]
        ctx.load_cert_chain(c.cert, c.key, password=c.password)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, *, timeout: float = 5.0, session=None,
                host: str = "127.0.0.1", suppress_ragged_eofs: bool = True) -> ssl.SSLSocket:
    """Connected, handshaken SSLSocket. suppress_ragged_eofs=False makes a TCP EOF without close_notify
    raise SSLEOFError instead of reading as b""."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost", session=session,
                               suppress_ragged_eofs=suppress_ragged_eofs)
    except BaseException:
        raw.close()
        raise


def recv_exact(s, n: int, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(min(n - len(buf), 262144))
        if not d:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


def echo_roundtrip(s, payload: bytes, timeout: float = 10.0) -> bytes:
    s.sendall(payload)
    return recv_exact(s, len(payload), timeout)


def read_until_closed(s, timeout: float = 5.0) -> tuple[bytes, str]:
    """Read until EOF or an error; returns (data, how) where how is 'eof' or the error text.

    Raises AssertionError if the connection is still open after `timeout`.
    """
    s.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s (got {len(data)} bytes)")
        except REFUSAL_ERRORS as e:
            return bytes(data), f"{type(e).__name__}: {e}"
        except OSError as e:
            return bytes(data), f"{type(e).__name__}: {e}"
        if not d:
            return bytes(data), "eof"
        data += d
        if time.monotonic() > deadline:
            raise AssertionError(f"connection still open after {timeout}s")


class Refusal:
    def __init__(self, stage: str, text: str):
        self.stage = stage  # "connect", "handshake" or "first-read"
        self.text = text

    @property
    def lower(self) -> str:
        return self.text.lower()

    def __repr__(self):
        return f"Refusal({self.stage}: {self.text})"


def expect_refused(port: int, ctx: ssl.SSLContext, *, read_timeout: float = 3.0) -> Refusal:
    """Connect, handshake and read once; assert the peer refused us. Returns what the client saw.

    In TLS 1.3 the server checks the client certificate after the client considers the handshake done,
    so the alert only shows on the first read (LIBUV-OPENSSL-NOTES pitfall 14). We never write first.
    """
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as e:
        return Refusal("connect", f"{type(e).__name__}: {e}")
    try:
        try:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
        except REFUSAL_ERRORS as e:
            return Refusal("handshake", f"{type(e).__name__}: {e}")
        except OSError as e:  # e.g. EOF during handshake
            return Refusal("handshake", f"{type(e).__name__}: {e}")
        s.settimeout(read_timeout)
        try:
            d = s.recv(1)
        except socket.timeout:
            raise AssertionError(f"not refused: connection still open after {read_timeout}s "
                                 f"(peer cert {s.getpeercert().get('subject')}, {s.version()})")
        except REFUSAL_ERRORS as e:
            return Refusal("first-read", f"{type(e).__name__}: {e}")
        except OSError as e:
            return Refusal("first-read", f"{type(e).__name__}: {e}")
        finally:
            s.close()
        if d == b"":
            return Refusal("first-read", "EOF")
        raise AssertionError(f"not refused: received {d!r}")
    finally:
        raw.close()


def peer_cn(s: ssl.SSLSocket) -> str | None:
    for rdn in s.getpeercert().get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


class BioClient:
    """TLS client over a plain socket with memory BIOs, so that

    * the TCP write side can be shut down while TLS reading continues (SSLSocket.shutdown drops the SSL
      object), or a close_notify can be sent without waiting for the peer's;
    * one thread can send while another receives: the SSL object is guarded by a lock and socket I/O
      happens outside it (an SSLSocket must not be used from two threads at once).
    """

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self._ssl_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._handshake()

    def _pull(self) -> bool:
        d = self.sock.recv(262144)
        with self._ssl_lock:
            if d:
                self.inc.write(d)
            else:
                self.inc.write_eof()
        return bool(d)

    def _flush(self, blocking: bool = True):
        if not self._send_lock.acquire(blocking=blocking):
            return  # the sender holds it and will flush pending output with its next write
        try:
            with self._ssl_lock:
                data = self.out.read()
            if data:
                self.sock.sendall(data)
        finally:
            self._send_lock.release()

    def _handshake(self):
        while True:
            try:
                with self._ssl_lock:
                    self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pull():
                    with self._ssl_lock:
                        self.obj.do_handshake()  # raises the real error (EOF) now
                    return

    def version(self):
        return self.obj.version()

    def send(self, data: bytes):
        view = memoryview(data)
        with self._send_lock:
            for off in range(0, len(view), 65536):
                with self._ssl_lock:
                    self.obj.write(view[off:off + 65536])
                    out = self.out.read()
                self.sock.sendall(out)

    def recv(self, n: int = 262144) -> bytes:
        """Plaintext bytes, b"" at close_notify or TCP EOF. TLS errors (alerts) raise ssl.SSLError."""
        while True:
            with self._ssl_lock:
                try:
                    data = self.obj.read(n)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    return b""
                except ssl.SSLEOFError:
                    return b""
            if data is not None:
                self._flush(blocking=False)
                return data
            self._flush(blocking=False)
            self._pull()

    def send_close_notify(self):
        """Send our close_notify (TLS half-close) without waiting for the peer's."""
        with self._send_lock:
            with self._ssl_lock:
                try:
                    self.obj.unwrap()
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
                out = self.out.read()
            if out:
                self.sock.sendall(out)

    def shutdown_write(self):
        """TCP half-close: FIN without close_notify."""
        self.sock.shutdown(socket.SHUT_WR)

    def read_all(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        buf = bytearray()
        while True:
            d = self.recv()
            if not d:
                return bytes(buf)
            buf += d

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ----------------------------------------------------------------------------------------------
# Added for the config-file / reload / revocation tests (issue 3). Nothing above changes.
# ----------------------------------------------------------------------------------------------
def write_atomic(path, text: str | bytes):
    """Replace `path` the way editors and config management do: write a temp file, rename it over."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def listener_config(pki, name: str, port: int, target: str, *, rules: list[dict] | None = None,
                    allow_all: bool = False, deny: list[dict] | None = None, tls: dict | None = None,
                    **extra) -> dict:
    """One `listeners[]` entry for `portcullis run --config`: the test PKI's server cert/key and CA,
    listening on 127.0.0.1:port. `tls` entries are merged over the defaults; `extra` keys go on the
    listener (use their YAML names via a dict if they contain '-': **{"close-at-cert-expiry": True})."""
    policy: dict = {}
    if allow_all:
        policy["allow-all"] = True
    if deny:
        policy["deny"] = deny
    if rules is not None:
        policy["rules"] = rules
    t = {"cert": pki["server"].cert, "key": pki["server"].key, "cacert": pki.ca}
    t.update(tls or {})
    d = {"name": name, "mode": "server", "listen": f"127.0.0.1:{port}", "target": target, "tls": t}
    d.update(extra)
    d["policy"] = policy
    return d


class ConfigFile:
    """A portcullis YAML config on disk, kept as a dict. `.write()` replaces the file atomically
    (temp + rename). JSON is written: it is YAML, and the key order is kept."""

    def __init__(self, path, listeners: list[dict], **top):
        self.path = Path(path)
        self.data = {"log": {"format": "json", "level": "info"}, "shutdown-timeout": "5s"}
        self.data.update(top)
        self.data["listeners"] = listeners
        self.write()

    def listener(self, name: str) -> dict:
        for entry in self.data["listeners"]:
            if entry["name"] == name:
                return entry
        raise KeyError(name)

    def text(self) -> str:
        return json.dumps(self.data, indent=2) + "\n"

    def write(self, text: str | None = None):
        write_atomic(self.path, self.text() if text is None else text)

    def __str__(self):
        return str(self.path)


def start_run(config, env: dict | None = None) -> Portcullis:
    """`portcullis run --config FILE` (not waited for)."""
    return Portcullis(["run", "--config", str(config)], env=env)


def stop_all(started: list, failed: bool) -> list[str]:
    """Stop every Portcullis by PID (as conftest's proxy fixture does); returns problems (crashes)."""
    import sys
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
                             f"{p.tail(80)}\n")
    return problems


def wait_log_after(p: Portcullis, mark: int, msg: str | None = None, timeout: float = 5.0, pred=None,
                   **where) -> dict:
    """Like Portcullis.wait_log, but only records logged after index `mark` (take mark = len(p.records))."""
    deadline = time.monotonic() + timeout
    with p.cond:
        while True:
            for r in p.records[mark:]:
                if p._matches(r, msg, where, pred):
                    return r
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no new log line msg={msg!r} {where} within {timeout}s; last lines:\n"
                                     + p.tail())
            if p.proc.poll() is not None and not p._t_err.is_alive():
                raise ProcessDied(f"portcullis exited ({p.proc.returncode}) before logging msg={msg!r}:\n"
                                  + p.tail())
            p.cond.wait(min(left, 0.2))


def admitted(port: int, ctx: ssl.SSLContext, payload: bytes = b"ping", timeout: float = 3.0) -> bool:
    """Handshake, send, and get the echo back: True when the proxy let this client through."""
    try:
        s = tls_connect(port, ctx, timeout=timeout)
    except (ssl.SSLError, OSError):
        return False
    try:
        s.sendall(payload)
        return recv_exact(s, len(payload), timeout) == payload
    except (ssl.SSLError, OSError, AssertionError):
        return False
    finally:
        s.close()


def still_open(s, payload: bytes = b"still there?", timeout: float = 3.0) -> bool:
    """An established client connection still relays (echo round trip)."""
    try:
        return echo_roundtrip(s, payload, timeout) == payload
    except (ssl.SSLError, OSError, AssertionError):
        return False


# ----------------------------------------------------------------------------------------------
# Added for client mode and the systems examples (issue 4). Nothing above changes.
# ----------------------------------------------------------------------------------------------
def client_mode_available() -> bool:
    """The binary has the `client` subcommand (`portcullis client --help` exits 0)."""
    try:
        r = run_portcullis_once(["client", "--help"], timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "--target" in (r.stdout + r.stderr)


def start_client(pki, target: str, *, cred: str = "allowed", cacert: str | None = None, port: int | None = None,
                 extra: list[str] | None = None, wait: bool = True, env: dict | None = None) -> Portcullis:
    """`portcullis client --listen 127.0.0.1:<port> --target <target> --log-format json`, presenting pki[cred]
    and trusting `cacert` (default: the test CA). `extra` adds --verify-*/--override-server-name/… flags.
    Waits for "listening" unless wait=False. The caller stops it (stop_all)."""
    port = port or free_port()
    c = pki[cred]
    args = ["client", "--listen", f"127.0.0.1:{port}", "--target", target, "--cert", c.cert, "--key", c.key,
            "--cacert", cacert or pki.ca, "--log-format", "json", "--log-level", "info", *(extra or [])]
    if c.passphrase_file:
        args += ["--key-passphrase-file", c.passphrase_file]
    p = Portcullis(args, env=env, port=port, name="portcullis-client")
    if wait:
        p.wait_listening()
    return p


def plain_connect(port: int, timeout: float = 5.0) -> socket.socket:
    """A plaintext TCP connection to 127.0.0.1:port (a client-mode sidecar's local side)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


class ClientSidecars:
    """Client-mode sidecars started by one test; `.stop(failed)` stops them by PID and returns problems.
    Test files wrap it in a fixture:  s = ClientSidecars(pki); yield s.start; problems = s.stop(failed)."""

    def __init__(self, pki):
        self.pki = pki
        self.started: list[Portcullis] = []

    def start(self, target: str, *, wait: bool = True, **kw) -> Portcullis:
        p = start_client(self.pki, target, wait=False, **kw)
        self.started.append(p)  # registered before waiting, so a failed start is still stopped
        if wait:
            p.wait_listening()
        return p

    def stop(self, failed: bool) -> list[str]:
        return stop_all(self.started, failed)


def load_example_module(system: str, name: str = "check"):
    """Import examples/<system>/<name>.py (the checks an example's run.sh runs) as a module."""
    import importlib.util
    path = REPO_ROOT / "examples" / system / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{system}_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TLSRecorder(AcceptingServer):
    """A real TLS server (Python ssl, TLS 1.3) on a free loopback port that records what each connection
    did: whether its handshake completed and how many application bytes it received. Used to show that a
    client-mode Portcullis sends no plaintext byte to a server it refused. Client certificates are requested
    and verified against `client_ca` when given (CERT_OPTIONAL otherwise none)."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(cert, key)
        if client_ca:
            self.ctx.load_verify_locations(client_ca)
            self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.handshakes_ok = 0
        self.handshake_errors: list[str] = []
        self.app_bytes = 0
        self._start_accepting()


    def _serve(self, c):
        c.settimeout(10)
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.handshake_errors.append(f"{type(e).__name__}: {e}")
            c.close()
            return
        with self.lock:
            self.handshakes_ok += 1
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                with self.lock:
                    self.app_bytes += len(d)
                s.sendall(d)
        except (ssl.SSLError, OSError):
            pass
        finally:
            s.close()

    def close(self):
        self._closed = True
        self.sock.close()
        self.thread.join(2)


def stop_and_reap(pid: int, timeout: float) -> int | None:
    """SIGTERM a descendant we reap (see the `subreaper` fixture), then SIGKILL after `timeout`; returns its
    exit status (None if it was already reaped)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
