"""The core driver's migration: move a volume to another node of this backend family, while it stays in
use, as a ``migrate`` backend activity (``zfs_backend.kinds.migrate``), then switch its export. The
migration flow (``flows.migrate``) runs it, for ``volume migrate`` and for Cinder's ``migrate_volume``
alike (journaled, resumable by ``flow resume``): :func:`start` the activity, the controller's part
:class:`Switch`, and :func:`resolve_target`, the node Cinder's ``host`` names.

Cinder hands the driver ``host = {"host": "node@backend#pool", "capabilities": {...stats...}}``; the
driver answers ``(False, None)`` when the target is not one of its nodes (Cinder then falls back to its
generic copy), else moves the volume and answers ``(True, {"provider_location": "ADDR:/path"})``.

The activity (on the source node's agent) streams the volume full, then incrementally while it is in
use, then stops before its quiesce (``hold_at="quiesce"``): here the controller unexports the volume
(keeping its grants), and lets the activity make the source read-only and unmount it (which succeeds
only once the NFS server closed its files: no write can be acknowledged after that), send the last
increment and have the destination verify it. Then, here, the switch: the destination volume gets its
properties back (writable, quota, size, file owner and mode) and the source's export with the same
grants; only then, with the destination's final snapshot checked by GUID once more, the source's copy
is destroyed. The quiesce window is from the source going read-only to the new export's grant
(``result.quiesce_s``); clients see it from the unexport.
If the switch fails half way it is undone (destination export and copy removed, the source writable
again): the volume stays where it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..activity.handle import BackendActivity
from ..errors import MigrationFailed, ZfsBackendError
from ..kinds.migrate import restore_readonly
from ..replication.granted import start_granted
from ..replication.migrate_request import KIND, SNAP_PREFIX, MigrateRequest
from ..replication.wire import RECEIVER_PROP
from ..zfs.names import DatasetName, parse_snapshot
from . import clones, layout
from .errors import VolumeBusy
from .exports_format import ExportEntry
from .models import GIB, Volume
from .nfs import Attachment
from .zfs_nfs import ZfsNfsDriver

__all__ = [
    "INTERNAL_SNAP_PREFIXES",
    "MigrationFailed",
    "Switch",
    "resolve_target",
    "start",
    "target_node",
    "target_parent",
]

log = logging.getLogger("zfs_backend.driver")

INTERNAL_SNAP_PREFIXES = clones.INTERNAL_SNAP_PREFIXES


def target_node(host: Any, nodes: dict[str, str]) -> str | None:
    """The inventory node Cinder's ``host`` names (``nodes``: name -> export address), or None when it is
    not a node of this driver. ``host`` may also be a node name (the volume service passes that)."""
    if isinstance(host, str):
        return host if host in nodes else None
    if not isinstance(host, dict):
        return None
    caps = host.get("capabilities") or {}
    parts = str(caps.get("location_info", "")).split(":")
    if len(parts) != 3 or parts[0] != "ZfsNfsDriver":
        return None
    return next((name for name, addr in nodes.items() if addr == parts[1]), None)


def target_parent(host: Any) -> str | None:
    """The parent dataset of the destination backend Cinder's ``host`` names (the third field of its
    ``location_info``), None when ``host`` does not say (a node name from the CLI: the inventory's)."""
    if not isinstance(host, dict):
        return None
    parts = str((host.get("capabilities") or {}).get("location_info", "")).split(":")
    return parts[2] if len(parts) == 3 and parts[0] == "ZfsNfsDriver" and parts[2] else None


def start(
    src: ZfsNfsDriver, dst: ZfsNfsDriver, volume: Volume, *, node_for: Callable[[str], Any], **tuning: Any
) -> BackendActivity:
    """Check the volume can move and start the ``migrate`` activity on the source node's agent, under a
    grant of the destination's agent (``replication.granted``)."""
    ds = src.dataset_of(volume)
    src.require(ds, f"volume {volume.id}")
    own = [s.snap for s in src.zfs.list_snapshots(ds) if not s.snap.startswith(INTERNAL_SNAP_PREFIXES)]
    if own:
        raise VolumeBusy(
            f"volume {volume.id} has snapshots ({', '.join(own)}): only a volume without any moves"
        )
    deps = clones.dependents(src.zfs, src.options.parent_dataset, ds)
    if deps:
        raise VolumeBusy(f"volume {volume.id} has dependent clones ({', '.join(str(c) for c, _ in deps)})")
    req = MigrateRequest(dataset=ds, destination_node=dst.options.node, destination=dst.dataset_of(volume))
    # the controller unexports before the quiesce (see Switch); an operator's hold before the catch-up
    # comes first (``catchup+quiesce``): without the second one the activity would unmount an exported source
    hold = tuning.get("hold_at") or "quiesce"
    tuning["hold_at"] = "catchup+quiesce" if hold == "catchup" else hold
    params = {**req.to_params(), **tuning}
    # refuses here what the agent would refuse; then the destination's agent grants the source node this
    # migration (create), and the activity starts with the grant's id
    return start_granted(node_for, src.options.node, KIND, params)


def _dest_dataset(rec_result: dict[str, Any]) -> DatasetName:
    from ..zfs.names import parse_dataset

    return parse_dataset(str(rec_result["destination"]).split(":", 1)[1])


class Switch:
    """The controller's part of one migration, for a caller that follows the activity itself (the
    command line: progress bar, Ctrl-C): made as soon as the activity runs (it keeps the source's export
    to put back or move), :meth:`at_hold` with every record the caller sees (at the hold before the
    quiesce it unexports the source and resumes the activity), :meth:`finish` once it ends (or to wait
    for it: it calls :meth:`at_hold` itself)."""

    def __init__(
        self,
        src: ZfsNfsDriver,
        dst: ZfsNfsDriver,
        volume: Volume,
        act: BackendActivity,
        *,
        entry: ExportEntry | bool | None = True,
    ) -> None:
        """``entry``: the source's export as it was before the migration (True: read it now; a flow
        resumed after its controller died passes the one it saved, the source being unexported since)."""
        self.src, self.dst, self.volume, self.act = src, dst, volume, act
        self.src_ds = src.dataset_of(volume)
        self.entry = src.exports.get(self.src_ds) if entry is True else entry or None
        self.unexported = False

    def at_hold(self, rec: Any) -> None:
        """When the activity stopped before its quiesce: unexport the source (no NFS client can write
        any more; the grants are kept here) and let it go on. Anything else: nothing."""
        held = rec.state == "suspended" and rec.result.get("held") == "quiesce"
        if held and rec.result.get("phase") == "quiesce" and not self.unexported:
            self.src.exports.remove(self.src_ds)
            self.unexported = True
            self.act.resume()

    def wait(self) -> Any:
        """Wait for the activity to end, acting at its hold; returns the last record."""
        while True:
            rec = self.act.wait_record(1.0)
            if rec.state in ("succeeded", "failed", "cancelled"):
                return rec
            self.at_hold(rec)

    def finish(self) -> dict[str, Any]:
        """Wait for the activity, then switch the export to ``dst`` and remove the source copy. Returns the
        model update. Raises ``MigrationFailed`` (the volume stays on the source) when the activity did
        not succeed or the switch had to be undone."""
        return _switch(self, self.wait())

    def switched(self) -> dict[str, Any] | None:
        """The model update when this migration's switch already happened (a controller that died after
        it, its flow resumed): the source copy is gone (it is destroyed only after the destination was
        exported) and the destination is this activity's; its export is made sure of. Else None."""
        dst_ds = self.dst.dataset_of(self.volume)
        if self.src.zfs.exists(self.src_ds) or not self.dst.zfs.exists(dst_ds):
            return None
        if self.dst.zfs.get(dst_ds, [RECEIVER_PROP]).get(RECEIVER_PROP) != self.act.id:
            return None
        if self.entry is not None and self.dst.exports.get(dst_ds) is None:
            self.dst.export(dst_ds, (), self.entry.attachments)
        clients = list(self.entry.clients) if self.entry is not None else []
        return {"provider_location": self.dst.location(dst_ds), "quiesce_s": None, "clients": clients}


def _switch(sw: Switch, rec: Any) -> dict[str, Any]:
    src, dst, volume, act, entry = sw.src, sw.dst, sw.volume, sw.act, sw.entry
    src_ds, dst_ds = sw.src_ds, dst.dataset_of(volume)
    clients = entry.clients if entry is not None else ()
    attachments = entry.attachments if entry is not None else ()
    if rec.state != "succeeded":
        if entry is not None:
            src.export(src_ds, (), attachments)  # as it was (the activity gave the source its mount back)
        why = rec.error or "no error"
        raise MigrationFailed(
            f"migration {act.id} {rec.state}: {why}; the volume stays on {src.options.node}"
        )
    res = rec.result
    if _dest_dataset(res) != dst_ds:
        raise MigrationFailed(f"migration {act.id} went to {res['destination']}, not {dst_ds}")
    final = parse_snapshot(res["snapshots"][-1].replace(str(src_ds), str(dst_ds), 1))
    exported = False
    try:
        if dst.zfs.get_int(final, "guid") != int(res["final_guid"]):
            raise MigrationFailed(f"{dst.options.node}:{final} is not the snapshot the migration sent")
        if dst.zfs.get(dst_ds, [RECEIVER_PROP]).get(RECEIVER_PROP) != act.id:
            raise MigrationFailed(f"{dst.options.node}:{dst_ds} is not marked as made by {act.id}")
        dst.zfs.inherit(dst_ds, "readonly")
        _mounted(dst, dst_ds)  # OpenZFS receives unmounted (peer-exec's `recv -u`); the export needs it
        size = layout.size_bytes(src.zfs, src_ds) or volume.size * GIB
        for k, v in layout.space_props(size, dst.options.thin).items():
            dst.zfs.set(dst_ds, k, v)
        if entry is not None:
            dst.export(dst_ds, (), attachments)
            exported = True
        switched = time.time()
    except BaseException:
        _undo(src, dst, volume, act.id, res, exported, attachments if entry is not None else None)
        raise
    origin = src.zfs.get(src_ds, ["origin"]).get("origin", "-")
    src.exports.remove(src_ds)
    try:
        src.destroy_dataset(src_ds)
        clones.drop_clone_origin(src.zfs, src.options, origin)
    except ZfsBackendError as e:  # the volume lives on dst now; a leftover is only space
        log.error("%s: could not remove the old copy %s: %s", src.options.node, src_ds, e)
    for s in dst.zfs.list_snapshots(dst_ds):  # this migration's own (its id in the name), none else
        if s.snap.startswith(f"{SNAP_PREFIX}{act.id}-"):
            dst.zfs.destroy(s.name, deadline=float(dst.options.destroy_deadline), missing_ok=True)
    quiesce = switched - float(res["quiesced_at"]) if res.get("quiesced_at") else None
    log.info(
        "%s -> %s: %s moved (quiesce %.2f s)", src.options.node, dst.options.node, volume.id, quiesce or 0.0
    )
    return {"provider_location": dst.location(dst_ds), "quiesce_s": quiesce, "clients": list(clients)}


def _mounted(d: ZfsNfsDriver, ds: DatasetName) -> None:
    if not d.zfs.is_mounted(ds):
        d.zfs.mount(ds)


def _undo(
    src: ZfsNfsDriver,
    dst: ZfsNfsDriver,
    volume: Volume,
    holder: str,
    res: dict[str, Any],
    exported: bool,
    attachments: tuple[Attachment, ...] | None,
) -> None:
    """Put the volume back on the source: mounted, its own writability and export (``attachments``: its
    grants, None when it was not exported), no copy or export on the destination."""
    src_ds, dst_ds = src.dataset_of(volume), dst.dataset_of(volume)
    steps: list[Callable[[], object]] = []
    if exported:
        steps.append(lambda: dst.exports.remove(dst_ds))
    if dst.zfs.exists(dst_ds) and dst.zfs.get(dst_ds, [RECEIVER_PROP]).get(RECEIVER_PROP) == holder:
        steps.append(lambda: dst.destroy_dataset(dst_ds))
    steps.append(lambda: restore_readonly(src.zfs, src_ds, res.get("readonly_was")))
    if res.get("unmounted"):
        steps.append(lambda: _mounted(src, src_ds))
    if attachments is not None:
        steps.append(lambda: src.export(src_ds, (), attachments))
    snaps = [parse_snapshot(n) for n in res.get("snapshots", [])]
    for snap in snaps:
        steps.append(lambda s=snap: src.zfs.destroy(s, missing_ok=True))  # type: ignore[misc]
    for step in steps:
        try:
            step()
        except ZfsBackendError as e:
            log.error("%s: undoing the migration of %s: %s", src.options.node, volume.id, e)


def _export_addresses(src: ZfsNfsDriver) -> dict[str, str]:
    """Export address per inventory node."""
    from ..hosts.inventory import load_inventory
    from .options import NodeOptions

    inv = load_inventory(src.settings.inventory)
    opts = {n: NodeOptions.from_vars(n, inv.node(n).vars, address=inv.node(n).address) for n in inv.names}
    return {n: str(o.export_address) for n, o in opts.items()}


def resolve_target(src: ZfsNfsDriver, host: Any) -> str | None:
    """The node of this driver family Cinder's ``host`` (or a node name) names, None when it names none
    or the source's own node (Cinder then migrates generically)."""
    target = target_node(host, _export_addresses(src))
    return None if target == src.options.node else target
