"""Optional adapter: ``volume_driver = zfs_backend.cinder.ZfsNfsDriver`` in a real ``cinder.conf``.

The class is :mod:`.driver`'s (it needs the ``cinder`` package), its options :mod:`.options`, the
conversions between Cinder's objects and the core driver's :mod:`.convert`; :mod:`.activities` publishes
the volumes' backend activities into Cinder. Only what ``volume_driver=`` names is exported here, made on
first use, so the package's other modules import without ``cinder``."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .driver import ZfsNfsDriver

__all__ = ["ZfsNfsDriver"]

__getattr__ = lazy_exports(__name__, {"ZfsNfsDriver": "driver"})
