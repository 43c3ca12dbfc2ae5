"""Deleting a snapshot volumes were cloned from: refused for the project's own callers, deferred for
Cinder's (whose volumes from a snapshot are independent of it: tempest deletes such a snapshot and waits
for it to go). Deferred = renamed to the internal ``@clone-<snapshot id>``, never destroyed while used."""

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

    def rename(self, old: Any, new: Any) -> None:
        self.calls.append(("rename", str(old), str(new)))

    def destroy(self, name: Any, **kw: Any) -> None:
        self.calls.append(("destroy", str(name)))


def driver(clones: list[str]) -> Any:
    return SimpleNamespace(
        zfs=Zfs(clones),
        options=SimpleNamespace(node="node1", parent_dataset=PARENT, destroy_deadline=30),
        _snapshot_name=lambda s: SNAP,
    )


SNAPSHOT: Any = SimpleNamespace(id="s1", volume_id="v1")


def test_a_snapshot_with_clones_is_refused_and_left_alone() -> None:
    d = driver(["tank/volumes/volume-v2"])
    with pytest.raises(VolumeBusy, match="dependent"):
        ZfsNfsDriver.delete_snapshot(d, SNAPSHOT)
    assert d.zfs.calls == []


def test_deferred_a_snapshot_with_clones_becomes_internal_and_is_not_destroyed() -> None:
    d = driver(["tank/volumes/volume-v2"])
    ZfsNfsDriver.delete_snapshot(d, SNAPSHOT, deferred=True)
    assert d.zfs.calls == [
        ("rename", "tank/volumes/volume-v1@snapshot-s1", "tank/volumes/volume-v1@clone-s1")
    ]


def test_deferred_without_clones_destroys() -> None:
    d = driver([])
    ZfsNfsDriver.delete_snapshot(d, SNAPSHOT, deferred=True)
    assert d.zfs.calls == [("destroy", "tank/volumes/volume-v1@snapshot-s1")]
