"""Optional fast path through ``libzfs_core`` (OpenZFS's pyzfs) for LOCAL calls.

pyzfs wraps libzfs_core's ioctls: no process per call, exact numbers, atomic multi-snapshots. It
exists only where OpenZFS's Python bindings are installed and talks to the local kernel module, so
it can never serve a remote :class:`~zfs_backend.hosts.base.Host`. The CLI path in
:class:`~zfs_backend.zfs.api.Zfs` stays the default and the tested one; here (zfs-fuse, no pyzfs)
:func:`available` is False and every call raises ``UnsupportedFeature``.

Not exercised against a real pyzfs on these machines: the calls below follow pyzfs's documented
signatures (``lzc_exists``, ``lzc_snapshot``, ``lzc_send_space``) and map its errors coarsely.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from ..errors import DatasetExists, DatasetNotFound, UnsupportedFeature, ZfsError
from .names import AnyName, SnapshotName

__all__ = ["available", "exists", "send_space", "snapshot"]


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("libzfs_core")
    except ImportError:
        return None


_lzc = _load()


def available() -> bool:
    """True where ``libzfs_core`` is importable (OpenZFS with pyzfs on this machine)."""
    return _lzc is not None


def _mod() -> ModuleType:
    if _lzc is None:
        raise UnsupportedFeature("libzfs_core (pyzfs) is not importable here; use the CLI path")
    return _lzc


def _map(e: Exception) -> ZfsError:
    kind = type(e).__name__
    if "NotFound" in kind:
        return DatasetNotFound(str(e) or kind)
    if "Exists" in kind:
        return DatasetExists(str(e) or kind)
    return ZfsError(f"libzfs_core: {kind}: {e}")


def exists(name: AnyName) -> bool:
    return bool(_mod().lzc_exists(str(name).encode()))


def snapshot(names: Sequence[SnapshotName], props: dict[str, str] | None = None) -> None:
    """Create all ``names`` atomically (one transaction group)."""
    mod = _mod()
    try:
        mod.lzc_snapshot(
            [str(n).encode() for n in names],
            {k.encode(): v.encode() for k, v in (props or {}).items()} or None,
        )
    except Exception as e:  # pyzfs raises its own tree (libzfs_core.exceptions.ZFSError)
        raise _map(e) from e


def send_space(snap: SnapshotName, base: SnapshotName | None = None) -> int:
    """The stream size of ``zfs send [-i base] snap`` as the kernel estimates it."""
    mod = _mod()
    try:
        return int(mod.lzc_send_space(str(snap).encode(), str(base).encode() if base else None))
    except Exception as e:
        raise _map(e) from e
