"""A throw-away test PKI, made at test time with the openssl CLI (modelled on ghostunnel tests/common.py).

Layout (all under one directory):
  ca.pem / ca.key                 "Portcullis Test CA" (ECDSA P-256)
  ca-dir/                         the CA certificate in a hashed directory (`openssl rehash`), for --cacert DIR
  otherca.pem / otherca.key       an unrelated CA (ECDSA P-256)
  intermediate.pem / .key         an intermediate CA under ca.pem; signs "chained" (cert file = leaf + intermediate)
  <name>.pem / <name>.key         leaf certificates, see LEAVES below
  server-enc.key + server-enc.pass  the server key encrypted with AES-256, passphrase in a file

Every leaf has a `Cred` with paths plus facts the tests assert on (RFC 2253 subject, fingerprints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

CA_SUBJECT = "/O=Portcullis Test/CN=Portcullis Test CA"
OTHER_CA_SUBJECT = "/O=Somebody Else/CN=Other Test CA"
PASSPHRASE = "correct horse battery staple"

# name: (key type, subject, extended key usage, subjectAltName or None, signing CA, expired?)
LEAVES = {
    "server": ("ec256", "/O=Portcullis Test/CN=localhost", "serverAuth",
               "DNS:localhost,IP:127.0.0.1", "ca", False),
    "server2": ("ec256", "/O=Portcullis Test/CN=portcullis-reloaded", "serverAuth",
                "DNS:localhost,IP:127.0.0.1", "ca", False),
    "allowed": ("ec256", "/O=Portcullis Test/OU=payments/CN=client-allowed", "clientAuth",
                "DNS:client.payments.example.org,email:client@payments.example.org,IP:10.1.2.3", "ca", False),
    "denied": ("ec256", "/O=Elsewhere Inc/OU=marketing/CN=client-denied", "clientAuth",
               "DNS:client.marketing.example.net", "ca", False),
    "other-ca": ("ec256", "/O=Portcullis Test/OU=payments/CN=client-allowed", "clientAuth",
                 "DNS:client.payments.example.org", "otherca", False),
    "expired": ("ec256", "/O=Portcullis Test/OU=payments/CN=client-allowed", "clientAuth", None, "ca", True),
    "rsa": ("rsa2048", "/O=Portcullis Test/CN=client-rsa", "clientAuth", None, "ca", False),
    "p384": ("ec384", "/O=Portcullis Test/CN=client-p384", "clientAuth", None, "ca", False),
    "ed25519": ("ed25519", "/O=Portcullis Test/CN=client-ed25519", "clientAuth", None, "ca", False),
    "spiffe": ("ec256", "/O=Portcullis Test/CN=worker", "clientAuth",
               "URI:spiffe://example.org/ns/prod/sa/worker", "ca", False),
    "two-cn": ("ec256", "/O=Portcullis Test/CN=client-allowed/CN=evil", "clientAuth", None, "ca", False),
    "server-eku": ("ec256", "/O=Portcullis Test/OU=payments/CN=client-allowed", "serverAuth", None, "ca", False),
    # signed by an intermediate CA (itself signed by ca); chained.pem holds leaf + intermediate
    "chained": ("ec256", "/O=Portcullis Test/CN=client-chained", "clientAuth", None, "intermediate", False),
}

CA_CNF = """\
[ca]
default_ca = CA_default
[CA_default]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[policy_any]
commonName = supplied
organizationName = optional
organizationalUnitName = optional
"""


@dataclasses.dataclass
class Cred:
    name: str
    cert: str
    key: str
    subject_rfc2253: str = ""
    fingerprint: str = ""  # "sha256:<lowercase hex of DER certificate>"
    spki: str = ""  # "sha256:<lowercase hex of DER SubjectPublicKeyInfo>"
    password: str | None = None
    passphrase_file: str | None = None
    cert_only: str | None = None  # for "chained": the leaf alone (cert is leaf + intermediate)


def _run(args, cwd, **kw):
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


class PKI:
    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.creds: dict[str, Cred] = {}
        self.ca = str(self.dir / "ca.pem")
        self.ca_dir = str(self.dir / "ca-dir")
        self.other_ca = str(self.dir / "otherca.pem")
        self._build()

    # -- public helpers -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Cred:
        return self.creds[name]

    def verify(self, name: str, ca: str | None = None) -> tuple[int, str]:
        """`openssl verify` a leaf against its CA; returns (exit code, combined output)."""
        c = self.creds[name]
        chain = ["-untrusted", str(self.dir / "intermediate.pem"), c.cert_only] if c.cert_only else [c.cert]
        r = subprocess.run(["openssl", "verify", "-CAfile", ca or self.ca, *chain],
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout + r.stderr

    # -- construction ---------------------------------------------------------------------------
    def _genkey(self, kind: str, path: Path):
        algo = {
            "ec256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ec384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "rsa2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "ed25519": ["-algorithm", "ED25519"],
        }[kind]
        _run(["openssl", "genpkey", *algo, "-out", str(path)], self.dir)
        os.chmod(path, 0o600)

    def _make_ca(self, stem: str, subject: str, parent: str | None = None):
        key, cert = self.dir / f"{stem}.key", self.dir / f"{stem}.pem"
        self._genkey("ec256", key)
        if parent is None:
            _run(["openssl", "req", "-x509", "-new", "-key", str(key), "-subj", subject, "-days", "3650",
                  "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-addext", "subjectKeyIdentifier=hash", "-out", str(cert)], self.dir)
        else:
            csr, ext = self.dir / f"{stem}.csr", self.dir / f"{stem}.ext"
            ext.write_text("[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\n"
                           "keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
                           "authorityKeyIdentifier=keyid\n")
            _run(["openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)], self.dir)
            _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.dir / f"{parent}.pem"),
                  "-CAkey", str(self.dir / f"{parent}.key"), "-set_serial", "4242", "-days", "3650",
                  "-sha256", "-extfile", str(ext), "-extensions", "v3", "-out", str(cert)], self.dir)
        cadb = self.dir / f"{stem}-db"
        (cadb / "newcerts").mkdir(parents=True, exist_ok=True)
        (cadb / "index.txt").write_text("")
        (cadb / "serial").write_text("1000\n")
        (cadb / "ca.cnf").write_text(CA_CNF.format(dir=cadb))

    def _make_leaf(self, name, kind, subject, eku, san, ca_stem, expired):
        key, csr, cert = self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.pem"
        ext = self.dir / f"{name}.ext"
        ku = "digitalSignature,keyEncipherment" if kind == "rsa2048" else "digitalSignature"
        lines = ["[v3]", "basicConstraints=critical,CA:FALSE", f"keyUsage=critical,{ku}",
                 f"extendedKeyUsage={eku}", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        self._genkey(kind, key)
        _run(["openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)], self.dir)
        ca_cert, ca_key = self.dir / f"{ca_stem}.pem", self.dir / f"{ca_stem}.key"
        if expired:
            # openssl 3.0 `x509 -days` cannot go negative; `openssl ca` takes explicit dates.
            cadb = self.dir / f"{ca_stem}-db"
            _run(["openssl", "ca", "-batch", "-config", str(cadb / "ca.cnf"), "-cert", str(ca_cert),
                  "-keyfile", str(ca_key), "-in", str(csr), "-out", str(cert), "-notext", "-preserveDN",
                  "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                  "-extfile", str(ext), "-extensions", "v3"], self.dir)
        else:
            _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                  "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825", "-sha256",
                  "-extfile", str(ext), "-extensions", "v3", "-out", str(cert)], self.dir)
        self.creds[name] = self._describe(name, cert, key)

    def _describe(self, name, cert: Path, key: Path) -> Cred:
        subj = _run(["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "RFC2253"], self.dir)
        subj = subj.strip().removeprefix("subject=").strip()
        der = _run_bytes(["openssl", "x509", "-in", str(cert), "-outform", "DER"], self.dir)
        pub = _run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], self.dir)
        spki = _run_bytes(["openssl", "pkey", "-pubin", "-outform", "DER"], self.dir, input=pub.encode())
        return Cred(name=name, cert=str(cert), key=str(key), subject_rfc2253=subj,
                    fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
                    spki="sha256:" + hashlib.sha256(spki).hexdigest())

    def _build(self):
        self._make_ca("ca", CA_SUBJECT)
        self._make_ca("otherca", OTHER_CA_SUBJECT)
        self._make_ca("intermediate", "/O=Portcullis Test/CN=Portcullis Test Intermediate", parent="ca")
        for name, spec in LEAVES.items():
            self._make_leaf(name, *spec)
        # The client presents leaf + intermediate; only the root is in --cacert.
        chain = self.dir / "chained-fullchain.pem"
        chain.write_text(Path(self.creds["chained"].cert).read_text() + (self.dir / "intermediate.pem").read_text())
        self.creds["chained"].cert_only = self.creds["chained"].cert
        self.creds["chained"].cert = str(chain)
        # CA directory for --cacert DIR.
        Path(self.ca_dir).mkdir(exist_ok=True)
        shutil.copy(self.ca, Path(self.ca_dir) / "ca.pem")
        _run(["openssl", "rehash", self.ca_dir], self.dir)
        # Encrypted copy of the server key; passphrase file ends with a newline, like `echo pw > file`.
        passfile = self.dir / "server-enc.pass"
        passfile.write_text(PASSPHRASE + "\n")
        enc = self.dir / "server-enc.key"
        _run(["openssl", "pkey", "-in", self.creds["server"].key, "-aes256", "-passout", f"file:{passfile}",
              "-out", str(enc)], self.dir)
        os.chmod(enc, 0o600)
        base = self.creds["server"]
        self.creds["server-enc"] = dataclasses.replace(base, name="server-enc", key=str(enc),
                                                       password=PASSPHRASE, passphrase_file=str(passfile))


def _run_bytes(args, cwd, input=None) -> bytes:
    r = subprocess.run(args, cwd=cwd, capture_output=True, timeout=60, input=input)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
    return r.stdout


if __name__ == "__main__":  # manual check: python3 pki.py /tmp/pki
    import sys
    p = PKI(sys.argv[1] if len(sys.argv) > 1 else "/tmp/portcullis-pki")
    for n, c in p.creds.items():
        ca = p.other_ca if n == "other-ca" else p.ca
        rc, out = p.verify(n, ca)
        print(f"{n:12} rc={rc} {c.subject_rfc2253!r} {out.strip().splitlines()[-1]}")


# ----------------------------------------------------------------------------------------------
# Added for the config-file / reload / revocation tests (issue 3): ad-hoc leaves and CRLs.
# These only add files next to the PKI; nothing above changes.
# ----------------------------------------------------------------------------------------------
CRL_CNF = """\
[ca]
default_ca = CA_default
[CA_default]
dir = {dir}
database = {dir}/index.txt
crlnumber = {dir}/crlnumber
default_md = sha256
default_crl_days = 30
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid:always
"""


def asn1_time(t: float) -> str:
    """`openssl ca` date format (GeneralizedTime, UTC) for a Unix time."""
    import time as _time
    return _time.strftime("%Y%m%d%H%M%SZ", _time.gmtime(t))


def cert_serial(cert: str) -> int:
    """The serial number of the first certificate in a PEM file."""
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-serial"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return int(out.strip().split("=", 1)[1], 16)


_crl_counter = [0]


def make_crl(pki: "PKI", out: str | os.PathLike, revoked=(), *, ca: str = "ca", der: bool = False,
             last_update: float | None = None, next_update: float | None = None) -> str:
    """Write a CRL signed by CA `ca` ("ca", "intermediate", "otherca") with `openssl ca -gencrl`.

    revoked: serial numbers (int) or cert paths to list as revoked. last_update/next_update: Unix times
    (default: now-60 s / now+30 days); a next_update in the past makes an expired CRL. der=True writes DER.
    A fresh CA database is used per call (the PKI's leaves were not issued through `openssl ca`).
    """
    import time as _time
    _crl_counter[0] += 1
    out = Path(out)
    db = pki.dir / f"crl-db-{os.getpid()}-{_crl_counter[0]}"
    db.mkdir(parents=True, exist_ok=True)
    lines = []
    revdate = _time.strftime("%y%m%d%H%M%SZ", _time.gmtime(_time.time() - 3600))
    for item in revoked:
        serial = item if isinstance(item, int) else cert_serial(str(item))
        hexs = format(serial, "X")
        if len(hexs) % 2:
            hexs = "0" + hexs
        lines.append(f"R\t491231235959Z\t{revdate}\t{hexs}\tunknown\t/CN=revoked-{hexs}\n")
    (db / "index.txt").write_text("".join(lines))
    (db / "crlnumber").write_text("1000\n")
    (db / "ca.cnf").write_text(CRL_CNF.format(dir=db))
    now = _time.time()
    pem = db / "crl.pem"
    _run(["openssl", "ca", "-batch", "-config", str(db / "ca.cnf"), "-gencrl",
          "-cert", str(pki.dir / f"{ca}.pem"), "-keyfile", str(pki.dir / f"{ca}.key"),
          "-crl_lastupdate", asn1_time(last_update if last_update is not None else now - 60),
          "-crl_nextupdate", asn1_time(next_update if next_update is not None else now + 30 * 86400),
          "-out", str(pem)], pki.dir)
    tmp = out.with_name(out.name + ".tmp")
    if der:
        _run(["openssl", "crl", "-in", str(pem), "-outform", "DER", "-out", str(tmp)], pki.dir)
    else:
        shutil.copy(pem, tmp)
    os.replace(tmp, out)  # atomic, so a watching proxy never reads half a CRL
    shutil.rmtree(db, ignore_errors=True)
    return str(out)


def make_large_crl(pki: "PKI", out: str | os.PathLike, count: int, extra=(), *, ca: str = "ca") -> str:
    """A CRL with `count` random revoked serials plus `extra` (ints or cert paths), through `make_crl`
    (`openssl ca -gencrl` writes 100k entries in under a second; the `cryptography` builder is quadratic)."""
    import random
    rng = random.Random(42)
    serials = {rng.getrandbits(63) | (1 << 62) for _ in range(count)}
    serials.update(item if isinstance(item, int) else cert_serial(str(item)) for item in extra)
    return make_crl(pki, out, sorted(serials), ca=ca)


def issue_leaf(pki: "PKI", name: str, subject: str, *, ca: str = "ca", san: str | None = None,
               not_before: float | None = None, not_after: float | None = None,
               eku: str = "clientAuth") -> Cred:
    """A new EC P-256 leaf signed by `ca` through `openssl ca` with explicit validity (Unix times;
    default now-60 s .. now+1 day), e.g. a certificate that expires a few seconds from now.
    Registered as pki[name]."""
    import time as _time
    now = _time.time()
    key, csr, cert = pki.dir / f"{name}.key", pki.dir / f"{name}.csr", pki.dir / f"{name}.pem"
    ext = pki.dir / f"{name}.ext"
    lines = ["[v3]", "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
             f"extendedKeyUsage={eku}", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    pki._genkey("ec256", key)
    _run(["openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)], pki.dir)
    cadb = pki.dir / f"{ca}-db"
    _run(["openssl", "ca", "-batch", "-config", str(cadb / "ca.cnf"), "-cert", str(pki.dir / f"{ca}.pem"),
          "-keyfile", str(pki.dir / f"{ca}.key"), "-in", str(csr), "-out", str(cert), "-notext", "-preserveDN",
          "-startdate", asn1_time(not_before if not_before is not None else now - 60),
          "-enddate", asn1_time(not_after if not_after is not None else now + 86400),
          "-extfile", str(ext), "-extensions", "v3"], pki.dir)
    cred = pki._describe(name, cert, key)
    pki.creds[name] = cred
    return cred


# ----------------------------------------------------------------------------------------------
# Added for the systems examples (issue 4): what Java clients are handed. Nothing above changes.
# ----------------------------------------------------------------------------------------------
def pkcs12_keystore(pki: "PKI", name: str, out: str | os.PathLike, password: str = "changeit") -> str:
    """A PKCS#12 keystore holding pki[name]'s certificate chain and private key (`openssl pkcs12 -export`),
    as a JDK KeyManagerFactory loads it (KeyStore.getInstance("PKCS12"))."""
    c = pki[name]
    args = ["openssl", "pkcs12", "-export", "-in", c.cert, "-inkey", c.key, "-name", name, "-out", str(out),
            "-passout", f"pass:{password}"]
    if c.password:
        args += ["-passin", f"pass:{c.password}"]
    _run(args, pki.dir)
    return str(out)


def java_truststore(pki: "PKI", out: str | os.PathLike, password: str = "changeit", ca: str | None = None) -> str:
    """A PKCS#12 truststore with the CA certificate (`ca`, default pki.ca) as a trusted entry, made with
    `keytool -importcert` (an `openssl pkcs12` file without keys has no entries the JDK trusts)."""
    _run(["keytool", "-importcert", "-noprompt", "-storetype", "PKCS12", "-keystore", str(out),
          "-storepass", password, "-alias", "ca", "-file", ca or pki.ca], pki.dir)
    return str(out)
