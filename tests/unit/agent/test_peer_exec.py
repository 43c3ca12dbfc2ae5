"""zfs-backend peer-exec, the forced command of peer nodes' keys: what it lets through, and how it refuses."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

import pytest

from zfs_backend.agent.peer_exec import (
    REFUSED,
    Refused,
    _receive_argv_for,
    check_stream_head,
    parse_request,
)


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
        [sys.executable, "-m", "zfs_backend.cli.main", "peer-exec", "--peer", "node2"],
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


MAGIC = 0x2F5BACBAC


def begin_record(payload: bytes = b"", order: str = "<", drr_type: int = 0, magic: int = MAGIC) -> bytes:
    """A ``DRR_BEGIN`` record as ``zfs send`` writes it (312 bytes), followed by its payload."""
    head = struct.pack(
        order + "IIQQQIIQQ256s",
        drr_type,
        len(payload),
        magic,
        1 << 2,
        1700000000,
        2,
        0,
        77,
        0,
        b"tank/src@s1",
    )
    assert len(head) == 312
    return head + payload


def xdr_props(**props: str) -> bytes:
    """Enough of an XDR nvlist (names as length-prefixed strings) to carry property names."""
    out = b""
    for k, v in props.items():
        for s in (k.encode(), v.encode()):
            out += struct.pack(">I", len(s)) + s + b"\0" * (-len(s) % 4)
    return out


HEAVY = ("argparse", "dataclasses", "inspect", "pathlib", "subprocess")


def test_the_forced_command_starts_without_the_heavy_modules() -> None:
    """peer-exec runs once per replication stream, which waits for it: its imports (through the
    command line's entry point, to the receive and the peer session) leave out argparse and
    dataclasses (inspect, ast), which cost it more than its own work, and subprocess (~16 ms: the
    receive is started with fork/execv)."""
    code = (
        "import sys\n"
        "import zfs_backend.cli.main, zfs_backend.agent.peer_exec, zfs_backend.rpc.rpc_bridge\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_the_compressed_form_starts_without_the_heavy_modules(tmp_path) -> None:
    """The same for a stream compressed on the wire (``zfs-backend unpack zstd zfs receive``): the
    request parsed and the decompressor started (a stand-in on the codec's path, ``cat``) pull in none
    of them either, and the decompressed bytes reach the receiver."""
    tool = tmp_path / "zstd"
    tool.write_text("#!/bin/sh\nexec cat\n")
    tool.chmod(0o755)
    code = (
        "import os, sys\n"
        "import zfs_backend.cli.main\n"
        "from zfs_backend.agent.peer_exec import parse_request, _relay_receive\n"
        "from zfs_backend.replication import compress\n"
        f"compress._PATHS = ({str(tmp_path)!r},)\n"
        "what, argv = parse_request('zfs-backend unpack zstd zfs receive -s tank/r')\n"
        "assert (what, argv) == ('zfs+zstd', ['receive', '-s', 'tank/r']), (what, argv)\n"
        "pid = compress.start_unpack('zstd')\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
        f"sys.exit(_relay_receive('/bin/sh', ['-c', 'cat > {tmp_path}/got'], pid))\n"
    )
    stream = begin_record(xdr_props(compression="lz4")) + b"data" * 1000
    r = subprocess.run([sys.executable, "-c", code], input=stream, capture_output=True, check=False)
    assert r.returncode == 0 and r.stderr.strip() == b"[]", r.stderr
    assert (tmp_path / "got").read_bytes() == stream


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_plain_or_property_stream_without_mounts_passes(order: str) -> None:
    check_stream_head(begin_record(order=order))
    check_stream_head(begin_record(xdr_props(compression="lz4", **{"zfs_backend:source": "node2:tank/x"})))


@pytest.mark.parametrize("prop", ["mountpoint", "sharenfs", "sharesmb"])
def test_a_stream_that_places_a_mount_or_share_is_refused(prop: str) -> None:
    with pytest.raises(Refused, match=f"carries '{prop}'"):
        check_stream_head(begin_record(xdr_props(compression="lz4", **{prop: "/etc"})))


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"", "too short"),
        (begin_record(magic=12345), "no BEGIN record"),
        (begin_record(drr_type=1), "not BEGIN"),
    ],
)
def test_what_is_not_a_stream_is_refused(head: bytes, why: str) -> None:
    with pytest.raises(Refused, match=why):
        check_stream_head(head)


def test_receive_flags_follow_the_dialect() -> None:
    openzfs = {"recv_no_mount": True, "recv_properties": True}
    argv, check = _receive_argv_for(["receive", "-s", "tank/r"], openzfs)
    assert not check
    assert argv == ["receive", "-s", "-u", "-x", "mountpoint", "-x", "sharenfs", "-x", "sharesmb", "tank/r"]
    argv, check = _receive_argv_for(["receive", "tank/r"], {"recv_no_mount": False, "recv_properties": False})
    assert check and argv == ["receive", "tank/r"]  # zfs-fuse: the stream's head is checked instead


def _relay(stream: bytes, tmp_path) -> subprocess.CompletedProcess[bytes]:
    """Relay ``stream`` to a stand-in for ``zfs receive`` that keeps what it read only once it read
    the whole stream (as a receive commits nothing before its END record)."""
    out = tmp_path / "received"
    code = (
        "import sys; from zfs_backend.agent.peer_exec import _relay_receive, Refused\n"
        "try:\n"
        f"    sys.exit(_relay_receive('/bin/sh', ['-c', 'cat > {out}.part && mv {out}.part {out}']))\n"
        "except Refused as e:\n"
        "    print(e, file=sys.stderr); sys.exit(126)\n"
    )
    return subprocess.run([sys.executable, "-c", code], input=stream, capture_output=True, check=False)


def test_the_relay_hands_every_byte_on_after_the_check(tmp_path) -> None:
    stream = begin_record(xdr_props(compression="lz4")) + os.urandom(3 << 20) + b"end"
    r = _relay(stream, tmp_path)
    assert r.returncode == 0, r.stderr
    got = (tmp_path / "received").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(stream).digest()


def test_a_refused_stream_reaches_no_receiver(tmp_path) -> None:
    """The receiver is started before the head is checked (its start-up overlaps the stream's first
    bytes); a refused head kills it before it read a byte, so it never completes a receive."""
    r = _relay(begin_record(xdr_props(mountpoint="/etc/cron.d")) + b"x" * 1000, tmp_path)
    assert r.returncode == 126 and b"mountpoint" in r.stderr
    assert not (tmp_path / "received").exists()
    part = tmp_path / "received.part"
    assert not part.exists() or part.read_bytes() == b""
