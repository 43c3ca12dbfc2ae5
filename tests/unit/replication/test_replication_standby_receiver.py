"""A standby's receiving end (replication.receiver_standby) on an in-memory node: one claim for the life
of the relationship, increments committed one by one (a cancel rolls back only the one in flight), the
base held, only the holder's own snapshots pruned, and a fenced holder shut out for good."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.errors import AlreadyRunning, UsageError, ZfsBackendError
from zfs_backend.replication.claims import ClaimSave, ClaimStore
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


# -- a tick of a pair's scheduler: recv.expect_many / recv.commit_many --------------------------------
W = "tank/w"


def _two(rx: Receiver, zfs: FakeZfs) -> None:
    """Two standbys of one pair: tank/v (holder A) and tank/w (holder B), both seeded."""
    start(rx)
    zfs.make(W, f"{P}1", guids=[31], readonly=("on", "local"))
    rx.claims.record_received(W, [31], None)
    rx.begin(W, B, "node1:tank/w", sent_guids=[31])
    rx.expect(W, B, [31])


def test_a_batch_is_each_items_op_in_one_durable_write(
    rx: Receiver, zfs: FakeZfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two(rx, zfs)
    real = rx.claims._tx
    writes: list[int] = []

    def tx() -> Any:
        writes.append(1)
        return real()

    monkeypatch.setattr(rx.claims, "_tx", tx)
    checked: list[tuple[str, str]] = []
    out = rx.expect_many(
        [
            {"dataset": "tank/v", "holder": A, "sent_guids": [22]},
            {"dataset": W, "holder": B, "sent_guids": [32]},
        ],
        check=lambda verb, item: checked.append((verb, item["dataset"])),
    )
    assert out == [{"ok": {"sent": 3}}, {"ok": {"sent": 2}}] and len(writes) == 1
    assert sorted(checked) == [("expect", "tank/v"), ("expect", W)]  # each item, as its single op
    zfs.add_snapshot("tank/v", f"{P}2", 22)
    zfs.add_snapshot(W, f"{P}2", 32)
    out = rx.commit_many(
        [
            {"dataset": "tank/v", "holder": A, "target_guid": 22, "prune_prefix": P},
            {"dataset": W, "holder": B, "target_guid": 32, "prune_prefix": P},
        ]
    )
    assert len(writes) == 2
    assert [o["ok"]["pruned"] for o in out] == [[f"{P}1"], [f"{P}1"]]
    assert zfs.held[f"tank/v@{P}2"] == {hold_tag(A)} and zfs.held[f"{W}@{P}2"] == {hold_tag(B)}
    assert zfs.guids("tank/v") == [11, 22] and zfs.guids(W) == [32]  # the user's snapshot stays
    assert rx.claims.received_by(W, None) == {32}


def test_a_failing_item_is_its_own_and_the_others_commit(rx: Receiver, zfs: FakeZfs) -> None:
    _two(rx, zfs)
    rx.expect("tank/v", A, [22])
    rx.expect(W, B, [32])
    zfs.add_snapshot("tank/v", f"{P}2", 22)  # tank/w's stream never arrived
    out = rx.commit_many(
        [
            {"dataset": W, "holder": B, "target_guid": 32, "prune_prefix": P},
            {"dataset": "tank/v", "holder": A, "target_guid": 22, "prune_prefix": P},
            {"dataset": "tank/v2", "holder": A, "target_guid": 22},  # nobody's claim
        ]
    )
    assert (
        out[0]["error"]["type"] == "ZfsBackendError"
        and "does not hold the received" in out[0]["error"]["message"]
    )
    assert out[1]["ok"]["pruned"] == [f"{P}1"]
    assert out[2]["error"]["type"] == "AlreadyRunning"
    assert rx.claims.held(W, B).state["pending"] == [32]  # still waiting for its stream
    assert zfs.guids(W) == [31]


def test_a_refused_item_changes_nothing_of_its_own(rx: Receiver, zfs: FakeZfs) -> None:
    _two(rx, zfs)

    def refuse_w(verb: str, item: dict[str, Any]) -> None:
        if item["dataset"] == W:
            raise AlreadyRunning(f"{item['holder']} does not hold {W}")

    before = rx.claims.held(W, B).state
    out = rx.expect_many(
        [
            {"dataset": "tank/v", "holder": A, "sent_guids": [22]},
            {"dataset": W, "holder": B, "sent_guids": [32]},
        ],
        check=refuse_w,
    )
    assert "ok" in out[0] and out[1]["error"]["type"] == "AlreadyRunning"
    assert rx.claims.held(W, B).state == before


def test_a_batch_names_each_dataset_once_and_is_bounded(rx: Receiver, zfs: FakeZfs) -> None:
    _two(rx, zfs)
    item = {"dataset": "tank/v", "holder": A, "sent_guids": [22]}
    with pytest.raises(UsageError, match="twice"):
        rx.expect_many([item, dict(item)])
    with pytest.raises(UsageError):
        rx.expect_many([{"dataset": "tank/v;rm", "holder": A}])
    with pytest.raises(UsageError, match="at most"):
        rx.expect_many([{"dataset": f"tank/v{i}", "holder": A} for i in range(1001)])
    with pytest.raises(UsageError):
        rx.expect_many("tank/v")  # type: ignore[arg-type]


def test_a_lease_that_lapsed_is_that_items_error(rx: Receiver, zfs: FakeZfs) -> None:
    _two(rx, zfs)
    claim = rx.claims.held(W, B)
    failed = rx.claims.save_many(
        [
            ClaimSave(rx.claims.held("tank/v", A).with_state(sent=[7]), renew_ttl=300),
            ClaimSave(claim.with_state(sent=[8]), renew_ttl=300),
        ]
    )
    assert failed == {}
    rx.claims.release(W, B)
    failed = rx.claims.save_many(
        [
            ClaimSave(rx.claims.held("tank/v", A).with_state(sent=[9]), renew_ttl=300),
            ClaimSave(claim.with_state(sent=[9]), renew_ttl=300),
        ]
    )
    assert list(failed) == [W] and rx.claims.held("tank/v", A).state["sent"] == [9]


def test_a_batch_lists_its_datasets_once_and_only_those_that_passed(rx: Receiver, zfs: FakeZfs) -> None:
    _two(rx, zfs)
    zfs.make("tank/other", f"{P}1", guids=[41])
    zfs.calls.clear()

    def refuse_other(verb: str, item: dict[str, Any]) -> None:
        if item["dataset"] == "tank/other":
            raise AlreadyRunning(f"{item['holder']} does not hold tank/other")

    out = rx.expect_many(
        [
            {"dataset": "tank/v", "holder": A, "sent_guids": [22]},
            {"dataset": "tank/other", "holder": B, "sent_guids": [42]},
            {"dataset": W, "holder": B, "sent_guids": [32]},
        ],
        check=refuse_other,
    )
    assert "ok" in out[0] and "error" in out[1] and "ok" in out[2]
    listings = [c for c in zfs.calls if c[0].startswith("list_snapshots")]
    assert listings == [("list_snapshots_of", f"tank/v,{W}")]  # the refused one's dataset never read
    # a dataset gone since: the listing of the batch fails, each item lists its own and fails alone
    zfs.calls.clear()
    del zfs.ds[W]
    out = rx.expect_many(
        [
            {"dataset": "tank/v", "holder": A, "sent_guids": [23]},
            {"dataset": W, "holder": B, "sent_guids": [33]},
        ]
    )
    assert "ok" in out[0] and out[1]["error"]["type"] == "DatasetNotFound"


def test_the_node_s_lease_is_what_begin_expect_and_commit_renew_to(zfs: FakeZfs, tmp_path: Path) -> None:
    """The agent's ``claim_lease_s`` (``$ZFS_BACKEND_CLAIM_LEASE_S``) is the lease of every claim it takes
    and what a standby's expect renews it to, once per sync (it was 300 s there whatever the node's lease);
    the commit that follows leaves it."""
    now = [1000.0]
    rx = Receiver(
        cast(Zfs, zfs),
        ClaimStore(tmp_path / "claims.db", clock=lambda: now[0]),
        ttl=150,
        changes=changes,
        bytes_since=bytes_since,
    )
    start(rx)
    assert rx.claims.held("tank/v", A).expires_at == 1150.0
    now[0] = 1100.0
    rx.expect("tank/v", A, [22])
    assert rx.claims.held("tank/v", A).expires_at == 1250.0
    now[0] = 1200.0
    zfs.add_snapshot("tank/v", f"{P}2", 22)
    rx.commit("tank/v", A, 22, prune_prefix=P)
    assert rx.claims.held("tank/v", A).expires_at == 1250.0
    rx.expect_many([{"dataset": "tank/v", "holder": A, "sent_guids": [23]}])  # a pair's tick: the same
    assert rx.claims.held("tank/v", A).expires_at == 1350.0
