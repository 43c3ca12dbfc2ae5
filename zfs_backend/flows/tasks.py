"""Tasks every flow uses: the capability check that picks a path, and the volume's dual state.

**Dual states** ("dual states with attribute"): a flow has its own state (TaskFlow's, in the logbook:
``zfs-backend flow list``). When the volume's driver does not publish ``stateless_volume_operations``,
the flow also moves the volume to a busy status (:data:`BUSY`) and back (:class:`MarkBusy` …
:class:`MarkDone`; a revert gives the old status back); when it does, the volume stays ``available``
or ``in-use``, and writable, throughout.
"""

from __future__ import annotations

from typing import Any

from taskflow import task
from taskflow.types import failure

from ..errors import CapabilityMissing
from .env import env

__all__ = ["BUSY", "CheckCapabilities", "MarkBusy", "MarkDone", "UsableStatuses"]

#: Cinder's status for a volume a driver operation holds (no user operation may start meanwhile)
BUSY = "maintenance"
UsableStatuses = ("available", "in-use")


class CheckCapabilities(task.Task):
    """Reads the published capabilities of a node's driver (``get_volume_stats(refresh=True)``):
    refuses when one in ``need`` is missing; provides ``path`` (``backend`` when the driver publishes
    ``snapshot_replicate``, else ``generic``: the controller streams the data itself) and ``stateless``
    (``stateless_volume_operations``). The result is kept in the logbook: a resumed flow takes the same
    path."""

    default_provides = ("path", "stateless")

    def __init__(self, name: str, need: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.need = tuple(need)

    def execute(self, node: str) -> tuple[str, bool]:
        st = env().stats(node)
        missing = [k for k in self.need if not st.get(k)]
        if missing:
            raise CapabilityMissing(f"{node}: the driver does not publish {', '.join(missing)}")
        return ("backend" if st.get("snapshot_replicate") else "generic"), bool(
            st.get("stateless_volume_operations")
        )


class MarkBusy(task.Task):
    """Without ``stateless_volume_operations``: the volume goes :data:`BUSY` (provides its previous
    status, restored by :class:`MarkDone` or by this task's revert); with it: nothing changes."""

    default_provides = "previous_status"

    def execute(self, volume: str, stateless: bool) -> str | None:
        if stateless:
            return None
        svc = env().service()
        rec = svc.get_volume(volume)
        if rec.status not in UsableStatuses:
            from ..driver.errors import VolumeBusy

            raise VolumeBusy(f"volume {volume} is {rec.status}")
        previous = str(rec.status)
        svc.set_status(volume, BUSY, expect=previous)
        return previous

    def revert(self, volume: str, stateless: bool, result: Any, **kwargs: Any) -> None:
        if isinstance(result, str):
            env().service().set_status(volume, result)


class MarkDone(task.Task):
    """The volume's status back from :data:`BUSY` (nothing when it never left it)."""

    def execute(self, volume: str, previous_status: str | None) -> None:
        if previous_status:
            env().service().set_status(volume, previous_status)

    def revert(self, volume: str, previous_status: str | None, result: Any, **kwargs: Any) -> None:
        if previous_status and not isinstance(result, failure.Failure):  # it had given the status back
            env().service().set_status(volume, BUSY)
