"""The INSTALLED Debian package (scripts/package, then `apt-get install ./portcullis_*.deb`), end to end.

Run by tests/package/run (the `scripts/test` step), as root, between the install and the purge:
  - the files, the conffile, the system user `portcullis` and the permissions of /etc/portcullis;
  - `portcullis version` names the commit the package was built from (PORTCULLIS_EXPECT_COMMIT);
  - the shipped example /etc/portcullis/portcullis.yaml passes `portcullis check` once its certificates exist;
  - /usr/bin/portcullis serving as the user portcullis (started as root with --user portcullis, as the unit's
    User= would run it): one admitted client reaches an echo backend, one refused client never does.
Certificates are made at test time with the openssl CLI (tests/e2e/pki.py) and copied into /etc/portcullis/tls,
readable by group portcullis; the purge afterwards must remove them with the rest of /etc/portcullis.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from pki import PKI  # noqa: E402

BIN = "/usr/bin/portcullis"
ETC = Path("/etc/portcullis")
TLS_DIR = ETC / "tls"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(BIN),
                                reason="needs root and the installed package (tests/package/run)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def user():
    return pwd.getpwnam("portcullis")


@pytest.fixture(scope="module")
def tls_files(pki, user) -> dict[str, Path]:
    """The server's certificate and the clients' CA under /etc/portcullis/tls, 0640 root:portcullis; the key
    0600 portcullis:portcullis (as the shipped example says: no `key file readable` warning)."""
    TLS_DIR.mkdir(mode=0o750, exist_ok=True)
    os.chown(TLS_DIR, 0, user.pw_gid)
    files = {}
    for src, name in ((pki["server"].cert, "server.pem"), (pki["server"].key, "server.key"),
                      (pki.ca, "clients-ca.pem")):
        dst = TLS_DIR / name
        shutil.copyfile(src, dst)
        is_key = name.endswith(".key")
        os.chown(dst, user.pw_uid if is_key else 0, user.pw_gid)
        os.chmod(dst, 0o600 if is_key else 0o640)
        files[name] = dst
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_portcullis(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "portcullis", "--", BIN, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_files_user_and_permissions(user):
    for path in (BIN, "/lib/systemd/system/portcullis@.service", "/lib/systemd/system/portcullis@.socket",
                 "/usr/share/man/man1/portcullis.1.gz", "/usr/share/bash-completion/completions/portcullis",
                 "/usr/share/zsh/vendor-completions/_portcullis",
                 "/usr/share/fish/vendor_completions.d/portcullis.fish", ETC / "portcullis.yaml"):
        assert os.path.isfile(path), path
    conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "portcullis"], capture_output=True,
                               text=True, check=True).stdout
    assert "/etc/portcullis/portcullis.yaml" in conffiles
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin", user
    assert grp.getgrgid(user.pw_gid).gr_name == "portcullis"
    st = os.stat(ETC)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, user.pw_gid, 0o750)
    unit = Path("/lib/systemd/system/portcullis@.service").read_text()
    assert "\nExecStart=/usr/bin/portcullis run --config /etc/portcullis/%i.yaml\n" in unit
    assert "\nUser=portcullis\n" in unit and "/usr/local" not in unit
    # The man page and completions came from the argument parser: every subcommand is in them.
    man = subprocess.run(["zcat", "/usr/share/man/man1/portcullis.1.gz"], capture_output=True, text=True,
                         check=True).stdout
    bash = Path("/usr/share/bash-completion/completions/portcullis").read_text()
    for sub in ("server", "client", "run", "check", "version"):
        assert sub in man and sub in bash, sub


def test_version_names_the_commit():
    r = subprocess.run([BIN, "version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    first = r.stdout.splitlines()[0]
    expected = os.environ.get("PORTCULLIS_EXPECT_COMMIT")
    assert first.startswith("portcullis ") and "(commit " in first, first
    if expected:
        assert f"(commit {expected})" in first, first
    else:
        assert "(commit unknown)" not in first, first


def test_units_pass_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    for name in ("portcullis@.service", "portcullis@.socket"):
        shutil.copyfile(f"/lib/systemd/system/{name}", tmp_path / name.replace("@.", "@portcullis."))
    r = subprocess.run([tool, "verify", "--man=no", str(tmp_path / "portcullis@portcullis.socket"),
                        str(tmp_path / "portcullis@portcullis.service")], capture_output=True, text=True, timeout=60)
    output = (r.stdout + r.stderr).strip()
    problems = [line for line in output.splitlines()
                if "portcullis@" in line or "Unknown" in line or "Failed to" in line and "bus" not in line]
    assert r.returncode == 0 and not problems, f"systemd-analyze verify (rc={r.returncode}):\n{output}"


def test_shipped_example_is_accepted_once_its_certificates_exist(tls_files):
    r = as_portcullis("check", "--config", str(ETC / "portcullis.yaml"))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"


class EchoBackend:
    """Plaintext echo server on 127.0.0.1; counts the connections it accepted."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
        with c:
            while data := c.recv(65536):
                c.sendall(data)

    def close(self):
        self.closed = True
        self.sock.close()


def client_context(pki, cred: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.load_cert_chain(pki[cred].cert, pki[cred].key)
    return ctx


def roundtrip(port: int, ctx: ssl.SSLContext, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got


@pytest.fixture
def running(pki, tls_files, user):
    backend = EchoBackend()
    port = free_port()
    config = ETC / "package-test.yaml"
    config.write_text(f"""log: {{format: json}}
listeners:
  - name: package-test
    listen: 127.0.0.1:{port}
    target: 127.0.0.1:{backend.port}
    tls: {{cert: tls/server.pem, key: tls/server.key, cacert: tls/clients-ca.pem}}
    policy:
      rules:
        - {{name: allowed, cn: client-allowed}}
""")
    os.chown(config, 0, user.pw_gid)
    os.chmod(config, 0o640)
    proc = subprocess.Popen([BIN, "run", "--config", str(config), "--user", "portcullis"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if '"listening"' in line or "listening" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(15) and proc.poll() is None, "".join(lines)
        yield proc, port, backend, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        backend.close()
        config.unlink(missing_ok=True)


def test_installed_binary_admits_and_refuses_as_user_portcullis(running, pki, user):
    proc, port, backend, lines = running
    # The process dropped to portcullis after binding and loading the key.
    deadline = time.monotonic() + 5
    while not any("dropped privileges" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(f"/proc/{proc.pid}/status") as f:
        ids = {k: v.split() for k, _, v in (line.partition(":") for line in f) if k in ("Uid", "Gid")}
    assert ids["Uid"] == [str(user.pw_uid)] * 4 and ids["Gid"] == [str(user.pw_gid)] * 4, ids
    assert os.readlink(f"/proc/{proc.pid}/exe") == BIN

    assert roundtrip(port, client_context(pki, "allowed"), b"through the package") == b"through the package"
    assert backend.accepted == 1

    with pytest.raises((ssl.SSLError, ConnectionError)):
        got = roundtrip(port, client_context(pki, "denied"), b"should not pass")
        assert got == b"", got  # a close without data counts as refused too
        raise ConnectionError("closed without data")
    time.sleep(0.2)
    assert backend.accepted == 1, "the refused client reached the backend"
    assert any("handshake failed" in line and "client-denied" in line for line in lines), "".join(lines[-20:])
    assert not any("key file readable" in line for line in lines), "".join(lines)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, "".join(lines[-20:])
