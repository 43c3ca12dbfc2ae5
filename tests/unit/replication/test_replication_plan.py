"""The pure planner: GUID matching, every conflict, -i vs -I, force_full_copy."""

from __future__ import annotations

import pytest

from zfs_backend.errors import ReplicationConflict
from zfs_backend.replication.plan import (
    DESTINATION_EXISTS,
    DIVERGED,
    NO_COMMON_BASE,
    UP_TO_DATE,
    Conflict,
    DestinationDiverged,
    NoCommonBase,
    Plan,
    check_children,
    incremental_path,
)
from zfs_backend.zfs.dialect import ZFS_FUSE_07
from zfs_backend.zfs.models import Bookmark, Snapshot
from zfs_backend.zfs.names import BookmarkName, parse_snapshot


def snap(name: str, guid: int, txg: int, used: int = 0, ref: int = 1 << 20) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=guid, createtxg=txg, used=used, referenced=ref, creation=0)


SRC = [
    snap("tank/fs@a", 11, 10),
    snap("tank/fs@b", 12, 20),
    snap("tank/fs@c", 13, 30),
    snap("tank/fs@d", 14, 40),
]


def dst(*pairs: tuple[str, int, int]) -> list[Snapshot]:
    return [snap(f"tank/copy@{n}", g, t) for n, g, t in pairs]


def test_no_destination_means_full() -> None:
    p = incremental_path(SRC, None, "c")
    assert isinstance(p, Plan) and p.full and p.target.guid == 13
    assert p.send_spec().argv(ZFS_FUSE_07) == ["zfs", "send", "tank/fs@c"]


def test_incremental_from_newest_common_by_guid() -> None:
    p = incremental_path(SRC, dst(("a", 11, 5), ("b", 12, 6)), "d")
    assert isinstance(p, Plan) and p.base is not None and p.base.snap == "b"
    assert p.send_spec().argv(ZFS_FUSE_07) == ["zfs", "send", "-i", "tank/fs@b", "tank/fs@d"]


def test_guid_not_name_decides() -> None:
    # same names, other GUIDs: not a common base
    out = incremental_path(SRC, dst(("a", 99, 5), ("b", 98, 6)), "d")
    assert isinstance(out, Conflict) and out.kind == NO_COMMON_BASE
    # other names, same GUID: a base (renamed on the destination)
    p = incremental_path(SRC, dst(("renamed", 12, 6)), "d")
    assert isinstance(p, Plan) and p.base is not None and p.base.snap == "b" and p.dest_base is not None
    assert p.dest_base.snap == "renamed"


def test_intermediates_use_capital_i() -> None:
    p = incremental_path(SRC, dst(("a", 11, 5)), "d", intermediates=True)
    assert isinstance(p, Plan)
    assert p.send_spec().argv(ZFS_FUSE_07) == ["zfs", "send", "-I", "tank/fs@a", "tank/fs@d"]
    assert "-I @a" in p.describe()


def test_explicit_incremental_from() -> None:
    p = incremental_path(SRC, dst(("a", 11, 5)), "c", incremental_from="a")
    assert isinstance(p, Plan) and p.base is not None and p.base.snap == "a"
    p = incremental_path(SRC, dst(("a", 11, 5)), "c", incremental_from="tank/fs@a")
    assert isinstance(p, Plan) and p.base is not None and p.base.snap == "a"


@pytest.mark.parametrize(
    ("base", "why"),
    [("b", "no snapshot with the GUID"), ("zz", "not a snapshot of the source"), ("d", "not older")],
)
def test_incremental_from_must_be_common_and_older(base: str, why: str) -> None:
    out = incremental_path(SRC, dst(("a", 11, 5)), "c", incremental_from=base)
    assert isinstance(out, Conflict) and out.kind == NO_COMMON_BASE and why in out.reason


def test_incremental_from_without_destination() -> None:
    out = incremental_path(SRC, None, "c", incremental_from="a")
    assert isinstance(out, Conflict) and out.kind == NO_COMMON_BASE


def test_no_common_snapshot_with_existing_destination() -> None:
    out = incremental_path(SRC, dst(("x", 77, 5)), "d")
    assert isinstance(out, Conflict) and out.kind == NO_COMMON_BASE
    assert isinstance(out.error(), NoCommonBase) and isinstance(out.error(), ReplicationConflict)
    assert incremental_path(SRC, [], "d") == Conflict(out.kind, out.reason)


def test_force_full_copy() -> None:
    assert isinstance(incremental_path(SRC, None, "d", force_full_copy=True), Plan)
    out = incremental_path(SRC, dst(("a", 11, 5)), "d", force_full_copy=True)
    assert isinstance(out, Conflict) and out.kind == DESTINATION_EXISTS


def test_up_to_date() -> None:
    out = incremental_path(SRC, dst(("a", 11, 5), ("d", 14, 9)), "d")
    assert isinstance(out, Conflict) and out.kind == UP_TO_DATE


def test_destination_newer_snapshots_diverged() -> None:
    d = dst(("a", 11, 5), ("b", 12, 6), ("local", 55, 7))
    out = incremental_path(SRC, d, "d")
    assert isinstance(out, Conflict) and out.kind == DIVERGED and "@local" in out.reason
    assert isinstance(out.error(), DestinationDiverged)
    p = incremental_path(SRC, d, "d", rollback_destination=True)
    assert isinstance(p, Plan) and p.rollback_to is not None and p.rollback_to.snap == "b"
    assert [s.snap for s in p.destroys] == ["local"]


def test_destination_holding_a_newer_common_snapshot_with_older_base() -> None:
    # destination already at @c; asking -i @a makes @b/@c "newer" than the base
    out = incremental_path(SRC, dst(("a", 11, 5), ("b", 12, 6), ("c", 13, 7)), "d", incremental_from="a")
    assert isinstance(out, Conflict) and out.kind == DIVERGED


def test_destination_modified_diverged() -> None:
    out = incremental_path(SRC, dst(("b", 12, 6)), "d", destination_modified=True)
    assert isinstance(out, Conflict) and out.kind == DIVERGED and "data changed" in out.reason
    p = incremental_path(SRC, dst(("b", 12, 6)), "d", destination_modified=True, rollback_destination=True)
    assert isinstance(p, Plan) and p.discards_changes and p.rollback_to is not None and p.destroys == ()


def test_target_must_be_in_source() -> None:
    with pytest.raises(ValueError, match="not among"):
        incremental_path(SRC, None, "nope")


def test_target_as_snapshot_object_matches_by_guid() -> None:
    p = incremental_path(SRC, None, SRC[1])
    assert isinstance(p, Plan) and p.target.snap == "b"


def test_order_of_listings_does_not_matter() -> None:
    p = incremental_path(list(reversed(SRC)), list(reversed(dst(("a", 11, 5), ("b", 12, 6)))), "d")
    assert isinstance(p, Plan) and p.base is not None and p.base.snap == "b"


# --- the children of a recursive incremental -----------------------------------------------------------


def _child(name: str, *pairs: tuple[str, int, int]) -> list[Snapshot]:
    return [snap(f"tank/fs/{name}@{n}", g, t) for n, g, t in pairs]


SRC_TREE = {
    "": SRC,
    "a": _child("a", ("b", 21, 20), ("d", 22, 40)),
    "b": _child("b", ("b", 31, 20), ("d", 32, 40)),
    "new": _child("new", ("d", 41, 40)),  # created after @b: the stream makes it
}


def test_children_in_step_need_nothing() -> None:
    dest = {
        "": (dst(("b", 12, 5)), False),
        "a": (_child("a", ("b", 21, 5)), False),
        "b": (_child("b", ("b", 31, 5)), False),
    }
    assert check_children(SRC_TREE, dest, "b") == {}


def test_a_destination_only_child_is_left_alone() -> None:
    dest = {"a": (_child("a", ("b", 21, 5)), False), "mine": ([], True)}
    assert check_children(SRC_TREE, dest, "b") == {}


@pytest.mark.parametrize(
    ("dest", "kind", "words"),
    [
        ({"a": (_child("a", ("b", 21, 5)), True)}, DIVERGED, "child a"),
        ({"a": (_child("a", ("b", 21, 5), ("x", 99, 6)), False)}, DIVERGED, "@x"),
        ({"a": (_child("a", ("b", 77, 5)), False)}, NO_COMMON_BASE, "by GUID"),
        ({"new": (_child("new", ("z", 88, 5)), False)}, NO_COMMON_BASE, "would create it"),
    ],
)
def test_a_child_out_of_step_is_a_conflict(dest: dict, kind: str, words: str) -> None:  # type: ignore[type-arg]
    out = check_children(SRC_TREE, dest, "b")
    assert isinstance(out, Conflict) and out.kind == kind and words in out.reason


def test_rollback_destination_names_the_children_to_roll_back() -> None:
    dest = {
        "a": (_child("a", ("b", 21, 5)), True),
        "b": (_child("b", ("b", 31, 5), ("x", 99, 6)), False),
    }
    assert check_children(SRC_TREE, dest, "b", rollback_destination=True) == {"a": 21, "b": 31}


# --- bookmarks as bases -------------------------------------------------------------------------------


def mark(name: str, guid: int, txg: int) -> Bookmark:
    from zfs_backend.zfs.names import parse_any

    b = parse_any(name)
    assert isinstance(b, BookmarkName)
    return Bookmark(b, guid, txg)


def test_a_bookmark_is_the_base_when_the_source_pruned_the_snapshots() -> None:
    src = [snap("tank/fs@c", 13, 30)]  # @a and @b pruned; the cursor of @b kept
    marks = [mark("tank/fs#cur_a", 11, 10), mark("tank/fs#cur_b", 12, 20), mark("tank/fs#other", 99, 25)]
    p = incremental_path(src, dst(("a", 11, 5), ("b", 12, 6)), "c", bookmarks=marks)
    assert isinstance(p, Plan) and p.base is None and not p.full
    assert p.base_bookmark is not None and p.base_bookmark.mark == "cur_b" and p.base_guid == 12
    assert p.dest_base is not None and p.dest_base.snap == "b"
    spec = p.send_spec(properties=True)
    assert str(spec.incremental_from) == "tank/fs#cur_b" and not spec.intermediates
    assert p.describe() == "incremental -i #cur_b tank/fs@c"


def test_a_bookmark_newer_than_the_newest_common_snapshot_wins_and_a_snapshot_wins_a_tie() -> None:
    src = [snap("tank/fs@a", 11, 10), snap("tank/fs@c", 13, 30)]  # @b pruned, its bookmark kept
    d = dst(("a", 11, 5), ("b", 12, 6))
    p = incremental_path(src, d, "c", bookmarks=[mark("tank/fs#cur_b", 12, 20)])
    assert isinstance(p, Plan) and p.base_bookmark is not None and p.base_bookmark.guid == 12
    p = incremental_path(src, dst(("a", 11, 5)), "c", bookmarks=[mark("tank/fs#cur_a", 11, 10)])
    assert isinstance(p, Plan) and p.base is not None and p.base.snap == "a"  # -I still possible


def test_a_bookmark_the_destination_does_not_hold_is_no_base() -> None:
    src = [snap("tank/fs@c", 13, 30)]
    c = incremental_path(src, dst(("x", 77, 5)), "c", bookmarks=[mark("tank/fs#cur_b", 12, 20)])
    assert isinstance(c, Conflict) and c.kind == NO_COMMON_BASE


def test_a_destination_diverged_after_the_bookmarked_snapshot_is_refused() -> None:
    src = [snap("tank/fs@c", 13, 30)]
    d = dst(("b", 12, 6), ("theirs", 55, 7))
    c = incremental_path(src, d, "c", bookmarks=[mark("tank/fs#cur_b", 12, 20)])
    assert isinstance(c, Conflict) and c.kind == DIVERGED and "@theirs" in c.reason
    p = incremental_path(src, d, "c", bookmarks=[mark("tank/fs#cur_b", 12, 20)], rollback_destination=True)
    assert isinstance(p, Plan) and p.rollback_to is not None and [s.snap for s in p.destroys] == ["theirs"]
