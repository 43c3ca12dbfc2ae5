"""Claims: which replication may write into a destination dataset right now, kept by the destination.

The destination node's agent keeps one claim per dataset tree being received into. A claim names its
holder (the source activity's id) and its source, expires unless renewed (a lease: a source node that
died for good does not lock a dataset forever), and carries what the receiver recorded when it was
first taken: the tree's state before the replication (what a cancel restores) and the properties it
changed (readonly, restored at the end). A second replication into the same tree, or into a dataset
inside it or around it, from any source node, is refused while the claim lives; its own holder may take
it again (a restarted activity carries on with the same id), unless it was *fenced* off the dataset
(a standby promoted while its source was unreachable: the source's sync must never come back into it).

SQLite, one small file (0600 in a 0700 directory), one transaction per change: a claim survives a
restart of the destination's agent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..durable import open_db, transaction
from ..errors import StoreError
from .plan import ALREADY_RUNNING, Conflict

__all__ = ["DEFAULT_TTL_S", "Claim", "ClaimSave", "ClaimStore", "not_held", "overlaps"]

DEFAULT_TTL_S = 300.0


def not_held(dataset: object, holder: object) -> Exception:
    """The refusal of an op on a claim the caller does not hold, as a peer sees it (names nobody else)."""
    return Conflict(ALREADY_RUNNING, f"{holder} does not hold {dataset}").error()


def _fenced(dataset: object, holder: object, reason: object) -> Exception:
    """The refusal of a holder shut out of a dataset for good (``ClaimStore.fence``), naming why."""
    return Conflict(ALREADY_RUNNING, f"{holder} is fenced off {dataset}: {reason}").error()


def overlaps(a: str, b: str) -> bool:
    """Whether two dataset names are the same, or one contains the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@dataclass(frozen=True)
class Claim:
    dataset: str
    holder: str
    source: str
    created_at: float
    expires_at: float
    state: dict[str, Any] = field(default_factory=dict)

    def live(self, now: float) -> bool:
        return self.expires_at > now

    def with_state(self, **changes: Any) -> Claim:
        return replace(self, state={**self.state, **changes})

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "holder": self.holder,
            "source": self.source,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "peer": self.state.get("peer"),
            "grant": self.state.get("grant"),
        }


@dataclass(frozen=True)
class ClaimSave:
    """One claim's :meth:`ClaimStore.save`, to be written with others (:meth:`ClaimStore.save_many`)."""

    claim: Claim
    renew_ttl: float | None = None
    received: list[int] = field(default_factory=list)
    forget: list[int] = field(default_factory=list)


class ClaimStore:
    """Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._db = open_db(path, "claim store")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS claims (dataset TEXT PRIMARY KEY, holder TEXT NOT NULL, "
                "source TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, "
                "state TEXT NOT NULL DEFAULT '{}')"
            )
            # holders shut out of a dataset for good (a standby promoted without its source: the
            # source's sync activity must never claim the promoted dataset again)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS fenced (dataset TEXT NOT NULL, holder TEXT NOT NULL, "
                "at REAL NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (dataset, holder))"
            )
            # snapshots this node verified it received (not there at begin, there at finish), and from
            # which peer ("": the controller's socket): what a later relationship may prune as its own
            # (GUIDs are unsigned 64-bit: kept as text, SQLite's INTEGER is signed)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS received (dataset TEXT NOT NULL, guid TEXT NOT NULL, "
                "peer TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (dataset, guid))"
            )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"claim store {path}: {e}") from e

    def _tx(self) -> AbstractContextManager[sqlite3.Cursor]:
        return transaction(self._db, self._lock)

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Claim:
        return Claim(row[0], row[1], row[2], float(row[3]), float(row[4]), json.loads(row[5]))

    def all(self) -> list[Claim]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM claims ORDER BY dataset").fetchall()
        return [self._row(r) for r in rows]

    def get(self, dataset: str) -> Claim | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM claims WHERE dataset = ?", (dataset,)).fetchone()
        return None if row is None else self._row(row)

    def take(self, dataset: str, holder: str, source: str, ttl: float = DEFAULT_TTL_S) -> tuple[Claim, bool]:
        """Claim ``dataset`` for ``holder``; returns (claim, new). Refused (``AlreadyRunning``) while a
        live claim of another holder overlaps it. An expired claim of another holder is replaced (the
        caller gets it back in ``Claim.state['expired']`` to tidy up after it)."""
        now = self._clock()
        with self._tx() as cur:
            fence = cur.execute(
                "SELECT reason FROM fenced WHERE dataset = ? AND holder = ?", (dataset, holder)
            ).fetchone()
            if fence is not None:
                raise _fenced(dataset, holder, fence[0])
            rows = [self._row(r) for r in cur.execute("SELECT * FROM claims").fetchall()]
            mine = None
            expired: list[dict[str, Any]] = []
            for c in rows:
                if not overlaps(c.dataset, dataset):
                    continue
                if c.holder == holder and c.dataset == dataset:
                    mine = c
                elif c.live(now):
                    raise Conflict(
                        ALREADY_RUNNING,
                        f"{c.dataset} is being received into by {c.holder} from {c.source} "
                        f"(claimed {now - c.created_at:.0f} s ago)",
                    ).error()
                else:
                    expired.append({"dataset": c.dataset, "holder": c.holder, "state": c.state})
                    cur.execute("DELETE FROM claims WHERE dataset = ?", (c.dataset,))
            if mine is not None:
                cur.execute("UPDATE claims SET expires_at = ? WHERE dataset = ?", (now + ttl, dataset))
                return replace(mine, expires_at=now + ttl), False
            state: dict[str, Any] = {"expired": expired} if expired else {}
            claim = Claim(dataset, holder, source, now, now + ttl, state)
            cur.execute(
                "INSERT INTO claims VALUES (?,?,?,?,?,?)",
                (dataset, holder, source, now, now + ttl, json.dumps(state, sort_keys=True)),
            )
            return claim, True

    def held(self, dataset: str, holder: str) -> Claim:
        """The claim ``holder`` has on ``dataset`` (expired or not, as long as nobody took it over)."""
        c = self.get(dataset)
        if c is None or c.holder != holder:
            self.refuse_if_fenced(dataset, holder)
            who = "nobody" if c is None else f"{c.holder} from {c.source}"
            raise Conflict(ALREADY_RUNNING, f"{holder} does not hold {dataset} (held by {who})").error()
        return c

    def renew(self, dataset: str, holder: str, ttl: float = DEFAULT_TTL_S) -> Claim:
        now = self._clock()
        with self._tx() as cur:
            cur.execute(
                "UPDATE claims SET expires_at = ? WHERE dataset = ? AND holder = ?",
                (now + ttl, dataset, holder),
            )
            if cur.rowcount == 0:
                raise not_held(dataset, holder)
        return self.held(dataset, holder)

    def save(
        self,
        claim: Claim,
        *,
        renew_ttl: float | None = None,
        received: Iterable[int] = (),
        forget: Iterable[int] = (),
    ) -> None:
        """The claim's state, in one transaction with (optionally) its lease renewed (as :meth:`renew`:
        refused when the holder no longer holds it, nothing written) and GUIDs recorded as received from
        its peer or forgotten (as :meth:`record_received` / :meth:`forget_received`): a standby's
        ``expect`` and ``commit`` cost one durable write each."""
        failed = self.save_many([ClaimSave(claim, renew_ttl, list(received), list(forget))])
        if failed:
            raise failed[claim.dataset]

    def save_many(self, saves: list[ClaimSave]) -> dict[str, Exception]:
        """Each :meth:`save` of ``saves`` (distinct datasets), all in **one** transaction (one durable
        write for a tick of many standbys). A lease that cannot be renewed (its holder no longer holds the
        claim) leaves that claim unwritten and is returned by dataset; the others are written."""
        failed: dict[str, Exception] = {}
        if not saves:
            return failed
        with self._tx() as cur:
            for s in saves:
                c = s.claim
                if s.renew_ttl is not None:
                    cur.execute(
                        "UPDATE claims SET expires_at = ? WHERE dataset = ? AND holder = ?",
                        (self._clock() + s.renew_ttl, c.dataset, c.holder),
                    )
                    if cur.rowcount == 0:
                        failed[c.dataset] = not_held(c.dataset, c.holder)
                        continue
                cur.execute(
                    "UPDATE claims SET state = ? WHERE dataset = ? AND holder = ?",
                    (json.dumps(c.state, sort_keys=True), c.dataset, c.holder),
                )
                self._received(cur, c.dataset, s.received, c.state.get("peer"))
                self._forget(cur, c.dataset, s.forget)
        return failed

    def release(self, dataset: str, holder: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM claims WHERE dataset = ? AND holder = ?", (dataset, holder))
            return cur.rowcount > 0

    def fence(self, dataset: str, holder: str, reason: str) -> None:
        """Shut ``holder`` out of ``dataset`` for good (its claim, if any, is dropped)."""
        with self._tx() as cur:
            cur.execute("DELETE FROM claims WHERE dataset = ? AND holder = ?", (dataset, holder))
            cur.execute(
                "INSERT OR REPLACE INTO fenced VALUES (?,?,?,?)", (dataset, holder, self._clock(), reason)
            )

    def fenced(self, dataset: str, holder: str) -> bool:
        return self._fence_reason(dataset, holder) is not None

    def refuse_if_fenced(self, dataset: str, holder: str) -> None:
        """``AlreadyRunning`` naming the fence when ``holder`` is shut out of ``dataset`` (what its source
        must be told, before anything else: not "not held")."""
        reason = self._fence_reason(dataset, holder)
        if reason is not None:
            raise _fenced(dataset, holder, reason)

    def _fence_reason(self, dataset: str, holder: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reason FROM fenced WHERE dataset = ? AND holder = ?", (dataset, holder)
            ).fetchone()
        return None if row is None else str(row[0])

    def record_received(self, dataset: str, guids: list[int], peer: str | None) -> None:
        with self._tx() as cur:
            self._received(cur, dataset, guids, peer)

    def _received(self, cur: sqlite3.Cursor, dataset: str, guids: Iterable[int], peer: str | None) -> None:
        for g in guids:
            cur.execute(
                "INSERT OR REPLACE INTO received VALUES (?,?,?,?)",
                (dataset, str(int(g)), peer or "", self._clock()),
            )

    def received_by(self, dataset: str, peer: str | None) -> set[int]:
        """The GUIDs this node recorded as received into ``dataset`` from ``peer``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT guid FROM received WHERE dataset = ? AND peer = ?", (dataset, peer or "")
            ).fetchall()
        return {int(r[0]) for r in rows}

    def forget_received(self, dataset: str, guids: list[int]) -> None:
        with self._tx() as cur:
            self._forget(cur, dataset, guids)

    @staticmethod
    def _forget(cur: sqlite3.Cursor, dataset: str, guids: Iterable[int]) -> None:
        for g in guids:
            cur.execute("DELETE FROM received WHERE dataset = ? AND guid = ?", (dataset, str(int(g))))

    def expired(self) -> list[Claim]:
        now = self._clock()
        return [c for c in self.all() if not c.live(now)]

    def drop(self, claim: Claim) -> None:
        """Remove an (expired) claim, whoever holds it."""
        with self._tx() as cur:
            cur.execute("DELETE FROM claims WHERE dataset = ? AND holder = ?", (claim.dataset, claim.holder))

    def close(self) -> None:
        with self._lock:
            self._db.close()
