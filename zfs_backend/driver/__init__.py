"""The Cinder-shaped reference ZFS/NFS volume driver (``ZfsNfsDriver``), its options, models, NFS exports,
stats, and the controller-side volume service."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .errors import InvalidSize, VolumeBusy, VolumeExists, VolumeNotFound
    from .models import GIB, Snapshot, Volume
    from .options import NodeOptions
    from .zfs_nfs import ZfsNfsDriver

__all__ = [
    "GIB",
    "InvalidSize",
    "NodeOptions",
    "Snapshot",
    "Volume",
    "VolumeBusy",
    "VolumeExists",
    "VolumeNotFound",
    "ZfsNfsDriver",
]

_EXPORTS = {
    "GIB": "models",
    "InvalidSize": "errors",
    "NodeOptions": "options",
    "Snapshot": "models",
    "Volume": "models",
    "VolumeBusy": "errors",
    "VolumeExists": "errors",
    "VolumeNotFound": "errors",
    "ZfsNfsDriver": "zfs_nfs",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
