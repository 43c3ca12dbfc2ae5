"""SSHHost construction, validation and the OpenSSH argv (no network)."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

from zfs_backend.config import load_settings
from zfs_backend.errors import HostUnreachable, InvalidName, UsageError
from zfs_backend.hosts import Host, SSHHost, known_hosts_name
from zfs_backend.hosts.node_spec import NodeSpec


def host(**kw: object) -> SSHHost:
    args: dict[str, object] = {
        "key_file": "/k/id_ed25519",
        "known_hosts": "/k/known_hosts",
        "port": 2222,
        "cipher": "aes128-gcm@openssh.com",
    }
    args.update(kw)
    return SSHHost("node1", "198.18.0.11", **args)  # type: ignore[arg-type]


def opt_values(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-o"]


def test_is_a_host() -> None:
    assert isinstance(host(), Host)


def test_stream_argv_strict_options() -> None:
    argv = host().stream_argv(["zfs", "recv", "-F", "tank/a b"])
    assert argv[0] == "ssh"
    opts = opt_values(argv)
    assert "StrictHostKeyChecking=yes" in opts
    assert "BatchMode=yes" in opts
    assert "UserKnownHostsFile=/k/known_hosts" in opts
    assert "GlobalKnownHostsFile=/dev/null" in opts
    assert "IdentitiesOnly=yes" in opts
    assert "Ciphers=aes128-gcm@openssh.com" in opts
    assert "ServerAliveInterval=5" in opts and "ServerAliveCountMax=3" in opts
    assert "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org" in opts
    assert "ConnectTimeout=10" in opts
    assert not any("StrictHostKeyChecking=no" in a or "accept-new" in a for a in argv)
    assert not any(o.startswith("Control") for o in opts)  # no control dir: no multiplexing
    assert argv[argv.index("-i") + 1] == "/k/id_ed25519"
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-F") + 1] == "/dev/null"
    assert argv[-5:] == ["-l", "root", "198.18.0.11", "--", "zfs recv -F 'tank/a b'"]
    assert shlex.split(argv[-1]) == ["zfs", "recv", "-F", "tank/a b"]


def test_stream_argv_control_master(tmp_path: Path) -> None:
    cdir = tmp_path / "c"
    h = host(control_dir=cdir, control_persist=30)
    opts = opt_values(h.stream_argv(["true"]))
    assert "ControlMaster=auto" in opts
    assert f"ControlPath={h.control_path()}" in opts
    assert Path(h.control_path()).parent == cdir and len(Path(h.control_path()).name) == 16
    assert "ControlPersist=30" in opts
    assert (cdir.stat().st_mode & 0o777) == 0o700
    assert not any(o.startswith("Control") for o in opt_values(h.stream_argv(["true"], multiplex=False)))


def test_control_dir_created_private_with_its_parents(tmp_path: Path) -> None:
    cdir = tmp_path / "run" / "c"
    host(control_dir=cdir).stream_argv(["true"])
    assert (cdir.stat().st_mode & 0o777) == (cdir.parent.stat().st_mode & 0o777) == 0o700


def test_existing_wider_control_dir_refused_not_chmodded(tmp_path: Path) -> None:
    cdir = tmp_path / "c"
    cdir.mkdir(mode=0o755)
    cdir.chmod(0o755)
    with pytest.raises(HostUnreachable, match="mode 0755"):
        host(control_dir=cdir).stream_argv(["true"])
    assert (cdir.stat().st_mode & 0o777) == 0o755


def test_control_dir_too_long() -> None:
    with pytest.raises(UsageError, match="too long"):
        host(control_dir="/tmp/" + "x" * 70)


def test_cipher_default_from_settings() -> None:
    s = load_settings({"ZFS_BACKEND_SSH_CIPHER": "chacha20-poly1305@openssh.com"})
    h = SSHHost("node1", "127.0.0.1", key_file="/k", known_hosts="/kh", settings=s)
    assert "Ciphers=chacha20-poly1305@openssh.com" in opt_values(h.stream_argv(["true"]))
    assert load_settings({}).ssh_cipher == "aes128-gcm@openssh.com"


def test_from_spec() -> None:
    spec = NodeSpec("node2", "198.18.0.12", 22, "admin", Path("/k/id"), Path("/k/kh"), None)
    h = SSHHost.from_spec(spec, load_settings({}), keepalive=7)
    assert (h.name, h.address, h.port, h.user, h.keepalive) == ("node2", "198.18.0.12", 22, "admin", 7)
    assert h.host_key_name == "198.18.0.12"
    assert "ServerAliveInterval=7" in opt_values(h.stream_argv(["true"]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Node1"),
        ("name", "-node"),
        ("name", "node_1"),
        ("name", ""),
        ("address", "-oProxyCommand=x"),
        ("address", "a b"),
        ("address", ""),
        ("user", "root;id"),
        ("user", "-l"),
        ("port", 0),
        ("port", 70000),
        ("cipher", "aes128-ctr -oProxyCommand=x"),
    ],
)
def test_rejects_bad_parameters(field: str, value: object) -> None:
    args: dict[str, object] = {"name": "node1", "address": "127.0.0.1"}
    args[field] = value
    name, address = args.pop("name"), args.pop("address")
    with pytest.raises(InvalidName):
        SSHHost(name, address, key_file="/k", known_hosts="/kh", **args)  # type: ignore[arg-type]


def test_accepts_ipv6_and_dns() -> None:
    assert SSHHost("n", "::1", key_file="/k", known_hosts="/kh", cipher="x").host_key_name == "::1"
    assert SSHHost("n", "node1.example.org", key_file="/k", known_hosts="/kh", cipher="x").port == 22


def test_known_hosts_name() -> None:
    assert known_hosts_name("10.0.0.1", 22) == "10.0.0.1"
    assert known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_argv_must_be_a_list() -> None:
    with pytest.raises(UsageError):
        host().stream_argv("zfs list")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        host().run("zfs list")  # type: ignore[arg-type]


def test_unreachable_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kh = tmp_path / "kh"
    kh.write_text("")
    h = SSHHost("node1", "127.0.0.1", port=port, key_file=tmp_path / "k", known_hosts=kh, cipher="x")
    with pytest.raises(HostUnreachable) as ei:
        h.run(["true"])
    msg = str(ei.value)
    assert msg.startswith(f"node1: cannot connect to 127.0.0.1:{port}: ") and "\n" not in msg
    h.close()
    h.close()
