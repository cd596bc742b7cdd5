"""`portcullis run --config FILE` and `portcullis check` (issue 3): many listeners in one process, each with its
own policy and target; `check` prints the effective configuration and explains decisions; every configuration
mistake is ONE line `FILE:LINE: <key path>: <problem>: <fix>`."""

from __future__ import annotations

import json
import os
import re

import pytest

from harness import (ConfigFile, admitted, free_port, listener_config, run_portcullis_once, start_run, stop_all,
                     wait_until)
from pki import make_crl


@pytest.fixture
def run_config(request):
    """run_config(config, names=None) -> Portcullis: `portcullis run --config`, waits for a `listening` line per
    listener (names default to the config's listeners); every process is stopped by PID at test end."""
    started = []

    def start(config, names: list[str] | None = None, wait: bool = True):
        p = start_run(config)
        started.append(p)
        if wait:
            if names is None:
                names = [entry["name"] for entry in config.data["listeners"]]
            for name in names:
                p.wait_log("listening", timeout=20, listener=name)
        return p

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = stop_all(started, failed)
    if problems:
        pytest.fail("\n".join(problems))


def _check(*args, timeout: float = 30.0):
    return run_portcullis_once(["check", *[str(a) for a in args]], timeout=timeout)


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"want exactly one line, got {len(lines)}:\n{text}"
    return lines[0]


# ---------------------------------------------------------------------------------------------------------
# run --config
# ---------------------------------------------------------------------------------------------------------
def test_two_listeners_with_different_policies_and_targets(run_config, pki, tls, backend, tmp_path):
    b1, b2 = backend("echo"), backend("echo")
    p1, p2 = free_port(), free_port()
    cfg = ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, "one", p1, b1.address, rules=[{"name": "payments", "cn": "client-allowed"}]),
        listener_config(pki, "two", p2, b2.address, rules=[{"name": "marketing", "ou": "marketing"}]),
    ])
    p = run_config(cfg)

    assert admitted(p1, tls.ctx("allowed"))
    assert not admitted(p1, tls.ctx("denied"))
    assert admitted(p2, tls.ctx("denied"))
    assert not admitted(p2, tls.ctx("allowed"))
    # each listener forwarded to its own target, once
    assert (b1.accepted, b2.accepted) == (1, 1)

    one = p.wait_log("connection closed", timeout=5, listener="one")
    two = p.wait_log("connection closed", timeout=5, listener="two")
    assert one["policy.rule"] == "payments", one
    assert "client-allowed" in one["tls.peer.subject"], one
    assert two["policy.rule"] == "marketing", two
    assert "client-denied" in two["tls.peer.subject"], two
    for name, who in (("one", "client-denied"), ("two", "client-allowed")):
        r = p.wait_log("handshake failed", timeout=5, listener=name)
        assert r["handshake.error"] == "denied" and who in r["tls.peer.subject"], r


def test_every_listener_logs_listening(run_config, pki, echo_backend, tmp_path):
    ports = {name: free_port() for name in ("alpha", "beta", "gamma")}
    cfg = ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, name, port, echo_backend.address, allow_all=True) for name, port in ports.items()
    ])
    p = run_config(cfg)
    for name, port in ports.items():
        recs = p.logs("listening", listener=name)
        assert len(recs) == 1, (name, recs)
        assert recs[0]["listen.address"].endswith(f":{port}"), recs[0]
    assert len(p.logs("listening")) == 3


def test_relative_paths_are_relative_to_the_config_file(run_config, pki, tls, echo_backend, tmp_path):
    d = tmp_path / "etc"
    d.mkdir()
    for src, dst in ((pki["server"].cert, "server.pem"), (pki["server"].key, "server.key"), (pki.ca, "ca.pem")):
        (d / dst).write_bytes(open(src, "rb").read())
    port = free_port()
    cfg = ConfigFile(d / "portcullis.yaml", [
        listener_config(pki, "rel", port, echo_backend.address, allow_all=True,
                        tls={"cert": "server.pem", "key": "./server.key", "cacert": "ca.pem"}),
    ])
    r = run_portcullis_once(["check", "--config", str(cfg), "--json"])  # cwd is not tmp_path/etc
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["listeners"][0]["tls"]
    assert os.path.normpath(t["cert"]) == str(d / "server.pem"), t
    assert os.path.normpath(t["key"]) == str(d / "server.key"), t
    p = run_config(cfg)
    assert admitted(port, tls.ctx("allowed"))
    assert p.alive()


def test_run_with_broken_config_exits_nonzero_with_one_line(pki, tmp_path):
    cfg = ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, "one", free_port(), "127.0.0.1:6379", rules=[{"name": "r", "cn": "x"}]),
    ])
    cfg.listener("one")["max-conections"] = 5  # typo
    cfg.write()
    r = run_portcullis_once(["run", "--config", str(cfg)], timeout=20)
    assert r.returncode != 0, r
    line = _one_line(r.stderr)
    assert str(cfg.path) in line and "listeners[0].max-conections" in line and "unknown key" in line, line
    assert re.search(re.escape(str(cfg.path)) + r":\d+:", line), line


# ---------------------------------------------------------------------------------------------------------
# check: effective configuration
# ---------------------------------------------------------------------------------------------------------
def _minimal(pki, tmp_path, port=None) -> ConfigFile:
    return ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, "valkey", port or free_port(), "127.0.0.1:6379",
                        rules=[{"name": "payments-workers", "ou": "payments", "o": "Portcullis Test"},
                               {"name": "ops", "cn": "ops-*"}],
                        deny=[{"cn": "compromised-*"}]),
    ])


def test_check_prints_effective_config_with_defaults(pki, tmp_path):
    cfg = _minimal(pki, tmp_path)
    r = _check("--config", cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "valkey" in out, out
    for key, default in [("min-version", "1.3"), ("crl-scope", "chain"), ("crl-expired", "reject"),
                         ("session-tickets", "true"), ("reauthorize", "true"), ("close-at-cert-expiry", "false"),
                         ("max-connections", "0")]:
        lines = [line for line in out.splitlines() if line.strip().startswith(key + ":")]
        assert lines and default in lines[0], f"{key}: want default {default!r} in\n{out}"
    for key in ("handshake", "connect", "idle", "close", "workers", "shutdown-timeout"):
        assert re.search(rf"^\s*{key}:", out, re.M), f"no {key} in\n{out}"
    assert "payments-workers" in out and "ou=payments" in out and "ops-*" in out, out
    assert pki["server"].cert in out, out


def test_check_json_parses_and_names_keys_as_in_the_file(pki, tmp_path):
    cfg = _minimal(pki, tmp_path)
    r = _check("--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    (lst,) = j["listeners"]
    assert lst["name"] == "valkey"
    assert lst["reauthorize"] is True and lst["close-at-cert-expiry"] is False, lst
    assert lst["tls"]["min-version"] == "1.3" and lst["tls"]["crl-scope"] == "chain", lst["tls"]
    assert lst["tls"]["cacert"] == pki.ca
    assert "handshake" in lst["timeouts"], lst
    assert j["log"]["format"] == "json"


# ---------------------------------------------------------------------------------------------------------
# check: one-line errors
# ---------------------------------------------------------------------------------------------------------
BASE = """\
log: {{format: json}}
listeners:
  - name: alpha
    mode: server
    listen: 127.0.0.1:{p1}
    target: 127.0.0.1:6379
    tls:
      cert: {cert}
      key: {key}
      cacert: {ca}
    policy:
      rules:
        - {{name: ops, cn: "ops-*"}}
  - name: beta
    mode: server
    listen: 127.0.0.1:{p2}
    target: 127.0.0.1:6380
    tls:
      cert: {cert}
      key: {key}
      cacert: {ca}
    policy:
      rules:
        - {{name: spiffe-workers, uri: "spiffe://example.org/ns/*"}}
"""

# id -> (old line, new line, accepted line numbers, substrings of the one stderr line)
ERRORS = {
    "unknown-key": ("    target: 127.0.0.1:6379\n", "    target: 127.0.0.1:6379\n    max-conections: 10\n",
                    {7}, ["listeners[0].max-conections", "unknown key", "max-connections"]),
    "wrong-type": ("    target: 127.0.0.1:6379\n", "    target: 127.0.0.1:6379\n    max-connections: lots\n",
                   {7}, ["listeners[0].max-connections", "expected", "lots"]),
    "wrong-type-bool": ("    target: 127.0.0.1:6380\n", "    target: 127.0.0.1:6380\n    reauthorize: sometimes\n",
                        {18}, ["listeners[1].reauthorize", "expected", "sometimes"]),
    "bad-pattern": ('uri: "spiffe://example.org/ns/*"', "uri: \"*spiffe\"",
                    {24}, ["listeners[1].policy.rules[0].uri", "'*spiffe'", "not a valid pattern"]),
    "non-loopback-target": ("    target: 127.0.0.1:6380\n", "    target: 10.0.0.5:6380\n",
                            {17}, ["listeners[1].target", "10.0.0.5:6380", "unsafe-target"]),
    "missing-required-key": ("    target: 127.0.0.1:6379\n", "",
                             {3, 4, 5}, ["listeners[0]", "target"]),
    "missing-tls-cacert": ("      cacert: {ca}\n    policy:\n      rules:\n        - {{name: ops",
                           "    policy:\n      rules:\n        - {{name: ops",
                           {7, 8}, ["listeners[0].tls", "cacert"]),
    "yaml-syntax": ('        - {{name: ops, cn: "ops-*"}}\n', '        - {{name: ops, cn: "ops-*"\n',
                    {13, 14}, []),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_check_error_is_one_line_with_file_line_and_key_path(pki, tmp_path, case):
    old, new, want_lines, want = ERRORS[case]
    template = BASE.replace(old, new, 1)
    assert template != BASE, "test bug: replacement did not apply"
    text = template.format(p1=free_port(), p2=free_port(), cert=pki["server"].cert, key=pki["server"].key,
                           ca=pki.ca)
    path = tmp_path / "portcullis.yaml"
    path.write_text(text)
    r = _check("--config", path)
    assert r.returncode in (1, 2), (r.returncode, r.stdout, r.stderr)
    line = _one_line(r.stderr)
    m = re.match(r"(?:portcullis: )?" + re.escape(str(path)) + r":(\d+): ", line)  # program-name prefix is ok
    assert m, f"want '{path}:LINE: …', got {line!r}"
    assert int(m.group(1)) in want_lines, f"line {m.group(1)} not in {want_lines}: {line}"
    for s in want:
        assert s in line, f"want {s!r} in {line!r}"
    if case == "yaml-syntax":
        assert "yaml" in line.lower() or "syntax" in line.lower(), line


def test_check_valid_base_config_passes(pki, tmp_path):
    # the template of the error cases is itself valid, so each case tests exactly one mistake
    path = tmp_path / "portcullis.yaml"
    path.write_text(BASE.format(p1=free_port(), p2=free_port(), cert=pki["server"].cert, key=pki["server"].key,
                                ca=pki.ca))
    r = _check("--config", path)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------------------
# check --cert: explain a decision
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def decision_config(pki, tmp_path):
    crl = make_crl(pki, tmp_path / "clients.crl", [pki["rsa"].cert])
    return ConfigFile(tmp_path / "portcullis.yaml", [
        listener_config(pki, "valkey", free_port(), "127.0.0.1:6379",
                        rules=[{"name": "payments-workers", "ou": "payments", "o": "Portcullis Test"},
                               {"name": "ops", "cn": "ops-*"}],
                        tls={"crl": [crl]}),
        listener_config(pki, "admin", free_port(), "127.0.0.1:6380",
                        rules=[{"name": "marketing", "cn": "client-denied"}]),
    ])


def test_check_cert_allowed_names_rule_and_conditions(pki, decision_config):
    r = _check("--config", decision_config, "--cert", pki["allowed"].cert, "--listener", "valkey")
    assert r.returncode == 0, (r.stdout, r.stderr)
    line = _one_line(r.stdout)
    assert "allowed by rule 'payments-workers'" in line, line
    assert "ou=payments" in line and " AND " in line, line


def test_check_cert_denied_names_closest_rule_and_failed_matcher(pki, decision_config):
    r = _check("--config", decision_config, "--cert", pki["denied"].cert, "--listener", "valkey")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = (r.stdout + r.stderr).strip()
    assert "denied:" in out and "closest" in out and "rule '" in out, out
    assert "allowed by rule" not in out


def test_check_cert_listener_selects_policy(pki, decision_config):
    r = _check("--config", decision_config, "--cert", pki["denied"].cert, "--listener", "admin")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "allowed by rule 'marketing'" in r.stdout, r.stdout


def test_check_cert_revoked(pki, decision_config):
    # client-rsa matches no rule either, but the CRL verdict must come first: it does not verify at all
    r = _check("--config", decision_config, "--cert", pki["rsa"].cert, "--listener", "valkey")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = (r.stdout + r.stderr).strip()
    assert "revoked" in out.lower(), out
    assert "allowed by rule" not in out


def test_check_cert_untrusted_ca(pki, decision_config):
    r = _check("--config", decision_config, "--cert", pki["other-ca"].cert, "--listener", "valkey")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = (r.stdout + r.stderr).strip()
    assert "allowed by rule" not in out, out
    assert "verif" in out.lower() or "ca" in out.lower(), out


def test_check_warns_before_a_certificate_expires_and_fails_once_it_has(pki, tmp_path):
    import time as _time
    from pki import issue_leaf
    now = _time.time()
    soon = issue_leaf(pki, "server-soon", "/O=Portcullis Test/CN=localhost", san="DNS:localhost",
                      eku="serverAuth", not_after=now + 10 * 86400)
    gone = issue_leaf(pki, "server-gone", "/O=Portcullis Test/CN=localhost", san="DNS:localhost",
                      eku="serverAuth", not_before=now - 3 * 86400, not_after=now - 2 * 86400)

    def config(cred, name):
        return ConfigFile(tmp_path / f"{name}.yaml", [
            listener_config(pki, "valkey", free_port(), "127.0.0.1:6379", rules=[{"name": "ops", "cn": "ops-*"}],
                            tls={"cert": cred.cert, "key": cred.key})])

    r = _check("--config", config(soon, "soon"))
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "listener 'valkey': certificate 'CN=localhost,O=Portcullis Test' expires in" in warning[0] \
        and "days" in warning[0] and "renew tls.cert" in warning[0], r.stderr
    assert "configuration OK" in r.stdout
    # A window shorter than what is left: no warning.
    r = _check("--config", config(soon, "soon"), "--expiry-warning", "5d")
    assert r.returncode == 0 and "warning:" not in r.stderr, r.stderr
    # Expired: an error, exit 1.
    r = _check("--config", config(gone, "gone"))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "error: listener 'valkey': certificate 'CN=localhost,O=Portcullis Test' expired 2 days ago" in r.stderr, r.stderr
    r = _check("--config", config(soon, "soon"), "--expiry-warning", "soon")
    assert r.returncode == 2 and "--expiry-warning 'soon' is not a duration" in r.stderr, r.stderr
