"""Live controls of a pipeline activity: its bandwidth limit, changed while the stream runs, and the
stall watchdog. Mixed into ``pipeline.PipelineActivity``, which provides the attributes declared below.

* ``set_bwlimit(bps)`` (the agent's ``set`` op, ``zfs-backend activity set ID --bwlimit RATE|none``):
  the running relay takes the new rate before its next chunk (``Relay.set_rate``): no process is
  restarted, no byte is sent twice. The rate is kept in the checkpoint (``bwlimit_bps``; 0 = none), so a
  later attempt of the same activity (a retry, an agent restart) keeps it; each change is an event.
* The stall watchdog (``_watch_stall``, run by the pipeline's ticker every ``persist_interval_s``): a
  stream whose relay moved no byte for ``stall_timeout_s`` while running and not paused is torn down —
  the relay stopped with the reason, both process groups killed — and the stream fails with
  "stalled: …", an event says so, and the attempt is retried as any broken stream (a replication
  restarts from its resume token or the newest common snapshot, see ``Replicate.on_restart``). A
  suspended activity is never stalled (a paused relay is not idle), and a throttled one moves a batch
  at least every 4 s (4 KiB at the lowest rate, 1 KiB/s), far below the smallest timeout accepted.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from typing import Any

from ..errors import InvalidTransition
from .core import ActivityContext
from .limits import DEFAULT_STALL_TIMEOUT_S, parse_bwlimit_setting, parse_stall_timeout
from .procs import kill_process_group
from .relay import Relay
from .report import ActivityRecord
from .states import RUNNING, TERMINAL

__all__ = ["LiveControls"]


class LiveControls:
    """The bandwidth limit and the stall watchdog of a pipeline activity (see the module doc)."""

    ctx: ActivityContext
    _cond: threading.Condition
    _cp: dict[str, Any]
    _relay: Relay | None
    _procs: list[subprocess.Popen[bytes]]
    bwlimit_bps: float | None
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        if "stall_timeout_s" in record.params:  # refused before anything is stored
            self.stall_timeout_s = parse_stall_timeout(record.params["stall_timeout_s"])
        super().__init__(record, ctx)  # type: ignore[call-arg]

    # the activity's (LocalActivity) ------------------------------------------------------------
    id: str
    state: str
    params: dict[str, Any]

    def _persist(self) -> None:
        raise NotImplementedError

    # -- the bandwidth limit ----------------------------------------------------------------------
    def set_bwlimit(self, bwlimit_bps: int | None) -> None:
        """Change (None: lift) the limit of this activity, its running stream included."""
        rate = parse_bwlimit_setting(bwlimit_bps)
        with self._cond:
            if self.state in TERMINAL:
                raise InvalidTransition(
                    f"activity {self.id} is {self.state}: its bandwidth limit cannot change"
                )
            self._cp["bwlimit_bps"] = rate or 0
            if self._relay is not None:
                self._relay.set_rate(rate)
        self.ctx.store.note(self.id, f"bwlimit set to {rate} bytes/s" if rate else "bwlimit lifted")
        self.ctx.log.info("activity %s: bwlimit %s", self.id, rate or "none")
        self._persist()

    def _bwlimit(self) -> float | None:
        """The limit the next stream starts with: the last one set, else the params', else the kind's."""
        v = self._cp["bwlimit_bps"] if "bwlimit_bps" in self._cp else self.params.get("bwlimit_bps")
        v = self.bwlimit_bps if v is None else v
        return float(v) if v else None

    # -- the stall watchdog -----------------------------------------------------------------------
    def _watch_stall(self) -> None:
        relay = self._relay
        if relay is None or relay.torn_down is not None or self.state != RUNNING:
            return
        idle = relay.idle_s()
        if idle < self.stall_timeout_s:
            return
        reason = (
            f"stalled: no byte moved for {idle:.0f} s (stall_timeout {self.stall_timeout_s:g} s); "
            "stream torn down, to restart from the resume token or the newest common snapshot"
        )
        relay.tear_down(reason)
        with self._cond:
            procs = list(self._procs)
        self.ctx.log.warning("activity %s: %s", self.id, reason)
        with contextlib.suppress(Exception):
            self.ctx.store.note(self.id, reason)
        for p in procs:
            kill_process_group(p.pid, grace_s=1.0)
