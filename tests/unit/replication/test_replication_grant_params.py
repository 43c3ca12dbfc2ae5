"""The ``grant`` param of every kind that makes a peer write into another node (replicate, migrate,
standby-sync, backup, restore): optional, validated (``validate_grant``), other unknown params still
refused; and the source side presents it on every ``recv.*`` / ``backup.*`` call to the destination."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.activity.core import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore
from zfs_backend.errors import UsageError
from zfs_backend.kinds.backup import Backup, Restore
from zfs_backend.kinds.standby import StandbySync
from zfs_backend.replication.migrate_request import MigrateRequest
from zfs_backend.replication.remote import RemoteReceiver
from zfs_backend.replication.request import Request
from zfs_backend.replication.wire import validate_grant
from zfs_backend.zfs.names import parse_dataset

G = "gr-01M8PC6J46SJJSD1CGAQ7Y88PX"
A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
BAD: list[object] = [
    "gr-",
    "gr-01M8PC6J46SJJSD1CGAQ7Y88P",
    "gr-01M8PC6J46SJJSD1CGAQ7Y88PU",
    "act-01M8PC6J46SJJSD1CGAQ7Y88PX",
]
BAD += ["gr-01m8pc6j46sjjsd1cgaq7y88px", f"{G}\n", f"{G}; rm -rf /", 12, None, ["gr-"]]
REPL = {
    "snapshot": "tank/fs@s1",
    "source_node": "node1",
    "destination_node": "node2",
    "destination": "tank/r",
}
MIGRATE = {"dataset": "tank/v/volume-1", "destination_node": "node2", "destination": "tank/w/volume-1"}
SYNC = {"dataset": "tank/v", "destination_node": "node2", "base": "zfs_backend-standby-1"}
VOL = "0e4bd1a2-95f7-4c1e-9d49-3f8f2a1c7b01"
BACKUP = {"dataset": "tank/v/volume-1", "volume_id": VOL, "backup_id": "b1", "backup_node": "node3"}
RESTORE = {"volume_id": VOL, "backup_id": "b1", "backup_node": "node3", "destination": "tank/v/volume-2"}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ActivityContext]:
    store = ActivityStore(tmp_path / "a.db")
    yield ActivityContext(store=store, node="node1")
    store.close()


def _rec(kind: str, params: dict[str, Any]) -> ActivityRecord:
    return ActivityRecord(id=A, kind=kind, node="node1", params=params)


@pytest.mark.parametrize("bad", BAD)
def test_validate_grant(bad: object) -> None:
    assert validate_grant(G) == G
    with pytest.raises(UsageError) as e:
        validate_grant(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", ["gr-x", f"{G} ", 7])
def test_every_kind_validates_its_grant(bad: object, ctx: ActivityContext) -> None:
    assert Request.from_params({**REPL, "grant": G}).grant == G
    assert Request.from_params(REPL).grant is None
    assert MigrateRequest.from_params({**MIGRATE, "grant": G}).grant == G
    assert StandbySync(_rec("standby-sync", {**SYNC, "grant": G}), ctx).grant == G
    assert Backup(_rec("backup", {**BACKUP, "grant": G}), ctx).grant == G
    assert Restore(_rec("restore", {**RESTORE, "grant": G}), ctx).grant == G
    for build in (
        lambda: Request.from_params({**REPL, "grant": bad}),
        lambda: MigrateRequest.from_params({**MIGRATE, "grant": bad}),
        lambda: StandbySync(_rec("standby-sync", {**SYNC, "grant": bad}), ctx),
        lambda: Backup(_rec("backup", {**BACKUP, "grant": bad}), ctx),
        lambda: Restore(_rec("restore", {**RESTORE, "grant": bad}), ctx),
    ):
        with pytest.raises(UsageError):
            build()
    assert ctx.store.list() == []


def test_unknown_params_stay_refused(ctx: ActivityContext) -> None:
    extra = {"grant": G, "grants": [G]}
    for build in (
        lambda: Request.from_params({**REPL, **extra}),
        lambda: MigrateRequest.from_params({**MIGRATE, **extra}),
        lambda: StandbySync(_rec("standby-sync", {**SYNC, **extra}), ctx),
        lambda: Backup(_rec("backup", {**BACKUP, **extra}), ctx),
        lambda: Restore(_rec("restore", {**RESTORE, **extra}), ctx),
    ):
        with pytest.raises(UsageError, match="'grants'"):
            build()


def test_params_round_trip_with_and_without_a_grant() -> None:
    req = Request.from_params({**REPL, "grant": G})
    assert req.to_params()["grant"] == G and Request.from_params(req.to_params()) == req
    assert "grant" not in Request.from_params(REPL).to_params()
    m = MigrateRequest.from_params({**MIGRATE, "grant": G})
    assert MigrateRequest.from_params(m.to_params()) == m
    assert "grant" not in MigrateRequest.from_params(MIGRATE).to_params()


class Peer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append((op, args))
        if op == "recv.begin":
            return {"node": "node2", "exists": False, "available": None}
        if op == "backup.list":
            return []
        return {}


def test_remote_receiver_presents_its_grant_on_every_call() -> None:
    peer = Peer()
    r = RemoteReceiver(peer, parse_dataset("tank/r"), A, G)
    r.begin("node1:tank/fs", recursive=False, sent_guids=[1])
    r.clean()
    r.discard({"": 1})
    r.renew()
    r.expect([2])
    r.commit(2, prune_prefix="zfs_backend-standby-")
    r.finish({"": 2})
    r.release()
    r.abort(keep_claim=True)
    r.fence("x")
    assert len(peer.calls) == 10
    assert all(a["grant"] == G and a["holder"] == A and a["dataset"] == "tank/r" for _, a in peer.calls)
    bare = Peer()
    RemoteReceiver(bare, parse_dataset("tank/r"), A).begin("node1:tank/fs", recursive=False, sent_guids=[])
    assert "grant" not in bare.calls[0][1]  # none given: none sent (the controller's own sessions)
    with pytest.raises(UsageError):
        RemoteReceiver(bare, parse_dataset("tank/r"), A, "gr-x")


def test_kinds_hand_their_grant_to_the_receiver(ctx: ActivityContext) -> None:
    peer = Peer()
    ctx.peer = lambda name: peer
    from zfs_backend.kinds.migrate import Migrate
    from zfs_backend.kinds.replicate import Replicate

    assert Replicate(_rec("replicate", {**REPL, "grant": G}), ctx).receiver.grant == G
    assert Migrate(_rec("migrate", {**MIGRATE, "grant": G}), ctx).receiver.grant == G
    assert StandbySync(_rec("standby-sync", {**SYNC, "grant": G}), ctx).receiver.grant == G


def test_backup_kinds_present_their_grant_on_every_backup_call(ctx: ActivityContext) -> None:
    peer = Peer()
    ctx.peer = lambda name: peer
    b = Backup(_rec("backup", {**BACKUP, "grant": G}), ctx)
    for verb in ("list", "begin", "commit", "abort"):
        b._call(verb, backup="b1")
    r = Restore(_rec("restore", {**RESTORE, "grant": G}), ctx)
    r._call("verify", backup="b1")
    assert [op for op, _ in peer.calls] == [
        f"backup.{v}" for v in ("list", "begin", "commit", "abort", "verify")
    ]
    assert all(a["grant"] == G and a["volume"] == VOL for _, a in peer.calls)
    bare = Peer()
    ctx.peer = lambda name: bare
    Backup(_rec("backup", BACKUP), ctx)._call("list")
    assert bare.calls == [("backup.list", {"volume": VOL})]
