"""Resource accounting for an activity: psutil over the process tree doing the work.

``ResourceMonitor`` is sampled periodically (the pipeline samples every ~0.5 s). It keeps, per process
(keyed by pid + create time, so a reused pid is a new process), the highest CPU time and RSS seen, so
the CPU of children that already exited is kept. Network bytes come from the processes that are the
network endpoints (e.g. the local ``ssh``): ``/proc/<pid>/io`` ``wchar`` for the sending side,
``rchar`` for the receiving side. Extra pids (e.g. a zfs-fuse daemon, which does the real work of
``zfs send``/``recv``) contribute their CPU delta since the first sample.

A ``base`` carries totals over from earlier attempts (after a restart) so the figures only grow.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

from .report import Resources

__all__ = ["RateMeter", "ResourceMonitor"]

_Key = tuple[int, float]  # (pid, create_time)


class RateMeter:
    """Moving-window rate of a monotone counter."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, value: int, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        self._samples.append((t, value))
        while len(self._samples) > 2 and t - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0

    def reset(self) -> None:
        self._samples.clear()


@dataclass
class _Acc:
    cpu: dict[_Key, float] = field(default_factory=dict)
    peak_rss: int = 0
    wchar: dict[_Key, int] = field(default_factory=dict)
    rchar: dict[_Key, int] = field(default_factory=dict)
    extra_cpu0: dict[_Key, float] = field(default_factory=dict)
    extra_cpu: dict[_Key, float] = field(default_factory=dict)


class ResourceMonitor:
    """Accumulates resources of the processes of one activity attempt (plus a carried-over base)."""

    def __init__(self, base: Resources | None = None, started_at: float | None = None) -> None:
        self.base = base or Resources()
        self.started_at = time.time() if started_at is None else started_at
        self._roots: list[psutil.Process] = []
        self._senders: set[int] = set()
        self._receivers: set[int] = set()
        self._extra: list[psutil.Process] = []
        self._acc = _Acc()
        self._lock = threading.Lock()
        self.rate = RateMeter()

    # -- what to watch ----------------------------------------------------------------------------
    def add_process(self, pid: int, *, net_sender: bool = False, net_receiver: bool = False) -> None:
        """Watch ``pid`` and its descendants; mark it as the network endpoint that sends (its
        ``wchar`` counts as bytes sent) or receives (its ``rchar`` counts as bytes received)."""
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return
        with self._lock:
            self._roots.append(proc)
            if net_sender:
                self._senders.add(pid)
            if net_receiver:
                self._receivers.add(pid)
        self.sample()

    def add_extra_pids(self, pids: Iterable[int]) -> None:
        """Processes outside the tree whose CPU *delta* is attributed (e.g. a zfs-fuse daemon)."""
        for pid in pids:
            try:
                self._extra.append(psutil.Process(pid))
            except psutil.Error:
                continue
        self.sample()

    def add_exited(self, pid: int, ctime: float, cpu_s: float) -> None:
        """Record the final CPU time of a reaped child (from ``wait4``: includes its reaped children)."""
        with self._lock:
            key = (pid, ctime)
            self._acc.cpu[key] = max(self._acc.cpu.get(key, 0.0), cpu_s)

    def forget(self, pids: Iterable[int]) -> None:
        """Stop watching these roots (exited and reaped; their CPU recorded by ``add_exited``): what they
        used stays counted. Each sample walks every root's descendants (a scan of the system's processes
        per root), so an attempt of many short streams (a parallel tree) must sample its live ones only:
        measured, 50 streams at 4 at a time took 73 s instead of 9 s without this."""
        gone = set(pids)
        with self._lock:
            self._roots = [r for r in self._roots if r.pid not in gone]
            self._senders -= gone
            self._receivers -= gone

    def start_attempt(self) -> None:
        """Fold the current attempt into the base and forget its processes (called on restart)."""
        snap = self.snapshot()
        with self._lock:
            self.base = Resources(
                net_bytes_sent=snap.net_bytes_sent,
                net_bytes_received=snap.net_bytes_received,
                cpu_s=snap.cpu_s,
                peak_rss_bytes=snap.peak_rss_bytes,
            )
            self._roots, self._extra = [], []
            self._senders, self._receivers = set(), set()
            self._acc = _Acc()

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self) -> None:
        with self._lock:
            acc = self._acc
            seen: dict[_Key, int] = {}
            for root in self._roots:
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = [root]
                for p in procs:
                    self._sample_one(p, acc, seen)
            # the peak of the whole tree's RSS at one instant (processes run at the same time)
            acc.peak_rss = max(acc.peak_rss, sum(seen.values()))
            for p in self._extra:
                try:
                    with p.oneshot():
                        key = (p.pid, p.create_time())
                        t = p.cpu_times()
                except psutil.Error:
                    continue
                cpu = t.user + t.system
                acc.extra_cpu0.setdefault(key, cpu)
                acc.extra_cpu[key] = max(acc.extra_cpu.get(key, 0.0), cpu - acc.extra_cpu0[key])

    def _sample_one(self, p: psutil.Process, acc: _Acc, seen: dict[_Key, int]) -> None:
        try:
            with p.oneshot():
                key = (p.pid, p.create_time())
                t = p.cpu_times()
                rss = p.memory_info().rss
                io = None
                if p.pid in self._senders or p.pid in self._receivers:
                    io = p.io_counters()
        except psutil.Error:
            return
        acc.cpu[key] = max(acc.cpu.get(key, 0.0), t.user + t.system)
        seen[key] = rss
        if io is not None:
            if p.pid in self._senders:
                acc.wchar[key] = max(acc.wchar.get(key, 0), int(getattr(io, "write_chars", 0)))
            if p.pid in self._receivers:
                acc.rchar[key] = max(acc.rchar.get(key, 0), int(getattr(io, "read_chars", 0)))

    def snapshot(
        self,
        *,
        done: int | None = None,
        total: int = 0,
        fallback_sent: int = 0,
        fallback_received: int = 0,
        finished_at: float | None = None,
    ) -> Resources:
        """Current totals. ``done``/``total`` feed the rate and ETA; the fallbacks are used for a
        network direction whose endpoint process could not be measured."""
        with self._lock:
            acc = self._acc
            cpu = sum(acc.cpu.values()) + sum(acc.extra_cpu.values())
            rss = acc.peak_rss
            sent = sum(acc.wchar.values()) or fallback_sent
            received = sum(acc.rchar.values()) or fallback_received
            base = self.base
        if done is not None:
            self.rate.add(done)
        rate = self.rate.rate() if finished_at is None else 0.0
        eta: float | None = None
        if finished_at is None and total > 0 and done is not None and rate > 0:
            eta = max(0.0, (total - done) / rate)
        elif finished_at is not None:
            eta = 0.0
        end = time.time() if finished_at is None else finished_at
        return Resources(
            elapsed_s=max(0.0, end - self.started_at),
            net_bytes_sent=base.net_bytes_sent + sent,
            net_bytes_received=base.net_bytes_received + received,
            cpu_s=base.cpu_s + cpu,
            peak_rss_bytes=max(base.peak_rss_bytes, rss),
            rate_bps=rate,
            eta_s=eta,
        )
