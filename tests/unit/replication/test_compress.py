"""``--compress``: the codec's validation, the source's ``pack`` wrapper, what ``peer-exec`` lets through
for a compressed stream (and that its head check sees the decompressed stream), and the refusal before
anything starts when the destination has no codec."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.agent.peer_exec import Refused, parse_request
from zfs_backend.errors import UsageError
from zfs_backend.replication import compress as C
from zfs_backend.replication.request import Request

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))  # --import-mode=importlib
from test_peer_exec import begin_record, xdr_props

needs_zstd = pytest.mark.skipif(
    shutil.which("zstd") is None, reason="needs zstd (Debian package zstd; scripts/bootstrap installs it)"
)
PARAMS = {"snapshot": "tank/a@s1", "source_node": "node1", "destination_node": "node2"}
PARAMS["destination"] = "tank/a"


@pytest.mark.parametrize(("value", "want"), [(None, None), (False, None), (True, "zstd"), ("zstd", "zstd")])
def test_codec_values(value: object, want: str | None) -> None:
    assert C.validate_codec(value) == want


@pytest.mark.parametrize("bad", ["gzip", "zstd -19", "", 1, ["zstd"]])
def test_a_bad_codec_is_refused_by_the_request(bad: object) -> None:
    with pytest.raises(UsageError, match="compress must be one of zstd"):
        Request.from_params({**PARAMS, "compress": bad})


def test_the_request_carries_the_codec() -> None:
    req = Request.from_params({**PARAMS, "compress": "zstd"})
    assert req.compress == "zstd" and Request.from_params(req.to_params()) == req
    assert "compress" not in Request.from_params(PARAMS).to_params()  # unchanged params without it


@pytest.mark.parametrize(
    ("command", "want"),
    [
        ("zfs-backend unpack zstd zfs receive tank/r", ("zfs+zstd", ["receive", "tank/r"])),
        ("zfs-backend unpack zstd zfs recv -s -u tank/r", ("zfs+zstd", ["receive", "-s", "-u", "tank/r"])),
    ],
)
def test_peer_exec_lets_a_compressed_receive_through(command: str, want: tuple[str, list[str]]) -> None:
    assert parse_request(command) == want
    assert parse_request(" ".join(C.unpack_argv("zstd", ["zfs", *want[1]]))) == want


@pytest.mark.parametrize(
    "command",
    [
        "zfs-backend unpack gzip zfs receive tank/r",
        "zfs-backend unpack zstd zfs receive -F tank/r",
        "zfs-backend unpack zstd zfs send tank/r@s",
        "zfs-backend unpack zstd sh -c id",
        "zfs-backend unpack zstd",
        "zfs-backend unpack zstd zfs",
    ],
)
def test_peer_exec_refuses_anything_else_compressed(command: str) -> None:
    with pytest.raises(Refused):
        parse_request(command)


@needs_zstd
def test_pack_then_unpack_hands_every_byte_on(tmp_path: Path) -> None:
    data = (os.urandom(1024) + bytes(3072)) * 2048  # 8 MiB, compresses about 4:1
    out = tmp_path / "out"
    wire = tmp_path / "wire"
    r = subprocess.run(C.pack_argv("zstd", ["sh", "-c", f"cat > {wire}"]), input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert wire.stat().st_size < len(data) / 3
    code = (
        "import os, sys; from zfs_backend.replication.compress import start_unpack\n"
        f"start_unpack('zstd'); os.execv('/bin/sh', ['sh', '-c', 'cat > {out}'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], input=wire.read_bytes(), capture_output=True)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


@needs_zstd
def test_the_head_check_sees_the_decompressed_stream(tmp_path: Path) -> None:
    wire = tmp_path / "wire"
    bad = begin_record(xdr_props(mountpoint="/etc/cron.d")) + b"x" * 1000
    subprocess.run(C.pack_argv("zstd", ["sh", "-c", f"cat > {wire}"]), input=bad, check=True)
    out = tmp_path / "received"
    code = (
        "import os, sys; from zfs_backend.agent.peer_exec import _relay_receive, Refused\n"
        "from zfs_backend.replication.compress import start_unpack\n"
        "pid = start_unpack('zstd')\n"
        "try:\n"  # the stand-in keeps what it read only once it read the whole stream, as a receive
        f"    sys.exit(_relay_receive('/bin/sh', ['-c', 'cat > {out}.part && mv {out}.part {out}'], pid))\n"
        "except Refused as e:\n"
        "    print(e, file=sys.stderr)\n"
        "    try:\n"
        "        os.waitpid(pid, os.WNOHANG)\n"
        "    except ChildProcessError:\n"
        "        sys.exit(126)  # the decompressor was killed and reaped with the receiver\n"
        "    sys.exit(1)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], input=wire.read_bytes(), capture_output=True)
    assert r.returncode == 126 and b"mountpoint" in r.stderr, r.stderr
    assert not out.exists()


@needs_zstd
def test_a_corrupt_compressed_stream_fails_the_receive(tmp_path: Path) -> None:
    """zstd -d refusing its input (not zstd data) is the relay's status, and the receiver gets nothing
    it could commit."""
    out = tmp_path / "received"
    code = (
        "import sys; from zfs_backend.agent.peer_exec import _relay_receive, Refused\n"
        "from zfs_backend.replication.compress import start_unpack\n"
        "pid = start_unpack('zstd')\n"
        "try:\n"
        f"    sys.exit(_relay_receive('/bin/sh', ['-c', 'cat > {out}.part && mv {out}.part {out}'], pid))\n"
        "except Refused as e:\n"
        "    print(e, file=sys.stderr); sys.exit(126)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], input=os.urandom(4096), capture_output=True)
    assert r.returncode != 0
    assert not out.exists()


@needs_zstd
def test_pack_reports_the_consumer_failing() -> None:
    r = subprocess.run(C.pack_argv("zstd", ["sh", "-c", "echo refused >&2; exit 126"]), input=b"x" * 100000)
    assert r.returncode == 126


class _Peer:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def call(self, op: str, **args: Any) -> Any:
        assert op == "ping"
        return self.answer


@needs_zstd
def test_refused_before_it_starts_when_the_destination_lacks_the_codec() -> None:
    C.check_codec("zstd", lambda n: _Peer({"codecs": ["zstd"]}), "node2")
    answers: list[dict[str, Any]] = [{"codecs": []}, {}]  # no zstd there; an agent older than --compress
    for peer in map(_Peer, answers):
        with pytest.raises(UsageError, match="node2 has no zstd to decompress with"):
            C.check_codec("zstd", {"node2": peer}.__getitem__, "node2")


def test_a_node_without_the_tool_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "_PATHS", ("/nonexistent",))
    assert C.available_codecs() == []
    with pytest.raises(C.CodecMissing, match="zstd is not installed on this node"):
        C.codec_argv("zstd", decompress=True)
    with pytest.raises(UsageError, match="cannot compress: zstd is not installed"):
        C.check_codec("zstd", lambda n: _Peer({"codecs": ["zstd"]}), "node2")


def _sync(tmp_path: Path, **extra: Any) -> Any:
    from zfs_backend.activity.core import ActivityContext
    from zfs_backend.activity.report import ActivityRecord
    from zfs_backend.activity.store import ActivityStore, new_activity_id
    from zfs_backend.kinds.standby import PREFIX, StandbySync

    params = {"dataset": "tank/v", "destination_node": "node2", "base": f"{PREFIX}1", **extra}
    rec = ActivityRecord(id=new_activity_id(), kind="standby-sync", node="node1", params=params)
    return StandbySync(rec, ActivityContext(store=ActivityStore(tmp_path / "a.db"), node="node1"))


def test_the_standby_sync_takes_a_codec(tmp_path: Path) -> None:
    assert _sync(tmp_path).compress is None
    assert _sync(tmp_path, compress="zstd").compress == "zstd"
    with pytest.raises(UsageError, match="compress must be one of zstd"):
        _sync(tmp_path, compress="gzip")


def test_every_stream_of_a_replication_is_packed_when_asked() -> None:
    """The single stream's consumer and each stream of a parallel tree come from one place
    (``RestartOps._recv_endpoint``): with ``compress`` packed after the relay and unpacked by the
    peer's ``peer-exec``; without it the plain receive through the peer."""
    from types import SimpleNamespace

    from zfs_backend.hosts.local import LocalHost
    from zfs_backend.replication.restart import RestartOps

    class Peer(LocalHost):
        stream_multiplex = False

        def stream_argv(self, argv: Sequence[str]) -> list[str]:
            return ["ssh", "node2", "--", *argv]

    ops = RestartOps()
    ops._local, ops._peer = LocalHost("node1"), Peer("node2")  # type: ignore[assignment]
    recv = ["zfs", "receive", "-s", "tank/r"]
    ops.request = SimpleNamespace(compress="zstd", transport="ssh")  # type: ignore[assignment]
    packed = ops._recv_endpoint(recv)
    assert packed.host is ops._local
    assert packed.argv[packed.argv.index("zstd") :] == [
        *["zstd", "--", "ssh", "node2", "--"],
        *["zfs-backend", "unpack", "zstd", *recv],
    ]
    ops.request = SimpleNamespace(compress=None, transport="ssh")  # type: ignore[assignment]
    plain = ops._recv_endpoint(recv)
    assert plain.host is ops._peer and plain.argv == recv and plain.counts_network
