#!/usr/bin/env python3
"""First-reading throughput check of the server-mode data path (until `portcullis bench` lands).

Starts a plaintext sink (or source) backend and `portcullis server` in front of it, pushes N MiB through with
Python's ssl client, and reports wall MB/s and the proxy's CPU seconds per GiB (from /proc/PID/stat), which is
the steadier figure on a shared machine.

  python3 Benchmarks/quick_throughput.py --bin .build/release/portcullis --mib 1024 --direction up
"""
import argparse, os, socket, ssl, subprocess, sys, tempfile, threading, time

def make_pki(d):
    def run(*a): subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=bench CA")
    for name, subj, ext in [("server", "/CN=localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth"),
                            ("client", "/CN=bench-client", "extendedKeyUsage=clientAuth")]:
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
        open(os.path.join(d, f"{name}.ext"), "w").write(ext + "\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def backend(direction, total, received_all):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4)
    def serve():
        conn, _ = srv.accept()
        buf = bytearray(1 << 20); view = memoryview(buf)
        if direction == "up":
            got = 0
            while True:
                n = conn.recv_into(buf)
                if not n: break
                got += n
            received_all.append(got); received_all.append(time.monotonic())
        else:
            left = total
            while left > 0:
                n = conn.send(view[:min(left, len(buf))]); left -= n
            conn.shutdown(socket.SHUT_WR)
            while conn.recv_into(buf): pass
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release/portcullis")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--direction", choices=["up", "down"], default="up")
    ap.add_argument("--workers", default="2")
    a = ap.parse_args()
    total = a.mib << 20
    with tempfile.TemporaryDirectory() as d:
        make_pki(d)
        received = []
        bport = backend(a.direction, total, received)
        s = socket.socket(); s.bind(("127.0.0.1", 0)); lport = s.getsockname()[1]; s.close()
        proxy = subprocess.Popen([a.bin, "server", "--listen", f"127.0.0.1:{lport}", "--target", f"127.0.0.1:{bport}",
                                  "--cert", f"{d}/server.pem", "--key", f"{d}/server.key", "--cacert", f"{d}/ca.pem",
                                  "--allow-cn", "bench-client", "--workers", a.workers]
                                 + (["--allow-root"] if os.geteuid() == 0 else []),
                                 stderr=subprocess.PIPE, text=True)
        proxy.stderr.readline()
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        ctx.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")
        raw = socket.create_connection(("127.0.0.1", lport))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        cpu0, t0 = cpu_seconds(proxy.pid), time.monotonic()
        if a.direction == "up":
            chunk = os.urandom(256 << 10); left = total
            while left > 0:
                tls.sendall(chunk[:min(left, len(chunk))]); left -= min(left, len(chunk))
            socket.socket.shutdown(tls, socket.SHUT_WR)
            deadline = time.monotonic() + 60
            while not received and time.monotonic() < deadline: time.sleep(0.01)
            assert received and received[0] == total, received
        else:
            buf = bytearray(1 << 20); got = 0
            while got < total:
                n = tls.recv_into(buf)
                if not n: break
                got += n
            assert got == total, got
        t1, cpu1 = time.monotonic(), cpu_seconds(proxy.pid)
        tls.close()
        proxy.terminate(); proxy.wait(10)
        wall = t1 - t0
        print(f"direction={a.direction} bytes={total} wall_s={wall:.2f} MB_per_s={total/wall/1e6:.0f} "
              f"proxy_cpu_s={cpu1-cpu0:.2f} proxy_cpu_s_per_GiB={(cpu1-cpu0)/(total/(1<<30)):.2f}")

if __name__ == "__main__":
    main()
