"""ghostunnel's status port (issue 15): /_status (fields and 200/503 from readiness), /_metrics (ghostunnel's
JSON list, ?format=prometheus = /metrics), `--status https://HOST:PORT` (TLS with the listener's certificate,
reloaded with it, no plaintext answered), and `--syslog` (lines reach /dev/log with ident and severity)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from datetime import datetime

import pytest

from harness import (Portcullis, binary_path, echo_roundtrip, free_port, run_portcullis_once, wait_log_after,
                     wait_until, with_root_guard)


def http_get(port: int, path: str, *, tls: ssl.SSLContext | None = None, timeout: float = 10.0):
    """(status, headers, body) of one GET; over TLS when `tls` is given (server name 'localhost')."""
    raw_sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s = tls.wrap_socket(raw_sock, server_hostname="localhost") if tls else raw_sock
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLError:
                break
            if not chunk:
                break
            raw += chunk
    finally:
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert int(headers["content-length"]) == len(body), raw
    return int(lines[0].split()[1]), headers, body


def status_server(proxy, backend, *, status: str):
    b = backend("echo")
    p = proxy(target=b.address, extra=["--status", status])
    p.wait_log("status endpoint listening")
    return p, b


def ghostunnel_metrics(port: int) -> dict[str, int]:
    status, headers, body = http_get(port, "/_metrics")
    assert status == 200 and headers["content-type"] == "application/json"
    items = json.loads(body)
    assert isinstance(items, list) and items
    host = socket.gethostname()
    for item in items:
        assert set(item) == {"timestamp", "metric", "value", "hostname"}, item
        assert item["hostname"] == host and abs(item["timestamp"] - time.time()) < 60
    return {item["metric"]: item["value"] for item in items}


# --- /_status ---------------------------------------------------------------------------------------------

def test_ghostunnel_status_is_ok_with_the_target_up_and_503_with_it_down(proxy, backend):
    sport = free_port()
    p, b = status_server(proxy, backend, status=f"127.0.0.1:{sport}")

    # Until every worker accepts, ghostunnel's "initializing" (503) is the honest answer.
    wait_until(lambda: http_get(sport, "/_status")[0] == 200, timeout=10, what="/_status 200")
    code, headers, body = http_get(sport, "/_status")
    assert code == 200 and headers["content-type"] == "application/json", body
    up = json.loads(body)
    assert up["ok"] is True and up["status"] == "ok"
    assert up["backend_ok"] is True and up["backend_status"] == "ok" and "backend_error" not in up
    assert up["message"] == "listening"
    assert up["hostname"] == socket.gethostname()
    assert up["revision"] and up["compiler"].startswith("swift")
    assert abs(datetime.fromisoformat(up["time"].replace("Z", "+00:00")).timestamp() - time.time()) < 60
    assert "last_reload" not in up

    b.close()  # the target stops accepting: readiness (probed at most every 2 s) turns critical
    wait_until(lambda: http_get(sport, "/_status")[0] == 503, timeout=10, what="/_status 503 with the target down")
    code, _, body = http_get(sport, "/_status")
    down = json.loads(body)
    assert code == 503
    assert down["ok"] is False and down["status"] == "critical"
    assert down["backend_ok"] is False and down["backend_status"] == "critical"
    assert "unreachable" in down["backend_error"] and b.address in down["backend_error"]
    assert down["message"] == "listening"

    p.send_signal(signal.SIGHUP)
    p.wait_log("reloaded")
    assert "last_reload" in json.loads(http_get(sport, "/_status")[2])


def test_ghostunnel_status_is_503_while_draining(proxy, backend, tls):
    sport = free_port()
    b = backend("echo")
    p = proxy(target=b.address, extra=["--status", f"127.0.0.1:{sport}", "--shutdown-timeout", "30s"])
    p.wait_log("status endpoint listening")
    held = tls.connect(p.port, "allowed")  # keeps the drain going
    assert echo_roundtrip(held, b"x") == b"x"
    p.send_signal(signal.SIGTERM)
    p.wait_log("shutting down: draining connections")
    code, _, body = http_get(sport, "/_status")
    assert code == 503 and json.loads(body)["message"] == "stopping", body
    held.close()


# --- /_metrics --------------------------------------------------------------------------------------------

def test_ghostunnel_metrics_json_counts_admitted_and_refused_connections(proxy, backend, tls):
    sport = free_port()
    p, _ = status_server(proxy, backend, status=f"127.0.0.1:{sport}")
    before = ghostunnel_metrics(sport)
    names = {"ghostunnel.conn.open", "ghostunnel.conn.timeout", "ghostunnel.accept.total",
             "ghostunnel.accept.success", "ghostunnel.accept.error", "ghostunnel.accept.timeout"}
    assert names <= set(before), before
    assert before["ghostunnel.accept.total"] == 0 and before["ghostunnel.conn.open"] == 0

    s = tls.connect(p.port, "allowed")
    assert echo_roundtrip(s, b"ping") == b"ping"
    open_now = ghostunnel_metrics(sport)
    assert open_now["ghostunnel.conn.open"] == 1 and open_now["ghostunnel.accept.success"] == 1
    s.close()
    tls.refused(p.port, "denied")

    wait_until(lambda: ghostunnel_metrics(sport)["ghostunnel.conn.open"] == 0
               and ghostunnel_metrics(sport)["ghostunnel.accept.total"] == 2, timeout=10, what="both connections closed")
    after = ghostunnel_metrics(sport)
    assert after["ghostunnel.accept.total"] == 2
    assert after["ghostunnel.accept.success"] == 1
    assert after["ghostunnel.accept.error"] == 1
    assert after["ghostunnel.accept.timeout"] == 0


def test_metrics_format_prometheus_is_the_metrics_endpoint(proxy, backend, tls):
    sport = free_port()
    p, _ = status_server(proxy, backend, status=f"127.0.0.1:{sport}")
    s = tls.connect(p.port, "allowed")
    assert echo_roundtrip(s, b"ping") == b"ping"
    s.close()

    def families(body: bytes) -> set[str]:
        return set(re.findall(r"^# TYPE (\S+)", body.decode(), re.M))

    code, ours, ours_body = http_get(sport, "/metrics")
    assert code == 200
    for path in ["/_metrics?format=prometheus", "/_metrics/prometheus"]:
        code, headers, body = http_get(sport, path)
        assert code == 200 and headers["content-type"] == ours["content-type"], path
        assert families(body) == families(ours_body) and "portcullis_connections_accepted_total" in families(body)
        assert re.search(r'^portcullis_connections_accepted_total\{listener="[^"]+"\} 1$', body.decode(), re.M), body
    code, headers, body = http_get(sport, "/_metrics/json")
    assert code == 200 and headers["content-type"] == "application/json"
    assert {i["metric"] for i in json.loads(body)} == set(ghostunnel_metrics(sport))
    # Any other format (or none) is the JSON form, as in ghostunnel.
    assert isinstance(json.loads(http_get(sport, "/_metrics?format=json")[2]), list)


def test_index_and_not_found_list_the_ghostunnel_endpoints(proxy, backend):
    sport = free_port()
    status_server(proxy, backend, status=f"http://127.0.0.1:{sport}")
    code, _, body = http_get(sport, "/")
    assert code == 200
    endpoints = json.loads(body)["endpoints"]
    assert {"/healthz", "/readyz", "/status", "/metrics", "/_status", "/_metrics"} <= set(endpoints)
    code, _, body = http_get(sport, "/debug/pprof/")
    assert code == 404 and "/_status" in json.loads(body)["error"] and "/_metrics" in json.loads(body)["error"]


# --- https status ---------------------------------------------------------------------------------------------

def served_certificate(port: int, ca: str) -> bytes:
    """The DER certificate the HTTPS status port presents, verified against `ca` for 'localhost', with no
    client certificate (none is asked for)."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def der(pem_path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(pem_path).read().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")


def plain_http_answered(port: int) -> bool:
    """Whether a plain HTTP request gets an HTTP answer (an HTTPS port sends at most an alert, then closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /_status HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return got.startswith(b"HTTP/") or b"ok" in got


def test_https_status_serves_the_listener_certificate_and_no_plaintext(proxy, backend, pki):
    sport = free_port()
    p, _ = status_server(proxy, backend, status=f"https://127.0.0.1:{sport}")
    assert p.logs("status endpoint listening")[0]["status.address"] == f"https://127.0.0.1:{sport}"

    assert served_certificate(sport, pki.ca) == der(pki["server"].cert)
    ctx = ssl.create_default_context(cafile=pki.ca)   # no client certificate: none is required
    wait_until(lambda: http_get(sport, "/_status", tls=ctx)[0] == 200, timeout=10, what="/_status 200 over TLS")
    code, headers, body = http_get(sport, "/_status", tls=ctx)
    assert code == 200 and json.loads(body)["ok"] is True
    assert http_get(sport, "/healthz", tls=ctx)[0] == 200
    # No CertificateRequest on the status port (ghostunnel asks none there); the proxy listener does ask.
    def handshake_states(port: int) -> str:
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pki.ca, "-state"],
                              input="Q\n", capture_output=True, text=True, timeout=10).stderr
    assert "read server certificate request" not in handshake_states(sport)
    assert "read server certificate request" in handshake_states(p.port)
    # A client that does not trust the CA fails the handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        served_certificate(sport, pki.other_ca)

    # Plain HTTP on the HTTPS port gets no HTTP answer (OpenSSL may send an alert record, then closes).
    assert not plain_http_answered(sport)
    assert p.alive()


def test_https_status_certificate_follows_a_reload(proxy, backend, pki, tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki["server"].cert, cert)
    shutil.copy(pki["server"].key, key)
    sport = free_port()
    b = backend("echo")
    p = proxy(target=b.address, cert=str(cert), key=str(key), extra=["--status", f"https://127.0.0.1:{sport}"])
    p.wait_log("status endpoint listening")
    assert served_certificate(sport, pki.ca) == der(pki["server"].cert)

    shutil.copy(pki["server2"].key, key)
    shutil.copy(pki["server2"].cert, cert)
    p.send_signal(signal.SIGHUP)
    wait_until(lambda: served_certificate(sport, pki.ca) == der(pki["server2"].cert), timeout=10,
               what="the status port serves the reloaded certificate")
    assert p.logs("reloaded")


def test_sigusr2_restart_hands_over_the_https_status_port(proxy, backend, pki, subreaper):
    """The successor takes the status socket over and serves it over TLS too (its own reading of --status)."""
    sport = free_port()
    p, _ = status_server(proxy, backend, status=f"https://127.0.0.1:{sport}")
    ctx = ssl.create_default_context(cafile=pki.ca)
    assert json.loads(http_get(sport, "/status", tls=ctx)[2])["pid"] == p.pid
    mark = len(p.records)
    p.send_signal(signal.SIGUSR2)
    started = wait_log_after(p, mark, "restart: new process started", timeout=10)
    child = int(started["restart.pid"])
    subreaper.append(child)
    assert "@status=1" in started["restart.sockets"]
    assert p.wait(30) == 0
    assert json.loads(http_get(sport, "/status", tls=ctx)[2])["pid"] == child
    assert served_certificate(sport, pki.ca) == der(pki["server"].cert)
    with socket.create_connection(("127.0.0.1", sport), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
    assert not got.startswith(b"HTTP/"), got


def test_https_status_on_a_unix_socket_is_refused(pki):
    r = run_portcullis_once(["server", "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2",
                             "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                             "--allow-all", "--status", "https://unix:/tmp/x.sock"])
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("portcullis: --status (config key status.listen): 'https://unix:/tmp/x.sock'"), r.stderr
    assert len(r.stderr.splitlines()) == 1


# --- syslog -----------------------------------------------------------------------------------------------

# The binary runs in a private mount namespace whose /dev is a fresh tmpfs (mounted on the empty directory
# $PRIVATE_DEV_DIR) with the usual device nodes bound in, plus (when $SYSLOG_SOCKET is set) our datagram socket
# bound at /dev/log. Nothing changes outside the namespace.
PRIVATE_DEV = r"""
set -e
new="$PRIVATE_DEV_DIR"
mount -t tmpfs -o mode=755 portcullis-dev "$new"
for node in null zero full random urandom tty; do
  if [ -e "/dev/$node" ]; then touch "$new/$node"; mount --bind "/dev/$node" "$new/$node"; fi
done
ln -s /proc/self/fd "$new/fd"
ln -s /proc/self/fd/0 "$new/stdin"; ln -s /proc/self/fd/1 "$new/stdout"; ln -s /proc/self/fd/2 "$new/stderr"
if [ -n "$SYSLOG_SOCKET" ]; then touch "$new/log"; mount --bind "$SYSLOG_SOCKET" "$new/log"; fi
mount --rbind "$new" /dev
exec "$@"
"""


def private_dev(tmp_path, syslog_socket: str | None) -> tuple[list[str], dict]:
    """The wrapper argv and the environment it reads."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the syslog tests need root and unshare(1) (a private mount namespace with our own /dev/log); "
                    "CI runs as root — run them as root rather than skipping them")
    (tmp_path / "dev").mkdir()
    env = {"PRIVATE_DEV_DIR": str(tmp_path / "dev"), "SYSLOG_SOCKET": syslog_socket or ""}
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_DEV, "private-dev"], env


class SyslogServer:
    """A Unix datagram socket standing in for /dev/log; records every message."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, pred, timeout: float = 10.0, what: str = "syslog message") -> str:
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if pred(m):
                return m
        while time.monotonic() < deadline:
            try:
                m = self.sock.recv(65536).decode()
            except socket.timeout:
                continue
            self.messages.append(m)
            if pred(m):
                return m
        raise AssertionError(f"no {what} within {timeout}s; got:\n" + "\n".join(self.messages[-20:]))

    def close(self):
        self.sock.close()


SYSLOG_LINE = re.compile(r"^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) portcullis\[(\d+)\]: (.*)$", re.S)


def test_syslog_lines_arrive_with_ident_facility_and_severity(pki, backend, tls, tmp_path):
    server = SyslogServer(tmp_path / "log")
    wrapper, env = private_dev(tmp_path, server.path)
    b = backend("echo")
    port = free_port()
    p = Portcullis(["server", "--listen", f"127.0.0.1:{port}", "--target", b.address,
                    "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                    "--allow-cn", "client-allowed", "--log-format", "json", "--syslog"],
                   env=env, port=port, wrapper=wrapper)
    try:
        listening = server.wait_for(lambda m: '"msg":"listening"' in m, what="the 'listening' line")
        pri, _, pid, body = SYSLOG_LINE.match(listening).groups()
        assert int(pri) == 3 * 8 + 6, listening            # daemon.info
        assert int(pid) == p.pid                             # ident portcullis[pid] of the process itself
        assert json.loads(body)["level"] == "info"           # the same JSON line stderr would carry

        tls.refused(port, "denied")                          # a warning: handshake failed
        failed = server.wait_for(lambda m: '"msg":"handshake failed"' in m, what="the 'handshake failed' line")
        assert int(SYSLOG_LINE.match(failed).group(1)) == 3 * 8 + 4, failed   # daemon.warning
        assert json.loads(SYSLOG_LINE.match(failed).group(4))["level"] == "warning"

        s = tls.connect(port, "allowed")
        assert echo_roundtrip(s, b"ping") == b"ping"
        s.close()
        server.wait_for(lambda m: '"msg":"connection closed"' in m, what="the audit line")
        assert not [line for line in p.lines if line.startswith("{")], p.lines   # nothing on stderr
    finally:
        p.stop()
        server.close()


def test_syslog_from_the_config_file_in_text_format(pki, backend, tmp_path):
    server = SyslogServer(tmp_path / "log")
    wrapper, env = private_dev(tmp_path, server.path)
    b = backend("echo")
    port = free_port()
    config = tmp_path / "portcullis.yaml"
    config.write_text(json.dumps({
        "log": {"format": "text", "level": "info", "syslog": True},
        "listeners": [{"name": "main", "mode": "server", "listen": f"127.0.0.1:{port}", "target": b.address,
                       "tls": {"cert": pki["server"].cert, "key": pki["server"].key, "cacert": pki.ca},
                       "policy": {"allow-all": True}}],
    }))
    p = Portcullis(["run", "--config", str(config)], env=env, port=port, wrapper=wrapper)
    try:
        line = server.wait_for(lambda m: " info listening " in m, what="the text 'listening' line")
        pri, _, pid, body = SYSLOG_LINE.match(line).groups()
        assert int(pri) == 30 and int(pid) == p.pid
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info listening ", body), body
        assert "\n" not in body
    finally:
        p.stop()
        server.close()


def test_syslog_without_a_daemon_stops_the_start_with_one_line(pki, tmp_path):
    wrapper, extra = private_dev(tmp_path, None)  # a /dev without log
    env = dict(os.environ, **extra)
    args = with_root_guard(["server", "--listen", f"127.0.0.1:{free_port()}", "--target", "127.0.0.1:2",
                            "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                            "--allow-all", "--syslog"])
    r = subprocess.run(wrapper + [str(binary_path())] + args, capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "portcullis: --syslog (config key log.syslog): cannot reach the local syslog: connect to '/dev/log'"), r.stderr


def test_invoked_as_ghostunnel_a_bare_status_address_is_https(pki, backend, tmp_path):
    """A user who switches by changing the binary name (`ln -s portcullis ghostunnel`) keeps ghostunnel's
    meaning of `--status HOST:PORT`: HTTPS with the listener's certificate. As `portcullis` it is plain HTTP
    (test_status_metrics)."""
    link = tmp_path / "ghostunnel"
    link.symlink_to(binary_path())
    b = backend("echo")
    port, sport = free_port(), free_port()
    p = Portcullis(["server", "--listen", f"127.0.0.1:{port}", "--target", b.address,
                    "--cert", pki["server"].cert, "--key", pki["server"].key, "--cacert", pki.ca,
                    "--allow-cn", "client-allowed", "--status", f"127.0.0.1:{sport}", "--log-format", "json"],
                   port=port, wrapper=["bash", "-c", 'shift; exec "$GHOSTUNNEL_LINK" "$@"', "ghostunnel-wrapper"],
                   env={"GHOSTUNNEL_LINK": str(link)})
    try:
        line = p.wait_log("status endpoint listening", timeout=10)
        assert line["status.address"] == f"https://127.0.0.1:{sport}", line
        assert served_certificate(sport, pki.ca) == der(pki["server"].cert)
        ctx = ssl.create_default_context(cafile=pki.ca)
        wait_until(lambda: http_get(sport, "/_status", tls=ctx)[0] == 200, timeout=10, what="/_status 200 over TLS")
        assert not plain_http_answered(sport)
    finally:
        p.stop()
