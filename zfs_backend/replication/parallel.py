"""Parallel replication of a recursive tree (``parallel`` > 1, mixed into :class:`~.activity.Replicate`).

Instead of one ``zfs send -R`` the tree's datasets are sent one stream each (``zfs send [-i|-I] [-p]
pool/fs/child@snap | ssh DEST zfs receive dest/child``), up to ``parallel`` at a time, all under the
one recursive claim ``begin`` took (the destination admits a receive into any dataset inside it), so:

* **plan** (:func:`.tree_plan.tree_jobs`, pure): every source dataset holding the target snapshot is a
  job; one the destination holds (by GUID) is an incremental from its own newest common snapshot (its ``-I``
  intermediates when asked), one it lacks a full stream of the target snapshot (a dataset new to the
  destination gets the target snapshot only, where ``send -R`` would bring its older snapshots too); one
  already holding the target is done. A dataset new to the destination starts only after its parent's
  stream succeeded (a receive needs the parent); others start in any order;
* **progress** ``n of m`` is one count over every stream (:class:`RelayGroup` sums the relays; ``m`` the
  sum of the streams' estimates); ``bwlimit`` is shared: each of the ``parallel`` slots gets its part,
  also of a limit changed while the streams run (``activity set --bwlimit``);
* **stall watchdog**: one live stream with no byte moved for ``stall_timeout_s`` tears every stream of
  the attempt down (each reports the watchdog's reason first) and the attempt is retried as a failure;
* **cancel** kills every stream and the destination's ``abort`` restores the whole tree from the claim's
  record (exactly as for ``send -R``); a stream that fails stops the others, and the restart plans
  again from what the destination holds: datasets already complete are skipped, partial receives
  (ours, under the claim) are discarded, and each dataset goes on from its newest common snapshot.

On a destination that cannot receive unmounted (zfs-fuse: no ``recv -u``), a tree with a dataset new to
the destination goes as one ``send -R`` (:func:`.tree_plan.streams_fit`; the plan says so): only the
increments of a tree the destination holds whole go one stream per dataset there.

The activity framework runs one stream per attempt; ``_stream`` here runs the attempt's streams instead
and keeps the framework's view whole: ``_relay`` is the group (pause, abort, count), ``_procs`` every
live process, ``pids`` every process group a restart must reap.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..activity.core import status_of
from ..activity.procs import kill_process_group
from ..activity.relay import Relay
from ..activity.resources import ResourceMonitor
from ..activity.states import RUNNING, STATUS_FAILED, SUSPENDED
from ..activity.stream import Endpoint, StreamRun
from .tree_plan import TreeJob

if TYPE_CHECKING:
    from .request import Request

__all__ = ["ParallelStreams", "RelayGroup"]


class RelayGroup:
    """The relays of an attempt's streams as one (what ``PipelineActivity`` and its live controls ask of
    their relay): the count over all of them, pause/unpause/abort for every live one and every one added
    later; the bandwidth limit shared by the ``slots`` (each relay gets its part, changed live by
    ``set_rate``); for the stall watchdog, ``idle_s`` of the idlest live stream (one stalled stream is a
    stall even while the others move) and ``tear_down`` of every stream."""

    def __init__(self, slots: int = 1, bwlimit_bps: float | None = None) -> None:
        self._lock = threading.Lock()
        self._live: list[Relay] = []
        self._done = 0
        self._paused = False
        self._slots = max(1, slots)
        self._rate: float | None = None
        self.aborted = False
        #: why the streams were torn down (the stall watchdog), None otherwise
        self.torn_down: str | None = None
        self.set_rate(bwlimit_bps)

    @property
    def count(self) -> int:
        with self._lock:
            return self._done + sum(r.count for r in self._live)

    def _part(self) -> float | None:
        return None if self._rate is None else max(1024.0, self._rate / self._slots)

    def set_rate(self, bwlimit_bps: float | None) -> None:
        """The limit of the whole group (bytes/s; None or 0: none), each slot's part applied to every
        live relay at once and to those added later."""
        with self._lock:
            self._rate = float(bwlimit_bps) if bwlimit_bps and bwlimit_bps > 0 else None
            live, part = list(self._live), self._part()
        for r in live:
            r.set_rate(part)

    def idle_s(self) -> float:
        with self._lock:
            return max((r.idle_s() for r in self._live), default=0.0)

    def tear_down(self, reason: str) -> None:
        """Stop every stream for ``reason`` (each reports it first); the caller kills the processes."""
        with self._lock:
            self.torn_down = reason
            self.aborted = True
        for r in self._each():
            r.tear_down(reason)

    def add(self, relay: Relay) -> None:
        with self._lock:
            self._live.append(relay)
            paused, aborted, part = self._paused, self.aborted, self._part()
        relay.set_rate(part)
        if aborted:
            relay.abort()
        elif paused:
            relay.pause()

    def retire(self, relay: Relay) -> None:
        with self._lock:
            if relay in self._live:
                self._live.remove(relay)
                self._done += relay.count

    def _each(self) -> list[Relay]:
        with self._lock:
            return list(self._live)

    def pause(self, wait: float = 0.0) -> bool:
        with self._lock:
            self._paused = True
        return all([r.pause(wait) for r in self._each()])

    def unpause(self) -> None:
        with self._lock:
            self._paused = False
        for r in self._each():
            r.unpause()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
        for r in self._each():
            r.abort()

    def close(self) -> None:
        for r in self._each():
            r.close()


class ParallelStreams:
    """Mixed into :class:`~.activity.Replicate` before ``PipelineActivity`` (see the module doc)."""

    # PipelineActivity's (and Replicate's) own
    _cond: threading.Condition
    _abort: str | None
    _relay: Any
    _procs: list[Any]
    _cp: dict[str, Any]
    _monitor: ResourceMonitor | None
    _prod_remote: bool
    _cons_remote: bool
    build_error: Exception | None
    consumer_ends_stream: bool
    kind_state: dict[str, Any]

    if TYPE_CHECKING:
        from ..activity.report import ActivityRecord

        request: Request
        _record: ActivityRecord
        id: str

        def _persist(self) -> None: ...
        def _tick(self, stop: threading.Event) -> None: ...
        def _bwlimit(self) -> float | None: ...
        def _tree_streams(self) -> list[tuple[TreeJob, Endpoint, Endpoint]]: ...

    @property
    def parallel_tree(self) -> bool:
        """One stream per dataset: ``parallel`` > 1, and the plan found the tree fit for it
        (:func:`streams_fit`; else one ``send -R``, as ``parallel`` 1)."""
        return (
            self.request.recursive
            and self.request.parallel > 1
            and bool(self.kind_state.get("parallel_streams", True))
        )

    def _stream(self, offset: int) -> tuple[str, str, int]:
        if not self.parallel_tree:
            return super()._stream(offset)  # type: ignore[misc,no-any-return]
        self.build_error = None
        try:
            streams = self._tree_streams()
        except Exception as e:
            self.build_error = e
            return "failed", f"cannot build the streams: {e}", status_of(e)
        group = RelayGroup(min(self.request.parallel, len(streams)), self._bwlimit())
        with self._cond:
            if self._abort is not None or self._record.state not in (RUNNING, SUSPENDED):
                return ("cancel" if self._abort == "cancel" else "detach"), "", 0
            if self._record.state == SUSPENDED:
                group.pause()
            self._relay, self._procs = group, []
            group.set_rate(self._bwlimit())  # a limit set while the streams were being built
            self._cp["pids"] = []
        if self._monitor is None:
            self._monitor = ResourceMonitor(base=self._record.resources, started_at=self._record.started_at)
        else:
            self._monitor.start_attempt()
        self._prod_remote, self._cons_remote = False, True
        self._monitor.rate.reset()
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(stop,), name=f"tick-{self.id}", daemon=True)
        ticker.start()
        try:
            error = self._run_streams(streams, group)
        finally:
            stop.set()
            ticker.join()
            self._persist()
            with self._cond:
                self._relay, self._procs = None, []
        if self._abort is not None:
            return ("cancel" if self._abort == "cancel" else "detach"), "", 0
        if error is not None:
            return "failed", error[0], error[1]
        self._cp["pids"] = []
        return "ok", "", 0

    def _run_streams(
        self, streams: list[tuple[TreeJob, Endpoint, Endpoint]], group: RelayGroup
    ) -> tuple[str, int] | None:
        """Run the streams ``parallel`` at a time, each after the one it waits for; the first failure
        stops the others and is returned."""
        cv = threading.Condition()
        pending = list(streams)
        done: set[str] = set()
        errors: list[tuple[str, int]] = []
        slots = max(1, min(self.request.parallel, len(streams)))

        def take() -> tuple[TreeJob, Endpoint, Endpoint] | None:
            with cv:
                while True:
                    if errors or group.aborted or self._abort is not None or not pending:
                        return None
                    for item in pending:
                        if item[0].after is None or item[0].after in done:
                            pending.remove(item)
                            return item
                    cv.wait(0.5)

        def worker() -> None:
            while (item := take()) is not None:
                try:
                    err = self._run_one(item, group)
                except Exception as e:  # never a silent thread death: it fails the attempt
                    err = (f"{item[0].rel or 'the top'}: {e}", status_of(e))
                with cv:
                    if err is None:
                        done.add(item[0].rel)
                    elif not errors:
                        errors.append(err)
                    cv.notify_all()
                if err is not None:
                    self._stop_all(group)

        threads = [
            threading.Thread(target=worker, name=f"tree-{self.id}-{i}", daemon=True) for i in range(slots)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            return errors[0]
        if pending:  # stopped from outside (the watchdog) between two streams: never a success
            return (group.torn_down or f"{len(pending)} stream(s) not run", STATUS_FAILED)
        return None

    def _stop_all(self, group: RelayGroup) -> None:
        group.abort()
        with self._cond:
            procs = list(self._procs)
        for p in procs:
            kill_process_group(p.pid, 0.5)

    def _run_one(self, item: tuple[TreeJob, Endpoint, Endpoint], group: RelayGroup) -> tuple[str, int] | None:
        job, producer, consumer = item
        name = job.rel or "the top"
        with StreamRun(
            producer, consumer, bwlimit_bps=None
        ) as run:  # the group gives it its part of the limit
            with self._cond:
                if self._abort is not None or group.aborted:
                    return (f"{name}: not started (stopped)", STATUS_FAILED)
                group.add(run.relay)
                try:
                    run.start()
                except Exception as e:
                    group.retire(run.relay)
                    return (f"{name}: cannot start the stream: {e}", STATUS_FAILED)
                self._procs = [*self._procs, *run.procs]
                self._cp["pids"] = [*self._cp.get("pids", []), *run.pids()]
            pids = run.pids()
            mon = self._monitor
            if mon is not None:
                mon.add_process(run.procs[0].pid)
                mon.add_process(run.procs[1].pid, net_sender=consumer.remote and consumer.counts_network)
            result = run.relay.run()
            run.relay.close()
            exits = run.reap(mon.sample if mon is not None else lambda: None)
            group.retire(run.relay)
            with self._cond:
                self._procs = [p for p in self._procs if p not in run.procs]
            with self._cond:  # reaped: a restart has nothing of this stream left to kill
                self._cp["pids"] = [p for p in self._cp.get("pids", []) if p not in pids]
            if mon is not None:
                for (pid, ctime), (_rc, cpu) in zip(pids, exits, strict=False):
                    if cpu is not None:
                        mon.add_exited(int(pid), ctime, cpu)
                mon.forget(int(pid) for pid, _ctime in pids)  # sample only the live streams
            failure = run.failure(
                result, [rc for rc, _ in exits], consumer_ends_stream=self.consumer_ends_stream
            )
            return None if failure is None else (f"{name}: {failure[0]}", failure[1])
