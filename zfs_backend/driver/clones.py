"""Clone dependencies between the driver's volumes: who is cloned from whom, promoting dependents before a
volume is deleted, and dropping the internal ``@clone-<id>`` snapshots once nothing uses them.

Volumes from a snapshot are ZFS clones of it; cloning a volume clones a snapshot ``@clone-<new id>``
(:func:`clone_snapshot`) taken for it. Deleting a volume whose internal clone snapshots have dependents
promotes the newest dependent first.
"""

from __future__ import annotations

import logging

from ..errors import ZfsBackendError
from ..zfs.api import Zfs
from ..zfs.names import DatasetName, SnapshotName, parse_snapshot
from .errors import VolumeBusy
from .options import NodeOptions

__all__ = [
    "CLONE_SNAP_PREFIX",
    "INTERNAL_SNAP_PREFIXES",
    "clone_snapshot",
    "dependents",
    "destroy_snapshot",
    "drop_clone_origin",
    "promote_dependents",
    "refuse_own_snapshots",
    "snapshot_clones",
]

log = logging.getLogger("zfs_backend.driver")

CLONE_SNAP_PREFIX = "clone-"
#: the snapshot a Cinder failback brings the primary back at (``failback``): the next one's common base
FAILBACK_SNAP_PREFIX = "zfs_backend-failback-"
#: snapshots the driver's own work takes (clones, backups, migrations, failbacks): not a user's snapshots
INTERNAL_SNAP_PREFIXES = (CLONE_SNAP_PREFIX, "backup-", "migrate-", FAILBACK_SNAP_PREFIX)


def clone_snapshot(src: DatasetName, volume_id: str) -> SnapshotName:
    """The internal snapshot of ``src`` that the volume ``volume_id`` is cloned from."""
    return src.snapshot(f"{CLONE_SNAP_PREFIX}{volume_id}")


def dependents(zfs: Zfs, parent: DatasetName, ds: DatasetName) -> list[tuple[DatasetName, SnapshotName]]:
    """Volumes cloned from snapshots of ``ds``: (clone, its origin snapshot)."""
    out = []
    for d in zfs.list_datasets(parent):
        if d.origin is not None and d.origin.dataset == ds:
            out.append((d.name, d.origin))
    return out


def snapshot_clones(zfs: Zfs, parent: DatasetName, snap: SnapshotName) -> list[str]:
    """The volumes cloned from ``snap``."""
    return [str(c) for c, o in dependents(zfs, parent, snap.dataset) if o == snap]


def destroy_snapshot(
    zfs: Zfs, options: NodeOptions, snap: SnapshotName, snapshot_id: str, *, deferred: bool = False
) -> None:
    """Destroy a volume's snapshot; a missing one is gone already. While volumes are cloned from it:
    refused (:class:`VolumeBusy`), or with ``deferred`` (Cinder's contract: a volume made from a snapshot
    is independent of it, so deleting the snapshot must succeed) destroyed deferred (``zfs destroy -d``:
    marked ``defer_destroy``, ZFS destroys it with its last clone; a volume whose only snapshots are so
    marked may be deleted, its clones promoted first). No data is destroyed while a volume uses it.
    (Renaming it to an internal ``@clone-`` snapshot instead failed on zfs-fuse: a snapshot's rename
    remounts its clones, busy while exported.)"""
    if not zfs.exists(snap):
        return
    deps = snapshot_clones(zfs, options.parent_dataset, snap)
    if deps and not deferred:
        raise VolumeBusy(f"snapshot {snapshot_id} has dependent volumes: {', '.join(deps)}")
    if deps:
        log.info("%s: %s has clones (%s): destroyed deferred", options.node, snap, ", ".join(deps))
    zfs.destroy(snap, defer=bool(deps), deadline=float(options.destroy_deadline))


def refuse_own_snapshots(zfs: Zfs, ds: DatasetName, volume_id: str) -> None:
    """A volume with snapshots of its own (not internal ``@clone-``/``@backup-``/``@migrate-``/
    ``@zfs_backend-failback-`` ones, nor ones destroyed deferred: ``defer_destroy``) cannot be deleted."""
    own = [s for s in zfs.list_snapshots(ds) if not s.snap.startswith(INTERNAL_SNAP_PREFIXES)]
    # a snapshot deleted deferred (Cinder's delete of one with clones) is gone for its volume's users
    own = [s for s in own if zfs.get(s.name, ["defer_destroy"]).get("defer_destroy") != "on"]
    if own:
        raise VolumeBusy(
            f"volume {volume_id} has {len(own)} snapshot(s) "
            f"({', '.join(s.snap for s in own)}): delete them first"
        )


def promote_dependents(zfs: Zfs, options: NodeOptions, ds: DatasetName, volume_id: str) -> None:
    """Promote the volumes cloned from ``ds`` (newest origin first) until none is left."""
    snaps = {s.name: s.createtxg for s in zfs.list_snapshots(ds)}
    for _ in range(len(snaps) + 1):
        deps = dependents(zfs, options.parent_dataset, ds)
        if not deps:
            break
        clone, _snap = max(deps, key=lambda d: snaps.get(d[1], 0))
        log.info("%s: promoting %s before deleting %s", options.node, clone, ds)
        zfs.promote(clone)
    if dependents(zfs, options.parent_dataset, ds):
        raise VolumeBusy(f"volume {volume_id} still has dependent clones after promotion")


def drop_clone_origin(zfs: Zfs, options: NodeOptions, origin: str) -> None:
    """After deleting a clone of a volume: its ``@clone-`` snapshot goes too, if nothing else uses it."""
    if origin in ("-", "") or f"@{CLONE_SNAP_PREFIX}" not in origin:
        return
    snap = parse_snapshot(origin)
    if not snap.dataset.is_descendant_of(options.parent_dataset):
        return
    if any(o == snap for _c, o in dependents(zfs, options.parent_dataset, snap.dataset)):
        return
    try:
        zfs.destroy(snap, missing_ok=True)
    except ZfsBackendError as e:
        log.warning("%s: could not remove %s: %s", options.node, snap, e)
