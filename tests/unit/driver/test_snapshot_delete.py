"""Deleting a snapshot volumes were cloned from: refused for the project's own callers, deferred for
Cinder's (whose volumes from a snapshot are independent of it: tempest deletes such a snapshot and waits
for it to go). Deferred = ``zfs destroy -d``: ZFS destroys it with its last clone, never while used."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.driver.errors import VolumeBusy
from zfs_backend.driver.zfs_nfs import ZfsNfsDriver
from zfs_backend.zfs.names import parse_dataset, parse_snapshot

PARENT = parse_dataset("tank/volumes")
SNAP = parse_snapshot("tank/volumes/volume-v1@snapshot-s1")


class Zfs:
    """The few calls delete_snapshot makes, on one snapshot and its clones."""

    def __init__(self, clones: list[str]) -> None:
        self.clones = clones
        self.calls: list[tuple[Any, ...]] = []

    def exists(self, name: Any) -> bool:
        return True

    def list_datasets(self, root: Any) -> list[Any]:
        return [SimpleNamespace(name=parse_dataset(c), origin=SNAP) for c in self.clones]

    def destroy(self, name: Any, defer: bool = False, **kw: Any) -> None:
        self.calls.append(("destroy -d" if defer else "destroy", str(name)))


def driver(clones: list[str]) -> Any:
    return SimpleNamespace(
        zfs=Zfs(clones),
        options=SimpleNamespace(node="node1", parent_dataset=PARENT, destroy_deadline=30),
        snapshot_of=lambda s: SNAP,
    )


SNAPSHOT: Any = SimpleNamespace(id="s1", volume_id="v1")


def test_a_snapshot_with_clones_is_refused_and_left_alone() -> None:
    d = driver(["tank/volumes/volume-v2"])
    with pytest.raises(VolumeBusy, match="dependent"):
        ZfsNfsDriver.delete_snapshot(d, SNAPSHOT)
    assert d.zfs.calls == []


def test_deferred_a_snapshot_with_clones_is_left_to_zfs_to_destroy_with_its_last_clone() -> None:
    d = driver(["tank/volumes/volume-v2"])
    ZfsNfsDriver.delete_snapshot(d, SNAPSHOT, deferred=True)
    assert d.zfs.calls == [("destroy -d", "tank/volumes/volume-v1@snapshot-s1")]


def test_deferred_without_clones_destroys() -> None:
    d = driver([])
    ZfsNfsDriver.delete_snapshot(d, SNAPSHOT, deferred=True)
    assert d.zfs.calls == [("destroy", "tank/volumes/volume-v1@snapshot-s1")]


def test_a_volume_whose_snapshots_were_destroyed_deferred_may_be_deleted() -> None:
    from zfs_backend.driver import clones

    snaps = [SimpleNamespace(name=SNAP, snap="snapshot-s1")]
    deferred = SimpleNamespace(list_snapshots=lambda ds: snaps, get=lambda n, p: {"defer_destroy": "on"})
    clones.refuse_own_snapshots(deferred, SNAP.dataset, "v1")  # type: ignore[arg-type]
    kept = SimpleNamespace(list_snapshots=lambda ds: snaps, get=lambda n, p: {"defer_destroy": "off"})
    with pytest.raises(VolumeBusy, match="snapshot-s1"):
        clones.refuse_own_snapshots(kept, SNAP.dataset, "v1")  # type: ignore[arg-type]
