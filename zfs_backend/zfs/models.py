"""Plain data about datasets and pools, and the validated send/receive specs.

A :class:`SendSpec` or :class:`RecvSpec` can only be built from validated names
(:mod:`zfs_backend.zfs.names`) and only turned into an argv for a :class:`Dialect` that has every
feature it asks for; nothing else builds a send or receive command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import UnsupportedFeature, UsageError
from .dialect import Dialect
from .names import (
    BookmarkName,
    DatasetName,
    SnapshotName,
    validate_property,
    validate_property_value,
)

__all__ = ["Dataset", "PoolCapacity", "RecvSpec", "SendSpec", "Snapshot"]


@dataclass(frozen=True)
class Dataset:
    """A filesystem or volume. Sizes in bytes; ``mountpoint`` None when none/legacy/unmountable."""

    name: DatasetName
    type: str
    guid: int
    createtxg: int
    used: int
    referenced: int
    available: int
    mountpoint: str | None = None
    mounted: bool | None = None
    origin: SnapshotName | None = None


@dataclass(frozen=True)
class Snapshot:
    """A snapshot, identified across nodes by ``guid``; ``createtxg`` orders a dataset's history."""

    name: SnapshotName
    guid: int
    createtxg: int
    used: int
    referenced: int
    creation: int  # unix seconds

    @property
    def dataset(self) -> DatasetName:
        return self.name.dataset

    @property
    def snap(self) -> str:
        return self.name.snap


@dataclass(frozen=True)
class Bookmark:
    """A bookmark: what an incremental may be sent from after its snapshot is gone (same ``guid``)."""

    name: BookmarkName
    guid: int
    createtxg: int

    @property
    def mark(self) -> str:
        return self.name.mark


@dataclass(frozen=True)
class PoolCapacity:
    """Pool space in bytes. From zfs-fuse these are parsed from 3-digit human units (approximate)."""

    pool: str
    size: int
    allocated: int
    free: int
    exact: bool = True

    @property
    def fraction_used(self) -> float:
        return self.allocated / self.size if self.size else 0.0


@dataclass(frozen=True)
class SendSpec:
    """``zfs send [-R] [-D] [-p] [-L] [-c] [-e] [-w] [-i|-I base] snapshot``.

    ``incremental_from``: the base (a snapshot, or a bookmark with ``intermediates=False`` where the
    dialect has bookmarks); ``intermediates`` picks ``-I`` (every snapshot between) over ``-i``.
    ``large_blocks`` (``-L``), ``compressed`` (``-c``), ``embedded`` (``-e``): the blocks as they are on
    disk; only where the dialect has them (and the receiving end too: the caller's to check).
    ``raw`` (``-w``): an encrypted dataset's blocks as they are on disk, still encrypted (the key is
    neither needed nor sent); it implies the other three, which are then not passed.
    """

    snapshot: SnapshotName
    incremental_from: SnapshotName | BookmarkName | None = None
    intermediates: bool = False
    properties: bool = False
    recursive: bool = False
    dedup: bool = False
    large_blocks: bool = False
    compressed: bool = False
    embedded: bool = False
    raw: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.snapshot, SnapshotName):
            raise UsageError(f"send: {self.snapshot!r} is not a validated SnapshotName")
        base = self.incremental_from
        if base is not None and not isinstance(base, SnapshotName | BookmarkName):
            raise UsageError(f"send: base {base!r} is not a validated SnapshotName or BookmarkName")
        if self.intermediates and base is None:
            raise UsageError("send: intermediates (-I) need an incremental base")
        if isinstance(base, BookmarkName) and (self.intermediates or self.recursive):
            raise UsageError("send: a bookmark base works only with -i, without -R")
        if base is not None and base == self.snapshot:
            raise UsageError(f"send: base and snapshot are the same ({self.snapshot})")

    @property
    def is_incremental(self) -> bool:
        return self.incremental_from is not None

    def _flags(self) -> list[str]:
        flags = []
        if self.recursive:
            flags.append("-R")
        if self.dedup:
            flags.append("-D")
        if self.properties:
            flags.append("-p")
        if self.raw:
            flags.append("-w")
            return flags
        for on, flag in ((self.large_blocks, "-L"), (self.compressed, "-c"), (self.embedded, "-e")):
            if on:
                flags.append(flag)
        return flags

    def _tail(self) -> list[str]:
        tail: list[str] = []
        if self.incremental_from is not None:
            tail += ["-I" if self.intermediates else "-i", str(self.incremental_from)]
        tail.append(str(self.snapshot))
        return tail

    def argv(self, dialect: Dialect) -> list[str]:
        """The ``zfs send`` argv for ``dialect``."""
        if isinstance(self.incremental_from, BookmarkName) and not dialect.bookmarks:
            raise UnsupportedFeature(f"send from a bookmark: {dialect} has no bookmarks")
        for on, has, flag in (
            (self.large_blocks, dialect.send_large_blocks, "-L"),
            (self.compressed, dialect.send_compressed, "-c"),
            (self.embedded, dialect.send_embedded, "-e"),
            (self.raw, dialect.send_raw, "-w"),
        ):
            if on and not has:
                raise UnsupportedFeature(f"send {flag}: {dialect} has no {flag}")
        return ["zfs", "send", *self._flags(), *self._tail()]

    def estimate_argv(self, dialect: Dialect) -> list[str]:
        """The dry-run ``zfs send -nvP`` argv that prints ``size\\t<bytes>`` (OpenZFS)."""
        if not dialect.send_estimate:
            raise UnsupportedFeature(f"send -nvP: {dialect} cannot estimate a send")
        self.argv(dialect)
        return ["zfs", "send", "-n", "-v", "-P", *self._flags(), *self._tail()]


def _freeze(m: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class RecvSpec:
    """``zfs receive [-F] [-v] [-n] [-s] [-u] [-d] [-o p=v]... [-x p]... target``.

    ``force``: -F (roll back / destroy what is newer on the target). ``resumable``: -s (keep a
    partial receive with a resume token). ``strip_first``: -d (the target is a parent; the sent
    name minus its pool is appended). ``no_mount``: -u. ``set_properties``/``exclude_properties``:
    -o / -x. The dialect-gated ones raise UnsupportedFeature in :meth:`argv` where missing.
    """

    target: DatasetName | SnapshotName
    force: bool = False
    verbose: bool = False
    dry_run: bool = False
    resumable: bool = False
    strip_first: bool = False
    no_mount: bool = False
    set_properties: Mapping[str, str] = field(default_factory=dict)
    exclude_properties: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.target, DatasetName | SnapshotName):
            raise UsageError(f"recv: target {self.target!r} is not a validated DatasetName/SnapshotName")
        if self.strip_first and not isinstance(self.target, DatasetName):
            raise UsageError("recv -d needs a filesystem target")
        for k, v in self.set_properties.items():
            validate_property(k)
            validate_property_value(k, v)
        for k in self.exclude_properties:
            validate_property(k)
        object.__setattr__(self, "set_properties", _freeze(self.set_properties))
        object.__setattr__(self, "exclude_properties", tuple(self.exclude_properties))

    def argv(self, dialect: Dialect) -> list[str]:
        """The ``zfs receive`` argv for ``dialect``."""
        if self.resumable and not dialect.resumable_receive:
            raise UnsupportedFeature(f"recv -s: {dialect} has no resumable receive")
        if self.no_mount and not dialect.recv_no_mount:
            raise UnsupportedFeature(f"recv -u: {dialect} cannot receive without mounting")
        if (self.set_properties or self.exclude_properties) and not dialect.recv_properties:
            raise UnsupportedFeature(f"recv -o/-x: {dialect} cannot override properties on receive")
        argv = ["zfs", "receive"]
        for flag, on in (
            ("-F", self.force),
            ("-v", self.verbose),
            ("-n", self.dry_run),
            ("-s", self.resumable),
            ("-u", self.no_mount),
        ):
            if on:
                argv.append(flag)
        for k, v in self.set_properties.items():
            argv += ["-o", f"{k}={v}"]
        for k in self.exclude_properties:
            argv += ["-x", k]
        if self.strip_first:
            argv.append("-d")
        argv.append(str(self.target))
        return argv
