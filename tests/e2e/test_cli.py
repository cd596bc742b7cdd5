"""Bad flags and configuration: non-zero exit, ONE stderr line naming the flag, quoting the value, saying the fix."""

import socket
import subprocess

import pytest

from harness import free_port, run_portcullis_once


@pytest.fixture
def busy_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def _base(pki, port):
    return {
        "--listen": f"127.0.0.1:{port}",
        "--target": "127.0.0.1:6379",
        "--cert": pki["server"].cert,
        "--key": pki["server"].key,
        "--cacert": pki.ca,
        "--allow-cn": "client-allowed",
    }


# id -> (changes to the base flags: value None removes the flag; expected stderr substrings as templates)
CASES = {
    "no-allow-rule": ({"--allow-cn": None}, ["--allow-all"]),
    "non-loopback-target": ({"--target": "10.0.0.5:6379"}, ["--unsafe-target", "10.0.0.5:6379"]),
    "port-in-use": ({"--listen": "127.0.0.1:{busy}"}, ["--listen", "127.0.0.1:{busy}"]),
    "listen-without-port": ({"--listen": "localhost-no-port"}, ["--listen", "localhost-no-port"]),
    "missing-cert": ({"--cert": "{tmp}/nope/server.pem"}, ["--cert", "{tmp}/nope/server.pem"]),
    "missing-key": ({"--key": "{tmp}/nope/server.key"}, ["--key", "{tmp}/nope/server.key"]),
    "cert-not-pem": ({"--cert": "{tmp}/garbage.pem"}, ["--cert", "{tmp}/garbage.pem"]),
    "cert-key-mismatch": ({"--key": "{denied_key}"}, ["--key"]),
    "missing-cacert": ({"--cacert": "{tmp}/nope/ca.pem"}, ["--cacert", "{tmp}/nope/ca.pem"]),
    "cacert-not-pem": ({"--cacert": "{tmp}/garbage.pem"}, ["--cacert", "{tmp}/garbage.pem"]),
    "encrypted-key-without-passphrase": ({"--key": "{enc_key}"}, ["--key"]),
    "wrong-passphrase": ({"--key": "{enc_key}", "--key-passphrase-file": "{tmp}/wrong.pass"}, ["--key"]),
    "bad-min-tls": ({"--min-tls": "1.1"}, ["--min-tls", "1.1"]),
    "bad-duration": ({"--handshake-timeout": "soon"}, ["--handshake-timeout", "soon"]),
    "bad-allow-ip": ({"--allow-ip": "10.0.0.0/33"}, ["--allow-ip", "10.0.0.0/33"]),
    "bad-allow-fingerprint": ({"--allow-fingerprint": "sha256:xyz"}, ["--allow-fingerprint", "sha256:xyz"]),
    "zero-workers": ({"--workers": "0"}, ["--workers", "0"]),
    "bad-log-format": ({"--log-format": "xml"}, ["--log-format", "xml"]),
    "unknown-flag": ({"--frobnicate": "yes"}, ["--frobnicate"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_flags_give_one_line_errors(case, pki, tmp_path, busy_port):
    changes, expected = CASES[case]
    (tmp_path / "garbage.pem").write_text("this is not PEM\n")
    (tmp_path / "wrong.pass").write_text("not the passphrase\n")
    fill = {"busy": busy_port, "tmp": str(tmp_path), "denied_key": pki["denied"].key,
            "enc_key": pki["server-enc"].key}
    flags = _base(pki, free_port())
    for k, v in changes.items():
        if v is None:
            flags.pop(k, None)
        else:
            flags[k] = v.format(**fill)
    args = ["server"]
    for k, v in flags.items():
        args += [k, v]
    try:
        r = run_portcullis_once(args, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"portcullis started (did not exit) with {args}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0, f"exit code 0 for {case}; stderr: {r.stderr!r}"
    assert r.returncode > 0, f"died of a signal ({r.returncode}); stderr: {r.stderr!r}"
    assert len(lines) == 1, f"want exactly one stderr line, got {len(lines)}:\n{r.stderr}"
    for sub in expected:
        sub = sub.format(**fill)
        assert sub in lines[0], f"{sub!r} missing from {lines[0]!r}"
    assert "listening" not in r.stderr
