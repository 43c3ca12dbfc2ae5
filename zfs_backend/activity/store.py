"""``ActivityStore``: the node's durable record of its activities, on SQLite.

Invariants:

* WAL journal, ``synchronous=FULL``: a committed transition or progress update survives a process
  crash and a power loss; each transition is ONE transaction (state + timestamps + status + error +
  an ``events`` row), so a crash at any point leaves either the old or the new record, never a mix.
* The state machine is checked inside the transaction (``BEGIN IMMEDIATE``), against the stored state.
* Progress is monotone in the store itself: ``done`` never decreases, ``total`` never drops below
  ``done``.
* The schema is versioned (``schema_version``); migrations run in order, each in its own transaction.
  A store written by a newer schema is refused with ``StoreError``.
* The database file (and its WAL and shared memory) is created mode 0600 in a directory created 0700
  (``zfs_backend.private``); an existing directory keeps its mode.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..durable import open_db, transaction
from ..errors import ActivityNotFound, StoreError
from .report import ActivityRecord, Progress, Resources
from .states import TERMINAL, check_transition, is_terminal

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ActivityStore", "new_activity_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_id_last: list[int] = [0, 0]


def new_activity_id(prefix: str = "act-") -> str:
    """``act-`` + a ULID: 48-bit millisecond time, 80 random bits, Crockford base32.

    Sortable by creation time; strictly increasing within a process (same millisecond: random + 1).
    """
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _id_last[0]:
            ms, rnd = _id_last[0], (_id_last[1] + 1) & ((1 << 80) - 1)
        else:
            rnd = int.from_bytes(os.urandom(10), "big")
        _id_last[0], _id_last[1] = ms, rnd
    value = (ms << 80) | rnd
    chars = [_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1)]
    return prefix + "".join(chars)


MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE activities (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                node TEXT NOT NULL,
                state TEXT NOT NULL,
                status INTEGER,
                error TEXT,
                done INTEGER NOT NULL DEFAULT 0,
                total INTEGER NOT NULL DEFAULT 0,
                unit TEXT NOT NULL DEFAULT 'bytes',
                self_restarting INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL,
                updated_at REAL NOT NULL,
                resources TEXT NOT NULL DEFAULT '{}',
                params TEXT NOT NULL DEFAULT '{}',
                checkpoint TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX activities_state ON activities(state)",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                activity_id TEXT NOT NULL REFERENCES activities(id),
                at REAL NOT NULL,
                old_state TEXT,
                new_state TEXT NOT NULL,
                detail TEXT
            )""",
            "CREATE INDEX events_activity ON events(activity_id, seq)",
        ],
    ),
    (3, ["ALTER TABLE activities ADD COLUMN result TEXT NOT NULL DEFAULT '{}'"]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_COLUMNS = (
    "id, kind, node, state, status, error, done, total, unit, self_restarting, "
    "created_at, started_at, finished_at, resources, params, result"
)


def _row_to_record(row: tuple[Any, ...]) -> ActivityRecord:
    (aid, kind, node, state, status, error, done, total, unit, sr, cat, sat, fat, res, params, result) = row
    return ActivityRecord(
        id=aid,
        kind=kind,
        node=node,
        state=state,
        status=status,
        error=error,
        progress=Progress.view(done, total, unit, state),
        self_restarting=bool(sr),
        created_at=cat,
        started_at=sat,
        finished_at=fat,
        resources=Resources.from_dict(json.loads(res)),
        params=json.loads(params),
        result=json.loads(result),
    )


class ActivityStore:
    """Thread-safe (one connection behind a lock); several processes may open the same file."""

    def __init__(self, path: str | Path, *, migrations: list[tuple[int, list[str]]] | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        migrations = MIGRATIONS if migrations is None else migrations
        self._db = open_db(path, "activity store", foreign_keys=True)
        try:
            self._migrate(migrations)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"activity store {path}: {e}") from e

    # -- plumbing -------------------------------------------------------------------------------
    def _tx(self) -> AbstractContextManager[sqlite3.Cursor]:
        return transaction(self._db, self._lock)

    def schema_version(self) -> int:
        with self._lock:
            try:
                row = self._db.execute("SELECT version FROM schema_version").fetchone()
            except sqlite3.OperationalError:
                return 0
        return int(row[0]) if row else 0

    def _migrate(self, migrations: list[tuple[int, list[str]]]) -> None:
        with self._tx() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            if cur.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                cur.execute("INSERT INTO schema_version VALUES (0)")
        current = self.schema_version()
        latest = migrations[-1][0] if migrations else 0
        if current > latest:
            raise StoreError(
                f"activity store {self.path} has schema v{current}, newer than this agent's v{latest}"
            )
        for version, statements in migrations:
            if version <= current:
                continue
            with self._tx() as cur:
                for sql in statements:
                    cur.execute(sql)
                cur.execute("UPDATE schema_version SET version = ?", (version,))

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads ----------------------------------------------------------------------------------
    def get(self, activity_id: str) -> ActivityRecord:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM activities WHERE id = ?",  # noqa: S608 - constant columns
                (activity_id,),
            ).fetchone()
        if row is None:
            raise ActivityNotFound(f"no activity {activity_id}")
        return _row_to_record(row)

    def list(self, state: str | Iterable[str] | None = None) -> list[ActivityRecord]:
        """Records in creation order, optionally only those in ``state`` (a name or several)."""
        sql = f"SELECT {_COLUMNS} FROM activities"  # noqa: S608 - constant columns
        args: tuple[str, ...] = ()
        if state is not None:
            states = (state,) if isinstance(state, str) else tuple(state)
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = states
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [_row_to_record(r) for r in rows]

    def non_terminal(self) -> builtins.list[ActivityRecord]:
        return [r for r in self.list() if r.state not in TERMINAL]

    def raw_progress(self, activity_id: str) -> tuple[int, int]:
        """The stored counters, before the contract's view (``done`` may be known while total is 0)."""
        with self._lock:
            row = self._db.execute(
                "SELECT done, total FROM activities WHERE id = ?", (activity_id,)
            ).fetchone()
        if row is None:
            raise ActivityNotFound(f"no activity {activity_id}")
        return int(row[0]), int(row[1])

    def checkpoint(self, activity_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                "SELECT checkpoint FROM activities WHERE id = ?", (activity_id,)
            ).fetchone()
        if row is None:
            raise ActivityNotFound(f"no activity {activity_id}")
        return dict(json.loads(row[0]))

    def events(self, activity_id: str) -> builtins.list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, at, old_state, new_state, detail FROM events WHERE activity_id = ? ORDER BY seq",
                (activity_id,),
            ).fetchall()
        return [{"seq": r[0], "at": r[1], "old": r[2], "new": r[3], "detail": r[4]} for r in rows]

    # -- writes ---------------------------------------------------------------------------------
    def insert(self, record: ActivityRecord, checkpoint: dict[str, Any] | None = None) -> ActivityRecord:
        now = time.time()
        rec = record if record.created_at else record.with_(created_at=now)
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO activities (id, kind, node, state, status, error, done, total, unit, "
                "self_restarting, created_at, started_at, finished_at, updated_at, resources, params, "
                "checkpoint) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.id,
                    rec.kind,
                    rec.node,
                    rec.state,
                    rec.status,
                    rec.error,
                    rec.progress.done,
                    rec.progress.total,
                    rec.progress.unit,
                    int(rec.self_restarting),
                    rec.created_at,
                    rec.started_at,
                    rec.finished_at,
                    now,
                    json.dumps(rec.resources.to_dict()),
                    json.dumps(rec.params, sort_keys=True),
                    json.dumps(checkpoint or {}, sort_keys=True),
                ),
            )
            self._record_event(cur, rec.id, None, rec.state, "created")
        return self.get(rec.id)

    def transition(
        self,
        activity_id: str,
        new: str,
        *,
        verb: str | None = None,
        status: int | None = None,
        error: str | None = None,
        detail: str | None = None,
    ) -> ActivityRecord:
        """Move to ``new`` in one transaction, or raise (``InvalidTransition``, ``ActivityNotFound``)
        leaving the record untouched."""
        now = time.time()
        with self._tx() as cur:
            row = cur.execute("SELECT state FROM activities WHERE id = ?", (activity_id,)).fetchone()
            if row is None:
                raise ActivityNotFound(f"no activity {activity_id}")
            old = row[0]
            check_transition(old, new, activity_id, verb)
            terminal = is_terminal(new)
            cur.execute(
                "UPDATE activities SET state = ?, updated_at = ?, "
                "started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, "
                "finished_at = CASE WHEN ? THEN ? ELSE finished_at END, "
                "status = CASE WHEN ? THEN ? ELSE status END, "
                "error = CASE WHEN ? THEN ? ELSE error END, "
                "total = CASE WHEN ? = 'succeeded' THEN done ELSE total END "
                "WHERE id = ?",
                (
                    new,
                    now,
                    new,
                    now,
                    terminal,
                    now,
                    terminal,
                    status,
                    terminal or error is not None,
                    error,
                    new,
                    activity_id,
                ),
            )
            self._record_event(cur, activity_id, old, new, detail or error)
        return self.get(activity_id)

    def note(self, activity_id: str, detail: str) -> None:
        """An event that changes no state (e.g. the bandwidth limit changed, a stalled stream torn down):
        recorded with the current state as both old and new."""
        with self._tx() as cur:
            row = cur.execute("SELECT state FROM activities WHERE id = ?", (activity_id,)).fetchone()
            if row is None:
                raise ActivityNotFound(f"no activity {activity_id}")
            self._record_event(cur, activity_id, row[0], row[0], detail)

    def _record_event(
        self, cur: sqlite3.Cursor, activity_id: str, old: str | None, new: str, detail: str | None
    ) -> None:
        cur.execute(
            "INSERT INTO events (activity_id, at, old_state, new_state, detail) VALUES (?,?,?,?,?)",
            (activity_id, time.time(), old, new, detail),
        )

    def update_progress(
        self,
        activity_id: str,
        done: int,
        total: int | None = None,
        *,
        resources: Resources | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Persist counters (monotone: ``done`` never decreases; a nonzero ``total`` never below
        ``done`` nor below its previous value), optionally with resources and the checkpoint, in one
        transaction. Returns the stored raw ``(done, total)``."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT done, total, state FROM activities WHERE id = ?", (activity_id,)
            ).fetchone()
            if row is None:
                raise ActivityNotFound(f"no activity {activity_id}")
            old_done, old_total, state = int(row[0]), int(row[1]), row[2]
            if is_terminal(state):
                return old_done, old_total
            new_done = max(old_done, int(done))
            new_total = old_total if total is None else int(total)
            if new_total > 0 or old_total > 0:
                new_total = max(new_total, old_total, new_done)
            sets = ["done = ?", "total = ?", "updated_at = ?"]
            args: list[Any] = [new_done, new_total, time.time()]
            if resources is not None:
                sets.append("resources = ?")
                args.append(json.dumps(resources.to_dict()))
            if checkpoint is not None:
                sets.append("checkpoint = ?")
                args.append(json.dumps(checkpoint, sort_keys=True))
            sql = f"UPDATE activities SET {', '.join(sets)} WHERE id = ?"  # noqa: S608 - constant names
            cur.execute(sql, (*args, activity_id))
        return new_done, new_total

    def save_resources(self, activity_id: str, resources: Resources) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE activities SET resources = ?, updated_at = ? WHERE id = ?",
                (json.dumps(resources.to_dict()), time.time(), activity_id),
            )

    def save_result(self, activity_id: str, result: dict[str, Any]) -> None:
        """What the work did, for the caller (``ActivityRecord.result``)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE activities SET result = ?, updated_at = ? WHERE id = ?",
                (json.dumps(result, sort_keys=True), time.time(), activity_id),
            )
            if cur.rowcount == 0:
                raise ActivityNotFound(f"no activity {activity_id}")

    def save_checkpoint(self, activity_id: str, checkpoint: dict[str, Any]) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE activities SET checkpoint = ?, updated_at = ? WHERE id = ?",
                (json.dumps(checkpoint, sort_keys=True), time.time(), activity_id),
            )
            if cur.rowcount == 0:
                raise ActivityNotFound(f"no activity {activity_id}")

    def set_self_restarting(self, activity_id: str, value: bool) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE activities SET self_restarting = ? WHERE id = ?", (int(value), activity_id))
