"""The size estimate behind ``m`` (bytes scheduled) of a replication, and the "modified" heuristic.

* Exact where the node's ZFS offers it: OpenZFS ``zfs send -nvP`` (the stream size it prints).
* Fallback (zfs-fuse 0.7 has no ``-nvP`` and no ``written``): space accounting, see
  :mod:`zfs_backend.zfs.estimate` — full stream ≈ ``referenced(S)``; ``-i B S`` ≈
  ``referenced(S) - referenced(B) + used(B)``; ``-I`` adds ``used`` of the snapshots between; times the
  measured stream overhead (1.0025). It can be low (blocks of ``B`` freed but shared with an older
  snapshot) or high (compression is not seen by the stream size), so it is only a first ``m``.
* ``m`` is then never below ``n``: the activity store lifts ``m`` to ``n`` whenever the stream
  outgrows the estimate, and on success ``n == m ==`` the bytes actually streamed.

:func:`destination_modified` decides whether a destination's head changed after its newest snapshot
enough to count as diverged. Reading files updates atime, which ZFS counts as a modification (a
plain incremental ``recv`` then refuses), so small metadata-sized changes are tolerated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..zfs.api import Zfs
from ..zfs.models import Dataset, SendSpec, Snapshot

__all__ = [
    "MODIFIED_SLACK_BYTES",
    "SPACE_MARGIN",
    "Estimate",
    "destination_modified",
    "estimate_send",
    "needed_space",
]

#: Changes below this (atime updates, metadata) do not make a destination "modified".
MODIFIED_SLACK_BYTES = 1 << 20
#: The destination must have the estimate times this, plus 8 MiB, available.
SPACE_MARGIN = 1.05


@dataclass(frozen=True)
class Estimate:
    """``bytes``: the stream size; ``exact``: measured by the node's ZFS (not a heuristic)."""

    bytes: int
    exact: bool
    method: str


def estimate_send(zfs: Zfs, spec: SendSpec) -> Estimate:
    """The stream size of ``spec`` on ``zfs``'s node: ``send -nvP`` where the dialect has it, else the
    space-accounting fallback."""
    if zfs.dialect.send_estimate:
        exact = zfs.estimate_send_size(spec)
        if exact is not None:
            return Estimate(exact, True, "send -nvP")
    return Estimate(zfs.estimate_send_size_from_space(spec), False, "space accounting")


def needed_space(estimate: int) -> int:
    """Bytes the destination must have available for a stream of ``estimate`` bytes."""
    return int(estimate * SPACE_MARGIN) + (8 << 20)


def destination_modified(head: Dataset, snapshots: Sequence[Snapshot], written: int | None = None) -> bool:
    """Whether ``head`` changed after its newest snapshot by more than :data:`MODIFIED_SLACK_BYTES`.

    ``written``: the ``written`` property where the dialect has it (exact). Otherwise a heuristic from
    space accounting: growth (``referenced`` of the head minus the snapshot's) or overwrites/deletes
    (the snapshot's ``used``, blocks only it still holds). zfs-fuse updates space accounting only when
    a transaction group syncs (up to ~30 s), so very recent changes can be missed.
    """
    if not snapshots:
        return head.referenced > MODIFIED_SLACK_BYTES
    if written is not None:
        return written > MODIFIED_SLACK_BYTES
    last = max(snapshots, key=lambda s: s.createtxg)
    return abs(head.referenced - last.referenced) > MODIFIED_SLACK_BYTES or last.used > MODIFIED_SLACK_BYTES
