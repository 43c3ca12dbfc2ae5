"""The receiving end (replication.receiver) on an in-memory model of a node's datasets: claims, the
read-only lock, noise versus real changes, what finish marks and what abort may (not) destroy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.errors import (
    AlreadyRunning,
    DatasetNotFound,
    DestinationDiverged,
    ReplicationConflict,
    ZfsBackendError,
)
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.receiver import RECEIVER_PROP, SOURCE_PROP, Receiver
from zfs_backend.zfs.api import Zfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_zfs import FakeZfs, bytes_since, changes

A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
B = "act-01M8PC6J46SJJSD1CGAQ7Y88PY"
SRC = "node1:tank/r"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def zfs() -> FakeZfs:
    return FakeZfs()


@pytest.fixture
def rx(zfs: FakeZfs, tmp_path: Path, clock: Clock) -> Receiver:
    store = ClaimStore(tmp_path / "claims.db", clock=clock)
    return Receiver(cast(Zfs, zfs), store, ttl=300, changes=changes, bytes_since=bytes_since)


def begin(rx: Receiver, holder: str = A, dataset: str = "tank/r", **kw: Any) -> dict[str, Any]:
    return rx.begin(dataset, holder, SRC, **kw)


# --- claims ------------------------------------------------------------------------------------------


def test_a_new_destination_is_claimed_and_reported(rx: Receiver) -> None:
    out = begin(rx)
    assert out["exists"] is False and out["available"] == 1 << 30 and out["datasets"] == {}
    assert [c["holder"] for c in rx.status()] == [A]


def test_a_missing_parent_refuses_and_releases(rx: Receiver) -> None:
    with pytest.raises(DatasetNotFound, match="parent"):
        begin(rx, dataset="tank/no/such")
    assert rx.status() == []


def test_one_receiver_at_a_time_in_a_tree(rx: Receiver) -> None:
    begin(rx)
    for other in ("tank/r", "tank/r/child", "tank"):
        with pytest.raises(AlreadyRunning, match=f"being received into by {A} from {SRC}"):
            begin(rx, B, other)
    begin(rx)  # the holder itself may take it again (a restart)
    begin(rx, B, "tank/other")  # unrelated trees do not conflict


def test_an_expired_claim_gives_way_and_its_lock_is_undone(rx: Receiver, zfs: FakeZfs, clock: Clock) -> None:
    zfs.make("tank/r", "s1")
    begin(rx)
    assert zfs.get_with_source(*_n("tank/r", "readonly")) == ("on", "local")
    clock.now += 301  # the source vanished for longer than the lease
    begin(rx, B)
    assert ("inherit", "tank/r", "readonly") in zfs.calls  # A's lock undone...
    assert zfs.get_with_source(*_n("tank/r", "readonly")) == ("on", "local")  # ...and B's own taken


def _n(name: str, prop: str) -> tuple[Any, str]:
    from zfs_backend.zfs.names import parse_dataset

    return parse_dataset(name), prop


# --- the read-only lock ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "undo"),
    [
        (("off", "local"), ("set", "tank/r", "readonly", "off")),
        (("off", "default"), ("inherit", "tank/r", "readonly")),
    ],
)
def test_writable_destinations_are_locked_then_given_back(
    rx: Receiver, zfs: FakeZfs, before: tuple[str, str], undo: tuple[str, ...]
) -> None:
    zfs.make("tank/r", "s1", readonly=before)
    begin(rx)
    assert ("set", "tank/r", "readonly", "on") in zfs.calls
    rx.release("tank/r", A)
    assert zfs.calls[-1] == undo and rx.status() == []


@pytest.mark.parametrize("before", [("on", "local"), ("off", "temporary"), ("on", "inherited")])
def test_read_only_destinations_are_not_touched(rx: Receiver, zfs: FakeZfs, before: tuple[str, str]) -> None:
    zfs.make("tank/r", "s1", readonly=before)  # zfs-fuse shows a mounted read-only fs as "off temporary"
    begin(rx)
    rx.release("tank/r", A)
    assert zfs.calls == []


# --- noise and real changes ---------------------------------------------------------------------------


def test_noise_is_rolled_back_at_begin_and_real_changes_are_only_reported(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", readonly=("on", "local"))
    zfs.make("tank/r/a", "s1")
    zfs.make("tank/r/b", "s1")
    zfs.ds["tank/r/a"].head = "noisy"
    zfs.ds["tank/r/b"].head = "changed"
    out = begin(rx, recursive=True)
    assert out["datasets"]["a"]["changes"]["changed"] is False
    assert out["datasets"]["b"]["changes"] == {
        "changed": True,
        "noisy": False,
        "detail": "1 data record(s), 4096 bytes",
        "bytes": 4096,
    }
    rollbacks = [c for c in zfs.calls if c[0] == "rollback"]
    assert rollbacks == [("rollback", "tank/r/a@s1", False)]  # only the noisy one, never with -r


def test_clean_after_a_refused_receive(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", readonly=("on", "local"))
    begin(rx)
    zfs.ds["tank/r"].head = "noisy"
    rx.clean("tank/r", A)
    # unmounted around the rollback (nothing can write meanwhile), mounted again after
    assert zfs.calls[-3:] == [("unmount", "tank/r"), ("rollback", "tank/r@s1", False), ("mount", "tank/r")]
    zfs.ds["tank/r"].head = "changed"
    with pytest.raises(DestinationDiverged, match="changed after @s1: 1 data record"):
        rx.clean("tank/r", A)
    assert [c for c in zfs.calls if c[0] == "rollback"] == [("rollback", "tank/r@s1", False)]  # no more
    assert zfs.ds["tank/r"].mounted
    with pytest.raises(AlreadyRunning):
        rx.clean("tank/r", B)


def test_a_destination_in_use_is_never_rolled_back(rx: Receiver, zfs: FakeZfs) -> None:
    """Read-only does not stop an NFS server's writes on zfs-fuse: a dataset that cannot be unmounted
    (a file open, an export) could be written to during a rollback, so noise is not rolled back then,
    and a cancel leaves it as it is."""
    zfs.make("tank/r", "s1", guids=[11], readonly=("on", "local"))
    zfs.ds["tank/r"].busy = True
    zfs.ds["tank/r"].head = "noisy"
    with pytest.raises(ReplicationConflict, match="in use"):
        begin(rx, sent_guids=[11, 12])
    assert not [c for c in zfs.calls if c[0] == "rollback"] and rx.status() == []
    zfs.ds["tank/r"].head = "clean"
    begin(rx, sent_guids=[11, 12])
    zfs.add_snapshot("tank/r", "s2", 12)  # received, then the activity is cancelled
    out = rx.abort("tank/r", A)
    assert zfs.guids("tank/r") == [11, 12] and "in use" in out["left"][0]
    zfs.ds["tank/r"].busy = False
    begin(rx, sent_guids=[11, 12, 13])
    zfs.add_snapshot("tank/r", "s3", 13)
    zfs.ds["tank/r"].head = "changed"  # written to after the received snapshot: kept
    out = rx.abort("tank/r", A)
    assert zfs.guids("tank/r") == [11, 12, 13] and "written to after @s3" in out["left"][0]


def test_discard_rolls_back_to_the_base_and_says_what_went(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", "mine", guids=[11, 99], readonly=("on", "local"))
    begin(rx)
    out = rx.discard("tank/r", A, {"": 11})
    assert out["discarded"][""] == {"snapshots": ["mine"], "changes": None, "bytes": 12345}
    assert zfs.changing()[-1] == ("rollback", "tank/r@s1", True)
    assert zfs.guids("tank/r") == [11]


def _racing_receiver(zfs: FakeZfs, tmp_path: Path, clock: Clock, on_check: Any) -> Receiver:
    """A receiver whose head checks call ``on_check(zfs, dataset)`` first: what happens on the node
    between a check and the rollback that follows it."""

    def racing_changes(z: Any, ds: Any, snap: Any) -> Any:
        on_check(zfs, str(ds))
        return changes(z, ds, snap)

    def racing_bytes(z: Any, ds: Any, base: Any) -> int:
        on_check(zfs, str(ds))
        return bytes_since(z, ds, base)

    store = ClaimStore(tmp_path / "race.db", clock=clock)
    return Receiver(cast(Zfs, zfs), store, ttl=300, changes=racing_changes, bytes_since=racing_bytes)


def test_discard_measures_and_rolls_back_only_while_nothing_can_write(
    zfs: FakeZfs, tmp_path: Path, clock: Clock
) -> None:
    seen: list[bool] = []
    rx = _racing_receiver(zfs, tmp_path, clock, lambda z, ds: seen.append(z.ds[ds].mounted))
    zfs.make("tank/r", "s1", "mine", guids=[11, 99], readonly=("on", "local"))
    zfs.ds["tank/r"].head = "changed"
    begin(rx)
    seen.clear()  # begin only reports (it discards nothing real)
    zfs.calls.clear()
    out = rx.discard("tank/r", A, {"": 11})
    assert seen and not any(seen)  # every measurement on an unmounted dataset
    order = [c[0] for c in zfs.calls if c[0] in ("unmount", "rollback", "mount")]
    assert order == ["unmount", "rollback", "mount"]
    assert out["discarded"][""]["snapshots"] == ["mine"] and out["discarded"][""]["changes"]


def test_discard_refuses_when_a_snapshot_appears_while_it_measures(
    zfs: FakeZfs, tmp_path: Path, clock: Clock
) -> None:
    def snap_once(z: FakeZfs, ds: str) -> None:
        if "late" not in [s.snap for s in z.ds[ds].snapshots]:
            z.add_snapshot(ds, "late", 555)

    rx = _racing_receiver(zfs, tmp_path, clock, snap_once)
    zfs.make("tank/r", "s1", "mine", guids=[11, 99], readonly=("on", "local"))
    begin(rx)
    with pytest.raises(ReplicationConflict, match="snapshots changed while it was checked"):
        rx.discard("tank/r", A, {"": 11})
    assert zfs.guids("tank/r") == [11, 99, 555]
    assert not [c for c in zfs.calls if c[0] in ("destroy", "rollback")]


# --- finish ------------------------------------------------------------------------------------------


def test_finish_verifies_marks_new_datasets_and_releases(rx: Receiver, zfs: FakeZfs) -> None:
    begin(rx, recursive=True, sent_guids=[11, 12])
    zfs.make("tank/r", "s1", guids=[11])  # what the stream created
    zfs.make("tank/r/c", "s1", guids=[12])
    with pytest.raises(ZfsBackendError, match="GUID 13"):
        rx.finish("tank/r", A, target_guids={"": 11, "c": 13})
    out = rx.finish("tank/r", A, target_guids={"": 11, "c": 12})
    assert sorted(out["created"]) == ["", "c"]
    assert zfs.get_with_source(*_n("tank/r", RECEIVER_PROP)) == (A, "local")
    assert zfs.get_with_source(*_n("tank/r/c", SOURCE_PROP)) == (f"{SRC}/c", "local")
    assert zfs.get_with_source(*_n("tank/r", "readonly")) == ("on", "local")
    assert rx.status() == []


def test_finish_gives_an_existing_replica_its_own_read_only_back(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", guids=[11], readonly=("off", "local"))
    begin(rx)
    zfs.add_snapshot("tank/r", "s2", 12)
    out = rx.finish("tank/r", A, target_guids={"": 12})
    assert out["created"] == []
    assert zfs.get_with_source(*_n("tank/r", "readonly")) == ("off", "local")
    assert not any(c[2] == RECEIVER_PROP for c in zfs.calls if c[0] == "set")


# --- abort -----------------------------------------------------------------------------------------------


def test_abort_rolls_back_what_was_received_and_removes_what_was_created(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", guids=[11], readonly=("on", "local"))
    zfs.make("tank/r/a", "s1", guids=[21])
    begin(rx, recursive=True, sent_guids=[11, 12, 21, 22, 31])
    zfs.add_snapshot("tank/r", "s2", 12)  # received, then cancelled
    zfs.add_snapshot("tank/r/a", "s2", 22)
    zfs.make("tank/r/new", "s2", guids=[31])  # a child the stream created
    out = rx.abort("tank/r", A)
    assert out["restored"] and out["left"] == []
    assert zfs.guids("tank/r") == [11] and zfs.guids("tank/r/a") == [21]
    assert "tank/r/new" not in zfs.ds
    assert rx.status() == []


def test_abort_never_touches_what_is_not_provably_its_own(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", guids=[11], readonly=("on", "local"))
    begin(rx, recursive=True, sent_guids=[11, 12, 31, 41])
    zfs.add_snapshot("tank/r", "s2", 12)
    zfs.add_snapshot("tank/r", "theirs", 77)  # a user's snapshot after ours: keep the dataset as it is
    zfs.make("tank/r/someone", "x", guids=[55])  # someone else's dataset, appeared meanwhile
    zfs.make("tank/r/empty")  # no snapshot at all: not provably ours
    zfs.make("tank/r/marked", "s2", guids=[41], **{RECEIVER_PROP: (B, "local")})  # another receiver's
    out = rx.abort("tank/r", A)
    assert not out["restored"]
    assert len(out["left"]) == 4, out["left"]
    assert zfs.guids("tank/r") == [11, 12, 77]
    assert {"tank/r/someone", "tank/r/empty", "tank/r/marked"} <= set(zfs.ds)
    assert not [c for c in zfs.calls if c[0] in ("destroy", "rollback")]


def test_abort_of_a_new_destination_removes_it_if_and_only_if_it_is_ours(rx: Receiver, zfs: FakeZfs) -> None:
    begin(rx, sent_guids=[11])
    zfs.make("tank/r", "s1", guids=[11])
    assert rx.abort("tank/r", A)["restored"]
    assert "tank/r" not in zfs.ds
    begin(rx, sent_guids=[11])
    zfs.make("tank/r", "x", guids=[99])  # created by somebody else between plan and receive
    out = rx.abort("tank/r", A)
    assert "tank/r" in zfs.ds and out["left"] == ["tank/r: not created by this replication; left alone"]


@pytest.mark.parametrize("step", ["get_with_source", "list_snapshots"])
def test_abort_of_a_new_destination_that_its_cut_receive_removed_meanwhile(
    rx: Receiver, zfs: FakeZfs, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A full receive cut by the cancel removes its own new dataset when it exits (zfs-fuse: no
    resumable state), which may be between abort's listing and its look at the dataset: gone is as
    ``begin`` found it, restored, never "cannot open" (a lab test's cancel ended ``failed`` so)."""
    begin(rx, sent_guids=[11])
    zfs.make("tank/r", "s1", guids=[11])
    zfs.ds["tank/r"].snapshots.clear()  # the receive is still writing its first snapshot
    real = getattr(zfs, step)

    def vanish(name: Any, *a: Any) -> Any:
        zfs.ds.pop(str(name), None)  # the cut receive exits and cleans up
        return real(name, *a)

    monkeypatch.setattr(zfs, step, vanish)
    out = rx.abort("tank/r", A)
    assert out["restored"] and out["left"] == []
    assert out["actions"] == ["tank/r: gone (its receive ended before the abort reached it)"]
    assert rx.claims.get("tank/r") is None


def test_abort_keeps_a_snapshot_made_between_its_check_and_the_rollback(
    zfs: FakeZfs, tmp_path: Path, clock: Clock
) -> None:
    def snap_once(z: FakeZfs, ds: str) -> None:
        if "user" not in [s.snap for s in z.ds[ds].snapshots]:
            z.add_snapshot(ds, "user", 777)  # `rollback -r` would destroy it unseen

    rx = _racing_receiver(zfs, tmp_path, clock, snap_once)
    zfs.make("tank/r", "s1", guids=[11], readonly=("on", "local"))
    rx.begin("tank/r", A, SRC, sent_guids=[11, 12])
    zfs.add_snapshot("tank/r", "s2", 12)
    out = rx.abort("tank/r", A)
    assert not out["restored"] and "snapshots changed" in out["left"][0]
    assert zfs.guids("tank/r") == [11, 12, 777]
    assert not [c for c in zfs.calls if c[0] in ("destroy", "rollback")]


def test_abort_rolls_back_only_while_nothing_can_write(zfs: FakeZfs, tmp_path: Path, clock: Clock) -> None:
    seen: list[bool] = []
    rx = _racing_receiver(zfs, tmp_path, clock, lambda z, ds: seen.append(z.ds[ds].mounted))
    zfs.make("tank/r", "s1", guids=[11], readonly=("on", "local"))
    rx.begin("tank/r", A, SRC, sent_guids=[11, 12])
    zfs.add_snapshot("tank/r", "s2", 12)
    assert rx.abort("tank/r", A)["restored"]
    assert seen and not any(seen) and zfs.guids("tank/r") == [11]


def test_abort_keeps_a_new_dataset_written_to_before_the_cancel(rx: Receiver, zfs: FakeZfs) -> None:
    begin(rx, sent_guids=[11])
    zfs.make("tank/r", "s1", guids=[11])  # what the stream created: writable until finish
    zfs.ds["tank/r"].head = "changed"  # somebody wrote into it before the cancel
    out = rx.abort("tank/r", A)
    assert "tank/r" in zfs.ds and "written to after @s1" in out["left"][0]
    begin(rx, dataset="tank/q", sent_guids=[11])
    zfs.make("tank/q", "s1", guids=[11])
    zfs.ds["tank/q"].busy = True  # in use: it could be written to while it goes
    assert "in use" in rx.abort("tank/q", A)["left"][0] and "tank/q" in zfs.ds


def test_abort_keeping_the_claim_starts_over(rx: Receiver, zfs: FakeZfs) -> None:
    begin(rx, sent_guids=[11])
    zfs.make("tank/r", "s1", guids=[11])
    rx.abort("tank/r", A, keep_claim=True)
    assert "tank/r" not in zfs.ds and [c["holder"] for c in rx.status()] == [A]


def test_abort_by_a_stranger_changes_nothing(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "s1", guids=[11])
    begin(rx, sent_guids=[11, 12])
    zfs.add_snapshot("tank/r", "s2", 12)
    out = rx.abort("tank/r", B)
    assert out["restored"] is False and zfs.guids("tank/r") == [11, 12]
    assert [c["holder"] for c in rx.status()] == [A]


def test_partial_resumable_receive_is_discarded(tmp_path: Path, clock: Clock) -> None:
    from zfs_backend.zfs.dialect import OPENZFS_2

    zfs = FakeZfs(OPENZFS_2)
    rx = Receiver(cast(Zfs, zfs), ClaimStore(tmp_path / "c.db", clock=clock), changes=changes)
    zfs.make("tank/r", "s1", guids=[11], readonly=("on", "local"))
    rx.begin("tank/r", A, SRC, sent_guids=[11, 12])
    from zfs_backend.zfs.resume_token import encode_resume_token

    # a stream of its source, cut under the claim (one it cannot prove its own is kept: see
    # test_replication_receiver_partial.py)
    zfs.ds["tank/r"].token = encode_resume_token({"toguid": 12, "toname": "tank/r@s2", "fromguid": 11})
    out = rx.abort("tank/r", A)
    assert ("receive -A", "tank/r") in zfs.calls and out["restored"]
