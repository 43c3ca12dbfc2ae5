"""The controller's grants of work to peers (replication.grants): private, durable, validated; bound to
the holder on first use, never moved to another; unbound ones expire; consumed with the claim."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from zfs_backend.errors import NotGranted, UsageError
from zfs_backend.replication.grants import GrantStore, under_roots
from zfs_backend.replication.wire import validate_grant

A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
B = "act-01M8PC6J46SJJSD1CGAQ7Y88PY"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> GrantStore:
    return GrantStore(tmp_path / "agent" / "grants.db", clock=clock)


def test_a_grant_is_private_durable_and_validated(store: GrantStore, tmp_path: Path, clock: Clock) -> None:
    g = store.add("node2", ["increment", "create"], dataset="tank/r1", ttl_s=60)
    assert validate_grant(g.id) == g.id and g.allow == ("create", "increment")
    assert g.expires_at == clock.now + 60 and g.holder is None
    assert stat.S_IMODE(os.stat(tmp_path / "agent" / "grants.db").st_mode) == 0o600
    again = GrantStore(tmp_path / "agent" / "grants.db", clock=clock)  # a restarted agent
    assert [x.id for x in again.list()] == [g.id]
    with pytest.raises(UsageError, match="unknown allow 'destroy'"):
        store.add("node2", ["destroy"], dataset="tank/r1")
    with pytest.raises(UsageError, match="non-empty"):
        store.add("node2", [], dataset="tank/r1")
    with pytest.raises(UsageError, match="exactly one"):
        store.add("node2", ["create"])


@pytest.mark.parametrize(
    "bad", ["", "gr-", "act-01M8PC6J46SJJSD1CGAQ7Y88PX", "gr-01M8PC6J46SJJSD1CGAQ7Y88PU", 7, None]
)
def test_grant_ids_are_checked(bad: object) -> None:
    with pytest.raises(UsageError, match="invalid grant id"):
        validate_grant(bad)


def test_bound_on_first_use_to_one_holder(store: GrantStore, clock: Clock) -> None:
    g = store.add("node2", ["create"], dataset="tank/r1", ttl_s=60)
    bound, first = store.bind(g.id, A)
    assert bound.holder == A and first
    assert store.bind(g.id, A)[1] is False  # the same holder again (a restarted activity)
    with pytest.raises(NotGranted, match="in use by another activity"):
        store.bind(g.id, B)
    clock.now += 3600  # bound: no longer expires
    assert store.get(g.id) is not None
    assert store.consume(g.id, B) is False  # only its holder's claim consumes it
    assert store.consume(g.id, A) is True
    assert store.get(g.id) is None
    with pytest.raises(NotGranted, match="does not exist"):
        store.bind(g.id, A)


def test_unused_grants_expire_and_zero_ttl_never(store: GrantStore, clock: Clock) -> None:
    short = store.add("node2", ["create"], dataset="tank/r1", ttl_s=10)
    forever = store.add("node3", ["increment", "prune"], dataset="tank/r2", ttl_s=0)
    clock.now += 11
    assert store.get(short.id) is None
    with pytest.raises(NotGranted):
        store.bind(short.id, A)
    assert [g.id for g in store.list()] == [forever.id]  # purged
    assert store.get(forever.id) is not None


def test_an_unbound_grant_waits_again_after_a_failed_first_use(store: GrantStore, clock: Clock) -> None:
    g = store.add("node2", ["create"], dataset="tank/r1", ttl_s=10)
    store.bind(g.id, A)
    store.unbind(g.id, A)
    assert store.bind(g.id, B)[0].holder == B  # free again
    store.unbind(g.id, B)
    clock.now += 11
    assert store.get(g.id) is None


def test_revoke_by_id_or_dataset(store: GrantStore) -> None:
    a = store.add("node2", ["create"], dataset="tank/r1")
    store.add("node3", ["create"], dataset="tank/r1")
    store.add("node2", ["create"], dataset="tank/r2")
    assert store.revoke(a.id) == 1 and store.revoke(a.id) == 0
    assert store.revoke_dataset("tank/r1", "node2") == 0
    assert store.revoke_dataset("tank/r1") == 1
    assert [g.dataset for g in store.list()] == ["tank/r2"]


def test_roots_hold_replicas_strictly_below() -> None:
    roots = ("tank/replicas", "tank/volumes")
    assert under_roots("tank/replicas/r1", roots) and under_roots("tank/volumes/v/child", roots)
    assert not under_roots("tank/replicas", roots)  # never the root itself
    assert not under_roots("tank/replicas2/r1", roots) and not under_roots("tank", roots)
    assert not under_roots("tank/replicas/r1", ())  # none configured: nothing
