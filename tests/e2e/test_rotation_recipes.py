"""The certificate rotation recipes in examples/rotation/ and examples/kubernetes/ (issue 13, item 4).

Each recipe relies on how a tool rewrites files; these tests rewrite them the same way, with certificates made
by the openssl CLI, against a running Portcullis:

- step (`step ca renew`/`rekey`): Go's os.WriteFile, i.e. truncate + write in place, then SIGUSR1;
- spiffe-helper: SVID, key, bundle written in that order into one directory, in place, then SIGUSR1;
- Kubernetes Secret/ConfigMap volumes: kubelet's AtomicWriter (timestamped directory, `..data_tmp` symlink
  renamed over `..data`, visible names symlinked to `..data/<name>`), with no signal at all.

Neither step, spiffe-helper, SPIRE nor a Kubernetes cluster runs here; see each README's "Tested" section.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import types
from pathlib import Path

import pytest
import yaml

from harness import (REPO_ROOT, Portcullis, admitted, client_context, echo_roundtrip, free_port, read_until_closed,
                     run_portcullis_once, start_run, still_open, stop_all, wait_log_after, wait_until)

RELOAD_TIMEOUT = 8.0  # file changes are debounced 300 ms; a debug build on a shared machine needs margin
WATCH_SETTLE = 0.9  # longer than the debounce: a reload triggered by the last write has had its chance


# ---------------------------------------------------------------------------------------------------------
# a small CA with the openssl CLI (independent of the session PKI, so a test can have several)
# ---------------------------------------------------------------------------------------------------------
def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


class Leaf:
    def __init__(self, cert: Path, key: Path, serial: int, chain: Path):
        self.cert, self.key, self.serial = cert, key, serial
        self.chain = chain  # leaf + intermediates: what the tool writes as "the certificate"

    @property
    def chain_pem(self) -> bytes:
        return self.chain.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class MiniCA:
    """A root CA (and optionally an intermediate under it that signs the leaves)."""

    def __init__(self, directory: Path, name: str, *, intermediate: bool = False):
        self.dir = directory / name
        self.dir.mkdir(parents=True)
        self.root_key, self.root = self.dir / "root.key", self.dir / "root.pem"
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.root_key)
        _openssl("req", "-x509", "-new", "-key", self.root_key, "-subj", f"/O=Rotation Test/CN={name} root",
                 "-days", "30", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash",
                 "-out", self.root)
        self.signer_key, self.signer = self.root_key, self.root
        self.intermediate = None
        if intermediate:
            key, cert, csr, ext = (self.dir / f"intermediate.{s}" for s in ("key", "pem", "csr", "ext"))
            _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
            _openssl("req", "-new", "-key", key, "-subj", f"/O=Rotation Test/CN={name} intermediate", "-out", csr)
            ext.write_text("[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                           "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
            _openssl("x509", "-req", "-in", csr, "-CA", self.root, "-CAkey", self.root_key, "-set_serial", "77",
                     "-days", "30", "-sha256", "-extfile", ext, "-extensions", "v3", "-out", cert)
            self.signer_key, self.signer, self.intermediate = key, cert, cert
        self._count = 0

    def issue(self, stem: str, subject: str, *, san: str | None = None, eku: str = "serverAuth,clientAuth",
              key: Path | None = None) -> Leaf:
        """A leaf signed by the intermediate (or the root); `key` reuses an existing private key (a renewal)."""
        self._count += 1
        out = self.dir / f"{stem}-{self._count}"
        if key is None:
            key = out.with_suffix(".key")
            _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        csr, ext, cert = out.with_suffix(".csr"), out.with_suffix(".ext"), out.with_suffix(".pem")
        lines = ["[v3]", "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={eku}", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        serial = int.from_bytes(os.urandom(8), "big") | (1 << 62)
        _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", self.signer, "-CAkey", self.signer_key, "-set_serial", serial,
                 "-days", "2", "-sha256", "-extfile", ext, "-extensions", "v3", "-out", cert)
        chain = out.with_suffix(".chain.pem")
        chain.write_bytes(cert.read_bytes() + (self.intermediate.read_bytes() if self.intermediate else b""))
        return Leaf(cert, key, serial, chain)


def write_in_place(path, data: bytes, mode: int = 0o600):
    """Go's os.WriteFile: open(O_WRONLY|O_CREAT|O_TRUNC), write, close. The file keeps its inode (and owner)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def client_ctx(cert: Path | str | None, key: Path | str | None, trust: Path | str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.load_verify_locations(str(trust))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """The serial of the certificate a new, fully verified connection is served (and the relay works)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        assert echo_roundtrip(s, b"serial?") == b"serial?"
        return int(s.getpeercert()["serialNumber"], 16)


def new_records(p, mark: int, prefix: str) -> list[dict]:
    return [r for r in p.records[mark:] if str(r.get("msg", "")).startswith(prefix)]


@pytest.fixture
def started(request):
    """Portcullis processes started by a test (run --config or server), stopped by PID at the end."""
    procs = []
    yield procs
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(procs, failed)
    if problems:
        pytest.fail("\n".join(problems))


# ---------------------------------------------------------------------------------------------------------
# step ca renew / rekey (examples/rotation/step)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def step_setup(tmp_path, pki, proxy):
    """A step-ca-like CA (root + intermediate), the server's files as step writes them (leaf + intermediate in
    the certificate file, mode 0600), and a server-mode Portcullis on them; clients use the session PKI."""
    ca = MiniCA(tmp_path, "step-ca", intermediate=True)
    first = ca.issue("portcullis", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    certs = tmp_path / "certs"
    certs.mkdir()
    crt, key = certs / "portcullis.crt", certs / "portcullis.key"
    write_in_place(crt, first.chain_pem)
    write_in_place(key, first.key_pem)
    p = proxy(cert=str(crt), key=str(key), cacert=pki.ca)
    ctx = client_context(pki, "allowed", ca=str(ca.root))  # trusts step's root only: the intermediate must be served
    return ca, first, crt, key, p, ctx


def test_step_renew_in_place_then_sigusr1_serves_new_serial_and_keeps_open_connection(step_setup):
    ca, first, crt, key, p, ctx = step_setup
    assert served_serial(p.port, ctx) == first.serial
    inode = crt.stat().st_ino
    open_conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.port), timeout=5), server_hostname="localhost")
    assert echo_roundtrip(open_conn, b"before renewal") == b"before renewal"

    renewed = ca.issue("portcullis", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth",
                       key=first.key)  # `step ca renew` keeps the key
    mark = len(p.records)
    write_in_place(crt, renewed.chain_pem)
    assert crt.stat().st_ino == inode, "the renewal must be an in-place rewrite, as step does it"
    p.send_signal(signal.SIGUSR1)  # --exec "systemctl kill --signal=SIGUSR1 …"
    rec = wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT, pred=lambda r: r.get("reload.trigger") == "SIGUSR1")
    assert rec["config.generation"] >= "2", rec
    assert served_serial(p.port, ctx) == renewed.serial
    assert still_open(open_conn, b"after renewal"), "a connection open across the renewal was dropped"
    time.sleep(WATCH_SETTLE)  # the watch's own reload of the same rewrite follows; it changes nothing
    assert not new_records(p, mark, "reload failed"), new_records(p, mark, "reload failed")
    assert served_serial(p.port, ctx) == renewed.serial
    assert still_open(open_conn, b"after both reloads")
    open_conn.close()


def test_step_truncated_or_half_written_certificate_keeps_serving_old_pair(step_setup):
    """The instants inside os.WriteFile: the file truncated (empty), then partly written. Whatever triggers a
    reload then — the directory watch or a signal — the old certificate stays in use; the finished write wins."""
    ca, first, crt, key, p, ctx = step_setup
    renewed = ca.issue("portcullis", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth",
                       key=first.key)
    data = renewed.chain_pem
    open_conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.port), timeout=5), server_hostname="localhost")
    assert echo_roundtrip(open_conn, b"x") == b"x"

    fd = os.open(crt, os.O_WRONLY | os.O_TRUNC)  # step's open(O_TRUNC); the write is held back
    try:
        for stage, chunk in (("truncated", b""), ("half-written", data[: len(data) // 2])):
            mark = len(p.records)
            os.write(fd, chunk)
            os.utime(crt)  # a change event even for the empty write
            watch = wait_log_after(p, mark, timeout=RELOAD_TIMEOUT,
                                   pred=lambda r: str(r.get("msg", "")).startswith("reload"))
            assert watch["msg"].startswith("reload failed") and watch["reload.trigger"] == "file change", (stage, watch)
            mark = len(p.records)
            p.send_signal(signal.SIGUSR1)
            sig = wait_log_after(p, mark, timeout=RELOAD_TIMEOUT,
                                 pred=lambda r: str(r.get("msg", "")).startswith("reload"))
            assert sig["msg"].startswith("reload failed") and sig["reload.trigger"] == "SIGUSR1", (stage, sig)
            assert served_serial(p.port, ctx) == first.serial, f"{stage}: the old pair must still be served"
            assert still_open(open_conn), stage
        mark = len(p.records)
        os.write(fd, data[len(data) // 2:])
    finally:
        os.close(fd)
    p.send_signal(signal.SIGUSR1)
    wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT)
    wait_until(lambda: served_serial(p.port, ctx) == renewed.serial, RELOAD_TIMEOUT, interval=0.2,
               what="the completed certificate to be served")
    assert still_open(open_conn)
    open_conn.close()
    assert p.alive()


def test_step_rekey_certificate_written_before_key_converges(step_setup):
    """`step ca rekey` writes the new certificate, then the new key. In between the pair does not match: a
    reload then fails and keeps the old pair; the key's write (or the signal after it) brings the new one."""
    ca, first, crt, key, p, ctx = step_setup
    rekeyed = ca.issue("portcullis", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    mark = len(p.records)
    write_in_place(crt, rekeyed.chain_pem)
    failed = wait_log_after(p, mark, timeout=RELOAD_TIMEOUT, pred=lambda r: str(r.get("msg", "")).startswith("reload"))
    assert failed["msg"].startswith("reload failed"), failed
    assert "match" in failed.get("error", ""), failed
    assert served_serial(p.port, ctx) == first.serial
    mark = len(p.records)
    write_in_place(key, rekeyed.key_pem)
    wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT)  # the watch alone: no signal yet
    assert served_serial(p.port, ctx) == rekeyed.serial
    mark = len(p.records)
    p.send_signal(signal.SIGUSR1)
    wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT, pred=lambda r: r.get("reload.trigger") == "SIGUSR1")
    assert served_serial(p.port, ctx) == rekeyed.serial


def test_step_example_units_and_config(tmp_path, pki):
    """The example's units say what the README says, and its configuration passes `check` with files in place."""
    d = REPO_ROOT / "examples" / "rotation" / "step"
    daemon = (d / "step-renew@.service").read_text()
    exec_line = re.search(r'--exec "([^"]+)"', daemon).group(1)
    assert "$(" not in exec_line and "SIGUSR1" in exec_line, exec_line  # step runs --exec without a shell
    assert "step ca renew --daemon" in daemon
    override = (d / "cert-renewer@portcullis.service.d" / "override.conf").read_text()
    posts = [line for line in override.splitlines() if line.startswith("ExecStartPost=")]
    assert posts[0] == "ExecStartPost=" and len(posts) == 2, posts  # reset, then ours
    assert "portcullis@edge.service" in posts[1]

    ca = MiniCA(tmp_path, "step-ca", intermediate=True)
    leaf = ca.issue("portcullis", "/CN=edge.internal", san="DNS:edge.internal", eku="serverAuth")
    certs = tmp_path / "etc-step-certs"
    certs.mkdir()
    write_in_place(certs / "portcullis.crt", leaf.chain_pem)
    write_in_place(certs / "portcullis.key", leaf.key_pem)
    shutil.copy(ca.root, certs / "root_ca.crt")
    cfg = tmp_path / "edge.yaml"
    cfg.write_text((d / "portcullis.yaml").read_text().replace("/etc/step/certs", str(certs)))
    r = run_portcullis_once(["check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------------------
# spiffe-helper (examples/rotation/spiffe-helper)
# ---------------------------------------------------------------------------------------------------------
TRUST_DOMAIN = "spiffe://example.org"
SERVER_ID = f"{TRUST_DOMAIN}/ns/prod/sa/orders-api"
FRONTEND_ID = f"{TRUST_DOMAIN}/ns/prod/sa/frontend"


class SpiffeHelperDir:
    """cert_dir as spiffe-helper writes it: svid.pem, svid_key.pem, svid_bundle.pem, in that order, each in
    place (pkg/disk/x509.go: os.WriteFile three times), then the renew signal."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir()
        self.svid, self.key, self.bundle = (directory / n for n in ("svid.pem", "svid_key.pem", "svid_bundle.pem"))

    def writes(self, svid: Leaf, bundle_cas: list[MiniCA]):
        """The three writes of one update, in spiffe-helper's order, as (name, do-it) pairs."""
        bundle = b"".join(ca.root.read_bytes() for ca in bundle_cas)
        return [("svid", lambda: write_in_place(self.svid, svid.chain_pem, 0o644)),
                ("key", lambda: write_in_place(self.key, svid.key_pem, 0o600)),
                ("bundle", lambda: write_in_place(self.bundle, bundle, 0o644))]

    def write(self, svid: Leaf, bundle_cas: list[MiniCA]):
        for _, do in self.writes(svid, bundle_cas):
            do()


@pytest.fixture
def spiffe(tmp_path, proxy, echo_backend):
    """Two CAs of one trust domain (SPIRE's current and next), a workload (the server) and a frontend client
    from each, and a server-mode Portcullis admitting the frontend's SPIFFE ID from files in one directory."""
    old, new = MiniCA(tmp_path, "spire-ca-1"), MiniCA(tmp_path, "spire-ca-2")
    server_san = f"URI:{SERVER_ID},DNS:localhost"

    s = types.SimpleNamespace(old=old, new=new)
    s.server_old = old.issue("svid", "/O=SPIRE/CN=orders-api", san=server_san)
    s.server_new = new.issue("svid", "/O=SPIRE/CN=orders-api", san=server_san)
    s.frontend_old = old.issue("frontend", "/O=SPIRE/CN=frontend", san=f"URI:{FRONTEND_ID}")
    s.frontend_new = new.issue("frontend", "/O=SPIRE/CN=frontend", san=f"URI:{FRONTEND_ID}")
    s.intruder_new = new.issue("batch", "/O=SPIRE/CN=batch", san=f"URI:{TRUST_DOMAIN}/ns/dev/sa/batch")
    # Clients trust both roots, so the tests see who Portcullis admits, not whom the client trusts.
    both = tmp_path / "both-roots.pem"
    both.write_bytes(old.root.read_bytes() + new.root.read_bytes())
    s.trust_both = both
    s.files = SpiffeHelperDir(tmp_path / "svid")
    s.files.write(s.server_old, [old])
    s.proxy = proxy(cert=str(s.files.svid), key=str(s.files.key), cacert=str(s.files.bundle),
                    allow=["--allow-uri", f"{TRUST_DOMAIN}/ns/prod/sa/frontend"], target=echo_backend.address)
    s.port = s.proxy.port

    def ctx(leaf: Leaf | None):
        return client_ctx(leaf.chain if leaf else None, leaf.key if leaf else None, both)

    s.ctx = ctx
    s.admits = lambda leaf: admitted(s.port, ctx(leaf))
    return s


def _wait_reload(p, mark, trigger=None):
    return wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT,
                          pred=(lambda r: r.get("reload.trigger") == trigger) if trigger else None)


def test_spiffe_ca_rotation_with_overlapping_bundle_admits_both_then_only_new(spiffe):
    s, p = spiffe, spiffe.proxy
    assert s.admits(s.frontend_old) and not s.admits(s.frontend_new) and not s.admits(s.intruder_new)
    live_old = s.ctx(s.frontend_old).wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=5),
                                                 server_hostname="localhost")
    assert echo_roundtrip(live_old, b"old-ca client") == b"old-ca client"

    # 1. SPIRE publishes the next CA: bundle {old, new}, SVID still from the old CA.
    mark = len(p.records)
    s.files.write(s.server_old, [s.old, s.new])
    p.send_signal(signal.SIGUSR1)
    _wait_reload(p, mark, "SIGUSR1")
    wait_until(lambda: s.admits(s.frontend_new), RELOAD_TIMEOUT, interval=0.2, what="new-CA client admitted")
    assert s.admits(s.frontend_old) and not s.admits(s.intruder_new)
    assert still_open(live_old), "widening the bundle must not close anyone"

    # 2. The workload's SVID now comes from the new CA; the bundle keeps both.
    mark = len(p.records)
    s.files.write(s.server_new, [s.old, s.new])
    p.send_signal(signal.SIGUSR1)
    _wait_reload(p, mark, "SIGUSR1")
    wait_until(lambda: served_serial(s.port, s.ctx(s.frontend_new)) == s.server_new.serial, RELOAD_TIMEOUT,
               interval=0.2, what="the new SVID served")
    assert s.admits(s.frontend_old) and s.admits(s.frontend_new)
    assert still_open(live_old)

    # 3. The old CA leaves the bundle: its clients are refused, and the live one is closed (reauthorize).
    mark = len(p.records)
    s.files.write(s.server_new, [s.new])
    p.send_signal(signal.SIGUSR1)
    _wait_reload(p, mark, "SIGUSR1")
    wait_until(lambda: not s.admits(s.frontend_old), RELOAD_TIMEOUT, interval=0.2, what="old-CA client refused")
    assert s.admits(s.frontend_new) and not s.admits(s.intruder_new)
    _, how = read_until_closed(live_old, timeout=5)
    closed = p.wait_log("connection closed", timeout=5,
                        pred=lambda r: "reauthorization failed" in str(r.get("close.reason", "")))
    assert closed, how
    live_old.close()


def test_spiffe_hard_cut_to_new_ca_converges_through_every_intermediate_state(spiffe):
    """No overlap: SVID, key and bundle all move to the new CA, written with pauses longer than the debounce so
    that the directory watch reloads each intermediate state — the worst timing spiffe-helper could have."""
    s, p = spiffe, spiffe.proxy
    live_old = s.ctx(s.frontend_old).wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=5),
                                                 server_hostname="localhost")
    assert echo_roundtrip(live_old, b"hello") == b"hello"
    for step, do in s.files.writes(s.server_new, [s.new]):
        mark = len(p.records)
        do()
        rec = wait_log_after(p, mark, timeout=RELOAD_TIMEOUT, pred=lambda r: str(r.get("msg", "")).startswith("reload"))
        if step == "svid":
            # new certificate next to the old key: refused as a whole, the old pair stays
            assert rec["msg"].startswith("reload failed") and "match" in rec.get("error", ""), rec
            assert served_serial(s.port, s.ctx(s.frontend_old)) == s.server_old.serial
            assert s.admits(s.frontend_old) and not s.admits(s.frontend_new)
        elif step == "key":
            # a consistent pair with the old bundle: served; clients are still judged by the old bundle
            assert rec["msg"] == "reloaded", rec
            assert served_serial(s.port, s.ctx(s.frontend_old)) == s.server_new.serial
            assert s.admits(s.frontend_old) and not s.admits(s.frontend_new)
        else:
            assert rec["msg"] == "reloaded", rec  # converged on what was written
        time.sleep(WATCH_SETTLE)  # longer than the debounce: each state gets its own reload
    assert s.admits(s.frontend_new) and not s.admits(s.frontend_old) and not s.admits(s.intruder_new)
    assert served_serial(s.port, s.ctx(s.frontend_new)) == s.server_new.serial
    read_until_closed(live_old, timeout=5)  # the old CA left the bundle: reauthorization closes it
    live_old.close()
    # spiffe-helper's signal after the three writes changes nothing more
    mark = len(p.records)
    p.send_signal(signal.SIGUSR1)
    _wait_reload(p, mark, "SIGUSR1")
    assert s.admits(s.frontend_new) and not s.admits(s.frontend_old)


def test_spiffe_quick_writes_converge_on_the_watch_alone(spiffe):
    """The usual timing (three writes within microseconds) and no signal: the watch's debounced reload sees the
    finished state; clients of the new CA are never refused once it is written."""
    s, p = spiffe, spiffe.proxy
    mark = len(p.records)
    s.files.write(s.server_new, [s.new])
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while not s.admits(s.frontend_new):
        assert time.monotonic() < deadline, "the watch never brought the new CA in:\n" + p.tail()
        time.sleep(0.1)
    assert not s.admits(s.frontend_old)
    assert served_serial(s.port, s.ctx(s.frontend_new)) == s.server_new.serial
    assert all(r["reload.trigger"] == "file change" for r in new_records(p, mark, "reload")), new_records(p, mark, "reload")
    time.sleep(WATCH_SETTLE)
    for _ in range(5):  # stable: no later reload flips it back
        assert s.admits(s.frontend_new) and not s.admits(s.frontend_old)


def test_spiffe_client_mode_follows_rotated_bundle_on_sigusr1(spiffe, tmp_path, started):
    """The outbound half of examples/rotation/spiffe-helper/spiffe.yaml: a client-mode listener presenting the
    SVID and verifying the server's SPIFFE ID against the bundle. After the rotation it reaches a server whose
    SVID comes from the new CA."""
    s = spiffe
    client_files = SpiffeHelperDir(tmp_path / "client-svid")
    client_files.write(s.frontend_old, [s.old])
    local = free_port()
    c = Portcullis(["client", "--listen", f"127.0.0.1:{local}", "--target", f"127.0.0.1:{s.port}",
                    "--cert", str(client_files.svid), "--key", str(client_files.key),
                    "--cacert", str(client_files.bundle), "--verify-uri", SERVER_ID,
                    "--log-format", "json"], port=local, name="portcullis-client")
    started.append(c)
    c.wait_listening()

    def through_client() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", local), timeout=3) as sock:
                sock.sendall(b"via client mode")
                sock.settimeout(3)
                return sock.recv(64) == b"via client mode"
        except OSError:
            return False

    assert through_client()
    # Both sides rotate to the new CA (hard cut).
    s.files.write(s.server_new, [s.new])
    wait_until(lambda: s.admits(s.frontend_new), RELOAD_TIMEOUT, interval=0.2, what="server side rotated")
    assert not through_client(), "the client side still trusts only the old CA and presents an old-CA SVID"
    mark = len(c.records)
    client_files.write(s.frontend_new, [s.new])
    c.send_signal(signal.SIGUSR1)
    _wait_reload(c, mark, "SIGUSR1")
    wait_until(through_client, RELOAD_TIMEOUT, interval=0.2, what="client mode through the rotated server")


def test_spiffe_example_config_passes_check(spiffe, tmp_path):
    d = REPO_ROOT / "examples" / "rotation" / "spiffe-helper"
    conf = (d / "helper.conf").read_text()
    keys = dict(re.findall(r'^(\w+)\s*=\s*"?([^"\n]*)"?', conf, re.M))
    for k in ("agent_address", "cmd", "cmd_args", "cert_dir", "svid_file_name", "svid_key_file_name",
              "svid_bundle_file_name", "renew_signal"):
        assert k in keys, k
    assert keys["renew_signal"] == "SIGUSR1"
    text = (d / "spiffe.yaml").read_text()
    cfg = yaml.safe_load(text)
    tls = cfg["listeners"][0]["tls"]
    assert [Path(tls[k]).name for k in ("cert", "key", "cacert")] == \
        [keys["svid_file_name"], keys["svid_key_file_name"], keys["svid_bundle_file_name"]]
    assert Path(tls["cert"]).parent == Path(keys["cert_dir"])
    assert keys["cmd_args"].split()[-1].endswith("spiffe.yaml")
    # the files of a real write, at the paths the config names (cert_dir moved into the test's directory)
    text = text.replace(keys["cert_dir"], str(spiffe.files.dir)).replace("payments.prod.svc:8443", "localhost:8443")
    path = tmp_path / "spiffe.yaml"
    path.write_text(text)
    r = run_portcullis_once(["check", "--config", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_portcullis_once(["check", "--config", str(path), "--cert", str(spiffe.frontend_old.chain),
                             "--listener", "orders-api"])
    assert r.returncode == 0 and "frontends" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------------------
# Kubernetes (examples/kubernetes)
# ---------------------------------------------------------------------------------------------------------
K8S = REPO_ROOT / "examples" / "kubernetes"


class AtomicWriterVolume:
    """A Secret/ConfigMap/projected volume updated as kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go)
    does: the payload goes into a new `..<UTC timestamp>.<random>` directory; `..data_tmp` is symlinked to it
    and renamed over `..data` (the one atomic step); each visible path is a symlink into `..data`, created when
    missing — `tls.crt -> ..data/tls.crt`, or for an item with a subdirectory path (`items: [{key: tls.crt,
    path: tls/tls.crt}]`) a real directory `tls/` holding `tls.crt -> ../..data/tls/tls.crt`; paths no longer
    in the payload and the previous timestamped directory are removed."""

    def __init__(self, directory: Path, *, linked_subdirectories: bool = False):
        """linked_subdirectories: older kubelets' layout, where a subdirectory is itself a symlink
        (`tls -> ..data/tls`) instead of a real directory of file links."""
        self.dir = directory
        self.linked_subdirectories = linked_subdirectories
        self.dir.mkdir(parents=True, exist_ok=True)

    def _visible(self) -> set[str]:
        found = set()
        for root, dirs, files in os.walk(self.dir):
            rel = Path(root).relative_to(self.dir)
            if rel.parts and rel.parts[0].startswith(".."):
                continue
            dirs[:] = [d for d in dirs if not (root == str(self.dir) and d.startswith(".."))]
            found.update(str(rel / f) for f in files if not (root == str(self.dir) and f.startswith("..")))
        return found

    def write(self, payload: dict[str, bytes], mode: int = 0o644):
        data_link = self.dir / "..data"
        to_remove = set() if self.linked_subdirectories else self._visible() - set(payload)
        ts_dir = Path(tempfile.mkdtemp(dir=self.dir, prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())))
        os.chmod(ts_dir, 0o755)
        for name, content in payload.items():
            (ts_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (ts_dir / name).write_bytes(content)
            os.chmod(ts_dir / name, mode)
        for name in payload:
            if self.linked_subdirectories:
                top = Path(name).parts[0]
                if not (self.dir / top).is_symlink():
                    os.symlink(f"..data/{top}", self.dir / top)
                continue
            visible = self.dir / name
            visible.parent.mkdir(parents=True, exist_ok=True)
            if not visible.is_symlink():
                os.symlink("../" * (len(Path(name).parts) - 1) + f"..data/{name}", visible)
        old_ts = os.readlink(data_link) if data_link.is_symlink() else None
        os.symlink(ts_dir.name, self.dir / "..data_tmp")
        os.rename(self.dir / "..data_tmp", data_link)
        for name in sorted(to_remove, reverse=True):
            os.remove(self.dir / name)
        if old_ts:
            shutil.rmtree(self.dir / old_ts)
        return ts_dir.name


def _manifests():
    return {f: yaml.safe_load((K8S / f).read_text())
            for f in ("pod.yaml", "certificate.yaml", "configmap.yaml", "networkpolicy.yaml")}


def _portcullis_container(pod):
    return next(c for c in pod["spec"]["containers"] if c["name"] == "portcullis")


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_k8s_manifests_parse_and_agree_with_each_other():
    m = _manifests()
    pod, cert, cm, netpol = m["pod.yaml"], m["certificate.yaml"], m["configmap.yaml"], m["networkpolicy.yaml"]
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert (cert["apiVersion"], cert["kind"]) == ("cert-manager.io/v1", "Certificate")
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert (netpol["apiVersion"], netpol["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    namespaces = {x["metadata"]["namespace"] for x in m.values()}
    assert len(namespaces) == 1, namespaces

    config = yaml.safe_load(cm["data"]["portcullis.yaml"])
    listener = config["listeners"][0]
    side = _portcullis_container(pod)
    assert side["args"][:2] == ["run", "--config"]
    config_path = Path(side["args"][2])
    mounts = {mt["name"]: mt for mt in side["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert all("subPath" not in mt for mt in side["volumeMounts"]), "subPath mounts are never updated by kubelet"
    assert all(mt.get("readOnly") for mt in side["volumeMounts"])

    # the config file comes from the ConfigMap's key, mounted as a directory
    cfg_mount = next(mt for mt in side["volumeMounts"] if config_path.parent == Path(mt["mountPath"]))
    assert volumes[cfg_mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert config_path.name in cm["data"]
    # cert, key and CA are the Secret's keys in the mounted directory; the Secret is the Certificate's
    tls_paths = [Path(listener["tls"][k]) for k in ("cert", "key", "cacert")]
    assert [p.name for p in tls_paths] == ["tls.crt", "tls.key", "ca.crt"]
    tls_mount = next(mt for mt in side["volumeMounts"] if tls_paths[0].parent == Path(mt["mountPath"]))
    assert all(p.parent == Path(tls_mount["mountPath"]) for p in tls_paths)
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert set(cert["spec"]["usages"]) >= {"server auth", "client auth"}
    assert cert["spec"]["issuerRef"]["name"] and cert["spec"]["dnsNames"]

    # ports: the TLS listener is the container port and the only one the NetworkPolicy opens; probes hit status
    tls_port, status_port = _port_of(listener["listen"]), _port_of(config["status"]["listen"])
    target_port = _port_of(listener["target"])
    assert listener["target"].startswith("127.0.0.1:")
    assert {p["containerPort"] for p in side["ports"]} == {tls_port, status_port}
    assert side["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": status_port}
    assert side["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": status_port}
    assert config["status"].get("unsafe-listen") is True  # probes come from the node to the Pod IP
    valkey = next(c for c in pod["spec"]["containers"] if c["name"] == "valkey")
    assert "ports" not in valkey
    assert valkey["args"][valkey["args"].index("--bind") + 1] == "127.0.0.1"
    assert int(valkey["args"][valkey["args"].index("--port") + 1]) == target_port
    ingress_ports = [p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]]
    assert ingress_ports == [tls_port]
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert netpol["spec"]["policyTypes"] == ["Ingress"]

    # hardening
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for c in pod["spec"]["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
    # no misspelt keys that Kubernetes would drop with only a warning
    known = {"name", "image", "args", "ports", "readinessProbe", "livenessProbe", "securityContext", "resources",
             "volumeMounts"}
    for c in pod["spec"]["containers"]:
        assert set(c) <= known, set(c) - known


def _k8s_config(tls_dir: Path, *, tls_port: int, status_port: int, target_port: int) -> str:
    """The ConfigMap's portcullis.yaml with what cannot exist on this machine moved: the mount path into the
    test directory, and every address onto loopback test ports (the manifest itself stays as deployed)."""
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]["portcullis.yaml"]
    config = config.replace("/etc/portcullis/tls", str(tls_dir))
    config = config.replace("0.0.0.0:6380", f"127.0.0.1:{tls_port}").replace("0.0.0.0:9100", f"127.0.0.1:{status_port}")
    config = config.replace("127.0.0.1:6379", f"127.0.0.1:{target_port}")
    assert "/etc/portcullis" not in config and "0.0.0.0" not in config
    return config


@pytest.fixture
def cert_manager(tmp_path):
    """What cert-manager's CA Issuer puts in the Secret: tls.crt (leaf), tls.key, ca.crt (the CA), plus client
    certificates from the same CA, with and without a DNS name the ConfigMap's rule admits."""
    ca = MiniCA(tmp_path, "internal-ca")

    def secret(leaf: Leaf) -> dict[str, bytes]:
        return {"tls.crt": leaf.chain_pem, "tls.key": leaf.key_pem, "ca.crt": ca.root.read_bytes()}

    def server_leaf():
        return ca.issue("valkey", "/CN=valkey.cache.svc",
                        san="DNS:valkey.cache.svc,DNS:valkey.cache.svc.cluster.local,DNS:localhost")

    app = ca.issue("app", "/CN=app", san="DNS:app-1.valkey-clients.cache.svc.cluster.local", eku="clientAuth")
    stranger = ca.issue("stranger", "/CN=stranger", san="DNS:web.frontend.svc.cluster.local", eku="clientAuth")
    return ca, secret, server_leaf, app, stranger


def test_k8s_configmap_config_passes_check(tmp_path, cert_manager):
    ca, secret, server_leaf, app, stranger = cert_manager
    vol = AtomicWriterVolume(tmp_path / "tls")
    vol.write(secret(server_leaf()), mode=0o400)
    cfg = tmp_path / "portcullis.yaml"
    cfg.write_text(_k8s_config(vol.dir, tls_port=6380, status_port=9100, target_port=6379))
    r = run_portcullis_once(["check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration OK: 1 listener(s)" in r.stdout + r.stderr
    r = run_portcullis_once(["check", "--config", str(cfg), "--cert", str(app.chain), "--listener", "valkey"])
    assert r.returncode == 0 and "allowed by rule 'app-clients'" in r.stdout, r.stdout + r.stderr
    r = run_portcullis_once(["check", "--config", str(cfg), "--cert", str(stranger.chain), "--listener", "valkey"])
    assert r.returncode == 1 and "denied" in r.stdout, r.stdout + r.stderr


def _redis_cli(port: int, ca: Path, leaf: Leaf, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["redis-cli", "--tls", "-h", "127.0.0.1", "-p", str(port), "--cacert", str(ca),
                           "--cert", str(leaf.cert), "--key", str(leaf.key), "--sni", "localhost", *cmd],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def test_k8s_secret_data_swap_reloads_without_signal_in_front_of_valkey(tmp_path, cert_manager, redis_server,
                                                                        started):
    """The sidecar as deployed (the ConfigMap's config, cert and key in a Secret volume), in front of a real
    redis-server; cert-manager renews, kubelet swaps `..data`, nobody sends a signal."""
    ca, secret, server_leaf, app, stranger = cert_manager
    tls_vol, cfg_vol = AtomicWriterVolume(tmp_path / "tls"), AtomicWriterVolume(tmp_path / "config")
    first = server_leaf()
    tls_vol.write(secret(first), mode=0o400)
    tls_port, status_port = free_port(), free_port()
    config_text = _k8s_config(tls_vol.dir, tls_port=tls_port, status_port=status_port,
                              target_port=redis_server.port)
    cfg_vol.write({"portcullis.yaml": config_text.encode()})
    p = start_run(cfg_vol.dir / "portcullis.yaml")
    started.append(p)
    p.wait_log("listening", timeout=20, listener="valkey")

    for name in ("tls.crt", "tls.key", "ca.crt"):
        assert os.readlink(tls_vol.dir / name) == f"..data/{name}"
    ping = _redis_cli(tls_port, ca.root, app, "PING")
    assert ping.returncode == 0 and ping.stdout.strip() == "PONG", ping.stdout + ping.stderr
    assert _redis_cli(tls_port, ca.root, stranger, "PING").stdout.strip() != "PONG"
    p.wait_log("handshake failed", timeout=5, **{"handshake.error": "denied", "tls.peer.subject": "CN=stranger"})

    def status(path):
        with socket.create_connection(("127.0.0.1", status_port), timeout=3) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return int(data.split(b" ", 2)[1])

    wait_until(lambda: status("/readyz") == 200, 10, interval=0.2, what="/readyz 200 (the probe)")
    assert status("/healthz") == 200

    ctx = client_ctx(app.chain, app.key, ca.root)
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    live = ctx.wrap_socket(raw, server_hostname="localhost")
    live.sendall(b"PING\r\n")
    assert live.recv(64) == b"+PONG\r\n"
    first_seen = int(live.getpeercert()["serialNumber"], 16)
    assert first_seen == first.serial

    # cert-manager renews (rotationPolicy: Always: a new key too); kubelet projects the new Secret.
    renewed = server_leaf()
    mark = len(p.records)
    old_ts = os.readlink(tls_vol.dir / "..data")
    new_ts = tls_vol.write(secret(renewed), mode=0o400)
    assert re.fullmatch(r"\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\w+", new_ts), new_ts
    assert not (tls_vol.dir / old_ts).exists() and not (tls_vol.dir / "..data_tmp").exists()
    rec = wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT)
    assert rec["reload.trigger"] == "file change", rec
    assert not p.signals_sent

    def new_serial():
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=5), server_hostname="localhost")
        try:
            s.sendall(b"PING\r\n")
            assert s.recv(64) == b"+PONG\r\n"
            return int(s.getpeercert()["serialNumber"], 16)
        finally:
            s.close()

    assert new_serial() == renewed.serial
    live.sendall(b"PING\r\n")
    assert live.recv(64) == b"+PONG\r\n", "the connection open across the swap must keep working"
    live.close()
    ping = _redis_cli(tls_port, ca.root, app, "SET", "rotated", "yes")
    assert ping.stdout.strip() == "OK", ping.stdout + ping.stderr

    # A ConfigMap edit arrives the same way: the policy now admits the stranger's namespace too.
    mark = len(p.records)
    rule = re.search(r'^( *)- \{name: app-clients.*$', config_text, re.M)
    edited = (config_text[:rule.end()] + f'\n{rule.group(1)}- {{name: frontend, dns: "*.frontend.svc.cluster.local"}}'
              + config_text[rule.end():])
    assert edited != config_text
    cfg_vol.write({"portcullis.yaml": edited.encode()})
    wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT, pred=lambda r: r.get("reload.trigger") == "file change")
    got = _redis_cli(tls_port, ca.root, stranger, "GET", "rotated")
    assert got.stdout.strip() == "yes", got.stdout + got.stderr
    assert status("/readyz") == 200
    assert not p.logs(pred=lambda r: str(r.get("msg", "")).startswith("reload failed"))


@pytest.mark.parametrize("linked", [False, True], ids=["file-links", "linked-directory"])
def test_k8s_projected_volume_with_items_in_a_subdirectory_reloads_on_swap(tmp_path, cert_manager, proxy, linked):
    """`items: [{key: tls.crt, path: tls/tls.crt}, …]`: the files sit in a subdirectory `tls/` of the volume —
    a real directory of links `tls/tls.crt -> ../..data/tls/tls.crt`, or with older kubelets a link
    `tls -> ..data/tls` — while the `..data` swap happens one level up, in a directory that holds none of the
    configured files."""
    ca, secret, server_leaf, app, stranger = cert_manager
    vol = AtomicWriterVolume(tmp_path / "volume", linked_subdirectories=linked)
    first = server_leaf()
    vol.write({f"tls/{k}": v for k, v in secret(first).items()}, mode=0o400)
    d = vol.dir / "tls"
    if linked:
        assert os.readlink(d) == "..data/tls"
    else:
        assert not d.is_symlink() and os.readlink(d / "tls.crt") == "../..data/tls/tls.crt"
    p = proxy(cert=str(d / "tls.crt"), key=str(d / "tls.key"), cacert=str(d / "ca.crt"),
              allow=["--allow-dns", "*.valkey-clients.cache.svc.cluster.local"])
    ctx = client_ctx(app.chain, app.key, ca.root)
    assert served_serial(p.port, ctx) == first.serial
    for _ in range(2):  # and again: the watches survive the swap they reported
        renewed = server_leaf()
        mark = len(p.records)
        vol.write({f"tls/{k}": v for k, v in secret(renewed).items()}, mode=0o400)
        rec = wait_log_after(p, mark, "reloaded", timeout=RELOAD_TIMEOUT)
        assert rec["reload.trigger"] == "file change", rec
        assert served_serial(p.port, ctx) == renewed.serial
