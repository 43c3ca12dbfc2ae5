"""The driver's and the volume service's granted starts, on fake agents that record every call: a
migration (``volume migrate``, Cinder's ``migrate_volume``) is granted by its destination, a backup or
restore (``volume backup`` / ``volume restore``) by the backup node, before anything starts; a refused
grant leaves no record behind; a restore's grant is revoked when the controller sees it end; a forced
failover (the flow's, Cinder's ``failover_host``) revokes every grant on the promoted replica."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.config import load_settings
from zfs_backend.driver import failover, migration, volume_jobs
from zfs_backend.driver.models import Volume
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import AgentUnavailable, BackupError, UsageError
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_snapshot

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_agent_nodes import GRANT, FakeActivity, FakeNodes, FakeZfs, fake_driver

VID = "0e4bd1a2-95f7-4c1e-9d49-3f8f2a1c7b01"
DS = f"tank/volumes/volume-{VID}"


# ---- migrate ----------------------------------------------------------------------------------------


@pytest.fixture
def no_clones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migration.clones, "dependents", lambda zfs, parent, ds: [])


def test_a_migration_is_granted_by_its_destination_first(no_clones: None) -> None:
    src, dst = fake_driver("node1"), fake_driver("node2")
    src.zfs.snaps[DS] = []
    nodes = FakeNodes("node1", "node2")
    act = cast(FakeActivity, migration.start(src, dst, Volume(id=VID, size=1), node_for=nodes, max_retries=0))
    assert nodes.ops() == [("node2", "grant.add"), ("node1", "start")]
    [(_, asked)] = nodes.args("grant.add")
    assert (asked["peer"], asked["allow"], asked["dataset"], asked["volume"]) == (
        "node1",
        ["create"],
        DS,
        None,
    )
    assert act.params["grant"] == GRANT.format(1) and act.params["hold_at"] == "quiesce"


def test_an_operators_catchup_hold_keeps_the_controllers_quiesce_hold(no_clones: None) -> None:
    """Issue 22: ``volume migrate --hold-at catchup`` held only there, and the quiesce then unmounted a
    source still exported; the controller's hold before the quiesce comes after the operator's."""
    src, dst = fake_driver("node1"), fake_driver("node2")
    src.zfs.snaps[DS] = []
    nodes = FakeNodes("node1", "node2")
    vol = Volume(id=VID, size=1)
    act = cast(FakeActivity, migration.start(src, dst, vol, node_for=nodes, hold_at="catchup"))
    assert act.params["hold_at"] == "catchup+quiesce"


def test_a_migration_whose_grant_is_refused_starts_nothing(no_clones: None) -> None:
    src, dst = fake_driver("node1"), fake_driver("node2")
    src.zfs.snaps[DS] = []
    nodes = FakeNodes("node1", "node2")
    nodes["node2"].grant_error = UsageError(f"{DS} is not under a replica root of node2")
    with pytest.raises(UsageError, match=r"^node2: no grant for node1 to receive into node2:"):
        migration.start(src, dst, Volume(id=VID, size=1), node_for=nodes)
    assert nodes.ops() == [("node2", "grant.add")]


# ---- replicate (the driver's snapshot_replicate: ``volume replicate``, Cinder) ------------------------


def test_the_drivers_snapshot_replicate_is_granted_by_its_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zfs_backend.driver.models import Snapshot as VolumeSnapshot
    from zfs_backend.replication import api

    d = fake_driver("node1")
    d.settings = load_settings({"ZFS_BACKEND_HOME": str(tmp_path)})
    snap = VolumeSnapshot(id="s1", volume_id=VID, volume_size=1)
    d.zfs.snaps[str(d.snapshot_of(snap))] = []
    from zfs_backend.driver import remote

    monkeypatch.setattr(remote, "ensure_remote_parent", lambda settings, node, parent: None)
    nodes = FakeNodes("node1", "node2")
    monkeypatch.setattr(api, "_default_node_for", lambda settings: nodes)
    act = cast(FakeActivity, d.snapshot_replicate(snap, None, "node2"))
    assert nodes.ops() == [("node2", "grant.add"), ("node1", "start")]
    [(_, asked)] = nodes.args("grant.add")
    assert (asked["peer"], asked["dataset"], asked["allow"]) == ("node1", DS, ["create", "increment"])
    assert act.params["grant"] == GRANT.format(1)


# ---- backup and restore (the volume service) -------------------------------------------------------


@pytest.fixture
def svc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VolumeService, FakeNodes]]:
    drivers = {n: fake_driver(n) for n in ("node1", "node2", "node3")}
    s = VolumeService(load_settings({"ZFS_BACKEND_HOME": str(tmp_path)}), driver_for=drivers.__getitem__)
    now = time.time()
    with s.transaction() as db:
        db.execute(
            "INSERT INTO volumes VALUES (?, 'vol1', 'node1', 1, 'available', NULL, NULL, NULL, ?, ?)",
            (VID, now, now),
        )
    nodes = FakeNodes("node1", "node2", "node3")
    monkeypatch.setattr(volume_jobs, "_node", lambda svc, name: nodes(name))
    monkeypatch.setattr(volume_jobs.layout, "check_capacity", lambda zfs, options, add: None)
    yield s, nodes


def test_a_backup_is_granted_by_the_backup_node_first(svc: tuple[VolumeService, FakeNodes]) -> None:
    s, nodes = svc
    rec, started = volume_jobs.start_backup(s, "vol1", backup_node="node3")
    act = cast(FakeActivity, started)
    assert nodes.ops() == [("node3", "grant.add"), ("node1", "start")]
    [(_, asked)] = nodes.args("grant.add")
    assert (asked["peer"], asked["allow"], asked["volume"], asked["dataset"]) == (
        "node1",
        ["backup"],
        VID,
        None,
    )
    assert act.params["grant"] == GRANT.format(1) and act.params["volume_id"] == VID
    assert rec.activity_id == act.id


def test_a_backup_whose_grant_is_refused_leaves_no_record(svc: tuple[VolumeService, FakeNodes]) -> None:
    s, nodes = svc
    nodes["node3"].grant_error = AgentUnavailable("node3: the agent does not answer")
    with pytest.raises(AgentUnavailable, match=r"^node3: no grant for node1 to reach the backups of volume"):
        volume_jobs.start_backup(s, "vol1", backup_node="node3")
    assert nodes.ops() == [("node3", "grant.add")]
    assert volume_jobs.list_backups(s) == []


def _available_backup(s: VolumeService) -> str:
    with s.transaction() as db:
        db.execute(
            "INSERT INTO backups VALUES ('b1', ?, 'vol1', 'node1', 'node3', NULL, 1, 'available', NULL, 10, "
            "'00', ?)",
            (VID, time.time()),
        )
    return "b1"


def test_a_restore_is_granted_by_the_backup_node_and_revoked_at_its_end(
    svc: tuple[VolumeService, FakeNodes],
) -> None:
    s, nodes = svc
    name, started = volume_jobs.start_restore(s, _available_backup(s), node="node2")
    act = cast(FakeActivity, started)
    assert nodes.ops() == [("node3", "grant.add"), ("node2", "start")]
    [(_, asked)] = nodes.args("grant.add")
    assert (asked["peer"], asked["allow"], asked["volume"]) == ("node2", ["backup"], VID)
    assert asked["ttl_s"] == 86400.0  # never bound by a restore: it must outlive the restore
    assert act.params["grant"] == GRANT.format(1)
    act.state = "failed"
    with pytest.raises(BackupError):
        volume_jobs.finish_restore(s, name, started)
    assert nodes.args("grant.revoke") == [
        ("node3", {"grant": GRANT.format(1), "dataset": None, "peer": None})
    ]
    assert nodes.live == {}


def test_a_restore_whose_start_is_refused_revokes_and_leaves_no_volume(
    svc: tuple[VolumeService, FakeNodes],
) -> None:
    s, nodes = svc
    from zfs_backend.errors import DatasetExists

    nodes["node2"].start_error = DatasetExists("node2: the destination exists already")
    with pytest.raises(DatasetExists):
        volume_jobs.start_restore(s, _available_backup(s), node="node2")
    assert nodes.ops() == [("node3", "grant.add"), ("node2", "start"), ("node3", "grant.revoke")]
    assert nodes.live == {} and [v.name for v in s.list_volumes()] == ["vol1"]


# ---- forced failover ---------------------------------------------------------------------------------


@pytest.fixture
def standby(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, FakeNodes]:
    zfs = FakeZfs()
    snap = parse_snapshot(f"{DS}@zfs_backend-standby-1000")
    zfs.snaps[DS] = [Snapshot(name=snap, guid=7, createtxg=1, used=0, referenced=0, creation=1)]
    d = fake_driver("node2", zfs)
    nodes = FakeNodes("node1", "node2")
    import zfs_backend.rpc.connect as connect

    d.settings = load_settings({"ZFS_BACKEND_HOME": "/nonexistent"})
    monkeypatch.setattr(connect, "connect_node", lambda name, settings: nodes(name))
    monkeypatch.setattr(failover, "_fence", lambda standby, dataset, reason: [])
    monkeypatch.setattr(failover, "promote", lambda d, volume, clients, a=(): "198.18.0.12:/tank/volumes/x")
    monkeypatch.setattr(failover, "_settle_head", lambda standby, ds, newest: None)  # test_failover_retry's
    return d, nodes


def test_a_forced_failover_revokes_every_grant_on_the_promoted_replica(
    standby: tuple[Any, FakeNodes],
) -> None:
    d, nodes = standby
    nodes["node2"].grant("node1", ["increment", "prune"], dataset=DS, ttl_s=0)  # the old sync's
    out = failover.fail_over(d, Volume(id=VID, size=1))
    assert out["grants_revoked"] == 1 and nodes.live == {}
    assert nodes.args("grant.revoke") == [("node2", {"grant": None, "dataset": DS, "peer": None})]
    assert nodes.closed == 1


def test_a_forced_failover_goes_on_when_the_revoke_fails(
    standby: tuple[Any, FakeNodes], caplog: pytest.LogCaptureFixture
) -> None:
    d, nodes = standby
    nodes["node2"].revoke_error = AgentUnavailable("node2: no answer")
    out = failover.fail_over(d, Volume(id=VID, size=1))
    assert out["grants_revoked"] is None and out["provider_location"].startswith("198.18.0.12:")
    assert "not revoked" in caplog.text
