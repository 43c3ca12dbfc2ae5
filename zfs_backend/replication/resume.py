"""Whether a destination's resume token continues the stream this replication planned. Pure.

A ``receive_resume_token`` is read from the destination (another node); ``zfs send -t`` sends whatever
it names. Before it is used, its nvlist (:mod:`zfs_backend.zfs.resume_token`) must name a snapshot of
the planned stream: ``toguid``/``toname`` the target (or, with ``-I``, one of the snapshots between the
base and the target, as the source holds them), ``fromguid`` the snapshot just before it in that chain
(the planned base for the first; none for a full stream). Anything else (a stream of another snapshot,
another dataset, another base, an edited or corrupt token) is refused with the reason, and the caller
discards the partial state only where it proves it owns the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ZfsError
from ..zfs.models import Snapshot
from ..zfs.names import DatasetName
from ..zfs.resume_token import decode_resume_token

__all__ = ["planned_chain", "resume_mismatch"]


def planned_chain(
    source: Sequence[Snapshot], target_guid: int, base_guid: int | None, *, intermediates: bool
) -> list[Snapshot]:
    """The snapshots the planned stream carries, oldest first: the target alone (``-i``, full), or
    every source snapshot after the base up to the target (``-I``). Empty when the source no longer
    holds the target (or the base, for ``-I``)."""
    snaps = sorted(source, key=lambda s: s.createtxg)
    at = next((i for i, s in enumerate(snaps) if s.guid == target_guid), None)
    if at is None:
        return []
    if not intermediates or base_guid is None:
        return [snaps[at]]
    base = next((i for i, s in enumerate(snaps) if s.guid == base_guid), None)
    return [] if base is None or base >= at else snaps[base + 1 : at + 1]


def resume_mismatch(
    token: str, dataset: DatasetName, chain: Sequence[Snapshot], base_guid: int | None
) -> str | None:
    """None when ``token`` resumes a snapshot of ``chain`` (of source ``dataset``) from its planned
    predecessor; else why not, in a few words."""
    try:
        tok = decode_resume_token(token)
    except ZfsError as e:
        return str(e)
    i = next((k for k, s in enumerate(chain) if s.guid == tok.toguid), None)
    if i is None:
        return f"it resumes {tok.toname} (guid {tok.toguid}), not a snapshot this replication sends"
    expected_name = f"{dataset}@{chain[i].snap}"
    if tok.toname != expected_name:
        return f"it names {tok.toname}, the planned snapshot is {expected_name}"
    expected_from = chain[i - 1].guid if i > 0 else base_guid
    fromguid = tok.fromguid or None  # OpenZFS leaves it out (or 0) for a full stream
    if fromguid != expected_from:
        return (
            f"it resumes {tok.toname} from guid {fromguid or 'none (full)'}, "
            f"the planned base is {expected_from or 'none (full)'}"
        )
    return None
