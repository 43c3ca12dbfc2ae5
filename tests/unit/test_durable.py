"""``durable.reading``: a read transaction takes no write lock, so a reader returns while another
connection (another process: ``volume list`` beside a migration recording its end) holds a write
transaction, where ``BEGIN IMMEDIATE`` (what every lookup of the volume service took) queues and, past its
busy timeout, fails "database is locked". A write inside a read transaction is refused. The volume
service's lookups read that way; its changes keep their ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import load_settings
from zfs_backend.driver import volume_jobs
from zfs_backend.driver.service import VolumeService
from zfs_backend.durable import open_db, reading, transaction


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path / "t.db", "test database")
    c.execute("CREATE TABLE t (x INTEGER)")
    c.execute("INSERT INTO t VALUES (1)")
    c.execute("PRAGMA busy_timeout=50")  # short: a reader that queued would fail at once, not wait
    yield c
    c.close()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection in the middle of a write transaction (uncommitted)."""
    w = sqlite3.connect(str(tmp_path / "t.db"), isolation_level=None, timeout=0.05)
    w.execute("BEGIN IMMEDIATE")
    w.execute("INSERT INTO t VALUES (2)")
    yield w
    w.execute("ROLLBACK")
    w.close()


def test_a_reader_returns_while_another_connection_writes(
    db: sqlite3.Connection, writer: sqlite3.Connection
) -> None:
    with reading(db, threading.RLock()) as cur:
        assert [r[0] for r in cur.execute("SELECT x FROM t")] == [1]  # the last commit, not the write
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_begin_immediate_queues_behind_the_writer(db: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    """What a lookup did before: it waits for the write lock (here past a short busy timeout)."""
    with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(db, threading.RLock()) as cur:
        cur.execute("SELECT x FROM t")


def test_a_write_inside_a_read_is_refused_and_writes_work_after(db: sqlite3.Connection) -> None:
    lock = threading.RLock()
    with pytest.raises(sqlite3.OperationalError, match="readonly"), reading(db, lock) as cur:
        cur.execute("INSERT INTO t VALUES (3)")
    with transaction(db, lock) as cur:
        cur.execute("INSERT INTO t VALUES (4)")
    assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 4]


class _Made:
    host = None

    def create_volume(self, volume: Any) -> dict[str, Any]:
        return {"provider_location": "198.18.0.11:/tank/volumes/x"}


def test_the_volume_services_lookups_do_not_queue(tmp_path: Path) -> None:
    settings = load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home")})
    with VolumeService(settings, driver_for=lambda n: _Made()) as svc:  # type: ignore[arg-type,return-value]
        svc.create_volume("vol1", 1, "node1")
        svc._open().execute("PRAGMA busy_timeout=50")
        w = sqlite3.connect(str(svc.db_path), isolation_level=None, timeout=0.05)
        w.execute("BEGIN IMMEDIATE")
        w.execute("UPDATE volumes SET size = 9")
        try:
            assert [v.name for v in svc.list_volumes()] == ["vol1"]
            assert svc.get_volume("vol1").size == 1  # the last commit
            assert svc.list_snapshots("vol1") == [] and svc.attachments("vol1") == []
            assert svc.replication("vol1") is None and svc.replications() == []
            assert volume_jobs.list_backups(svc) == []
            with pytest.raises(sqlite3.OperationalError, match="locked"):  # a change still takes the lock
                svc.set_status("vol1", "error")
        finally:
            w.execute("ROLLBACK")
            w.close()
        assert svc.set_status("vol1", "error").status == "error"
