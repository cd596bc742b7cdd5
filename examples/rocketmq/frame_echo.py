#!/usr/bin/env python3
"""Stand-in for a RocketMQ broker's plaintext remoting port (no broker is installable from Debian or PyPI):
reads frames like remoting commands (4-byte big-endian length, then the bytes) and sends each one back.
Listens on 127.0.0.1 only and prints one line per accepted connection and per closed one, so run.sh can show
that a refused client never reached it.

    python3 frame_echo.py PORT
"""
import socket
import struct
import sys
import threading

lock = threading.Lock()
accepted = 0


def serve(conn: socket.socket, n: int):
    frames = 0
    try:
        with conn:
            f = conn.makefile("rb")
            while True:
                head = f.read(4)
                if len(head) < 4:
                    break
                (length,) = struct.unpack(">I", head)
                body = f.read(length)
                if len(body) < length:
                    break
                conn.sendall(head + body)
                frames += 1
    except OSError:
        pass
    print(f"connection {n} closed after {frames} frames", flush=True)


def main():
    global accepted
    port = int(sys.argv[1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    print(f"frame echo listening on 127.0.0.1:{port}", flush=True)
    while True:
        conn, peer = srv.accept()
        with lock:
            accepted += 1
            n = accepted
        print(f"connection {n} accepted from {peer[0]}:{peer[1]}", flush=True)
        threading.Thread(target=serve, args=(conn, n), daemon=True).start()


if __name__ == "__main__":
    main()
