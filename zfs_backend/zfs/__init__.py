"""Typed wrappers of the zfs/zpool CLIs on any :class:`~zfs_backend.hosts.base.Host`.

``names`` (validation), ``models`` (data and send/recv specs), ``cmd`` (the one place zfs runs),
``dialect`` (OpenZFS 2.x vs zfs-fuse 0.7 as feature flags), ``api`` (``Zfs(host)``), ``estimate``
(send size from space accounting), ``lzc`` (optional pyzfs fast path).
"""

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
