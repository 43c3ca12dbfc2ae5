"""A destination's resume token is used only when it resumes the planned stream (``toguid``/``toname``
the planned snapshot, ``fromguid`` its planned base); otherwise the partial receive is discarded only on
a dataset this replication created, and the reason is in the activity's result and log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.activity.core import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore
from zfs_backend.errors import ReplicationConflict
from zfs_backend.kinds.replicate import Replicate
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.plan import incremental_path
from zfs_backend.replication.receiver import SOURCE_PROP, Receiver
from zfs_backend.replication.remote import DestinationDataset, DestinationTree
from zfs_backend.replication.resume import planned_chain, resume_mismatch
from zfs_backend.zfs.api import Zfs
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_dataset, parse_snapshot
from zfs_backend.zfs.resume_token import encode_resume_token

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_zfs import FakeZfs, changes


def snap(name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=guid, createtxg=txg, used=0, referenced=1 << 20, creation=0)


SRC = [
    snap("tank/fs@a", 11, 10),
    snap("tank/fs@b", 12, 20),
    snap("tank/fs@c", 13, 30),
    snap("tank/fs@d", 14, 40),
]
FS = parse_dataset("tank/fs")


def token(toguid: int, toname: str, fromguid: int | None = None, **kw: Any) -> str:
    pairs: dict[str, Any] = {} if fromguid is None else {"fromguid": fromguid}
    pairs.update({"object": 5, "offset": 1 << 20, "bytes": 3 << 20, "toguid": toguid, "toname": toname})
    return encode_resume_token(pairs, **kw)


def test_planned_chain() -> None:
    assert [s.snap for s in planned_chain(SRC, 14, 11, intermediates=False)] == ["d"]
    assert [s.snap for s in planned_chain(SRC, 14, 11, intermediates=True)] == ["b", "c", "d"]
    assert [s.snap for s in planned_chain(SRC, 14, None, intermediates=True)] == ["d"]  # full
    assert planned_chain(SRC, 99, 11, intermediates=False) == []  # the target is gone
    assert planned_chain(SRC, 14, 99, intermediates=True) == []  # the base is gone


@pytest.mark.parametrize("encoding", ["native", "xdr"])
def test_the_planned_stream_resumes(encoding: str) -> None:
    chain = planned_chain(SRC, 14, 11, intermediates=False)
    assert resume_mismatch(token(14, "tank/fs@d", 11, encoding=encoding), FS, chain, 11) is None
    full = planned_chain(SRC, 14, None, intermediates=False)
    assert resume_mismatch(token(14, "tank/fs@d", encoding=encoding), FS, full, None) is None
    assert resume_mismatch(token(14, "tank/fs@d", 0, encoding=encoding), FS, full, None) is None
    inter = planned_chain(SRC, 14, 11, intermediates=True)  # cut while receiving @c of -I @a..@d
    assert resume_mismatch(token(13, "tank/fs@c", 12, encoding=encoding), FS, inter, 11) is None
    assert resume_mismatch(token(12, "tank/fs@b", 11, encoding=encoding), FS, inter, 11) is None


@pytest.mark.parametrize(
    ("tok", "why"),
    [
        (token(99, "tank/other@x", 11), "not a snapshot this replication sends"),
        (token(13, "tank/fs@c", 12), "not a snapshot this replication sends"),  # -i planned: @c is not sent
        (token(14, "tank/victim@d", 11), "the planned snapshot is tank/fs@d"),
        (token(14, "tank/fs@d", 12), "the planned base is 11"),
        (token(14, "tank/fs@d"), "from guid none (full)"),  # a full stream where an increment is planned
        ("1-abc-def-00", "invalid receive_resume_token"),
        (token(14, "tank/fs@d", 11)[:-2] + "00", "invalid receive_resume_token"),
    ],
)
def test_any_other_token_is_refused_with_its_reason(tok: str, why: str) -> None:
    chain = planned_chain(SRC, 14, 11, intermediates=False)
    reason = resume_mismatch(tok, FS, chain, 11)
    assert reason is not None and why in reason


# -- the activity's restart ------------------------------------------------------------------------


class StubReceiver:
    """The destination as ``begin`` reports it: one top dataset holding ``snaps`` and ``token``."""

    def __init__(self, snaps: list[Snapshot], token: str | None) -> None:
        self.snaps, self.token = snaps, token
        self.calls: list[tuple[str, Any]] = []
        self.aborted = False
        self.resumes = True  # the destination's dialect has resumable receives (OpenZFS)

    def begin(self, source: str, *, recursive: bool, sent_guids: list[int]) -> DestinationTree:
        self.calls.append(("begin", source))
        top = DestinationDataset(snapshots=self.snaps, resume_token=self.token)
        there = not self.aborted
        return DestinationTree(
            node="node2",
            exists=there,
            available=1 << 40,
            resumable_receive=self.resumes,
            datasets={"": top} if there else {},
        )

    def drop_partial(self, tokens: dict[str, str]) -> dict[str, Any]:
        self.calls.append(("drop_partial", tokens))
        return {"dropped": [], "left": ["tank/fs: a partial receive of another stream; left alone"]}

    def abort(self, keep_claim: bool = False) -> dict[str, Any]:
        self.calls.append(("abort", keep_claim))
        self.aborted = True  # it created the dataset: the receiver's abort removes it
        return {"restored": True, "actions": [], "left": []}


class NoBookmarks:
    """The source's ZFS as the planner asks it: a dialect without bookmarks (zfs-fuse)."""

    dialect = OPENZFS_2.__class__(name="no-bookmarks")

    def list_bookmarks(self, dataset: Any) -> list[Any]:
        return []


PARAMS = {
    "snapshot": "tank/fs@d",
    "source_node": "node1",
    "destination_node": "node2",
    "destination": "tank/fs",
}


def _activity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: StubReceiver, **ks: Any) -> Replicate:
    monkeypatch.setattr(Replicate, "receiver", property(lambda self: stub))
    monkeypatch.setattr(Replicate, "_source_tree", lambda self: {"": list(SRC)})
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    act = Replicate(ActivityRecord(id="act-r", kind="replicate", node="node1", params=PARAMS), ctx)
    act._src = NoBookmarks()  # type: ignore[assignment]
    act.persist_new()
    act.kind_state.update({"target_guid": 14, "base": "a", "base_guid": 11, **ks})
    return act


def test_restart_resumes_its_own_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = token(14, "tank/fs@d", 11)
    stub = StubReceiver([snap("tank/fs@a", 11, 10)], own)
    act = _activity(tmp_path, monkeypatch, stub, dest_existed=True)
    assert act._prepare_restart() == own
    assert ("abort", True) not in stub.calls and "resume_refused" not in act.kind_state


def test_restart_resumes_with_a_base_recorded_by_name_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = token(14, "tank/fs@d", 11)
    stub = StubReceiver([snap("tank/fs@a", 11, 10)], own)
    act = _activity(tmp_path, monkeypatch, stub, dest_existed=True)
    del act.kind_state["base_guid"]  # an activity planned before base_guid was recorded
    assert act._prepare_restart() == own


def test_a_foreign_token_on_an_existing_dataset_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = token(77, "tank/victim@s1", 11)
    stub = StubReceiver([snap("tank/fs@a", 11, 10)], foreign)
    act = _activity(tmp_path, monkeypatch, stub, dest_existed=True)
    with pytest.raises(ReplicationConflict, match=r"on restart, node2:tank/fs: .* left alone") as e:
        act._prepare_restart()
    assert "\n" not in str(e.value)
    assert ("drop_partial", {"": foreign}) in stub.calls  # the destination decides, on its proofs
    assert [c for c in stub.calls if c[0] == "abort"] == []  # nothing discarded
    assert stub.token == foreign
    rec = act.ctx.store.get("act-r")
    assert "tank/victim@s1" in rec.result["resume_refused"]


def test_a_foreign_token_on_a_dataset_it_created_is_discarded_and_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = StubReceiver([], token(14, "tank/fs@d", 12))  # the right snapshot from another base
    act = _activity(tmp_path, monkeypatch, stub, dest_existed=False, base=None, base_guid=None)
    assert act._prepare_restart() is None  # no token: a fresh stream
    assert ("abort", True) in stub.calls  # the receiver's abort: it removes only what it proves its own
    assert act._current is not None and act._current.full
    assert "from guid 12" in act.ctx.store.get("act-r").result["resume_refused"]


# -- a token whose snapshot the source pruned: discarded, and the plan falls back by itself ----------


class LocalReceiver:
    """The activity's ``RemoteReceiver`` over a real :class:`Receiver` on the in-memory node model."""

    def __init__(self, rx: Receiver, holder: str) -> None:
        self.rx, self.holder = rx, holder

    def begin(self, source: str, *, recursive: bool, sent_guids: list[int]) -> DestinationTree:
        out = self.rx.begin("tank/fs", self.holder, source, recursive=recursive, sent_guids=sent_guids)
        return DestinationTree.from_dict(out)

    def drop_partial(self, tokens: dict[str, str]) -> dict[str, Any]:
        return self.rx.drop_partial("tank/fs", self.holder, tokens)

    def abort(self, keep_claim: bool = False) -> dict[str, Any]:
        return self.rx.abort("tank/fs", self.holder, keep_claim=keep_claim)

    def renew(self) -> None:
        self.rx.renew("tank/fs", self.holder)


HOLDER = "act-01M8PC6J46SJJSD1CGAQ7Y8800"


def _cut_in_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, source_dataset: str) -> tuple[Any, Any]:
    """An -I @a..@d replication cut while receiving @c (the destination holds @a, @b and @c's partial
    state), then the source pruned @c."""
    zfs = FakeZfs(OPENZFS_2)
    zfs.make("tank/fs", "a", "b", guids=[11, 12])
    rx = Receiver(cast(Zfs, zfs), ClaimStore(tmp_path / "c.db"), changes=changes)
    recv = LocalReceiver(rx, HOLDER)
    recv.begin(f"node1:{source_dataset}", recursive=False, sent_guids=[11, 12, 13, 14])
    zfs.ds["tank/fs"].snapshots = zfs.ds["tank/fs"].snapshots[:1]  # @b came in this stream
    zfs.add_snapshot("tank/fs", "b", 12)
    zfs.ds["tank/fs"].token = token(13, f"{source_dataset}@c", 12)
    pruned = [s for s in SRC if s.snap != "c"]
    monkeypatch.setattr(Replicate, "receiver", property(lambda self: recv))
    monkeypatch.setattr(Replicate, "_source_tree", lambda self: {"": list(pruned)})
    ctx = ActivityContext(store=ActivityStore(tmp_path / "a.db"), node="node1")
    params = {**PARAMS, "intermediates": True, "snapshot": f"{source_dataset}@d"}
    act = Replicate(ActivityRecord(id=HOLDER, kind="replicate", node="node1", params=params), ctx)
    act._src = NoBookmarks()  # type: ignore[assignment]
    act.persist_new()
    act.kind_state.update({"target_guid": 14, "base": "a", "base_guid": 11, "dest_existed": True})
    return act, zfs


def test_a_token_of_a_pruned_snapshot_is_discarded_and_the_plan_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    act, zfs = _cut_in_c(tmp_path, monkeypatch, source_dataset="tank/fs")
    assert act._prepare_restart() is None  # no token: a fresh stream
    assert ("receive -A", "tank/fs") in zfs.calls and zfs.ds["tank/fs"].token is None
    assert zfs.guids("tank/fs") == [11, 12]  # what it holds is kept
    plan = act._current
    assert plan is not None and plan.base is not None and plan.base.snap == "b"  # the newest common one
    assert plan.target.snap == "d" and plan.intermediates
    rec = act.ctx.store.get(HOLDER)
    assert "not a snapshot this replication sends" in rec.result["resume_refused"]
    said = rec.result["resume_discarded"]
    assert "discarded the partial receive of tank/fs" in said and "newest common snapshot" in said
    assert any(e["detail"] == said for e in act.ctx.store.events(HOLDER))  # in the activity's events


def test_a_partial_receive_it_cannot_prove_its_own_refuses_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    act, zfs = _cut_in_c(tmp_path, monkeypatch, source_dataset="tank/fs")
    foreign = token(77, "tank/victim@x", 12)  # a receive outside the project, into the claimed dataset
    zfs.ds["tank/fs"].token = foreign
    with pytest.raises(ReplicationConflict, match=r"zfs receive -A tank/fs") as e:
        act._prepare_restart()
    assert "\n" not in str(e.value) and "tank/victim@x" in str(e.value)
    assert zfs.ds["tank/fs"].token == foreign and ("receive -A", "tank/fs") not in zfs.calls


def test_a_new_replication_drops_an_earlier_runs_partial_receive_before_its_first_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    act, zfs = _cut_in_c(tmp_path, monkeypatch, source_dataset="tank/fs")
    stale = zfs.ds["tank/fs"].token
    zfs.ds["tank/fs"].props[SOURCE_PROP] = ("node1:tank/fs", "local")  # the source's own replica
    # as if the claim had been taken with the partial receive already there (an abandoned earlier run)
    claims = act.receiver.rx.claims
    claims.save(claims.get("tank/fs").with_state(partial_before={"": stale}))
    act._current = incremental_path(
        [s for s in SRC if s.snap != "c"], zfs.list_snapshots(FS), "d", intermediates=True
    )
    act.kind_state["stale_tokens"] = {"": stale}
    monkeypatch.setattr(act, "_src", type("Src", (), {"send_argv": lambda self, spec: ["zfs", "send"]})())
    act.build_producer(0)
    assert zfs.ds["tank/fs"].token is None and act.kind_state["stale_dropped"]
    assert "resume_discarded" in act.ctx.store.get(HOLDER).result
    zfs.ds["tank/fs"].token = stale
    act.build_producer(0)  # once only
    assert zfs.ds["tank/fs"].token == stale


def test_the_stream_keeps_blocks_as_on_disk_where_both_ends_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    act = _activity(tmp_path, monkeypatch, StubReceiver([], None))
    plan = incremental_path(SRC, None, "d")
    assert not isinstance(plan, type(None))
    act.kind_state["stream_flags"] = {"large_blocks": True, "compressed": True, "embedded": True}
    spec = act._send_spec(plan)  # type: ignore[arg-type]
    assert spec.large_blocks and spec.compressed and spec.embedded
    act.kind_state["stream_flags"] = {"large_blocks": False, "compressed": False, "embedded": False}
    assert not act._send_spec(plan).compressed  # type: ignore[arg-type]


# -- suspend on OpenZFS: the stream stops, resume sends from the token and counts on from it ----------


class ResumingSource(NoBookmarks):
    """The source's ZFS as the stream's builder asks it, in ``dialect``."""

    def __init__(self, dialect: Any = OPENZFS_2) -> None:
        self.dialect = dialect

    def resume_send_argv(self, tok: str) -> list[str]:
        return ["zfs", "send", "-t", tok]

    def send_argv(self, spec: Any) -> list[str]:
        return ["zfs", "send", str(spec.snapshot)]

    def send_estimate(self, spec: Any) -> int:
        return 1 << 20


def test_a_stream_resumed_from_the_token_counts_on_from_the_bytes_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = token(14, "tank/fs@d", 11)  # "bytes": 3 MiB of the stream are on the destination
    stub = StubReceiver([snap("tank/fs@a", 11, 10)], own)
    act = _activity(tmp_path, monkeypatch, stub, dest_existed=True)
    act._src = ResumingSource()  # type: ignore[assignment]
    act.on_restart({})  # after a suspend that stopped the stream (or a cut one)
    assert act.build_producer(0).argv == ["zfs", "send", "-t", own]
    assert act.stream_resumes_at() == 3 << 20
    stub.token = None  # a restart that finds no token: a fresh stream, counted as such
    act.on_restart({})
    assert act.build_producer(0).argv[:2] == ["zfs", "send"] and act.stream_resumes_at() is None


def test_suspend_stops_the_stream_only_where_both_ends_resume_receives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("zfs_backend.kinds.replicate.estimate_send", lambda zfs, spec: _Estimate())
    for n, (dest_resumes, source, tears_down) in enumerate(
        [
            (True, OPENZFS_2, True),
            (False, OPENZFS_2, False),  # an OpenZFS source into a zfs-fuse destination
            (True, ZFS_FUSE_07, False),  # a zfs-fuse source (no send -t)
        ]
    ):
        stub = StubReceiver([snap("tank/fs@a", 11, 10)], None)
        stub.resumes = dest_resumes
        (tmp_path / str(n)).mkdir()
        act = _activity(tmp_path / str(n), monkeypatch, stub)
        act._src = ResumingSource(source)  # type: ignore[assignment]
        act.plan()
        assert act.suspend_tears_down() is tears_down, (dest_resumes, source.name)
    # a tree sent in parallel keeps pausing its relays
    act = _activity(tmp_path, monkeypatch, StubReceiver([], None), suspend_teardown=True)
    assert act.suspend_tears_down()
    monkeypatch.setattr(Replicate, "parallel_tree", property(lambda self: True))
    assert not act.suspend_tears_down()


class _Estimate:
    bytes, exact, method = 1 << 20, True, "test"
