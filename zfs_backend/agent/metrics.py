"""The agent's Prometheus metrics (``prometheus-client``), read from its activities at each scrape.

``zfs-backend agent --metrics-address 127.0.0.1 --metrics-port 9464`` (loopback by default: a scrape
from elsewhere needs the address given on purpose; port 0 turns the exporter off). Served at
``/metrics`` by ``prometheus_client``'s own HTTP server, in a thread of the agent. Every sample is
computed at scrape time from the manager (live activities from memory, the others from the store):

==========================================  ======  =============================================
metric                                      type    labels / meaning
==========================================  ======  =============================================
``zfs_backend_activities``                  gauge   ``kind``, ``state``: how many activities
``zfs_backend_activity_bytes_total``        counter ``kind``: bytes moved (``progress.done``), all
``zfs_backend_activity_rate_bytes``         gauge   ``kind``: summed moving rate of running ones
``zfs_backend_activity_errors_total``       counter ``kind``: activities that ended ``failed``
``zfs_backend_activity_progress_bytes``     gauge   ``id``, ``kind``, ``state``: done of each live one
``zfs_backend_activity_total_bytes``        gauge   ``id``, ``kind``, ``state``: m of each live one
``zfs_backend_standby_lag_seconds``         gauge   ``id``: age of the newest synced snapshot of a
                                                    hot standby (``standby-sync`` kinds' ``result.lag_s``)
``zfs_backend_agent_up``                    gauge   1, with ``node`` (and the process collector's own)
==========================================  ======  =============================================
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..activity.states import FAILED, RUNNING, TERMINAL

if TYPE_CHECKING:
    from .manager import ActivityManager

__all__ = ["DEFAULT_METRICS_ADDRESS", "DEFAULT_METRICS_PORT", "ActivityCollector", "serve_metrics"]

DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_METRICS_PORT = 9464


class ActivityCollector:
    """A custom collector: one pass over the node's activities per scrape."""

    def __init__(self, manager: ActivityManager) -> None:
        self.manager = manager

    def describe(self) -> list[Any]:
        return []  # computed at scrape time: no fixed set to register up front

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        records = self.manager.list()
        live = {r.id: r for r in (self.manager.get(r.id) for r in records if r.state not in TERMINAL)}
        records = [live.get(r.id, r) for r in records]
        up = GaugeMetricFamily("zfs_backend_agent_up", "The node agent answers", labels=["node"])
        up.add_metric([self.manager.ctx.node], 1.0)
        yield up
        count = GaugeMetricFamily(
            "zfs_backend_activities", "Activities by kind and state", labels=["kind", "state"]
        )
        moved = CounterMetricFamily(
            "zfs_backend_activity_bytes", "Bytes moved by activities", labels=["kind"]
        )
        rate = GaugeMetricFamily("zfs_backend_activity_rate_bytes", "Bytes per second now", labels=["kind"])
        errors = CounterMetricFamily("zfs_backend_activity_errors", "Activities that failed", labels=["kind"])
        done = GaugeMetricFamily(
            "zfs_backend_activity_progress_bytes",
            "Done (n) of a live activity",
            labels=["id", "kind", "state"],
        )
        total = GaugeMetricFamily(
            "zfs_backend_activity_total_bytes",
            "Scheduled (m) of a live activity",
            labels=["id", "kind", "state"],
        )
        lag = GaugeMetricFamily("zfs_backend_standby_lag_seconds", "Hot standby lag", labels=["id"])
        by_state: dict[tuple[str, str], int] = {}
        by_kind: dict[str, list[float]] = {}
        for r in records:
            by_state[(r.kind, r.state)] = by_state.get((r.kind, r.state), 0) + 1
            k = by_kind.setdefault(r.kind, [0.0, 0.0, 0.0])
            k[0] += r.progress.done
            if r.state == RUNNING:
                k[1] += r.resources.rate_bps
            if r.state == FAILED:
                k[2] += 1
            if r.state not in TERMINAL:
                done.add_metric([r.id, r.kind, r.state], float(r.progress.done))
                total.add_metric([r.id, r.kind, r.state], float(r.progress.total))
                lag_s = r.result.get("lag_s") if isinstance(r.result, dict) else None
                if isinstance(lag_s, int | float):
                    lag.add_metric([r.id], float(lag_s))
        for (kind, state), n in sorted(by_state.items()):
            count.add_metric([kind, state], float(n))
        for kind, (b, rt, e) in sorted(by_kind.items()):
            moved.add_metric([kind], b)
            rate.add_metric([kind], rt)
            errors.add_metric([kind], e)
        yield from (count, moved, rate, errors, done, total, lag)


def serve_metrics(manager: ActivityManager, address: str, port: int) -> tuple[Any, threading.Thread]:
    """Start the exporter on ``address:port`` in a daemon thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(ActivityCollector(manager))  # type: ignore[arg-type]
    server, thread = start_http_server(port, addr=address, registry=registry)
    return server, thread
