"""``agent.holds``: the project's holds on a node, live or stale, and releasing only the stale ones (never a
user's hold, never a live one), on both dialects: OpenZFS lists tags, zfs-fuse only counts them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zfs_backend.activity import ActivityStore
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.agent.holds import HoldKeeper
from zfs_backend.errors import HoldNotFound
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07, Dialect
from zfs_backend.zfs.names import SnapshotName, parse_snapshot

NOW = 1_000_000.0


@dataclass
class HeldZfs:
    """The three calls HoldKeeper makes, over a dict snapshot -> tags."""

    dialect: Dialect
    tags: dict[str, list[str]] = field(default_factory=dict)
    released: list[tuple[str, str]] = field(default_factory=list)

    def held_snapshots(self, root: object = None) -> list[tuple[SnapshotName, int]]:
        return [(parse_snapshot(s), len(t)) for s, t in sorted(self.tags.items()) if t]

    def holds(self, snapshot: SnapshotName) -> list[str]:
        assert self.dialect.holds, "zfs-fuse cannot list holds"
        return sorted(self.tags.get(str(snapshot), []))

    def release(self, snapshot: SnapshotName, tag: str, recursive: bool = False) -> None:
        tags = self.tags.get(str(snapshot), [])
        if tag not in tags:
            raise HoldNotFound(f"cannot release '{tag}' from '{snapshot}': no such tag on this dataset")
        tags.remove(tag)
        self.released.append((str(snapshot), tag))


def add(store: ActivityStore, aid: str, state: str, *, held: str | None, dataset: str = "tank/v") -> None:
    rec = ActivityRecord(
        id=aid, kind="standby-sync", node="node1", params={"dataset": dataset}, created_at=NOW
    )
    store.insert(rec, checkpoint={"held": held} if held else {})
    path = {
        "running": ["running"],
        "failed": ["running", "failed"],
        "cancelled": ["running", "cancelling", "cancelled"],
    }
    for s in path[state] if state != "pending" else []:
        store.transition(aid, s, status=1 if s in ("failed", "cancelled") else None)


@pytest.fixture
def env(tmp_path: Path):
    store = ActivityStore(tmp_path / "activities.db")
    claims = ClaimStore(tmp_path / "claims.db", clock=lambda: NOW)
    yield store, claims
    store.close()
    claims.close()


@pytest.mark.parametrize("dialect", [OPENZFS_2, ZFS_FUSE_07], ids=["openzfs", "zfs-fuse"])
def test_stale_released_live_and_user_holds_kept(env, dialect) -> None:
    store, claims = env
    add(store, "act-live", "running", held="s1")
    add(store, "act-failed", "failed", held="s1")
    add(store, "act-cancelled", "cancelled", held="s2")
    zfs = HeldZfs(
        dialect,
        {
            "tank/v@s1": ["zfs_backend:act-live", "zfs_backend:act-failed", "keepme"],
            "tank/v@s2": ["zfs_backend:act-cancelled"],
            "tank/other@x": ["zfs_backend:act-x"],  # no record nor claim of act-x here
        },
    )
    keeper = HoldKeeper(zfs, store, claims, clock=lambda: NOW)  # type: ignore[arg-type]
    listed = {(h.snapshot, h.owner): h for h in keeper.holds()}
    assert listed[("tank/v@s1", "act-live")].live
    assert not listed[("tank/v@s1", "act-failed")].live
    assert listed[("tank/v@s1", "act-failed")].why == "activity failed"
    assert all(h.tag.startswith("zfs_backend:") for h in listed.values())  # "keepme" never listed
    report = keeper.report(release_stale=True)
    released = {(h["snapshot"], h["tag"]) for h in report["released"]}
    expected = {("tank/v@s1", "zfs_backend:act-failed"), ("tank/v@s2", "zfs_backend:act-cancelled")}
    if dialect.holds:  # only OpenZFS can see a hold nobody recorded
        expected.add(("tank/other@x", "zfs_backend:act-x"))
    assert released == expected
    assert "keepme" in zfs.tags["tank/v@s1"] and "zfs_backend:act-live" in zfs.tags["tank/v@s1"]
    assert [h["owner"] for h in report["holds"]] == ["act-live"]
    if not dialect.holds:
        assert report["unaccounted"] == [
            {"snapshot": "tank/other@x", "userrefs": 1, "recorded": 0},
            {"snapshot": "tank/v@s1", "userrefs": 2, "recorded": 1},
        ]


def test_zfs_fuse_tries_a_finished_owners_unrecorded_hold(env) -> None:
    """A hold placed before its checkpoint recorded it (a crash between the two): not listable on
    zfs-fuse, but released by trying the finished activity's tag on its dataset's held snapshots."""
    store, claims = env
    add(store, "act-crashed", "failed", held=None)
    zfs = HeldZfs(ZFS_FUSE_07, {"tank/v@s3": ["zfs_backend:act-crashed", "keepme"], "tank/w@s": ["keepme"]})
    keeper = HoldKeeper(zfs, store, claims, clock=lambda: NOW)  # type: ignore[arg-type]
    assert keeper.holds() == []
    released = keeper.release_stale()
    assert [(h.snapshot, h.tag) for h in released] == [("tank/v@s3", "zfs_backend:act-crashed")]
    assert zfs.tags == {"tank/v@s3": ["keepme"], "tank/w@s": ["keepme"]}


def test_a_claims_hold_is_live_until_its_lease_lapses(tmp_path: Path) -> None:
    now = [NOW]
    store = ActivityStore(tmp_path / "activities.db")
    claims = ClaimStore(tmp_path / "claims.db", clock=lambda: now[0])
    claim, _new = claims.take("tank/v", "act-primary", "node1:tank/v", ttl=300)
    claims.save(claim.with_state(held=["tank/v@s1"]))
    zfs = HeldZfs(ZFS_FUSE_07, {"tank/v@s1": ["zfs_backend:act-primary"]})
    keeper = HoldKeeper(zfs, store, claims, clock=lambda: now[0])  # type: ignore[arg-type]
    (h,) = keeper.holds()
    assert h.live and "lease" in h.why
    assert keeper.release_stale() == []
    now[0] += 301
    (h,) = keeper.holds()
    assert not h.live and "expired" in h.why
    assert [x.tag for x in keeper.release_stale()] == ["zfs_backend:act-primary"]
    assert zfs.tags["tank/v@s1"] == []
    store.close()
    claims.close()


def test_release_stale_of_one_owner_only(env) -> None:
    store, claims = env
    add(store, "act-a", "failed", held="s1")
    add(store, "act-b", "failed", held="s2")
    zfs = HeldZfs(OPENZFS_2, {"tank/v@s1": ["zfs_backend:act-a"], "tank/v@s2": ["zfs_backend:act-b"]})
    keeper = HoldKeeper(zfs, store, claims, clock=lambda: NOW)  # type: ignore[arg-type]
    assert [h.owner for h in keeper.release_stale("act-a")] == ["act-a"]
    assert zfs.tags == {"tank/v@s1": [], "tank/v@s2": ["zfs_backend:act-b"]}


def test_an_activity_failed_at_recovery_has_its_holds_released(env) -> None:
    """The agent restarts and cannot carry a standby-sync on (its params no longer load): it is marked
    failed, and its hold goes with it (no undo of its own ran)."""
    from types import SimpleNamespace

    from zfs_backend.agent.manager import ActivityManager

    store, claims = env
    add(store, "act-broken", "running", held="s1")  # params lack what standby-sync needs: refused
    zfs = HeldZfs(ZFS_FUSE_07, {"tank/v@s1": ["zfs_backend:act-broken", "keepme"]})
    m = ActivityManager(store, node="node1", receiver=SimpleNamespace(zfs=zfs, claims=claims))  # type: ignore[arg-type]
    assert m.recover() == []
    assert store.get("act-broken").state == "failed"
    assert zfs.tags == {"tank/v@s1": ["keepme"]}
    assert m.holds()["holds"] == []
