"""Allow rules (--allow-*): each value is one rule, any rule admits; globs `*` (one label/segment), `**` (across)."""

import ssl

import pytest

from harness import wait_until


def admitted(tls, port, cred) -> bool:
    try:
        s = tls.connect(port, cred)
    except (ssl.SSLError, OSError):
        return False
    try:
        s.sendall(b"ping")
        s.settimeout(3)
        return s.recv(4) == b"ping"
    except (ssl.SSLError, OSError):
        return False
    finally:
        s.close()


def test_allow_ou(proxy, tls):
    p = proxy(allow=["--allow-ou", "payments"])
    assert admitted(tls, p.port, "allowed")
    assert not admitted(tls, p.port, "denied")
    rec = p.wait_log("connection closed", timeout=5)
    assert rec["policy.rule"] == "ou=payments", rec


def test_allow_o(proxy, tls):
    p = proxy(allow=["--allow-o", "Elsewhere Inc"])
    assert admitted(tls, p.port, "denied")
    assert not admitted(tls, p.port, "allowed")


@pytest.mark.parametrize("pattern,ok", [
    ("client.payments.example.org", True),
    ("*.payments.example.org", True),
    ("client.*.example.org", True),
    ("*.example.org", False),
    ("**.example.org", True),
    ("*.payments.example.com", False),
])
def test_allow_dns_glob(proxy, tls, pattern, ok):
    p = proxy(allow=["--allow-dns", pattern])
    assert admitted(tls, p.port, "allowed") is ok
    assert not admitted(tls, p.port, "denied")


@pytest.mark.parametrize("pattern,ok", [
    ("spiffe://example.org/ns/prod/sa/worker", True),
    ("spiffe://example.org/ns/*/sa/worker", True),
    ("spiffe://example.org/ns/*/sa/*", True),
    ("spiffe://example.org/**", True),
    ("spiffe://example.org/*", False),
    ("spiffe://example.org/ns/*", False),
    ("spiffe://other.org/**", False),
])
def test_allow_uri_spiffe_glob(proxy, tls, pattern, ok):
    p = proxy(allow=["--allow-uri", pattern])
    assert admitted(tls, p.port, "spiffe") is ok
    assert not admitted(tls, p.port, "allowed")
    if ok:
        rec = p.wait_log("connection closed", timeout=5)
        assert rec["tls.peer.spiffe_id"] == "spiffe://example.org/ns/prod/sa/worker", rec
        assert rec["policy.rule"].startswith("uri="), rec


def test_allow_email(proxy, tls):
    p = proxy(allow=["--allow-email", "client@payments.example.org"])
    assert admitted(tls, p.port, "allowed")
    assert not admitted(tls, p.port, "denied")


@pytest.mark.parametrize("rule,ok", [("10.1.2.3", True), ("10.1.0.0/16", True), ("10.2.0.0/16", False),
                                     ("127.0.0.1", False)])
def test_allow_ip(proxy, tls, rule, ok):
    """--allow-ip matches the certificate's IP SAN (10.1.2.3), not the connection's source address."""
    p = proxy(allow=["--allow-ip", rule])
    assert admitted(tls, p.port, "allowed") is ok


def test_allow_fingerprint(proxy, tls, pki):
    p = proxy(allow=["--allow-fingerprint", pki["denied"].fingerprint])
    assert admitted(tls, p.port, "denied")
    assert not admitted(tls, p.port, "allowed")
    rec = p.wait_log("connection closed", timeout=5)
    assert rec["tls.peer.fingerprint"] == pki["denied"].fingerprint


def test_allow_spki(proxy, tls, pki):
    p = proxy(allow=["--allow-spki", pki["rsa"].spki])
    assert admitted(tls, p.port, "rsa")
    assert not admitted(tls, p.port, "allowed")


def test_allow_all_admits_any_valid_chain_only(proxy, tls):
    p = proxy(allow=["--allow-all"])
    for cred in ("allowed", "denied", "rsa", "ed25519", "spiffe"):
        assert admitted(tls, p.port, cred), cred
    for cred in (None, "other-ca", "expired", "server-eku"):
        assert not admitted(tls, p.port, cred), cred


def test_any_rule_admits_and_names_itself(proxy, tls):
    p = proxy(allow=["--allow-cn", "client-rsa", "--allow-ou", "payments"])
    assert admitted(tls, p.port, "rsa")
    assert admitted(tls, p.port, "allowed")
    assert not admitted(tls, p.port, "denied")
    wait_until(lambda: len(p.logs("connection closed")) >= 2, 5, what="two audit lines")
    rules = sorted(r["policy.rule"] for r in p.logs("connection closed"))
    assert rules == ["cn=client-rsa", "ou=payments"], rules


def test_cn_rule_is_exact_not_substring(proxy, tls):
    p = proxy(allow=["--allow-cn", "client"])
    assert not admitted(tls, p.port, "allowed")
