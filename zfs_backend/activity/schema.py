"""The activity store's schema: its migrations, the columns read back, a row as an ``ActivityRecord``,
and activity ids.

Invariants: migrations are numbered from 1 and append-only (a released one is never edited; a change
is a new migration); ``SCHEMA_VERSION`` is the last one's number; ids sort by creation time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from .report import ActivityRecord, Progress, Resources

__all__ = ["COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "new_activity_id", "row_to_record"]

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
    # the history's queries (newest finished first, finished since T) and the retention's pruning
    # walk this index instead of every row
    (4, ["CREATE INDEX activities_finished ON activities(finished_at)"]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

COLUMNS = (
    "id, kind, node, state, status, error, done, total, unit, self_restarting, "
    "created_at, started_at, finished_at, resources, params, result"
)


def row_to_record(row: tuple[Any, ...]) -> ActivityRecord:
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
