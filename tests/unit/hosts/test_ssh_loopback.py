"""SSHHost against a real OpenSSH server on loopback (see conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from polling import until

from zfs_backend.config import load_settings
from zfs_backend.errors import CommandFailed, CommandTimeout, HostKeyMismatch, HostUnreachable
from zfs_backend.hosts import SSHHost, connect

if TYPE_CHECKING:
    from conftest import Sshd  # the fixture type only; not imported at run time


def make_host(sshd: Sshd, **kw: Any) -> SSHHost:
    args: dict[str, Any] = {
        "port": sshd.port,
        "key_file": sshd.key_file,
        "known_hosts": sshd.known_hosts,
        "cipher": "aes128-gcm@openssh.com",
        "connect_timeout": 5,
    }
    args.update(kw)
    return SSHHost("node1", "127.0.0.1", **args)


@pytest.fixture
def host(sshd: Sshd) -> Iterator[SSHHost]:
    h = make_host(sshd)
    yield h
    h.close()


def test_echo(host: SSHHost) -> None:
    res = host.run(["echo", "hi"])
    assert (res.returncode, res.stdout, res.stderr) == (0, b"hi\n", b"")


def test_arguments_are_quoted_not_interpreted(host: SSHHost) -> None:
    args = ["a b", "$HOME", "'q'", '"d"', "x;rm -rf /nonexistent", "`id`", "*", ""]
    res = host.run(["printf", "%s|", *args])
    assert res.text == "|".join(args) + "|"


def test_exit_code_without_check(host: SSHHost) -> None:
    assert host.run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_failure_carries_stderr(host: SSHHost) -> None:
    with pytest.raises(CommandFailed) as ei:
        host.run(["sh", "-c", "echo oops >&2; exit 4"])
    e = ei.value
    assert (e.node, e.returncode, e.argv) == ("node1", 4, ["sh", "-c", "echo oops >&2; exit 4"])
    assert e.stderr == "oops\n"
    assert "oops" in str(e) and "\n" not in str(e)


def test_command_not_found(host: SSHHost) -> None:
    res = host.run(["/nonexistent/binary"], check=False)
    assert res.returncode == 127


def test_big_stdout_and_stderr_no_deadlock(host: SSHHost) -> None:
    res = host.run(["head", "-c", "20000000", "/dev/zero"], timeout=60)
    assert len(res.stdout) == 20_000_000
    res = host.run(
        ["sh", "-c", "head -c 5000000 /dev/zero >&2; head -c 5000000 /dev/zero; echo done >&2"], timeout=60
    )
    assert len(res.stdout) == 5_000_000
    assert len(res.stderr) == 5_000_005 and res.stderr.endswith(b"done\n")


def test_input_is_piped(host: SSHHost) -> None:
    data = os.urandom(5_000_000)
    assert host.run(["cat"], input=data, timeout=60).stdout == data
    # no input: stdin is at EOF, not left open
    assert host.run(["cat"], timeout=10).stdout == b""


def test_input_not_read_by_command(host: SSHHost) -> None:
    res = host.run(["head", "-c", "3"], input=os.urandom(10_000_000), timeout=30)
    assert len(res.stdout) == 3


def test_timeout_closes_and_kills(host: SSHHost) -> None:
    marker = "7.3141"  # a unique sleep duration to find the remote process by
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as ei:
        host.run(["sleep", marker], timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert ei.value.timeout == 0.5
    # the connection still works, and the remote sleep was signalled (best effort "signal" request)
    until(
        "the remote command to end after its timeout",
        lambda: not subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).stdout,
        3,
        interval=0.1,
    )
    assert host.run(["echo", "after"]).text == "after\n"


def test_connection_is_reused(host: SSHHost) -> None:
    host.run(["true"])
    t1 = host.transport
    host.run(["true"])
    assert host.transport is t1
    assert host.connect_count == 1


def test_reconnects_once_after_transport_died(host: SSHHost) -> None:
    host.run(["true"])
    t1 = host.transport
    assert t1 is not None
    t1.close()
    assert host.run(["echo", "again"]).text == "again\n"
    assert host.connect_count == 2 and host.transport is not t1


def test_close_is_idempotent(host: SSHHost) -> None:
    host.run(["true"])
    host.close()
    host.close()
    assert host.transport is None
    assert host.run(["true"]).returncode == 0  # lazily reconnects


def test_concurrent_runs_share_one_connection(host: SSHHost) -> None:
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(host.run(["echo", str(i)]).stdout)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(results) == sorted(f"{i}\n".encode() for i in range(8))
    assert host.connect_count == 1


def test_session_line_protocol(host: SSHHost) -> None:
    chan = host.session(["cat"])
    try:
        w = chan.makefile_stdin("wb")
        r = chan.makefile("rb")
        for i in range(3):
            w.write(json.dumps({"id": i, "op": "ping"}).encode() + b"\n")
            w.flush()
            assert json.loads(r.readline()) == {"id": i, "op": "ping"}
        chan.shutdown_write()
        assert r.readline() == b""
        assert chan.recv_exit_status() == 0
    finally:
        chan.close()


def test_unknown_host_key_rejected(sshd: Sshd) -> None:
    with make_host(sshd, known_hosts=sshd.empty_known_hosts) as h, pytest.raises(HostKeyMismatch) as ei:
        h.run(["true"])
    msg = str(ei.value)
    assert "node1" in msg and str(sshd.empty_known_hosts) in msg and "\n" not in msg


def test_changed_host_key_rejected(sshd: Sshd) -> None:
    with make_host(sshd, known_hosts=sshd.wrong_known_hosts) as h, pytest.raises(HostKeyMismatch) as ei:
        h.run(["true"])
    msg = str(ei.value)
    assert "node1" in msg and str(sshd.wrong_known_hosts) in msg and "\n" not in msg


def test_missing_known_hosts_file(sshd: Sshd, tmp_path: Path) -> None:
    with make_host(sshd, known_hosts=tmp_path / "nope") as h, pytest.raises(HostKeyMismatch, match="nope"):
        h.run(["true"])


@pytest.mark.parametrize("which", ["wrong_known_hosts", "empty_known_hosts"])
def test_openssh_rejects_bad_host_key(sshd: Sshd, which: str) -> None:
    h = make_host(sshd, known_hosts=getattr(sshd, which))
    proc = subprocess.run(h.stream_argv(["echo", "hi"]), capture_output=True, timeout=30)
    assert proc.returncode == 255
    assert proc.stdout == b""
    assert b"host key" in proc.stderr.lower()


def test_wrong_client_key_is_unreachable(sshd: Sshd) -> None:
    with make_host(sshd, key_file=sshd.other_key_file) as h, pytest.raises(HostUnreachable) as ei:
        h.run(["true"])
    assert "authentication" in str(ei.value)


def test_stream_argv_pipes_bytes(sshd: Sshd) -> None:
    h = make_host(sshd)
    data = os.urandom(8 << 20)
    proc = subprocess.run(h.stream_argv(["cat"]), input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    proc = subprocess.run(h.stream_argv(["sha256sum"]), input=data, capture_output=True, timeout=60)
    assert proc.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_stream_argv_quoting_and_exit_code(sshd: Sshd) -> None:
    h = make_host(sshd)
    proc = subprocess.run(h.stream_argv(["printf", "%s|", "a b", "$HOME", "-x"]), capture_output=True)
    assert proc.stdout == b"a b|$HOME|-x|"
    proc = subprocess.run(h.stream_argv(["sh", "-c", "exit 7"]), capture_output=True)
    assert proc.returncode == 7


def test_spawn_streams(sshd: Sshd) -> None:
    h = make_host(sshd)
    p = h.spawn(["wc", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, err = p.communicate(b"x" * 12345, timeout=30)
    assert (p.returncode, out.strip()) == (0, b"12345"), err


def test_control_master_reuse(sshd: Sshd) -> None:
    cdir = Path(tempfile.mkdtemp(prefix="zb-ctl-", dir="/tmp")) / "ctl"  # sun_path is short
    h = make_host(sshd, control_dir=cdir)
    try:
        data = os.urandom(1 << 20)
        for _ in range(2):
            proc = subprocess.run(h.stream_argv(["cat"]), input=data, capture_output=True, timeout=30)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == data
        assert (cdir.stat().st_mode & 0o777) == 0o700
        sockets = list(cdir.iterdir())
        assert len(sockets) == 1
        check = subprocess.run(
            ["ssh", *h.ssh_options(), "-O", "check", "-l", "root", "127.0.0.1"], capture_output=True
        )
        assert check.returncode == 0, check.stderr
    finally:
        h.stop_master()
    until("the control directory to empty", lambda: not list(cdir.iterdir()), 5, interval=0.05)
    shutil.rmtree(cdir.parent)


def test_inventory_to_running_command(sshd: Sshd, tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yml"
    inv.write_text(
        f"""\
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: {sshd.key_file}
    zfs_backend_known_hosts: {sshd.known_hosts}
  children:
    storage_nodes:
      hosts:
        node1: {{ansible_host: 127.0.0.1, ansible_port: {sshd.port}}}
"""
    )
    settings = load_settings({"ZFS_BACKEND_INVENTORY": str(inv)})
    with connect("node1", settings) as h:
        assert h.run(["echo", "from-inventory"]).text == "from-inventory\n"
        proc = subprocess.run(h.stream_argv(["cat"]), input=b"abc", capture_output=True, timeout=30)
        assert (proc.returncode, proc.stdout) == (0, b"abc"), proc.stderr


def test_paramiko_negotiates_preferred_algorithms(host: SSHHost) -> None:
    host.run(["true"])
    t = host.transport
    assert t is not None
    ciphers = (t.local_cipher, t.remote_cipher)  # type: ignore[attr-defined]
    assert ciphers == ("aes128-gcm@openssh.com", "aes128-gcm@openssh.com")
    assert t.get_security_options().kex[0] == "curve25519-sha256@libssh.org"
    assert t.get_remote_server_key().get_name() == "ssh-ed25519"
