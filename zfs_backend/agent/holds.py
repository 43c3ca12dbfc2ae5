"""The project's own ZFS user holds on this node: who owns each, and releasing those no live owner keeps
(the agent's ``holds`` op, ``zfs-backend activity holds [--release-stale]``).

Every hold this project places is tagged ``zfs_backend:<owner>`` (``receiver_standby.hold_tag``), the
owner an activity id: a standby-sync holds its base on the primary under its own id, and the standby
holds the same snapshot under the claim's holder (the same id). A hold is **live** when its owner is a
non-terminal activity of this node's store or the holder of an unexpired claim here; else it is
**stale**: what a cancelled, failed or crashed activity left behind (an undo that could not reach a
node, a record failed at recovery, a lease that lapsed because the primary never came back). Only tags
with the prefix are ever listed or released: a user's hold is never touched, and a live one never is.

Where the holds come from:

* OpenZFS (``dialect.holds``): ``zfs holds`` on every snapshot whose ``userrefs`` > 0 — the truth.
* zfs-fuse lists the count (``userrefs``) but not the tags: there the holds are those the project
  recorded — a standby-sync's checkpoint (``held``, a snapshot of its ``dataset``) and a claim's
  ``held`` list — on snapshots that do carry user holds; ``unaccounted`` names the snapshots holding
  more than that (a user's holds, or a hold placed just before a crash, before it was recorded).
  ``release_stale`` there also tries the tag of every finished standby-sync of the snapshot's dataset:
  ZFS refuses a tag that is not on the snapshot ("no such tag") and nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..activity.states import TERMINAL
from ..errors import ActivityNotFound, HoldNotFound, ZfsBackendError
from ..zfs.names import SnapshotName, parse_snapshot

if TYPE_CHECKING:
    from ..activity.report import ActivityRecord
    from ..activity.store import ActivityStore
    from ..replication.claims import Claim, ClaimStore
    from ..zfs.api import Zfs

__all__ = ["HOLD_PREFIX", "Hold", "HoldKeeper"]

HOLD_PREFIX = "zfs_backend:"
#: the kinds that hold snapshots, with the checkpoint key naming the held one (a short snapshot name of
#: their ``dataset`` param)
HOLDING_KINDS = {"standby-sync": "held"}

log = logging.getLogger("zfs_backend.agent")


@dataclass(frozen=True)
class Hold:
    snapshot: str
    tag: str
    owner: str
    live: bool
    why: str  # what makes it live or stale, for a person
    listed: bool  # True: ``zfs holds`` listed it; False: the project's records say so (zfs-fuse)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HoldKeeper:
    """Lists and releases this node's project holds (see the module doc)."""

    def __init__(
        self, zfs: Zfs, store: ActivityStore, claims: ClaimStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.zfs, self.store, self.claims, self.clock = zfs, store, claims, clock

    # -- reading ----------------------------------------------------------------------------------
    def report(self, *, release_stale: bool = False) -> dict[str, Any]:
        """``{"holds", "released", "unaccounted", "listing"}``; with ``release_stale`` the stale holds
        are released first and ``holds`` is what is left."""
        released: list[Hold] = []
        if release_stale:
            released = self.release_stale()
        holds, unaccounted = self._find()
        return {
            "holds": [h.to_dict() for h in holds],
            "released": [h.to_dict() for h in released],
            "unaccounted": unaccounted,
            "listing": "zfs holds" if self.zfs.dialect.holds else "recorded (this ZFS cannot list hold tags)",
        }

    def holds(self) -> list[Hold]:
        return self._find()[0]

    def _find(self) -> tuple[list[Hold], list[dict[str, Any]]]:
        held = self.zfs.held_snapshots()
        records = {r.id: r for r in self.store.list()}
        claims = self.claims.all()
        now = self.clock()
        found: list[Hold] = []
        unaccounted: list[dict[str, Any]] = []
        if self.zfs.dialect.holds:
            for snap, _refs in held:
                for tag in self.zfs.holds(snap):
                    if tag.startswith(HOLD_PREFIX):
                        found.append(self._hold(snap, tag, records, claims, now, listed=True))
            return found, unaccounted
        recorded = self._recorded(records, claims)
        for snap, refs in held:
            tags = sorted(recorded.get(str(snap), set()))
            found += [self._hold(snap, t, records, claims, now, listed=False) for t in tags]
            if refs > len(tags):
                unaccounted.append({"snapshot": str(snap), "userrefs": refs, "recorded": len(tags)})
        return found, unaccounted

    def _recorded(self, records: dict[str, ActivityRecord], claims: list[Claim]) -> dict[str, set[str]]:
        """snapshot -> the project's tags its records say are on it (checkpoints and claims)."""
        out: dict[str, set[str]] = {}
        for rec in records.values():
            key = HOLDING_KINDS.get(rec.kind)
            if key is None:
                continue
            try:
                short = self.store.checkpoint(rec.id).get(key)
                if short and rec.state in TERMINAL:  # a finished record is never rewritten: its events
                    gone = {e["detail"] for e in self.store.events(rec.id)}  # say what was released since
                    short = None if _released_note(f"{rec.params.get('dataset')}@{short}") in gone else short
            except ActivityNotFound:
                continue
            if short and isinstance(rec.params.get("dataset"), str):
                out.setdefault(f"{rec.params['dataset']}@{short}", set()).add(HOLD_PREFIX + rec.id)
        for c in claims:
            for name in c.state.get("held", []):
                out.setdefault(str(name), set()).add(HOLD_PREFIX + c.holder)
        return out

    def _hold(
        self,
        snap: SnapshotName,
        tag: str,
        records: dict[str, ActivityRecord],
        claims: list[Claim],
        now: float,
        *,
        listed: bool,
    ) -> Hold:
        owner = tag[len(HOLD_PREFIX) :]
        live, why = _owner(owner, records, claims, now)
        return Hold(str(snap), tag, owner, live, why, listed)

    # -- releasing --------------------------------------------------------------------------------
    def release_stale(self, owner: str | None = None) -> list[Hold]:
        """Release every stale hold (never a live one, never another tag), only ``owner``'s when given
        (an activity that just ended without releasing its own, e.g. failed at recovery); return those
        released."""
        holds, _unaccounted = self._find()
        targets = [h for h in holds if not h.live]
        if not self.zfs.dialect.holds:
            targets += self._candidates({(h.snapshot, h.tag) for h in holds})
        return [h for h in targets if (owner is None or h.owner == owner) and self._release(h)]

    def _candidates(self, known: set[tuple[str, str]]) -> list[Hold]:
        """zfs-fuse: finished holding activities' tags on their dataset's held snapshots (see the doc)."""
        records = self.store.list()
        by_dataset: dict[str, list[ActivityRecord]] = {}
        for r in records:
            if r.kind in HOLDING_KINDS and r.state in TERMINAL and isinstance(r.params.get("dataset"), str):
                by_dataset.setdefault(r.params["dataset"], []).append(r)
        out: list[Hold] = []
        live_claims = {c.holder for c in self.claims.all() if c.live(self.clock())}
        for snap, _refs in self.zfs.held_snapshots():
            for r in by_dataset.get(str(snap.dataset), []):
                tag = HOLD_PREFIX + r.id
                if (str(snap), tag) not in known and r.id not in live_claims:
                    out.append(Hold(str(snap), tag, r.id, False, f"activity {r.state}", False))
        return out

    def _release(self, h: Hold) -> bool:
        try:
            self.zfs.release(parse_snapshot(h.snapshot), h.tag)
        except HoldNotFound:
            return False
        except ZfsBackendError as e:
            log.warning("hold %s on %s not released: %s", h.tag, h.snapshot, e)
            return False
        log.info("stale hold %s on %s released (%s)", h.tag, h.snapshot, h.why)
        with contextlib.suppress(ActivityNotFound):  # the records stop saying it is there
            self.store.note(h.owner, _released_note(h.snapshot))
        for c in self.claims.all():
            if c.holder == h.owner and h.snapshot in c.state.get("held", []):
                self.claims.save(c.with_state(held=[n for n in c.state["held"] if n != h.snapshot]))
        return True


def _released_note(snapshot: str) -> str:
    return f"stale hold released: {snapshot}"


def _owner(
    owner: str, records: dict[str, ActivityRecord], claims: list[Claim], now: float
) -> tuple[bool, str]:
    rec = records.get(owner)
    if rec is not None and rec.state not in TERMINAL:
        return True, f"activity {rec.state}"
    mine = [c for c in claims if c.holder == owner]
    for c in mine:
        if c.live(now):
            left = int(c.expires_at - now)
            return True, f"claim on {c.dataset} from {c.source} (lease {left} s left)"
    if rec is not None:
        return False, f"activity {rec.state}"
    if mine:
        return False, f"claim on {mine[0].dataset} from {mine[0].source} expired"
    return False, "no activity or claim of that id on this node"
