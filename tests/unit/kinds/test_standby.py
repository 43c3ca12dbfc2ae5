"""What one ``standby-sync`` sync costs (kinds.standby): two calls to the standby's receiving end
(``recv.expect`` before the stream, one ``recv.commit`` after it that verifies, holds and prunes), and
the status report written with the checkpoint in one store write, never in a write of its own; the
calls of one pair's standby-syncs batched (kinds.standby_pair)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import until

from zfs_backend.activity.context import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore, new_activity_id
from zfs_backend.errors import AlreadyRunning
from zfs_backend.kinds.standby import PREFIX, StandbySync
from zfs_backend.kinds.standby_pair import pair_calls
from zfs_backend.rpc.protocol import error_payload
from zfs_backend.zfs.models import SendSpec

SYNC = {"dataset": "tank/v", "destination_node": "node2", "base": f"{PREFIX}1"}


class _Standby:
    """The standby's agent: records the calls, answers as its receiving end would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append((op, args))
        return {"verified": True, "held": [], "pruned": []} if op == "recv.commit" else {}


@pytest.fixture
def standby() -> _Standby:
    return _Standby()


@pytest.fixture
def ctx(tmp_path: Path, standby: _Standby) -> Iterator[ActivityContext]:
    store = ActivityStore(tmp_path / "a.db")
    yield ActivityContext(store=store, node="node1", peer=lambda name: standby)
    store.close()


def _sync(ctx: ActivityContext, monkeypatch: pytest.MonkeyPatch) -> tuple[StandbySync, list[str]]:
    rec = ActivityRecord(id=new_activity_id(), kind="standby-sync", node="node1", params=SYNC)
    s = StandbySync(rec, ctx)
    s._cp.update(base={"snap": f"{PREFIX}1", "guid": 21}, own=[f"{PREFIX}1"])
    ctx.store.insert(s.record(), checkpoint=dict(s._cp))
    done: list[str] = []
    monkeypatch.setattr(s._zfs, "snapshot", lambda snap: done.append(f"snapshot {snap}"))
    monkeypatch.setattr(s._zfs, "get_int", lambda snap, prop: 22)

    def stream(spec: SendSpec) -> tuple[int, float]:
        done.append(f"stream {spec.snapshot}")
        return 4096, 0.01

    monkeypatch.setattr(s, "_stream", stream)
    monkeypatch.setattr(s, "_local_base", lambda snap: done.append(f"local base {snap}"))
    monkeypatch.setattr(s, "_start_receiver", lambda: done.append("next receiver"))
    return s, done


def test_a_sync_is_one_expect_and_one_commit_that_prunes(
    ctx: ActivityContext, standby: _Standby, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, done = _sync(ctx, monkeypatch)
    s._sync()
    assert [op for op, _ in standby.calls] == ["recv.expect", "recv.commit"]
    expect, commit = (args for _, args in standby.calls)
    assert expect["sent_guids"] == [22]
    assert commit["target_guid"] == 22 and commit["prune_prefix"] == PREFIX
    snap = done[0].removeprefix("snapshot ")
    name = snap.split("@")[1]
    assert snap.startswith(f"tank/v@{PREFIX}")
    assert done == [f"snapshot {snap}", f"stream {snap}", f"local base {name}", "next receiver"]
    assert s._cp["base"] == {"snap": name, "guid": 22}


def test_a_carry_on_commit_does_not_prune(ctx: ActivityContext, standby: _Standby) -> None:
    rec = ActivityRecord(id=new_activity_id(), kind="standby-sync", node="node1", params=SYNC)
    s = StandbySync(rec, ctx)
    s._commit(f"{PREFIX}1", 21)
    args = {"dataset": "tank/v", "holder": rec.id, "target_guid": 21, "prune_prefix": None}
    assert standby.calls == [("recv.commit", args)]


def test_the_status_report_is_written_with_the_checkpoint(
    ctx: ActivityContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _done = _sync(ctx, monkeypatch)
    writes: list[str] = []

    def counted(name: str) -> Callable[..., Any]:
        real = getattr(ctx.store, name)

        def call(*a: Any, **kw: Any) -> Any:
            writes.append(name)
            return real(*a, **kw)

        return call

    for name in ("update_progress", "save_result", "save_checkpoint"):
        monkeypatch.setattr(ctx.store, name, counted(name))
    s._sync()
    assert "save_result" not in writes and "save_checkpoint" not in writes
    rec = ctx.store.get(s.id)
    assert rec.result is not None and rec.result["syncs"] == 1
    assert rec.result["last_sync"]["bytes"] == 4096
    assert ctx.store.checkpoint(s.id)["syncs"] == 1


def test_the_standbys_of_one_pair_commit_together(
    ctx: ActivityContext, standby: _Standby, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three standby-syncs of one pair: the commits made while one is in flight go to the standby in one
    ``recv.commit_many``, each activity with its own answer (one refused: that activity's sync fails,
    the others' commit)."""
    syncs = []
    for ds in ("tank/v", "tank/w", "tank/x"):
        monkeypatch.setitem(SYNC, "dataset", ds)
        s, _done = _sync(ctx, monkeypatch)
        syncs.append(s)
    gate = threading.Event()
    real = standby.call

    def call(op: str, **args: Any) -> Any:
        if op == "recv.commit" and args["dataset"] == "tank/v":
            real(op, **args)
            gate.wait(30)  # in flight while the others come to commit
            return {"verified": True, "held": [], "pruned": []}
        if op == "recv.commit_many":
            standby.calls.append((op, args))
            return [
                {"error": error_payload(AlreadyRunning("fenced"))} if i["dataset"] == "tank/x" else {"ok": {}}
                for i in args["items"]
            ]
        return real(op, **args)

    monkeypatch.setattr(standby, "call", call)
    errors: dict[str, Exception] = {}

    def run(s: StandbySync) -> None:
        try:
            s._sync()
        except Exception as e:
            errors[str(s.dataset)] = e

    threads = [threading.Thread(target=run, args=(s,)) for s in syncs]
    threads[0].start()
    until(
        "the first commit in flight",
        lambda: any(op == "recv.commit" for op, _ in standby.calls),
        30,
        interval=0.01,
    )
    for t in threads[1:]:
        t.start()
    until("two commits waiting", lambda: len(pair_calls(standby).commits._queue) == 2, 30, interval=0.01)
    gate.set()
    for t in threads:
        t.join(30)
    [(_op, batch)] = [(op, a) for op, a in standby.calls if op == "recv.commit_many"]
    assert sorted(i["dataset"] for i in batch["items"]) == ["tank/w", "tank/x"]
    assert all(i["prune_prefix"] == PREFIX and i["holder"].startswith("act-") for i in batch["items"])
    assert list(errors) == ["tank/x"] and isinstance(errors["tank/x"], AlreadyRunning)
    assert syncs[0]._cp["syncs"] == 1 and syncs[1]._cp["syncs"] == 1 and "syncs" not in syncs[2]._cp
    assert syncs[1]._cp["last_sync"]["batch"]["commit"] == 2


def test_between_syncs_further_apart_than_a_renewal_the_claim_is_renewed(
    ctx: ActivityContext, standby: _Standby, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby whose ``interval_s`` is longer than its claim's lease (default 300 s; up to a day is
    allowed) renewed the claim only at each sync's expect: between syncs it lapsed, the standby's hold on
    its base was stale (``holds --release-stale`` released it) and its dataset free for another holder.
    Now the claim is renewed every ``RENEW_EVERY_S`` while the loop waits (shortened here); a renewal
    that fails is left to the next sync."""
    import zfs_backend.kinds.standby as standby_kind

    monkeypatch.setattr(standby_kind, "RENEW_EVERY_S", 0.05)
    rec = ActivityRecord(
        id=new_activity_id(), kind="standby-sync", node="node1", params={**SYNC, "interval_s": 600}
    )
    s = StandbySync(rec, ctx)
    ctx.store.insert(s.record(), checkpoint={})
    syncs: list[float] = []

    def sync() -> None:
        syncs.append(time.time())
        s._cp["next_at"] = time.time() + 600

    monkeypatch.setattr(s, "_carry_on", lambda: None)
    monkeypatch.setattr(s, "_sync", sync)
    loop = threading.Thread(target=s._run, daemon=True)
    loop.start()
    renews = lambda: [a for op, a in standby.calls if op == "recv.renew"]  # noqa: E731
    try:
        until("three renewals between syncs", lambda: len(renews()) >= 3, 30, interval=0.02)
        standby.call = lambda op, **a: (_ for _ in ()).throw(OSError("gone"))  # type: ignore[method-assign]
        time.sleep(0.3)  # renewals failing: logged, the loop waits on
        assert loop.is_alive()
    finally:
        s._abort = "detach"
        s._woken.set()
        loop.join(10)
    assert not loop.is_alive() and len(syncs) == 1
    assert renews()[0] == {"dataset": "tank/v", "holder": rec.id}
