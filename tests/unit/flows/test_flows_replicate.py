"""The generic replication path (:class:`ControllerStream`) and a revert's :func:`undo_delivery` on the
in-memory model of a node's datasets: the destination's real :class:`Receiver` answers the controller's
``recv.*`` calls, so the claim, the read-only lock, the mark and the restore are the backend path's own.
Races are injected into the head check (a write or a snapshot between the check and the rollback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.errors import DestinationDiverged, FlowError
from zfs_backend.flows import replicate
from zfs_backend.flows.env import set_env
from zfs_backend.flows.replicate import ControllerStream, undo_delivery
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.receiver import RECEIVER_PROP, Receiver
from zfs_backend.zfs.api import Zfs
from zfs_backend.zfs.changes import HeadChanges
from zfs_backend.zfs.names import parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs, bytes_since, changes

OTHER = "act-01M8PC6J46SJJSD1CGAQ7Y88PY"
SNAP = "node1:tank/v@s2"
DS = parse_dataset("tank/r")


class SourceZfs(FakeZfs):
    def estimate_send_size(self, spec: Any) -> int:
        return 1 << 20

    def send_argv(self, spec: Any) -> list[str]:
        return ["zfs", "send", str(spec.snapshot)]


class Client:
    """The controller's session to the destination's agent: ``recv.<verb>`` calls on its Receiver."""

    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    def call(self, op: str, **args: Any) -> Any:
        return getattr(self.rx, op.removeprefix("recv."))(**args)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.src, self.dst = SourceZfs(), FakeZfs()
        self.src.make("tank/v", "s1", "s2", guids=[11, 12])
        self.rx = Receiver(
            cast(Zfs, self.dst), ClaimStore(tmp / "claims.db"), changes=changes, bytes_since=bytes_since
        )

    def driver(self, node: str) -> Any:
        return type("D", (), {"zfs": self.src if node == "node1" else self.dst})()

    def agent(self, node: str) -> Any:
        assert node == "node2"
        return type("N", (), {"client": Client(self.rx)})()


@pytest.fixture
def e(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    old = set_env(e)  # type: ignore[arg-type]
    yield e
    set_env(old)


def _stream(e: Env, monkeypatch: Any, *, fail: bool = False) -> list[Any]:
    """``_pipe`` as the receive would leave the destination; records the claims seen meanwhile."""
    seen: list[Any] = []

    def pipe(self: Any, src: Any, send: Any, dst: FakeZfs, recv: Any, est: int, renew: Any) -> None:
        seen.append((e.rx.status(), dict(dst.ds["tank/r"].props) if "tank/r" in dst.ds else None))
        if "tank/r" not in dst.ds:
            dst.make("tank/r", "s1", "s2", guids=[11, 12])
        else:
            dst.add_snapshot("tank/r", "s2", 12)
        if fail:
            raise FlowError("controller stream failed: receive 1 cut")

    monkeypatch.setattr(ControllerStream, "_pipe", pipe)
    return seen


def test_the_generic_path_claims_and_marks_what_it_created(e: Env, monkeypatch: Any) -> None:
    seen = _stream(e, monkeypatch)
    out = ControllerStream("s").execute(SNAP, "node2", "tank/r")
    assert out["created"] is True and out["holder"] and out["sent"] == [11, 12]
    assert [c["holder"] for c in seen[0][0]] == [out["holder"]]  # claimed while it streamed
    assert e.dst.get_with_source(DS, RECEIVER_PROP) == (out["holder"], "local")
    assert e.dst.get_with_source(DS, "readonly") == ("on", "local")
    assert e.rx.status() == []


def test_the_generic_path_locks_an_existing_replica_and_puts_it_back_when_it_fails(
    e: Env, monkeypatch: Any
) -> None:
    e.dst.make("tank/r", "s1", guids=[11], readonly=("off", "local"))
    seen = _stream(e, monkeypatch, fail=True)
    with pytest.raises(FlowError, match="cut"):
        ControllerStream("s").execute(SNAP, "node2", "tank/r")
    assert seen[0][1]["readonly"] == ("on", "local")  # read-only while it streamed
    assert e.dst.guids("tank/r") == [11]  # what it received is rolled back (recv.abort)
    assert e.dst.get_with_source(DS, "readonly") == ("off", "local") and e.rx.status() == []


def test_the_generic_path_refuses_a_destination_written_to(e: Env, monkeypatch: Any) -> None:
    e.dst.make("tank/r", "s1", guids=[11], readonly=("off", "local"))
    e.dst.ds["tank/r"].head = "changed"
    seen = _stream(e, monkeypatch)
    with pytest.raises(DestinationDiverged):
        ControllerStream("s").execute(SNAP, "node2", "tank/r")
    assert not seen and e.dst.guids("tank/r") == [11] and e.rx.status() == []
    assert not [c for c in e.dst.calls if c[0] in ("destroy", "rollback")]


def test_the_generic_path_reverts_through_undo_delivery(e: Env, monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    _stream(e, monkeypatch)
    t = ControllerStream("s")
    out = t.execute(SNAP, "node2", "tank/r")
    t.revert("node2", "tank/r", out)
    assert "tank/r" not in e.dst.ds
    t.revert("node2", "tank/r", {"created": False, "holder": None, "sent": [11, 12]})  # up to date: no-op


# --- undo_delivery: a created replica --------------------------------------------------------------------


HOLDER = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"


def _undo(dst: FakeZfs, *, created: bool, delivered: str = "s2") -> str:
    return undo_delivery(
        cast(Zfs, dst), DS, holder=HOLDER, created=created, source_guids={11, 12}, delivered=delivered
    )


@pytest.mark.parametrize(
    ("snaps", "guids", "mark", "readonly", "why"),
    [
        (("s1", "s2"), [11, 12], OTHER, "on", "does not carry this replication's mark"),
        (("s1", "s2"), [11, 12], "-", "on", "does not carry this replication's mark"),
        ((), [], HOLDER, "on", "holds no snapshot"),  # no snapshot: nothing to check its head against
        (("s1", "s2", "user"), [11, 12, 99], HOLDER, "off", "writable and holds a snapshot"),
    ],
)
def test_a_created_replica_is_destroyed_only_with_its_mark_and_what_proves_its_data(
    monkeypatch: Any, snaps: tuple[str, ...], guids: list[int], mark: str, readonly: str, why: str
) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    dst.make("tank/r", *snaps, guids=guids, readonly=(readonly, "local"), **{RECEIVER_PROP: (mark, "local")})
    assert why in _undo(dst, created=True)
    assert "tank/r" in dst.ds and not [c for c in dst.calls if c[0] == "destroy"]


def test_a_created_replica_written_to_after_the_replication_is_kept(monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    dst.make("tank/r", "s1", "s2", guids=[11, 12], **{RECEIVER_PROP: (HOLDER, "local")})
    dst.ds["tank/r"].head = "changed"
    assert "written to after @s2" in _undo(dst, created=True)
    assert "tank/r" in dst.ds and not [c for c in dst.calls if c[0] == "destroy"]


def test_a_created_replica_with_its_mark_is_destroyed_unless_it_has_a_child(monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    mark = {RECEIVER_PROP: (HOLDER, "local")}
    dst.make("tank/r", "s1", "s2", "sync", guids=[11, 12, 77], readonly=("on", "local"), **mark)
    dst.make("tank/r/theirs")
    assert "datasets this replication did not create" in _undo(dst, created=True)
    del dst.ds["tank/r/theirs"]
    # read-only as finish left it: a later snapshot (a standby's increment) is received data too
    assert "destroyed" in _undo(dst, created=True) and "tank/r" not in dst.ds


def test_zfs_fuses_temporary_off_is_read_only(monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    mark = {RECEIVER_PROP: (HOLDER, "local")}
    dst.make("tank/r", "s1", "sync", guids=[11, 77], readonly=("off", "temporary"), **mark)
    assert "destroyed" in _undo(dst, created=True)
    dst.make("tank/r", "s1", "sync", guids=[11, 77], readonly=("on", "temporary"), **mark)  # writable
    assert "writable" in _undo(dst, created=True)


# --- undo_delivery: an increment (both paths' revert) ---------------------------------------------------


def _racing(monkeypatch: Any, on_check: Any) -> None:
    def racing(z: Any, ds: Any, snap: Any) -> HeadChanges:
        on_check(z, str(ds))
        return changes(z, ds, snap)

    real = replicate.DestinationHead

    def head(zfs: Any) -> Any:
        return real(zfs, changes=racing, bytes_since=bytes_since)

    monkeypatch.setattr(replicate, "DestinationHead", head)


def test_an_untouched_increment_is_rolled_back(monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    dst.make("tank/r", "s1", "s2", guids=[11, 12])
    assert "rolled back to @s1" in _undo(dst, created=False)
    assert dst.guids("tank/r") == [11]


def test_an_increment_written_to_after_the_replication_is_kept(monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    dst.make("tank/r", "s1", "s2", guids=[11, 12])
    dst.ds["tank/r"].head = "changed"  # the head moved after @s2: those writes are not the replication's
    assert "written to after @s2" in _undo(dst, created=False)
    assert dst.guids("tank/r") == [11, 12] and not [c for c in dst.calls if c[0] == "rollback"]


def test_an_increment_keeps_a_snapshot_made_between_the_check_and_the_rollback(monkeypatch: Any) -> None:
    def snap_once(z: FakeZfs, ds: str) -> None:
        if "user" not in [s.snap for s in z.ds[ds].snapshots]:
            z.add_snapshot(ds, "user", 99)

    _racing(monkeypatch, snap_once)
    dst = FakeZfs()
    dst.make("tank/r", "s1", "s2", guids=[11, 12])
    assert "snapshots changed" in _undo(dst, created=False)
    assert dst.guids("tank/r") == [11, 12, 99] and not [c for c in dst.calls if c[0] == "rollback"]


def test_an_increment_under_a_foreign_snapshot_is_kept(monkeypatch: Any) -> None:
    _racing(monkeypatch, lambda z, ds: None)
    dst = FakeZfs()
    dst.make("tank/r", "s1", "s2", "user", guids=[11, 12, 99])
    assert "@user was not made by this replication" in _undo(dst, created=False)
    assert dst.guids("tank/r") == [11, 12, 99]
