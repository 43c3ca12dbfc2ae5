"""The replication cursor (replication.cursor): after a success the source bookmarks what the destination
holds and drops only its own relationship's older cursors; nothing where the source has no bookmarks."""

from __future__ import annotations

from typing import Any, cast

from zfs_backend.errors import ZfsError
from zfs_backend.replication.cursor import cursor_prefix, keep_cursor
from zfs_backend.zfs.api import Zfs
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07, Dialect
from zfs_backend.zfs.models import Bookmark
from zfs_backend.zfs.names import BookmarkName, DatasetName, parse_dataset, parse_snapshot

FS = parse_dataset("tank/fs")


class Marks:
    """A source's ZFS as far as bookmarks go."""

    def __init__(self, dialect: Dialect, *marks: str, fail: bool = False) -> None:
        self.dialect = dialect
        self.marks = {m: i for i, m in enumerate(marks)}
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def list_bookmarks(self, dataset: DatasetName) -> list[Bookmark]:
        return [Bookmark(BookmarkName(dataset, m), g, g) for m, g in self.marks.items()]

    def bookmark(self, snapshot: Any, mark: BookmarkName) -> None:
        if self.fail:
            raise ZfsError("node1: cannot create bookmark: out of space")
        self.calls.append(("bookmark", mark.name))
        self.marks[mark.mark] = 100

    def destroy(self, name: BookmarkName, missing_ok: bool = False) -> None:
        self.calls.append(("destroy", name.name))
        del self.marks[name.mark]


def test_the_new_cursor_is_made_and_only_this_relationships_older_ones_go() -> None:
    mine, other = cursor_prefix("node2", "tank/fs"), cursor_prefix("node3", "tank/fs")
    assert mine != other and mine.startswith("zfs_backend_cursor_")
    z = Marks(OPENZFS_2, f"{mine}11", f"{other}11", "users_own")
    out = keep_cursor(cast(Zfs, z), parse_snapshot("tank/fs@b"), 12, mine)
    assert out == {"cursor": f"tank/fs#{mine}12", "dropped": [f"{mine}11"]}
    assert sorted(z.marks) == sorted([f"{mine}12", f"{other}11", "users_own"])
    assert z.calls[0] == ("bookmark", f"tank/fs#{mine}12")  # made before the old one goes


def test_the_same_cursor_again_is_kept() -> None:
    mine = cursor_prefix("node2", "tank/fs")
    z = Marks(OPENZFS_2, f"{mine}12")
    assert keep_cursor(cast(Zfs, z), parse_snapshot("tank/fs@b"), 12, mine)["dropped"] == []
    assert z.calls == []


def test_no_bookmarks_nothing_done_and_a_failure_never_fails_the_replication() -> None:
    mine = cursor_prefix("node2", "tank/fs")
    z = Marks(ZFS_FUSE_07)
    assert keep_cursor(cast(Zfs, z), parse_snapshot("tank/fs@b"), 12, mine) == {}
    bad = Marks(OPENZFS_2, f"{mine}11", fail=True)
    out = keep_cursor(cast(Zfs, bad), parse_snapshot("tank/fs@b"), 12, mine)
    assert "out of space" in str(out["error"]) and f"{mine}11" in bad.marks  # the old cursor kept
