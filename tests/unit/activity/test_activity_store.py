import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from zfs_backend.activity import store as store_mod
from zfs_backend.activity.report import ActivityRecord, Resources
from zfs_backend.activity.store import SCHEMA_VERSION, ActivityStore, new_activity_id
from zfs_backend.errors import ActivityNotFound, InvalidTransition, StoreError


def _rec(kind="pipeline"):
    return ActivityRecord(id=new_activity_id(), kind=kind, node="n1", params={"x": 1})


def test_ids_sortable_and_unique():
    ids = [new_activity_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert ids == sorted(ids)
    assert all(i.startswith("act-") and len(i) == 30 for i in ids)


def test_schema_wal_and_modes(tmp_path):
    db = tmp_path / "agent" / "activities.db"
    st = ActivityStore(db)
    assert st.schema_version() == SCHEMA_VERSION
    assert st.journal_mode() == "wal"
    st.insert(_rec())
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
    wal = db.with_name(db.name + "-wal")
    assert wal.exists() and stat.S_IMODE(os.stat(wal).st_mode) == 0o600


def test_store_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        db = tmp_path / "home" / "agent" / "activities.db"
        st = ActivityStore(db)
        st.insert(_rec())
    finally:
        os.umask(old)
    for d in (tmp_path / "home", db.parent):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    files = sorted(db.parent.iterdir())
    assert [f.name for f in files] == ["activities.db", "activities.db-shm", "activities.db-wal"]
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    st.close()


def test_migration_from_v1_and_newer_refused(tmp_path):
    db = tmp_path / "a.db"
    st = ActivityStore(db, migrations=store_mod.MIGRATIONS[:1])
    assert st.schema_version() == 1
    st._db.execute(
        "INSERT INTO activities (id, kind, node, state, created_at, updated_at) "
        "VALUES ('act-old','k','n','running',1,1)"
    )
    st.close()
    st2 = ActivityStore(db)
    assert st2.schema_version() == SCHEMA_VERSION
    assert st2.get("act-old").state == "running"
    st2.transition("act-old", "suspended")
    assert [e["new"] for e in st2.events("act-old")] == ["suspended"]
    st2._db.execute("UPDATE schema_version SET version = 99")
    st2.close()
    with pytest.raises(StoreError, match="newer"):
        ActivityStore(db)


def test_transitions_timestamps_and_errors(tmp_path):
    st = ActivityStore(tmp_path / "a.db")
    rec = st.insert(_rec())
    assert rec.state == "pending" and rec.started_at is None
    r = st.transition(rec.id, "running")
    assert r.started_at is not None and r.status is None
    with pytest.raises(InvalidTransition, match=f"cannot resume activity {rec.id}: it is running"):
        st.transition(rec.id, "running")
    assert st.get(rec.id) == r  # nothing changed
    r = st.transition(rec.id, "failed", status=3, error="boom")
    assert (r.state, r.status, r.error) == ("failed", 3, "boom")
    assert r.finished_at is not None
    with pytest.raises(ActivityNotFound):
        st.get("act-nope")
    with pytest.raises(ActivityNotFound):
        st.transition("act-nope", "running")
    assert [e["new"] for e in st.events(rec.id)] == ["pending", "running", "failed"]
    assert [x.id for x in st.list("failed")] == [rec.id]
    assert st.list(["pending", "running"]) == []


def test_progress_monotone(tmp_path):
    st = ActivityStore(tmp_path / "a.db")
    rec = st.insert(_rec())
    st.transition(rec.id, "running")
    assert st.update_progress(rec.id, 10, 100) == (10, 100)
    assert st.update_progress(rec.id, 5, 100) == (10, 100)  # never backwards
    assert st.update_progress(rec.id, 50, 20) == (50, 100)  # total never below previous
    assert st.get(rec.id).progress.pair == (50, 100)
    st.update_progress(rec.id, 60, resources=Resources(cpu_s=1.5), checkpoint={"delivered": 60})
    assert st.checkpoint(rec.id) == {"delivered": 60}
    assert st.get(rec.id).resources.cpu_s == 1.5
    r = st.transition(rec.id, "succeeded", status=0)
    assert r.progress.pair == (60, 60)  # n == m exactly on success
    assert st.update_progress(rec.id, 99) == (60, 60)  # frozen once terminal


def test_unknown_total_shows_zero_zero(tmp_path):
    st = ActivityStore(tmp_path / "a.db")
    rec = st.insert(_rec())
    st.transition(rec.id, "running")
    st.update_progress(rec.id, 123, 0)
    assert st.get(rec.id).progress.pair == (0, 0)
    assert st.raw_progress(rec.id) == (123, 0)


class _Exploding(ActivityStore):
    def _record_event(self, cur, activity_id, old, new, detail):
        if new == "succeeded":
            raise RuntimeError("crash between the two writes")
        super()._record_event(cur, activity_id, old, new, detail)


def test_crash_inside_transition_changes_nothing(tmp_path):
    st = _Exploding(tmp_path / "a.db")
    rec = st.insert(_rec())
    st.transition(rec.id, "running")
    before = st.get(rec.id)
    with pytest.raises(RuntimeError):
        st.transition(rec.id, "succeeded", status=0)
    assert st.get(rec.id) == before
    st.close()
    again = ActivityStore(tmp_path / "a.db")
    assert again.get(rec.id) == before
    assert [e["new"] for e in again.events(rec.id)] == ["pending", "running"]


_WRITER = r"""
import sys, time
from zfs_backend.activity.store import ActivityStore
from zfs_backend.activity.report import ActivityRecord
st = ActivityStore(sys.argv[1])
ids = [r.id for r in st.list()]
print("ready", flush=True)
i = 0
while True:
    for aid in ids:
        rec = st.get(aid)
        if rec.state == "running":
            n = rec.progress.done + 1
            st.update_progress(aid, n, 10**9, checkpoint={"delivered": n})
            st.transition(aid, "suspended")
        else:
            st.transition(aid, "running")
    i += 1
"""


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_sigkill_mid_write_leaves_consistent_records(tmp_path, delay):
    db = tmp_path / "a.db"
    st = ActivityStore(db)
    ids = []
    for _ in range(5):
        r = st.insert(_rec())
        st.transition(r.id, "running")
        ids.append(r.id)
    st.close()
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    st = ActivityStore(db)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for aid in ids:
        rec = st.get(aid)
        ev = st.events(aid)
        assert ev[-1]["new"] == rec.state  # the event log and the row agree
        assert rec.state in ("running", "suspended")
        assert st.checkpoint(aid).get("delivered", 0) == st.raw_progress(aid)[0]
        assert rec.started_at is not None and rec.finished_at is None
