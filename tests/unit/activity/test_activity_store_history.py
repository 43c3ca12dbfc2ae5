"""The store's history paths: ``list`` returns every live record and a window of finished ones through
indexes (the cost follows the rows returned, not the rows kept); ``prune`` deletes finished records beyond
a count or an age, never a live one."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from zfs_backend.activity import store as store_mod
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import SCHEMA_VERSION, ActivityStore, new_activity_id

T0 = 1_800_000_000.0


def _finished(st: ActivityStore, n: int, *, start: float = T0, state: str = "succeeded") -> list[str]:
    """``n`` records finished one second apart from ``start`` (oldest first)."""
    ids = []
    for i in range(n):
        rec = st.insert(ActivityRecord(id=new_activity_id(), kind="replicate", node="n1", params={"i": i}))
        st.transition(rec.id, "running")
        st.transition(rec.id, state, status=0 if state == "succeeded" else 1)
        st._db.execute("UPDATE activities SET finished_at = ? WHERE id = ?", (start + i, rec.id))
        ids.append(rec.id)
    return ids


def _live(st: ActivityStore, state: str) -> str:
    rec = st.insert(ActivityRecord(id=new_activity_id(), kind="standby-sync", node="n1"))
    if state != "pending":
        st.transition(rec.id, "running")
    if state not in ("pending", "running"):
        st.transition(rec.id, state)
    return rec.id


@pytest.fixture
def st(tmp_path: Path) -> ActivityStore:
    return ActivityStore(tmp_path / "a.db")


def test_list_window_keeps_every_live_one_and_the_last_finished(st: ActivityStore) -> None:
    old_live = _live(st, "suspended")  # created before all the finished ones
    done = _finished(st, 20)
    running = _live(st, "running")
    got = [r.id for r in st.list(limit=3)]
    assert got == [old_live, *done[-3:], running]  # creation order
    assert [r.id for r in st.list(limit=0)] == [old_live, running]
    assert len(st.list()) == 22 and len(st.list(limit=None)) == 22


def test_list_window_since_and_state(st: ActivityStore) -> None:
    done = _finished(st, 10)
    failed = _finished(st, 2, start=T0 + 100, state="failed")
    running = _live(st, "running")
    assert [r.id for r in st.list(finished_since=T0 + 7)] == [*done[7:], *failed, running]
    assert [r.id for r in st.list(finished_since=T0 + 7, limit=2)] == [*failed, running]
    assert [r.id for r in st.list("failed")] == failed
    assert [r.id for r in st.list("succeeded", limit=1)] == done[-1:]
    assert [r.id for r in st.list("running", limit=0)] == [running]
    assert [r.id for r in st.non_terminal()] == [running]
    assert st.count() == {"succeeded": 10, "failed": 2, "running": 1}


@pytest.mark.parametrize(
    ("kwargs", "index"),
    [
        ({"limit": 50}, "activities_finished"),
        ({"finished_since": T0}, "activities_finished"),
        ({"state": ("running", "suspended")}, "activities_state"),
    ],
)
def test_list_queries_walk_an_index_not_every_row(
    st: ActivityStore, monkeypatch: pytest.MonkeyPatch, kwargs: dict, index: str
) -> None:
    _finished(st, 5)
    plans: list[str] = []
    real = st._db

    class Spy:
        def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
            if sql.lstrip().startswith("SELECT"):
                plans.extend(str(r[3]) for r in real.execute("EXPLAIN QUERY PLAN " + sql, args))
            return real.execute(sql, args)

    monkeypatch.setattr(st, "_db", Spy())
    st.list(**kwargs)
    assert plans and all(index in p or "activities_state" in p for p in plans), plans
    assert not any(p.startswith("SCAN activities") for p in plans), plans
    assert not any("TEMP B-TREE" in p for p in plans), plans  # ordered by the index itself


def test_prune_by_count_keeps_the_last_finished_and_every_live_one(st: ActivityStore) -> None:
    live = [_live(st, s) for s in ("pending", "running", "suspended", "cancelling")]
    done = _finished(st, 30)
    assert st.prune(keep=5, max_age_s=1e9, now=T0 + 31) == 25
    assert [r.id for r in st.list(limit=None)] == [*live, *done[-5:]]
    for aid in done[:25]:  # their events went with them
        assert st.events(aid) == []
    assert st.prune(keep=5, max_age_s=1e9, now=T0 + 31) == 0


def test_prune_by_age_never_touches_a_live_one_however_old(st: ActivityStore) -> None:
    suspended = _live(st, "suspended")
    st._db.execute("UPDATE activities SET created_at = 0, updated_at = 0 WHERE id = ?", (suspended,))
    done = _finished(st, 10)
    assert st.prune(keep=1000, max_age_s=3.5, now=T0 + 10) == 7  # finished before T0 + 6.5
    assert [r.id for r in st.list(limit=None)] == [suspended, *done[7:]]
    assert st.prune(keep=0, max_age_s=0.0, now=T0 + 1e6) == 3
    assert [r.id for r in st.list(limit=None)] == [suspended]
    assert st.get(suspended).state == "suspended"


def test_prune_in_batches(st: ActivityStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "PRUNE_BATCH", 3)
    _finished(st, 10)
    real, opened = st._tx, []

    def counted():  # type: ignore[no-untyped-def]
        opened.append(1)
        return real()

    monkeypatch.setattr(st, "_tx", counted)
    assert st.prune(keep=0, max_age_s=0.0, now=T0 + 100) == 10
    assert len(opened) == 5  # 3 + 3 + 3 + 1, then one that finds nothing: short write transactions
    assert st.count() == {}


def test_migration_adds_the_finished_index(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    ActivityStore(db, migrations=store_mod.MIGRATIONS[:3]).close()
    st = ActivityStore(db)
    assert st.schema_version() == SCHEMA_VERSION >= 4
    names = {r[0] for r in st._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "activities_finished" in names


def test_real_finish_times_are_what_the_window_orders_by(st: ActivityStore) -> None:
    a = _live(st, "running")
    b = _live(st, "running")
    st.transition(b, "succeeded", status=0)
    time.sleep(0.01)
    st.transition(a, "succeeded", status=0)  # created first, finished last
    assert [r.id for r in st.list(limit=1)] == [a]
