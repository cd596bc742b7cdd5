"""`portcullis demo` is the README's first command: it must really run a sidecar and show both outcomes."""


from harness import binary_path, free_port, run_portcullis_once


def test_demo_admits_one_client_refuses_the_other_and_exits_zero(tmp_path):
    port = free_port()
    result = run_portcullis_once(["demo", "--once", "--listen", f"127.0.0.1:{port}", "--dir", str(tmp_path)],
                                 timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✔ CN=demo-client admitted" in result.stdout
    assert 'answered "hello through portcullis"' in result.stdout
    assert "✔ CN=intruder refused inside the TLS handshake" in result.stdout
    assert f"openssl s_client -connect 127.0.0.1:{port}" in result.stdout
    # The audit lines are the real ones from the sidecar.
    assert "connection closed" in result.stderr and "policy.rule=\"cn=demo-client\"" in result.stderr
    assert "handshake failed" in result.stderr and "handshake.error=denied" in result.stderr
    # The printed openssl command works as printed, with the files it names.
    cmd = [line for line in result.stdout.splitlines() if "client.pem" in line][0].split()
    assert (tmp_path / "client.pem").is_file() and (tmp_path / "ca.pem").is_file()
    assert cmd[0] == "openssl" and "-cert" in cmd


def test_demo_reports_a_busy_port_in_one_line(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_portcullis_once(["demo", "--once", "--listen", f"127.0.0.1:{port}", "--dir", str(tmp_path)],
                                     timeout=30)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "address already in use" in errors[0] and "--listen" in errors[0]
