"""What every kind shares through ``LocalActivity`` and ``ActivityContext``: the control verbs (one
implementation; ``standby-sync`` once had its own copy, with a suspend that persisted nothing, a cancel
that waited a hard-coded 60 s and a literal failure status) and the peer host the context makes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.activity.context import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.states import CANCELLING, FAILED, STATUS_FAILED, SUSPENDED
from zfs_backend.activity.store import ActivityStore, new_activity_id
from zfs_backend.config import load_settings
from zfs_backend.errors import ZfsBackendError
from zfs_backend.replication.activity import Replicate
from zfs_backend.replication.backup import Backup, Restore
from zfs_backend.replication.migrate import Migrate
from zfs_backend.replication.standby import PREFIX, StandbySync
from zfs_backend.replication.transport import PeerHost

SYNC = {"dataset": "tank/v", "destination_node": "node2", "base": f"{PREFIX}1"}
REPL = {"snapshot": "tank/fs@s1", "source_node": "node1", "destination_node": "node2"}
REPL["destination"] = "tank/r"
MIGRATE = {"dataset": "tank/v/volume-1", "destination_node": "node2", "destination": "tank/w/volume-1"}
VOL = "0e4bd1a2-95f7-4c1e-9d49-3f8f2a1c7b01"
BACKUP = {"dataset": "tank/v/volume-1", "volume_id": VOL, "backup_id": "b1", "backup_node": "node3"}
RESTORE = {"volume_id": VOL, "backup_id": "b1", "backup_node": "node3", "destination": "tank/v/volume-2"}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ActivityContext]:
    store = ActivityStore(tmp_path / "a.db")
    yield ActivityContext(store=store, node="node1")
    store.close()


def _rec(kind: str, params: dict[str, Any]) -> ActivityRecord:
    return ActivityRecord(id=new_activity_id(), kind=kind, node="node1", params=params)


def _stored_sync(ctx: ActivityContext) -> StandbySync:
    sync = StandbySync(_rec("standby-sync", SYNC), ctx)
    ctx.store.insert(sync.record())
    return sync


class _Unreachable:
    """A standby whose agent cannot be reached: its receiving end's ``abort`` fails."""

    def abort(self) -> None:
        raise ZfsBackendError("node2: the standby's agent is unreachable")


def test_the_standby_suspend_persists_its_checkpoint_and_status(ctx: ActivityContext) -> None:
    sync = _stored_sync(ctx)
    sync._cp.update(syncs=3, total_bytes=4096)  # what the worker did since its last save
    sync.suspend()
    assert ctx.store.get(sync.id).state == SUSPENDED
    assert ctx.store.checkpoint(sync.id)["syncs"] == 3
    assert ctx.store.get(sync.id).result["syncs"] == 3


def test_the_standby_cancel_waits_its_cancel_wait_s(ctx: ActivityContext) -> None:
    sync = _stored_sync(ctx)
    assert StandbySync.cancel_wait_s == 60.0  # the kind's own: a rollback on the standby takes a while
    sync.cancel_wait_s = 7.0
    waited: list[float | None] = []
    sync._thread = object()  # type: ignore[assignment] # hosted: the worker finishes the cancel

    def wait(timeout: float | None = None) -> str:
        waited.append(timeout)
        return sync.state

    sync.wait = wait  # type: ignore[method-assign]
    sync.cancel()
    assert waited == [7.0]
    assert ctx.store.get(sync.id).state == CANCELLING


def test_a_standby_whose_rollback_fails_fails_with_status_failed(ctx: ActivityContext) -> None:
    sync = _stored_sync(ctx)
    sync._receiver = _Unreachable()  # type: ignore[assignment]
    sync.cancel()  # not hosted: finished here
    rec = ctx.store.get(sync.id)
    assert (rec.state, rec.status) == (FAILED, STATUS_FAILED)
    assert rec.error == "cancelled, but the rollback failed: node2: the standby's agent is unreachable"


def test_a_refused_standby_without_an_exit_code_fails_with_status_failed(ctx: ActivityContext) -> None:
    sync = _stored_sync(ctx)
    sync._receiver = _Unreachable()  # type: ignore[assignment]
    sync._fail("standby sync refused: gone", 0)
    rec = ctx.store.get(sync.id)
    assert (rec.state, rec.status) == (FAILED, STATUS_FAILED)
    undo = "node2: the standby's agent is unreachable"
    assert rec.error == f"standby sync refused: gone; and undoing it: {undo}"


def test_the_context_makes_the_peer_host_from_its_settings(tmp_path: Path) -> None:
    settings = load_settings({"ZFS_BACKEND_AGENT_SOCKET": str(tmp_path / "run" / "agent.sock")})
    ctx = ActivityContext(store=ActivityStore(tmp_path / "a.db"), node="node1", settings=settings)
    peer = ctx.peer_host("node2", "aes128-ctr")
    assert isinstance(peer, PeerHost)
    control = str(tmp_path / "run" / "ssh")
    assert (peer.name, peer.cipher, peer.control_dir) == ("node2", "aes128-ctr", control)


@pytest.mark.parametrize(
    ("cls", "kind", "params", "node"),
    [
        (Replicate, "replicate", REPL, "node2"),
        (Migrate, "migrate", MIGRATE, "node2"),
        (StandbySync, "standby-sync", SYNC, "node2"),
        (Backup, "backup", BACKUP, "node3"),
        (Restore, "restore", RESTORE, "node3"),
    ],
)
def test_every_kind_takes_its_peer_host_from_the_context(
    ctx: ActivityContext, cls: Any, kind: str, params: dict[str, Any], node: str
) -> None:
    made: list[tuple[str, str]] = []

    def factory(settings: Any, name: str, cipher: str) -> PeerHost:
        assert settings is ctx.settings
        made.append((name, cipher))
        return PeerHost(name, cipher=cipher)

    ctx.peer_host_for = factory
    activity = cls(_rec(kind, params), ctx)
    assert made == [(node, "aes128-gcm@openssh.com")]
    assert activity._peer.name == node
