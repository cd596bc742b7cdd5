#!/usr/bin/env python3
"""Instructions the server spends, counted by valgrind's callgrind: repeatable whatever else the machine does.

    python3 Benchmarks/callgrind_server.py BIN [BIN…] [--connections 100] [--mib 200] [--requests 2000]

For each binary: starts `BIN server` (one worker) under callgrind in front of an in-process sink/echo backend,
then (a) opens --connections TLS connections one after another (full handshake, 4-byte echo, close), (b)
uploads --mib MiB over one connection and (c) makes --requests 64-byte echo round trips over one connection;
a run with no traffic gives the start-up cost, subtracted from each. Prints instructions per connection, per
MiB and per request. valgrind cannot read the Swift binary's DWARF, so a copy
with the debug sections stripped (symbols kept) is what runs. Loopback only; every process is stopped.
"""
import argparse
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time


def make_pki(d):
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=callgrind CA")
    for name, subj, ext in [("server", "/CN=localhost", "subjectAltName=DNS:localhost"),
                            ("client", "/CN=cg-client", "extendedKeyUsage=clientAuth")]:
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def backend():
    """Sink that echoes short messages; returns its port."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def serve(c):
        with c:
            try:
                while data := c.recv(1 << 20):
                    if len(data) <= 64:
                        c.sendall(data)
            except OSError:  # the proxy went away (each measured run ends by stopping it)
                pass

    def accept():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def count(binary, d, target_port, connections, mib, requests=0):
    port = free_port()
    out = os.path.join(d, f"callgrind.{connections}.{mib}.{requests}.out")
    args = [binary, "server", "--listen", f"127.0.0.1:{port}", "--target", f"127.0.0.1:{target_port}",
            "--cert", f"{d}/server.pem", "--key", f"{d}/server.key", "--cacert", f"{d}/ca.pem",
            "--allow-cn", "cg-client", "--workers", "1", "--log-level", "error",
            "--handshake-timeout", "120s"]  # valgrind is slow, more so on a busy machine
    if os.geteuid() == 0 and "--allow-root" in subprocess.run([binary, "server", "--help"], capture_output=True,
                                                               text=True).stdout:
        args.append("--allow-root")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args],
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        ctx.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")
        ctx.options |= ssl.OP_NO_TICKET
        for _ in range(connections):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as s:
                s.sendall(b"ping")
                assert s.recv(16) == b"ping"
        if mib:
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as s:
                chunk = os.urandom(1 << 16)
                for _ in range(mib * 16):
                    s.sendall(chunk)
        if requests:
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as s:
                message = b"m" * 64
                for _ in range(requests):
                    s.sendall(message)
                    got = b""
                    while len(got) < 64:
                        got += s.recv(64 - len(got))
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(300)
    text = open(out).read()
    return int((re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portcullis-callgrind-")
    try:
        make_pki(d)
        target = backend()
        print("| binary | instructions per connection (handshake, echo, close) | per MiB relayed | per 64 B echo request |")
        print("|---|---|---|---|")
        for binary in a.binaries:
            copy = os.path.join(d, "portcullis")
            shutil.copy(binary, copy)
            subprocess.run(["strip", "--strip-debug", copy], check=True)
            idle = count(copy, d, target, 0, 0)
            per_conn = (count(copy, d, target, a.connections, 0) - idle) / a.connections
            per_mib = (count(copy, d, target, 0, a.mib) - idle) / a.mib
            # The connection carrying the requests costs one handshake: take it out.
            per_request = (count(copy, d, target, 0, 0, a.requests) - idle - per_conn) / a.requests
            print(f"| {binary} | {per_conn / 1e6:.3f} M | {per_mib / 1e6:.3f} M | {per_request / 1e3:.1f} k |", flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
