"""The Cinder-shaped reference ZFS/NFS volume driver (``ZfsNfsDriver``), its options, models, NFS exports,
stats, and the controller-side volume service."""

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
