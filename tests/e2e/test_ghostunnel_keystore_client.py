"""ghostunnel's keystore and client flags, with the same meaning (issue 15):

- `--keystore FILE` takes PKCS#12 (key + leaf + chain, made by `openssl pkcs12 -export`) as well as a combined PEM,
  in server and client mode, with `--storepass PASSWORD` (one warning, never the password) or
  `--keystore-password-file FILE`; wrong password, legacy encryption, no key: one line, exit 2; a rewritten
  keystore is served after SIGHUP.
- `client --disable-authentication`: no client certificate; the server is still verified, and a server-mode
  Portcullis (which always asks for one) refuses it before any byte reaches its backend.
- `client` without `--cacert`: the system trust store (SSL_CERT_FILE honoured); an unknown CA and a wrong name are
  refused.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from harness import (ConfigFile, Portcullis, echo_roundtrip, free_port, plain_connect,
                     read_until_closed, run_portcullis_once, stop_all, wait_until)
from pki import cert_serial, issue_leaf, pkcs12_keystore

PASSWORD = "keystore-pw-7f3a9c"
SECRET = b"AUTH hunter2\r\n"


@pytest.fixture
def started(request):
    """Processes started by the test, stopped by PID at the end (a crash fails the test)."""
    made: list[Portcullis] = []
    yield made
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(made, failed)
    if problems:
        pytest.fail("\n".join(problems))


def p12(pki, name: str, out, *, password: str = PASSWORD, legacy: bool = False, chain: str | None = None) -> str:
    """`openssl pkcs12 -export` of pki[name] (with -legacy: RC2-40/3DES as old tools wrote); `chain` adds CA
    certificates (-certfile)."""
    c = pki[name]
    args = ["openssl", "pkcs12", "-export", "-in", c.cert, "-inkey", c.key, "-name", name, "-out", str(out),
            "-passout", f"pass:{password}"]
    if chain:
        args += ["-certfile", chain]
    if legacy:
        args.append("-legacy")
    subprocess.run(args, check=True, capture_output=True, timeout=30)
    os.chmod(out, 0o600)
    return str(out)


def start(started, args: list[str], env: dict | None = None, wait: bool = True) -> Portcullis:
    port = free_port()
    p = Portcullis([args[0], "--listen", f"127.0.0.1:{port}", *args[1:], "--log-format", "json"], port=port, env=env)
    started.append(p)
    if wait:
        p.wait_listening()
    return p


def server_args(pki, target: str, identity: list[str]) -> list[str]:
    return ["server", "--target", target, *identity, "--cacert", pki.ca, "--allow-cn", "client-allowed"]


def client_args(target: str, identity: list[str], cacert: str | None, extra=()) -> list[str]:
    return ["client", "--target", target, *identity, *(["--cacert", cacert] if cacert else []), *extra]


def app_roundtrip(port: int, payload: bytes = b"through the keystore") -> bytes:
    s = plain_connect(port)
    try:
        return echo_roundtrip(s, payload)
    finally:
        s.close()


def app_gets_closed(port: int) -> None:
    """A plaintext application's connection is closed without a byte back."""
    s = plain_connect(port)
    try:
        try:
            s.sendall(SECRET)
        except OSError:
            pass
        data, _ = read_until_closed(s, 5)
        assert data == b"", data
    finally:
        s.close()


def one_line_failure(args: list[str]) -> str:
    """Exit 2 (a configuration error) or 1 (a file that does not load), with one `portcullis:` line."""
    r = run_portcullis_once(args)
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("portcullis: ")]
    assert len(lines) == 1, r.stderr
    return r.stderr


# ---- PKCS#12 keystores ---------------------------------------------------------------------------------------

def test_server_pkcs12_with_storepass_admits_allowed_client_and_sends_the_chain(started, pki, tls, tmp_path,
                                                                              echo_backend):
    # A server certificate issued by the intermediate: the client trusts only the root, so the handshake works
    # only if the keystore's CA certificate (the intermediate) is sent as the chain.
    issue_leaf(pki, "server-via-intermediate", "/O=Portcullis Test/CN=localhost", ca="intermediate",
               eku="serverAuth", san="DNS:localhost,IP:127.0.0.1")
    store = p12(pki, "server-via-intermediate", tmp_path / "server.p12", chain=str(pki.dir / "intermediate.pem"))
    p = start(started, server_args(pki, echo_backend.address, ["--keystore", store, "--storepass", PASSWORD]))
    s = tls.connect(p.port, "allowed")
    try:
        assert echo_roundtrip(s, b"hello") == b"hello"
        assert int(s.getpeercert()["serialNumber"], 16) == cert_serial(pki["server-via-intermediate"].cert)
    finally:
        s.close()
    tls.refused(p.port, "denied")
    # One warning about the command-line password, naming the file-based flag; the password is nowhere.
    warnings = [r for r in p.records if "--storepass" in r.get("msg", "")]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", warnings
    assert "--keystore-password-file" in warnings[0]["fix"] and "/proc/" in warnings[0]["msg"]
    assert all(PASSWORD not in line for line in p.lines), p.tail()


def test_client_pkcs12_keystore_end_to_end(started, pki, tmp_path, echo_backend):
    server = start(started, server_args(pki, echo_backend.address,
                                        ["--keystore", p12(pki, "server", tmp_path / "server.p12"),
                                         "--storepass", PASSWORD]))
    passfile = tmp_path / "client.pass"
    passfile.write_text(PASSWORD + "\n")
    passfile.chmod(0o600)
    client = start(started, client_args(f"localhost:{server.port}",
                                        ["--keystore", p12(pki, "allowed", tmp_path / "client.p12"),
                                         "--keystore-password-file", str(passfile)], pki.ca))
    assert app_roundtrip(client.port) == b"through the keystore"
    closed = server.wait_log("connection closed")
    assert "client-allowed" in closed.get("tls.peer.subject", ""), closed
    assert not [r for r in client.records if r.get("level") == "warning"], client.tail()


@pytest.mark.parametrize("mode", ["server", "client"])
def test_wrong_password_is_one_line_without_the_password(pki, tmp_path, mode):
    store = p12(pki, "server" if mode == "server" else "allowed", tmp_path / "id.p12")
    wrong = "not-the-pw-1234"
    args = (server_args(pki, "127.0.0.1:2", ["--keystore", store, "--storepass", wrong]) if mode == "server"
            else client_args("localhost:2", ["--keystore", store, "--storepass", wrong], pki.ca))
    err = one_line_failure([args[0], "--listen", "127.0.0.1:1", *args[1:]])
    line = next(line for line in err.splitlines() if line.startswith("portcullis: "))
    assert line.startswith("portcullis: --storepass: wrong password for keystore"), err
    assert store in line
    assert wrong not in err and PASSWORD not in err


def test_wrong_password_file_names_the_flag(pki, tmp_path):
    store = p12(pki, "server", tmp_path / "id.p12")
    passfile = tmp_path / "wrong.pass"
    passfile.write_text("nope\n")
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", *server_args(
        pki, "127.0.0.1:2", ["--keystore", store, "--keystore-password-file", str(passfile)])[1:]])
    assert "portcullis: --keystore-password-file: wrong password for keystore" in err, err
    assert "nope" not in err


def test_legacy_pkcs12_is_refused_with_a_conversion_that_works(started, pki, tmp_path, echo_backend, tls):
    store = p12(pki, "server", tmp_path / "old.p12", legacy=True)
    passfile = tmp_path / "old.pass"
    passfile.write_text(PASSWORD + "\n")
    passfile.chmod(0o600)
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", *server_args(
        pki, "127.0.0.1:2", ["--keystore", store, "--keystore-password-file", str(passfile)])[1:]])
    assert f"--keystore '{store}': encrypted with a legacy cipher" in err, err
    # The command in the message, run as printed (PASSFILE and NEW.p12 filled in), gives a keystore that loads.
    command = err.split("convert it once with '", 1)[1].split("' and use NEW.p12", 1)[0]
    new = tmp_path / "new.p12"
    command = command.replace("PASSFILE", str(passfile)).replace("NEW.p12", str(new))
    subprocess.run(["sh", "-c", command], check=True, capture_output=True, timeout=30)
    assert not os.path.exists(store + ".pem"), "the conversion left the unencrypted key behind"
    p = start(started, server_args(pki, echo_backend.address, ["--keystore", str(new),
                                                               "--keystore-password-file", str(passfile)]))
    s = tls.connect(p.port, "allowed")
    try:
        assert echo_roundtrip(s, b"converted") == b"converted"
    finally:
        s.close()


def test_not_a_keystore_and_no_key_are_one_line(pki, tmp_path):
    junk = tmp_path / "junk.p12"
    junk.write_bytes(b"\x30\x82\x01\x00 neither DER nor PEM")
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", *server_args(
        pki, "127.0.0.1:2", ["--keystore", str(junk)])[1:]])
    assert "--keystore" in err and "neither PKCS#12" in err, err

    certs_only = tmp_path / "certs-only.p12"
    subprocess.run(["openssl", "pkcs12", "-export", "-nokeys", "-in", pki["server"].cert, "-out", str(certs_only),
                    "-passout", f"pass:{PASSWORD}"], check=True, capture_output=True, timeout=30)
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", *server_args(
        pki, "127.0.0.1:2", ["--keystore", str(certs_only), "--storepass", PASSWORD])[1:]])
    assert "no private key in the keystore" in err, err

    err = one_line_failure(["server", "--listen", "127.0.0.1:1", *server_args(
        pki, "127.0.0.1:2", ["--keystore", str(certs_only), "--cert", pki["server"].cert,
                             "--key", pki["server"].key])[1:]])
    assert "mutually exclusive" in err and "--keystore" in err, err


def test_reload_serves_a_rewritten_keystore(started, pki, tls, tmp_path, echo_backend):
    passfile = tmp_path / "server.pass"
    passfile.write_text(PASSWORD)
    passfile.chmod(0o600)
    store = tmp_path / "server.p12"
    p12(pki, "server", store)
    p = start(started, server_args(pki, echo_backend.address, ["--keystore", str(store),
                                                               "--keystore-password-file", str(passfile)]))

    def served_serial() -> int:
        s = tls.connect(p.port, "allowed")
        try:
            return int(s.getpeercert()["serialNumber"], 16)
        finally:
            s.close()

    assert served_serial() == cert_serial(pki["server"].cert)
    p12(pki, "server2", tmp_path / "next.p12")
    os.replace(tmp_path / "next.p12", store)
    p.send_signal(signal.SIGHUP)
    wait_until(lambda: served_serial() == cert_serial(pki["server2"].cert), 10, what="the new keystore served")
    assert not p.logs("reload failed: keeping the current configuration"), p.tail()


def test_readable_keystore_is_warned_about(started, pki, tmp_path, echo_backend):
    store = p12(pki, "server", tmp_path / "server.p12")
    os.chmod(store, 0o644)
    p = start(started, server_args(pki, echo_backend.address, ["--keystore", store, "--storepass", PASSWORD]))
    warning = p.wait_log("key file readable by group or others", file=store)
    assert warning["fix"] == f"chmod 600 {store}"


def test_config_file_keystore_and_check(started, pki, tmp_path, echo_backend, tls):
    passfile = tmp_path / "server.pass"
    passfile.write_text(PASSWORD + "\n")
    passfile.chmod(0o600)
    store = p12(pki, "server", tmp_path / "server.p12")
    port = free_port()
    config = ConfigFile(tmp_path / "portcullis.yaml", [{
        "name": "keystore", "listen": f"127.0.0.1:{port}", "target": echo_backend.address,
        "tls": {"keystore": store, "keystore-password-file": str(passfile), "cacert": pki.ca},
        "policy": {"rules": [{"name": "app", "cn": "client-allowed"}]},
    }])
    r = run_portcullis_once(["check", "--config", str(config)])
    assert r.returncode == 0, r.stderr
    assert f"keystore: {store}" in r.stdout and f"keystore-password-file: {passfile}" in r.stdout, r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    p = Portcullis(["run", "--config", str(config)], port=port)
    started.append(p)
    p.wait_listening()
    s = tls.connect(port, "allowed")
    try:
        assert echo_roundtrip(s, b"from a file") == b"from a file"
    finally:
        s.close()
    # A password written in the file itself is refused, and not echoed.
    config.data["listeners"][0]["tls"] = {"keystore": store, "storepass": PASSWORD, "cacert": pki.ca}
    config.write()
    r = run_portcullis_once(["check", "--config", str(config)])
    assert r.returncode != 0 and "keystore-password-file" in r.stderr, r.stderr
    assert PASSWORD not in r.stderr


# ---- client --disable-authentication --------------------------------------------------------------------------

def test_disable_authentication_against_a_server_that_asks_for_no_certificate(started, pki, recorder):
    server = recorder(pki["server"].cert, pki["server"].key)  # no client CA: no CertificateRequest
    client = start(started, client_args(f"localhost:{server.port}", ["--disable-authentication"], pki.ca))
    assert app_roundtrip(client.port, b"anonymous client") == b"anonymous client"
    assert server.handshakes_ok == 1 and server.app_bytes == len(b"anonymous client")
    listening = client.logs("listening")[0]
    assert listening["tls.cert.subject"].startswith("none"), listening


def test_disable_authentication_still_verifies_the_server(started, pki, recorder):
    server = recorder(pki["server"].cert, pki["server"].key)
    client = start(started, client_args(f"localhost:{server.port}", ["--disable-authentication"], pki.other_ca))
    app_gets_closed(client.port)
    assert server.app_bytes == 0


def test_disable_authentication_is_refused_by_a_server_mode_portcullis(started, pki, proxy, echo_backend):
    server = proxy(target=echo_backend.address)
    client = start(started, client_args(f"localhost:{server.port}", ["--disable-authentication"], pki.ca))
    app_gets_closed(client.port)
    server.wait_log(pred=lambda r: r.get("handshake.error") == "no_certificate")
    refused = client.wait_log("handshake failed")
    assert refused["handshake.error"] == "refused_by_peer" and "certificate required" in refused["handshake.detail"], refused
    assert echo_backend.bytes_in == 0


def test_disable_authentication_with_a_certificate_is_one_line(pki):
    err = one_line_failure(["client", "--listen", "127.0.0.1:1", *client_args(
        "localhost:2", ["--disable-authentication", "--cert", pki["allowed"].cert, "--key", pki["allowed"].key],
        pki.ca)[1:]])
    assert "--disable-authentication" in err and "mutually exclusive" in err, err


# ---- client without --cacert: the system trust store -----------------------------------------------------------

def system_only_env(ca_file: str | None) -> dict:
    env = {"SSL_CERT_DIR": "/etc/ssl/certs"}
    env["SSL_CERT_FILE"] = ca_file or "/etc/ssl/certs/ca-certificates.crt"
    return env


def test_system_trust_with_ssl_cert_file_connects(started, pki, proxy, echo_backend):
    server = proxy(target=echo_backend.address)
    client = start(started, client_args(f"localhost:{server.port}",
                                        ["--cert", pki["allowed"].cert, "--key", pki["allowed"].key], None),
                   env=system_only_env(pki.ca))
    assert app_roundtrip(client.port) == b"through the keystore"
    trust = client.logs("listening")[0]["tls.trust"]
    assert trust.startswith("system") and pki.ca in trust, trust


def test_system_trust_alone_refuses_the_test_ca(started, pki, recorder):
    server = recorder(pki["server"].cert, pki["server"].key)
    client = start(started, client_args(f"localhost:{server.port}", ["--disable-authentication"], None),
                   env=system_only_env(None))
    app_gets_closed(client.port)
    assert server.app_bytes == 0
    client.wait_log("handshake failed", **{"handshake.error": "unknown_ca"})


@pytest.mark.parametrize("extra", [["--override-server-name", "wrong.example.org"],
                                   ["--override-server-name", "wrong.example.org", "--verify-cn", "localhost"]],
                         ids=["name", "name-with-verify-rule"])
def test_system_trust_refuses_a_wrong_name(started, pki, recorder, extra):
    server = recorder(pki["server"].cert, pki["server"].key)
    client = start(started, client_args(f"localhost:{server.port}", ["--disable-authentication"], None, extra),
                   env=system_only_env(pki.ca))
    app_gets_closed(client.port)
    assert server.app_bytes == 0
    # The same flags with the right name connect: the refusal was the name.
    good = start(started, client_args(f"localhost:{server.port}", ["--disable-authentication"], None,
                                      [x if x != "wrong.example.org" else "localhost" for x in extra]),
                 env=system_only_env(pki.ca))
    assert app_roundtrip(good.port, b"right name") == b"right name"


def test_check_shows_the_system_trust_store(pki, tmp_path):
    config = ConfigFile(tmp_path / "client.yaml", [{
        "name": "to-public", "mode": "client", "listen": f"127.0.0.1:{free_port()}", "target": "localhost:443",
        "tls": {"disable-authentication": True},
    }])
    r = run_portcullis_once(["check", "--config", str(config)])
    assert r.returncode == 0, r.stderr
    assert "cacert: none (the system trust store" in r.stdout, r.stdout
    assert "disable-authentication: true" in r.stdout, r.stdout
    # Turning the name check off is refused without a CA of one's own.
    config.data["listeners"][0]["policy"] = {"allow-all": True, "verify-server-name": False}
    config.write()
    r = run_portcullis_once(["check", "--config", str(config)])
    assert r.returncode != 0 and "verify-server-name" in r.stderr and "tls.cacert" in r.stderr, r.stderr


def test_server_mode_still_requires_cacert_and_refuses_disable_authentication(pki, tmp_path):
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2",
                            "--cert", pki["server"].cert, "--key", pki["server"].key, "--allow-all"])
    assert "--cacert (config key tls.cacert) is required" in err, err
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", "--target", "127.0.0.1:2", "--cacert", pki.ca,
                            "--cert", pki["server"].cert, "--key", pki["server"].key, "--allow-all",
                            "--disable-authentication"])
    assert "--disable-authentication is not supported in server mode" in err, err


def test_combined_pem_with_an_encrypted_key_takes_storepass_as_its_passphrase(started, pki, tls, tmp_path,
                                                                             echo_backend):
    enc = pki["server-enc"]
    combined = tmp_path / "combined.pem"
    combined.write_text(open(enc.cert).read() + open(enc.key).read())
    combined.chmod(0o600)
    p = start(started, server_args(pki, echo_backend.address, ["--keystore", str(combined), "--storepass", enc.password]))
    s = tls.connect(p.port, "allowed")
    try:
        assert echo_roundtrip(s, b"pem keystore") == b"pem keystore"
    finally:
        s.close()
    err = one_line_failure(["server", "--listen", "127.0.0.1:1", *server_args(
        pki, "127.0.0.1:2", ["--keystore", str(combined), "--storepass", "wrong-passphrase"])[1:]])
    assert f"portcullis: --storepass: wrong password for keystore '{combined}'" in err, err
    assert "wrong-passphrase" not in err and enc.password not in err


def test_pkcs12_without_a_password(started, pki, tls, tmp_path, echo_backend):
    store = p12(pki, "server", tmp_path / "open.p12", password="")
    p = start(started, server_args(pki, echo_backend.address, ["--keystore", store]))
    s = tls.connect(p.port, "allowed")
    try:
        assert echo_roundtrip(s, b"no password") == b"no password"
    finally:
        s.close()
