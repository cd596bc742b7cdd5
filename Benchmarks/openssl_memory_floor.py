#!/usr/bin/env python3
"""What one TLS 1.3 server connection with a verified client certificate costs in OpenSSL alone.

    python3 Benchmarks/openssl_memory_floor.py [--connections 500] [--tickets 2]

Uses Python's `ssl` module — the system OpenSSL, nothing of Portcullis — to make N in-memory server
connections (MemoryBIO pairs, client certificate required and verified, one byte each way, the client side
freed), and reports the heap they keep (glibc mallinfo2, in use) per connection, minus the Python wrapper's own
size. Any terminator built on this OpenSSL pays at least this per idle mTLS connection, before its own state
and before allocator overhead; it is the floor under the "idle memory per connection" figure.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind_server import make_pki  # noqa: E402


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def heap_in_use() -> int:
    gc.collect()
    info = LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = MallInfo2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--tickets", type=int, default=2, help="TLS 1.3 tickets the server sends (OpenSSL's default: 2)")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portcullis-floor-")
    try:
        make_pki(d)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_3
        server.load_cert_chain(f"{d}/server.pem", f"{d}/server.key")
        server.load_verify_locations(f"{d}/ca.pem")
        server.verify_mode = ssl.CERT_REQUIRED
        server.num_tickets = a.tickets
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(f"{d}/ca.pem")
        client.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")

        def connection():
            ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
            c = client.wrap_bio(ci, co, server_hostname="localhost")
            s = server.wrap_bio(si, so, server_side=True)
            for _ in range(10):
                for end in (c, s):
                    try:
                        end.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                si.write(co.read())
                ci.write(so.read())
            c.write(b"x")
            si.write(co.read())
            assert s.read(1) == b"x"
            s.write(b"y")
            ci.write(so.read())
            assert c.read(1) == b"y"
            return s, si, so  # the client end is dropped here

        warm = [connection() for _ in range(20)]
        del warm
        before = heap_in_use()
        wrappers = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(a.connections)]
        wrapper_cost = (heap_in_use() - before) / a.connections
        del wrappers
        before = heap_in_use()
        kept = [connection() for _ in range(a.connections)]
        per = (heap_in_use() - before) / a.connections
        print(f"{ssl.OPENSSL_VERSION}: {per / 1024:.1f} KiB of heap per server connection "
              f"(TLS 1.3, verified client certificate, {a.tickets} tickets, {len(kept)} kept), "
              f"of which about {wrapper_cost / 1024:.1f} KiB is Python's MemoryBIO pair: "
              f"OpenSSL keeps about {(per - wrapper_cost) / 1024:.1f} KiB")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
