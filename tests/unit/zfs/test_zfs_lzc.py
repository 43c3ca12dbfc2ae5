from __future__ import annotations

from typing import Any

import pytest

from zfs_backend.errors import UnsupportedFeature
from zfs_backend.hosts import LocalHost
from zfs_backend.zfs import lzc
from zfs_backend.zfs.names import parse_snapshot


@pytest.mark.skipif(lzc.available(), reason="pyzfs is importable here")
def test_without_pyzfs_every_call_says_unsupported() -> None:
    s = parse_snapshot("tank/a@s")
    for call in (lambda: lzc.exists(s), lambda: lzc.snapshot([s]), lambda: lzc.send_space(s)):
        with pytest.raises(UnsupportedFeature, match="libzfs_core"):
            call()


def test_error_mapping_by_pyzfs_exception_name() -> None:
    from zfs_backend.errors import DatasetExists, DatasetNotFound, ZfsError

    class DatasetNotFoundError(Exception):
        pass

    class SnapshotExists(Exception):
        pass

    assert isinstance(lzc._map(DatasetNotFoundError("x")), DatasetNotFound)
    assert isinstance(lzc._map(SnapshotExists("x")), DatasetExists)
    assert type(lzc._map(OSError("x"))) is ZfsError


def test_a_wrapped_pyzfs_failure_is_mapped_by_its_first_inner_error() -> None:
    """pyzfs raises HoldFailure/SnapshotFailure/... around one error per name (seen with pyzfs 2.3.2):
    the inner one decides, with the CLI's words the callers look for."""
    from zfs_backend.errors import DatasetBusy, DatasetExists, ZfsError

    class HoldExists(Exception):
        pass

    class SnapshotIsHeld(Exception):
        pass

    class SnapshotExists(Exception):
        pass

    def wrapped(inner: Exception) -> Exception:
        e = Exception("failed for one or more reasons")
        e.errors = [inner]  # type: ignore[attr-defined]
        return e

    held = lzc._map(wrapped(HoldExists("Hold with a given tag already exists")))
    assert type(held) is ZfsError and "tag already exists" in str(held)
    assert isinstance(lzc._map(wrapped(SnapshotIsHeld("Snapshot is held"))), DatasetBusy)
    assert isinstance(lzc._map(wrapped(SnapshotExists("x"))), DatasetExists)


class _FakeLzc:
    """libzfs_core as pyzfs 2.3.2 answers (shapes seen on the Vagrant tier's VMs), in memory."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.snaps: set[bytes] = set()
        self.held: dict[bytes, set[bytes]] = {}
        self.marks: dict[bytes, dict[bytes, dict[bytes, dict[bytes, int]]]] = {}

    def lzc_exists(self, name: bytes) -> bool:
        self.calls.append("exists")
        return name in self.snaps or name == b"tank/a"

    def lzc_snapshot(self, snaps: list[bytes], props: object = None) -> None:
        self.calls.append("snapshot")
        self.snaps.update(snaps)

    def lzc_hold(self, holds: dict[bytes, bytes]) -> list[bytes]:
        self.calls.append("hold")
        for s, t in holds.items():
            self.held.setdefault(s, set()).add(t)
        return []

    def lzc_release(self, holds: dict[bytes, list[bytes]]) -> list[bytes]:
        self.calls.append("release")
        for s, ts in holds.items():
            self.held[s] -= set(ts)
        return []

    def lzc_get_holds(self, snap: bytes) -> dict[bytes, int]:
        self.calls.append("get_holds")
        return {t: 1 for t in self.held.get(snap, set())}

    def lzc_bookmark(self, marks: dict[bytes, bytes]) -> None:
        self.calls.append("bookmark")
        for m in marks:
            fs, short = m.split(b"#")
            self.marks.setdefault(fs, {})[short] = {b"guid": {b"value": 7}, b"createtxg": {b"value": 9}}

    def lzc_get_bookmarks(self, fs: bytes, props: list[bytes]) -> dict[bytes, dict[bytes, dict[bytes, int]]]:
        self.calls.append("get_bookmarks")
        return self.marks.get(fs, {})


class _NoCli(LocalHost):
    def run(self, argv: object, **kw: object) -> Any:  # type: ignore[override]
        raise AssertionError(f"the CLI was run: {argv}")


def test_zfs_on_this_machine_goes_through_libzfs_core_where_importable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zfs_backend.zfs import Zfs
    from zfs_backend.zfs.dialect import OPENZFS_2
    from zfs_backend.zfs.names import BookmarkName, parse_any, parse_dataset

    fake = _FakeLzc()
    monkeypatch.setattr(lzc, "_lzc", fake)
    z = Zfs(_NoCli("n1"), dialect=OPENZFS_2)
    assert z.lzc
    s = parse_snapshot("tank/a@s")
    z.snapshot(s)
    assert z.exists(s) and z.exists(parse_dataset("tank/a"))
    z.hold(s, "zfs_backend:x")
    assert z.holds(s) == ["zfs_backend:x"]
    z.release(s, "zfs_backend:x")
    assert z.holds(s) == []
    mark = parse_any("tank/a#m")
    assert isinstance(mark, BookmarkName)
    z.bookmark(s, mark)
    [b] = z.list_bookmarks(parse_dataset("tank/a"))
    assert (b.mark, b.guid, b.createtxg) == ("m", 7, 9)
    assert fake.calls == [
        *("snapshot", "exists", "exists", "hold", "get_holds", "release", "get_holds"),
        *("bookmark", "get_bookmarks"),
    ]
    # a remote host, a forced CLI, a recursive snapshot or a bookmark's existence: the CLI
    assert not Zfs(object(), dialect=OPENZFS_2).lzc  # type: ignore[arg-type]
    for call in (
        lambda: Zfs(_NoCli("n1"), dialect=OPENZFS_2, lzc=False).holds(s),
        lambda: z.snapshot(s, recursive=True),
        lambda: z.exists(parse_any("tank/a#m")),
    ):
        with pytest.raises(AssertionError, match="the CLI was run"):
            call()
