"""Settings read from the environment: numeric ones are bounded (one line naming the variable, never a
traceback nor a 400-digit value echoed back); the replica roots (what a node lets peers replicate under)."""

from __future__ import annotations

import pytest

from zfs_backend.cli.main import main
from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ZFS_BACKEND_SSH_PERSIST", "9" * 400),
        ("ZFS_BACKEND_SSH_PERSIST", "9" * 5000),  # beyond int()'s digit limit
        ("ZFS_BACKEND_SSH_PERSIST", "-1"),
        ("ZFS_BACKEND_SSH_PERSIST", "1e3"),
        ("ZFS_BACKEND_SSH_PERSIST", str(8 * 86400)),
        ("ZFS_BACKEND_CINDER_PORT_BASE", "70000"),
        ("ZFS_BACKEND_CLAIM_LEASE_S", "60"),  # shorter than two of the source's renewals
        ("ZFS_BACKEND_CLAIM_LEASE_S", "86401"),
        ("ZFS_BACKEND_CLAIM_LEASE_S", "5m"),
    ],
)
def test_bad_numbers_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key) as e:
        load_settings({key: value})
    assert len(str(e.value)) < 120


def test_good_numbers() -> None:
    s = load_settings({"ZFS_BACKEND_SSH_PERSIST": "0", "ZFS_BACKEND_CINDER_PORT_BASE": "24000"})
    assert (s.ssh_persist_s, s.cinder_port_base) == (0, 24000)
    assert load_settings({}).ssh_persist_s == 600
    assert load_settings({}).claim_lease_s == 300
    assert load_settings({"ZFS_BACKEND_CLAIM_LEASE_S": "120"}).claim_lease_s == 120


def test_through_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZFS_BACKEND_SSH_PERSIST", "9" * 400)
    rc = main(["activity", "list", "--node", "node1"])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1 and "ZFS_BACKEND_SSH_PERSIST" in err and "Traceback" not in err


def test_replica_roots_unset_means_none() -> None:
    assert load_settings({}).replica_roots == ()
    assert load_settings({"ZFS_BACKEND_REPLICA_ROOTS": " , "}).replica_roots == ()


def test_replica_roots_are_comma_separated_datasets() -> None:
    env = {"ZFS_BACKEND_REPLICA_ROOTS": "tank/replicas, tank/volumes"}
    assert load_settings(env).replica_roots == ("tank/replicas", "tank/volumes")


@pytest.mark.parametrize("bad", ["/tank", "tank/../etc", "-tank", "tank//r", "tank r"])
def test_a_bad_root_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="ZFS_BACKEND_REPLICA_ROOTS"):
        load_settings({"ZFS_BACKEND_REPLICA_ROOTS": bad})


@pytest.mark.parametrize("env", [{}, {"ZFS_BACKEND_AGENT_SOCKET": "/srv/zb/agent.sock"}])
def test_the_forced_command_finds_the_peer_socket_where_the_agent_listens(env: dict[str, str]) -> None:
    """peer-exec reads the socket path without config (node_sockets); both must agree."""
    from pathlib import Path

    from zfs_backend.node_sockets import agent_socket_path, peer_socket_path

    s = load_settings(env)
    assert Path(agent_socket_path(env)) == s.agent_socket
    assert Path(peer_socket_path(env)) == s.peer_socket
