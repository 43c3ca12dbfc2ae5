"""The receiving end's ops for a **standby** (``recv.expect``, ``recv.commit``, ``recv.fence``): a
replication that never ends.

A ``standby-sync`` activity on the primary (:mod:`.standby`) holds one claim on the standby dataset
for the life of the relationship (``begin`` once, renewed) and sends an increment every interval.
Between increments the claim's record of "what was there before" moves forward, so that a cancel or
a failure rolls back only the increment in flight, never what earlier ones delivered:

``expect``
    before an increment: the GUID of the snapshot about to be sent joins the claim's ``sent`` set (a
    cancel may then remove it, and only it) and, when no snapshot with that GUID is on the standby yet,
    its ``pending`` set; one that is there already joins ``own`` only if this node recorded receiving it
    from the same peer (``ClaimStore.received_by``: a standby's seed, received by a replication whose
    ``finish`` verified it). The lease is renewed.
``commit``
    after an increment: verifies the standby holds the snapshot (by GUID), holds it (``zfs hold``, tag
    ``zfs_backend:<holder>``, where the ZFS has user holds; zfs-fuse does, though it cannot list them)
    and releases the previous one: the common base is never destroyable while the relationship lives.
    Records the tree as it is now (what a cancel restores from then on). A pending GUID now present was
    **received** by this relationship: it joins the claim's ``own`` set, the only GUIDs a prune may
    remove (recorded by the destination itself: a snapshot that was not there when it was announced and
    is there after the stream, never merely a GUID a caller announced). With ``prune_prefix``, destroys
    the snapshots older than the new base that are this holder's own: named with the prefix **and**
    received. Nothing else is ever pruned.
``fence``
    the standby is promoted without its primary (a forced failover): the increment in flight is rolled
    back as ``abort`` does, the claim and its holds are dropped, and the holder is shut out of the dataset
    for good (``ClaimStore.fence``): the old primary's sync, if it ever comes back, cannot claim the
    promoted dataset again (it would lock it read-only).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, ZfsBackendError
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, parse_snapshot
from .claims import DEFAULT_TTL_S
from .wire import validate_holder

if TYPE_CHECKING:
    from ..zfs.api import Zfs
    from .claims import Claim, ClaimStore

__all__ = ["StandbyOps", "hold_tag", "validate_prefix"]

log = logging.getLogger("zfs_backend.replication")


def hold_tag(holder: str) -> str:
    return f"zfs_backend:{holder}"


def validate_prefix(prefix: object) -> str:
    """A snapshot-name prefix (one short name's worth of characters)."""
    if not isinstance(prefix, str) or len(prefix) < 3:
        raise UsageError(f"invalid snapshot prefix {prefix!r}")
    SnapshotName(DatasetName("pool"), prefix)  # validates the characters
    return prefix


class StandbyOps:
    """Mixed into :class:`~.receiver.Receiver` (which provides ``zfs``, ``claims``, ``abort``)."""

    zfs: Zfs
    claims: ClaimStore

    @property
    def node(self) -> str:
        return self.zfs.host.name

    def abort(self, dataset: str, holder: str, *, keep_claim: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def _held_claim(self, dataset: str, holder: str) -> tuple[DatasetName, Claim]:
        top = parse_dataset(dataset)
        claim = self.claims.held(str(top), validate_holder(holder))
        if claim.state.get("recursive"):
            raise UsageError(f"{top}: a standby is one dataset, not a recursive tree")
        return top, claim

    def expect(self, dataset: str, holder: str, sent_guids: list[int]) -> dict[str, Any]:
        top, claim = self._held_claim(dataset, holder)
        new = {int(g) for g in sent_guids}
        sent = sorted({*claim.state.get("sent", []), *new})
        present = {s.guid for s in self.zfs.list_snapshots(top)}
        pending = sorted({*claim.state.get("pending", []), *(new - present)})
        # a snapshot already here is the relationship's own only if this node recorded receiving it
        # from the same peer (the seed of a standby, received by an earlier replication)
        adopted = new & present & self.claims.received_by(str(top), claim.state.get("peer"))
        own = sorted({*claim.state.get("own", []), *adopted})
        # the lease renewed with the state, in one durable write
        self.claims.save(claim.with_state(sent=sent, pending=pending, own=own), renew_ttl=DEFAULT_TTL_S)
        return {"sent": len(sent)}

    def commit(
        self, dataset: str, holder: str, target_guid: int, *, prune_prefix: str | None = None
    ) -> dict[str, Any]:
        top, claim = self._held_claim(dataset, holder)
        prefix = None if prune_prefix is None else validate_prefix(prune_prefix)
        snaps = self.zfs.list_snapshots(top)
        target = next((s for s in snaps if s.guid == int(target_guid)), None)
        if target is None:
            raise ZfsBackendError(
                f"{self.node}:{top} does not hold the received snapshot (GUID {target_guid})"
            )
        held = [str(n) for n in claim.state.get("held", [])]
        if self.zfs.dialect.user_holds and held != [str(target.name)]:
            self.zfs.hold(target.name, hold_tag(holder))
            for name in held:
                if name != str(target.name):
                    self._release_one(name, holder)
            held = [str(target.name)]
        pending = {int(g) for g in claim.state.get("pending", [])}
        own = {int(g) for g in claim.state.get("own", [])}
        received = []
        if target.guid in pending:  # announced before it was here, here now: received by this relationship
            own.add(target.guid)
            pending.discard(target.guid)
            received.append(target.guid)
        pruned = []
        if prefix is not None:
            for s in snaps:
                if s.createtxg >= target.createtxg or s.guid not in own or str(s.name) in held:
                    continue
                if not s.snap.startswith(prefix):
                    continue
                self.zfs.destroy(s.name, deadline=10.0, missing_ok=True)
                pruned.append(s.snap)
        gone = [s.guid for s in snaps if s.snap in pruned]
        left = [s.guid for s in snaps if s.snap not in pruned]
        kept_own = sorted(g for g in own if g not in gone)
        # one durable write: the state, the GUID received (a crash before it leaves it pending, recorded
        # by the commit retried), the pruned ones forgotten
        self.claims.save(
            claim.with_state(
                before={"": left}, held=held, base=target.guid, own=kept_own, pending=sorted(pending)
            ),
            received=received,
            forget=gone,
        )
        return {"verified": True, "held": held, "pruned": pruned}

    def fence(self, dataset: str, holder: str, reason: str = "the standby was promoted") -> dict[str, Any]:
        top = parse_dataset(dataset)
        validate_holder(holder)
        report = self.abort(str(top), holder)
        self.claims.fence(str(top), holder, str(reason)[:200])
        return {**report, "fenced": True}

    # -- holds --------------------------------------------------------------------------------------
    def _release_one(self, name: str, holder: str) -> None:
        with contextlib.suppress(ZfsBackendError):  # gone already, or never held (a failed hold)
            self.zfs.release(parse_snapshot(name), hold_tag(holder))

    def _release_holds(self, claim: Claim) -> None:
        """Release what the claim's holder holds here (its claim is about to go)."""
        for name in claim.state.get("held", []):
            self._release_one(str(name), claim.holder)
