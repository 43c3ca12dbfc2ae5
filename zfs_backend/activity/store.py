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
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..durable import open_db, transaction
from ..errors import ActivityNotFound, StoreError
from .report import ActivityRecord, Resources
from .schema import COLUMNS as _COLUMNS
from .schema import MIGRATIONS, SCHEMA_VERSION, new_activity_id
from .schema import row_to_record as _row_to_record
from .states import NON_TERMINAL, TERMINAL, check_transition, is_terminal

__all__ = ["MIGRATIONS", "PRUNE_BATCH", "SCHEMA_VERSION", "ActivityStore", "new_activity_id"]

#: rows deleted per transaction when pruning: short write transactions, so a running activity's
#: progress updates never queue long behind the pruner
PRUNE_BATCH = 500
_LIVE = tuple(sorted(NON_TERMINAL))
_DONE = tuple(sorted(TERMINAL))


def _marks(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values))


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

    def list(
        self,
        state: str | Iterable[str] | None = None,
        *,
        limit: int | None = None,
        finished_since: float | None = None,
    ) -> list[ActivityRecord]:
        """Records in creation order, optionally only those in ``state`` (a name or several).

        Every non-terminal record that matches is always returned; of the finished ones, only those
        finished at or after ``finished_since`` (when given) and, of those, the ``limit`` that finished
        last (None: all). Each part is one indexed query (``state``, ``finished_at``): the cost follows
        the rows returned, not the rows kept."""
        states = None if state is None else ((state,) if isinstance(state, str) else tuple(state))
        live = _LIVE if states is None else tuple(s for s in states if s not in TERMINAL)
        done = _DONE if states is None else tuple(s for s in states if s in TERMINAL)
        rows: builtins.list[tuple[Any, ...]] = []
        with self._lock:
            if live:
                rows += self._db.execute(
                    f"SELECT {_COLUMNS} FROM activities WHERE state IN ({_marks(live)})",  # noqa: S608
                    live,
                ).fetchall()
            if done and (limit is None or limit > 0):
                sql = f"SELECT {_COLUMNS} FROM activities WHERE finished_at >= ? "  # noqa: S608
                sql += f"AND +state IN ({_marks(done)}) ORDER BY finished_at DESC"  # '+': not by state
                args: tuple[Any, ...] = (-1.0 if finished_since is None else finished_since, *done)
                if limit is not None:
                    sql += " LIMIT ?"
                    args += (int(limit),)
                rows += self._db.execute(sql, args).fetchall()
        rows.sort(key=lambda r: str(r[0]))
        return [_row_to_record(r) for r in rows]

    def non_terminal(self) -> builtins.list[ActivityRecord]:
        return self.list(_LIVE)

    def count(self) -> dict[str, int]:
        """How many records in each state (one query over the ``state`` index)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM activities GROUP BY state").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def prune(self, *, keep: int, max_age_s: float, now: float | None = None) -> int:
        """Delete finished records (and their events) beyond the ``keep`` that finished last, and those
        finished more than ``max_age_s`` ago. Never a non-terminal one: the state is checked again in
        each deleting transaction. Deletes in batches of ``PRUNE_BATCH``; returns how many went."""
        cutoff = (time.time() if now is None else now) - max_age_s
        sql_ids = (
            f"SELECT id FROM activities WHERE state IN ({_marks(_DONE)}) "  # noqa: S608
            "AND (finished_at IS NULL OR finished_at < ? OR id NOT IN ("
            f"SELECT id FROM activities WHERE finished_at IS NOT NULL AND +state IN ({_marks(_DONE)}) "
            "ORDER BY finished_at DESC LIMIT ?)) LIMIT ?"
        )
        gone, args = 0, (*_DONE, cutoff, *_DONE, max(0, keep), PRUNE_BATCH)
        while True:
            with self._tx() as cur:
                ids = [r[0] for r in cur.execute(sql_ids, args)]
                if not ids:
                    return gone
                marks = _marks(tuple(ids))
                cur.execute(f"DELETE FROM events WHERE activity_id IN ({marks})", ids)  # noqa: S608
                cur.execute(
                    f"DELETE FROM activities WHERE id IN ({marks}) AND state IN ({_marks(_DONE)})",  # noqa: S608
                    (*ids, *_DONE),
                )
                gone += cur.rowcount

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
        final_resources: Callable[[float], Resources | None] | None = None,
    ) -> ActivityRecord:
        """Move to ``new`` in one transaction, or raise (``InvalidTransition``, ``ActivityNotFound``)
        leaving the record untouched. ``final_resources(finished_at)``: for a terminal move, what the
        activity cost, saved in the same transaction (whoever sees the end sees its final figures;
        ``None``: the resources stay as they were)."""
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
            res = final_resources(now) if terminal and final_resources is not None else None
            if res is not None:
                cur.execute(
                    "UPDATE activities SET resources = ? WHERE id = ?",
                    (json.dumps(res.to_dict()), activity_id),
                )
            self._record_event(cur, activity_id, old, new, detail or error)
        return self.get(activity_id)

    def note(self, activity_id: str, detail: str) -> None:
        """An event that changes no state (e.g. the bandwidth limit changed, a stalled stream torn down,
        a fallback a running activity took by itself): recorded with the current state as both old and
        new, shown with the others (``activity show``, ``activity events``)."""
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
        result: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Persist counters (monotone: ``done`` never decreases; a nonzero ``total`` never below
        ``done`` nor below its previous value), optionally with resources, the checkpoint and the result
        (as :meth:`save_result`, also once terminal), in one transaction. Returns the stored raw
        ``(done, total)``."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT done, total, state FROM activities WHERE id = ?", (activity_id,)
            ).fetchone()
            if row is None:
                raise ActivityNotFound(f"no activity {activity_id}")
            old_done, old_total, state = int(row[0]), int(row[1]), row[2]
            if result is not None:
                cur.execute(
                    "UPDATE activities SET result = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(result, sort_keys=True), time.time(), activity_id),
                )
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
