"""Optional adapter: ``volume_driver = zfs_backend.cinder.ZfsNfsDriver`` in a real ``cinder.conf``.

Needs the ``cinder`` package (extra ``cinder``: ``pip install 'zfs_backend[cinder]'``); the rest of the
project never imports it. The class subclasses ``cinder.volume.driver.VolumeDriver`` and delegates each
call to :class:`zfs_backend.driver.ZfsNfsDriver`, converting Cinder's volume/snapshot objects to the
driver's dataclasses by their (identical) field names. Options, in the backend's section:

    zfs_backend_node = node1            # inventory name of the storage node
    zfs_backend_parent = tank/volumes   # dataset holding the volumes
    zfs_backend_home = /var/lib/zfs-backend   # where the inventory and known_hosts are
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cinder.volume import driver as cinder_driver  # type: ignore[import-not-found]
from oslo_config import cfg  # type: ignore[import-not-found]

from ..config import load_settings
from ..driver import NodeOptions, Snapshot, Volume
from ..driver import ZfsNfsDriver as _Core
from ..hosts.inventory import load_inventory

__all__ = ["ZFS_BACKEND_OPTS", "ZfsNfsDriver"]

ZFS_BACKEND_OPTS = [
    cfg.StrOpt("zfs_backend_node", help="inventory name of the storage node"),
    cfg.StrOpt("zfs_backend_parent", default="tank/volumes", help="dataset holding the volumes"),
    cfg.StrOpt("zfs_backend_home", default="/var/lib/zfs-backend", help="zfs_backend state directory"),
]
cfg.CONF.register_opts(ZFS_BACKEND_OPTS, group="backend_defaults")


def _volume(v: Any) -> Volume:
    return Volume(id=str(v.id), size=int(v.size), display_name=getattr(v, "display_name", None))


def _snapshot(s: Any) -> Snapshot:
    return Snapshot(id=str(s.id), volume_id=str(s.volume_id), volume_size=int(s.volume_size))


class ZfsNfsDriver(cinder_driver.VolumeDriver):  # type: ignore[misc]
    VERSION = _Core.VERSION
    CI_WIKI_NAME = "zfs_backend"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.configuration is not None:
            self.configuration.append_config_values(ZFS_BACKEND_OPTS)
        self.core: _Core | None = None

    @staticmethod
    def get_driver_options() -> list[Any]:
        return ZFS_BACKEND_OPTS

    def do_setup(self, context: Any) -> None:
        conf = self.configuration
        home = Path(conf.safe_get("zfs_backend_home") or "/var/lib/zfs-backend")
        settings = load_settings({"ZFS_BACKEND_HOME": str(home)})
        node = conf.safe_get("zfs_backend_node")
        spec = load_inventory(settings.inventory).node(node)
        options = NodeOptions.from_vars(node, spec.vars, spec.address).replace(
            parent=conf.safe_get("zfs_backend_parent") or "tank/volumes",
            backend_name=conf.safe_get("volume_backend_name") or None,
        )
        self.core = _Core(options, settings=settings)
        self.core.do_setup(context)

    def _c(self) -> _Core:
        if self.core is None:
            raise RuntimeError("do_setup() has not run")
        return self.core

    def check_for_setup_error(self) -> None:
        self._c().check_for_setup_error()

    def create_volume(self, volume: Any) -> dict[str, Any]:
        return self._c().create_volume(_volume(volume))

    def delete_volume(self, volume: Any) -> None:
        self._c().delete_volume(_volume(volume))

    def extend_volume(self, volume: Any, new_size: int) -> None:
        self._c().extend_volume(_volume(volume), int(new_size))

    def create_snapshot(self, snapshot: Any) -> dict[str, Any] | None:
        return self._c().create_snapshot(_snapshot(snapshot))

    def delete_snapshot(self, snapshot: Any) -> None:
        self._c().delete_snapshot(_snapshot(snapshot))

    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> dict[str, Any]:
        return self._c().create_volume_from_snapshot(_volume(volume), _snapshot(snapshot))

    def create_cloned_volume(self, volume: Any, src_vref: Any) -> dict[str, Any]:
        return self._c().create_cloned_volume(_volume(volume), _volume(src_vref))

    def create_export(self, context: Any, volume: Any, connector: Any) -> dict[str, Any]:
        return self._c().create_export(context, _volume(volume), connector)

    def ensure_export(self, context: Any, volume: Any) -> dict[str, Any]:
        return self._c().ensure_export(context, _volume(volume))

    def remove_export(self, context: Any, volume: Any) -> None:
        self._c().remove_export(context, _volume(volume))

    def initialize_connection(self, volume: Any, connector: Any) -> dict[str, Any]:
        return self._c().initialize_connection(_volume(volume), connector)

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        self._c().terminate_connection(_volume(volume), connector, **kwargs)

    def get_volume_stats(self, refresh: bool = False) -> dict[str, Any]:
        return self._c().get_volume_stats(refresh=refresh)

    def _update_volume_stats(self) -> None:
        self._stats = self._c().get_volume_stats(refresh=True)
