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
from zfs_backend.errors import StreamFailed, ZfsBackendError
from zfs_backend.hosts.peer import PeerHost
from zfs_backend.kinds.backup import Backup, Restore
from zfs_backend.kinds.migrate import Migrate
from zfs_backend.kinds.replicate import Replicate
from zfs_backend.kinds.standby import PREFIX, StandbySync
from zfs_backend.zfs.cmd import stream_error
from zfs_backend.zfs.models import SendSpec
from zfs_backend.zfs.names import parse_snapshot

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


MODIFIED = (
    "consumer exited 1: cannot receive: destination tank/r has been modified | since most recent snapshot"
)
PERMANENT_FAILURES = [
    "consumer exited 1: cannot receive: out of space",
    "consumer exited 1: most recent snapshot of tank/r does not match incremental source",
    "consumer exited 1: cannot receive: destination 'tank/r' exists",
    "producer exited 1: cannot open 'tank/fs@s1': dataset does not exist",
    "consumer exited 255: Host key verification failed.",
    "consumer exited 255: node2: Permission denied (publickey).",
    "consumer exited 1: zfs-backend peer-exec: refused by the peer (node1): not granted",
]
PASSING_FAILURES = ["consumer exited 255: Connection closed by 198.18.172.12 port 22", "stream ended early"]


@pytest.mark.parametrize(
    ("cls", "kind", "params"),
    [(Replicate, "replicate", REPL), (Migrate, "migrate", MIGRATE), (Backup, "backup", BACKUP)],
)
def test_kinds_retry_by_the_type_of_the_stream_error(
    ctx: ActivityContext, cls: Any, kind: str, params: dict[str, Any]
) -> None:
    activity = cls(_rec(kind, params), ctx)
    for message in PERMANENT_FAILURES:
        assert not activity.retryable(stream_error(message), 1), message
    for message in PASSING_FAILURES:
        assert activity.retryable(stream_error(message), 1), message
    corrupt = stream_error("producer exited 1: stream file is corrupted (sha256 mismatch)")
    assert activity.retryable(corrupt, 1) is (cls is not Backup)  # only a restore's producer says so


class _Cleaning:
    def __init__(self) -> None:
        self.cleaned: list[str] = []

    def clean(self, dataset: str) -> None:
        self.cleaned.append(dataset)


def test_a_modified_refusal_is_cleaned_where_the_typed_error_says(
    ctx: ActivityContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    repl = Replicate(_rec("replicate", REPL), ctx)
    receiver = _Cleaning()
    monkeypatch.setattr(Replicate, "receiver", property(lambda self: receiver))
    assert not repl.recover_failure(stream_error(PASSING_FAILURES[0]))
    assert repl.recover_failure(stream_error(MODIFIED))
    assert receiver.cleaned == ["tank/r"]


def test_the_standby_stream_cleans_a_modified_standby_once_and_refuses_a_diverged_one(
    ctx: ActivityContext,
) -> None:
    sync = StandbySync(_rec("standby-sync", SYNC), ctx)
    receiver = _Cleaning()
    sync._receiver = receiver  # type: ignore[assignment]
    answers = [(1, 0, 0.0, MODIFIED), (0, 42, 0.5, "")]
    sync._pipe = lambda spec: answers.pop(0)  # type: ignore[method-assign]
    spec = SendSpec(parse_snapshot("tank/v@s2"), incremental_from=parse_snapshot("tank/v@s1"))
    assert sync._stream(spec) == (42, 0.5)
    assert receiver.cleaned == ["tank/r"]
    answers[:] = [(1, 0, 0.0, PERMANENT_FAILURES[1])]
    with pytest.raises(Exception, match="does not match incremental source") as refused:
        sync._stream(spec)
    assert type(refused.value).__name__ == "_Permanent"
    answers[:] = [(1, 0, 0.0, PASSING_FAILURES[0])]
    with pytest.raises(StreamFailed):  # retried at the next interval
        sync._stream(spec)
