"""The ZeroMQ checks, shared by examples/zeromq/run.sh and tests/e2e/test_systems_zeromq.py.

The "servers" bind plaintext tcp:// endpoints on loopback (REP, PUB); the server-mode sidecars put mTLS in
front of them; the "clients" (REQ, SUB) connect to client-mode sidecars on loopback. libzmq never sees TLS.

  REQ  connect tcp://127.0.0.1:<client sidecar> ─▶ portcullis client ──mTLS──▶ portcullis server ─▶ REP  bind
  SUB  connect tcp://127.0.0.1:<client sidecar> ─▶ portcullis client ──mTLS──▶ portcullis server ─▶ PUB  bind
"""

from __future__ import annotations

import threading
import time

import zmq


def _ep(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


class RepServer:
    """A REP socket bound to 127.0.0.1:port in its own thread; replies b"re:" + request. Counts requests."""

    def __init__(self, port: int, ctx: zmq.Context | None = None):
        self.ctx = ctx or zmq.Context()
        self.port = port
        self.served = 0
        self._stop = threading.Event()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(_ep(port))
        self.thread = threading.Thread(target=self._loop, name=f"rep-{port}", daemon=True)
        self.thread.start()

    def _loop(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(100):
                msg = self.sock.recv()
                self.sock.send(b"re:" + msg)
                self.served += 1
        self.sock.close(0)

    def close(self):
        self._stop.set()
        self.thread.join(5)


def req_socket(ctx: zmq.Context, port: int, timeout_ms: int = 1000) -> zmq.Socket:
    """A REQ that can resend after a timeout (REQ_RELAXED) and ignores stale replies (REQ_CORRELATE)."""
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.REQ_RELAXED, 1)
    s.setsockopt(zmq.REQ_CORRELATE, 1)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.setsockopt(zmq.RECONNECT_IVL, 100)
    s.connect(_ep(port))
    return s


def check_reqrep(req_port: int, n: int = 10_000, ctx: zmq.Context | None = None) -> str:
    """n request/replies, one at a time, each reply matched to its request."""
    ctx = ctx or zmq.Context()
    s = req_socket(ctx, req_port, timeout_ms=10_000)
    try:
        t0 = time.monotonic()
        for i in range(n):
            body = b"%d" % i
            s.send(body)
            reply = s.recv()
            assert reply == b"re:" + body, f"request {i}: got {reply[:40]!r}"
        dt = time.monotonic() - t0
    except zmq.Again:
        raise AssertionError(f"REQ/REP: no reply to request {i} within 10s ({i} of {n} answered)") from None
    finally:
        s.close(0)
    return f"REQ/REP: {n} of {n} replies matched their requests, {dt:.2f}s ({n / dt:,.0f} round trips/s)"


def check_pubsub(pub_bind_port: int, sub_port: int, n: int = 100_000, ctx: zmq.Context | None = None) -> str:
    """SUB connects first; PUB sends SYNC until the subscriber has one (no slow-joiner loss), then n numbered
    messages and END; the subscriber must get exactly 0..n-1 in order. HWMs are unlimited so nothing drops."""
    ctx = ctx or zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(_ep(pub_bind_port))
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(_ep(sub_port))
    synced, done = threading.Event(), threading.Event()
    result = {"count": 0, "bad": None, "end": False}

    def subscriber():
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        expect = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not poller.poll(200):
                continue
            m = sub.recv()
            if m == b"SYNC":
                synced.set()
                continue
            if m == b"END":
                result["end"] = True
                break
            if result["bad"] is None and m != b"%d" % expect:
                result["bad"] = (expect, m[:20])
            expect += 1
            result["count"] = expect
        done.set()

    t = threading.Thread(target=subscriber, name="sub", daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 15
        while not synced.is_set():
            assert time.monotonic() < deadline, "the subscriber never received SYNC (no path PUB → SUB)"
            pub.send(b"SYNC")
            synced.wait(0.05)
        t0 = time.monotonic()
        for i in range(n):
            pub.send(b"%d" % i)
        pub.send(b"END")
        done.wait(120)
        dt = time.monotonic() - t0
        assert result["end"], f"END never arrived ({result['count']} of {n} messages received)"
        assert result["bad"] is None, f"message {result['bad'][0]} was {result['bad'][1]!r}"
        assert result["count"] == n, f"received {result['count']} of {n} messages"
    finally:
        t.join(5)
        sub.close(0)
        pub.close(0)
    return f"PUB/SUB: {n} of {n} published messages received, in order, {dt:.2f}s ({n / dt:,.0f} msgs/s)"


def check_restart(req_port: int, restart, before: int = 200, after: int = 200, timeout: float = 30.0,
                  ctx: zmq.Context | None = None) -> str:
    """Request/replies in a loop; after `before` replies, restart() runs in another thread (it stops the
    server-side sidecar with SIGTERM and starts a new one on the same port) while requests keep flowing;
    continue until `after` replies arrived after the new sidecar listens. A request that times out (1 s) is
    sent again on the same socket (REQ_RELAXED); ZeroMQ reconnects through the client sidecar by itself."""
    ctx = ctx or zmq.Context()
    s = req_socket(ctx, req_port, timeout_ms=1000)
    counts = {"before": 0, "during": 0, "after": 0}
    resends = 0
    restarted = threading.Event()
    errors: list[BaseException] = []
    t_up = [0.0]
    t_first_after = None

    def do_restart():
        try:
            restart()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        t_up[0] = time.monotonic()
        restarted.set()

    th = None
    i = 0
    try:
        deadline = time.monotonic() + timeout
        while counts["after"] < after:
            assert not errors, f"restarting the server sidecar failed: {errors[0]}"
            assert time.monotonic() < deadline, (
                f"only {counts['after']} replies after the restart within {timeout}s ({counts}, {resends} resends)")
            if th is None and counts["before"] >= before:
                th = threading.Thread(target=do_restart, name="restart", daemon=True)
                th.start()
            body = b"r%d" % i
            s.send(body)
            try:
                reply = s.recv()
            except zmq.Again:
                resends += 1
                continue  # REQ_RELAXED: send the same request again
            assert reply == b"re:" + body, f"request {i}: got {reply[:40]!r}"
            i += 1
            if th is None:
                counts["before"] += 1
            elif not restarted.is_set():
                counts["during"] += 1
            else:
                counts["after"] += 1
                if t_first_after is None:
                    t_first_after = time.monotonic()
    finally:
        s.close(0)
        if th is not None:
            th.join(20)
    gap = t_first_after - t_up[0]
    return (f"restart mid-stream: {counts['before']} replies before SIGTERM to the server sidecar, "
            f"{counts['during']} while it drained and the new one started, {counts['after']} after "
            f"(first {gap:.2f}s after the new sidecar listened; {resends} request(s) resent after a 1s timeout)")


def check_refused(rep: RepServer, req_port: int, ctx: zmq.Context | None = None, wait_s: float = 2.0) -> str:
    """A REQ through a client sidecar whose certificate the server sidecar refuses: no reply, and the REP
    server receives nothing."""
    ctx = ctx or zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(wait_s * 1000))
    s.setsockopt(zmq.RECONNECT_IVL, 500)
    before = rep.served
    s.connect(_ep(req_port))
    try:
        s.send(b"let me in")
        try:
            reply = s.recv()
        except zmq.Again:
            reply = None
    finally:
        s.close(0)
    assert reply is None, f"the refused REQ got a reply: {reply!r}"
    assert rep.served == before, f"the REP server answered {rep.served - before} request(s) from the intruder"
    return f"REQ through the intruder's client sidecar: no reply in {wait_s:.0f}s, REP server saw {rep.served - before} requests"


if __name__ == "__main__":
    import argparse
    import os
    import signal
    import subprocess
    import sys

    ap = argparse.ArgumentParser(description="ZeroMQ through a Portcullis pair; the REP/PUB servers run here.")
    ap.add_argument("--rep-bind", type=int, required=True, help="port the REP server binds (server sidecar target)")
    ap.add_argument("--req-port", type=int, required=True, help="client sidecar in front of the REP path")
    ap.add_argument("--pub-bind", type=int, required=True, help="port the PUB binds (server sidecar target)")
    ap.add_argument("--sub-port", type=int, required=True, help="client sidecar in front of the PUB path")
    ap.add_argument("--denied-req-port", type=int, help="client sidecar holding a refused certificate")
    ap.add_argument("--restart-pid", type=int, required=True, help="PID of the REP path's server sidecar")
    ap.add_argument("--restart-log", required=True, help="log file for the replacement sidecar")
    ap.add_argument("--pid-file", required=True, help="the replacement sidecar's PID is written here")
    ap.add_argument("restart_cmd", nargs=argparse.REMAINDER, help="-- command that starts the replacement sidecar")
    a = ap.parse_args()
    cmd = a.restart_cmd[1:] if a.restart_cmd[:1] == ["--"] else a.restart_cmd

    def restart():
        os.kill(a.restart_pid, signal.SIGTERM)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            try:
                os.kill(a.restart_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        print(f"     (server sidecar pid {a.restart_pid} stopped with SIGTERM after {time.monotonic() - t0:.2f}s; "
              f"starting a new one on the same port)", flush=True)
        log = open(a.restart_log, "wb")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        open(a.pid_file, "w").write(f"{p.pid}\n")
        deadline = time.monotonic() + 20
        while b'"msg":"listening"' not in open(a.restart_log, "rb").read():
            assert p.poll() is None and time.monotonic() < deadline, "the new server sidecar did not start"
            time.sleep(0.05)

    ctx = zmq.Context()
    rep = RepServer(a.rep_bind, ctx)
    ok = True
    checks = [lambda: check_reqrep(a.req_port, 10_000, ctx),
              lambda: check_pubsub(a.pub_bind, a.sub_port, 100_000, ctx)]
    if a.denied_req_port:
        checks.append(lambda: check_refused(rep, a.denied_req_port, ctx))
    checks.append(lambda: check_restart(a.req_port, restart, ctx=ctx))
    try:
        for c in checks:
            try:
                print(f"PASS {c()}", flush=True)
            except AssertionError as e:
                ok = False
                print(f"FAIL {e}", flush=True)
    finally:
        rep.close()
        ctx.term()
    sys.exit(0 if ok else 1)
