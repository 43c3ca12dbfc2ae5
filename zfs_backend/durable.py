"""Durable SQLite state, the one way this project keeps it: a private file (0600 in a 0700 directory,
``zfs_backend.private``), WAL journal, ``synchronous=FULL`` (a committed change survives a crash and a
power loss), one connection shared by threads behind a lock, and changes made in ``BEGIN IMMEDIATE``
transactions (:func:`transaction`), so that a crash leaves either the old state or the new one.
Reads that change nothing take a read transaction (:func:`reading`): no write lock, so readers in other
processes do not queue behind each other or behind a writer (WAL: a reader sees the last commit before
its first read), and it cannot write by mistake (``query_only``).
Used by the activity store, the replication claims and grants, and the volume service."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError
from .private import private_sqlite

__all__ = ["open_db", "reading", "transaction"]


def open_db(path: str | Path, what: str, *, foreign_keys: bool = False) -> sqlite3.Connection:
    """Open (creating it private) the database at ``path``; ``what`` names it in errors."""
    if str(path) != ":memory:":
        private_sqlite(path)
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{what} {path}: {e}") from e
    return db


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Cursor]:
    """One ``BEGIN IMMEDIATE`` transaction under ``lock``: committed when the block ends, rolled back
    when it raises."""
    with lock:
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")


@contextmanager
def reading(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Cursor]:
    """One read transaction under ``lock`` (a deferred ``BEGIN``: every read inside sees one snapshot,
    and it takes no write lock). A write inside fails (``query_only``) rather than upgrading to the write
    lock, which could find it taken (SQLITE_BUSY): writes go through :func:`transaction`."""
    with lock:
        cur = db.cursor()
        cur.execute("PRAGMA query_only=ON")
        try:
            cur.execute("BEGIN")
            try:
                yield cur
            finally:
                cur.execute("COMMIT")  # nothing to keep or undo: it only ends the read snapshot
        finally:
            cur.execute("PRAGMA query_only=OFF")
