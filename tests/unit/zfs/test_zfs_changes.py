"""head_changes: OpenZFS (written, zfs diff) and zfs-fuse (a probe snapshot and its send stream)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from zfs_backend.errors import ZfsBackendError
from zfs_backend.hosts.fake import FakeHost
from zfs_backend.zfs.api import Zfs
from zfs_backend.zfs.changes import PROBE_PREFIX, head_changes
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_dataset, parse_snapshot

STREAMS = Path(__file__).parent / "data" / "streams"
SINCE = int((STREAMS / "base_creation.txt").read_text())
DS = parse_dataset("tank/r")
BASE = Snapshot(parse_snapshot("tank/r@s1"), guid=1, createtxg=10, used=0, referenced=1 << 20, creation=SINCE)


def openzfs(written: str, diff: str, diff_rc: int = 0, diff_err: str = "") -> tuple[Zfs, FakeHost]:
    def reply(argv: tuple[str, ...], _stdin: bytes | None) -> tuple[int, str, str]:
        if argv[:2] == ("zfs", "get"):
            return 0, f"written\t{written}\n", ""
        if argv[:2] == ("zfs", "diff"):
            assert argv[2:] == ("-H", "tank/r@s1", "tank/r")
            return diff_rc, diff, diff_err
        return 99, "", f"unexpected {argv}"

    host = FakeHost(reply)
    return Zfs(host, dialect=OPENZFS_2), host


def test_openzfs_nothing_written_is_clean_without_a_diff() -> None:
    z, host = openzfs("0", "")
    assert head_changes(z, DS, BASE).clean
    assert not any(c[:2] == ("zfs", "diff") for c in host.calls)


def test_openzfs_written_but_no_diff_is_noise() -> None:
    z, _ = openzfs("8192", "")
    got = head_changes(z, DS, BASE)
    assert got.noisy and not got.changed


def test_openzfs_diff_lines_are_real_changes() -> None:
    z, _ = openzfs("524288", "M\t/tank/r/\n+\t/tank/r/new\n")
    got = head_changes(z, DS, BASE)
    assert got.changed and got.bytes == 524288
    assert got.detail == "M /tank/r/ and 1 more"


def test_openzfs_an_unmounted_head_with_writes_is_a_real_change_without_a_diff() -> None:
    """OpenZFS 2.3.2 (the Vagrant tier) diffs only a mounted dataset: discard unmounts the destination
    before it measures, and ``zfs diff`` then exits 1 "Cannot diff an unmounted snapshot" (an explicit
    ``--rollback-destination`` failed on it). Unmounted, nothing reads it (no atime noise): what was
    written is a change, counted from ``written``, never passed for noise."""
    err = "Cannot diff an unmounted snapshot: operation not applicable to datasets of this type\n"
    z, _ = openzfs("12288", "", diff_rc=1, diff_err=err)
    got = head_changes(z, DS, BASE)
    assert got.changed and not got.noisy and got.bytes == 12288
    assert got.detail == "12288 bytes written after @s1 (unmounted: not diffed)"


def test_openzfs_another_diff_failure_is_not_taken_for_a_change() -> None:
    z, _ = openzfs("12288", "", diff_rc=1, diff_err="cannot open 'tank/r': dataset does not exist\n")
    with pytest.raises(ZfsBackendError, match="does not exist"):
        head_changes(z, DS, BASE)


class StreamHost(FakeHost):
    """zfs-fuse: answers snapshot/destroy, and `zfs send` with a captured stream."""

    def __init__(self, stream: str) -> None:
        super().__init__(self._reply)
        self.stream = STREAMS / f"{stream}.zstream"
        self.sent: list[Sequence[str]] = []

    def _reply(self, argv: tuple[str, ...], _stdin: bytes | None) -> tuple[int, str, str]:
        if argv[:2] in (("zfs", "snapshot"), ("zfs", "destroy")):
            return 0, "", ""
        return 99, "", f"unexpected {argv}"

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        self.sent.append(argv)
        return subprocess.Popen(["cat", str(self.stream)], stdout=stdout, stderr=stderr)


def _fuse(stream: str):  # type: ignore[no-untyped-def]
    host = StreamHost(stream)
    return head_changes(Zfs(host, dialect=ZFS_FUSE_07), DS, BASE), host


def test_fuse_probe_snapshot_is_made_read_and_destroyed() -> None:
    got, host = _fuse("atime")
    assert got.noisy and not got.changed
    snaps = [c for c in host.calls if c[:2] == ("zfs", "snapshot")]
    destroys = [c for c in host.calls if c[:2] == ("zfs", "destroy")]
    assert len(snaps) == 1 and snaps[0][-1].startswith(f"tank/r@{PROBE_PREFIX}")
    assert destroys and destroys[0][-1] == snaps[0][-1]
    assert host.sent == [["zfs", "send", "-i", "tank/r@s1", snaps[0][-1]]]


def test_fuse_unchanged_head_is_clean() -> None:
    assert _fuse("nochange")[0].clean


def test_fuse_a_4k_write_is_a_real_change() -> None:
    got, host = _fuse("write4k")
    assert got.changed and got.detail == "1 object(s) with a newer ctime/mtime"  # stops at the first sign
    assert any(c[:2] == ("zfs", "destroy") for c in host.calls)  # the probe never stays behind
