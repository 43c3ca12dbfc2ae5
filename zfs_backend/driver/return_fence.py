"""Fence an old primary that comes back: the volumes a forced failover moved away while their old
primary did not answer keep a copy there, still exported. At each stats refresh of a failed-over backend
(Cinder's ``backend_stats_polling_interval``), :class:`ReturnFence` looks for such volumes (their
``replication_driver_data`` says ``old_primary: not fenced ...``, see :func:`.failover.fence_old_primary`)
and, once the old primary answers, unexports them there and makes them read-only, then records
``old_primary: fenced``. Nothing is destroyed: the copy may hold writes the standby never received. While
the node stays silent it is tried again every ``RETRY_S`` seconds (a try can block a refresh for the SSH
connect timeout). Cinder's side (its volumes, its database) comes in as callables from the adapter.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from .failover import fence_old_primary
from .models import Volume
from .zfs_nfs import ZfsNfsDriver

__all__ = ["RETRY_S", "ReturnFence", "unfenced"]

RETRY_S = 30.0
log = logging.getLogger("zfs_backend.driver")


def unfenced(driver_data: str | None) -> dict[str, Any] | None:
    """The volume's ``replication_driver_data`` when it says the old primary's copy is not fenced."""
    try:
        data = json.loads(driver_data or "{}")
    except ValueError:
        return None
    if isinstance(data, dict) and str(data.get("old_primary", "")).startswith("not fenced"):
        return data
    return None


class ReturnFence:
    """``primary()``: a core driver for the old primary, not set up. ``failed_over()``: the backend's
    failed-over volumes as ``(volume, replication_driver_data)``; ``record(volume, data)`` stores a
    volume's new ``replication_driver_data``. ``volume`` may be anything the adapter knows: ``to_core``
    turns it into the core's ``Volume``."""

    def __init__(
        self,
        primary: Callable[[], ZfsNfsDriver],
        failed_over: Callable[[], Sequence[tuple[Any, str | None]]],
        record: Callable[[Any, str], None],
        to_core: Callable[[Any], Volume],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.failed_over = failed_over
        self.record = record
        self.to_core = to_core
        self.clock = clock
        self._next_try = 0.0

    def run(self) -> list[Any]:
        """One pass; returns the volumes fenced now."""
        todo = [(v, data) for v, raw in self.failed_over() if (data := unfenced(raw)) is not None]
        if not todo or self.clock() < self._next_try:
            return []
        d = self.primary()
        try:
            d.do_setup()
        except Exception as e:  # the node still gone (refused, timed out, no route): later
            self._next_try = self.clock() + RETRY_S
            node, n = d.options.node, len(todo)
            log.info("old primary %s still unreachable (%d volume(s) to fence): %s", node, n, e)
            return []
        cores = [(v, data, self.to_core(v)) for v, data in todo]
        try:
            result = fence_old_primary(d, [c for _, _, c in cores])
        finally:
            if d.host is not None:
                d.host.close()
        done = []
        for v, data, core in cores:
            if result.get(core.id) == "fenced":
                data["old_primary"] = "fenced"
                self.record(v, json.dumps(data))
                done.append(v)
        if done:
            log.warning("old primary %s answers again: fenced %d volume(s)", d.options.node, len(done))
        if len(done) < len(todo):
            self._next_try = self.clock() + RETRY_S
        return done
