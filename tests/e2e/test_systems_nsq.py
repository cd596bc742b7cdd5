"""NSQ through Portcullis (examples/nsq), the same scenario as examples/nsq/run.sh:

  producer ─▶ client sidecar ──mTLS──▶ server sidecar ─▶ nsqd (TCP on loopback, its own TLS off)
  consumer ─▶ client sidecar ──mTLS──▶ (same)

nsqd is not packaged by Debian 12 and PyPI has only NSQ client libraries, so on a machine without `nsqd` on
PATH every test here is skipped with that reason. Never replaced by a pretend server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request

import pytest

from harness import free_port, load_example_module, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("nsqd") is None,
    reason="nsqd is not installed: Debian 12 has no nsqd package and PyPI has only NSQ client libraries "
           "(pynsq); put an nsqd 1.x binary on PATH to run these tests")

check = load_example_module("nsq")


class Nsqd:
    def __init__(self, tmp_path):
        self.tcp, self.http = free_port(), free_port()
        data = tmp_path / "nsqd-data"
        data.mkdir()
        self.log = open(tmp_path / "nsqd.log", "wb")
        self.proc = subprocess.Popen(["nsqd", f"--tcp-address=127.0.0.1:{self.tcp}",
                                      f"--http-address=127.0.0.1:{self.http}", "--broadcast-address=127.0.0.1",
                                      f"--data-path={data}"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def ping():
            assert self.proc.poll() is None, "nsqd exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ping", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ping, 10, interval=0.1, what="nsqd /ping")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def nsqd(tmp_path):
    n = Nsqd(tmp_path)
    yield n
    n.stop()


def test_producer_and_consumer_through_client_sidecars(proxy, client_proxy, nsqd):
    server = proxy(target=f"127.0.0.1:{nsqd.tcp}")
    producer = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    consumer = client_proxy(f"127.0.0.1:{server.port}", extra=["--verify-dns", "localhost"])
    line = check.check_pub_sub(producer.port, consumer.port, 10_000)
    assert "10000 received" in line


def test_refused_producer_never_reaches_nsqd(proxy, client_proxy, nsqd):
    server = proxy(target=f"127.0.0.1:{nsqd.tcp}")
    intruder = client_proxy(f"127.0.0.1:{server.port}", cred="denied", extra=["--verify-dns", "localhost"])
    assert "refused" in check.check_refused(intruder.port, nsqd.http)
    server.wait_log("handshake failed", **{"handshake.error": "denied"})
