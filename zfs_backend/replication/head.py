"""A destination dataset's head against its snapshots, as the receiving end (:mod:`.receiver`) sees it
on its own node: :class:`DestinationHead`.

* :meth:`~DestinationHead.changes` / :meth:`~DestinationHead.bytes_since`: has the head changed after a
  snapshot (:func:`~zfs_backend.zfs.changes.head_changes`, exact), and how much was written since one;
* :meth:`~DestinationHead.settle`: the head against its newest snapshot, with metadata noise (a read
  updated atime) rolled back on the spot; real changes are reported, never discarded;
* :meth:`~DestinationHead.quiet`: a context inside which nothing can write to a dataset (unmounted for
  its duration, waiting at most ``QUIET_WAIT_S`` for it to be free), for a check followed by a rollback;
* :meth:`~DestinationHead.guarded_rollback`: the one way a rollback that may discard something is done:
  inside :meth:`quiet`, it lists the snapshots, refuses when one newer than the target is not one the
  caller may discard or when the head holds real writes (unless the caller asked to discard them), and
  lists the snapshots again right before ``zfs rollback``: a snapshot made between the check and the
  rollback refuses it too (``rollback -r`` would destroy it unseen). What it discarded is exactly what it
  returns;
* :meth:`~DestinationHead.destroy_if_unwritten`: a dataset a stream created (writable until it is marked
  read-only) goes only when, unmounted, it holds only the expected snapshots and no later write.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from ..errors import DatasetBusy, ReplicationConflict, ZfsBackendError
from ..zfs.api import Zfs
from ..zfs.changes import PROBE_PREFIX, HeadChanges, bytes_since, head_changes
from ..zfs.models import Dataset, Snapshot
from ..zfs.names import DatasetName

__all__ = ["QUIET_WAIT_S", "DestinationHead", "Discarded"]

#: how long a rollback waits for the dataset to be free (nobody holding a file open)
QUIET_WAIT_S = 5.0

log = logging.getLogger("zfs_backend.replication")


@dataclass(frozen=True)
class Discarded:
    """What :meth:`DestinationHead.guarded_rollback` discarded: the snapshots newer than the target, the
    head's changes after the newest (``None``: none), the bytes written after the target."""

    snapshots: tuple[Snapshot, ...]
    changes: HeadChanges | None
    bytes: int

    @property
    def nothing(self) -> bool:
        return not self.snapshots and self.changes is None


def _listed(zfs: Zfs, ds: DatasetName) -> list[Snapshot]:
    return [s for s in zfs.list_snapshots(ds) if not s.snap.startswith(PROBE_PREFIX)]


class DestinationHead:
    """The head checks of one node's ZFS; ``changes`` and ``bytes_since`` are injectable for unit tests
    without a node."""

    def __init__(
        self,
        zfs: Zfs,
        *,
        changes: Callable[[Zfs, DatasetName, Snapshot], HeadChanges] = head_changes,
        bytes_since: Callable[[Zfs, DatasetName, Snapshot], int] = bytes_since,
    ) -> None:
        self.zfs = zfs
        self._changes = changes
        self._bytes_since = bytes_since

    @property
    def node(self) -> str:
        return self.zfs.host.name

    def changes(self, ds: DatasetName, snap: Snapshot) -> HeadChanges:
        """How the head of ``ds`` differs from ``snap``."""
        return self._changes(self.zfs, ds, snap)

    def bytes_since(self, ds: DatasetName, base: Snapshot) -> int:
        """What was written to ``ds`` after ``base`` (what a rollback to it discards)."""
        return self._bytes_since(self.zfs, ds, base)

    def settle(self, ds: Dataset, snaps: list[Snapshot]) -> HeadChanges:
        """How the head differs from its newest snapshot; noise is rolled back on the spot. The exact
        check runs only where the cheap one (space accounting, or ``written``) sees a difference."""
        if not snaps:
            return HeadChanges(ds.referenced > (1 << 20), False, "no snapshot")
        newest = snaps[-1]
        if not self.zfs.dialect.written_property and (
            ds.referenced == newest.referenced and newest.used == 0
        ):
            return HeadChanges(False, False, "unchanged (space accounting)")
        changes = self.changes(ds.name, newest)
        if not changes.noisy:
            return changes
        with self.quiet(ds.name):
            changes = self.changes(ds.name, newest)  # again, now that nothing can write
            if changes.noisy:
                log.info(
                    "%s: %s differs from @%s by metadata only; rolling it back",
                    self.node,
                    ds.name,
                    newest.snap,
                )
                self.zfs.rollback(newest.name)
                return HeadChanges(False, False, "metadata noise rolled back")
        return changes

    @contextlib.contextmanager
    def quiet(self, ds: DatasetName) -> Iterator[None]:
        """Inside, nothing can write to ``ds``: it is unmounted, and mounted again after. Read-only is not
        enough before a rollback: measured on zfs-fuse, an NFS server's writes get through it. A
        dataset still in use (a file open, an export) is refused: nothing of it is rolled back."""
        # unmounting a dataset takes its children's mounts with it: remount every one that was mounted
        was = [d.name for d in self.zfs.list_datasets(ds, recursive=True) if d.mounted]
        if ds in was:
            try:
                self.zfs.unmount(ds, deadline=QUIET_WAIT_S)
            except DatasetBusy:
                raise ReplicationConflict(
                    f"{self.node}:{ds} is in use (a file open, or exported): it could be written to while "
                    "it is rolled back, so nothing was changed"
                ) from None
        try:
            yield
        finally:
            for name in sorted(was, key=lambda n: n.name.count("/")):
                try:
                    if self.zfs.exists(name) and not self.zfs.is_mounted(name):  # (destroyed inside)
                        self.zfs.mount(name)
                except ZfsBackendError as e:
                    log.error("%s: could not mount %s again: %s", self.node, name, e)

    def guarded_rollback(
        self,
        ds: DatasetName,
        target_guid: int,
        may_destroy: Collection[int] | None,
        *,
        discard_writes: bool = False,
        measure: bool = False,
    ) -> Discarded:
        """Roll ``ds`` back to its snapshot of GUID ``target_guid``, provably discarding only what the
        caller may: every newer snapshot's GUID is in ``may_destroy`` (``None``: any, the caller asked to
        discard them), and the head holds no real writes
        after the newest snapshot unless ``discard_writes`` (metadata noise always goes). All checked
        inside :meth:`quiet` (nothing writes meanwhile), and the snapshots are listed again right before
        the rollback: one made meanwhile refuses it. Refusals raise :class:`ReplicationConflict` having
        changed nothing. ``measure``: count the bytes discarded (``bytes_since``) into the answer."""
        with self.quiet(ds):
            snaps = _listed(self.zfs, ds)
            target = next((s for s in snaps if s.guid == int(target_guid)), None)
            if target is None:
                raise ReplicationConflict(f"{self.node}:{ds} no longer holds snapshot GUID {target_guid}")
            newer = [s for s in snaps if s.createtxg > target.createtxg]
            foreign = [s for s in newer if may_destroy is not None and s.guid not in may_destroy]
            if foreign:
                raise ReplicationConflict(
                    f"{self.node}:{ds} kept as it is; @{foreign[0].snap} was not made by this replication"
                )
            changes = self.changes(ds, snaps[-1])
            if changes.changed and not discard_writes:
                raise ReplicationConflict(
                    f"{self.node}:{ds} kept as it is; it was written to after @{snaps[-1].snap} "
                    f"({changes.detail})"
                )
            if not newer and changes.clean:
                return Discarded((), None, 0)
            size = self.bytes_since(ds, target) if measure else 0
            again = _listed(self.zfs, ds)
            if [s.guid for s in again] != [s.guid for s in snaps]:
                raise ReplicationConflict(
                    f"{self.node}:{ds} kept as it is; its snapshots changed while it was checked "
                    "(a snapshot made meanwhile would have been destroyed)"
                )
            self.zfs.rollback(target.name, destroy_newer=bool(newer))
            return Discarded(tuple(newer), None if changes.clean else changes, size)

    def destroy_if_unwritten(self, ds: DatasetName, may_hold: Collection[int]) -> str | None:
        """Destroy ``ds`` (a dataset a stream created, writable until it is marked read-only) when,
        checked with it unmounted, every snapshot it holds is in ``may_hold`` and its head holds no write
        after the newest; returns why it was left, or None."""
        try:
            with self.quiet(ds):
                snaps = _listed(self.zfs, ds)
                if not snaps or any(s.guid not in may_hold for s in snaps):
                    return f"{ds}: its snapshots changed meanwhile; left alone"
                changes = self.changes(ds, snaps[-1])
                if changes.changed:
                    return f"{ds}: written to after @{snaps[-1].snap} ({changes.detail}); left alone"
                self.zfs.destroy(ds, recursive=True, deadline=30.0, missing_ok=True)
        except ReplicationConflict as e:
            return f"{ds}: {e}; left alone"
        return None
