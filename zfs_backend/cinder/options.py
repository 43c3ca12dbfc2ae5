"""The Cinder backend's options and the core driver they make (:mod:`zfs_backend.cinder.driver`).

Options, in the backend's section (or ``[backend_defaults]``)::

    [zfs1]
    volume_driver = zfs_backend.cinder.ZfsNfsDriver
    volume_backend_name = zfs1                 # reported as volume_backend_name
    zfs_backend_node = node1                   # inventory name of the storage node (required)
    zfs_backend_parent = tank/volumes          # dataset holding the volumes
    zfs_backend_home = /var/lib/zfs-backend    # zfs_backend's state directory (known_hosts, keys)
    zfs_backend_inventory =                    # default: <home>/lab/inventory.yml
    replication_device = backend_id:node2      # Cinder's: a standby node (replication v2.1)

Cinder's own NAS security options are passed through where they are set (registered here from
``cinder.volume.drivers.remotefs``, as Cinder's NFS drivers read them)::

    nas_secure_file_operations = auto          # true: root squashed (driver option secure_file_operations)
    nas_secure_file_permissions = auto         # true: volume files 0660 (secure_file_permissions)

``true``/``false`` override the node's options; ``auto`` (Cinder's default) keeps them, and the node's
defaults are what ``auto`` picks for a new installation (both secure).

The node's other driver options (export address, NFS versions and ports, thin, ...) come from its
inventory variables ``zfs_backend_volume_*`` (:mod:`zfs_backend.driver.options`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cinder import exception  # type: ignore[import-not-found]
from cinder.volume.drivers import remotefs  # type: ignore[import-not-found]
from oslo_config import cfg  # type: ignore[import-not-found]

from ..config import Settings, load_settings
from ..driver import NodeOptions, ZfsNfsDriver
from ..errors import ConfigError
from ..hosts.inventory import load_inventory

__all__ = [
    "NAS_SECURITY_OPTIONS",
    "NAS_SECURITY_OPTS",
    "ZFS_BACKEND_OPTS",
    "core_for",
    "nas_security",
    "options_devices",
    "replication_targets",
]

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


def options_devices(variables: Any, node: str) -> tuple[str, ...]:
    """The node's own ``zfs_backend_volume_replication_devices`` (when cinder.conf names none)."""
    return NodeOptions.from_vars(node, variables).replication_devices


def replication_targets(conf: Any) -> tuple[str, ...]:
    """Cinder's ``replication_device`` entries (``backend_id:node2``, ...): their backend_ids are the
    inventory names of the nodes the standbys live on."""
    out = []
    for dev in conf.safe_get("replication_device") or []:
        backend_id = dev.get("backend_id") if isinstance(dev, dict) else None
        if not backend_id:
            raise exception.InvalidConfigurationValue(option="replication_device", value=dev)
        out.append(str(backend_id))
    return tuple(out)


def core_for(conf: Any, node: str, active: str | None) -> tuple[ZfsNfsDriver, str, Settings]:
    """The core driver (not set up) for the backend's ``node``, or for the replication device ``active``
    once failed over (the same parent, options and grants; the standby's address in every connection):
    what it serves from, and the settings (``zfs_backend_home``, ``zfs_backend_inventory``)."""
    env = {"ZFS_BACKEND_HOME": str(Path(conf.safe_get("zfs_backend_home") or "/var/lib/zfs-backend"))}
    if conf.safe_get("zfs_backend_inventory"):
        env["ZFS_BACKEND_INVENTORY"] = conf.safe_get("zfs_backend_inventory")
    settings = load_settings(env)
    spec = load_inventory(settings.inventory).node(node)
    devices = replication_targets(conf) or options_devices(spec.vars, node)
    serving = node
    if active and active != "default":
        if active not in devices:
            raise ConfigError(
                f"active_backend_id {active!r} is not a replication_device of {node}"
                f" ({', '.join(devices) or 'none'})"
            )
        serving = active
    core = ZfsNfsDriver.for_node(
        settings,
        serving,
        setup=False,
        parent=conf.safe_get("zfs_backend_parent") or "tank/volumes",
        backend_name=conf.safe_get("volume_backend_name") or None,
        replication_devices=devices if serving == node else (),
        **nas_security(conf),
    )
    return core, serving, settings
