"""Errors of the volume driver and service, as subclasses of the project's tree (``zfs_backend.errors``).

UsageError
├── VolumeNotFound        no volume (or snapshot) by that name or id
├── VolumeExists          a volume (or snapshot) of that name already exists
├── InvalidSize           size 0, negative, not an integer, or an extend that does not grow
├── InvalidClient         a connector without a valid ``ip``, or a client address that is not one
│                         IPv4/IPv6 host address (nothing is granted or revoked)
├── InvalidAttachment     an attachment id that is not one, or one already attached from another
│                         client
└── VolumeBusy            refused: it has snapshots, dependent clones, or is attached
UnsafeVolumeFile          a volume's ``volume`` is not a regular file (a link, FIFO, device a client
                          planted): the driver's root file operations refuse to touch it
PoolFull                  (from ``zfs_backend.errors``) also raised before any command when the
                          volume would not fit (free space, over-subscription ratio)
"""

from __future__ import annotations

from ..errors import UsageError, ZfsBackendError

__all__ = [
    "InvalidAttachment",
    "InvalidClient",
    "InvalidSize",
    "UnsafeVolumeFile",
    "VolumeBusy",
    "VolumeExists",
    "VolumeNotFound",
]


class VolumeNotFound(UsageError):
    pass


class VolumeExists(UsageError):
    pass


class InvalidSize(UsageError):
    pass


class VolumeBusy(UsageError):
    pass


class InvalidClient(UsageError):
    pass


class InvalidAttachment(UsageError):
    pass


class UnsafeVolumeFile(ZfsBackendError):
    pass
