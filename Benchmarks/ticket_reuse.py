#!/usr/bin/env python3
"""How many TLS 1.3 session tickets do real clients need? Evidence for `session-ticket-count`.

    python3 Benchmarks/ticket_reuse.py [--bin .build/release/portcullis] [--counts 1,2] [--json]

Starts `portcullis server` (2 workers) in front of an echo backend with `--session-ticket-count N`, then lets
each client reconnect in two patterns and counts, from the server's own audit lines (`tls.resumed`), how many
connections were resumed:

  serial    one connection at a time, each offering the session the client kept from the previous one
            (10 connections after a first full handshake);
  parallel  after one full handshake, 8 connections opened at once, all offering the one session the client
            kept (a connection pool starting up).

Clients: Python `ssl` (OpenSSL), `openssl s_client` (-sess_out/-sess_in), Go `crypto/tls` (Benchmarks/loadgen,
one shared tls.ClientSessionCache), the JDK's JSSE (its own client session cache), and redis-benchmark
(hiredis) when redis-server is installed. A client that never offers a ticket shows 0 whatever N is; one
that needs a fresh ticket per connection would show fewer resumptions in `parallel` with N=1 than with N=2.
Loopback only; every process started is stopped.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind_server import free_port, make_pki  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIAL, PARALLEL = 10, 8


class Server:
    """`portcullis server` with the audit log on stderr, read by a thread."""

    def __init__(self, binary: str, d: str, target: int, count: int):
        self.port = free_port()
        args = [binary, "server", "--listen", f"127.0.0.1:{self.port}", "--target", f"127.0.0.1:{target}",
                "--cert", f"{d}/server.pem", "--key", f"{d}/server.key", "--cacert", f"{d}/ca.pem",
                "--allow-cn", "cg-client", "--workers", "2", "--log-format", "json",
                "--session-ticket-count", str(count), "--shutdown-timeout", "2s"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("portcullis did not start")

    def _read(self):
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.lines.append(record)

    def closed(self) -> list[dict]:
        with self.lock:
            return [r for r in self.lines if r.get("msg") == "connection closed"]

    def resumed_since(self, mark: int, expected: int, timeout: float = 10) -> tuple[int, int]:
        """(resumed, total) among the audit lines after `mark`, once `expected` lines arrived."""
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.closed()) - mark < expected:
            time.sleep(0.05)
        new = self.closed()[mark:]
        return sum(r.get("tls.resumed") == "true" for r in new), len(new)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- clients: each returns after making its connections ------------------------------------------------

def python_client(port: int, d: str, pattern: str):
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    ctx.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")

    def one(session=None):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost",
                             session=session) as s:
            s.sendall(b"p")
            s.recv(1)  # reading lets the ticket arrive
            return s.session

    session = one()
    if pattern == "serial":
        for _ in range(SERIAL):
            session = one(session)
    else:
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda _: one(session), range(PARALLEL)))


def openssl_client(port: int, d: str, pattern: str):
    sess = os.path.join(d, f"s_client-{pattern}.sess")

    def one(sess_in: bool, sess_out: bool):
        args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-tls1_3",
                "-cert", f"{d}/client.pem", "-key", f"{d}/client.key", "-CAfile", f"{d}/ca.pem", "-quiet", "-no_ign_eof"]
        if sess_in:
            args += ["-sess_in", sess]
        if sess_out:
            args += ["-sess_out", sess]
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdin.write(b"p")
        p.stdin.flush()
        time.sleep(0.5)  # the echo and the ticket arrive before end of input closes the connection
        p.communicate(timeout=20)

    one(False, True)
    if pattern == "serial":
        for _ in range(SERIAL):
            one(True, True)
    else:
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda _: one(True, False), range(PARALLEL)))


def go_client(port: int, d: str, pattern: str, loadgen: str):
    # loadgen's handshake -resume: -c 1 reconnects serially; -c 8 with one shared cache opens 8 at a time.
    conc = ["-c", "1"] if pattern == "serial" else ["-c", str(PARALLEL), "-shared-session-cache"]
    subprocess.run([loadgen, "handshake", "-target", f"127.0.0.1:{port}", "-cert", f"{d}/client.pem",
                    "-key", f"{d}/client.key", "-cacert", f"{d}/ca.pem", "-servername", "localhost",
                    "-resume", "-d", "1s", "-suite", "TLS_AES_256_GCM_SHA384", "-json", *conc],
                   capture_output=True, timeout=60, check=True)


JAVA = r"""
import javax.net.ssl.*; import java.io.*; import java.security.KeyStore; import java.util.concurrent.*;
public class Reconnect {
  public static void main(String[] a) throws Exception {
    char[] pw = "changeit".toCharArray();
    KeyStore ks = KeyStore.getInstance("PKCS12"); ks.load(new FileInputStream(a[2]), pw);
    KeyStore ts = KeyStore.getInstance("PKCS12"); ts.load(new FileInputStream(a[3]), pw);
    KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX"); kmf.init(ks, pw);
    TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX"); tmf.init(ts);
    SSLContext ctx = SSLContext.getInstance("TLSv1.3"); ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
    int port = Integer.parseInt(a[0]);
    Callable<Void> one = () -> {
      try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket("localhost", port)) {
        s.getOutputStream().write('p'); s.getOutputStream().flush(); s.getInputStream().read();
      }
      return null;
    };
    one.call();
    if (a[1].equals("serial")) { for (int i = 0; i < 10; i++) one.call(); }
    else { ExecutorService pool = Executors.newFixedThreadPool(8);
           for (Future<Void> f : pool.invokeAll(java.util.Collections.nCopies(8, one))) f.get(); pool.shutdown(); }
  }
}
"""


def java_setup(d: str) -> str | None:
    if not (shutil.which("javac") and shutil.which("java") and shutil.which("keytool")):
        return None
    with open(os.path.join(d, "Reconnect.java"), "w") as f:
        f.write(JAVA)
    subprocess.run(["javac", "Reconnect.java"], cwd=d, check=True, capture_output=True)
    subprocess.run(["openssl", "pkcs12", "-export", "-in", "client.pem", "-inkey", "client.key", "-out", "client.p12",
                    "-passout", "pass:changeit"], cwd=d, check=True, capture_output=True)
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore",
                    "trust.p12", "-storetype", "PKCS12", "-storepass", "changeit"], cwd=d, check=True,
                   capture_output=True)
    return d


def java_client(port: int, d: str, pattern: str):
    subprocess.run(["java", "-cp", d, "Reconnect", str(port), pattern, f"{d}/client.p12", f"{d}/trust.p12"],
                   capture_output=True, timeout=120, check=True)


def redis_client(port: int, d: str, pattern: str):
    # redis-benchmark (hiredis): -c 1 reconnects one at a time (-k 0: a new connection per request),
    # -c 8 opens 8 at once.
    c = "1" if pattern == "serial" else str(PARALLEL)
    n = str(SERIAL + 1) if pattern == "serial" else str(PARALLEL + 1)
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--tls", "--sni", "localhost",
                    "--cert", f"{d}/client.pem", "--key", f"{d}/client.key", "--cacert", f"{d}/ca.pem",
                    "-c", c, "-n", n, "-k", "0", "-t", "ping", "-q"], capture_output=True, timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release/portcullis"))
    ap.add_argument("--counts", default="1,2")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portcullis-tickets-")
    procs = []
    try:
        make_pki(d)
        echo_port = free_port()
        procs.append(subprocess.Popen([a.bin, "bench", "backend", "--echo", "--listen", f"127.0.0.1:{echo_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        redis_port = None
        if shutil.which("redis-server") and shutil.which("redis-benchmark"):
            redis_port = free_port()
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        clients = [("Python ssl", python_client, echo_port), ("openssl s_client", openssl_client, echo_port)]
        loadgen = os.path.join(ROOT, ".build-loadgen/loadgen")
        if shutil.which("go"):
            subprocess.run([os.path.join(ROOT, "Benchmarks/loadgen/build.sh"), loadgen], check=True, capture_output=True)
            clients.append(("Go crypto/tls", lambda p, dd, pat: go_client(p, dd, pat, loadgen), echo_port))
        if java_setup(d):
            clients.append(("JDK JSSE " + subprocess.run(["java", "-version"], capture_output=True, text=True)
                            .stderr.split('"')[1], java_client, echo_port))
        if redis_port:
            time.sleep(0.5)
            clients.append(("redis-benchmark (hiredis)", redis_client, redis_port))
        rows = []
        for count in [int(c) for c in a.counts.split(",")]:
            servers = {target: Server(a.bin, d, target, count) for target in {c[2] for c in clients}}
            try:
                for name, run, target in clients:
                    for pattern in ("serial", "parallel"):
                        server = servers[target]
                        mark = len(server.closed())
                        run(server.port, d, pattern)
                        expected = 1 + (SERIAL if pattern == "serial" else PARALLEL)
                        resumed, total = server.resumed_since(mark, expected if "Go" not in name else 1)
                        rows.append({"client": name, "tickets": count, "pattern": pattern,
                                     "resumed": resumed, "connections": total})
            finally:
                for s in servers.values():
                    s.stop()
        if a.json:
            print(json.dumps(rows))
            return
        print("| client | session-ticket-count | serial: resumed / connections | parallel: resumed / connections |")
        print("|---|---|---|---|")
        for name, _, _ in clients:
            for count in [int(c) for c in a.counts.split(",")]:
                cells = [next(r for r in rows if r["client"] == name and r["tickets"] == count and r["pattern"] == p)
                         for p in ("serial", "parallel")]
                print(f"| {name} | {count} | " + " | ".join(f"{r['resumed']} / {r['connections']}" for r in cells) + " |")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
