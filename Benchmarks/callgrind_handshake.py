#!/usr/bin/env python3
"""Where a TLS handshake's instructions go, in Portcullis and in its peers, counted by valgrind's callgrind.

    python3 Benchmarks/callgrind_handshake.py [BIN] [--peers haproxy,nginx] [--seconds 20] [--resume] [--keep DIR]

Each terminator runs under callgrind with one worker (Portcullis `workers: 1`, HAProxy `nbthread 1`, nginx
without a master process) in front of an echo backend, all pinned to TLS 1.3, TLS_AES_128_GCM_SHA256,
X25519 and the same ECDSA P-256 certificates, requiring a client certificate. Counting is switched on after a
warm-up, then the Go load generator (Benchmarks/loadgen, crypto/tls: sends its leaf certificate only, as most
clients do) makes handshakes one at a time for --seconds (each: full or --resume'd handshake, a 1-byte echo,
close). Prints instructions per handshake for the whole process and for the OpenSSL functions that matter
(inclusive), so the next person sees what each handshake pays for. Instruction counts repeat whatever else
the machine is doing. valgrind cannot read the Swift binary's DWARF, so a debug-stripped copy runs.
--keep DIR keeps the callgrind files (open them with callgrind_annotate --inclusive=yes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind_server import free_port, make_pki  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE, GROUP = "TLS_AES_128_GCM_SHA256", "X25519"

# (label, exported function): inclusive instructions per handshake. Static functions have no symbols in
# Debian's libssl/libcrypto, so the exported entry points stand for them.
BREAKDOWN = [
    ("SSL_do_handshake (all of it)", "SSL_do_handshake"),
    ("certificate parse (d2i_X509)", "d2i_X509"),
    ("  of which public-key decoding", "OSSL_DECODER_CTX_new_for_pkey"),
    ("chain verification (X509_verify_cert)", "X509_verify_cert"),
    ("ECDSA verify (all)", "ECDSA_verify"),
    ("ECDSA sign (CertificateVerify)", "ECDSA_sign_ex"),
    ("X25519 key generation", "EVP_PKEY_keygen"),
    ("X25519 shared secret", "EVP_PKEY_derive"),
    ("key schedule (HKDF)", "EVP_KDF_derive"),
    ("session serialise (i2d_SSL_SESSION)", "i2d_SSL_SESSION"),
    ("session parse (d2i_SSL_SESSION)", "d2i_SSL_SESSION"),
    ("malloc + free", None),
    ("pthread rwlocks", None),
]


def inclusive(annotate: str, function: str) -> int:
    total = 0
    for line in annotate.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(?:\*\s+)?\S*:(\S+)", line)
        if m and m.group(2) == function:
            total = max(total, int(m.group(1).replace(",", "")))
    return total


def self_cost(annotate: str, pattern: str) -> int:
    total = 0
    for line in annotate.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S+)", line)
        if m and re.search(pattern, m.group(2)):
            total += int(m.group(1).replace(",", ""))
    return total


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port}")


def terminator_command(name: str, d: str, port: int, echo: int, binary: str) -> list[str]:
    if name == "portcullis":
        copy = os.path.join(d, "portcullis")
        shutil.copy(binary, copy)
        subprocess.run(["strip", "--strip-debug", copy], check=True)
        with open(f"{d}/portcullis.yaml", "w") as f:
            f.write(f"""log: {{format: text, level: error}}
workers: 1
listeners:
  - name: hs
    listen: 127.0.0.1:{port}
    target: 127.0.0.1:{echo}
    tls: {{cert: {d}/server.pem, key: {d}/server.key, cacert: {d}/ca.pem, cipher-suites: {SUITE}, groups: {GROUP}}}
    timeouts: {{handshake: 120s}}
    policy: {{rules: [{{name: bench, cn: cg-client}}]}}
""")
        return [copy, "run", "--config", f"{d}/portcullis.yaml"] + (["--allow-root"] if os.geteuid() == 0 else [])
    if name == "haproxy":
        with open(f"{d}/server-combined.pem", "w") as f:
            f.write(open(f"{d}/server.pem").read() + open(f"{d}/server.key").read())
        with open(f"{d}/haproxy.cfg", "w") as f:
            f.write(f"""global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
frontend fe
    bind 127.0.0.1:{port} ssl crt {d}/server-combined.pem ca-file {d}/ca.pem verify required ssl-min-ver TLSv1.3 ciphersuites {SUITE} curves {GROUP}
    tcp-request session reject unless {{ ssl_c_s_dn(CN) -m str cg-client }}
    default_backend be
backend be
    server s1 127.0.0.1:{echo}
""")
        return ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]
    if name == "nginx":
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
master_process off;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log error;
events {{ worker_connections 1024; }}
stream {{
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {SUITE};
    ssl_ecdh_curve {GROUP};
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/ca.pem;
    ssl_verify_client on;
    ssl_session_tickets on;
    server {{ listen 127.0.0.1:{port} ssl; proxy_pass 127.0.0.1:{echo}; }}
}}
""")
        return ["nginx", "-c", f"{d}/nginx.conf", "-p", d]
    raise ValueError(name)


def measure(name: str, d: str, binary: str, echo: int, loadgen: str, seconds: int, resume: bool, keep: str | None):
    port = free_port()
    out = os.path.join(d, f"callgrind.{name}{'-resumed' if resume else ''}.out")
    cmd = terminator_command(name, d, port, echo, binary)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        lg = [loadgen, "handshake", "-target", f"127.0.0.1:{port}", "-cert", f"{d}/client.pem", "-key",
              f"{d}/client.key", "-cacert", f"{d}/ca.pem", "-servername", "localhost", "-c", "1", "-json",
              "-timeout", "30s", "-suite", SUITE, "-group", GROUP] + (["-resume"] if resume else [])
        subprocess.run(lg + ["-d", "3s"], capture_output=True, timeout=120)  # warm-up: first-use costs
        time.sleep(0.5)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, timeout=60)
        result = json.loads(subprocess.run(lg + ["-d", f"{seconds}s"], capture_output=True, text=True,
                                           timeout=seconds + 120).stdout)
        time.sleep(0.5)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, timeout=60)
        # Dump now rather than at exit: nginx without a master process may not exit cleanly under valgrind.
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=120)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    handshakes = result["results"]["handshakes"]
    errors = result["results"].get("errors", {})
    if not handshakes:
        raise RuntimeError(f"{name}: no handshake completed: {errors}")
    if resume and result["results"].get("resumed_fraction", 0) < 0.9:
        raise RuntimeError(f"{name}: only {result['results'].get('resumed_fraction')} of handshakes resumed")
    # A process that forked (or threads dumped separately) leaves several parts: add them all.
    parts = [f for f in os.listdir(d) if f.startswith(os.path.basename(out))]
    text = "".join(open(os.path.join(d, f)).read() for f in parts)
    totals = [int(t) for t in re.findall(r"^(?:totals|summary): (\d+)", text, re.M)]
    if not totals or not sum(totals):
        raise RuntimeError(f"{name}: callgrind wrote no counts ({parts}): {re.findall(r'^(?:totals|summary|events|cmd).*', text, re.M)[:6]}")
    total = max(sum(int(t) for t in re.findall(r"^totals: (\d+)", text, re.M)),
                sum(int(t) for t in re.findall(r"^summary: (\d+)", text, re.M)))
    # The part holding the counted interval (the explicit dump; the exit dump after it is empty).
    def part_total(f):
        found = re.findall(r"^totals: (\d+)", open(os.path.join(d, f)).read(), re.M)
        return int(found[0]) if found else 0
    counted = os.path.join(d, max(parts, key=part_total))
    annotate = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", counted],
                              capture_output=True, text=True).stdout
    flat = subprocess.run(["callgrind_annotate", "--threshold=100", counted], capture_output=True, text=True).stdout
    row = {"total": total / handshakes, "handshakes": handshakes, "errors": errors}
    for label, function in BREAKDOWN:
        if function:
            row[label] = inclusive(annotate, function) / handshakes
    row["malloc + free"] = self_cost(flat, r"malloc\.c:|:(malloc|free|cfree|realloc|calloc)\b") / handshakes
    row["pthread rwlocks"] = self_cost(flat, r"pthread_rwlock") / handshakes
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(counted, keep)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, ".build/release/portcullis"))
    ap.add_argument("--peers", default="haproxy,nginx", help="comma list of haproxy,nginx (or empty)")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--resume", action="store_true", help="measure resumed handshakes instead of full ones")
    ap.add_argument("--keep", help="directory to copy the callgrind files into")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portcullis-cg-handshake-")
    echo = None
    try:
        make_pki(d)
        loadgen = os.path.join(ROOT, ".build-loadgen/loadgen")
        subprocess.run([os.path.join(ROOT, "Benchmarks/loadgen/build.sh"), loadgen], check=True, capture_output=True)
        echo_port = free_port()
        echo = subprocess.Popen([a.binary, "bench", "backend", "--echo", "--listen", f"127.0.0.1:{echo_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        names = ["portcullis"] + [p for p in a.peers.split(",") if p]
        rows = {n: measure(n, d, a.binary, echo_port, loadgen, a.seconds, a.resume, a.keep) for n in names}
        kind = "resumed" if a.resume else "full"
        print(f"Instructions per {kind} mTLS handshake (TLS 1.3, {SUITE}, {GROUP}, ECDSA P-256, Go client, "
              f"one worker; M = millions, inclusive):\n")
        print("| | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        print("| **whole process** | " + " | ".join(f"**{rows[n]['total'] / 1e6:.2f} M**" for n in names) + " |")
        for label, _ in BREAKDOWN:
            print(f"| {label} | " + " | ".join(f"{rows[n][label] / 1e6:.2f} M" for n in names) + " |")
        print("| handshakes counted | " + " | ".join(str(rows[n]["handshakes"]) for n in names) + " |")
    finally:
        if echo:
            echo.terminate()
            echo.wait(10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
