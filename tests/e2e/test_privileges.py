"""Privilege drop (`--user`/`--group`), the refusal to run as root without it, and the warning about private
keys readable by others. These need root (as CI runs): they are skipped, with the reason, otherwise."""

from __future__ import annotations

import grp
import os
import pwd
import shutil

import pytest

from harness import echo_roundtrip, free_port, run_portcullis_once

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root: run the suite as root (CI does)")

REFUSAL = ("portcullis: refusing to run as root: a proxy facing the network should not keep root; pass --user NAME "
           "to drop to that user after binding and loading keys, or --allow-root to run as root anyway")


def _server_args(pki, key: str | None = None) -> list[str]:
    return ["server", "--listen", f"127.0.0.1:{free_port()}", "--target", "127.0.0.1:9",
            "--cert", pki["server"].cert, "--key", key or pki["server"].key, "--cacert", pki.ca,
            "--allow-cn", "client-allowed", "--log-format", "json"]


def _ids(pid: int) -> dict[str, list[int]]:
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = [int(v) for v in value.split()]
    return ids


@pytest.mark.parametrize("command", ["server", "client", "run"])
def test_root_without_user_is_refused_with_the_two_fixes(pki, tmp_path, command):
    if command == "server":
        args = _server_args(pki)
    elif command == "client":
        args = ["client", "--listen", f"127.0.0.1:{free_port()}", "--target", "127.0.0.1:9", "--cert",
                pki["allowed"].cert, "--key", pki["allowed"].key, "--cacert", pki.ca]
    else:
        cfg = tmp_path / "p.yaml"
        cfg.write_text(f"""listeners:
  - name: a
    listen: 127.0.0.1:{free_port()}
    target: 127.0.0.1:9
    tls: {{cert: {pki["server"].cert}, key: {pki["server"].key}, cacert: {pki.ca}}}
    policy: {{allow-all: true}}
""")
        args = ["run", "--config", str(cfg)]
    r = run_portcullis_once(args, allow_root=False)
    assert r.returncode == 2, r
    assert r.stderr.strip() == REFUSAL
    assert r.stdout == ""


def test_user_nobody_drops_everything_and_still_serves(proxy, pki, tls, echo_backend):
    nobody = pwd.getpwnam("nobody")
    groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
    p = proxy(target=echo_backend.address, extra=["--user", "nobody"])
    rec = p.wait_log("dropped privileges", timeout=5)
    assert rec["user"] == "nobody" and rec["uid"] == str(nobody.pw_uid) and rec["gid"] == str(nobody.pw_gid)
    ids = _ids(p.pid)
    assert ids["Uid"] == [nobody.pw_uid] * 4, ids  # real, effective, saved, filesystem
    assert ids["Gid"] == [nobody.pw_gid] * 4, ids
    assert sorted(ids["Groups"]) == groups, "supplementary groups are root's, not nobody's"
    assert 0 not in ids["Groups"]
    # The drop happens after binding and loading the root-owned key: it still serves, end to end.
    s = tls.connect(p.port, "allowed")
    try:
        assert echo_roundtrip(s, b"as nobody") == b"as nobody"
    finally:
        s.close()
    assert p.wait_log("connection closed", timeout=5)["close.reason"] == "done"


def test_group_overrides_the_primary_group(proxy, echo_backend):
    try:
        other = grp.getgrnam("daemon")
    except KeyError:
        pytest.skip("no 'daemon' group on this machine")
    p = proxy(target=echo_backend.address, extra=["--user", "nobody", "--group", "daemon"])
    p.wait_log("dropped privileges", timeout=5)
    ids = _ids(p.pid)
    assert ids["Uid"] == [pwd.getpwnam("nobody").pw_uid] * 4
    assert ids["Gid"] == [other.gr_gid] * 4


@pytest.mark.parametrize("flag,value,message", [
    ("--user", "no-such-user-pc", "portcullis: --user 'no-such-user-pc': no such user: give a user name or UID from "
                                  "/etc/passwd, e.g. --user nobody"),
    ("--user", "4000000000", "portcullis: --user '4000000000': no such user: give a user name or UID from "
                             "/etc/passwd, e.g. --user nobody"),
    ("--group", "no-such-group-pc", "portcullis: --group 'no-such-group-pc': no such group: give a group name or GID "
                                    "from /etc/group, e.g. --group nogroup"),
])
def test_unknown_user_or_group_is_one_line(pki, flag, value, message):
    args = _server_args(pki) + [flag, value]
    if flag == "--group":
        args += ["--user", "nobody"]
    r = run_portcullis_once(args)
    assert r.returncode == 2, r
    assert r.stderr.strip() == message


def test_key_readable_by_others_gets_one_warning_naming_the_file(proxy, pki, tmp_path, echo_backend):
    loose = tmp_path / "loose.key"
    shutil.copyfile(pki["server"].key, loose)
    os.chmod(loose, 0o644)
    p = proxy(target=echo_backend.address, key=str(loose))
    rec = p.wait_log("key file readable by group or others", timeout=5)
    assert rec["file"] == str(loose)
    assert rec["file.mode"] == "0644"
    assert rec["fix"] == f"chmod 600 {loose}"
    assert len(p.logs("key file readable by group or others")) == 1


def test_private_key_with_mode_600_gets_no_warning(proxy, pki, tmp_path, echo_backend):
    tight = tmp_path / "tight.key"
    shutil.copyfile(pki["server"].key, tight)
    os.chmod(tight, 0o600)
    p = proxy(target=echo_backend.address, key=str(tight))
    p.wait_log("listening", timeout=5)
    assert p.logs("key file readable by group or others") == []
