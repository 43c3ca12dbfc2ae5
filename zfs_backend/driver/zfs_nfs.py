"""``ZfsNfsDriver``: the reference volume driver, with Cinder's method names, arguments and returns.

Volume ``V`` is the filesystem ``<parent>/volume-<id>`` holding one sparse file ``volume`` of V's size,
sized by ``refquota`` (and ``refreservation`` when thick): see :mod:`.layout`. Each volume filesystem is
its own NFS export (never the parent). Volumes from a snapshot are ZFS clones, and cloning a volume clones
a snapshot ``@clone-<new id>`` taken for it; deleting a volume promotes its dependents: see :mod:`.clones`.

Every name is validated before any command; a create that fails half way undoes what it did, so a
refused or failed call leaves the node as it was. The driver only touches ``zfs`` (typed verbs), the
node's ``volume`` files and the server's exports file (``nfs.GaneshaExports``); what reaches further
(``snapshot_replicate``, the agent's kinds) is :mod:`.remote`. Cinder's ``failover_host`` is
:mod:`.failover`'s, its ``migrate_volume`` the migration flow's on :mod:`.migration`, built on the
public surface here (``for_node``, ``dataset_of``, ``location``, ``export``, ``require``...); nobody
touches its privates.

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
from ..errors import ConfigError, ZfsBackendError
from ..hosts.base import Host
from ..zfs.api import Zfs
from ..zfs.names import DatasetName, SnapshotName, validate_node
from . import access, clones, layout, remote
from .errors import InvalidSize, VolumeExists, VolumeNotFound
from .layout import SIZE_PROPERTY, VOLUME_FILE, quota_for
from .models import GIB, Snapshot, Volume, check_size
from .nfs import Attachment, GaneshaExports
from .options import NodeOptions
from .setup_check import check_node
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
        self._settings = settings
        self._activity_kinds = activity_kinds
        self._replicate = replicate
        self._zfs: Zfs | None = None
        self._exports: GaneshaExports | None = None
        self._stats: dict[str, Any] = {}
        self._address = options.export_address

    @classmethod
    def for_node(cls, settings: Settings, node: str, *, setup: bool = True, **changes: Any) -> ZfsNfsDriver:
        """The one way to build a driver for the inventory node ``node``: its options from its inventory
        variables and address, ``changes`` (``NodeOptions`` fields: a backend's own ``parent``, ...) in
        their place; set up (connected, its parent dataset made sure of) unless ``setup`` is False. The
        volume service, the Cinder adapter, a failover's standby and a migration's destination use it."""
        from ..hosts.inventory import load_inventory

        validate_node(node)
        spec = load_inventory(settings.inventory).node(node)
        options = NodeOptions.from_vars(node, spec.vars, address=spec.address)
        driver = cls(options.replace(**changes) if changes else options, settings=settings)
        if setup:
            driver.do_setup()
        return driver

    # ---- setup ---------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings the driver reaches nodes with (the environment's when none were given)."""
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self._settings = value

    def do_setup(self, context: Any = None) -> None:
        """Connect to the node (inventory + SSH unless a host was given) and make sure the parent
        dataset exists."""
        if self.host is None:
            from ..hosts.inventory import load_inventory

            inv = load_inventory(self.settings.inventory)
            spec = inv.node(self.options.node)
            self.host = inv.connect(self.options.node, self.settings)
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
    def is_set_up(self) -> bool:
        """Whether :meth:`do_setup` ran (a failover's old primary may never have been)."""
        return self.host is not None and self._zfs is not None

    @property
    def exports(self) -> GaneshaExports:
        if self._exports is None:
            raise ConfigError("the driver is not set up: call do_setup() first")
        return self._exports

    def check_for_setup_error(self) -> None:
        """The parent is a mounted filesystem, the NFS server is running with our exports file, and the
        node's ``zfs-backend`` (which changes that file and the volume files) runs."""
        check_node(self.zfs, self.exports, self.options)

    # ---- names, locations and exports (public: failover, migration, flows and jobs use them) ------

    def dataset_of(self, volume: Volume) -> DatasetName:
        """The filesystem of ``volume`` on this node (``<parent>/volume-<id>``)."""
        return layout.volume_dataset(self.options.parent_dataset, volume)

    def snapshot_of(self, snapshot: Snapshot) -> SnapshotName:
        """The ZFS snapshot of a volume snapshot on this node."""
        return layout.snapshot_name(self.options.parent_dataset, snapshot)

    def mountpoint(self, ds: DatasetName) -> str:
        """Where ``ds`` is mounted on the node (what its export serves)."""
        return layout.mountpoint(self.zfs, self.options.node, ds)

    def location(self, ds: DatasetName) -> str:
        """The ``provider_location`` of the volume filesystem ``ds``: ``ADDR:/mountpoint``."""
        return f"{self._address}:{self.mountpoint(ds)}"

    def require(self, ds: DatasetName, what: str) -> None:
        """``VolumeNotFound`` (naming ``what``) unless ``ds`` exists on the node."""
        if not self.zfs.exists(ds):
            raise VolumeNotFound(f"{what} not found on {self.options.node} ({ds})")

    def export(
        self, ds: DatasetName, clients: tuple[str, ...] = (), attachments: tuple[Attachment, ...] = ()
    ) -> None:
        """The volume file's owner and mode, then the export (granting ``attachments`` and the default
        attachments of ``clients`` only; an existing export keeps its grants)."""
        layout.set_file_access(self.zfs, self.options, ds)
        self.exports.add(ds, self.mountpoint(ds), clients, attachments)

    def destroy_dataset(self, ds: DatasetName) -> None:
        """``ds`` and everything under it destroyed (gone already: nothing), within the node's
        ``destroy_deadline``."""
        self.zfs.destroy(ds, recursive=True, deadline=float(self.options.destroy_deadline), missing_ok=True)

    def _undo(self, ds: DatasetName, exported: bool, extra: SnapshotName | None = None) -> None:
        """Best-effort rollback of a half-made volume."""
        for step in (
            (lambda: self.exports.remove(ds)) if exported else None,
            lambda: self.destroy_dataset(ds),
            (lambda: self.zfs.destroy(extra, missing_ok=True)) if extra is not None else None,
        ):
            if step is None:
                continue
            try:
                step()
            except ZfsBackendError as e:
                log.error("%s: rollback of %s incomplete: %s", self.options.node, ds, e)

    def _finish_create(
        self, ds: DatasetName, size_bytes: int, grow: bool, extra: SnapshotName | None = None
    ) -> dict[str, Any]:
        """After ``zfs create``/``clone``: size the file, export; undo everything on failure."""
        exported = False
        try:
            if grow:
                layout.truncate(self.zfs, self.options, ds, size_bytes)
            self.export(ds)
            exported = True
            return {"provider_location": self.location(ds)}
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
        ds = self.dataset_of(volume)
        self._absent(ds, volume)
        size_bytes = size * GIB
        layout.check_capacity(self.zfs, self.options, size_bytes)
        self.zfs.create(ds, layout.space_props(size_bytes, self.options.thin))
        return self._finish_create(ds, size_bytes, grow=True)

    def create_volume_from_snapshot(self, volume: Volume, snapshot: Snapshot) -> dict[str, Any]:
        """A clone of ``snapshot`` of ``volume.size`` GiB (not smaller than the snapshot's volume)."""
        size = check_size(volume.size)
        snap = self.snapshot_of(snapshot)
        ds = self.dataset_of(volume)
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
        src = self.dataset_of(src_vref)
        ds = self.dataset_of(volume)
        self.require(src, f"source volume {src_vref.id}")
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
        ds = self.dataset_of(volume)
        self.require(ds, f"volume {volume.id}")
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
        ds = self.dataset_of(volume)
        if not self.zfs.exists(ds):
            log.info("%s: volume %s is already gone", self.options.node, ds)
            self.exports.remove(ds)
            return
        clones.refuse_own_snapshots(self.zfs, ds, volume.id)
        origin = self.zfs.get(ds, ["origin"]).get("origin", "-")
        clones.promote_dependents(self.zfs, self.options, ds, volume.id)
        was_exported = self.exports.remove(ds)
        try:
            self.destroy_dataset(ds)
        except BaseException:
            if was_exported is not None:
                self.exports.add(ds, self.mountpoint(ds), attachments=was_exported.attachments)
            raise
        clones.drop_clone_origin(self.zfs, self.options, origin)

    # ---- snapshots -----------------------------------------------------------------------------

    def create_snapshot(self, snapshot: Snapshot) -> dict[str, Any] | None:
        snap = self.snapshot_of(snapshot)
        self.require(snap.dataset, f"volume {snapshot.volume_id}")
        if self.zfs.exists(snap):
            raise VolumeExists(f"snapshot {snapshot.id} already exists ({snap})")
        self.zfs.snapshot(snap)
        return None

    def delete_snapshot(self, snapshot: Snapshot, *, deferred: bool = False) -> None:
        """Destroy the snapshot (a missing one is gone already); while volumes are cloned from it refused,
        or with ``deferred`` (Cinder's contract) destroyed deferred: :func:`.clones.destroy_snapshot`."""
        snap = self.snapshot_of(snapshot)
        clones.destroy_snapshot(self.zfs, self.options, snap, snapshot.id, deferred=deferred)

    # ---- exports and connections ---------------------------------------------------------------

    def create_export(
        self, context: Any, volume: Volume, connector: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Make sure the volume is exported (idempotent: its grants stay; a new export grants nobody).
        Returns the ``provider_location``."""
        ds = self.dataset_of(volume)
        self.require(ds, f"volume {volume.id}")
        self.export(ds)
        return {"provider_location": self.location(ds)}

    def ensure_export(self, context: Any, volume: Volume) -> dict[str, Any]:
        return self.create_export(context, volume, None)

    def remove_export(self, context: Any, volume: Volume) -> None:
        """Unexport the volume (its data stays; its grants go)."""
        self.exports.remove(self.dataset_of(volume))

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
        return self.exports.remove_unattached(self.dataset_of(volume)) is not None

    # ---- stats ---------------------------------------------------------------------------------

    def get_volume_stats(self, refresh: bool = False) -> dict[str, Any]:
        """Cinder's stats dict (cached; ``refresh`` re-reads the node)."""
        if refresh or not self._stats:
            self._update_volume_stats()
        return dict(self._stats)

    def _update_volume_stats(self) -> None:
        facts = read_facts(
            self.zfs,
            self.options.parent_dataset,
            remote.activity_kinds(self.options.node, self.settings, self._activity_kinds),
        )
        self._stats = build_stats(self.options, facts, self.VERSION, str(self._address))
        self._stats["updated_at"] = time.time()

    # ---- replication (failover_host and migrate_volume: :mod:`.failover`, :mod:`.migration`) -------

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
        backend activity (:func:`.remote.snapshot_replicate`)."""
        return remote.snapshot_replicate(
            self,
            snapshot,
            source_server,
            destination_server,
            force_full_copy,
            destination_parent,
            self._replicate,
            **kwargs,
        )
