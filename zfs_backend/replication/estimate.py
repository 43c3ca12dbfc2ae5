"""The size estimate behind ``m`` (bytes scheduled) of a replication, and the space it needs.

* Exact where the node's ZFS offers it: OpenZFS ``zfs send -nvP`` (the stream size it prints).
* Fallback (zfs-fuse 0.7 has no ``-nvP`` and no ``written``): space accounting, see
  :mod:`zfs_backend.zfs.estimate` — full stream ≈ ``referenced(S)``; ``-i B S`` ≈
  ``referenced(S) - referenced(B) + used(B)``; ``-I`` adds ``used`` of the snapshots between; times the
  measured stream overhead (1.0025). It can be low (blocks of ``B`` freed but shared with an older
  snapshot) or high (compression is not seen by the stream size), so it is only a first ``m``.
* ``m`` is then never below ``n``: the activity store lifts ``m`` to ``n`` whenever the stream
  outgrows the estimate, and on success ``n == m ==`` the bytes actually streamed.

Whether a destination changed after its newest snapshot is not guessed here from space accounting: the
destination's receiver asks its own ZFS exactly (``zfs_backend.zfs.changes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..zfs.api import Zfs
from ..zfs.models import SendSpec
from .plan import NO_SPACE, Conflict

__all__ = ["SPACE_MARGIN", "Estimate", "check_space", "estimate_send", "needed_space"]

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


def check_space(available: int | None, estimate: Estimate, where: str) -> None:
    """Refuse (``InsufficientSpace``) when the destination has less than the estimate needs."""
    if available is None:
        return
    need = needed_space(estimate.bytes)
    if available < need:
        raise Conflict(
            NO_SPACE,
            f"{where}: the destination has {available >> 20} MiB available; the stream needs about "
            f"{need >> 20} MiB ({estimate.bytes >> 20} MiB by {estimate.method}, plus margin)",
        ).error()
