"""Per-node options of the ZFS/NFS volume driver: typed, frozen, validated once.

Read from the node's inventory variables (``NodeOptions.from_vars``), each named
``zfs_backend_volume_<field>`` (e.g. ``zfs_backend_volume_parent: tank/volumes``), or built directly.
Nothing here reads the environment.

==============================  ========================  =================================================
field                           default                   meaning
==============================  ========================  =================================================
``parent``                      ``tank/volumes``          dataset holding one filesystem per volume (never
                                                          exported itself)
``export_address``              the node's address        address clients mount from (``ADDR:/path``)
``nfs_versions``                ``(3, 4)``                protocols of each export; the first is the one
                                                          ``initialize_connection`` offers
``nfs_port`` / ``mount_port``   ``2049`` / ``20048``      the server's explicit ports (lab: ``lab/nfs.py``)
``exports_file``                ganesha's include         the file of EXPORT blocks this driver owns
``ganesha_pid_file``            ``/run/ganesha/...pid``   where the server's pid is (SIGHUP reloads exports)
``thin``                        ``True``                  sparse volumes; False sets ``refreservation``
``reserved_percentage``         ``0``                     Cinder's reserved space, reported in stats
``max_over_subscription_ratio`` ``20.0``                  thin: provisioned may reach ratio x total
``max_concurrent_activities``   ``4``                     advisory limit of backend activities at once
``backend_name``                ``zfs-nfs-<node>``        Cinder's ``volume_backend_name``
``destroy_deadline``            ``30.0``                  seconds to retry a busy destroy after unexport
``secure_file_operations``      ``True``                  root on a client is squashed to the anonymous
                                                          uid/gid (``Squash = Root_Squash``), which owns
                                                          each ``volume`` file; False: ``No_Root_Squash``
                                                          and files owned by root
``secure_file_permissions``     ``True``                  ``volume`` files are mode 0660 (owner and group);
                                                          False: 0666 (any uid on a granted client)
``anonymous_uid`` /             ``65534`` / ``65534``     who a squashed root becomes (nobody/nogroup):
``anonymous_gid``                                         set them to the uid/gid the hypervisor's qemu
                                                          runs as
``stateless_volume_operations`` ``True``                  published as the capability of that name: flows
                                                          leave the volume available/in-use (writable)
                                                          while they work; False: they move it to a busy
                                                          state and back ("dual states")
``backend_replication``         ``True``                  publish ``snapshot_replicate`` (when the agent
                                                          hosts it); False: flows take the generic path
                                                          (the controller streams the data itself)
``node_bin``                    ``zfs-backend``           the node's ``zfs-backend`` command, which makes
                                                          the exports changes and volume file operations
                                                          there (inventory: ``zfs_backend_bin``)
``replication_devices``         ``()``                    Cinder's ``replication_device`` backend_ids: the
                                                          nodes this backend's volumes may have standbys
                                                          on; non-empty: ``replication_enabled``
==============================  ========================  =================================================

The two ``secure_*`` options are Cinder's ``nas_secure_file_operations`` / ``nas_secure_file_permissions``
(the cinder adapter passes them through). Both default to True, which is what Cinder's ``auto`` picks
for a new installation: a granted host's root cannot act as root on the node's filesystem (no chown,
no writing anything but the volume file it was given), and other users on a granted host cannot read
or write the volume. Turn them off only for clients that must be root on the file (Cinder's insecure
mode). The file's owner and mode are set before each export is made or ensured.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError, UsageError
from ..zfs.names import DatasetName, parse_dataset, validate_node
from .nfs import MAX_ANONYMOUS_ID, ExportSecurity

__all__ = ["DEFAULT_EXPORTS_FILE", "DEFAULT_PID_FILE", "VAR_PREFIX", "NodeOptions"]

VAR_PREFIX = "zfs_backend_volume_"
DEFAULT_EXPORTS_FILE = "/etc/ganesha/zfs-backend/exports.conf"
DEFAULT_PID_FILE = "/run/ganesha/ganesha.pid"


def _abs_path(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in '\n\r\t\0"'):
        raise ConfigError(f"invalid {what} {value!r}: expected an absolute path")
    return value


@dataclass(frozen=True)
class NodeOptions:
    node: str
    parent: str = "tank/volumes"
    export_address: str | None = None
    nfs_versions: tuple[int, ...] = (3, 4)
    nfs_port: int = 2049
    mount_port: int = 20048
    exports_file: str = DEFAULT_EXPORTS_FILE
    ganesha_pid_file: str = DEFAULT_PID_FILE
    thin: bool = True
    reserved_percentage: int = 0
    max_over_subscription_ratio: float = 20.0
    max_concurrent_activities: int = 4
    backend_name: str | None = None
    destroy_deadline: float = 30.0
    secure_file_operations: bool = True
    secure_file_permissions: bool = True
    anonymous_uid: int = 65534
    anonymous_gid: int = 65534
    stateless_volume_operations: bool = True
    backend_replication: bool = True
    replication_devices: tuple[str, ...] = ()
    node_bin: str = "zfs-backend"

    def __post_init__(self) -> None:
        try:
            validate_node(self.node)
            ds = parse_dataset(self.parent)
        except UsageError as e:
            raise ConfigError(f"volume driver options: {e}") from e
        if ds.is_pool_root:
            raise ConfigError(f"parent {self.parent!r}: use a dataset below the pool, e.g. tank/volumes")
        if self.export_address is not None:
            try:
                ipaddress.ip_address(self.export_address)
            except ValueError:
                raise ConfigError(f"invalid export_address {self.export_address!r}: expected an IP") from None
        versions = tuple(self.nfs_versions)
        if not versions or any(v not in (3, 4) for v in versions) or len(set(versions)) != len(versions):
            raise ConfigError(f"invalid nfs_versions {self.nfs_versions!r}: a non-empty list of 3 and/or 4")
        object.__setattr__(self, "nfs_versions", versions)
        for name in ("nfs_port", "mount_port"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
                raise ConfigError(f"invalid {name} {v!r}: expected 1-65535")
        _abs_path(self.exports_file, "exports_file")
        if self.node_bin != "zfs-backend":
            _abs_path(self.node_bin, "zfs_backend_bin")
        _abs_path(self.ganesha_pid_file, "ganesha_pid_file")
        if not isinstance(self.reserved_percentage, int) or not 0 <= self.reserved_percentage <= 100:
            raise ConfigError(f"invalid reserved_percentage {self.reserved_percentage!r}: 0-100")
        if not float(self.max_over_subscription_ratio) >= 1.0:
            raise ConfigError("max_over_subscription_ratio must be at least 1.0")
        if not isinstance(self.max_concurrent_activities, int) or self.max_concurrent_activities < 1:
            raise ConfigError("max_concurrent_activities must be a positive integer")
        if not float(self.destroy_deadline) > 0:
            raise ConfigError("destroy_deadline must be positive")
        for name in ("secure_file_operations", "secure_file_permissions"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"invalid {name} {getattr(self, name)!r}: expected true or false")
        for name in ("stateless_volume_operations", "backend_replication"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"invalid {name} {getattr(self, name)!r}: expected true or false")
        devices = tuple(self.replication_devices)
        try:
            for d in devices:
                validate_node(d)
        except UsageError as e:
            raise ConfigError(f"replication_devices: {e}") from e
        if self.node in devices:
            raise ConfigError(f"replication_devices: {self.node} cannot be its own replication target")
        object.__setattr__(self, "replication_devices", devices)
        for name in ("anonymous_uid", "anonymous_gid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ANONYMOUS_ID:
                raise ConfigError(f"invalid {name} {v!r}: expected a uid/gid 0-{MAX_ANONYMOUS_ID}")

    @property
    def parent_dataset(self) -> DatasetName:
        return parse_dataset(self.parent)

    @property
    def file_mode(self) -> int:
        """Mode of each volume's ``volume`` file (Cinder: 660 when secure, ugo+rw otherwise)."""
        return 0o660 if self.secure_file_permissions else 0o666

    @property
    def file_owner(self) -> tuple[int, int]:
        """(uid, gid) owning each ``volume`` file: the anonymous ids a squashed root becomes, or root."""
        return (self.anonymous_uid, self.anonymous_gid) if self.secure_file_operations else (0, 0)

    @property
    def export_security(self) -> ExportSecurity:
        """Squashing of the NFS exports: root squashed to the anonymous ids when file operations are
        secure."""
        return ExportSecurity(self.secure_file_operations, self.anonymous_uid, self.anonymous_gid)

    @property
    def volume_backend_name(self) -> str:
        return self.backend_name or f"zfs-nfs-{self.node}"

    def replace(self, **changes: Any) -> NodeOptions:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return NodeOptions(**values)

    @classmethod
    def from_vars(cls, node: str, variables: Mapping[str, Any], address: str | None = None) -> NodeOptions:
        """Options from inventory variables ``zfs_backend_volume_<field>``; ``address``: the node's
        inventory address, the default ``export_address``."""
        known = {f.name for f in fields(cls)} - {"node"}
        kwargs: dict[str, Any] = {}
        for key, value in variables.items():
            if not key.startswith(VAR_PREFIX):
                continue
            name = key[len(VAR_PREFIX) :]
            if name not in known:
                raise ConfigError(f"{node}: unknown volume driver option {key!r}")
            kwargs[name] = tuple(value) if name in ("nfs_versions", "replication_devices") else value
        if variables.get("zfs_backend_bin") and "node_bin" not in kwargs:
            kwargs["node_bin"] = variables["zfs_backend_bin"]
        if "export_address" not in kwargs and address is not None:
            try:
                ipaddress.ip_address(address)
                kwargs["export_address"] = address
            except ValueError:
                pass
        return cls(node=node, **kwargs)
