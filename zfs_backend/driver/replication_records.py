"""Each volume's replication record in the volume service's database (the ``replication`` table): its
``replication_status`` (Cinder's values), the standby node, the standby-sync activity, the interval, the
lag allowed and free-form detail. The flows write it as a standby is made, synced and failed over; it is
kept apart from the volume's own status ("dual states").
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from ..errors import InvalidName
from .records import REPLICATION_STATUSES, ReplicationRecord, VolumeRecord

__all__ = ["ReplicationRecords"]

_FIELDS = ("standby_node", "activity_id", "interval_s", "max_lag_s", "detail")


class ReplicationRecords:
    """The replication-record methods of :class:`~.service.VolumeService` (which provides the database
    and the volume lookup)."""

    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def reading(self) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def get_volume(self, name_or_id: str) -> VolumeRecord:
        raise NotImplementedError

    def replication(self, name: str) -> ReplicationRecord | None:
        rec = self.get_volume(name)
        with self.reading() as db:
            row = db.execute("SELECT * FROM replication WHERE volume_id = ?", (rec.id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["detail"] = json.loads(d["detail"] or "{}")
        return ReplicationRecord(**d)

    def replications(self) -> list[ReplicationRecord]:
        with self.reading() as db:
            ids = [
                r["volume_id"] for r in db.execute("SELECT volume_id FROM replication ORDER BY updated_at")
            ]
        return [r for r in (self.replication(i) for i in ids) if r is not None]

    def set_replication(self, name: str, replication_status: str, **fields: Any) -> ReplicationRecord:
        """Create or update the volume's replication record (``standby_node``, ``activity_id``,
        ``interval_s``, ``max_lag_s``, ``detail``)."""
        if replication_status not in REPLICATION_STATUSES:
            raise InvalidName(f"invalid replication_status {replication_status!r}")
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise InvalidName(f"unknown replication fields {sorted(unknown)}")
        rec = self.get_volume(name)
        old = self.replication(rec.id)
        row = {
            "standby_node": None,
            "activity_id": None,
            "interval_s": None,
            "max_lag_s": None,
            "detail": {},
            **({k: getattr(old, k) for k in _FIELDS} if old else {}),
            **fields,
        }
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO replication VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id,
                    replication_status,
                    row["standby_node"],
                    row["activity_id"],
                    row["interval_s"],
                    row["max_lag_s"],
                    json.dumps(row["detail"], sort_keys=True),
                    time.time(),
                ),
            )
        out = self.replication(rec.id)
        assert out is not None
        return out

    def drop_replication(self, name: str) -> None:
        rec = self.get_volume(name)
        with self.transaction() as db:
            db.execute("DELETE FROM replication WHERE volume_id = ?", (rec.id,))
