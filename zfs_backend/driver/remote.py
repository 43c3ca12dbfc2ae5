"""What the driver asks beyond its own node's ZFS and exports: the activity kinds its node's agent runs
(reported in the stats) and ``snapshot_replicate`` to another node (the destination's parent dataset made
sure of first, over the controller's own SSH access). Split from :mod:`.zfs_nfs`, whose methods delegate
here; the names are validated before anything is reached."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..activity.handle import BackendActivity
from ..config import Settings
from ..errors import ZfsBackendError
from ..zfs.api import Zfs
from ..zfs.names import DatasetName, parse_dataset, validate_node
from .errors import VolumeNotFound
from .models import Snapshot

if TYPE_CHECKING:
    from .zfs_nfs import ZfsNfsDriver

__all__ = ["activity_kinds", "ensure_remote_parent", "snapshot_replicate"]

log = logging.getLogger("zfs_backend.driver")


def activity_kinds(
    node: str, settings: Settings, given: Callable[[], list[str]] | None
) -> tuple[str, ...] | None:
    """The activity kinds ``node``'s agent runs (``given``: a test's answer), None when it cannot be
    asked (logged: the stats report no activity capability then)."""
    try:
        if given is not None:
            return tuple(given())
        from ..rpc.connect import connect_node

        agent = connect_node(node, settings)
        try:
            return tuple(agent.client.kinds())
        finally:
            agent.close()
    except ZfsBackendError as e:
        log.warning("%s: cannot ask the agent for its activity kinds: %s", node, e)
        return None


def ensure_remote_parent(settings: Settings, node: str, parent: DatasetName) -> None:
    """``parent`` exists on ``node`` (created with its parents when missing)."""
    from ..hosts.inventory import load_inventory

    with load_inventory(settings.inventory).connect(node, settings) as h:
        z = Zfs(h)
        if not z.exists(parent):
            z.create(parent, parents=True)


def snapshot_replicate(
    d: ZfsNfsDriver,
    snapshot: Snapshot,
    source_server: str | None,
    destination_server: str,
    force_full_copy: bool,
    destination_parent: str | None,
    replicate: Callable[..., BackendActivity] | None,
    **kwargs: Any,
) -> BackendActivity:
    """:meth:`.ZfsNfsDriver.snapshot_replicate` (``replicate``: a test's stand-in for
    ``zfs_backend.replication.api.snapshot_replicate``, which then makes sure of no remote parent)."""
    snap = d.snapshot_of(snapshot)
    source = validate_node(source_server or d.options.node)
    dest_node = validate_node(destination_server)
    dest_parent = parse_dataset(destination_parent or d.options.parent)
    if not d.zfs.exists(snap):
        raise VolumeNotFound(f"snapshot {snapshot.id} not found on {d.options.node} ({snap})")
    dest = dest_parent.child(snap.dataset.components[-1])
    if replicate is None:
        ensure_remote_parent(d.settings, dest_node, dest_parent)
        from ..replication.api import snapshot_replicate as replicate_snapshot

        return replicate_snapshot(
            str(snap), source, f"{dest_node}:{dest}", force_full_copy, settings=d.settings, **kwargs
        )
    return replicate(str(snap), source, f"{dest_node}:{dest}", force_full_copy, **kwargs)
