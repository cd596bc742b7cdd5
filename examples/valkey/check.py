"""The Valkey/Redis checks, shared by examples/valkey/run.sh and tests/e2e/test_systems_valkey.py.

Each check talks to the server through a sidecar and raises AssertionError (with numbers) when something is
off; `server_connections` reads INFO stats straight from the server's plaintext loopback port, so a refused
client can be shown never to have reached it.
"""

from __future__ import annotations

import hashlib
import os
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def tls_client(port: int, certs: dict, cred: str = "app-1", **kw) -> redis.Redis:
    """redis-py over TLS to a server-mode sidecar, presenting `cred`'s client certificate."""
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_certfile=certs[cred][0],
                       ssl_keyfile=certs[cred][1], ssl_ca_certs=certs["ca"], socket_timeout=30,
                       socket_connect_timeout=5, **kw)


def plain_client(port: int, **kw) -> redis.Redis:
    """redis-py without TLS: to a client-mode sidecar (or, for INFO, the server's own loopback port)."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=30, socket_connect_timeout=5, **kw)


class ServerStats:
    """One plaintext connection to redis-server itself, kept open so reading the counter adds nothing to it."""

    def __init__(self, plain_port: int):
        self.r = plain_client(plain_port)

    def connections(self) -> int:
        return int(self.r.info("stats")["total_connections_received"])

    def close(self):
        self.r.close()


def check_keys(r: redis.Redis, n: int = 10_000, tag: str = "") -> str:
    """SET n keys with distinct random values in one pipeline, GET them back in another, compare all."""
    prefix = f"portcullis:{tag or os.urandom(4).hex()}:"
    values = {f"{prefix}{i}": os.urandom(8 + i % 57) for i in range(n)}
    t0 = time.monotonic()
    p = r.pipeline(transaction=False)
    for k, v in values.items():
        p.set(k, v)
    oks = p.execute()
    assert oks == [True] * n, f"{oks.count(True)} of {n} SETs answered OK"
    p = r.pipeline(transaction=False)
    for k in values:
        p.get(k)
    got = p.execute()
    dt = time.monotonic() - t0
    bad = sum(1 for (k, v), g in zip(values.items(), got) if g != v)
    assert bad == 0 and len(got) == n, f"{bad} of {n} values differ"
    r.delete(*values.keys())
    return f"{n} keys SET and GET (pipelined), all {n} values equal, {dt:.2f}s"


def check_big_value(r: redis.Redis, size: int = 10 * 1024 * 1024, tag: str = "") -> str:
    """SET one value of `size` random bytes, GET it back, compare (sha256)."""
    key = f"portcullis:{tag or os.urandom(4).hex()}:big"
    value = os.urandom(size)
    t0 = time.monotonic()
    assert r.set(key, value) is True
    got = r.get(key)
    dt = time.monotonic() - t0
    assert got is not None and len(got) == size, f"got {0 if got is None else len(got)} of {size} bytes"
    want, have = hashlib.sha256(value).hexdigest(), hashlib.sha256(got).hexdigest()
    assert want == have, f"sha256 differs: sent {want[:16]}…, got {have[:16]}…"
    r.delete(key)
    return f"{size // (1024 * 1024)} MB value round trip, sha256 {want[:16]}… equal, {dt:.2f}s"


def check_pubsub(make_client, stats: ServerStats, n: int = 1000, tag: str = "") -> str:
    """Subscribe on one connection, publish n numbered messages from another; every message arrives, in order,
    on the same subscription; the server saw exactly two new connections (subscriber + publisher)."""
    channel = f"portcullis:{tag or os.urandom(4).hex()}:events"
    before = stats.connections()
    sub_client, pub_client = make_client(), make_client()
    ps = sub_client.pubsub(ignore_subscribe_messages=True)
    try:
        ps.subscribe(channel)
        deadline = time.monotonic() + 10
        while pub_client.pubsub_numsub(channel)[0][1] < 1:  # the subscription is registered on the server
            assert time.monotonic() < deadline, "subscription never registered"
            time.sleep(0.01)
        t0 = time.monotonic()
        receivers = [pub_client.publish(channel, f"msg-{i}") for i in range(n)]
        assert receivers == [1] * n, f"{receivers.count(1)} of {n} messages had one subscriber"
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            m = ps.get_message(timeout=1.0)
            if m and m["type"] == "message":
                got.append(m["data"].decode())
        dt = time.monotonic() - t0
        want = [f"msg-{i}" for i in range(n)]
        assert len(got) == n, f"received {len(got)} of {n} messages"
        assert got == want, f"out of order: first difference at {next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)}"
        opened = stats.connections() - before
        assert opened == 2, f"the server saw {opened} new connections during pub/sub (want 2: one subscriber, one publisher)"
    finally:
        ps.close()
        sub_client.close()
        pub_client.close()
    return f"pub/sub: {n} of {n} messages in order on one subscription (server saw 2 connections), {dt:.2f}s"


def check_refused(make_client, stats: ServerStats, what: str) -> str:
    """A client that must be refused: its command fails and the server's connection counter does not move."""
    before = stats.connections()
    r = make_client()
    try:
        try:
            r.set("portcullis:intruder", "was here")
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            err = f"{type(e).__name__}: {e}".splitlines()[0][:120]
        else:
            raise AssertionError(f"{what}: SET succeeded")
    finally:
        r.close()
    time.sleep(0.2)
    after = stats.connections()
    assert after == before, f"{what}: server total_connections_received {before} -> {after}"
    return f"{what} refused ({err}); server total_connections_received {before} -> {after}"


def run_all(*, tls_port: int, plain_port: int, certs: dict, pair_port: int | None = None,
            denied_pair_port: int | None = None, keys: int = 10_000, big: int = 10 * 1024 * 1024,
            messages: int = 1000, report=print) -> None:
    """Every Python-side check; `report` gets one line per passed check. Raises AssertionError on failure."""
    stats = ServerStats(plain_port)
    try:
        paths = [("TLS (redis-py ssl=True → server sidecar)", lambda: tls_client(tls_port, certs))]
        if pair_port:
            paths.append(("pair (plain redis-py → client sidecar → server sidecar)", lambda: plain_client(pair_port)))
        for name, make in paths:
            r = make()
            try:
                report(f"{name}: {check_keys(r, keys)}")
                report(f"{name}: {check_big_value(r, big)}")
            finally:
                r.close()
            report(f"{name}: {check_pubsub(make, stats, messages)}")
        report(check_refused(lambda: tls_client(tls_port, certs, "intruder", retry=Retry(NoBackoff(), 0)), stats,
                             "redis-py with the intruder certificate"))
        if denied_pair_port:
            report(check_refused(lambda: plain_client(denied_pair_port, retry=Retry(NoBackoff(), 0)), stats,
                                 "plain redis-py through a client sidecar holding the intruder certificate"))
    finally:
        stats.close()


if __name__ == "__main__":
    import argparse
    import sys
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls-port", type=int, required=True)
    ap.add_argument("--plain-port", type=int, required=True, help="redis-server's own loopback port (INFO only)")
    ap.add_argument("--pair-port", type=int)
    ap.add_argument("--denied-pair-port", type=int)
    ap.add_argument("--certs", required=True, help="directory with ca.pem, app-1.pem/.key, intruder.pem/.key")
    a = ap.parse_args()
    d = a.certs
    certs = {"ca": f"{d}/ca.pem", "app-1": (f"{d}/app-1.pem", f"{d}/app-1.key"),
             "intruder": (f"{d}/intruder.pem", f"{d}/intruder.key")}
    try:
        run_all(tls_port=a.tls_port, plain_port=a.plain_port, certs=certs, pair_port=a.pair_port,
                denied_pair_port=a.denied_pair_port, report=lambda line: print(f"PASS {line}", flush=True))
    except AssertionError as e:
        print(f"FAIL {e}", flush=True)
        sys.exit(1)
