"""The NSQ checks, shared by examples/nsq/run.sh and tests/e2e/test_systems_nsq.py.

Producer and consumer speak NSQ's TCP protocol (V2) in plaintext to client-mode sidecars on loopback; the
sidecars carry it over mTLS to the server-mode sidecar in front of nsqd. A minimal protocol client is written
out here (magic "  V2", MPUB/PUB, SUB, RDY, FIN, NOP for heartbeats, CLS) so nothing hides what crosses the
wire; a real application would use go-nsq or pynsq pointed at the client sidecar's port, TLS off.
nsqd's own TLS upgrade (IDENTIFY tls_v1) is never asked for.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import urllib.request

FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = 0, 1, 2


class NSQConn:
    """One NSQ TCP protocol connection (plaintext; to a client-mode sidecar)."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(b"  V2")
        self.buf = bytearray()

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            d = self.sock.recv(262144)
            if not d:
                raise ConnectionError(f"connection closed by the peer ({len(self.buf)} of {n} bytes of a frame)")
            self.buf += d
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def frame(self) -> tuple[int, bytes]:
        """The next frame that is not a heartbeat (heartbeats are answered with NOP)."""
        while True:
            size, kind = struct.unpack(">ii", self._read(8))
            data = self._read(size - 4)
            if kind == FRAME_RESPONSE and data == b"_heartbeat_":
                self.sock.sendall(b"NOP\n")
                continue
            return kind, data

    def expect_ok(self, what: str):
        kind, data = self.frame()
        if kind != FRAME_RESPONSE or data != b"OK":
            raise AssertionError(f"{what}: nsqd answered {'error' if kind == FRAME_ERROR else kind} {data[:80]!r}")

    def pub(self, topic: str, body: bytes):
        self.sock.sendall(b"PUB %s\n" % topic.encode() + struct.pack(">i", len(body)) + body)
        self.expect_ok("PUB")

    def mpub(self, topic: str, bodies: list[bytes]):
        payload = struct.pack(">i", len(bodies)) + b"".join(struct.pack(">i", len(b)) + b for b in bodies)
        self.sock.sendall(b"MPUB %s\n" % topic.encode() + struct.pack(">i", len(payload)) + payload)
        self.expect_ok("MPUB")

    def sub(self, topic: str, channel: str, rdy: int):
        self.sock.sendall(b"SUB %s %s\n" % (topic.encode(), channel.encode()))
        self.expect_ok("SUB")
        self.sock.sendall(b"RDY %d\n" % rdy)

    def close(self):
        try:
            self.sock.sendall(b"CLS\n")
            self.sock.settimeout(2)
            self.frame()  # CLOSE_WAIT
        except (OSError, ConnectionError, struct.error):
            pass
        self.sock.close()


def topic_stats(http_port: int, topic: str) -> dict:
    """nsqd's own view (its plaintext HTTP API on loopback): message_count and depth of `topic`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/stats?format=json&topic={topic}", timeout=5) as r:
        stats = json.load(r)
    for t in stats.get("topics", []):
        if t.get("topic_name") == topic:
            return t
    return {"message_count": 0, "depth": 0}


def check_pub_sub(producer_port: int, consumer_port: int, n: int = 10_000, batch: int = 500,
                  topic: str | None = None) -> str:
    """The consumer subscribes first (SUB creates the topic and channel), the producer MPUBs n distinct
    messages, the consumer receives and FINs every one; the bodies received equal the bodies sent."""
    topic = topic or f"portcullis_{os.urandom(4).hex()}"
    consumer = NSQConn(consumer_port)
    producer = NSQConn(producer_port)
    try:
        consumer.sub(topic, "check", rdy=2500)
        bodies = [b"msg-%06d-" % i + os.urandom(16).hex().encode() for i in range(n)]
        t0 = time.monotonic()
        for i in range(0, n, batch):
            producer.mpub(topic, bodies[i:i + batch])
        got = []
        consumer.sock.settimeout(30)
        while len(got) < n:
            kind, data = consumer.frame()
            assert kind == FRAME_MESSAGE, f"consumer: unexpected frame {kind} {data[:80]!r}"
            msg_id, body = data[10:26], data[26:]
            got.append(body)
            consumer.sock.sendall(b"FIN %s\n" % msg_id)
        dt = time.monotonic() - t0
        assert sorted(got) == sorted(bodies), f"{len(set(got) & set(bodies))} of {n} bodies match"
    finally:
        producer.close()
        consumer.close()
    return f"{n} messages MPUBlished (batches of {batch}), {n} received and FINished, bodies equal, {dt:.2f}s"


def check_refused(producer_port: int, http_port: int, topic: str = "portcullis_refused") -> str:
    """A producer through a client sidecar whose certificate the server side refuses: its PUB fails and nsqd's
    message count for the topic does not move."""
    before = topic_stats(http_port, topic)["message_count"]
    try:
        p = NSQConn(producer_port, timeout=5)
        p.pub(topic, b"from the intruder")
    except (ConnectionError, OSError, AssertionError, struct.error) as e:
        err = f"{type(e).__name__}: {e}"
    else:
        p.close()
        raise AssertionError("the intruder's PUB was answered OK")
    after = topic_stats(http_port, topic)["message_count"]
    assert after == before, f"nsqd message_count for {topic}: {before} -> {after}"
    return f"PUB through the intruder's client sidecar refused ({err}); nsqd message_count {before} -> {after}"


if __name__ == "__main__":
    import argparse
    import sys
    ap = argparse.ArgumentParser()
    ap.add_argument("--producer-port", type=int, required=True)
    ap.add_argument("--consumer-port", type=int, required=True)
    ap.add_argument("--denied-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True, help="nsqd's own HTTP port (stats only)")
    a = ap.parse_args()
    ok = True
    for c in (lambda: check_pub_sub(a.producer_port, a.consumer_port),
              lambda: check_refused(a.denied_port, a.http_port)):
        try:
            print(f"PASS {c()}", flush=True)
        except (AssertionError, ConnectionError, OSError) as e:
            ok = False
            print(f"FAIL {type(e).__name__}: {e}", flush=True)
    sys.exit(0 if ok else 1)
