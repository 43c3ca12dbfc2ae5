"""The replication planner: pure functions over snapshot listings, no I/O.

``incremental_path(source, destination, target, ...)`` matches snapshots **by GUID** (never by name)
and returns either a :class:`Plan` (full stream, or incremental from the newest common snapshot) or a
:class:`Conflict` (plain data naming why nothing may be sent). ``Conflict.error()`` turns a conflict
into the :class:`~zfs_backend.errors.ReplicationConflict` subclass callers catch.

Rules (see ``docs/replication.md``):

* no destination dataset: a full stream (``incremental_from`` is then a conflict);
* ``force_full_copy``: a full stream into a *new* dataset; an existing destination is a conflict;
* otherwise the base is the newest source snapshot older than ``target`` whose GUID the destination
  holds (or ``incremental_from``, which must be such a snapshot); or, when the source's ``bookmarks``
  hold a newer such GUID (the source pruned the snapshots: a bookmark of what the destination holds),
  that bookmark (``-i #mark``, never ``-I``); none: a conflict;
* the destination already holding ``target``'s GUID: a conflict (``up-to-date``);
* the destination has snapshots newer than its copy of the base, or was modified after it: diverged,
  a conflict unless ``rollback_destination`` (the plan then names what the rollback destroys).

``check_children`` applies the same rules to every child of a recursive incremental (``send -R -i``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import (
    AlreadyRunning,
    DestinationDiverged,
    DestinationExistsConflict,
    InsufficientSpace,
    NoCommonBase,
    ReplicationConflict,
    UpToDate,
)
from ..zfs.models import Bookmark, SendSpec, Snapshot

__all__ = [
    "ALREADY_RUNNING",
    "DESTINATION_EXISTS",
    "DIVERGED",
    "NO_COMMON_BASE",
    "NO_SPACE",
    "UP_TO_DATE",
    "AlreadyRunning",
    "Conflict",
    "DestinationDiverged",
    "DestinationExistsConflict",
    "InsufficientSpace",
    "NoCommonBase",
    "Plan",
    "UpToDate",
    "check_children",
    "incremental_path",
]

DIVERGED = "diverged"
NO_COMMON_BASE = "no-common-base"
DESTINATION_EXISTS = "destination-exists"
UP_TO_DATE = "up-to-date"
NO_SPACE = "no-space"
ALREADY_RUNNING = "already-running"


_ERRORS: dict[str, type[ReplicationConflict]] = {
    DIVERGED: DestinationDiverged,
    NO_COMMON_BASE: NoCommonBase,
    DESTINATION_EXISTS: DestinationExistsConflict,
    UP_TO_DATE: UpToDate,
    NO_SPACE: InsufficientSpace,
    ALREADY_RUNNING: AlreadyRunning,
}


@dataclass(frozen=True)
class Conflict:
    """Why nothing may be sent: ``kind`` (one of the constants above) and a one-line ``reason``."""

    kind: str
    reason: str

    def error(self) -> ReplicationConflict:
        return _ERRORS.get(self.kind, ReplicationConflict)(self.reason)


@dataclass(frozen=True)
class Plan:
    """What to send. ``base`` is the source's snapshot, ``dest_base`` the destination's copy of it
    (same GUID, possibly another name). ``rollback_to`` is set when the destination must first be
    rolled back (``rollback_destination``); ``destroys`` lists the destination snapshots that rollback
    destroys."""

    target: Snapshot
    base: Snapshot | None = None
    dest_base: Snapshot | None = None
    #: the source's bookmark the increment is sent from, where no newer common snapshot is left
    base_bookmark: Bookmark | None = None
    intermediates: bool = False
    destination_exists: bool = False
    rollback_to: Snapshot | None = None
    destroys: tuple[Snapshot, ...] = ()
    discards_changes: bool = False

    @property
    def full(self) -> bool:
        return self.base is None and self.base_bookmark is None

    @property
    def base_guid(self) -> int | None:
        b = self.base or self.base_bookmark
        return None if b is None else b.guid

    def send_spec(
        self, *, recursive: bool = False, properties: bool = False, flags: Mapping[str, bool] | None = None
    ) -> SendSpec:
        """``flags``: ``large_blocks``/``compressed``/``embedded`` (``-L -c -e``), where both ends
        have them; ``raw`` (``-w``), asked for an encrypted dataset."""
        f = flags or {}
        return SendSpec(
            snapshot=self.target.name,
            incremental_from=(
                self.base.name
                if self.base is not None
                else None
                if self.base_bookmark is None
                else self.base_bookmark.name
            ),
            intermediates=self.intermediates and self.base is not None,
            recursive=recursive,
            properties=properties,
            large_blocks=bool(f.get("large_blocks")),
            compressed=bool(f.get("compressed")),
            embedded=bool(f.get("embedded")),
            raw=bool(f.get("raw")),
        )

    def describe(self) -> str:
        if self.base_bookmark is not None:
            return f"incremental -i #{self.base_bookmark.mark} {self.target.name}"
        if self.base is None:
            return f"full stream of {self.target.name}"
        flag = "-I" if self.intermediates else "-i"
        return f"incremental {flag} @{self.base.snap} {self.target.name}"


def _short(s: str) -> str:
    return s.rpartition("@")[2]


def incremental_path(
    source: Sequence[Snapshot],
    destination: Sequence[Snapshot] | None,
    target: str | Snapshot,
    *,
    force_full_copy: bool = False,
    incremental_from: str | None = None,
    intermediates: bool = False,
    rollback_destination: bool = False,
    destination_modified: bool = False,
    modified_detail: str = "",
    bookmarks: Sequence[Bookmark] = (),
) -> Plan | Conflict:
    """Plan one dataset's replication (see the module doc).

    ``source``: the source dataset's snapshots; ``destination``: the destination dataset's snapshots,
    or None when it does not exist; ``target``: the snapshot to send (short name or ``Snapshot``; it
    must be in ``source``, else ``ValueError``); ``incremental_from``: short or full name of a source
    snapshot; ``destination_modified``: the destination's data changed after its newest snapshot
    (``modified_detail``: how, for the message).
    """
    src = sorted(source, key=lambda s: s.createtxg)
    want = target.guid if isinstance(target, Snapshot) else None
    name = target.snap if isinstance(target, Snapshot) else _short(target)
    tgt = next((s for s in src if (s.guid == want if want is not None else s.snap == name)), None)
    if tgt is None:
        raise ValueError(f"target @{name} is not among the source snapshots")
    if destination is None:
        if incremental_from is not None:
            return Conflict(
                NO_COMMON_BASE,
                f"an incremental from @{_short(incremental_from)} needs an existing destination; "
                "it does not exist",
            )
        return Plan(target=tgt)
    dst = sorted(destination, key=lambda s: s.createtxg)
    if force_full_copy:
        return Conflict(
            DESTINATION_EXISTS,
            "a full copy goes into a new dataset, and the destination exists "
            "(name another destination, or drop force_full_copy for an incremental)",
        )
    by_guid = {s.guid: s for s in dst}
    if tgt.guid in by_guid:
        return Conflict(
            UP_TO_DATE,
            f"the destination already holds @{tgt.snap} (as @{by_guid[tgt.guid].snap}, same GUID)",
        )
    common = [s for s in src if s.guid in by_guid and s.createtxg < tgt.createtxg]
    if incremental_from is not None:
        short = _short(incremental_from)
        base = next((s for s in src if s.snap == short), None)
        if base is None:
            return Conflict(NO_COMMON_BASE, f"@{short} is not a snapshot of the source")
        if base.createtxg >= tgt.createtxg:
            return Conflict(NO_COMMON_BASE, f"@{short} is not older than @{tgt.snap}")
        if base.guid not in by_guid:
            return Conflict(
                NO_COMMON_BASE,
                f"the destination has no snapshot with the GUID of @{short} (names do not count)",
            )
    else:
        marks = sorted(
            (b for b in bookmarks if b.guid in by_guid and b.createtxg < tgt.createtxg),
            key=lambda b: b.createtxg,
        )
        if marks and (not common or marks[-1].createtxg > common[-1].createtxg):
            # the source pruned the snapshots the destination holds, or their newest: its bookmark
            return _from_bookmark(tgt, marks[-1], by_guid[marks[-1].guid], dst, rollback_destination,
                                  destination_modified, modified_detail)  # fmt: skip
        if not common:
            return Conflict(
                NO_COMMON_BASE,
                "the destination exists but shares no snapshot (by GUID) with the source; "
                "replicate into a new dataset (force_full_copy) instead",
            )
        base = common[-1]
    dest_base = by_guid[base.guid]
    newer = tuple(s for s in dst if s.createtxg > dest_base.createtxg)
    diverged = _diverged(dest_base, newer, rollback_destination, destination_modified, modified_detail)
    if diverged is not None:
        return diverged
    return Plan(
        target=tgt,
        base=base,
        dest_base=dest_base,
        intermediates=intermediates,
        destination_exists=True,
        rollback_to=dest_base if (newer or destination_modified) else None,
        destroys=newer,
        discards_changes=destination_modified,
    )


def _diverged(
    dest_base: Snapshot, newer: tuple[Snapshot, ...], rollback: bool, modified: bool, detail: str
) -> Conflict | None:
    if not (newer or modified) or rollback:
        return None
    what = []
    if newer:
        what.append("newer snapshots " + ", ".join(f"@{s.snap}" for s in newer))
    if modified:
        what.append("data changed after its newest snapshot" + (f" ({detail})" if detail else ""))
    return Conflict(
        DIVERGED,
        f"the destination diverged after @{dest_base.snap}: {'; '.join(what)}; nothing was changed "
        "(rollback_destination would discard it)",
    )


def _from_bookmark(
    tgt: Snapshot,
    mark: Bookmark,
    dest_base: Snapshot,
    dst: Sequence[Snapshot],
    rollback: bool,
    modified: bool,
    detail: str,
) -> Plan | Conflict:
    """An increment ``-i #mark``: the destination's copy of the bookmarked snapshot is the base."""
    newer = tuple(s for s in dst if s.createtxg > dest_base.createtxg)
    diverged = _diverged(dest_base, newer, rollback, modified, detail)
    if diverged is not None:
        return diverged
    return Plan(
        target=tgt,
        base_bookmark=mark,
        dest_base=dest_base,
        destination_exists=True,
        rollback_to=dest_base if (newer or modified) else None,
        destroys=newer,
        discards_changes=modified,
    )


def check_children(
    source: Mapping[str, Sequence[Snapshot]],
    destination: Mapping[str, tuple[Sequence[Snapshot], bool]],
    base: str,
    *,
    rollback_destination: bool = False,
) -> dict[str, int] | Conflict:
    """The children of a recursive incremental from ``@base`` (names relative to the top; ``""``, the
    top, is left to :func:`incremental_path`). ``source``: each source dataset's snapshots;
    ``destination``: each destination dataset's snapshots and whether its head changed after them.

    A destination child the source does not have is left alone (a receive without ``-F`` never touches
    it); a source child the destination does not have is created by the stream. A child both hold must
    hold the source's ``@base`` by GUID; newer snapshots or changes after it are a conflict unless
    ``rollback_destination``. Returns the children to roll back to their base (name -> base GUID).
    """
    discard: dict[str, int] = {}
    for rel, (snaps, changed) in sorted(destination.items()):
        if not rel or rel not in source:
            continue
        sbase = next((s for s in source[rel] if s.snap == base), None)
        if sbase is None:
            return Conflict(
                NO_COMMON_BASE,
                f"child {rel} exists on the destination, but the source's {rel} has no @{base}: "
                "the stream would create it",
            )
        dbase = next((s for s in snaps if s.guid == sbase.guid), None)
        if dbase is None:
            return Conflict(NO_COMMON_BASE, f"child {rel} on the destination does not hold @{base} (by GUID)")
        newer = [s for s in snaps if s.createtxg > dbase.createtxg]
        if newer or changed:
            if not rollback_destination:
                what = ", ".join(f"@{s.snap}" for s in newer) or "data changed after its newest snapshot"
                return Conflict(
                    DIVERGED,
                    f"child {rel} on the destination diverged after @{dbase.snap}: {what} "
                    "(rollback_destination discards it)",
                )
            discard[rel] = sbase.guid
    return discard
