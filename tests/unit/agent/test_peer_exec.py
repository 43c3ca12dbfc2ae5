"""zfs-backend peer-exec, the forced command of peer nodes' keys: what it lets through, and how it refuses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zfs_backend.agent.peer_exec import REFUSED, Refused, parse_request


@pytest.mark.parametrize(
    ("command", "want"),
    [
        ("zfs-backend rpc --peer", ("rpc-peer", [])),
        ("/opt/zfs-backend/bin/zfs-backend rpc --peer", ("rpc-peer", [])),
        ("zfs receive tank/r", ("zfs", ["receive", "tank/r"])),
        ("zfs recv -s tank/r/child", ("zfs", ["receive", "-s", "tank/r/child"])),
        ("zfs receive -s -o readonly=on tank/r", ("zfs", ["receive", "-s", "-o", "readonly=on", "tank/r"])),
        ("zfs receive 'tank/r'", ("zfs", ["receive", "tank/r"])),
    ],
)
def test_what_replication_needs_passes(command: str, want: tuple[str, list[str]]) -> None:
    assert parse_request(command) == want


@pytest.mark.parametrize(
    "command",
    [
        None,
        "",
        "id",
        "sh -c id",
        "zfs-backend rpc",  # the full agent socket: the controller's key only
        "zfs-backend agent",
        "zfs destroy -r tank",
        "zfs receive -F tank/r",  # never -F
        "zfs receive -o mountpoint=/etc tank/r",
        "zfs receive -d tank",
        "zfs receive tank/r tank/s",
        "zfs receive 'tank/r; id'",
        "zfs receive tank/r\\;id",
        "zfs send tank/r@s",
        "zfs receive -x readonly tank/r",
        'zfs receive "unterminated',
        "zfs receive -- -tank",
    ],
)
def test_anything_else_is_refused(command: str | None) -> None:
    with pytest.raises(Refused):
        parse_request(command)


def test_the_command_refuses_in_one_line_with_126() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "zfs_backend.cli.main", "peer-exec"],
        env={
            "SSH_ORIGINAL_COMMAND": "zfs destroy tank",
            "SSH_CLIENT": "198.18.0.11 4242 22",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == REFUSED
    assert r.stderr.count("\n") == 1 and "refused by the peer (198.18.0.11)" in r.stderr
    assert r.stdout == ""
