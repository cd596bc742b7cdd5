"""Test-side stand-ins for what systemd does: a NOTIFY_SOCKET receiver and socket activation.

NotifyReceiver   an AF_UNIX datagram socket bound by the test (a path, or an abstract '@' name); a reader
                 thread records every datagram as a dict of its KEY=value lines, with the arrival time.
activation_wrapper(fds)
                 argv to put before the portcullis binary so that it starts as systemd would start it: the
                 given descriptors moved to 3, 4, … and LISTEN_PID set to the pid that then execs portcullis.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time


class NotifyReceiver:
    def __init__(self, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir = None
        if abstract:
            name = f"portcullis-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # Short path: sun_path holds 108 bytes and pytest's tmp_path can be longer.
            self._dir = tempfile.mkdtemp(prefix="pc-notify-")
            self.address = os.path.join(self._dir, "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self._closed = False
        self.thread = threading.Thread(target=self._read, name="notify-receiver", daemon=True)
        self.thread.start()

    def _read(self):
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            fields["_at"] = time.monotonic()
            fields["_raw"] = data.decode()
            with self.cond:
                self.messages.append(fields)
                self.cond.notify_all()

    def wait(self, key: str, value: str | None = None, after: int = 0, timeout: float = 10.0) -> tuple[int, dict]:
        """(index, message) of the first message from index `after` on carrying key (= value)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(after, len(self.messages)):
                    m = self.messages[i]
                    if key in m and (value is None or m[key] == value):
                        return i, m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no notify message with {key}={value} after #{after} within {timeout}s; "
                                         f"got: {[m['_raw'] for m in self.messages]}")
                self.cond.wait(min(left, 0.2))

    def with_key(self, key: str, after: int = 0) -> list[dict]:
        with self.cond:
            return [m for m in self.messages[after:] if key in m]

    def close(self):
        self._closed = True
        self.sock.close()
        self.thread.join(2)
        if self._dir:
            try:
                os.unlink(self.address)
            except OSError:
                pass
            os.rmdir(self._dir)


_WRAPPER = r"""
import fcntl, os, sys
sources = [int(x) for x in sys.argv[1].split(",")]
# Park them above the target range first, so moving one never overwrites another.
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in sources]
for fd in sources:
    os.close(fd)
for i, fd in enumerate(parked):
    os.dup2(fd, 3 + i)  # inheritable, as systemd passes them
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
os.execv(sys.argv[2], sys.argv[2:])
"""


def activation_wrapper(fds: list[int]) -> list[str]:
    """argv prefix; pass the same fds as Popen(pass_fds=...) and LISTEN_FDS/LISTEN_FDNAMES in env."""
    return [sys.executable, "-c", _WRAPPER, ",".join(str(fd) for fd in fds)]


def listening_socket(port: int = 0) -> socket.socket:
    """A bound, listening loopback TCP socket, as a .socket unit would make (no SO_REUSEPORT)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def parse_unit(path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values…]}} (keys may repeat; continuation lines joined)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                continue
            if stripped.startswith("[") and stripped.endswith("]"):
                current = sections.setdefault(stripped[1:-1], {})
                continue
            key, _, value = stripped.partition("=")
            assert current is not None, f"{path}: '{stripped}' outside a section"
            current.setdefault(key.strip(), []).append(value.strip())
    return sections
