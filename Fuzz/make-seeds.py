#!/usr/bin/env python3
"""Regenerates the binary seed corpora in Fuzz/Corpus (the text seeds are written by hand):

  tls-server    ClientHellos captured from Python's ssl module (TLS 1.3, TLS 1.2 only, with SNI/ALPN)
  tls-client    server flights captured from Python's ssl module answering such a ClientHello with
                Fuzz/PKI/server.pem (TLS 1.3, TLS 1.2 ECDHE, TLS 1.2 static RSA: the certificate in the clear)
  identity-der  DER certificates: Fuzz/PKI's, and odd ones made with openssl (two CNs, many SANs, RSA, Ed25519)
  proxy-header  inputs in FuzzProxyHeader's layout

Every TLS seed starts with FuzzTLS*'s two control bytes (chunk size, lend/copy). Run from anywhere; it
overwrites the files it writes and leaves the hand-made seeds alone.
"""
import os, ssl, struct, subprocess, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PKI = os.path.join(HERE, "PKI")
CORPUS = os.path.join(HERE, "Corpus")


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def client_hello(ctx, sni="localhost"):
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def server_flight(server_ctx, hello):
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def client_ctx(maximum=None, ciphers=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def server_ctx(maximum=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(PKI, "server.pem"), os.path.join(PKI, "server.key"))
    ctx.load_verify_locations(os.path.join(PKI, "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # as Portcullis: a CertificateRequest in the flight
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def tls():
    whole, chunked = b"\x00\x00", b"\x01\x01"  # everything at once and lent; 16-byte chunks, copied
    hellos = {
        "clienthello-tls13": client_hello(client_ctx()),
        "clienthello-tls12": client_hello(client_ctx(ssl.TLSVersion.TLSv1_2)),
        "clienthello-alpn-nosni": client_hello(client_ctx(alpn=["h2", "http/1.1"]), sni=None),
    }
    for name, hello in hellos.items():
        write("tls-server", name, whole + hello)
    write("tls-server", "clienthello-tls13-chunked", chunked + hellos["clienthello-tls13"])

    flights = {
        "serverflight-tls13": (client_ctx(), server_ctx()),
        "serverflight-tls12-ecdhe": (client_ctx(ssl.TLSVersion.TLSv1_2), server_ctx(ssl.TLSVersion.TLSv1_2)),
        "serverflight-tls12-rsa": (client_ctx(ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256"),
                                   server_ctx(ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256")),
    }
    for name, (c, s) in flights.items():
        flight = server_flight(s, client_hello(c))
        write("tls-client", name, whole + flight)
        if name == "serverflight-tls12-rsa":
            write("tls-client", name + "-chunked", chunked + flight)


def openssl(*args, **kw):
    subprocess.run(["openssl", *args], check=True, capture_output=True, **kw)


def identity():
    for name in ("ca", "server", "client"):
        with tempfile.NamedTemporaryFile() as out:
            openssl("x509", "-in", os.path.join(PKI, name + ".pem"), "-outform", "DER", "-out", out.name)
            write("identity-der", name + ".der", open(out.name, "rb").read())
    with tempfile.TemporaryDirectory() as d:
        variants = {
            "two-cns": ("ec:" , "/CN=a/CN=b/O=Portcullis", "subjectAltName=DNS:a.example.org,DNS:*.example.org"),
            "many-sans": ("ec:", "/CN=client-2/OU=x/OU=y/L=Oslo/ST=Oslo/C=NO/emailAddress=a@b.c",
                          "subjectAltName=URI:spiffe://example.org/a,URI:spiffe://example.org/b,URI:https://x.example.com/api/v1,"
                          "email:ops@example.org,IP:10.0.0.1,IP:fd00::1,DNS:web-1.example.internal,otherName:1.2.3.4;UTF8:x"),
            "rsa-utf8": ("rsa:1024", "/CN=Ærøskøbing ☃/O=Ünïcödé", "subjectAltName=DNS:xn--rskbing-fxa8b.example"),
            "ed25519": ("ed25519", "/CN=ed/O=Portcullis", "subjectAltName=URI:spiffe://example.org/ed"),
        }
        for name, (key, subject, ext) in variants.items():
            keyfile, certfile = os.path.join(d, name + ".key"), os.path.join(d, name + ".der")
            if key.startswith("rsa"):
                newkey = ["-newkey", key]
            elif key == "ed25519":
                newkey = ["-newkey", "ed25519"]
            else:
                newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            openssl("req", "-x509", "-nodes", *newkey, "-keyout", keyfile, "-subj", subject, "-utf8",
                    "-addext", ext, "-days", "36500", "-set_serial", "0x" + "7f" * 20, "-outform", "DER", "-out", certfile)
            write("identity-der", name + ".der", open(certfile, "rb").read())


def proxy_header():
    def seed(flags, src, dst, conn, repeats, strings):
        data = bytes([flags])
        for family, ip, port in (src, dst):
            data += bytes([family]) + ip + struct.pack(">H", port)
        data += struct.pack(">Q", conn) + struct.pack(">H", repeats)
        return data + b"\n".join(s.encode() for s in strings)

    v4 = (0, bytes([10, 0, 0, 1]), 51000)
    v4b = (0, bytes([127, 0, 0, 1]), 8080)
    v6 = (1, bytes.fromhex("fd000000000000000000000000000001"), 443)
    mapped = (3, bytes(16), 1234)
    all_flags = 0x02 | 0x04 | 0x08 | 0x10 | 0x20
    write("proxy-header", "ipv4-full", seed(all_flags, v4, v4b, 42, 0, [
        "TLSv1.3", "TLS_AES_128_GCM_SHA256", "client-1", "spiffe://example.org/client", "clients", "localhost"]))
    write("proxy-header", "ipv6-resumed", seed(0x01 | 0x04, v6, v4b, 0, 0, [
        "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", "", "spiffe://example.org/x"]))
    write("proxy-header", "mapped-minimal", seed(0, mapped, v4, 0, 0, ["TLSv1.3", "TLS_AES_256_GCM_SHA384"]))
    write("proxy-header", "long-uri", seed(0x04 | 0x40, v4, v4b, 0, 2047, [
        "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", "", "spiffe://example.org/" + "a" * 40]))


if __name__ == "__main__":
    tls()
    identity()
    proxy_header()
