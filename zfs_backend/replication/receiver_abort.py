"""``abort`` of the receiving end (:class:`~.receiver.Receiver`, mixed in): put the claimed tree back as
``begin`` found it, as far as it is provably this replication's doing. A partial resumable receive is
discarded; an existing dataset is rolled back to its last snapshot from before only when every newer
snapshot is one this replication sent and its head did not change; a dataset that did not exist before
is destroyed only when it is provably this replication's (every snapshot's GUID is one the source sent,
or a partial receive, and no other receiver's mark, and no child it did not create). What it may not
touch it leaves, and says so. A new dataset that is gone by the time abort looks at it (a cut full receive
removes its own as it exits, where there is no resumable state) is as ``begin`` found it.

``drop_partial`` (a resume token the source cannot use: its snapshot was pruned, another base, another
stream) discards a partial receive's state (``zfs receive -A``) so that the replication can fall back to
the newest common snapshot, only where it proves the state the project's: the token streams a snapshot
of the claim's source dataset, and either it appeared under this claim (no other replication can
receive into a claimed tree) or the dataset is the project's replica of that very source
(``zfs_backend:source``, set locally by ``finish``, equals the claim's source). ``abort`` discards a
partial receive under the same proof. Anything else is left, and said so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import DatasetNotFound, ReplicationConflict, UsageError
from ..zfs.changes import PROBE_PREFIX
from ..zfs.names import DatasetName, parse_dataset, parse_node_qualified
from ..zfs.parse import ParseError
from ..zfs.resume_token import decode_resume_token
from .wire import RECEIVER_PROP, SOURCE_PROP, validate_holder

if TYPE_CHECKING:
    from ..zfs.api import Zfs
    from ..zfs.models import Dataset
    from .claims import Claim, ClaimStore
    from .head import DestinationHead

__all__ = ["AbortOps", "rel_name"]


def rel_name(top: DatasetName, ds: DatasetName) -> str:
    """``ds``'s name below ``top`` (``""`` for ``top`` itself): how a tree's datasets are keyed."""
    return "" if ds == top else ds.name[len(top.name) + 1 :]


class AbortOps:
    """Mixed into :class:`~.receiver.Receiver` (which provides the rest)."""

    zfs: Zfs
    claims: ClaimStore
    head: DestinationHead

    if TYPE_CHECKING:  # the Receiver's and StandbyOps' (stubs here would shadow StandbyOps' in the MRO)

        def _tree(self, top: DatasetName, recursive: bool) -> list[Dataset]: ...
        def _restore_read_only(self, claim: Claim) -> None: ...
        def _release_holds(self, claim: Claim) -> None: ...
        def _drop_claim(self, top: DatasetName | str, claim: Claim) -> bool: ...

    def abort(self, dataset: str, holder: str, *, keep_claim: bool = False) -> dict[str, Any]:
        """Put the tree back as ``begin`` found it, as far as it is provably this replication's doing.
        ``keep_claim``: keep the claim and the read-only lock (a restart starting over)."""
        top = parse_dataset(dataset)
        claim = self.claims.get(str(top))
        if claim is None or claim.holder != validate_holder(holder):
            return {"restored": False, "left": [f"{top}: not claimed by {holder}; nothing touched"]}
        before: dict[str, list[int]] = claim.state.get("before", {})
        sent = set(claim.state.get("sent", []))
        left: list[str] = []
        restored: list[str] = []
        tree = self._tree(top, bool(claim.state.get("recursive")))
        # deepest first: a new child goes before its parent
        for ds in sorted(tree, key=lambda d: d.name.name.count("/"), reverse=True):
            rel = rel_name(top, ds.name)
            try:
                if rel in before:
                    self._drop_own_partial(claim, rel, ds.name, restored, left)
                    self._restore_existing(ds.name, set(before[rel]), sent, restored, left)
                else:
                    self._remove_created(ds.name, holder, sent, restored, left)
            except DatasetNotFound:
                if self.zfs.exists(ds.name):
                    raise  # something else is missing: not ours to guess
                if rel in before:
                    left.append(f"{ds.name}: destroyed by someone else while the abort ran")
                else:  # a cut full receive removes its own new dataset as it exits (no resumable state)
                    restored.append(f"{ds.name}: gone (its receive ended before the abort reached it)")
        for name in claim.state.get("discarded", {}):
            left.append(
                f"{top}/{name}".rstrip("/") + ": what rollback_destination discarded cannot come back"
            )
        if not keep_claim:
            self._restore_read_only(claim)
            self._release_holds(claim)
            self._drop_claim(top, claim)
        return {"restored": not left, "actions": restored, "left": left}

    def drop_partial(self, dataset: str, holder: str, tokens: dict[str, str]) -> dict[str, Any]:
        """Discard the partial receive named by each ``tokens`` entry (relative name -> the token the
        source refused), where it is provably the project's (see the module doc). A token that is no
        longer the dataset's (another receive's since) is left. Returns ``dropped`` (relative names)
        and ``left`` (one line each)."""
        top = parse_dataset(dataset)
        claim = self.claims.held(str(top), validate_holder(holder))
        recursive = bool(claim.state.get("recursive"))
        dropped: list[str] = []
        left: list[str] = []
        for rel, token in sorted(tokens.items()):
            if rel and not recursive:
                raise UsageError(f"the claim of {holder} covers {top} alone, not {top}/{rel}")
            ds = top if not rel else parse_dataset(f"{top}/{rel}")
            now = self.zfs.resume_token(ds) if self.zfs.exists(ds) else None
            if not now or now != token:
                left.append(f"{ds}: its partial receive is not the one named; left alone")
                continue
            why = self._not_ours(claim, rel, ds, token)
            if why is not None:
                left.append(f"{ds}: {why}; left alone (`zfs receive -A {ds}` discards it)")
                continue
            self.zfs.abort_resumable_receive(ds)
            dropped.append(rel)
        return {"dropped": dropped, "left": left}

    def _drop_own_partial(
        self, claim: Claim, rel: str, ds: DatasetName, done: list[str], left: list[str]
    ) -> None:
        """``abort``: a partial resumable receive in ``ds`` is discarded when it is the project's."""
        token = self.zfs.resume_token(ds) if self.zfs.dialect.resumable_receive else None
        if not token:
            return
        why = self._not_ours(claim, rel, ds, token)
        if why is not None:
            left.append(f"{ds}: {why}; left alone")
            return
        self.zfs.abort_resumable_receive(ds)
        done.append(f"{ds}: partial receive discarded")

    def _not_ours(self, claim: Claim, rel: str, ds: DatasetName, token: str) -> str | None:
        """None when the partial receive of ``token`` in ``ds`` is provably the project's: the token
        streams a snapshot of the claim's source dataset, and either it appeared under ``claim`` (it is
        not the one ``begin`` found) or the dataset is the replica of that source (its local mark);
        else why not."""
        try:
            toname = decode_resume_token(token).toname
        except ParseError as e:
            return str(e)
        src_ds = parse_node_qualified(claim.source).name
        if toname.partition("@")[0] != str(src_ds):
            return f"a partial receive of {toname}, not of this replication's source {src_ds}"
        if claim.state.get("partial_before", {}).get(rel) != token:
            return None
        mark, where = self.zfs.get_with_source(ds, SOURCE_PROP)
        if where != "local" or mark != claim.source:
            return "a partial receive from before this replication, into a dataset not marked as its replica"
        return None

    def _restore_existing(
        self, ds: DatasetName, before: set[int], sent: set[int], done: list[str], left: list[str]
    ) -> None:
        snaps = [s for s in self.zfs.list_snapshots(ds) if not s.snap.startswith(PROBE_PREFIX)]
        newer = [s for s in snaps if s.guid not in before]
        if not newer:
            return
        keep = [s for s in snaps if s.guid in before]
        if not keep:
            left.append(f"{ds}: none of its earlier snapshots is left to roll back to")
            return
        try:  # only what this replication sent, checked and re-listed under the quiet lock
            gone = self.head.guarded_rollback(ds, keep[-1].guid, sent)
        except ReplicationConflict as e:
            left.append(str(e))
            return
        removed = ", ".join("@" + s.snap for s in gone.snapshots) or "nothing"
        done.append(f"{ds}: rolled back to @{keep[-1].snap} (removed {removed})")

    def _remove_created(
        self, ds: DatasetName, holder: str, sent: set[int], done: list[str], left: list[str]
    ) -> None:
        mark, source = self.zfs.get_with_source(ds, RECEIVER_PROP)
        snaps = self.zfs.list_snapshots(ds)
        partial = not snaps and self.zfs.dialect.resumable_receive and bool(self.zfs.resume_token(ds))
        ours_by_guid = bool(snaps) and all(s.guid in sent for s in snaps)
        other_mark = mark not in ("-", "", holder) and source in ("local", "received")
        if other_mark or not (ours_by_guid or partial):
            left.append(f"{ds}: not created by this replication; left alone")
            return
        children = [d for d in self.zfs.list_datasets(ds, recursive=True) if d.name != ds]
        if children:
            left.append(f"{ds}: holds datasets this replication did not create; left alone")
            return
        if not snaps:  # a partial receive's state: nothing anyone could have written to
            self.zfs.destroy(ds, recursive=True, deadline=30.0, missing_ok=True)
            done.append(f"{ds}: destroyed (created by this replication)")
            return
        why = self.head.destroy_if_unwritten(ds, sent)  # writable until finish: checked unmounted
        (left if why else done).append(why or f"{ds}: destroyed (created by this replication)")
