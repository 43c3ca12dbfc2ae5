"""What the destination's zfs could not read (replication.upkeep.check_filesystem_versions): any
filesystem from a zfs with newer filesystem versions (OpenZFS, 5, into zfs-fuse 0.7, 4: a version 5
filesystem's stream fails in zfs-fuse's ``zfs receive`` on its SA_SPILL feature, a version 4 one's is
received but cannot be read there), or a dataset newer than the destination's versions, is refused with
one line naming the versions, at planning, before any stream, the destination's claim released. The
destination reports what it has (``zpl_version`` in ``begin``, from its dialect's probe of ``zfs upgrade
-v``); an agent that does not report it is not checked (as before)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.activity.core import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore
from zfs_backend.errors import UnsupportedFeature
from zfs_backend.kinds.replicate import Replicate
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.receiver import Receiver
from zfs_backend.replication.remote import DestinationTree
from zfs_backend.replication.upkeep import check_filesystem_versions
from zfs_backend.zfs.api import Zfs
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07, Dialect
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import DatasetName, parse_dataset, parse_snapshot

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_zfs import FakeZfs, bytes_since, changes


class SourceZfs:
    """The source's ZFS as the check reads it: each dataset's ``version`` property."""

    def __init__(self, versions: dict[str, str], dialect: Dialect = OPENZFS_2) -> None:
        self.dialect = dialect
        self.versions = versions
        self.asked: list[tuple[str, list[str]]] = []

    def get(self, name: DatasetName, props: list[str]) -> dict[str, str]:
        self.asked.append((str(name), list(props)))
        return {"version": self.versions[str(name)]}


def fuse_tree(**kw: Any) -> DestinationTree:
    return DestinationTree.from_dict(
        {"node": "node1", "dialect": {"name": "zfs-fuse", "zpl_version": 4}, **kw}
    )


TOP = parse_dataset("tank/r")
CHILD = parse_dataset("tank/r/c")


def test_any_filesystem_of_a_newer_zfs_into_zfs_fuse_is_refused_naming_both() -> None:
    for version in ("5", "4"):  # a version 4 filesystem made on OpenZFS: received, but unreadable there
        src = SourceZfs({"tank/r": version})
        with pytest.raises(UnsupportedFeature) as e:
            check_filesystem_versions(cast(Zfs, src), [TOP], fuse_tree(), "zb-node1", "node1:tank/r")
        assert str(e.value) == (
            "node1:tank/r (zfs-fuse) reads filesystems up to version 4 and zb-node1 (openzfs 2.x) writes "
            "them up to version 5: a filesystem sent from a newer zfs cannot be read there, so it is refused "
            "before sending; nothing changed there"
        )
        assert e.value.exit_code == 6
        assert src.asked == []  # the dialects decide: no property read


UNKNOWN = replace(OPENZFS_2, zpl_version=None)  # a source whose zfs upgrade -v could not be read


def test_a_dataset_newer_than_the_destination_is_refused_naming_both_versions() -> None:
    src = SourceZfs({"tank/r": "5"}, UNKNOWN)
    with pytest.raises(UnsupportedFeature) as e:
        check_filesystem_versions(cast(Zfs, src), [TOP], fuse_tree(), "zb-node1", "node1:tank/r")
    assert str(e.value) == (
        "zb-node1:tank/r is a version 5 filesystem and node1:tank/r (zfs-fuse) receives filesystems up to "
        "version 4 (zfs upgrade -v): refused before sending, nothing changed there"
    )
    assert "\n" not in str(e.value)


def test_what_the_destination_reads_passes() -> None:
    ok = SourceZfs({"tank/r": "4", "tank/r/c": "3", "tank/vol": "-"}, UNKNOWN)
    names = [TOP, CHILD, parse_dataset("tank/vol")]  # a volume has no ZPL version ("-")
    check_filesystem_versions(cast(Zfs, ok), names, fuse_tree(), "zb-node1", "node1:tank/r")
    assert [n for n, _ in ok.asked] == ["tank/r", "tank/r/c", "tank/vol"]
    fuse = SourceZfs({"tank/r": "4"}, ZFS_FUSE_07)  # zfs-fuse into zfs-fuse, into OpenZFS: the same or newer
    check_filesystem_versions(cast(Zfs, fuse), [TOP], fuse_tree(), "node2", "node1:tank/r")
    openzfs = DestinationTree.from_dict({"dialect": {"name": "openzfs", "zpl_version": 5}})
    check_filesystem_versions(cast(Zfs, fuse), [TOP], openzfs, "node1", "zb-node1:tank/r")
    check_filesystem_versions(cast(Zfs, SourceZfs({"tank/r": "5"})), [TOP], openzfs, "a", "b")


def test_a_child_of_a_recursive_tree_is_checked_too() -> None:
    src = SourceZfs({"tank/r": "4", "tank/r/c": "5"}, UNKNOWN)
    with pytest.raises(UnsupportedFeature, match=r"^zb-node1:tank/r/c is a version 5 filesystem"):
        check_filesystem_versions(cast(Zfs, src), [TOP, CHILD], fuse_tree(), "zb-node1", "node1:tank/r")


def test_a_destination_that_does_not_report_it_is_not_checked() -> None:
    old = DestinationTree.from_dict({"dialect": {"name": "zfs-fuse"}})  # an agent before this check
    assert old.zpl_version is None
    src = SourceZfs({"tank/r": "5"})
    check_filesystem_versions(cast(Zfs, src), [TOP], old, "zb-node1", "node1:tank/r")
    assert src.asked == []
    for bad in ("4", True, None, 4.5):
        assert DestinationTree.from_dict({"dialect": {"zpl_version": bad}}).zpl_version is None


def test_the_receiver_reports_its_dialects_zpl_version(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "claims.db")
    for dialect, want in ((ZFS_FUSE_07, 4), (OPENZFS_2, 5)):
        rx = Receiver(cast(Zfs, FakeZfs(dialect)), store, ttl=300, changes=changes, bytes_since=bytes_since)
        holder = f"act-01M8PC6J46SJJSD1CGAQ7Y88P{want}"
        out = rx.begin("tank/r", holder, "zb-node1:tank/r")
        assert out["dialect"]["zpl_version"] == want
        assert DestinationTree.from_dict(out).zpl_version == want
        rx.release("tank/r", holder)


PARAMS = {
    "snapshot": "tank/r@s1",
    "source_node": "zb-node1",
    "destination_node": "node1",
    "destination": "tank/r",
}


def test_planning_refuses_before_any_stream_and_releases_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the kind: ``plan`` raises the refusal, the destination's claim is released, no stream."""
    calls: list[str] = []

    class FuseReceiver:
        def begin(self, *a: Any, **kw: Any) -> DestinationTree:
            calls.append("begin")
            return fuse_tree()

        def release(self) -> dict[str, Any]:
            calls.append("release")
            return {}

    monkeypatch.setattr(Replicate, "receiver", property(lambda self: FuseReceiver()))
    s1 = Snapshot(parse_snapshot("tank/r@s1"), guid=1, createtxg=1, used=0, referenced=1, creation=0)
    monkeypatch.setattr(Replicate, "_source_tree", lambda self: {"": [s1]})
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="zb-node1")
    act = Replicate(ActivityRecord(id="act-zpl", kind="replicate", node="zb-node1", params=PARAMS), ctx)
    act._src = SourceZfs({"tank/r": "5"})  # type: ignore[assignment]
    with pytest.raises(
        UnsupportedFeature, match=r"^node1:tank/r \(zfs-fuse\) reads filesystems up to version 4"
    ):
        act.plan()
    assert calls == ["begin", "release"]
    assert "plan" not in act.kind_state and "stream_flags" not in act.kind_state
    act._src = SourceZfs({"tank/r": "4"}, ZFS_FUSE_07)  # type: ignore[assignment]
    calls.clear()
    monkeypatch.setattr(
        Replicate, "_plan_against", lambda self, *a, **kw: (_ for _ in ()).throw(KeyError("on"))
    )
    with pytest.raises(KeyError):
        act.plan()  # zfs-fuse into zfs-fuse: on to planning
    assert calls == ["begin", "release"]
    store.close()


def test_a_migration_is_refused_at_planning_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume's migration onto an older zfs: refused at planning with the same line, the destination's
    claim released, nothing snapshotted; onto the same zfs it plans."""
    from zfs_backend.kinds.migrate import Migrate

    calls: list[str] = []

    class FuseReceiver:
        def begin(self, *a: Any, **kw: Any) -> DestinationTree:
            calls.append("begin")
            return fuse_tree(exists=False, available=1 << 40)

        def release(self) -> dict[str, Any]:
            calls.append("release")
            return {}

    class VolumeZfs(SourceZfs):
        def exists(self, name: DatasetName) -> bool:
            return True

        def get_int(self, name: DatasetName, prop: str) -> int:
            calls.append(f"get_int {prop}")
            return 1

    monkeypatch.setattr(Migrate, "receiver", property(lambda self: FuseReceiver()))
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="zb-node1")
    params = {"dataset": "tank/v", "destination_node": "node1", "destination": "tank/v"}
    act = Migrate(ActivityRecord(id="act-mig", kind="migrate", node="zb-node1", params=params), ctx)
    act._zfs = VolumeZfs({"tank/v": "5"})  # type: ignore[assignment]
    with pytest.raises(
        UnsupportedFeature, match=r"^node1:tank/v \(zfs-fuse\) reads filesystems up to version 4"
    ):
        act.plan()
    assert calls == ["begin", "release"] and "phase" not in act.kind_state
    calls.clear()
    act._zfs = VolumeZfs({"tank/v": "4"}, ZFS_FUSE_07)  # type: ignore[assignment]
    act.plan()
    assert calls == ["begin", "get_int referenced"] and act.kind_state["phase"] == "full"
    store.close()
