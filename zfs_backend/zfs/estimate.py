"""Send-size estimate from space accounting, for dialects without ``zfs send -nvP`` (zfs-fuse).

A heuristic, not a measurement. From one dataset's snapshots sorted by ``createtxg``:

- full stream of ``S``: ``referenced(S)``.
- ``-i B S``: the stream carries the blocks born after ``B`` that ``S`` still references:
  ``referenced(S) - (blocks of B still alive in S)``. The blocks of ``B`` freed before ``S`` are at
  least ``used(B)`` (blocks only ``B`` holds), so the estimate is
  ``referenced(S) - referenced(B) + used(B)``. It undercounts blocks of ``B`` that were freed but are
  shared with an older snapshot (overwrites of old data), so it is a lower-bound-ish figure.
- ``-I B S`` adds ``used(X)`` of each snapshot ``X`` strictly between: blocks born and freed between
  ``B`` and ``S`` travel only in the intermediate streams.
- ``-R`` from scratch (no base): the oldest snapshot in full, then ``-I`` up to ``S``.

The result is clamped below at :data:`MIN_STREAM_BYTES` and multiplied by the measured stream
overhead (:data:`STREAM_OVERHEAD`, ~1.0025 x the data written). Where the dialect has ``written``,
``written@B`` of ``S`` replaces the ``-i`` formula (exact data size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from ..errors import UnsupportedFeature, UsageError
from .dialect import Dialect
from .models import Dataset, SendSpec, Snapshot
from .names import AnyName, DatasetName, SnapshotName

__all__ = [
    "MIN_STREAM_BYTES",
    "STREAM_OVERHEAD",
    "SpaceSource",
    "estimate_from_snapshots",
    "estimate_from_space",
]

STREAM_OVERHEAD = 1.0025  # measured here: full and incremental streams ~1.0025 x data written
MIN_STREAM_BYTES = 624  # measured: an empty incremental on zfs-fuse 0.7 is 624 bytes


def _index(chain: Sequence[Snapshot], snap: str) -> int:
    for i, s in enumerate(chain):
        if (s.name.name if "@" in snap else s.snap) == snap:
            return i
    raise UsageError(f"estimate: snapshot @{snap} is not in the chain")


def estimate_from_snapshots(
    chain: Sequence[Snapshot],
    snap: str,
    base: str | None = None,
    *,
    intermediates: bool = False,
    whole_history: bool = False,
) -> int:
    """Estimate the stream size of one dataset's send from its snapshot chain (see module doc).

    ``chain``: that dataset's snapshots (any order; sorted by createtxg here); ``snap``/``base``:
    short snapshot names, or full ``ds@snap`` names (for a clone's origin merged into the chain);
    ``whole_history``: a ``-R`` send without base, which carries every earlier snapshot.
    """
    ordered = sorted(chain, key=lambda s: s.createtxg)
    t = _index(ordered, snap)
    if base is None:
        if not whole_history or t == 0:
            data = ordered[t].referenced
        else:
            data = ordered[0].referenced + _incremental(ordered, 0, t, intermediates=True)
    else:
        b = _index(ordered, base)
        if b >= t:
            raise UsageError(f"estimate: base @{base} is not older than @{snap}")
        data = _incremental(ordered, b, t, intermediates=intermediates)
    return math.ceil(max(data, MIN_STREAM_BYTES) * STREAM_OVERHEAD)


def _incremental(ordered: Sequence[Snapshot], b: int, t: int, *, intermediates: bool) -> int:
    base, target = ordered[b], ordered[t]
    data = target.referenced - base.referenced + base.used
    if intermediates:
        data += sum(s.used for s in ordered[b + 1 : t])
    return max(data, 0)


class SpaceSource(Protocol):
    """What :func:`estimate_from_space` reads (a :class:`~zfs_backend.zfs.api.Zfs`)."""

    @property
    def dialect(self) -> Dialect: ...

    def list_datasets(self, root: DatasetName | None = None, recursive: bool = True) -> list[Dataset]: ...

    def list_snapshots(self, dataset: DatasetName) -> list[Snapshot]: ...

    def get_int(self, name: AnyName, prop: str) -> int | None: ...


def estimate_from_space(zfs: SpaceSource, spec: SendSpec) -> int:
    """Estimate ``spec``'s stream size on a live node from space accounting (see module doc).

    ``-R``: the sum over the descendants that have the snapshot (a child without the base gets a
    full estimate). ``written@base`` is used where the dialect has it. A bookmark base cannot be
    estimated this way (no space accounting): UnsupportedFeature.
    """
    if spec.incremental_from is not None and not isinstance(spec.incremental_from, SnapshotName):
        raise UnsupportedFeature("a space-based estimate needs a snapshot base, not a bookmark")
    top = spec.snapshot.dataset
    datasets = [d.name for d in zfs.list_datasets(top, recursive=True)] if spec.recursive else [top]
    return sum(_estimate_one(zfs, ds, spec) for ds in datasets)


def _estimate_one(zfs: SpaceSource, ds: DatasetName, spec: SendSpec) -> int:
    snap = spec.snapshot.snap
    chain = zfs.list_snapshots(ds)
    if not any(s.snap == snap for s in chain):
        return 0  # -R: a child without the snapshot sends nothing
    base = spec.incremental_from
    if not isinstance(base, SnapshotName):
        return estimate_from_snapshots(chain, snap, whole_history=spec.recursive)
    if base.dataset != spec.snapshot.dataset:
        # A clone sent from its origin: createtxg is pool-wide, so the origin's snapshot can join
        # the clone's chain; it is then named in full.
        chain = [*chain, *(s for s in zfs.list_snapshots(base.dataset) if s.name == base)]
        return estimate_from_snapshots(chain, snap, str(base), intermediates=spec.intermediates)
    if not any(s.snap == base.snap for s in chain):
        return estimate_from_snapshots(chain, snap, whole_history=True)  # a new child under -R
    if zfs.dialect.written_property:
        written = zfs.get_int(ds.snapshot(snap), f"written@{base.snap}")
        if written is not None:
            extra = 0
            if spec.intermediates:
                ordered = sorted(chain, key=lambda s: s.createtxg)
                names = [s.snap for s in ordered]
                extra = sum(s.used for s in ordered[names.index(base.snap) + 1 : names.index(snap)])
            return math.ceil(max(written + extra, MIN_STREAM_BYTES) * STREAM_OVERHEAD)
    return estimate_from_snapshots(chain, snap, base.snap, intermediates=spec.intermediates)
