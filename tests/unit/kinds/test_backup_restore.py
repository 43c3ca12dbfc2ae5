"""A restore's cancel, final failure or restart destroys its destination only when it is provably the
restore's (snapshots, every one from the chain, no child); a backup drops only its own snapshot and the
manifest's (name and GUID). On the in-memory model of a node's datasets."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.errors import DatasetExists
from zfs_backend.kinds.backup import Backup, Restore
from zfs_backend.zfs.names import parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs


def _restore(zfs: FakeZfs) -> Any:
    r: Any = object.__new__(Restore)  # the parts _remove, rollback and on_restart use; no agent, no peer
    r._zfs = zfs
    r.destination = parse_dataset("tank/restored")
    r.kind_state = {"chain": [{"id": "b1", "guid": 11, "size": 1}, {"id": "b2", "guid": 12, "size": 1}]}
    r.ctx = SimpleNamespace(node="node2")
    r.saved = {}
    r._save = lambda **kw: r.saved.update(kw)
    return r


def test_a_destination_from_the_chain_is_destroyed() -> None:
    zfs = FakeZfs()
    zfs.make("tank/restored", "backup-b1", guids=[11])
    r = _restore(zfs)
    r.rollback()
    assert "tank/restored" not in zfs.ds and r.saved["rolled_back"] is True


@pytest.mark.parametrize(
    ("snaps", "guids", "child", "why"),
    [
        ((), [], False, "holds no snapshot"),  # someone's dataset made after the plan, or a partial stream
        (("backup-b1", "theirs"), [11, 99], False, "did not make"),
        (("backup-b1",), [11], True, "holds datasets"),
    ],
)
def test_anything_not_provably_the_restores_is_left(
    snaps: tuple[str, ...], guids: list[int], child: bool, why: str
) -> None:
    zfs = FakeZfs()
    zfs.make("tank/restored", *snaps, guids=guids)
    if child:
        zfs.make("tank/restored/theirs")
    r = _restore(zfs)
    r.rollback()
    assert "tank/restored" in zfs.ds and not [c for c in zfs.calls if c[0] == "destroy"]
    assert r.saved["rolled_back"] is False and why in r.saved["left_alone"][0]


def test_a_restart_never_destroys_a_snapshot_less_destination() -> None:
    zfs = FakeZfs()
    zfs.make("tank/restored")
    with pytest.raises(DatasetExists, match="nothing proves this restore created it"):
        _restore(zfs).on_restart({})
    assert "tank/restored" in zfs.ds and not [c for c in zfs.calls if c[0] == "destroy"]


def test_success_drops_only_the_chains_own_snapshots() -> None:
    zfs = FakeZfs()
    zfs.make("tank/restored", "backup-b1", "backup-b2", "backup-mine", guids=[11, 12, 99])
    r = _restore(zfs)
    r._record = SimpleNamespace(id="act-01M8PC6J46SJJSD1CGAQ7Y88PX")
    r.on_success()
    assert [s.snap for s in zfs.ds["tank/restored"].snapshots] == ["backup-mine"]


class GuidZfs(FakeZfs):
    def get_int(self, name: Any, prop: str) -> int | None:
        if prop == "guid":
            return next(s.guid for s in self.ds[str(name.dataset)].snapshots if s.name == name)
        return super().get_int(name, prop)


def _backup(zfs: FakeZfs, manifest: list[dict[str, Any]]) -> Any:
    b: Any = object.__new__(Backup)
    b._zfs, b.dataset, b.backup, b.backup_node = zfs, parse_dataset("tank/vol"), "b3", "node3"
    b._record = SimpleNamespace(id="act-01M8PC6J46SJJSD1CGAQ7Y88PX")
    b.kind_state = {"estimate": 1, "guid": 13}
    b.saved = {}
    b._save = lambda **kw: b.saved.update(kw)
    b._call = lambda verb, **kw: {"list": manifest, "commit": {"id": "b3"}, "abort": {}}[verb]
    return b


def test_a_backup_drops_only_the_manifests_snapshots() -> None:
    zfs = GuidZfs()
    zfs.make("tank/vol", "backup-b1", "backup-b2", "backup-x", "backup-b3", guids=[11, 99, 77, 13])
    manifest = [{"id": "b1", "guid": 11}, {"id": "b2", "guid": 12}, {"id": "b3", "guid": 13}]
    _backup(zfs, manifest).on_success()
    # b2's name with another GUID (a namesake) and a snapshot no entry names stay; the newest stays
    assert [s.snap for s in zfs.ds["tank/vol"].snapshots] == ["backup-b2", "backup-x", "backup-b3"]


def test_a_cancelled_backup_drops_its_snapshot_only_when_it_made_it() -> None:
    zfs = GuidZfs()
    zfs.make("tank/vol", "backup-b3", guids=[55])  # a namesake, not the one this backup made (GUID 13)
    _backup(zfs, []).rollback()
    assert zfs.guids("tank/vol") == [55]
    zfs.make("tank/vol", "backup-b3", guids=[13])
    _backup(zfs, []).rollback()
    assert zfs.guids("tank/vol") == []
