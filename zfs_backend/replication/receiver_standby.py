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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, ZfsBackendError
from ..rpc.protocol import error_payload
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, parse_snapshot
from .claims import ClaimSave
from .wire import validate_holder

if TYPE_CHECKING:
    from ..zfs.api import Zfs
    from ..zfs.models import Snapshot
    from .claims import Claim, ClaimStore

__all__ = ["MANY_MAX", "StandbyOps", "hold_tag", "validate_items", "validate_prefix"]

#: the items one ``recv.expect_many`` / ``recv.commit_many`` takes at most (a tick of one node pair)
MANY_MAX = 1000
#: how many of a batch's items are worked on side by side
MANY_WORKERS = 8
Item = dict[str, Any]
#: a dataset's snapshots as a batch listed them (None: not listed for it)
Listed = list["Snapshot"] | None
#: checks one item of a batch as the single op would be checked (the peer's authority)
ItemCheck = Callable[[str, dict[str, Any]], Any]

log = logging.getLogger("zfs_backend.replication")


def hold_tag(holder: str) -> str:
    return f"zfs_backend:{holder}"


def validate_prefix(prefix: object) -> str:
    """A snapshot-name prefix (one short name's worth of characters)."""
    if not isinstance(prefix, str) or len(prefix) < 3:
        raise UsageError(f"invalid snapshot prefix {prefix!r}")
    SnapshotName(DatasetName("pool"), prefix)  # validates the characters
    return prefix


def validate_items(items: object) -> list[dict[str, Any]]:
    """A batch's items: a list of objects, at most :data:`MANY_MAX`, no dataset twice."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UsageError("items must be a list of objects")
    if len(items) > MANY_MAX:
        raise UsageError(f"at most {MANY_MAX} items in one call, not {len(items)}")
    names = [str(parse_dataset(str(i.get("dataset")))) for i in items]
    if len(set(names)) != len(names):
        raise UsageError("a dataset is named twice in one call")
    return items


class StandbyOps:
    """Mixed into :class:`~.receiver.Receiver` (which provides ``zfs``, ``claims``, ``abort``)."""

    zfs: Zfs
    claims: ClaimStore
    ttl: float  # the claim's lease, renewed by every expect

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
        claim, out = self._expected(dataset, holder, sent_guids)
        # the lease renewed with the state, in one durable write
        self.claims.save(claim, renew_ttl=self.ttl)
        return out

    def _expected(
        self, dataset: str, holder: str, sent_guids: list[int], listed: Listed = None
    ) -> tuple[Claim, dict[str, Any]]:
        """``expect``'s new claim state (not saved yet) and its answer (``listed``: the dataset's
        snapshots, listed for a batch; None: listed here)."""
        top, claim = self._held_claim(dataset, holder)
        new = {int(g) for g in sent_guids}
        sent = sorted({*claim.state.get("sent", []), *new})
        present = {s.guid for s in (self.zfs.list_snapshots(top) if listed is None else listed)}
        pending = sorted({*claim.state.get("pending", []), *(new - present)})
        # a snapshot already here is the relationship's own only if this node recorded receiving it
        # from the same peer (the seed of a standby, received by an earlier replication)
        adopted = new & present & self.claims.received_by(str(top), claim.state.get("peer"))
        own = sorted({*claim.state.get("own", []), *adopted})
        return claim.with_state(sent=sent, pending=pending, own=own), {"sent": len(sent)}

    def commit(
        self, dataset: str, holder: str, target_guid: int, *, prune_prefix: str | None = None
    ) -> dict[str, Any]:
        save, out = self._committed(dataset, holder, target_guid, prune_prefix=prune_prefix)
        # one durable write: the state, the GUID received (a crash before it leaves it pending, recorded
        # by the commit retried), the pruned ones forgotten
        self.claims.save(save.claim, received=save.received, forget=save.forget)
        return out

    def _committed(
        self,
        dataset: str,
        holder: str,
        target_guid: int,
        *,
        prune_prefix: str | None = None,
        listed: Listed = None,
    ) -> tuple[ClaimSave, dict[str, Any]]:
        """``commit``'s work on the datasets (verify, hold, release, prune) and the claim state it leaves
        (not saved yet); ``listed`` as for :meth:`_expected`."""
        top, claim = self._held_claim(dataset, holder)
        prefix = None if prune_prefix is None else validate_prefix(prune_prefix)
        snaps = self.zfs.list_snapshots(top) if listed is None else listed
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
        state = claim.with_state(
            before={"": left}, held=held, base=target.guid, own=kept_own, pending=sorted(pending)
        )
        return ClaimSave(state, received=received, forget=gone), {
            "verified": True,
            "held": held,
            "pruned": pruned,
        }

    # -- a tick of a pair's scheduler: many standbys of one peer in one call ------------------------
    def expect_many(self, items: list[Item], check: ItemCheck | None = None) -> list[dict[str, Any]]:
        """``expect`` for each item (``dataset``, ``holder``, ``sent_guids``), its claim checked on its own
        (``check``: the peer's authority, as for one ``recv.expect``), the datasets of the items that
        passed listed in **one** command, the work done side by side, and every claim that passed saved
        in **one** transaction (one durable write for the tick). Returns one answer per item, in order:
        ``{"ok": answer}`` or ``{"error": payload}`` (a failure stays the item's: the others are saved)."""

        def one(item: Item, listed: Listed) -> tuple[ClaimSave, dict[str, Any]]:
            guids = [int(g) for g in item.get("sent_guids") or []]
            claim, out = self._expected(str(item["dataset"]), str(item["holder"]), guids, listed)
            return ClaimSave(claim, renew_ttl=self.ttl), out

        return self._many("expect", items, check, one)

    def commit_many(self, items: list[Item], check: ItemCheck | None = None) -> list[dict[str, Any]]:
        """``commit`` for each item (``dataset``, ``holder``, ``target_guid``, ``prune_prefix``?), as
        :meth:`expect_many` (each verified, held and pruned on its own, side by side; one transaction)."""

        def one(item: Item, listed: Listed) -> tuple[ClaimSave, dict[str, Any]]:
            prefix = item.get("prune_prefix")
            return self._committed(
                str(item["dataset"]),
                str(item["holder"]),
                int(item["target_guid"]),
                prune_prefix=None if prefix is None else str(prefix),
                listed=listed,
            )

        return self._many("commit", items, check, one)

    def _many(
        self,
        verb: str,
        items: list[Item],
        check: ItemCheck | None,
        one: Callable[[Item, Listed], tuple[ClaimSave, dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        items = validate_items(items)
        results: list[dict[str, Any]] = [{} for _ in items]
        passed: list[int] = []
        for i, item in enumerate(items):  # each checked before anything is read for it
            try:
                if check is not None:
                    check(verb, item)
                passed.append(i)
            except Exception as e:  # the item's own refusal, told to its caller alone
                results[i] = {"error": error_payload(e)}
        tops = [parse_dataset(str(items[i]["dataset"])) for i in passed]
        try:
            listed: dict[DatasetName, list[Snapshot]] = self.zfs.list_snapshots_of(tops)
        except ZfsBackendError:  # one of them is gone: each lists its own (and fails on its own)
            listed = {}
        saves: dict[int, ClaimSave] = {}

        def run(i: int) -> None:
            try:
                saves[i], results[i] = one(items[i], listed.get(parse_dataset(str(items[i]["dataset"]))))
            except Exception as e:
                results[i] = {"error": error_payload(e)}

        # side by side: on zfs-fuse every hold, release and destroy waits for its own txg sync, and
        # concurrent ones share a txg
        with ThreadPoolExecutor(max_workers=max(1, min(MANY_WORKERS, len(passed)))) as pool:
            list(pool.map(run, passed))
        order = sorted(saves)
        failed = self.claims.save_many([saves[i] for i in order])
        for i in order:
            err = failed.get(saves[i].claim.dataset)
            results[i] = {"error": error_payload(err)} if err is not None else {"ok": results[i]}
        return results

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
