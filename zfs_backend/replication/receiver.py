"""The receiving end of a replication, run by the **destination** node's agent on its own datasets.

The source node's ``replicate`` activity streams ``zfs send | ssh DEST zfs receive``; everything else it
needs from the destination goes through these calls (agent ops ``recv.*`` on the destination's peer
socket), so every check and every change happens on the node that owns the data, under a claim
(:mod:`.claims`) that keeps any other replication out of the tree meanwhile:

``begin``
    claims the tree, records what it holds (every dataset's snapshot GUIDs: what a cancel restores),
    makes existing datasets read-only for the duration (no write can slip in between a check and the
    receive), and reports the tree: snapshots, space, the node's ZFS dialect, and for each dataset
    whether its head changed after its newest snapshot (:func:`~zfs_backend.zfs.changes.head_changes`,
    exact: ``written``/``zfs diff`` on OpenZFS, a probe stream on zfs-fuse). A head that differs only by
    metadata noise (a read updated atime) is rolled back to its snapshot there and then: nothing is lost,
    and the plain receive that follows will not refuse. Real changes are reported, never discarded.
``clean``
    the same check for one dataset, when a receive was refused as "modified" anyway (zfs-fuse updates
    space accounting late, so a fresh write can escape the cheap check in ``begin``).
``discard``
    only when the caller asked for ``rollback_destination``: rolls each dataset back to the common base
    and returns what that discarded (snapshots, bytes), measured with the dataset unmounted (nothing
    writes between the measure and the rollback; a snapshot made meanwhile refuses it).
``finish``
    verifies the received snapshot GUIDs, marks the datasets the stream created as this replication's
    (user properties ``zfs_backend:receiver`` and ``zfs_backend:source``), makes new replicas read-only,
    restores what ``begin`` changed on existing ones, releases the claim (and its grant, a peer's), and
    records the GUIDs it verified as received (what a standby's prune may later remove).
``drop_partial``
    a resume token the source refused (its snapshot pruned, another stream): its partial state is
    discarded where it is provably the project's, so the replication falls back to the newest common
    snapshot instead of wedging (in :mod:`.receiver_abort`).
``abort``
    (cancel, or a final failure) puts the tree back as ``begin`` found it: discards a partial resumable
    receive, rolls existing datasets back to their last snapshot from before (only when every newer
    snapshot is one this replication sent, checked again right before ``rollback -r`` with the dataset
    unmounted: :meth:`~.head.DestinationHead.guarded_rollback`), destroys datasets that did not exist
    before and are provably this replication's (every snapshot's GUID is one the source sent, and no
    other receiver's mark, and no write since). What it may not touch (someone else's snapshot or
    dataset) it leaves, and says so. (In :mod:`.receiver_abort`.)

A peer's calls reach these only through :mod:`.authority` (grants, replica roots, the claim's peer).

Nothing here ever receives with ``-F``: a plain receive refuses a changed destination by itself.

The head checks (changed, noise settled, a dataset kept quiet for a rollback) are :mod:`.head`'s; the
property names and the JSON codecs shared with the source's side are :mod:`.wire`'s (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import AlreadyRunning, DatasetNotFound, NotGranted, UsageError, ZfsBackendError
from ..zfs.api import Zfs
from ..zfs.changes import PROBE_PREFIX, HeadChanges, bytes_since, head_changes
from ..zfs.models import Dataset, Snapshot
from ..zfs.names import DatasetName, parse_dataset, parse_node_qualified
from .claims import DEFAULT_TTL_S, Claim, ClaimStore, not_held
from .grants import GrantStore
from .head import DestinationHead
from .plan import DIVERGED, Conflict
from .receiver_abort import AbortOps, rel_name
from .receiver_standby import StandbyOps
from .wire import RECEIVER_PROP as RECEIVER_PROP
from .wire import SOURCE_PROP as SOURCE_PROP
from .wire import changes_to_dict
from .wire import snapshot_from_dict as snapshot_from_dict
from .wire import snapshot_to_dict as snapshot_to_dict
from .wire import validate_holder as validate_holder

__all__ = [
    "RECEIVER_PROP",
    "SOURCE_PROP",
    "Receiver",
    "snapshot_from_dict",
    "snapshot_to_dict",
    "validate_holder",
]

log = logging.getLogger("zfs_backend.replication")


class Receiver(AbortOps, StandbyOps):
    """The destination's side of replications into its datasets (see the module doc); a standby's ops
    (``expect``, ``commit``, ``fence``) are in :mod:`.receiver_standby`."""

    def __init__(
        self,
        zfs: Zfs,
        claims: ClaimStore,
        *,
        ttl: float = DEFAULT_TTL_S,
        changes: Callable[[Zfs, DatasetName, Snapshot], HeadChanges] = head_changes,
        bytes_since: Callable[[Zfs, DatasetName, Snapshot], int] = bytes_since,
        grants: GrantStore | None = None,
    ) -> None:
        self.zfs = zfs
        self.claims = claims
        self.grants = grants
        self.ttl = ttl
        self.head = DestinationHead(zfs, changes=changes, bytes_since=bytes_since)  # both injectable

    @property
    def node(self) -> str:
        return self.zfs.host.name

    # ---------------------------------------------------------------- begin

    def begin(
        self,
        dataset: str,
        holder: str,
        source: str,
        *,
        recursive: bool = False,
        sent_guids: Iterable[int] = (),
        peer: str | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """``peer``/``grant``: a peer session's begin, admitted by ``authority.PeerAuthority.for_begin``:
        the grant is bound to ``holder`` and the claim records both (consumed when it is released)."""
        top = parse_dataset(dataset)
        validate_holder(holder)
        if not isinstance(source, str):
            raise UsageError(f"invalid source {source!r}")
        parse_node_qualified(source)
        sent = sorted({int(g) for g in sent_guids})
        newly_bound = False
        if peer is not None:
            mine = self.claims.get(str(top))
            if mine is not None and mine.holder == holder and mine.state.get("peer") != peer:
                raise not_held(top, holder)
            if grant is None or self.grants is None:
                raise NotGranted(f"{peer} may not receive into {top}: no grant")
            newly_bound = self.grants.bind(grant, holder)[1]
        try:
            claim, new = self.claims.take(str(top), holder, source, self.ttl)
        except BaseException as e:
            if newly_bound and self.grants is not None and grant is not None:
                self.grants.unbind(grant, holder)
            if peer is not None and isinstance(e, AlreadyRunning):  # a peer learns no other holder's id
                raise AlreadyRunning(f"{top} is being received into by another replication") from None
            raise
        try:
            self._tidy_expired(claim)
            tree = self._tree(top, recursive)
            if new:
                claim = self._record_before(claim, top, tree, recursive, sent)
                if peer is not None:
                    claim = claim.with_state(peer=peer, grant=grant)
            else:
                claim = claim.with_state(sent=sorted({*claim.state.get("sent", []), *sent}))
            self.claims.save(claim)
            claim = self._lock_read_only(claim, tree)
            # the report lists the snapshots again, after the lock: on zfs-fuse the lock's remount
            # flushes pending atime writes, and the head check reads the newest snapshot's ``used``
            # (one listing for both was tried: test_reading_a_writable_replica_... then fails)
            return self._report(claim, top, tree)
        except BaseException:
            if new:
                self._restore_read_only(self.claims.get(str(top)) or claim)
                self.claims.release(str(top), holder)
                if newly_bound and self.grants is not None and grant is not None:
                    self.grants.unbind(grant, holder)  # it may be used again, and expire
            raise

    def _drop_claim(self, top: DatasetName | str, claim: Claim) -> bool:
        """Release the claim; its grant (a peer's) is used up with it."""
        released = self.claims.release(str(top), claim.holder)
        g = claim.state.get("grant")
        if g and self.grants is not None:
            self.grants.consume(str(g), claim.holder)
        return released

    def _tree(self, top: DatasetName, recursive: bool) -> list[Dataset]:
        try:
            return self.zfs.list_datasets(top, recursive=recursive)
        except DatasetNotFound:
            return []

    def _record_before(
        self, claim: Claim, top: DatasetName, tree: list[Dataset], recursive: bool, sent: list[int]
    ) -> Claim:
        before = {rel_name(top, ds.name): [s.guid for s in self.zfs.list_snapshots(ds.name)] for ds in tree}
        partial: dict[str, str] = {}  # what drop_partial may not take for its own
        if self.zfs.dialect.resumable_receive:
            for ds in tree:
                tok = self.zfs.resume_token(ds.name)
                if tok:
                    partial[rel_name(top, ds.name)] = tok
        return claim.with_state(
            before=before, recursive=recursive, sent=sent, readonly={}, discarded={}, partial_before=partial
        )

    def _lock_read_only(self, claim: Claim, tree: list[Dataset]) -> Claim:
        """Make each existing dataset of the tree read-only for the claim's life (recording how to undo it).
        zfs-fuse reports a mounted read-only dataset as ``off`` with source ``temporary``: a temporary
        value means the persistent one is the opposite, so only a plain ``off`` is switched."""
        changed = dict(claim.state.get("readonly", {}))
        for ds in tree:
            if str(ds.name) in changed:
                continue
            value, source = self.zfs.get_with_source(ds.name, "readonly")
            if value != "off" or source == "temporary":
                continue
            self.zfs.set(ds.name, "readonly", "on")
            changed[str(ds.name)] = "local" if source == "local" else "inherit"
        if changed != claim.state.get("readonly", {}):
            claim = claim.with_state(readonly=changed)
            self.claims.save(claim)
        return claim

    def _restore_read_only(self, claim: Claim) -> None:
        for name, how in claim.state.get("readonly", {}).items():
            ds = parse_dataset(name)
            try:
                if not self.zfs.exists(ds):
                    continue
                if how == "local":
                    self.zfs.set(ds, "readonly", "off")
                else:
                    self.zfs.inherit(ds, "readonly")
            except ZfsBackendError as e:
                log.error("%s: could not restore readonly on %s: %s", self.node, ds, e)

    def _tidy_expired(self, claim: Claim) -> None:
        """A claim this one replaced had expired (its source went away): undo its read-only lock."""
        expired = claim.state.get("expired")
        if not expired:
            return
        for old in expired:
            log.warning(
                "%s: claim of %s by %s expired; restoring its read-only changes",
                self.node,
                old.get("dataset"),
                old.get("holder"),
            )
            gone = Claim(old["dataset"], old["holder"], "", 0, 0, old.get("state") or {})
            self._restore_read_only(gone)
            if gone.state.get("grant") and self.grants is not None:
                self.grants.consume(str(gone.state["grant"]), gone.holder)
        self.claims.save(claim.with_state(expired=[]))

    def _report(self, claim: Claim, top: DatasetName, tree: list[Dataset]) -> dict[str, Any]:
        d = self.zfs.dialect
        out: dict[str, Any] = {
            "node": self.node,
            "exists": bool(tree),
            "parent_exists": True,
            "available": None,
            "dialect": {
                "name": str(d),
                "resumable_receive": d.resumable_receive,
                "recv_properties": d.recv_properties,
                "recv_no_mount": d.recv_no_mount,
                "send_compressed": d.send_compressed,
                "send_large_blocks": d.send_large_blocks,
                "send_embedded": d.send_embedded,
                "send_raw": d.send_raw,
                "user_holds": d.user_holds,
                "zpl_version": d.zpl_version,
            },
            "datasets": {},
            "claimed_at": claim.created_at,
        }
        if not tree:
            parent = top.parent
            if parent is not None and not self.zfs.exists(parent):
                raise DatasetNotFound(f"{self.node}: the destination's parent {parent} does not exist")
            if parent is not None:
                out["available"] = self.zfs.get_int(parent, "available")
            return out
        for ds in tree:
            snaps = [s for s in self.zfs.list_snapshots(ds.name) if not s.snap.startswith(PROBE_PREFIX)]
            info: dict[str, Any] = {"snapshots": [snapshot_to_dict(s) for s in snaps], "resume_token": None}
            if d.resumable_receive:
                info["resume_token"] = self.zfs.resume_token(ds.name)
            info["changes"] = changes_to_dict(self.head.settle(ds, snaps))
            out["datasets"][rel_name(top, ds.name)] = info
            if ds.name == top:
                out["available"] = ds.available
        return out

    # ---------------------------------------------------------------- during the stream

    def clean(self, dataset: str, holder: str, target: str | None = None) -> dict[str, Any]:
        """A receive into ``target`` (a dataset of the claimed tree) was refused as modified: roll back
        noise, or refuse with what changed (``DestinationDiverged``)."""
        top = parse_dataset(dataset)
        self.claims.held(str(top), validate_holder(holder))
        ds_name = parse_dataset(target) if target else top
        if ds_name != top and not ds_name.name.startswith(top.name + "/"):
            raise UsageError(f"{ds_name} is not inside the claimed {top}")
        snaps = [s for s in self.zfs.list_snapshots(ds_name) if not s.snap.startswith(PROBE_PREFIX)]
        if not snaps:
            raise Conflict(DIVERGED, f"{self.node}:{ds_name} has no snapshot to receive onto").error()
        with self.head.quiet(ds_name):
            changes = self.head.changes(ds_name, snaps[-1])
            if changes.changed:
                raise Conflict(
                    DIVERGED,
                    f"{self.node}:{ds_name} changed after @{snaps[-1].snap}: {changes.detail}; nothing was "
                    "discarded (rollback_destination would discard it)",
                ).error()
            if changes.noisy:
                self.zfs.rollback(snaps[-1].name)
        return {"dataset": str(ds_name), "changes": changes_to_dict(changes)}

    def discard(self, dataset: str, holder: str, base_guids: dict[str, int]) -> dict[str, Any]:
        """``rollback_destination``: roll each dataset (relative name -> its base's GUID) back to its base.
        Returns what was discarded; recorded in the claim (a cancel cannot bring it back)."""
        top = parse_dataset(dataset)
        claim = self.claims.held(str(top), validate_holder(holder))
        report: dict[str, Any] = dict(claim.state.get("discarded", {}))
        for rel, guid in sorted(base_guids.items()):
            ds = top if not rel else parse_dataset(f"{top}/{rel}")
            if not any(s.guid == int(guid) for s in self.zfs.list_snapshots(ds)):
                raise Conflict(DIVERGED, f"{self.node}:{ds} no longer holds the base (GUID {guid})").error()
            # quiet first (unmounted: nothing writes), then measured, then rolled back: the report is
            # exactly what went, and a snapshot made meanwhile refuses it (head.guarded_rollback)
            gone = self.head.guarded_rollback(ds, int(guid), None, discard_writes=True, measure=True)
            if gone.nothing:
                continue
            report[rel] = {
                "snapshots": [s.snap for s in gone.snapshots],
                "changes": None if gone.changes is None else gone.changes.detail,
                "bytes": gone.bytes,
            }
            log.warning(
                "%s: rolled %s back to its base (GUID %s) on request: discarded %s",
                self.node,
                ds,
                guid,
                ", ".join(f"@{s.snap}" for s in gone.snapshots) or report[rel]["changes"],
            )
        self.claims.save(claim.with_state(discarded=report))
        return {"discarded": report}

    def renew(self, dataset: str, holder: str) -> dict[str, Any]:
        return self.claims.renew(str(parse_dataset(dataset)), validate_holder(holder), self.ttl).to_dict()

    # ---------------------------------------------------------------- the end

    def finish(
        self,
        dataset: str,
        holder: str,
        *,
        target_guids: dict[str, int],
        readonly_replica: bool = True,
    ) -> dict[str, Any]:
        """Verify, mark what the stream created, restore what ``begin`` changed, release the claim."""
        top = parse_dataset(dataset)
        claim = self.claims.held(str(top), validate_holder(holder))
        for rel, guid in sorted(target_guids.items()):
            name = top if not rel else parse_dataset(f"{top}/{rel}")
            if not any(s.guid == int(guid) for s in self.zfs.list_snapshots(name)):
                raise ZfsBackendError(f"{self.node}:{name} does not hold the received snapshot (GUID {guid})")
        before = claim.state.get("before", {})
        for rel, guid in sorted(target_guids.items()):  # received here by this replication: recorded
            if int(guid) not in set(before.get(rel, [])):
                name = top if not rel else parse_dataset(f"{top}/{rel}")
                self.claims.record_received(str(name), [int(guid)], claim.state.get("peer"))
        created = []
        for ds in self.zfs.list_datasets(top, recursive=bool(claim.state.get("recursive"))):
            rel = rel_name(top, ds.name)
            if rel in before:
                continue
            created.append(rel)
            self.zfs.set(ds.name, RECEIVER_PROP, holder)
            self.zfs.set(ds.name, SOURCE_PROP, claim.source if not rel else f"{claim.source}/{rel}")
            if readonly_replica and ds.name == top:
                self.zfs.set(ds.name, "readonly", "on")  # children inherit it
        self._restore_read_only(claim)
        self._release_holds(claim)
        self._drop_claim(top, claim)
        return {"verified": True, "created": created, "discarded": claim.state.get("discarded", {})}

    def release(self, dataset: str, holder: str) -> dict[str, Any]:
        """Give the claim up without changing data (a refusal after ``begin``)."""
        top = parse_dataset(dataset)
        claim = self.claims.get(str(top))
        if claim is None or claim.holder != validate_holder(holder):
            return {"released": False}
        self._restore_read_only(claim)
        self._release_holds(claim)
        return {"released": self._drop_claim(top, claim)}

    def status(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.claims.all()]
