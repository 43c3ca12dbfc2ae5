"""A forced failover rolls the standby's head back to its newest snapshot only when it differs by
metadata noise: a retried failover (the standby promoted already, clients writing) keeps those writes,
and a snapshot made meanwhile is never destroyed. On the in-memory model of a node's datasets."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.driver import failover as fo
from zfs_backend.replication.head import DestinationHead
from zfs_backend.zfs.names import parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs, bytes_since, changes

DS = "tank/volumes/volume-v1"
VOL: Any = SimpleNamespace(id="v1")


@pytest.fixture
def standby(monkeypatch: Any) -> Any:
    zfs = FakeZfs()
    zfs.make(DS, "zfs_backend-standby-1", guids=[11], readonly=("on", "local"))
    d = SimpleNamespace(
        zfs=zfs, options=SimpleNamespace(node="node2"), dataset_of=lambda v: parse_dataset(DS)
    )
    monkeypatch.setattr(fo, "_fence", lambda *a: [])
    monkeypatch.setattr(
        fo, "promote", lambda d, v, c, a=None: (d.zfs.set(parse_dataset(DS), "readonly", "off"), "loc")[1]
    )
    monkeypatch.setattr(
        fo, "DestinationHead", lambda z: DestinationHead(z, changes=changes, bytes_since=bytes_since)
    )
    return d


def _rollbacks(zfs: FakeZfs) -> list[Any]:
    return [c for c in zfs.calls if c[0] in ("rollback", "destroy")]


def test_noise_on_the_standby_is_rolled_back_before_the_promotion(standby: Any) -> None:
    standby.zfs.ds[DS].head = "noisy"
    out = fo.fail_over(standby, VOL)
    assert (
        _rollbacks(standby.zfs) == [("rollback", f"{DS}@zfs_backend-standby-1", False)] and "kept" not in out
    )


def test_a_retried_failover_keeps_what_clients_wrote_after_the_promotion(standby: Any) -> None:
    fo.fail_over(standby, VOL)  # promoted; the update to Cinder is lost
    standby.zfs.ds[DS].head = "changed"  # clients write to the promoted volume
    out = fo.fail_over(standby, VOL)  # the retry
    assert "written to after @zfs_backend-standby-1" in out["kept"]
    assert _rollbacks(standby.zfs) == [] and standby.zfs.ds[DS].head == "changed"


def test_a_retried_failover_never_destroys_a_snapshot_of_the_promoted_volume(standby: Any) -> None:
    fo.fail_over(standby, VOL)
    standby.zfs.add_snapshot(DS, "users", 99)  # a snapshot of the promoted volume
    out = fo.fail_over(standby, VOL)
    assert out["snapshot"] == "users" and standby.zfs.guids(DS) == [11, 99] and _rollbacks(standby.zfs) == []


def test_a_standby_in_use_is_not_rolled_back(standby: Any) -> None:
    standby.zfs.ds[DS].head = "noisy"
    standby.zfs.ds[DS].busy = True  # exported and open (a retry after the promotion)
    out = fo.fail_over(standby, VOL)
    assert "in use" in out["kept"] and _rollbacks(standby.zfs) == []
