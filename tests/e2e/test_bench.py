"""The benchmark harness's own numbers, checked against independent counts (issue 5 "Tests")."""

import json
import signal
import subprocess
import time

from harness import binary_path, free_port, wait_until


def start_backend(mode):
    port = free_port()
    proc = subprocess.Popen([str(binary_path()), "bench", "backend", f"--{mode}", "--listen", f"127.0.0.1:{port}",
                             "--workers", "1"], stdout=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    assert first["msg"] == "backend listening", first
    return proc, port


def _open_server_side(port):
    """Connections whose local port is `port` that the server has not closed yet (ESTABLISHED or CLOSE_WAIT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in ("01", "08"):
                count += 1
    return count


def drained(port, timeout=10):
    """Waits until the backend on `port` read every connection to its end (a busy machine may lag)."""
    deadline = time.monotonic() + timeout
    while _open_server_side(port) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_backend(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    last = json.loads(out.strip().splitlines()[-1])
    assert last["msg"] == "backend stopped", last
    return last


def bench(*args, timeout=60):
    result = subprocess.run([str(binary_path()), "bench", *map(str, args), "--json"], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def tls_args(pki):
    return ["--cert", pki["allowed"].cert, "--key", pki["allowed"].key, "--cacert", pki.ca,
            "--server-name", "localhost"]


def test_upload_bytes_reported_equal_bytes_the_sink_received():
    proc, port = start_backend("sink")
    try:
        (run,) = bench("throughput", "--target", f"127.0.0.1:{port}", "--plaintext", "--direction", "up",
                       "--duration", "1s", "--threads", "1")
    finally:
        drained(port)  # the sink reads what the kernel still holds, up to the client's FIN
        stopped = stop_backend(proc)
    assert run["results"]["bytes_up"] > 1_000_000
    assert stopped["bytes_in"] == run["results"]["bytes_up"]


def test_request_count_matches_what_the_echo_saw(pki, proxy):
    echo, port = start_backend("echo")
    try:
        p = proxy(target=f"127.0.0.1:{port}", allow=["--allow-cn", "client-allowed"])
        (run,) = bench("latency", "--target", f"127.0.0.1:{p.port}", *tls_args(pki), "--connections", "4",
                       "--message-size", "100", "--duration", "1s", "--threads", "1")
    finally:
        stopped = stop_backend(echo)
    requests = run["results"]["requests"]
    assert requests > 100
    # Every counted request was echoed; at most one request per connection was in flight at the stop,
    # plus the ones sent before measuring started (none: the clock starts with the first request).
    assert requests * 100 <= stopped["bytes_in"] <= (requests + 4) * 100
    lat = run["results"]["latency_us"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert lat["count"] == requests


def test_handshake_count_matches_the_terminators_audit_log(pki, proxy, echo_backend):
    p = proxy(target=echo_backend.address, allow=["--allow-cn", "client-allowed"])
    (run,) = bench("handshake", "--target", f"127.0.0.1:{p.port}", *tls_args(pki), "--concurrency", "4",
                   "--duration", "1s", "--threads", "1")
    handshakes = run["results"]["handshakes"]
    assert handshakes > 10 and run["results"]["errors"] == {}
    wait_until(lambda: len(p.logs("connection closed")) >= handshakes, timeout=10, what="audit lines")
    # Each counted handshake is one audited connection; connections cut at the deadline may add up to
    # the concurrency (they completed on the server but were not counted by the client).
    assert handshakes <= len(p.logs("connection closed")) <= handshakes + 4


def test_resumed_fraction_is_reported_and_checked(pki, proxy, echo_backend):
    p = proxy(target=echo_backend.address, allow=["--allow-cn", "client-allowed"])
    (run,) = bench("handshake", "--target", f"127.0.0.1:{p.port}", *tls_args(pki), "--concurrency", "2",
                   "--duration", "1s", "--threads", "1", "--resume")
    assert run["workload"] == "handshake-resumed"
    assert run["results"]["resumed_fraction"] > 0.9
    resumed_lines = [r for r in p.logs("connection closed") if r.get("tls.resumed") == "true"]
    assert len(resumed_lines) >= run["results"]["handshakes"] * 0.9 - 2


def test_refused_client_is_counted_as_an_error_not_a_handshake(pki, proxy, echo_backend):
    p = proxy(target=echo_backend.address, allow=["--allow-cn", "somebody-else"])
    (run,) = bench("handshake", "--target", f"127.0.0.1:{p.port}", *tls_args(pki), "--concurrency", "2",
                   "--duration", "1s", "--threads", "1")
    assert run["results"]["handshakes"] == 0
    assert sum(run["results"]["errors"].values()) > 0


def test_json_schema_has_the_documented_fields(pki, proxy, echo_backend):
    p = proxy(target=echo_backend.address, allow=["--allow-cn", "client-allowed"])
    (run,) = bench("throughput", "--target", f"127.0.0.1:{p.port}", *tls_args(pki), "--direction", "both",
                   "--duration", "1s", "--threads", "1", "--pid", p.pid)
    for key in ("tool", "version", "workload", "target", "parameters", "machine", "results", "cpu"):
        assert key in run, key
    assert run["tool"] == "portcullis bench"
    assert {"cpus", "kernel", "openssl"} <= set(run["machine"])
    assert run["results"]["mb_per_second_up"] > 0 and run["results"]["mb_per_second_down"] > 0
    assert run["cpu"]["target_seconds"] > 0 and run["cpu"]["per_gb_s"] > 0


def test_idle_reports_memory_per_connection(pki, proxy, echo_backend):
    p = proxy(target=echo_backend.address, allow=["--allow-cn", "client-allowed"])
    (run,) = bench("idle", "--target", f"127.0.0.1:{p.port}", *tls_args(pki), "--connections", "200",
                   "--pid", p.pid, "--threads", "1")
    assert run["results"]["connections_open"] == 200
    assert 0 < run["results"]["rss_kb_per_connection"] < 1024
