"""A standby's receiving end (replication.receiver_standby) on an in-memory node: one claim for the life
of the relationship, increments committed one by one (a cancel rolls back only the one in flight), the
base held, only the holder's own snapshots pruned, and a fenced holder shut out for good."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.errors import AlreadyRunning, UsageError, ZfsBackendError
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.receiver import Receiver
from zfs_backend.replication.receiver_standby import hold_tag
from zfs_backend.zfs.api import Zfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_zfs import FakeZfs, bytes_since, changes

A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
B = "act-01M8PC6J46SJJSD1CGAQ7Y88PY"
SRC = "node1:tank/v"
P = "zfs_backend-standby-"


@pytest.fixture
def zfs() -> FakeZfs:
    z = FakeZfs()
    # the seeded replica: a user's snapshot and the seed, read-only
    z.make("tank/v", "user1", f"{P}1", guids=[11, 21], readonly=("on", "local"))
    return z


@pytest.fixture
def rx(zfs: FakeZfs, tmp_path: Path) -> Receiver:
    return Receiver(
        cast(Zfs, zfs), ClaimStore(tmp_path / "claims.db"), ttl=300, changes=changes, bytes_since=bytes_since
    )


def start(rx: Receiver) -> None:
    rx.claims.record_received("tank/v", [21], None)  # the seeding replication's finish recorded it
    rx.begin("tank/v", A, SRC, sent_guids=[11, 21])
    rx.expect("tank/v", A, [21])  # the seed, made for this standby (received here), is adopted


def sync(rx: Receiver, zfs: FakeZfs, snap: str, guid: int) -> dict[str, object]:
    rx.expect("tank/v", A, [guid])
    zfs.add_snapshot("tank/v", snap, guid)  # the stream arrived
    return rx.commit("tank/v", A, guid, prune_prefix=P)


def test_increments_hold_the_base_and_prune_only_their_own(rx: Receiver, zfs: FakeZfs) -> None:
    start(rx)
    out = sync(rx, zfs, f"{P}2", 22)
    assert out["held"] == [f"tank/v@{P}2"] and out["pruned"] == [f"{P}1"]
    assert zfs.held[f"tank/v@{P}2"] == {hold_tag(A)}
    out = sync(rx, zfs, f"{P}3", 23)
    assert out["pruned"] == [f"{P}2"] and zfs.held[f"tank/v@{P}2"] == set()  # released, then pruned
    # someone else's snapshot with our prefix but a GUID never announced, and the user's (sent by the
    # source at begin, not announced): never pruned
    zfs.add_snapshot("tank/v", f"{P}x", 99)
    sync(rx, zfs, f"{P}4", 24)
    assert [s.snap for s in zfs.ds["tank/v"].snapshots] == ["user1", f"{P}x", f"{P}4"]
    assert [c for c in zfs.calls if c[0] == "destroy" and "user1" in c[1]] == []
    assert rx.status()[0]["holder"] == A  # one claim for the whole relationship


def test_a_cancel_rolls_back_only_the_increment_in_flight(rx: Receiver, zfs: FakeZfs) -> None:
    start(rx)
    sync(rx, zfs, f"{P}2", 22)
    rx.expect("tank/v", A, [23])
    zfs.add_snapshot("tank/v", f"{P}3", 23)  # received, not committed: the activity was cancelled
    report = rx.abort("tank/v", A)
    assert report["restored"] is True
    assert zfs.guids("tank/v") == [11, 22]  # the committed increment stays
    assert zfs.held[f"tank/v@{P}2"] == set()  # the holder's holds go with its claim
    assert rx.status() == []


def test_commit_verifies_and_refuses_strangers(rx: Receiver, zfs: FakeZfs) -> None:
    start(rx)
    with pytest.raises(ZfsBackendError, match="does not hold"):
        rx.commit("tank/v", A, 12345)
    with pytest.raises(AlreadyRunning):
        rx.commit("tank/v", B, 21)
    with pytest.raises(AlreadyRunning):
        rx.expect("tank/v", B, [1])
    with pytest.raises(UsageError):
        rx.commit("tank/v", A, 21, prune_prefix="x;rm")


def test_a_fenced_holder_never_comes_back(rx: Receiver, zfs: FakeZfs) -> None:
    start(rx)
    sync(rx, zfs, f"{P}2", 22)
    rx.expect("tank/v", A, [23])
    zfs.add_snapshot("tank/v", f"{P}3", 23)
    out = rx.fence("tank/v", A, "promoted by a forced failover")
    assert out["fenced"] is True and zfs.guids("tank/v") == [11, 22] and rx.status() == []
    with pytest.raises(AlreadyRunning, match="fenced"):
        rx.begin("tank/v", A, SRC, sent_guids=[23])
    with pytest.raises(AlreadyRunning, match="fenced off tank/v: promoted"):
        rx.expect("tank/v", A, [24])
    rx.begin("tank/v", B, "node3:tank/v")  # another holder may (a new standby relationship)


def test_expect_and_commit_are_one_durable_write_each(
    rx: Receiver, zfs: FakeZfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease renewed with the state; the GUID received and the pruned ones forgotten with it."""
    start(rx)
    sync(rx, zfs, f"{P}2", 22)
    real = rx.claims._tx
    writes: list[int] = []

    def tx() -> Any:
        writes.append(1)
        return real()

    monkeypatch.setattr(rx.claims, "_tx", tx)
    before = rx.status()[0]["expires_at"]
    rx.claims._clock = lambda: 10**10  # type: ignore[method-assign]
    rx.expect("tank/v", A, [23])
    assert len(writes) == 1 and rx.status()[0]["expires_at"] > before
    zfs.add_snapshot("tank/v", f"{P}3", 23)
    out = rx.commit("tank/v", A, 23, prune_prefix=P)
    assert len(writes) == 2 and out["pruned"] == [f"{P}2"]
    assert rx.claims.received_by("tank/v", None) == {23}  # recorded; the pruned 22 (and 21) forgotten


def test_an_expect_from_a_holder_whose_claim_went_writes_nothing(rx: Receiver, zfs: FakeZfs) -> None:
    start(rx)
    claim = rx.claims.held("tank/v", A)
    rx.claims.release("tank/v", A)
    with pytest.raises(ZfsBackendError):
        rx.claims.save(claim.with_state(sent=[99]), renew_ttl=300)
    assert rx.status() == []
