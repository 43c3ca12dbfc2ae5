"""The retention of finished activities: the node agent prunes its store, at start and then every
``PRUNE_INTERVAL_S``, down to the ``Settings.activity_keep`` activities that finished last, none finished
more than ``Settings.activity_keep_days`` ago.

Invariants: only terminal records (and their events) are deleted, the state checked in the deleting
transaction itself (``ActivityStore.prune``), so a live, suspended or cancelling activity is never
pruned whatever its age; pruning runs in its own daemon thread in short transactions, and a failure is
logged and retried at the next round, never taking the agent down.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..activity.store import ActivityStore
from ..config import Settings

__all__ = ["PRUNE_INTERVAL_S", "Pruner", "Retention"]

PRUNE_INTERVAL_S = 300.0
DAY_S = 86400.0


@dataclass(frozen=True)
class Retention:
    """Keep the ``keep`` finished activities that finished last, none older than ``max_age_s``."""

    keep: int
    max_age_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(keep=settings.activity_keep, max_age_s=settings.activity_keep_days * DAY_S)

    def apply(self, store: ActivityStore, now: float | None = None) -> int:
        """Prune ``store`` once; returns how many records went."""
        return store.prune(keep=self.keep, max_age_s=self.max_age_s, now=now)


class Pruner(threading.Thread):
    """Applies a ``Retention`` to a store now and every ``interval`` seconds until ``stop()``."""

    def __init__(
        self,
        store: ActivityStore,
        retention: Retention,
        log: logging.Logger,
        interval: float = PRUNE_INTERVAL_S,
    ) -> None:
        super().__init__(name="agent-retention", daemon=True)
        self.store, self.retention, self.log, self.interval = store, retention, log, interval
        self._halt = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                gone = self.retention.apply(self.store)
            except Exception:  # a locked or failing store: try again next round, keep serving
                self.log.exception("pruning finished activities failed")
            else:
                if gone:
                    r = self.retention
                    extra = {"pruned": gone, "keep": r.keep, "max_age_s": r.max_age_s}
                    self.log.info("pruned finished activities", extra=extra)
            self.rounds += 1
            self._halt.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)
