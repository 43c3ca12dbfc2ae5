"""The on-node layout of the driver's volumes: names, the ``volume`` file, and space (quota) accounting.

Layout (as Nexenta's NFS driver): volume ``V`` is the filesystem ``<parent>/volume-<id>`` holding one
sparse file ``volume`` of V's size (zfs-fuse has no zvols); its ``refquota`` is the size plus a small
headroom (:func:`quota_for`), and thick volumes also reserve it. The size itself is recorded in the user
property :data:`SIZE_PROPERTY`. Snapshots are ZFS snapshots ``<volume>@snapshot-<id>``.

Every name is validated (:func:`~zfs_backend.driver.models.validate_id`) before it is built, so a bad id
is refused before any command runs.
"""

from __future__ import annotations

from ..errors import ConfigError, PoolFull
from ..zfs import cmd as zfs_cmd
from ..zfs.api import Zfs
from ..zfs.names import DatasetName, SnapshotName
from ..zfs.parse import parse_get, parse_int
from .models import GIB, Snapshot, Volume, validate_id
from .nfs import node_command, validate_export_path
from .options import NodeOptions
from .volume_file import VOLUME_FILE

__all__ = [
    "MIN_HEADROOM",
    "SIZE_PROPERTY",
    "VOLUME_FILE",
    "check_capacity",
    "mountpoint",
    "provisioned",
    "quota_for",
    "resize",
    "set_file_access",
    "size_bytes",
    "snapshot_name",
    "space_props",
    "truncate",
    "volume_dataset",
    "volume_dataset_by_id",
]

SIZE_PROPERTY = "zfs_backend:volume_size"
MIN_HEADROOM = 32 << 20


def quota_for(size_bytes: int) -> int:
    """``refquota`` of a volume of ``size_bytes``: the file fully written needs its metadata too."""
    return size_bytes + max(MIN_HEADROOM, size_bytes // 50)


# ---- names ---------------------------------------------------------------------------------------


def volume_dataset(parent: DatasetName, volume: Volume) -> DatasetName:
    """``<parent>/volume-<id>`` (the id validated first)."""
    validate_id(volume.id, "volume id")
    return parent.child(volume.name)


def volume_dataset_by_id(parent: DatasetName, volume_id: str) -> DatasetName:
    validate_id(volume_id, "volume id")
    return parent.child(f"volume-{volume_id}")


def snapshot_name(parent: DatasetName, snapshot: Snapshot) -> SnapshotName:
    """``<parent>/volume-<volume id>@snapshot-<id>`` (both ids validated first)."""
    validate_id(snapshot.id, "snapshot id")
    return volume_dataset_by_id(parent, snapshot.volume_id).snapshot(snapshot.name)


# ---- the volume file -----------------------------------------------------------------------------


def mountpoint(zfs: Zfs, node: str, ds: DatasetName) -> str:
    """Where ``ds`` is mounted on the node (a path safe to export)."""
    mp = zfs.mountpoint(ds)
    if mp is None:
        raise ConfigError(f"{node}: {ds} has no mountpoint")
    return validate_export_path(mp)


def truncate(zfs: Zfs, options: NodeOptions, ds: DatasetName, size_bytes: int) -> None:
    """Create or resize ``ds``'s sparse ``volume`` file to ``size_bytes``, on the node by
    ``zfs-backend volume-file`` (:mod:`.volume_file`): a regular file or nothing, never through a
    link a client planted (UnsafeVolumeFile)."""
    mp = mountpoint(zfs, options.node, ds)
    node_command(zfs.host, [options.node_bin, "volume-file", "truncate", mp, str(int(size_bytes))])


def set_file_access(zfs: Zfs, options: NodeOptions, ds: DatasetName) -> None:
    """Give ``ds``'s ``volume`` file the owner and mode the options ask for (before it is exported:
    ganesha caches attributes for a while), on the node like :func:`truncate`. A file that has them
    already is left alone (a replica received with them may be read-only)."""
    mp = mountpoint(zfs, options.node, ds)
    uid, gid = options.file_owner
    argv = [
        options.node_bin,
        "volume-file",
        "access",
        mp,
        str(int(uid)),
        str(int(gid)),
        f"{options.file_mode:o}",
    ]
    node_command(zfs.host, argv)


def resize(zfs: Zfs, options: NodeOptions, ds: DatasetName, current: int, new_bytes: int) -> None:
    """Grow the volume ``ds`` from ``current`` to ``new_bytes``: its space properties, then its file; the
    properties are set back when the file cannot be grown."""
    before = zfs.get(ds, ["refquota", "refreservation"])
    for k, v in space_props(new_bytes, options.thin).items():
        zfs.set(ds, k, v)
    try:
        truncate(zfs, options, ds, new_bytes)
    except BaseException:
        zfs.set(ds, SIZE_PROPERTY, str(current))
        for k in ("refreservation", "refquota"):
            if k in before and (k != "refreservation" or not options.thin):
                zfs.set(ds, k, before[k])
        raise


# ---- space ---------------------------------------------------------------------------------------


def size_bytes(zfs: Zfs, ds: DatasetName) -> int | None:
    """The recorded size of the volume ``ds`` (or of a snapshot's volume), if any."""
    return parse_int(zfs.get(ds, [SIZE_PROPERTY]).get(SIZE_PROPERTY, "-"))


def space_props(size_bytes: int, thin: bool) -> dict[str, str]:
    """The properties that size a volume: ``refquota``, the size property, and (thick) ``refreservation``."""
    props = {"refquota": str(quota_for(size_bytes)), SIZE_PROPERTY: str(size_bytes)}
    if not thin:
        props["refreservation"] = str(quota_for(size_bytes))
    return props


def provisioned(zfs: Zfs, parent: DatasetName) -> tuple[int, int]:
    """(sum of the volumes' sizes, number of volumes) under the parent."""
    res = zfs_cmd.run(
        zfs.host,
        ["zfs", "get", "-Hp", "-r", "-o", "name,property,value", SIZE_PROPERTY, str(parent)],
    )
    total, count = 0, 0
    for name, props in parse_get(res.text).items():
        if "@" in name or name == str(parent):
            continue
        size = parse_int(props.get(SIZE_PROPERTY, "-"))
        if size is not None:
            total += size
            count += 1
    return total, count


def check_capacity(zfs: Zfs, options: NodeOptions, add_bytes: int) -> None:
    """Refuse before any command when ``add_bytes`` more of volume would not fit."""
    parent = options.parent_dataset
    props = zfs.get(parent, ["used", "available"])
    used, avail = parse_int(props.get("used", "-")) or 0, parse_int(props.get("available", "-")) or 0
    need = quota_for(add_bytes) if not options.thin else MIN_HEADROOM
    if avail < need:
        raise PoolFull(
            f"{options.node}: not enough space under {parent} for {add_bytes / GIB:g} GiB "
            f"({avail / GIB:.2f} GiB free)"
        )
    if options.thin:
        total = used + avail
        provisioned_bytes = provisioned(zfs, parent)[0]
        limit = total * float(options.max_over_subscription_ratio)
        if provisioned_bytes + add_bytes > limit:
            raise PoolFull(
                f"{options.node}: {(provisioned_bytes + add_bytes) / GIB:.2f} GiB provisioned would "
                "exceed "
                f"{options.max_over_subscription_ratio:g} x {total / GIB:.2f} GiB"
            )
