"""Cinder's failback: ``failover_host(secondary_id="default")`` after a failover brings every failed-over
volume back to the configured primary once that node is healthy (the caller sets the primary's driver up
first: a node that does not answer refuses the whole failback, nothing changed).

Per volume (``replication_status`` ``failed-over``), all by the controller:

1. the standby's copy (the volume since the failover) is **quiesced** (:func:`.failover.quiesce`:
   unexported with its grants kept, read-only, unmounted: every acknowledged write is in the dataset);
2. a snapshot of it (``@zfs_backend-failback-<ms>``) is replicated to the primary's copy, incrementally
   from their newest common snapshot, as every replication is (``replication.api.snapshot_replicate``:
   under a grant of the primary's agent; the primary's head goes back to that common snapshot only when
   it differs by metadata noise). A primary's copy that holds real writes after it (what the forced
   failover reported lost, or anything else) refuses: nothing is discarded, the volume stays on the
   standby, exported and writable again, and its update says ``error`` with why;
3. the primary's copy is **promoted** (writable, mounted, exported to the standby's grants), and the
   standby's copy stays as the quiesce left it (read-only, unexported): the standby again.

The update of a volume brought back: ``replication_status: enabled`` and the primary's
``provider_location``; of one that could not be: ``replication_status: error``, ``status: error`` (the
backend serves from the primary from now on, as Cinder records); a volume that was not failed over is
left alone (no update).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ZfsBackendError
from ..zfs.names import parse_snapshot
from .clones import FAILBACK_SNAP_PREFIX
from .failover import DRIVER_DATA_MAX, UNMOUNT_WAIT_S, promote, quiesce, unquiesce
from .models import Volume
from .nfs import Attachment

if TYPE_CHECKING:
    from ..activity.handle import BackendActivity
    from .zfs_nfs import ZfsNfsDriver

__all__ = ["FAILBACK_PREFIX", "fail_back"]

log = logging.getLogger("zfs_backend.driver")

#: internal to the driver (``clones.INTERNAL_SNAP_PREFIXES``): the volume stays deletable and movable
FAILBACK_PREFIX = FAILBACK_SNAP_PREFIX
#: how long one volume's catch-up replication may take
CATCH_UP_S = 3600.0

#: ``(snapshot, source node, "NODE:dataset")`` -> the activity (``wait``, ``record``)
Replicate = Callable[..., Any]


def _default_replicate(standby: ZfsNfsDriver) -> Replicate:
    from ..replication.api import snapshot_replicate

    def replicate(snapshot: str, source: str, destination: str) -> BackendActivity:
        return snapshot_replicate(snapshot, source, destination, settings=standby.settings)

    return replicate


def fail_back(
    primary: ZfsNfsDriver,
    standby: ZfsNfsDriver,
    volumes: list[Volume],
    *,
    replicate: Replicate | None = None,
    timeout: float = CATCH_UP_S,
) -> list[dict[str, Any]]:
    """Bring every failed-over volume of ``volumes`` back from ``standby`` to ``primary`` (both set up);
    returns Cinder's ``{"volume_id": id, "updates": {...}}`` entries (see the module doc)."""
    send = replicate or _default_replicate(standby)
    updates: list[dict[str, Any]] = []
    for v in volumes:
        if v.replication_status != "failed-over":
            continue
        try:
            location, snap = _fail_back_one(primary, standby, v, send, timeout)
        except ZfsBackendError as e:
            log.error("failback of volume %s to %s failed: %s", v.id, primary.options.node, e)
            data = json.dumps({"failback": str(e)[: DRIVER_DATA_MAX - 20]})
            updates.append(
                {
                    "volume_id": v.id,
                    "updates": {
                        "replication_status": "error",
                        "status": "error",
                        "replication_driver_data": data,
                    },
                }
            )
            continue
        updates.append(
            {
                "volume_id": v.id,
                "updates": {
                    "replication_status": "enabled",
                    "provider_location": location,
                    "replication_driver_data": json.dumps({"failed_back_at": snap}),
                },
            }
        )
    return updates


def _fail_back_one(
    primary: ZfsNfsDriver, standby: ZfsNfsDriver, v: Volume, send: Replicate, timeout: float
) -> tuple[str, str]:
    """One volume (module doc, steps 1-3); returns its new location and the snapshot it came back at.
    Raises with the volume as it was on the standby (exported, writable) when it cannot come back."""
    ds_p, ds_s = primary.dataset_of(v), standby.dataset_of(v)
    primary.require(ds_p, f"{primary.options.node}'s copy of volume {v.id}")
    primary.exports.remove(ds_p)  # fenced already, when it answered then
    if primary.zfs.is_mounted(ds_p):  # received into unmounted, as a standby's copy is; promote mounts
        primary.zfs.unmount(ds_p, deadline=UNMOUNT_WAIT_S)
    state = quiesce(standby, v)
    name = f"{FAILBACK_PREFIX}{int(time.time() * 1000)}"
    snap = parse_snapshot(f"{ds_s}@{name}")
    try:
        standby.zfs.snapshot(snap)
        act = send(str(snap), standby.options.node, f"{primary.options.node}:{ds_p}")
        end = act.wait(timeout)
        if end != "succeeded":
            why = act.record().error or end
            raise ZfsBackendError(f"bringing {primary.options.node}'s copy up to date failed: {why}")
        atts = [Attachment(str(i), str(c)) for i, c in state.get("attachments") or []]
        location = promote(primary, v, state.get("clients") or [], atts)
    except BaseException:
        try:
            standby.zfs.destroy(snap, missing_ok=True)
        finally:
            unquiesce(standby, v, state)
        raise
    log.info("volume %s failed back to %s at @%s", v.id, primary.options.node, name)
    return location, name
