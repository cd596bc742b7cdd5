"""Erlang distribution (issue 4, system 3): two nodes whose only path to each other is a Portcullis sidecar pair
each way, without epmd.

    a ─plain─▶ client sidecar (a→b) ─mTLS─▶ server sidecar (b) ─plain─▶ b's dist port on 127.0.0.1
    b ─plain─▶ client sidecar (b→a) ─mTLS─▶ server sidecar (a) ─plain─▶ a's dist port on 127.0.0.1

Both nodes run `-start_epmd false -epmd_module portcullis_epmd` (examples/erlang/portcullis_epmd.erl, compiled
here with erlc) with `-portcullis_epmd PEER PORT` pointing the peer's name at the local client sidecar, and
listen on one fixed loopback port. examples/erlang/dist_check.erl drives the checks and prints PASS/FAIL lines.
Every node is stopped with init:stop() by the script or by PID here; no epmd is ever started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import REPO_ROOT, Portcullis, free_port, stop_all
from pki import issue_leaf

EXAMPLE = REPO_ROOT / "examples" / "erlang"
CLUSTER_OU = "erlang-cluster"


def _tcp_listeners(port: int) -> list[str]:
    """Local addresses of the IPv4/IPv6 sockets listening on `port` (from /proc/net/tcp{,6})."""
    found = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            addr, p = f[1].rsplit(":", 1)
            if f[3] == "0A" and int(p, 16) == port:  # TCP_LISTEN
                found.append("127.0.0.1" if addr == "0100007F" else addr)
    return found


def _epmd_listening() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 4369), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ebin(tmp_path_factory):
    for tool in ("erl", "erlc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (apt-get install erlang-nox, or scripts/install-deps test)")
    d = tmp_path_factory.mktemp("ebin")
    subprocess.run(["erlc", "-o", str(d), str(EXAMPLE / "portcullis_epmd.erl"), str(EXAMPLE / "dist_check.erl")],
                   check=True, timeout=120, capture_output=True)
    return str(d)


@pytest.fixture(scope="module")
def nodes_pki(pki):
    """One certificate per node (both EKUs: its server sidecar and its client sidecar present it)."""
    made = {}
    for name, ou in (("node-a", CLUSTER_OU), ("node-b", CLUSTER_OU), ("intruder", "laptops")):
        made[name] = issue_leaf(pki, f"erlang-{name}", f"/O=Portcullis Test/OU={ou}/CN={name}",
                                san=f"DNS:{name}.cluster.internal", eku="serverAuth,clientAuth")
    return made


class ErlNode:
    """`erl -noshell -name NAME@127.0.0.1` without epmd; stdout lines collected; stopped by PID."""

    def __init__(self, name: str, port: int, ebin: str, cookie: str, routes: dict[str, int], evaluate: str):
        self.name = f"{name}@127.0.0.1"
        cmd = ["erl", "-noshell", "-name", self.name, "-setcookie", cookie,
               "-start_epmd", "false", "-epmd_module", "portcullis_epmd", "-pa", ebin,
               "-kernel", "inet_dist_listen_min", str(port), "inet_dist_listen_max", str(port),
               "-kernel", "inet_dist_use_interface", "{127,0,0,1}"]
        if routes:
            cmd += ["-portcullis_epmd"] + [str(x) for kv in routes.items() for x in kv]
        cmd += ["-eval", evaluate]
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.eof = False
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.pid = self.proc.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_line(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError(f"{self.name}: no line {prefix!r}; output:\n" + "\n".join(self.lines))
                self.cond.wait(min(left, 0.2))

    def results(self) -> tuple[list[str], list[str]]:
        with self.cond:
            return ([ln for ln in self.lines if ln.startswith("PASS ")],
                    [ln for ln in self.lines if ln.startswith("FAIL ")])

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)  # the VM runs init:stop() on SIGTERM
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def cluster(request, pki, nodes_pki, ebin):
    """Factories for server/client sidecars and Erlang nodes; everything is stopped by PID at test end."""
    sidecars: list[Portcullis] = []
    nodes: list[ErlNode] = []
    cookie = secrets.token_hex(16)

    def server(listen: int, target: int, cred: str) -> Portcullis:
        c = nodes_pki[cred]
        p = Portcullis(["server", "--listen", f"127.0.0.1:{listen}", "--target", f"127.0.0.1:{target}",
                        "--cert", c.cert, "--key", c.key, "--cacert", pki.ca, "--allow-ou", CLUSTER_OU,
                        "--idle-timeout", "0", "--log-format", "json"], port=listen)
        sidecars.append(p)
        p.wait_listening()
        return p

    def client(listen: int, remote: int, cred: str, server_name: str) -> Portcullis:
        c = nodes_pki[cred]
        p = Portcullis(["client", "--listen", f"127.0.0.1:{listen}", "--target", f"127.0.0.1:{remote}",
                        "--cert", c.cert, "--key", c.key, "--cacert", pki.ca,
                        "--override-server-name", server_name, "--log-format", "json"], port=listen)
        sidecars.append(p)
        p.wait_listening()
        return p

    def node(name: str, port: int, routes: dict[str, int], evaluate: str) -> ErlNode:
        n = ErlNode(name, port, ebin, cookie, routes, evaluate)
        nodes.append(n)
        return n

    yield server, client, node
    for n in nodes:
        n.stop()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        for n in nodes:
            print(f"\n--- {n.name} (pid {n.pid}, rc {n.proc.returncode}):\n" + "\n".join(n.lines))
    problems = stop_all(sidecars, failed)
    if problems:
        pytest.fail("\n".join(problems))


def test_rpc_and_1mb_messages_both_ways_only_through_sidecar_pairs(cluster):
    server, client, node = cluster
    epmd_before = _epmd_listening()
    pa, pb, a_tls, b_tls, a_to_b, b_to_a = (free_port() for _ in range(6))
    server_a = server(a_tls, pa, "node-a")
    client_a = client(a_to_b, b_tls, "node-a", "node-b.cluster.internal")
    server_b = server(b_tls, pb, "node-b")
    client_b = client(b_to_a, a_tls, "node-b", "node-a.cluster.internal")

    a = node("a", pa, {"b@127.0.0.1": a_to_b}, f'dist_check:a(["b@127.0.0.1", "{a_to_b}"])')
    a.wait_line("READY")
    # a's distribution listener is on loopback only: nothing but the sidecars on this host can reach it.
    assert _tcp_listeners(pa) == ["127.0.0.1"], _tcp_listeners(pa)
    b = node("b", pb, {"a@127.0.0.1": b_to_a}, f'dist_check:b(["a@127.0.0.1", "{b_to_a}"])')
    rc_a, rc_b = a.wait(60), b.wait(15)

    passed_b, failed_b = b.results()
    passed_a, failed_a = a.results()
    assert not failed_a and not failed_b, failed_b + failed_a
    for results, me, peer in ((passed_b, "b", "a"), (passed_a, "a", "b")):
        direction = f"{me}@127.0.0.1->{peer}@127.0.0.1"
        names = {line.split()[1] for line in results if line.split()[2] == direction}
        assert names == {"rpc", "rpc-otp-release", "echo-1MB", "via-sidecar"}, results
    assert any("1048576 bytes sent and returned identical" in ln for ln in passed_a)
    assert any("1048576 bytes sent and returned identical" in ln for ln in passed_b)
    assert (rc_a, rc_b) == (0, 0)

    # b dialled first (through b's client sidecar and a's server sidecar); a dialled second (the other pair).
    for srv, cli, peer in ((server_a, client_b, "node-b"), (server_b, client_a, "node-a")):
        audit = srv.wait_log("connection closed", timeout=10)
        assert audit["tls.peer.subject"] == f"CN={peer},OU={CLUSTER_OU},O=Portcullis Test", audit
        assert audit["policy.rule"] == f"ou={CLUSTER_OU}" and audit["tls.version"] == "TLSv1.3", audit
        assert int(audit["bytes.up"]) > 1_048_576 and int(audit["bytes.down"]) > 1_048_576, audit
        out = cli.wait_log("connection closed", timeout=10)
        assert out["bytes.up"] == audit["bytes.up"] and out["bytes.down"] == audit["bytes.down"], (out, audit)
    if not epmd_before:
        assert not _epmd_listening(), "an epmd was started"


def test_node_with_the_cookie_but_no_admitted_certificate_cannot_connect(cluster):
    server, client, node = cluster
    pb, b_tls, c_to_b = free_port(), free_port(), free_port()
    server_b = server(b_tls, pb, "node-b")
    client_c = client(c_to_b, b_tls, "intruder", "node-b.cluster.internal")
    b = node("b", pb, {}, 'io:format("READY~n"), timer:sleep(30000)')
    b.wait_line("READY")
    c = node("c", free_port(), {"b@127.0.0.1": c_to_b}, 'dist_check:intruder(["b@127.0.0.1"])')
    assert c.wait(30) == 0, c.lines
    assert c.results()[0] and not c.results()[1], c.lines
    rec = server_b.wait_log("handshake failed", timeout=5, **{"handshake.error": "denied"})
    assert "OU=laptops" in rec["tls.peer.subject"], rec
    assert not server_b.logs("connection closed"), "the intruder was admitted"
    # The client sidecar saw its TLS connection refused and closed the node's plaintext connection.
    assert not [r for r in client_c.logs("connection closed") if int(r.get("bytes.down", "0")) > 0]


def test_client_sidecar_refuses_a_server_that_is_not_the_expected_node(cluster, backend):
    server, client, node = cluster
    stand_in = backend("echo")  # would be node a's distribution port
    a_tls, wrong = free_port(), free_port()
    server(a_tls, stand_in.port, "node-a")
    # Meant for node b, pointed at node a's sidecar: node a's certificate does not name node-b.cluster.internal.
    cli = client(wrong, a_tls, "node-b", "node-b.cluster.internal")
    with socket.create_connection(("127.0.0.1", wrong), timeout=10) as s:
        s.sendall(b"\x00\x15N")  # the start of a distribution handshake (send_name)
        s.settimeout(10)
        try:
            assert s.recv(100) == b""
        except OSError:
            pass
    rec = cli.wait_log("handshake failed", timeout=5)
    assert "mismatch" in rec.get("handshake.detail", "") or rec.get("handshake.error") == "bad_certificate", rec
    assert stand_in.accepted == 0 and stand_in.bytes_in == 0
