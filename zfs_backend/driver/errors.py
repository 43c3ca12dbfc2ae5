r"""The volume driver's errors, re-exported from the one tree in :mod:`zfs_backend.errors` (where they
are defined and drawn): ``VolumeNotFound``, ``VolumeExists``, ``InvalidSize``, ``InvalidClient``,
``InvalidAttachment``, ``VolumeBusy`` (``UsageError``\s) and ``UnsafeVolumeFile``."""

from __future__ import annotations

from ..errors import (
    InvalidAttachment,
    InvalidClient,
    InvalidSize,
    UnsafeVolumeFile,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)

__all__ = [
    "InvalidAttachment",
    "InvalidClient",
    "InvalidSize",
    "UnsafeVolumeFile",
    "VolumeBusy",
    "VolumeExists",
    "VolumeNotFound",
]
