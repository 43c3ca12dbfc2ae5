"""The primary's side of a standby's common base: the new base held (``zfs hold``, tag
``zfs_backend:<activity>``, where the ZFS has user holds), the previous one released, and the older
snapshots that are the activity's own (its checkpoint's ``own`` list: the ones it took) destroyed. Mixed
into :class:`~.standby.StandbySync`; nothing else is ever released or destroyed here, and a release that
fails stays recorded (checkpoint ``held``) for ``activity holds``."""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import DatasetExists, ZfsBackendError
from ..replication.receiver_standby import hold_tag
from ..zfs.api import Zfs
from ..zfs.names import DatasetName, SnapshotName

__all__ = ["PrimaryBase"]


class PrimaryBase:
    """What it needs from the activity: its id, dataset, checkpoint, ZFS and ``_save``."""

    id: str
    dataset: DatasetName
    _cp: dict[str, Any]
    _zfs: Zfs

    def _save(self, *, result: bool = True) -> None:
        raise NotImplementedError

    def _local_base(self, snap: str) -> None:
        """On the primary: hold the new base, release the old one, prune the own snapshots before it."""
        new = SnapshotName(self.dataset, snap)
        tag = hold_tag(self.id)
        if self._zfs.dialect.user_holds and self._cp.get("held") != snap:
            with contextlib.suppress(DatasetExists):  # a restart after the hold, before it was recorded
                self._zfs.hold(new, tag)
            old = self._cp.get("held")
            if old:
                with contextlib.suppress(ZfsBackendError):
                    self._zfs.release(SnapshotName(self.dataset, old), tag)
            self._cp["held"] = snap
        own = list(self._cp.get("own", []))
        keep = own[own.index(snap) :] if snap in own else [snap]
        for name in own:
            if name not in keep:
                self._zfs.destroy(SnapshotName(self.dataset, name), deadline=10.0, missing_ok=True)
        self._cp.update(own=keep, taken={k: v for k, v in self._cp.get("taken", {}).items() if k in keep})
        self._save(result=False)

    def _release_local_hold(self) -> None:
        """Whatever else failed (a release that fails stays recorded for ``activity holds``)."""
        held = self._cp.get("held")
        with contextlib.suppress(ZfsBackendError):
            if held:
                self._zfs.release(SnapshotName(self.dataset, held), hold_tag(self.id))
            self._cp["held"] = None
