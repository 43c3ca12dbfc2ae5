"""Optional adapter: ``volume_driver = zfs_backend.cinder.ZfsNfsDriver`` in a real ``cinder.conf``.

Needs the ``cinder`` package (extra ``cinder``: ``pip install 'zfs_backend[cinder]'``; the project's tests
use a separate virtualenv ``.venv-cinder``, ``scripts/bootstrap --cinder``); the rest of the project never
imports it. The class subclasses ``cinder.volume.driver.VolumeDriver`` and delegates each call to
:class:`zfs_backend.driver.ZfsNfsDriver`, converting Cinder's volume/snapshot objects to the driver's
dataclasses by their (identical) field names (a volume's storage by its ``name_id``, as Cinder's
``volume.name``), and this project's errors to Cinder's exceptions
(``VolumeIsBusy`` / ``SnapshotIsBusy`` for a refused delete, which Cinder's manager handles; a
snapshot with volumes made from it is not refused but deleted deferred, as Cinder's contract wants:
destroyed deferred on the node (``zfs destroy -d``: ZFS destroys it with its last clone);
``InvalidConfigurationValue`` for bad options; ``VolumeBackendAPIException`` for anything else).
Its options (``cinder.conf`` and the node's): :mod:`.options`.

Each ``initialize_connection`` grants the connector's ``ip`` access to the volume's export and
``terminate_connection`` revokes it once no other of Cinder's attachments of the volume is from that
address (multiattach: Cinder's ``volume_attachment`` records are counted, as its LVM driver does;
Cinder 29 passes the driver no attachment id); ``remove_export``, which Cinder calls after each detach,
unexports only a volume with no attachment left. Tested with cinder 29.0.0 under cinder-volume's
eventlet monkey patching (``tests/lab/test_cinder_adapter.py``) and inside real cinder-api,
-scheduler and -volume services (``scripts/cinder-up``, ``tests/cinder/``).

Backend activities: at each stats refresh the adapter publishes every volume's activity into the
volume's metadata key ``zfs_backend:activity`` and the running ones into the pool's capability
``running_activities`` (:mod:`zfs_backend.cinder.activities`).

Replication v2.1: a volume of a type with ``replication_enabled='<is> True'`` on a backend with
``replication_device`` entries is created ``replication_status: enabled``; ``failover_host`` fails such
volumes over to the standby, after which the backend serves every volume from the standby node (also
after a restart, from the ``active_backend_id`` Cinder passes). ``failover_host(secondary_id="default")``
fails back once the configured primary answers (``zfs_backend.driver.failback``: each failed-over
volume's copy there brought up to date from the standby, then promoted; ``replication_status``
``enabled`` again, or ``error`` for a volume that could not come back); refused while not failed over
or while the primary does not answer.

``migrate_volume`` runs the core driver's migration (:mod:`zfs_backend.driver.migration`) as the migration
flow; a destination that is not another node of this driver gets Cinder's ``(False, None)``: Cinder's own
host-assisted migration.
"""

from __future__ import annotations

import logging
from typing import Any

from cinder import exception  # type: ignore[import-not-found]
from cinder.volume import driver as cinder_driver  # type: ignore[import-not-found]

from ..config import Settings
from ..driver import ZfsNfsDriver as _Core
from ..driver.access import client_address, same_client_count
from ..driver.return_fence import ReturnFence
from .activities import RUNNING_KEY, ActivityPublisher
from .convert import VolumeBusy, replication_update
from .convert import attachments as _attachments
from .convert import cinder_errors as _cinder_errors
from .convert import loaded as _loaded
from .convert import snapshot as _snapshot
from .convert import storage_id as _storage_id
from .convert import volume as _volume
from .options import NAS_SECURITY_OPTS, ZFS_BACKEND_OPTS, core_for

log = logging.getLogger("zfs_backend.cinder")

__all__ = ["ZfsNfsDriver"]


class ZfsNfsDriver(cinder_driver.VolumeDriver):  # type: ignore[misc]
    VERSION = _Core.VERSION
    CI_WIKI_NAME = "zfs_backend"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.configuration is not None:
            self.configuration.append_config_values(ZFS_BACKEND_OPTS)
            self.configuration.append_config_values(NAS_SECURITY_OPTS)
        self.core: _Core | None = None
        self._activities: ActivityPublisher | None = None
        self._running: list[str] = []
        self._return_fence: ReturnFence | None = None
        # Cinder passes the service's active_backend_id (a replication_device's backend_id once failed
        # over, None or "" else): the node this backend serves its volumes from
        self._active_backend_id: str | None = kwargs.get("active_backend_id") or None
        self._context: Any = None
        self._reserve = False  # failed over: set up for the standby at the next call
        self._frozen = False  # cinder freeze-host: management operations refused until thaw-host

    @staticmethod
    def get_driver_options() -> list[Any]:
        return ZFS_BACKEND_OPTS

    def do_setup(self, context: Any) -> None:
        conf = self.configuration
        node = conf.safe_get("zfs_backend_node")
        if not node:
            raise exception.InvalidConfigurationValue(option="zfs_backend_node", value=node)
        self._context = context
        self._serve(node, self._active_backend_id)

    def _serve(self, node: str, active: str | None) -> None:
        """Set the core driver up for the node this backend serves from: its own ``node``, or after a
        failover the replication device ``active`` (the same parent, options and grants; the standby's
        address in every connection)."""
        with _cinder_errors(f"setting up {node}"):
            core, serving, settings = self._core_for(node, active)
            core.do_setup(self._context)
        self.core = core
        if getattr(self, "db", None) is not None:  # inside cinder-volume (the manager passes its db)
            parent = core.options.parent
            self._activities = ActivityPublisher(serving, parent, settings, str(self.host), self.db)

    def _core_for(self, node: str, active: str | None) -> tuple[_Core, str, Settings]:
        """The core driver for ``node`` (or the replication device ``active``), not set up: what it would
        serve from, and the settings (:func:`.options.core_for`)."""
        return core_for(self.configuration, node, active)

    def _c(self) -> _Core:
        if self._reserve:
            self._reserve = False
            self._serve(self.configuration.safe_get("zfs_backend_node"), self._active_backend_id)
        if self.core is None:
            raise exception.VolumeDriverException(message="zfs_backend: do_setup() has not run")
        return self.core

    def freeze_backend(self, context: Any) -> bool:
        """``cinder freeze-host``: Cinder's API refuses management operations on this backend's volumes
        and its scheduler places none here; the driver refuses them too (a request queued before the
        freeze): create, delete, extend, snapshots, clones and migration (``VolumeBusy``: a delete leaves
        the volume as it was). Attachments, exports and stats go on."""
        self._frozen = True
        return True

    def thaw_backend(self, context: Any) -> bool:
        """``cinder thaw-host``: management operations allowed again."""
        self._frozen = False
        return True

    def _m(self, what: str) -> _Core:
        """The core driver for a management operation: refused while frozen."""
        if self._frozen:
            raise VolumeBusy(f"the backend is frozen (cinder thaw-host): {what} refused")
        return self._c()

    def _replicated(self, volume: Any) -> dict[str, str]:
        return replication_update(volume, self._c().options.replication_devices)

    def check_for_setup_error(self) -> None:
        with _cinder_errors("setup check"):
            self._c().check_for_setup_error()

    def create_volume(self, volume: Any) -> dict[str, Any]:
        with _cinder_errors(f"create volume {volume.id}"):
            return {**self._m("create").create_volume(_volume(volume)), **self._replicated(volume)}

    def delete_volume(self, volume: Any) -> None:
        with _cinder_errors(f"delete volume {volume.id}", exception.VolumeIsBusy):
            self._m("delete").delete_volume(_volume(volume))

    def extend_volume(self, volume: Any, new_size: int) -> None:
        with _cinder_errors(f"extend volume {volume.id}"):
            self._m("extend").extend_volume(_volume(volume), int(new_size))

    def create_snapshot(self, snapshot: Any) -> dict[str, Any] | None:
        with _cinder_errors(f"create snapshot {snapshot.id}"):
            return self._m("snapshot").create_snapshot(_snapshot(snapshot))

    def delete_snapshot(self, snapshot: Any) -> None:
        with _cinder_errors(f"delete snapshot {snapshot.id}", exception.SnapshotIsBusy):
            # deferred: Cinder's volumes from a snapshot do not keep it (tempest deletes the snapshot
            # of a volume it just made from it, and waits for it to go)
            self._m("snapshot delete").delete_snapshot(_snapshot(snapshot), deferred=True)

    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> dict[str, Any]:
        with _cinder_errors(f"create volume {volume.id} from snapshot {snapshot.id}"):
            made = self._m("create from snapshot").create_volume_from_snapshot(
                _volume(volume), _snapshot(snapshot)
            )
            return {**made, **self._replicated(volume)}

    def create_cloned_volume(self, volume: Any, src_vref: Any) -> dict[str, Any]:
        with _cinder_errors(f"clone volume {src_vref.id} as {volume.id}"):
            made = self._m("clone").create_cloned_volume(_volume(volume), _volume(src_vref))
            return {**made, **self._replicated(volume)}

    def create_export(self, context: Any, volume: Any, connector: Any) -> dict[str, Any]:
        with _cinder_errors(f"export volume {volume.id}"):
            return self._c().create_export(context, _volume(volume), connector)

    def ensure_export(self, context: Any, volume: Any) -> dict[str, Any]:
        with _cinder_errors(f"export volume {volume.id}"):
            return self._c().ensure_export(context, _volume(volume))

    def remove_export(self, context: Any, volume: Any) -> None:
        """Cinder calls this after every detach (and after a failed connect), also while other
        attachments are left: the export goes only when no attachment of it is left on the node."""
        with _cinder_errors(f"unexport volume {volume.id}"):
            self._c().release_export(context, _volume(volume))

    def initialize_connection(self, volume: Any, connector: Any) -> dict[str, Any]:
        """Grant ``connector["ip"]`` through an attachment: ``connector["attachment_id"]`` when Cinder
        gives one (29.x does not: it adds the id to the answer only), else the client's default one."""
        with _cinder_errors(f"connect volume {volume.id}"):
            return self._c().initialize_connection(_volume(volume), connector)

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> bool:
        """Cinder's rule for a shared target (as its LVM driver): while another of Cinder's attachments
        of this volume is from the same address (``volume.volume_attachment``), the grant stays and
        the answer is True; the last one ends every attachment of the address. A ``None`` connector
        (force detach) ends all. Returns whether other attachments of the volume are left, so Cinder
        keeps the export for them."""
        with _cinder_errors(f"disconnect volume {volume.id}"):
            attachments = _attachments(volume)
            others = len(attachments) > 1
            if connector is None:
                self._c().terminate_connection(_volume(volume), None, **kwargs)
                return others
            client = client_address(connector)
            if same_client_count((_loaded(a, "connector") for a in attachments), client) > 1:
                return True
            plain = {k: v for k, v in dict(connector).items() if k != "attachment_id"}
            self._c().terminate_connection(_volume(volume), plain, **kwargs)
            return others

    def failover_host(
        self, context: Any, volumes: list[Any], secondary_id: str | None = None, groups: Any = None
    ) -> tuple[str, list[dict[str, Any]], list[Any]]:
        """Replication v2.1: fail every replicated volume over to ``secondary_id``, or back to the
        configured primary (``default``: :meth:`_fail_back`); Cinder's shapes (updates keyed by Cinder's
        volume ids, whatever their storage's ``name_id``)."""
        by_storage = {_storage_id(v): str(v.id) for v in volumes}
        if secondary_id == "default":
            return self._fail_back(context, volumes, by_storage)
        with _cinder_errors("failover_host"):
            core = self.core
            if core is None or self._reserve:
                # the primary may be gone, and with it do_setup (Cinder fails over an uninitialized
                # driver): its options are all a failover needs
                node = self.configuration.safe_get("zfs_backend_node")
                core = self._core_for(node, self._active_backend_id)[0]
            from ..driver import failover

            active, updates, group_updates = failover.failover_host(
                core, [_volume(v) for v in volumes], secondary_id
            )
        for u in updates:
            u["volume_id"] = by_storage.get(u["volume_id"], u["volume_id"])
        # from the next call on this backend serves from the standby (Cinder records active_backend_id
        # and passes it to the driver when the service restarts, where do_setup does the same)
        self._active_backend_id = active
        self._reserve = True
        return active, updates, group_updates

    def _fail_back(
        self, context: Any, volumes: list[Any], by_storage: dict[str, str]
    ) -> tuple[str, list[dict[str, Any]], list[Any]]:
        """``failover_host(secondary_id="default")``: every failed-over volume back to the configured
        primary (:mod:`zfs_backend.driver.failback`: its copy brought up to date from the standby, then
        promoted); refused when this backend is not failed over, or when the primary does not answer
        (nothing changed). From the next call on the backend serves from the primary again."""
        from ..driver.failback import fail_back

        node = self.configuration.safe_get("zfs_backend_node")
        active = self._active_backend_id
        if active in (None, "default"):
            raise exception.InvalidReplicationTarget(reason=f"{node}: not failed over, nothing to fail back")
        try:
            primary = self._core_for(node, None)[0]
            primary.do_setup(context)
        except Exception as e:  # whatever an unreachable node raises: refused, nothing changed
            raise exception.InvalidReplicationTarget(
                reason=f"the primary {node} is not healthy, no failback: {e}"
            ) from e
        with _cinder_errors("failover_host (failback)"):
            standby = self._core_for(node, active)[0]
            standby.do_setup(context)
            updates = fail_back(primary, standby, [_volume(v) for v in volumes])
        for u in updates:
            u["volume_id"] = by_storage.get(u["volume_id"], u["volume_id"])
        self._active_backend_id = None
        self._reserve = True
        return "default", updates, []

    def get_volume_stats(self, refresh: bool = False) -> dict[str, Any]:
        with _cinder_errors("volume stats"):
            self._stats = self._c().get_volume_stats(refresh=refresh)
        if refresh and self._activities is not None:
            self._running = self._activities.publish()
        if refresh:
            self._fence_returned_primary()
        self._stats[RUNNING_KEY] = list(self._running)
        return self._stats

    def _fence_returned_primary(self) -> None:
        """After a failover: fence the old primary's copies it could not fence then, once that node
        answers (:mod:`zfs_backend.driver.return_fence`). Never fails the stats refresh."""
        if self._active_backend_id in (None, "default") or getattr(self, "db", None) is None:
            return
        if self._return_fence is None:
            from cinder import context, objects

            node, db = self.configuration.safe_get("zfs_backend_node"), self.db

            def failed_over() -> list[tuple[Any, str | None]]:
                vols = objects.VolumeList.get_all_by_host(context.get_admin_context(), str(self.host))
                return [(v, v.replication_driver_data) for v in vols if v.replication_status == "failed-over"]

            def record(v: Any, data: str) -> None:
                db.volume_update(context.get_admin_context(), v.id, {"replication_driver_data": data})

            self._return_fence = ReturnFence(
                lambda: self._core_for(node, None)[0], failed_over, record, _volume
            )
        try:
            self._return_fence.run()
        except Exception as e:  # a busy database, a volume deleted meanwhile: the next refresh
            log.warning("fencing the old primary: %s", e)

    def migrate_volume(self, context: Any, volume: Any, host: dict[str, Any]) -> tuple[bool, Any]:
        """The core driver's migration (:mod:`zfs_backend.driver.migration`, Cinder's shape, returning
        ``(moved, model_update)``) as the migration flow (``flows.migrate.cinder_migrate``: resumable by
        ``flow resume``)."""
        self._c()
        from ..flows.migrate import cinder_migrate  # the flow ``volume migrate`` runs too

        with _cinder_errors(f"migrate volume {volume.id}"):
            core = self._m("migrate")
            moved, update = cinder_migrate(core, _volume(volume), host)
        return bool(moved), update

    def _update_volume_stats(self) -> None:
        self.get_volume_stats(refresh=True)
