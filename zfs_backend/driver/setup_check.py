"""Cinder's ``check_for_setup_error`` for one node (:meth:`.ZfsNfsDriver.check_for_setup_error`): what the
driver needs of the node before it serves volumes, each missing piece one ``ConfigError`` naming the
node and what is wrong. Reads only; changes nothing."""

from __future__ import annotations

from ..errors import ConfigError, DatasetNotFound
from ..zfs.api import Zfs
from .nfs import GaneshaExports
from .options import NodeOptions

__all__ = ["check_node"]


def check_node(zfs: Zfs, exports: GaneshaExports, options: NodeOptions) -> None:
    """The parent is a mounted filesystem, the NFS server is running with our exports file (readable),
    the node's ``zfs-backend`` (which changes that file and the volume files) runs, and its ZFS dialect
    is known."""
    parent = options.parent_dataset
    try:
        props = zfs.get(parent, ["type", "mounted"])
    except DatasetNotFound:
        raise ConfigError(f"{options.node}: parent dataset {parent} does not exist") from None
    if props.get("type") != "filesystem" or props.get("mounted") != "yes":
        raise ConfigError(f"{options.node}: {parent} is not a mounted filesystem")
    if exports.server_pid() is None:
        raise ConfigError(
            f"{options.node}: nfs-ganesha is not running (no live pid in {options.ganesha_pid_file})"
        )
    exports.entries()  # readable
    res = zfs.host.run([options.node_bin, "--version"], check=False)
    if res.returncode != 0:
        why = (res.err_text.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise ConfigError(f"{options.node}: {options.node_bin} does not run there: {why}")
    _ = zfs.dialect
