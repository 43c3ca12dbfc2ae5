"""The replication cursor: a bookmark on the source of what the destination holds (zrepl's cursor,
syncoid's ``--create-bookmark``), so that the source may prune its snapshots and the next increment
still has a base: the planner matches the bookmark's GUID with the destination's snapshots
(:func:`~.plan.incremental_path`, ``bookmarks``) and sends ``zfs send -i #mark``.

One cursor per relationship (source dataset, destination node and dataset): ``zfs_backend_cursor_<h>_<guid>``
where ``<h>`` names the destination (a hash) and ``<guid>`` the snapshot it holds. After each success the
new cursor is made and the relationship's older ones are destroyed: a bookmark holds no data, and only
bookmarks carrying this relationship's prefix are ever touched. Where the source has no bookmarks
(zfs-fuse), nothing is done.
"""

from __future__ import annotations

import hashlib

from ..errors import ZfsBackendError
from ..zfs.api import Zfs
from ..zfs.models import Bookmark
from ..zfs.names import BookmarkName, DatasetName, SnapshotName

__all__ = ["cursor_prefix", "keep_cursor", "relationship_bookmarks"]


def cursor_prefix(destination_node: str, destination: str) -> str:
    h = hashlib.sha256(f"{destination_node}:{destination}".encode()).hexdigest()[:12]
    return f"zfs_backend_cursor_{h}_"


def relationship_bookmarks(zfs: Zfs, dataset: DatasetName, prefix: str) -> list[Bookmark]:
    """This relationship's cursors on the source dataset (none where it has no bookmarks)."""
    return [b for b in zfs.list_bookmarks(dataset) if b.mark.startswith(prefix)]


def keep_cursor(zfs: Zfs, snapshot: SnapshotName, guid: int, prefix: str) -> dict[str, object]:
    """Bookmark ``snapshot`` (GUID ``guid``, now on the destination) as the relationship's cursor and
    destroy its older cursors. Returns what it did (``cursor``, ``dropped``), or ``error``: a cursor
    is an optimisation, never a reason to fail a replication that succeeded."""
    if not zfs.dialect.bookmarks:
        return {}
    mark = BookmarkName(snapshot.dataset, f"{prefix}{guid}")
    try:
        old = relationship_bookmarks(zfs, snapshot.dataset, prefix)
        if not any(b.name == mark for b in old):
            zfs.bookmark(snapshot, mark)
        dropped = []
        for b in old:
            if b.name != mark:
                zfs.destroy(b.name, missing_ok=True)
                dropped.append(b.mark)
    except ZfsBackendError as e:
        return {"error": f"cursor bookmark {mark}: {e}"}
    return {"cursor": mark.name, "dropped": dropped}
