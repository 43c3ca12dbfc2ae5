"""Backend activities seen from Cinder: each volume's activity in its metadata, the running ones in
the pool's capabilities.

At every stats refresh (cinder-volume's periodic ``_report_driver_status``, every
``backend_stats_polling_interval`` seconds) the adapter asks its node's agent for its activities and,
for each Cinder volume of its backend that one concerns (:mod:`zfs_backend.driver.activities`: a
parameter names the volume's filesystem, by ``name_id``), sets the volume's metadata key
:data:`ACTIVITY_KEY` to one line: kind, state, progress ``n of m`` and unit, activity id and node (e.g.
``replicate running 104857600 of 536870912 bytes (act-... on node1)``). ``cinder show`` and ``cinder
metadata-show`` print it; it stays with the final state (``succeeded``, ``cancelled``, ``failed: ...``)
until the volume's next activity. The key is written only when its line changes, through Cinder's own
``volume_metadata_update`` (``delete=False``: the user's other keys are untouched).

Cinder shows a volume's admin metadata to nobody (only ``readonly`` and ``attached_mode`` reach its
API), and ``migration_status`` / ``replication_status`` are states its manager acts upon, so the
user-visible metadata is where a driver can publish without new Cinder code. Suspend, resume, cancel,
resources and history remain ``zfs-backend activity`` commands.
"""

from __future__ import annotations

import logging
from typing import Any

from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from ..config import Settings
from ..driver.activities import activity_line, latest_by_volume, node_activities
from ..errors import ZfsBackendError

__all__ = ["ACTIVITY_KEY", "RUNNING_KEY", "ActivityPublisher"]

ACTIVITY_KEY = "zfs_backend:activity"
RUNNING_KEY = "running_activities"  # in the stats: the pool's capabilities (cinder get-pools --detail)

log = logging.getLogger("zfs_backend.cinder")


class ActivityPublisher:
    """Publishes one backend's activities into Cinder's database (``db``: cinder's db API module)."""

    def __init__(self, node: str, parent: str, settings: Settings, host: str, db: Any) -> None:
        self.node = node
        self.parent = parent
        self.settings = settings
        self.host = host  # cinder's host@backend of this driver
        self.db = db
        self._written: dict[str, str] = {}  # cinder volume id -> line last written

    def publish(self) -> list[str]:
        """Update the volumes' metadata; returns the lines of the running activities (for the stats)."""
        try:
            records = node_activities(self.node, self.settings)
        except ZfsBackendError as e:
            log.warning("%s: cannot list the agent's activities: %s", self.node, e)
            return []
        latest = latest_by_volume(records, self.parent)
        running: list[str] = []
        if latest:
            self._write(latest)
        for vid, rec in sorted(latest.items()):
            if rec.state not in TERMINAL:
                running.append(f"volume-{vid}: {activity_line(rec)}")
        return running

    def _write(self, latest: dict[str, ActivityRecord]) -> None:
        from cinder import context, objects  # type: ignore[import-not-found]

        ctx = context.get_admin_context()
        for vol in objects.VolumeList.get_all_by_host(ctx, self.host):
            rec = latest.get(str(vol.name_id))
            if rec is None:
                continue
            line = activity_line(rec)
            if self._written.get(vol.id) == line:
                continue
            try:
                self.db.volume_metadata_update(ctx, vol.id, {ACTIVITY_KEY: line}, False)
            except Exception as e:  # a volume deleted meanwhile, a busy database: next refresh
                log.warning("volume %s: cannot publish its activity: %s", vol.id, e)
                continue
            self._written[vol.id] = line
