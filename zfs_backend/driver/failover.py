"""A volume's role in a standby relationship, changed by the controller with its own access to the node
(the driver's host), and Cinder's ``failover_host``.

* :func:`quiesce` / :func:`unquiesce`: the primary stops taking writes (unexported, then read-only) and
  back, exactly as it was (the same grants, its own ``readonly``). What quiesce returns is what undoes it.
* :func:`promote` / :func:`demote`: a replica becomes the writable, exported volume (the primary's
  grants) and back (unexported, read-only).
* :func:`fail_over`: a forced failover of one volume to its standby, whatever the primary's state: the
  standby-sync's claim on the standby is **fenced** (the increment in flight rolled back there, the old
  primary's sync shut out of the dataset for good) and every grant on the dataset there is revoked (the
  replica becomes the volume: no peer writes into it any more; best effort, logged), then the standby is
  promoted at the newest snapshot it holds. Reports that snapshot and the window of data lost: what the
  primary took after it (its time is in its name, see ``replication.standby``) up to the failover. The
  head goes back to that snapshot only when it differs by noise: a retried failover finds the standby
  promoted and written to, and keeps those writes (``kept`` in its answer).
* :func:`set_aside`: the old primary's copy, once it answers again, renamed aside (never destroyed) so
  that the node can take a new seed and become the standby again (``standby create`` after a forced
  failover: a failback's first step).
* :func:`fence_old_primary`: after a forced failover, each volume's copy on the old primary is unexported
  and made read-only when that node answers, so that a client still mounting it there cannot write to a
  copy that is no longer the volume; when it does not answer, that is reported and logged (fence it
  before it serves again).

None of this goes through a node's narrow key: the controller reaches the standby's agent (``recv.status``
and ``recv.fence`` on its main socket) and ZFS over its own SSH access, as for every driver call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ReplicationConflict, ZfsBackendError
from ..kinds.standby import snapshot_time
from ..replication.granted import revoke_grants
from ..replication.head import DestinationHead
from ..zfs.models import Snapshot
from ..zfs.names import DatasetName
from .errors import VolumeNotFound
from .models import Volume
from .nfs import Attachment
from .zfs_nfs import ZfsNfsDriver

__all__ = [
    "demote",
    "fail_over",
    "failover_host",
    "fence_old_primary",
    "peer_driver",
    "promote",
    "quiesce",
    "set_aside",
    "unquiesce",
]

log = logging.getLogger("zfs_backend.driver")


#: how long a quiesce waits for the NFS server to let go of the volume's files
UNMOUNT_WAIT_S = 60.0
#: how long a forced failover waits for the old primary to answer before it leaves its copies unfenced
FENCE_REACH_S = 10.0
#: the length of Cinder's ``replication_driver_data`` column (``String(255)``; MySQL refuses more)
DRIVER_DATA_MAX = 255


def quiesce(d: ZfsNfsDriver, volume: Volume) -> dict[str, Any]:
    """No more writes to ``volume``: unexported (its grants kept in the result), read-only, unmounted.

    The unmount is the barrier: measured on zfs-fuse, an NFS client still writes through nfs-ganesha after
    ``zfs set readonly=on``, and the server applies an unexport (SIGHUP) asynchronously; an unmount
    succeeds only once the server closed the volume's files, and nothing writes to an unmounted
    dataset. A volume still busy after ``UNMOUNT_WAIT_S`` is put back as it was (``DatasetBusy``)."""
    ds = d.dataset_of(volume)
    d.require(ds, f"volume {volume.id}")
    entry = d.exports.remove(ds)
    value, source = d.zfs.get_with_source(ds, "readonly")
    state: dict[str, Any] = {
        "exported": entry is not None,
        "clients": list(entry.clients) if entry is not None else [],
        "attachments": [[a.id, a.client] for a in entry.attachments] if entry is not None else [],
        "readonly": [value, source],
        "unmounted": False,
    }
    try:
        d.zfs.set(ds, "readonly", "on")
        if d.zfs.is_mounted(ds):
            state["unmounted"] = True
            d.zfs.unmount(ds, deadline=UNMOUNT_WAIT_S)
    except BaseException:
        unquiesce(d, volume, state)
        raise
    return state


def unquiesce(d: ZfsNfsDriver, volume: Volume, state: dict[str, Any]) -> None:
    """Undo :func:`quiesce` with what it returned."""
    ds = d.dataset_of(volume)
    if state.get("unmounted") and not d.zfs.is_mounted(ds):
        d.zfs.mount(ds)
    value, source = state.get("readonly") or ["off", "default"]
    if source == "local":
        d.zfs.set(ds, "readonly", value)
    elif value == "off" or source == "temporary":
        d.zfs.inherit(ds, "readonly")
    if state.get("exported"):
        atts = tuple(Attachment(str(i), str(c)) for i, c in state.get("attachments") or ())
        d.export(ds, tuple(state.get("clients") or ()), atts)


def promote(
    d: ZfsNfsDriver, volume: Volume, clients: Sequence[str] = (), attachments: Sequence[Attachment] = ()
) -> str:
    """The replica of ``volume`` on ``d``'s node becomes the volume: writable, mounted, exported to
    ``attachments`` (and the default attachments of ``clients``). Returns its ``provider_location``.

    A replica that was the primary before (failing back) was unmounted by its :func:`quiesce`, and the
    increments it received since do not mount it: it is mounted here, before the export (which reads the
    volume file's owner and mode)."""
    ds = d.dataset_of(volume)
    d.require(ds, f"the replica of volume {volume.id}")
    d.zfs.inherit(ds, "readonly")
    if d.zfs.get_with_source(ds, "readonly")[0] == "on":  # inherited from a read-only parent
        d.zfs.set(ds, "readonly", "off")
    if not d.zfs.is_mounted(ds):
        d.zfs.mount(ds)
    d.export(ds, tuple(clients), tuple(attachments))
    return d.location(ds)


def demote(d: ZfsNfsDriver, volume: Volume) -> None:
    """Undo :func:`promote`: unexported and read-only again."""
    ds = d.dataset_of(volume)
    d.exports.remove(ds)
    if d.zfs.exists(ds):
        d.zfs.set(ds, "readonly", "on")


def _fence(standby: ZfsNfsDriver, dataset: str, reason: str) -> list[str]:
    """Fence every holder of a claim on ``dataset`` on the standby's node (through its agent)."""
    from ..rpc.connect import connect_node

    node = connect_node(standby.options.node, standby.settings)
    try:
        claims = [c for c in node.client.call("recv.status") if c.get("dataset") == dataset]
        for c in claims:
            node.client.call("recv.fence", dataset=dataset, holder=c["holder"], reason=reason)
        return [str(c["holder"]) for c in claims]
    finally:
        node.close()


def _revoke_grants(standby: ZfsNfsDriver, dataset: str) -> int | None:
    """Every grant on ``dataset`` on the standby's node revoked (whoever the peer: the replica is becoming
    the volume). Best effort: None when its agent did not do it (logged by ``revoke_grants``)."""
    from ..rpc.connect import connect_node

    nodes: list[Any] = []

    def reach(name: str) -> Any:
        nodes.append(connect_node(name, standby.settings))
        return nodes[-1]

    try:
        return revoke_grants(reach, standby.options.node, dataset)
    finally:
        for n in nodes:
            n.close()


def fail_over(
    standby: ZfsNfsDriver,
    volume: Volume,
    clients: Sequence[str] = (),
    *,
    holders: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
) -> dict[str, Any]:
    """A forced failover of ``volume`` to ``standby``'s node (see the module doc). ``holders``: the
    standby-sync activities to fence even when they hold no claim right now (the flow knows its own)."""
    t0 = time.time()
    ds = standby.dataset_of(volume)
    if not standby.zfs.exists(ds):
        raise VolumeNotFound(f"{standby.options.node} holds no replica of volume {volume.id} ({ds})")
    reason = f"{standby.options.node}:{ds} was promoted by a forced failover"
    fenced = _fence(standby, str(ds), reason)
    for h in holders:
        if h not in fenced:
            from ..rpc.connect import connect_node

            with connect_node(standby.options.node, standby.settings) as node:
                node.client.call("recv.fence", dataset=str(ds), holder=h, reason=reason)
            fenced.append(h)
    revoked = _revoke_grants(standby, str(ds))
    snaps = standby.zfs.list_snapshots(ds)
    if not snaps:
        raise ZfsBackendError(f"{standby.options.node}:{ds} holds no snapshot to promote")
    newest = snaps[-1]
    kept = _settle_head(standby, ds, newest)
    location = promote(standby, volume, clients, attachments)
    taken = snapshot_time(newest.snap) or float(newest.creation)
    out = {
        "provider_location": location,
        "snapshot": newest.snap,
        "snapshot_time": taken,
        "lost_window_s": round(max(0.0, t0 - taken), 3),
        "fenced": fenced,
        "grants_revoked": revoked,
    }
    if kept:
        out["kept"] = kept
    log.warning(
        "%s: volume %s promoted at @%s; writes to the old primary after %s (%.1f s before the failover) "
        "are lost",
        standby.options.node,
        volume.id,
        newest.snap,
        time.strftime("%H:%M:%S", time.localtime(taken)),
        out["lost_window_s"],
    )
    return out


def _settle_head(standby: ZfsNfsDriver, ds: DatasetName, newest: Snapshot) -> str | None:
    """The standby's head goes back to its newest snapshot only when it differs from it by metadata
    noise (a read updated atime). Real writes are kept: the standby was promoted already (a retried
    failover) and clients wrote to it, or someone did; nothing newer than the snapshot is ever destroyed
    (:meth:`~..replication.head.DestinationHead.guarded_rollback`, checked with the dataset unmounted).
    Returns why the head was kept, or None."""
    try:
        DestinationHead(standby.zfs).guarded_rollback(ds, newest.guid, ())
    except ReplicationConflict as e:
        log.warning("failover: %s (writes made after the promotion are the volume's now)", e)
        return str(e)
    return None


def fence_old_primary(d: ZfsNfsDriver, volumes: Sequence[Volume]) -> dict[str, str]:
    """After a forced failover away from ``d``'s node: each of ``volumes`` there unexported and read-only,
    when the node answers within ``FENCE_REACH_S``. Nothing is destroyed (the copy may hold writes the
    standby never received). Returns ``{volume id: "fenced" | "not fenced: why"}``, ``why`` short (it goes
    into Cinder's ``replication_driver_data``, 255 characters in all); the whole story goes to the log."""
    node = d.options.node
    try:
        if not d.is_set_up or d.host is None:
            raise ZfsBackendError("the driver was never set up on it")
        d.host.run(["true"], timeout=FENCE_REACH_S)
    except Exception as e:  # whatever a dead link raises: a fence never fails the failover it follows
        log.warning(
            "forced failover: the old primary's copies of %d volume(s) not fenced: %s does not answer (%s); "
            "they will be when it answers again",
            len(volumes),
            node,
            e,
        )
        return {v.id: f"not fenced: {node} did not answer" for v in volumes}
    out: dict[str, str] = {}
    for v in volumes:
        ds = d.dataset_of(v)
        try:
            d.exports.remove(ds)
            if d.zfs.exists(ds):
                d.zfs.set(ds, "readonly", "on")
            out[v.id] = "fenced"
        except ZfsBackendError as e:
            out[v.id] = f"not fenced: {str(e)[:80]}"
            log.warning("forced failover: volume %s on the old primary %s not fenced: %s", v.id, node, e)
    return out


def set_aside(d: ZfsNfsDriver, volume: Volume) -> str | None:
    """The old primary's copy of ``volume`` after a forced failover, before that node becomes the standby
    again: unexported, read-only and renamed ``<parent>/diverged-<volume id>-<unix time>``, kept whole (it
    may hold writes the standby never received: an operator compares and destroys it). Frees the
    volume's name there for a new seed. Returns the new name, None when the node holds no copy."""
    ds = d.dataset_of(volume)
    if not d.zfs.exists(ds):
        return None
    d.exports.remove(ds)
    d.zfs.set(ds, "readonly", "on")
    if d.zfs.is_mounted(ds):  # the NFS server lets go of its files asynchronously (see quiesce)
        d.zfs.unmount(ds, deadline=UNMOUNT_WAIT_S)
    aside = d.options.parent_dataset.child(f"diverged-{volume.id}-{int(time.time())}")
    d.zfs.rename(ds, aside)
    log.warning("%s: the old primary's copy of volume %s kept as %s", d.options.node, volume.id, aside)
    return str(aside)


def peer_driver(d: ZfsNfsDriver, node: str) -> ZfsNfsDriver:
    """A driver for another node of the inventory (the standby's), set up with ``d``'s settings and
    ``d``'s parent dataset: a backend's replicas live under its own parent on the standby (a Cinder
    backend's ``zfs_backend_parent``), whatever the node's inventory default is."""
    return ZfsNfsDriver.for_node(d.settings, node, parent=d.options.parent)


def failover_host(
    d: ZfsNfsDriver, volumes: list[Volume], secondary_id: str | None
) -> tuple[str, list[dict[str, Any]], list[Any]]:
    """Cinder's ``failover_host``: every replicated volume of this backend (``replication_status``
    ``enabled``, or ``error``) is failed over to ``secondary_id`` (default: the first replication device),
    forced (the primary may be a smoking hole). Returns ``(active_backend_id, volume_updates, [])`` with
    ``{"volume_id": id, "updates": {...}}`` entries: ``replication_status: failed-over`` and the new
    ``provider_location`` (plus, in ``replication_driver_data``, what was lost and whether the old
    primary's copy was fenced, see :func:`fence_old_primary`); a volume that is not replicated, or whose
    failover failed, gets ``status: error``. ``d`` need not be set up (its node may be gone): only its
    options are read, and its node is reached only to fence it."""
    import json

    targets = d.options.replication_devices
    if not targets:
        raise ZfsBackendError(f"{d.options.node}: no replication_device is configured")
    secondary = secondary_id or targets[0]
    if secondary not in targets:
        raise ZfsBackendError(
            f"{secondary} is not a replication device of {d.options.node} ({', '.join(targets)})"
        )
    peer = peer_driver(d, secondary)
    updates: list[dict[str, Any]] = []
    moved: dict[str, dict[str, Any]] = {}  # volume id -> what fail_over reported
    try:
        for v in volumes:
            if v.replication_status not in ("enabled", "error", "failing-over"):
                updates.append({"volume_id": v.id, "updates": {"status": "error"}})
                continue
            try:
                out = fail_over(peer, v)
            except ZfsBackendError as e:
                log.error("failover of volume %s to %s failed: %s", v.id, secondary, e)
                updates.append(
                    {"volume_id": v.id, "updates": {"replication_status": "error", "status": "error"}}
                )
                continue
            moved[v.id] = out
    finally:
        if peer.host is not None:
            peer.host.close()
    fenced = fence_old_primary(d, [v for v in volumes if v.id in moved]) if moved else {}
    for vid, out in moved.items():
        data = {k: out[k] for k in ("snapshot", "snapshot_time", "lost_window_s")}
        data["old_primary"] = fenced.get(vid, "not fenced")
        if len(json.dumps(data)) > DRIVER_DATA_MAX:  # Cinder's column: a longer value fails the update
            data["old_primary"] = data["old_primary"][: len("not fenced")]
        updates.append(
            {
                "volume_id": vid,
                "updates": {
                    "replication_status": "failed-over",
                    "provider_location": out["provider_location"],
                    "replication_driver_data": json.dumps(data),
                },
            }
        )
    return secondary, updates, []
