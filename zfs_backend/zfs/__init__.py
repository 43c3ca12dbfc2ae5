"""Typed wrappers of the zfs/zpool CLIs on any :class:`~zfs_backend.hosts.base.Host`.

``names`` (validation), ``models`` (data and send/recv specs), ``cmd`` (the one place zfs runs),
``dialect`` (OpenZFS 2.x vs zfs-fuse 0.7 as feature flags), ``api`` (``Zfs(host)``; ``listing``: the
argv and parsing of its dataset, snapshot and pool listings), ``estimate``
(send size from space accounting), ``lzc`` (optional pyzfs fast path), ``resume_token`` (OpenZFS
resume tokens decoded).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from . import lzc
    from .api import Zfs
    from .cmd import in_flight, map_failure
    from .dialect import OPENZFS_2, ZFS_FUSE_07, Dialect, dialect_from_texts, probe
    from .estimate import estimate_from_snapshots
    from .models import Dataset, PoolCapacity, RecvSpec, SendSpec, Snapshot
    from .names import (
        AnyName,
        BookmarkName,
        DatasetName,
        NodeDataset,
        SnapshotName,
        parse_any,
        parse_dataset,
        parse_node_qualified,
        parse_snapshot,
        validate_node,
        validate_pool,
        validate_property,
    )
    from .parse import ParseError, parse_human_size

__all__ = [
    "OPENZFS_2",
    "ZFS_FUSE_07",
    "AnyName",
    "BookmarkName",
    "Dataset",
    "DatasetName",
    "Dialect",
    "NodeDataset",
    "ParseError",
    "PoolCapacity",
    "RecvSpec",
    "SendSpec",
    "Snapshot",
    "SnapshotName",
    "Zfs",
    "dialect_from_texts",
    "estimate_from_snapshots",
    "in_flight",
    "lzc",
    "map_failure",
    "parse_any",
    "parse_dataset",
    "parse_human_size",
    "parse_node_qualified",
    "parse_snapshot",
    "probe",
    "validate_node",
    "validate_pool",
    "validate_property",
]

_EXPORTS = {
    "AnyName": "names",
    "BookmarkName": "names",
    "Dataset": "models",
    "DatasetName": "names",
    "Dialect": "dialect",
    "NodeDataset": "names",
    "OPENZFS_2": "dialect",
    "ParseError": "parse",
    "PoolCapacity": "models",
    "RecvSpec": "models",
    "SendSpec": "models",
    "Snapshot": "models",
    "SnapshotName": "names",
    "ZFS_FUSE_07": "dialect",
    "Zfs": "api",
    "dialect_from_texts": "dialect",
    "estimate_from_snapshots": "estimate",
    "in_flight": "cmd",
    "lzc": "lzc",
    "map_failure": "cmd",
    "parse_any": "names",
    "parse_dataset": "names",
    "parse_human_size": "parse",
    "parse_node_qualified": "names",
    "parse_snapshot": "names",
    "probe": "dialect",
    "validate_node": "names",
    "validate_pool": "names",
    "validate_property": "names",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
