"""Optional adapter: ``volume_driver = zfs_backend.cinder.ZfsNfsDriver`` in a real ``cinder.conf``.

Needs the ``cinder`` package (extra ``cinder``: ``pip install 'zfs_backend[cinder]'``; the project's tests
use a separate virtualenv ``.venv-cinder``, ``scripts/bootstrap --cinder``); the rest of the project never
imports it. The class subclasses ``cinder.volume.driver.VolumeDriver`` and delegates each call to
:class:`zfs_backend.driver.ZfsNfsDriver`, converting Cinder's volume/snapshot objects to the driver's
dataclasses by their (identical) field names (a volume's storage by its ``name_id``, as Cinder's
``volume.name``), and this project's errors to Cinder's exceptions
(``VolumeIsBusy`` / ``SnapshotIsBusy`` for a refused delete, which Cinder's manager handles;
``InvalidConfigurationValue`` for bad options; ``VolumeBackendAPIException`` for anything else).
Options, in the backend's section (or ``[backend_defaults]``)::

    [zfs1]
    volume_driver = zfs_backend.cinder.ZfsNfsDriver
    volume_backend_name = zfs1                 # reported as volume_backend_name
    zfs_backend_node = node1                   # inventory name of the storage node (required)
    zfs_backend_parent = tank/volumes          # dataset holding the volumes
    zfs_backend_home = /var/lib/zfs-backend    # zfs_backend's state directory (known_hosts, keys)
    zfs_backend_inventory =                    # default: <home>/lab/inventory.yml

Cinder's own NAS security options are passed through where they are set (registered here from
``cinder.volume.drivers.remotefs``, as Cinder's NFS drivers read them)::

    nas_secure_file_operations = auto          # true: root squashed (driver option secure_file_operations)
    nas_secure_file_permissions = auto         # true: volume files 0660 (secure_file_permissions)

``true``/``false`` override the node's options; ``auto`` (Cinder's default) keeps them, and the node's
defaults are what ``auto`` picks for a new installation (both secure).

The node's other driver options (export address, NFS versions and ports, thin, ...) come from its
inventory variables ``zfs_backend_volume_*`` (:mod:`zfs_backend.driver.options`). Each
``initialize_connection`` grants the connector's ``ip`` access to the volume's export and
``terminate_connection`` revokes it. Tested with cinder 29.0.0 under cinder-volume's eventlet monkey
patching (``tests/lab/test_cinder_adapter.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cinder import exception  # type: ignore[import-not-found]
from cinder.volume import driver as cinder_driver  # type: ignore[import-not-found]
from cinder.volume.drivers import remotefs  # type: ignore[import-not-found]
from oslo_config import cfg  # type: ignore[import-not-found]

from ..config import load_settings
from ..driver import NodeOptions, Snapshot, Volume, VolumeBusy
from ..driver import ZfsNfsDriver as _Core
from ..errors import ConfigError, ZfsBackendError
from ..hosts.inventory import load_inventory

__all__ = ["NAS_SECURITY_OPTS", "ZFS_BACKEND_OPTS", "ZfsNfsDriver", "nas_security"]

ZFS_BACKEND_OPTS = [
    cfg.StrOpt("zfs_backend_node", help="inventory name of the storage node"),
    cfg.StrOpt("zfs_backend_parent", default="tank/volumes", help="dataset holding the volumes"),
    cfg.StrOpt("zfs_backend_home", default="/var/lib/zfs-backend", help="zfs_backend state directory"),
    cfg.StrOpt("zfs_backend_inventory", help="ansible inventory of the nodes (default: HOME/lab/...)"),
]
cfg.CONF.register_opts(ZFS_BACKEND_OPTS, group="backend_defaults")
# Cinder's NAS security options, as its NFS drivers have them (ours: the node's secure_file_* options)
NAS_SECURITY_OPTIONS = {
    "nas_secure_file_operations": "secure_file_operations",
    "nas_secure_file_permissions": "secure_file_permissions",
}
NAS_SECURITY_OPTS = [o for o in remotefs.nas_opts if o.name in NAS_SECURITY_OPTIONS]


def nas_security(conf: Any) -> dict[str, bool]:
    """The driver options Cinder's ``nas_secure_*`` set: ``true``/``false`` override, ``auto`` (or unset)
    keeps the node's option."""
    out: dict[str, bool] = {}
    for theirs, ours in NAS_SECURITY_OPTIONS.items():
        value = str(conf.safe_get(theirs) or "auto").strip().lower()
        if value not in ("auto", "true", "false"):
            raise exception.InvalidConfigurationValue(option=theirs, value=value)
        if value != "auto":
            out[ours] = value == "true"
    return out


def _loaded(obj: Any, name: str) -> Any:
    """``obj.name`` if it is loaded, else None: reading an unset field of a Cinder object would try a
    lazy load from the database (an error for plain columns)."""
    is_set = getattr(obj, "obj_attr_is_set", None)
    if is_set is not None and not is_set(name):
        return None
    return getattr(obj, name, None)


def _storage_id(v: Any) -> str:
    """The id the volume's storage is named after: Cinder's ``name_id`` (another volume's id after a
    migration swapped them; ``volume.name`` is ``volume-<name_id>``), else ``id``."""
    if hasattr(v, "obj_attr_is_set"):
        return str(_loaded(v, "_name_id") or v.id)
    return str(getattr(v, "name_id", None) or v.id)


def _volume(v: Any) -> Volume:
    return Volume(id=_storage_id(v), size=int(v.size), display_name=_loaded(v, "display_name"))


def _snapshot(s: Any) -> Snapshot:
    source = getattr(s, "volume", None)  # cinder's Snapshot lazy-loads its volume
    volume_id = _storage_id(source) if source is not None else str(s.volume_id)
    return Snapshot(id=str(s.id), volume_id=volume_id, volume_size=int(s.volume_size))


@contextmanager
def _cinder_errors(what: str, busy: Callable[..., Exception] | None = None) -> Iterator[None]:
    """This project's errors as the Cinder exceptions its volume manager expects."""
    try:
        yield
    except VolumeBusy as e:
        if busy is None:
            raise exception.VolumeBackendAPIException(data=f"{what}: {e}") from e
        raise busy(message=f"{what}: {e}") from e
    except ConfigError as e:
        raise exception.VolumeDriverException(message=f"{what}: {e}") from e
    except ZfsBackendError as e:
        raise exception.VolumeBackendAPIException(data=f"{what}: {e}") from e


class ZfsNfsDriver(cinder_driver.VolumeDriver):  # type: ignore[misc]
    VERSION = _Core.VERSION
    CI_WIKI_NAME = "zfs_backend"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.configuration is not None:
            self.configuration.append_config_values(ZFS_BACKEND_OPTS)
            self.configuration.append_config_values(NAS_SECURITY_OPTS)
        self.core: _Core | None = None

    @staticmethod
    def get_driver_options() -> list[Any]:
        return ZFS_BACKEND_OPTS

    def do_setup(self, context: Any) -> None:
        conf = self.configuration
        node = conf.safe_get("zfs_backend_node")
        if not node:
            raise exception.InvalidConfigurationValue(option="zfs_backend_node", value=node)
        env = {"ZFS_BACKEND_HOME": str(Path(conf.safe_get("zfs_backend_home") or "/var/lib/zfs-backend"))}
        if conf.safe_get("zfs_backend_inventory"):
            env["ZFS_BACKEND_INVENTORY"] = conf.safe_get("zfs_backend_inventory")
        settings = load_settings(env)
        with _cinder_errors(f"setting up {node}"):
            spec = load_inventory(settings.inventory).node(node)
            options = NodeOptions.from_vars(node, spec.vars, spec.address).replace(
                parent=conf.safe_get("zfs_backend_parent") or "tank/volumes",
                backend_name=conf.safe_get("volume_backend_name") or None,
                **nas_security(conf),
            )
            self.core = _Core(options, settings=settings)
            self.core.do_setup(context)

    def _c(self) -> _Core:
        if self.core is None:
            raise exception.VolumeDriverException(message="zfs_backend: do_setup() has not run")
        return self.core

    def check_for_setup_error(self) -> None:
        with _cinder_errors("setup check"):
            self._c().check_for_setup_error()

    def create_volume(self, volume: Any) -> dict[str, Any]:
        with _cinder_errors(f"create volume {volume.id}"):
            return self._c().create_volume(_volume(volume))

    def delete_volume(self, volume: Any) -> None:
        with _cinder_errors(f"delete volume {volume.id}", exception.VolumeIsBusy):
            self._c().delete_volume(_volume(volume))

    def extend_volume(self, volume: Any, new_size: int) -> None:
        with _cinder_errors(f"extend volume {volume.id}"):
            self._c().extend_volume(_volume(volume), int(new_size))

    def create_snapshot(self, snapshot: Any) -> dict[str, Any] | None:
        with _cinder_errors(f"create snapshot {snapshot.id}"):
            return self._c().create_snapshot(_snapshot(snapshot))

    def delete_snapshot(self, snapshot: Any) -> None:
        with _cinder_errors(f"delete snapshot {snapshot.id}", exception.SnapshotIsBusy):
            self._c().delete_snapshot(_snapshot(snapshot))

    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> dict[str, Any]:
        with _cinder_errors(f"create volume {volume.id} from snapshot {snapshot.id}"):
            return self._c().create_volume_from_snapshot(_volume(volume), _snapshot(snapshot))

    def create_cloned_volume(self, volume: Any, src_vref: Any) -> dict[str, Any]:
        with _cinder_errors(f"clone volume {src_vref.id} as {volume.id}"):
            return self._c().create_cloned_volume(_volume(volume), _volume(src_vref))

    def create_export(self, context: Any, volume: Any, connector: Any) -> dict[str, Any]:
        with _cinder_errors(f"export volume {volume.id}"):
            return self._c().create_export(context, _volume(volume), connector)

    def ensure_export(self, context: Any, volume: Any) -> dict[str, Any]:
        with _cinder_errors(f"export volume {volume.id}"):
            return self._c().ensure_export(context, _volume(volume))

    def remove_export(self, context: Any, volume: Any) -> None:
        with _cinder_errors(f"unexport volume {volume.id}"):
            self._c().remove_export(context, _volume(volume))

    def initialize_connection(self, volume: Any, connector: Any) -> dict[str, Any]:
        with _cinder_errors(f"connect volume {volume.id}"):
            return self._c().initialize_connection(_volume(volume), connector)

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        with _cinder_errors(f"disconnect volume {volume.id}"):
            self._c().terminate_connection(_volume(volume), connector, **kwargs)

    def get_volume_stats(self, refresh: bool = False) -> dict[str, Any]:
        with _cinder_errors("volume stats"):
            self._stats = self._c().get_volume_stats(refresh=refresh)
        return self._stats

    def _update_volume_stats(self) -> None:
        self.get_volume_stats(refresh=True)
