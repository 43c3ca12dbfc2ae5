"""ResourceMonitor.forget: a reaped stream's processes are no longer walked by each sample (a parallel
tree of 50 streams once took 8x longer: every sample scanned the system's processes once per stream
ever started), and what they used stays counted."""

from __future__ import annotations

import subprocess
import sys

from zfs_backend.activity.resources import ResourceMonitor


def test_forgotten_roots_are_not_sampled_and_their_cpu_stays() -> None:
    mon = ResourceMonitor()
    p = subprocess.Popen([sys.executable, "-c", "sum(range(3_000_000))"])
    mon.add_process(p.pid, net_sender=True)
    p.wait()
    mon.add_exited(p.pid, 1.0, 0.25)
    before = mon.snapshot().cpu_s
    assert before >= 0.25
    mon.forget([p.pid])
    assert mon._roots == [] and p.pid not in mon._senders
    mon.sample()
    assert mon.snapshot().cpu_s == before  # nothing lost, nothing sampled
    mon.forget([12345678])  # a pid it never watched: nothing happens
