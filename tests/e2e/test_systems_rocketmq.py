"""RocketMQ (issue 4, system 5): the Java side of a RocketMQ deployment behind server-mode sidecars.

No RocketMQ broker is installable from Debian or PyPI, so echo backends stand in for the broker's and the name
server's plaintext remoting ports; the client is a real JDK program (examples/rocketmq/RemotingTlsClient.java,
compiled with javac here) using SunJSSE: TLS 1.3, a PKCS#12 keystore with the client certificate and key, a
PKCS#12 truststore with the CA, HTTPS endpoint identification. It sends RocketMQ-remoting-like frames (4-byte
length + payload) and checks every echo. One `portcullis run` process serves both listeners, as in
examples/rocketmq/portcullis.yaml.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess

import pytest

from harness import REPO_ROOT, ConfigFile, free_port, listener_config, start_run, stop_all
from pki import java_truststore, pkcs12_keystore

EXAMPLE = REPO_ROOT / "examples" / "rocketmq"
PASSWORD = "changeit"
RULES = [{"name": "producers", "ou": "payments", "cn": "client-allowed"}]


@pytest.fixture(scope="module")
def java(pki, tmp_path_factory):
    """Compiled client plus keystores: allowed (admitted), denied (same CA, not allowlisted), other-ca."""
    for tool in ("java", "javac", "keytool"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (apt-get install default-jdk-headless, or scripts/install-deps test)")
    d = tmp_path_factory.mktemp("java")
    subprocess.run(["javac", "-d", str(d), str(EXAMPLE / "RemotingTlsClient.java")], check=True, timeout=120,
                   capture_output=True)
    stores = {name: pkcs12_keystore(pki, name, d / f"{name}.p12", PASSWORD) for name in ("allowed", "denied", "other-ca")}
    stores["trust"] = java_truststore(pki, d / "truststore.p12", PASSWORD)

    def run(port: int, keystore: str, count: int, expect_refused: bool = False) -> subprocess.CompletedProcess:
        args = ["java", "-cp", str(d), "RemotingTlsClient", "127.0.0.1", str(port), stores[keystore], PASSWORD,
                stores["trust"], PASSWORD, str(count)]
        if expect_refused:
            args.append("--expect-refused")
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture
def rocketmq(request, pki, backend, tmp_path):
    """One `portcullis run` with listeners `namesrv` and `broker`, each in front of an echo backend."""
    started = []
    backends = {"namesrv": backend("echo"), "broker": backend("echo")}
    ports = {"namesrv": free_port(), "broker": free_port()}
    config = ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, "namesrv", ports["namesrv"], backends["namesrv"].address, rules=RULES,
                        timeouts={"handshake": "5s", "connect": "3s", "idle": "5m", "close": "10s"}),
        listener_config(pki, "broker", ports["broker"], backends["broker"].address, rules=RULES,
                        timeouts={"handshake": "5s", "connect": "3s", "idle": "0s", "close": "30s"}),
    ])
    p = start_run(config)
    started.append(p)
    for name in ports:
        p.wait_log("listening", timeout=20, listener=name)
    yield p, ports, backends
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(started, failed)
    if problems:
        pytest.fail("\n".join(problems))


def test_java_client_round_trips_remoting_frames_through_broker_and_namesrv(rocketmq, java, pki):
    p, ports, backends = rocketmq
    for listener, count in (("broker", 1000), ("namesrv", 100)):
        r = java(ports[listener], "allowed", count)
        assert r.returncode == 0 and r.stdout.startswith("PASS roundtrip"), r.stdout + r.stderr
        assert "TLSv1.3" in r.stdout and "server CN=localhost" in r.stdout, r.stdout
        payload = int(re.search(r"\((\d+) payload bytes\)", r.stdout).group(1))
        audit = p.wait_log("connection closed", timeout=10, listener=listener)
        # Every frame crossed the sidecar both ways: payload plus one 4-byte length each.
        assert audit["bytes.up"] == audit["bytes.down"] == str(payload + 4 * count), audit
        assert audit["tls.version"] == "TLSv1.3" and audit["policy.rule"] == "producers", audit
        assert audit["tls.peer.subject"] == pki["allowed"].subject_rfc2253, audit
        assert backends[listener].accepted == 1 and backends[listener].bytes_in == payload + 4 * count


def test_refused_keystores_and_plaintext_never_reach_the_broker(rocketmq, java):
    p, ports, backends = rocketmq
    port = ports["broker"]

    # Same CA, not allowlisted: refused in the handshake; the JDK sees a broken pipe / reset / the alert.
    r = java(port, "denied", 1, expect_refused=True)
    assert r.returncode == 0 and r.stdout.startswith("PASS refused"), r.stdout + r.stderr
    assert re.search(r"SSLHandshakeException|SSLException|SocketException|EOFException", r.stdout), r.stdout
    rec = p.wait_log("handshake failed", timeout=5, listener="broker", **{"handshake.error": "denied"})
    assert "client-denied" in rec["tls.peer.subject"], rec

    # Another CA: the JDK's key manager only offers certificates from the CAs the server's CertificateRequest
    # names, so it sends none; the sidecar requires one.
    r = java(port, "other-ca", 1, expect_refused=True)
    assert r.returncode == 0 and r.stdout.startswith("PASS refused"), r.stdout + r.stderr
    p.wait_log("handshake failed", timeout=5, listener="broker", **{"handshake.error": "no_certificate"})

    # A RocketMQ client without tls.enable=true: a plaintext frame to the TLS port is dropped.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">I", 5) + b"hello")
        try:
            assert s.recv(100) == b""
        except OSError:
            pass
    p.wait_log("handshake failed", timeout=5, listener="broker", **{"handshake.error": "protocol_error"})

    assert backends["broker"].accepted == 0, "a refused client reached the broker"
    assert not p.logs("connection closed"), "a refused client got an audit line"
