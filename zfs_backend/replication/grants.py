"""Grants: the work the controller allowed one peer node to do on this (destination) node.

A peer node's narrow key reaches this node's agent on its peer socket (``recv.*``, ``backup.*``) and
runs ``zfs receive`` / ``backup-write`` / ``backup-read`` through ``peer-exec``. None of it is allowed on
a peer's word alone: the **controller** makes a grant over this node's root-only control socket
(``grant.add``), passes the grant's id to the source node in the activity's params, and the source
presents it here. A grant names:

* ``peer``: the node that may use it (the peer session's identity, see ``agent.daemon``);
* ``dataset`` (and ``recursive``) for receiving work, strictly under one of this node's replica roots
  (:func:`under_roots`), or ``volume`` for a backup;
* ``allow``: a subset of :data:`ALLOW` — ``create`` (receive a dataset that does not exist yet),
  ``increment`` (receive into an existing one), ``rollback`` (``recv.discard``), ``prune``
  (``recv.commit``'s prune of the relationship's own received snapshots), ``backup``;
* ``expires_at``: how long it may wait for its first use (0: never expires; a standby relationship,
  revoked explicitly).

Life: **unbound** until its first use (``recv.begin`` / ``backup.begin``) binds it to the activity
(``holder``) that used it; a bound grant no longer expires and lives as long as that holder's claim;
it is **consumed** (deleted) when the claim is released (finish, release, abort without keep_claim;
a backup's commit or abort). A grant never moves to another holder or peer.

SQLite, its own small file beside the claims (0600 in a 0700 directory), one transaction per change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..activity.store import new_activity_id
from ..durable import open_db, transaction
from ..errors import NotGranted, StoreError, UsageError

__all__ = ["ALLOW", "DEFAULT_GRANT_TTL_S", "Grant", "GrantStore", "under_roots"]

ALLOW = frozenset({"create", "increment", "rollback", "prune", "backup"})
DEFAULT_GRANT_TTL_S = 3600.0


def under_roots(dataset: str, roots: Iterable[str]) -> bool:
    """Whether ``dataset`` lies **strictly** under one of ``roots`` (never a root itself)."""
    return any(dataset.startswith(r.rstrip("/") + "/") for r in roots if r)


def validate_allow(allow: object) -> tuple[str, ...]:
    if not isinstance(allow, list | tuple) or not allow or not all(isinstance(a, str) for a in allow):
        raise UsageError(f"grant: allow must be a non-empty list of {sorted(ALLOW)}")
    unknown = sorted(set(allow) - ALLOW)
    if unknown:
        raise UsageError(f"grant: unknown allow {', '.join(map(repr, unknown))} (known: {sorted(ALLOW)})")
    return tuple(sorted(set(allow)))


@dataclass(frozen=True)
class Grant:
    id: str
    peer: str
    allow: tuple[str, ...]
    dataset: str | None
    volume: str | None
    recursive: bool
    created_at: float
    expires_at: float  # 0: never (while unbound); a bound grant does not expire
    holder: str | None = None
    bound_at: float | None = None

    def live(self, now: float) -> bool:
        return self.holder is not None or self.expires_at == 0 or self.expires_at > now

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant": self.id,
            "peer": self.peer,
            "allow": list(self.allow),
            "dataset": self.dataset,
            "volume": self.volume,
            "recursive": self.recursive,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "holder": self.holder,
            "bound_at": self.bound_at,
        }


class GrantStore:
    """Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._db = open_db(path, "grant store")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS grants (id TEXT PRIMARY KEY, peer TEXT NOT NULL, "
                "allow TEXT NOT NULL, dataset TEXT, volume TEXT, recursive INTEGER NOT NULL, "
                "created_at REAL NOT NULL, expires_at REAL NOT NULL, holder TEXT, bound_at REAL)"
            )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"grant store {path}: {e}") from e

    def _tx(self) -> AbstractContextManager[sqlite3.Cursor]:
        return transaction(self._db, self._lock)

    @staticmethod
    def _row(r: tuple[Any, ...]) -> Grant:
        return Grant(
            id=r[0],
            peer=r[1],
            allow=tuple(json.loads(r[2])),
            dataset=r[3],
            volume=r[4],
            recursive=bool(r[5]),
            created_at=float(r[6]),
            expires_at=float(r[7]),
            holder=r[8],
            bound_at=None if r[9] is None else float(r[9]),
        )

    def add(
        self,
        peer: str,
        allow: Iterable[str],
        *,
        dataset: str | None = None,
        volume: str | None = None,
        recursive: bool = False,
        ttl_s: float = DEFAULT_GRANT_TTL_S,
    ) -> Grant:
        """A new unbound grant (the caller validated the names)."""
        if (dataset is None) == (volume is None):
            raise UsageError("grant: name exactly one of dataset or volume")
        now = self._clock()
        g = Grant(
            id=new_activity_id("gr-"),
            peer=peer,
            allow=validate_allow(list(allow)),
            dataset=dataset,
            volume=volume,
            recursive=bool(recursive),
            created_at=now,
            expires_at=0.0 if ttl_s == 0 else now + float(ttl_s),
        )
        with self._tx() as cur:
            self._purge(cur, now)
            cur.execute(
                "INSERT INTO grants VALUES (?,?,?,?,?,?,?,?,?,?)",
                (g.id, g.peer, json.dumps(list(g.allow)), g.dataset, g.volume, int(g.recursive), now,
                 g.expires_at, None, None),
            )  # fmt: skip
        return g

    def _purge(self, cur: sqlite3.Cursor, now: float) -> int:
        """Drop unbound grants whose wait for a first use is over."""
        cur.execute("DELETE FROM grants WHERE holder IS NULL AND expires_at > 0 AND expires_at <= ?", (now,))
        return cur.rowcount

    def purge(self) -> int:
        with self._tx() as cur:
            return self._purge(cur, self._clock())

    def get(self, grant_id: str) -> Grant | None:
        """The grant, if it is live (an expired unbound one is as good as gone)."""
        with self._lock:
            r = self._db.execute("SELECT * FROM grants WHERE id = ?", (grant_id,)).fetchone()
        g = None if r is None else self._row(r)
        return g if g is not None and g.live(self._clock()) else None

    def list(self) -> list[Grant]:
        with self._tx() as cur:
            self._purge(cur, self._clock())
            rows = cur.execute("SELECT * FROM grants ORDER BY id").fetchall()
        return [self._row(r) for r in rows]

    def bind(self, grant_id: str, holder: str) -> tuple[Grant, bool]:
        """Bind the live grant to ``holder`` on its first use (again by the same holder: unchanged);
        returns (grant, bound now). Refused (``NotGranted``) when it is gone, expired or bound to
        another holder."""
        now = self._clock()
        with self._tx() as cur:
            r = cur.execute("SELECT * FROM grants WHERE id = ?", (grant_id,)).fetchone()
            g = None if r is None else self._row(r)
            if g is None or not g.live(now):
                raise NotGranted(f"grant {grant_id} does not exist or has expired")
            if g.holder is not None and g.holder != holder:
                raise NotGranted(f"grant {grant_id} is in use by another activity")
            if g.holder is not None:
                return g, False
            cur.execute("UPDATE grants SET holder = ?, bound_at = ? WHERE id = ?", (holder, now, grant_id))
        return replace(g, holder=holder, bound_at=now), True

    def unbind(self, grant_id: str, holder: str) -> None:
        """Undo a first use that failed (the grant waits for its use again, and can expire)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE grants SET holder = NULL, bound_at = NULL WHERE id = ? AND holder = ?",
                (grant_id, holder),
            )

    def consume(self, grant_id: str, holder: str) -> bool:
        """The holder's claim was released: its grant is used up."""
        with self._tx() as cur:
            cur.execute("DELETE FROM grants WHERE id = ? AND holder = ?", (grant_id, holder))
            return cur.rowcount > 0

    def revoke(self, grant_id: str) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM grants WHERE id = ?", (grant_id,))
            return cur.rowcount

    def revoke_dataset(self, dataset: str, peer: str | None = None) -> int:
        with self._tx() as cur:
            if peer is None:
                cur.execute("DELETE FROM grants WHERE dataset = ?", (dataset,))
            else:
                cur.execute("DELETE FROM grants WHERE dataset = ? AND peer = ?", (dataset, peer))
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
