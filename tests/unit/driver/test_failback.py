"""Issue 22: Cinder's failback (``failover_host(secondary_id="default")``, ``driver.failback``):
each failed-over volume's copy on the primary is brought up to date from the standby (quiesced first),
then promoted; a catch-up that fails leaves the volume on the standby, exported and writable again, and
reports ``error``; a volume that was not failed over is left alone. On the in-memory model of a node's
datasets, with the replication and the export steps recorded."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.driver import failback as fb
from zfs_backend.driver.models import Volume
from zfs_backend.errors import ZfsBackendError
from zfs_backend.zfs.names import parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs

DS = "tank/volumes/volume-v1"


class SnapZfs(FakeZfs):
    def snapshot(self, name: Any) -> None:
        self.calls.append(("snapshot", str(name)))
        self.add_snapshot(str(name.dataset), name.snap, 99)


def node(name: str) -> Any:
    zfs = SnapZfs()
    zfs.make(DS, "zfs_backend-standby-1", guids=[11])

    def require(ds: Any, what: str) -> None:
        if not zfs.exists(ds):
            raise ZfsBackendError(f"{what} does not exist")

    return SimpleNamespace(
        zfs=zfs,
        options=SimpleNamespace(node=name),
        dataset_of=lambda v: parse_dataset(DS),
        require=require,
        exports=SimpleNamespace(remove=lambda ds: None),
    )


class Act:
    def __init__(self, end: str) -> None:
        self.end = end

    def wait(self, timeout: float | None = None) -> str:
        return self.end

    def record(self) -> Any:
        return SimpleNamespace(error=None if self.end == "succeeded" else "destination diverged")


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    log: list[tuple[Any, ...]] = []
    state = {"clients": ["198.18.0.1"], "attachments": [["vm-1", "198.18.0.1"]], "exported": True}

    def quiesce(d: Any, v: Any) -> dict[str, Any]:
        log.append(("quiesce", d.options.node))
        return state

    monkeypatch.setattr(fb, "quiesce", quiesce)
    monkeypatch.setattr(fb, "unquiesce", lambda d, v, s: log.append(("unquiesce", d.options.node)))

    def promote(d: Any, v: Any, clients: Any, atts: Any) -> str:
        log.append(("promote", d.options.node, tuple(clients), tuple((a.id, a.client) for a in atts)))
        return f"{d.options.node}:/{DS}"

    monkeypatch.setattr(fb, "promote", promote)
    return log


def test_failed_over_volumes_come_back_to_the_primary(steps: list[tuple[Any, ...]]) -> None:
    primary, standby = node("node1"), node("node2")
    sent: list[tuple[str, str, str]] = []

    def replicate(snap: str, source: str, dest: str) -> Any:
        sent.append((snap, source, dest))
        return Act("succeeded")

    vols = [Volume(id="v1", size=1, replication_status="failed-over"), Volume(id="v2", size=1)]
    [u] = fb.fail_back(primary, standby, vols, replicate=replicate)
    assert u["volume_id"] == "v1" and u["updates"]["replication_status"] == "enabled"
    assert u["updates"]["provider_location"] == f"node1:/{DS}"
    [(snap, source, dest)] = sent
    assert snap.startswith(f"{DS}@{fb.FAILBACK_PREFIX}") and (source, dest) == ("node2", f"node1:{DS}")
    assert steps == [
        ("quiesce", "node2"),
        ("promote", "node1", ("198.18.0.1",), (("vm-1", "198.18.0.1"),)),
    ]
    assert not primary.zfs.is_mounted(parse_dataset(DS))  # received into unmounted; promote mounts it


def test_a_catch_up_that_fails_leaves_the_volume_on_the_standby(steps: list[tuple[Any, ...]]) -> None:
    primary, standby = node("node1"), node("node2")
    vol = Volume(id="v1", size=1, replication_status="failed-over")
    [u] = fb.fail_back(primary, standby, [vol], replicate=lambda *a: Act("failed"))
    assert (
        u["updates"]["replication_status"] == "error"
        and "diverged" in u["updates"]["replication_driver_data"]
    )
    assert steps == [("quiesce", "node2"), ("unquiesce", "node2")]
    assert [s.snap for s in standby.zfs.list_snapshots(parse_dataset(DS))] == ["zfs_backend-standby-1"]


def test_no_copy_on_the_primary_changes_nothing(steps: list[tuple[Any, ...]]) -> None:
    primary, standby = node("node1"), node("node2")
    primary.zfs.destroy(parse_dataset(DS))
    vol = Volume(id="v1", size=1, replication_status="failed-over")
    [u] = fb.fail_back(primary, standby, [vol], replicate=lambda *a: Act("succeeded"))
    assert u["updates"]["status"] == "error" and steps == []


def test_the_failback_snapshot_is_the_drivers_own(steps: list[tuple[Any, ...]]) -> None:
    """Found by ``tests/cinder``: the volume a failback brought back could not be deleted ("has 1
    snapshot(s) (zfs_backend-failback-…)"): that snapshot is internal, as a clone's or a migration's."""
    from zfs_backend.driver import clones

    primary, standby = node("node1"), node("node2")
    v = Volume(id="v1", size=1, replication_status="failed-over")
    fb.fail_back(primary, standby, [v], replicate=lambda *a: Act("succeeded"))
    [made] = [
        s for s in standby.zfs.list_snapshots(parse_dataset(DS)) if s.snap.startswith(fb.FAILBACK_PREFIX)
    ]
    assert made.snap.startswith(clones.INTERNAL_SNAP_PREFIXES)
    with pytest.raises(ZfsBackendError) as refused:  # the fake's standby snapshot only, not the failback's
        clones.refuse_own_snapshots(standby.zfs, parse_dataset(DS), "v1")
    assert "1 snapshot(s) (zfs_backend-standby-1)" in str(refused.value)
