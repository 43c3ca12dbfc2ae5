"""``ZfsNfsDriver``: the reference volume driver, with Cinder's method names, arguments and returns.

Volume ``V`` is the filesystem ``<parent>/volume-<id>`` holding one sparse file ``volume`` of V's size,
sized by ``refquota`` (and ``refreservation`` when thick): see :mod:`.layout`. Each volume filesystem is
its own NFS export (never the parent). Volumes from a snapshot are ZFS clones, and cloning a volume clones
a snapshot ``@clone-<new id>`` taken for it; deleting a volume promotes its dependents: see :mod:`.clones`.

Every name is validated before any command; a create that fails half way undoes what it did, so a
refused or failed call leaves the node as it was. The driver only touches ``zfs`` (typed verbs), the
node's ``volume`` files and the server's exports file (``nfs.GaneshaExports``), and delegates
``snapshot_replicate`` to :mod:`zfs_backend.replication.api`.

Exports grant nobody until ``initialize_connection`` grants the connector's address, counted per
attachment (``terminate_connection`` ends one; the address is revoked with its last attachment): see
:mod:`.access` and :mod:`.nfs`. The ``volume`` file is only ever sized, chowned and chmodded as a
regular file, on the node (:mod:`.volume_file`).

Version history: 1.0.0 - first version (volumes, snapshots, clones, extend, NFS exports via
nfs-ganesha, stats with backend-activity capabilities, snapshot_replicate). 1.1.0 - exports are granted
per connector address; root squashing and the volume file's mode follow the secure_file_* options.
1.2.0 - replication v2.1 (replication_device, failover_host), stateless_volume_operations option.
1.3.0 - migrate_volume (a ``migrate`` backend activity, the volume in use until a short quiesce).
1.4.0 - grants counted per attachment (multiattach from one host), exports changed under a node-side
lock, volume file operations refuse anything but a regular file, loopback clients refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..activity.handle import BackendActivity
from ..config import Settings, load_settings
from ..errors import ConfigError, DatasetNotFound, ZfsBackendError
from ..hosts.base import Host
from ..zfs.api import Zfs
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, validate_node
from . import access, clones, layout
from .clones import CLONE_SNAP_PREFIX as CLONE_SNAP_PREFIX  # kept importable from here
from .errors import InvalidSize, VolumeExists, VolumeNotFound
from .layout import SIZE_PROPERTY, VOLUME_FILE, quota_for
from .models import GIB, Snapshot, Volume, check_size
from .nfs import Attachment, GaneshaExports
from .options import NodeOptions
from .stats import build_stats, read_facts

__all__ = ["SIZE_PROPERTY", "VOLUME_FILE", "ZfsNfsDriver", "quota_for"]

log = logging.getLogger("zfs_backend.driver")


class ZfsNfsDriver:
    """A Cinder-shaped driver for the volumes of one storage node (one backend = one node)."""

    VERSION = "1.4.0"

    def __init__(
        self,
        options: NodeOptions,
        host: Host | None = None,
        *,
        settings: Settings | None = None,
        activity_kinds: Callable[[], list[str]] | None = None,
        replicate: Callable[..., BackendActivity] | None = None,
    ) -> None:
        self.options = options
        self.host = host
        self.settings = settings
        self._activity_kinds = activity_kinds
        self._replicate = replicate
        self._zfs: Zfs | None = None
        self._exports: GaneshaExports | None = None
        self._stats: dict[str, Any] = {}
        self._address = options.export_address

    # ---- setup ---------------------------------------------------------------------------------

    def _settings(self) -> Settings:
        if self.settings is None:
            self.settings = load_settings()
        return self.settings

    def do_setup(self, context: Any = None) -> None:
        """Connect to the node (inventory + SSH unless a host was given) and make sure the parent
        dataset exists."""
        if self.host is None:
            from ..hosts.inventory import load_inventory

            inv = load_inventory(self._settings().inventory)
            spec = inv.node(self.options.node)
            self.host = inv.connect(self.options.node, self._settings())
            if self._address is None:
                self._address = spec.address
        if self._address is None:
            raise ConfigError(f"{self.options.node}: no export_address for the NFS exports")
        self._zfs = Zfs(self.host)
        o = self.options
        self._exports = GaneshaExports(
            self.host, o.exports_file, o.ganesha_pid_file, o.nfs_versions, o.export_security, o.node_bin
        )
        parent = self.options.parent_dataset
        if not self._zfs.exists(parent):
            self._zfs.create(parent, parents=True)

    @property
    def zfs(self) -> Zfs:
        if self._zfs is None:
            raise ConfigError("the driver is not set up: call do_setup() first")
        return self._zfs

    @property
    def exports(self) -> GaneshaExports:
        if self._exports is None:
            raise ConfigError("the driver is not set up: call do_setup() first")
        return self._exports

    def check_for_setup_error(self) -> None:
        """The parent is a mounted filesystem, the NFS server is running with our exports file, and the
        node's ``zfs-backend`` (which changes that file and the volume files) runs."""
        parent = self.options.parent_dataset
        try:
            props = self.zfs.get(parent, ["type", "mounted"])
        except DatasetNotFound:
            raise ConfigError(f"{self.options.node}: parent dataset {parent} does not exist") from None
        if props.get("type") != "filesystem" or props.get("mounted") != "yes":
            raise ConfigError(f"{self.options.node}: {parent} is not a mounted filesystem")
        if self.exports.server_pid() is None:
            raise ConfigError(
                f"{self.options.node}: nfs-ganesha is not running "
                f"(no live pid in {self.options.ganesha_pid_file})"
            )
        self.exports.entries()  # readable
        res = self.zfs.host.run([self.options.node_bin, "--version"], check=False)
        if res.returncode != 0:
            why = (res.err_text.strip().splitlines() or [f"exit {res.returncode}"])[-1]
            raise ConfigError(f"{self.options.node}: {self.options.node_bin} does not run there: {why}")
        _ = self.zfs.dialect

    # ---- names and files ----------------------------------------------------------------------

    def _dataset(self, volume: Volume) -> DatasetName:
        return layout.volume_dataset(self.options.parent_dataset, volume)

    def _snapshot_name(self, snapshot: Snapshot) -> SnapshotName:
        return layout.snapshot_name(self.options.parent_dataset, snapshot)

    def _mountpoint(self, ds: DatasetName) -> str:
        return layout.mountpoint(self.zfs, self.options.node, ds)

    def _location(self, ds: DatasetName) -> str:
        return f"{self._address}:{self._mountpoint(ds)}"

    def _require(self, ds: DatasetName, what: str) -> None:
        if not self.zfs.exists(ds):
            raise VolumeNotFound(f"{what} not found on {self.options.node} ({ds})")

    def _destroy(self, ds: DatasetName) -> None:
        self.zfs.destroy(ds, recursive=True, deadline=float(self.options.destroy_deadline), missing_ok=True)

    def _undo(self, ds: DatasetName, exported: bool, extra: SnapshotName | None = None) -> None:
        """Best-effort rollback of a half-made volume."""
        for step in (
            (lambda: self.exports.remove(ds)) if exported else None,
            lambda: self._destroy(ds),
            (lambda: self.zfs.destroy(extra, missing_ok=True)) if extra is not None else None,
        ):
            if step is None:
                continue
            try:
                step()
            except ZfsBackendError as e:
                log.error("%s: rollback of %s incomplete: %s", self.options.node, ds, e)

    def _export(
        self, ds: DatasetName, clients: tuple[str, ...] = (), attachments: tuple[Attachment, ...] = ()
    ) -> None:
        """The volume file's owner and mode, then the export (granting ``attachments`` and the default
        attachments of ``clients`` only)."""
        layout.set_file_access(self.zfs, self.options, ds)
        self.exports.add(ds, self._mountpoint(ds), clients, attachments)

    def _finish_create(
        self, ds: DatasetName, size_bytes: int, grow: bool, extra: SnapshotName | None = None
    ) -> dict[str, Any]:
        """After ``zfs create``/``clone``: size the file, export; undo everything on failure."""
        exported = False
        try:
            if grow:
                layout.truncate(self.zfs, self.options, ds, size_bytes)
            self._export(ds)
            exported = True
            return {"provider_location": self._location(ds)}
        except BaseException:
            self._undo(ds, exported, extra)
            raise

    def _absent(self, ds: DatasetName, volume: Volume) -> None:
        if self.zfs.exists(ds):
            raise VolumeExists(f"volume {volume.id} already exists on {self.options.node} ({ds})")

    # ---- volumes -------------------------------------------------------------------------------

    def create_volume(self, volume: Volume) -> dict[str, Any]:
        """A new empty volume. Returns ``{"provider_location": "ADDR:/path"}``."""
        size = check_size(volume.size)
        ds = self._dataset(volume)
        self._absent(ds, volume)
        size_bytes = size * GIB
        layout.check_capacity(self.zfs, self.options, size_bytes)
        self.zfs.create(ds, layout.space_props(size_bytes, self.options.thin))
        return self._finish_create(ds, size_bytes, grow=True)

    def create_volume_from_snapshot(self, volume: Volume, snapshot: Snapshot) -> dict[str, Any]:
        """A clone of ``snapshot`` of ``volume.size`` GiB (not smaller than the snapshot's volume)."""
        size = check_size(volume.size)
        snap = self._snapshot_name(snapshot)
        ds = self._dataset(volume)
        if size < snapshot.volume_size:
            raise InvalidSize(
                f"volume size {size} GiB is smaller than the snapshot's {snapshot.volume_size} GiB"
            )
        if not self.zfs.exists(snap):
            raise VolumeNotFound(f"snapshot {snapshot.id} not found on {self.options.node} ({snap})")
        self._absent(ds, volume)
        size_bytes = size * GIB
        layout.check_capacity(self.zfs, self.options, size_bytes)
        old = layout.size_bytes(self.zfs, snap.dataset) or snapshot.volume_size * GIB
        self.zfs.clone(snap, ds, layout.space_props(size_bytes, self.options.thin))
        return self._finish_create(ds, size_bytes, grow=size_bytes > old)

    def create_cloned_volume(self, volume: Volume, src_vref: Volume) -> dict[str, Any]:
        """A clone of ``src_vref`` now, through a snapshot ``@clone-<volume id>`` kept for it."""
        size = check_size(volume.size)
        src = self._dataset(src_vref)
        ds = self._dataset(volume)
        self._require(src, f"source volume {src_vref.id}")
        old = layout.size_bytes(self.zfs, src) or src_vref.size * GIB
        if size * GIB < old:
            raise InvalidSize(f"volume size {size} GiB is smaller than the source's {old / GIB:g} GiB")
        self._absent(ds, volume)
        size_bytes = size * GIB
        layout.check_capacity(self.zfs, self.options, size_bytes)
        snap = clones.clone_snapshot(src, volume.id)
        self.zfs.snapshot(snap)
        try:
            self.zfs.clone(snap, ds, layout.space_props(size_bytes, self.options.thin))
        except BaseException:
            self.zfs.destroy(snap, missing_ok=True)
            raise
        return self._finish_create(ds, size_bytes, grow=size_bytes > old, extra=snap)

    def extend_volume(self, volume: Volume, new_size: int) -> None:
        """Grow the ``volume`` file and the quota to ``new_size`` GiB."""
        new = check_size(new_size, "new size")
        ds = self._dataset(volume)
        self._require(ds, f"volume {volume.id}")
        current = layout.size_bytes(self.zfs, ds) or volume.size * GIB
        if new * GIB <= current:
            raise InvalidSize(
                f"cannot extend volume {volume.id} to {new} GiB: it is {current / GIB:g} GiB already"
            )
        layout.check_capacity(self.zfs, self.options, new * GIB - current)
        layout.resize(self.zfs, self.options, ds, current, new * GIB)

    def delete_volume(self, volume: Volume) -> None:
        """Unexport and destroy. A missing volume is already deleted (Cinder's convention). Refused while
        it has snapshots of its own; volumes cloned from it are promoted first."""
        ds = self._dataset(volume)
        if not self.zfs.exists(ds):
            log.info("%s: volume %s is already gone", self.options.node, ds)
            self.exports.remove(ds)
            return
        clones.refuse_own_snapshots(self.zfs, ds, volume.id)
        origin = self.zfs.get(ds, ["origin"]).get("origin", "-")
        clones.promote_dependents(self.zfs, self.options, ds, volume.id)
        was_exported = self.exports.remove(ds)
        try:
            self._destroy(ds)
        except BaseException:
            if was_exported is not None:
                self.exports.add(ds, self._mountpoint(ds), attachments=was_exported.attachments)
            raise
        clones.drop_clone_origin(self.zfs, self.options, origin)

    # ---- snapshots -----------------------------------------------------------------------------

    def create_snapshot(self, snapshot: Snapshot) -> dict[str, Any] | None:
        snap = self._snapshot_name(snapshot)
        self._require(snap.dataset, f"volume {snapshot.volume_id}")
        if self.zfs.exists(snap):
            raise VolumeExists(f"snapshot {snapshot.id} already exists ({snap})")
        self.zfs.snapshot(snap)
        return None

    def delete_snapshot(self, snapshot: Snapshot, *, deferred: bool = False) -> None:
        """Destroy the snapshot (a missing one is gone already); while volumes are cloned from it refused,
        or with ``deferred`` (Cinder's contract) destroyed deferred: :func:`.clones.destroy_snapshot`."""
        snap = self._snapshot_name(snapshot)
        clones.destroy_snapshot(self.zfs, self.options, snap, snapshot.id, deferred=deferred)

    # ---- exports and connections ---------------------------------------------------------------

    def create_export(
        self, context: Any, volume: Volume, connector: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Make sure the volume is exported (idempotent: its grants stay; a new export grants nobody).
        Returns the ``provider_location``."""
        ds = self._dataset(volume)
        self._require(ds, f"volume {volume.id}")
        self._export(ds)
        return {"provider_location": self._location(ds)}

    def ensure_export(self, context: Any, volume: Volume) -> dict[str, Any]:
        return self.create_export(context, volume, None)

    def remove_export(self, context: Any, volume: Volume) -> None:
        """Unexport the volume (its data stays; its grants go)."""
        self.exports.remove(self._dataset(volume))

    def initialize_connection(self, volume: Volume, connector: dict[str, Any] | None) -> dict[str, Any]:
        """Record an attachment of ``connector["ip"]`` and grant the address read-write access to the
        volume's export; returns ``{"driver_volume_type": "nfs", "data": {"export": "ADDR:/path",
        "name": "volume", ...}}`` (:func:`.access.connect`)."""
        return access.connect(self, volume, connector)

    def terminate_connection(self, volume: Volume, connector: dict[str, Any] | None, **kwargs: Any) -> bool:
        """End ``connector``'s attachment (a ``None`` connector, Cinder's force detach: every one);
        True when the address stays granted through another (:func:`.access.disconnect`)."""
        return access.disconnect(self, volume, connector)

    def release_export(self, context: Any, volume: Volume) -> bool:
        """Unexport the volume only when no attachment of it is left (decided under the node's lock):
        what a caller that cannot know about the other attachments (Cinder's ``remove_export`` after a
        detach) may do. Returns whether it was unexported."""
        return self.exports.remove_unattached(self._dataset(volume)) is not None

    # ---- stats ---------------------------------------------------------------------------------

    def get_volume_stats(self, refresh: bool = False) -> dict[str, Any]:
        """Cinder's stats dict (cached; ``refresh`` re-reads the node)."""
        if refresh or not self._stats:
            self._update_volume_stats()
        return dict(self._stats)

    def _kinds(self) -> tuple[str, ...] | None:
        try:
            if self._activity_kinds is not None:
                return tuple(self._activity_kinds())
            from ..rpc.connect import connect_node

            node = connect_node(self.options.node, self._settings())
            try:
                return tuple(node.client.kinds())
            finally:
                node.close()
        except ZfsBackendError as e:
            log.warning("%s: cannot ask the agent for its activity kinds: %s", self.options.node, e)
            return None

    def _update_volume_stats(self) -> None:
        facts = read_facts(self.zfs, self.options.parent_dataset, self._kinds())
        self._stats = build_stats(self.options, facts, self.VERSION, str(self._address))
        self._stats["updated_at"] = time.time()

    # ---- replication and migration -------------------------------------------------------------

    def migrate_volume(self, ctxt: Any, volume: Volume, host: Any, **kw: Any) -> tuple[bool, Any]:
        """Cinder's driver-assisted migration, as a ``migrate`` backend activity: see :mod:`.migration`."""
        from .migration import migrate_volume

        return migrate_volume(self, volume, host, **kw)

    def snapshot_replicate(
        self,
        snapshot: Snapshot,
        source_server: str | None,
        destination_server: str,
        force_full_copy: bool = False,
        *,
        destination_parent: str | None = None,
        **kwargs: Any,
    ) -> BackendActivity:
        """Replicate ``snapshot`` from ``source_server`` (default: this node) to the same volume name under
        ``destination_parent`` (default: this driver's parent) on ``destination_server``; returns the
        backend activity (see ``zfs_backend.replication.api.snapshot_replicate``)."""
        snap = self._snapshot_name(snapshot)
        source = validate_node(source_server or self.options.node)
        dest_node = validate_node(destination_server)
        dest_parent = parse_dataset(destination_parent or self.options.parent)
        if not self.zfs.exists(snap):
            raise VolumeNotFound(f"snapshot {snapshot.id} not found on {self.options.node} ({snap})")
        dest = dest_parent.child(snap.dataset.components[-1])
        if self._replicate is None:
            self._ensure_remote_parent(dest_node, dest_parent)
            from ..replication.api import snapshot_replicate

            return snapshot_replicate(
                str(snap), source, f"{dest_node}:{dest}", force_full_copy, settings=self._settings(), **kwargs
            )
        return self._replicate(str(snap), source, f"{dest_node}:{dest}", force_full_copy, **kwargs)

    def failover_host(
        self, context: Any, volumes: list[Volume], secondary_id: str | None = None, groups: Any = None
    ) -> Any:
        """Replication v2.1: every replicated volume forced over (:func:`.failover.failover_host`)."""
        from .failover import failover_host

        return failover_host(self, volumes, secondary_id)

    def _ensure_remote_parent(self, node: str, parent: DatasetName) -> None:
        from ..hosts.inventory import load_inventory

        with load_inventory(self._settings().inventory).connect(node, self._settings()) as h:
            z = Zfs(h)
            if not z.exists(parent):
                z.create(parent, parents=True)
