"""Optional fast path through ``libzfs_core`` (OpenZFS's pyzfs) for LOCAL calls.

pyzfs wraps libzfs_core's ioctls: no process per call, exact numbers, atomic multi-snapshots. It
exists only where OpenZFS's Python bindings are importable and talks to the local kernel module, so
it can never serve a remote :class:`~zfs_backend.hosts.base.Host`: :class:`~zfs_backend.zfs.api.Zfs`
uses it for existence, snapshots, holds and bookmarks only on a ``LocalHost`` where
:func:`available` (:func:`usable_for`), the CLI otherwise (and always for everything else). Here
(zfs-fuse, no pyzfs) :func:`available` is False and every call raises ``UnsupportedFeature``.

Checked against pyzfs 2.3.2 (Debian ``python3-pyzfs``) on the Vagrant tier's OpenZFS VMs, beside the
CLI on the same datasets (tests/vagrant/test_lzc_openzfs.py). Its errors are mapped coarsely, by the
exception's class name.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from ..errors import DatasetBusy, DatasetExists, DatasetNotFound, UnsupportedFeature, ZfsError
from .models import Bookmark
from .names import AnyName, BookmarkName, DatasetName, SnapshotName

__all__ = [
    "available",
    "bookmark",
    "exists",
    "hold",
    "holds",
    "list_bookmarks",
    "release",
    "send_space",
    "snapshot",
    "usable_for",
]


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("libzfs_core")
    except ImportError:
        return None


_lzc = _load()


def available() -> bool:
    """True where ``libzfs_core`` is importable (OpenZFS with pyzfs on this machine)."""
    return _lzc is not None


def usable_for(host: object) -> bool:
    """Whether calls for ``host`` may go through libzfs_core: importable, and the host is this machine."""
    from ..hosts.local import LocalHost

    return _lzc is not None and isinstance(host, LocalHost)


def _mod() -> ModuleType:
    if _lzc is None:
        raise UnsupportedFeature("libzfs_core (pyzfs) is not importable here; use the CLI path")
    return _lzc


def _map(e: Exception) -> ZfsError:
    """pyzfs's error as the CLI path's typed error. pyzfs wraps batch failures (``HoldFailure``,
    ``SnapshotFailure``, ...) around one error per name (``.errors``): the first inner one decides. The
    texts the callers look for are the CLI's (``tag already exists``, ``is being held``)."""
    inner = list(getattr(e, "errors", None) or [])
    first = inner[0] if inner else e
    kind = type(first).__name__
    text = str(first) or kind
    if kind == "HoldExists":
        return ZfsError(f"libzfs_core: {text}: tag already exists on this dataset")
    if kind == "SnapshotIsHeld":
        return DatasetBusy(f"libzfs_core: {text}: it's being held")
    if "NotFound" in kind:
        return DatasetNotFound(text)
    if "Exists" in kind:
        return DatasetExists(text)
    return ZfsError(f"libzfs_core: {kind}: {text}")


def exists(name: AnyName) -> bool:
    """A filesystem, volume or snapshot (``lzc_exists`` answers False for a bookmark that exists: the
    caller asks the CLI for those)."""
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


def hold(snap: SnapshotName, tag: str) -> None:
    """``zfs hold tag snap``: a user hold (the tag validated by the caller)."""
    mod = _mod()
    try:
        missing = mod.lzc_hold({str(snap).encode(): tag.encode()})
    except Exception as e:
        raise _map(e) from e
    if missing:
        raise DatasetNotFound(f"{snap}: dataset does not exist")


def release(snap: SnapshotName, tag: str) -> None:
    """``zfs release tag snap``; a tag that is not there is an error, as with the CLI."""
    mod = _mod()
    try:
        missing = mod.lzc_release({str(snap).encode(): [tag.encode()]})
    except Exception as e:
        raise _map(e) from e
    if missing:
        raise ZfsError(f"cannot release hold {tag!r} on {snap}: no such tag or snapshot")


def holds(snap: SnapshotName) -> list[str]:
    """The hold tags on ``snap``, sorted."""
    mod = _mod()
    try:
        return sorted(t.decode() for t in mod.lzc_get_holds(str(snap).encode()))
    except Exception as e:
        raise _map(e) from e


def bookmark(snap: SnapshotName, mark: BookmarkName) -> None:
    mod = _mod()
    try:
        mod.lzc_bookmark({str(mark).encode(): str(snap).encode()})
    except Exception as e:
        raise _map(e) from e


def list_bookmarks(dataset: DatasetName) -> list[Bookmark]:
    """The bookmarks of ``dataset`` itself, sorted by createtxg (as ``Zfs.list_bookmarks``)."""
    mod = _mod()
    try:
        got = mod.lzc_get_bookmarks(str(dataset).encode(), [b"guid", b"createtxg"])
    except Exception as e:
        raise _map(e) from e
    # each property as {b"value": N} (pyzfs 2.3.2)
    out = [
        Bookmark(
            BookmarkName(dataset, short.decode()), int(p[b"guid"][b"value"]), int(p[b"createtxg"][b"value"])
        )
        for short, p in got.items()
    ]
    return sorted(out, key=lambda b: (b.createtxg, b.mark))
