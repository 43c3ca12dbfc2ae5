"""``PipelineActivity``: a generic byte-stream pipeline, producer → relay → consumer.

The producer and the consumer are argv lists on hosts, each started with ``Host.spawn`` (its own
process group). The relay (``relay.Relay``) runs in the hosting process and counts bytes; a ticker
persists the counter, the checkpoint and the resources every ``persist_interval_s`` and at the end, so
the progress a caller sees is always persisted and never goes backwards.

The kind's side of the contract (hooks, tunables) is ``hooks.PipelineHooks``; one stream's processes
and pipes are ``stream.StreamRun``; the live bandwidth limit and the stall watchdog are ``live.LiveControls``.
This module runs the attempts: retries, persistence, what suspend and cancel mean to a stream; the
control verbs themselves are ``core.LocalActivity``'s. ``suspend`` pauses the relay (the processes stay,
blocked), unless the kind's ``suspend_tears_down``: then the stream in flight is stopped (the relay
aborted, its pipes closed: both sides end on them, or are killed after ``stale_exit_wait_s``), the
attempt ends ``suspended`` (neither a failure nor a retry), and ``resume`` restarts the stream as after
a cut one (``on_restart``; a replication from the destination's receive token). ``suspended`` is
persisted first either way, so an agent restart carries it on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ..errors import ActivityNotFound, ZfsBackendError
from ..zfs.cmd import stream_error
from .core import ActivityContext, LocalActivity, status_of
from .hooks import PipelineHooks
from .live import LiveControls
from .procs import end_within, kill_process_group, reap_stale
from .report import ActivityRecord, Progress, Resources
from .resources import ResourceMonitor
from .states import (
    CANCELLING,
    PENDING,
    RUNNING,
    STATUS_FAILED,
    STATUS_OK,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL,
)
from .stream import Endpoint, StreamRun

__all__ = ["Endpoint", "PipelineActivity"]


class PipelineActivity(LiveControls, PipelineHooks, LocalActivity):
    """Abstract: subclasses provide at least ``build_producer`` and ``build_consumer``."""

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        super().__init__(record, ctx)
        self._cp: dict[str, Any] = {}
        self._total = 0
        self._delivered = 0
        with contextlib.suppress(ActivityNotFound):  # a stored activity being carried on
            self._cp = ctx.store.checkpoint(record.id)
            self._total = ctx.store.raw_progress(record.id)[1]
            self._delivered = int(self._cp.get("delivered", 0))
        self.kind_state: dict[str, Any] = dict(self._cp.get("kind", {}))
        self._prod_remote = self._cons_remote = False
        self._base = 0
        self._monitor: ResourceMonitor | None = None
        #: ``suspend`` stopped the stream in flight (``suspend_tears_down``): its end is no failure
        self._torn = False
        #: the exception that kept the last attempt from building its pipeline (for ``retryable``)
        self.build_error: Exception | None = None

    @property
    def streamed(self) -> int:
        """Bytes of the streams completed before the current one."""
        return int(self._cp.get("streamed", 0))

    # -- hosting ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Plan before the record is stored (a refusal stores nothing)."""
        if self._cp.get("planned"):
            return
        self.plan()
        self.revise_total(self.estimate_total())
        self._cp["planned"] = True

    def persist_new(self) -> ActivityRecord:
        """Insert the new record with what ``prepare`` decided (checkpoint, estimate)."""
        with self._cond:
            self._cp["kind"] = self.kind_state
            rec = self._record
            if self._total > 0:
                rec = rec.with_(progress=Progress(0, self._total, rec.progress.unit))
            self._record = self.ctx.store.insert(rec, checkpoint=dict(self._cp))
            return self._record

    def revise_total(self, total: int) -> None:
        """Raise m (never lowered; never below n): persisted at the next tick."""
        self._total = max(self._total, int(total))

    def resources(self) -> Resources:
        if self._monitor is not None and self.state not in TERMINAL:
            with self._cond:
                return self._snapshot(sample=True)
        return self._record.resources

    def _snapshot(self, *, sample: bool, rate: bool = False, finished_at: float | None = None) -> Resources:
        mon = self._monitor
        if mon is None:
            return self._record.resources
        if sample:
            mon.sample()
        delivered, total = self._delivered, self._total
        return mon.snapshot(
            done=delivered if rate else None,
            total=total,
            fallback_sent=delivered if self._cons_remote else 0,
            fallback_received=delivered if self._prod_remote else 0,
            finished_at=finished_at,
        )

    # -- control --------------------------------------------------------------------------------
    def suspend(self) -> None:
        """``LocalActivity.suspend`` (the relay paused), unless the kind's ``suspend_tears_down``: then
        ``suspended`` is persisted and the stream in flight stopped (see the module doc)."""
        if not self.suspend_tears_down():
            super().suspend()
            return
        with self._cond:
            self._transition(SUSPENDED, verb="suspend")
            procs = list(self._procs)
            if self._relay is not None:
                self._torn = True
                self._relay.abort()
        if procs:  # a relay blocked in a write to a side that reads no more sees the abort only then
            threading.Timer(self.stale_exit_wait_s, self._kill_lingering, args=(procs,)).start()
        self._persist()
        self._wake_worker()

    def _kill_lingering(self, procs: list[Any]) -> None:
        """The stream a suspend tore down, if it is still the one in flight: kill its process groups."""
        with self._cond:
            left = [p for p in procs if self._torn and any(p is q for q in self._procs)]
        for p in left:
            kill_process_group(p.pid, grace_s=self.kill_grace_s)

    # -- the worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                state = self._record.state
                if state in TERMINAL or self._abort == "detach":
                    return
                if state == SUSPENDED:
                    self._cond.wait(0.5)
                    suspended = True
                else:
                    suspended = False
            if suspended:  # before its first stream: no ticker runs yet, but a lease may need renewing
                try:
                    self.on_tick()
                except Exception:
                    self.ctx.log.exception("activity %s: tick while suspended failed", self.id)
                continue
            if state == CANCELLING:
                self._reap_stale()
                self._finish_cancel()
                return
            if not self._cp.get("planned"):
                try:
                    self.prepare()
                except Exception as e:
                    self._fail_for_good(f"plan failed: {e}", status_of(e))
                    continue
                self._persist()
            if state == PENDING:
                with contextlib.suppress(Exception):
                    self._transition(RUNNING, verb="start", only_from=PENDING)
                continue
            self._attempt()

    def _fail_for_good(self, error: str, status: int) -> None:
        """Fail after giving the kind its ``on_final_failure`` (whose own failure is added to the error)."""
        try:
            self.on_final_failure()
        except Exception as e:
            error = f"{error}; and undoing it failed: {e}"
        self._fail_if_possible(error, status)

    def _attempt(self) -> None:
        restarted = int(self._cp.get("attempts", 0)) > 0
        offset = 0
        if restarted:
            self._reap_stale()
            if self.restart_mode == "none":
                error = "the stream was interrupted and this kind cannot restart it"
                self._fail_if_possible(error, STATUS_FAILED)
                return
            try:
                self.on_restart(dict(self._cp))
                if self.restart_mode == "offset":
                    delivered = int(self._cp.get("delivered", 0)) - self.streamed
                    offset = max(0, int(self.restart_offset(delivered)))
            except Exception as e:
                self._fail_for_good(f"restart failed: {e}", status_of(e))
                return
        self._cp["attempts"] = int(self._cp.get("attempts", 0)) + 1
        self._base = self._delivered = self.streamed + offset
        self._cp["delivered"] = self._delivered
        outcome, error, status = self._stream(offset)
        if outcome == "ok":
            self._complete()
        elif outcome == "cancel":
            self._finish_cancel()
        elif outcome == "failed":
            self._after_failure(error, status)
        elif outcome == "suspended":
            self.ctx.log.info("activity %s: suspended, its stream stopped; resume restarts it", self.id)
        # "detach", "suspended": leave the state as it is (the next attempt of a suspended one restarts)

    def _stream(self, offset: int) -> tuple[str, str, int]:
        self.build_error = None
        try:
            producer = self.build_producer(offset)
            consumer = self.build_consumer(offset)
        except Exception as e:
            self.build_error = e
            return "failed", f"cannot build the pipeline: {e}", status_of(e)
        resumes_at = self.stream_resumes_at()
        if resumes_at is not None:  # the consumer holds that much of this stream: n counts on from there
            self._base = self._delivered = self.streamed + max(0, resumes_at)
            self._cp["delivered"] = self._delivered
        with StreamRun(producer, consumer, bwlimit_bps=self._bwlimit()) as run:
            with self._cond:
                if self._abort is not None or self._record.state not in (RUNNING, SUSPENDED):
                    return ("cancel" if self._abort == "cancel" else "detach"), "", 0
                if self._record.state == SUSPENDED:
                    if self.suspend_tears_down():
                        return "suspended", "", 0  # nothing started; resume restarts
                    run.relay.pause()
                try:
                    run.start()
                except (OSError, ZfsBackendError) as e:
                    return "failed", f"cannot start the pipeline: {e}", STATUS_FAILED
                self._procs, self._relay = run.procs, run.relay
                run.relay.set_rate(self._bwlimit())  # a limit set while the stream was being built
            self._cp["pids"] = run.pids()
            self._start_monitor(run)
            self._persist()
            stop = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(stop,), name=f"tick-{self.id}", daemon=True)
            ticker.start()
            result = run.relay.run()
            run.relay.close()  # the consumer's EOF
            if self._torn:  # suspended: both sides end on the closed pipes, else they are killed
                end_within(run.procs, self.stale_exit_wait_s, grace_s=self.kill_grace_s)
            rcs = self._reap(run)
            stop.set()
            ticker.join()
            self._persist()
            with self._cond:
                self._relay, self._procs = None, []
                torn, self._torn = self._torn, False
            if self._abort is not None:
                return ("cancel" if self._abort == "cancel" else "detach"), "", 0
            failure = run.failure(result, rcs, consumer_ends_stream=self.consumer_ends_stream)
            if failure is None or torn:
                self._cp["pids"] = []
                return ("ok" if failure is None else "suspended"), "", 0
            return "failed", failure[0], failure[1]

    def _reap(self, run: StreamRun) -> list[int]:
        """Wait for both sides, folding their exact CPU (wait4) into the resources."""
        mon = self._monitor
        exits = run.reap(mon.sample if mon is not None else lambda: None)
        if mon is not None:
            for (pid, ctime), (_rc, cpu) in zip(self._cp.get("pids", []), exits, strict=False):
                if cpu is not None:
                    mon.add_exited(pid, ctime, cpu)
        return [rc for rc, _cpu in exits]

    def _start_monitor(self, run: StreamRun) -> None:
        procs, prod, cons = run.procs, run.producer, run.consumer
        if self._monitor is None:
            self._monitor = ResourceMonitor(base=self._record.resources, started_at=self._record.started_at)
        else:
            self._monitor.start_attempt()
        self._prod_remote, self._cons_remote = prod.remote, cons.remote
        self._monitor.rate.reset()
        self._monitor.add_process(procs[0].pid, net_receiver=prod.remote and prod.counts_network)
        self._monitor.add_process(procs[1].pid, net_sender=cons.remote and cons.counts_network)
        with contextlib.suppress(Exception):
            self._monitor.add_extra_pids(self.extra_cpu_pids())

    def _raw_now(self) -> tuple[int, int]:
        relay = self._relay
        if relay is not None:
            self._delivered = self._base + relay.count
            self._cp["delivered"] = self._delivered
        if 0 < self._total < self._delivered:
            # The estimate was short: raise m ahead of n (never n > m, and not a bar stuck at 100 %
            # while bytes still move); success sets m := n.
            self._total = self._delivered + max(1 << 20, self._delivered // 20)
        return self._delivered, self._total

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.persist_interval_s):
            try:
                self._persist()
                self._watch_stall()
                self.on_tick()
            except Exception:
                self.ctx.log.exception("activity %s: progress not persisted", self.id)

    def _persist(self) -> None:
        """Persist counters + checkpoint + resources in one transaction, then publish them."""
        with self._cond:
            delivered, total = self._raw_now()
            self._cp["kind"] = self.kind_state
            cp = dict(self._cp)
            res = self._snapshot(sample=True, rate=True) if self._monitor is not None else None
            self.ctx.store.update_progress(self.id, delivered, total, resources=res, checkpoint=cp)
            self._refresh()

    def _complete(self) -> None:
        with self._cond:
            while self._record.state == SUSPENDED and self._abort is None:
                self._cond.wait(0.5)  # the stream is done, but suspended means no progress
            if self._abort is not None or self._record.state != RUNNING:
                return
        try:
            more = self.next_stream()
        except Exception as e:
            self._fail_for_good(f"cannot go on: {e}", status_of(e))
            return
        if more:
            self._persist()  # the counter of the stream just done, before it becomes the base
            self._cp["streamed"] = self._delivered
            self._cp["attempts"] = 0
            self._cp["failures"] = 0
            self._persist()
            return
        try:
            self.on_success()
        except Exception as e:
            self._fail_for_good(f"completion check failed: {e}", status_of(e))
            return
        self._persist()
        with contextlib.suppress(Exception):
            self._transition(SUCCEEDED, status=STATUS_OK, final_resources=self._final_resources)

    def _after_failure(self, error: str, status: int) -> None:
        typed = stream_error(error)  # the hooks test its type, never the text
        try:
            if self.recover_failure(typed):
                self.ctx.log.info("activity %s: stream failed (%s); mended, starting again", self.id, error)
                return
        except Exception as e:
            self._cp["last_error"] = error
            self._persist()
            self._fail_for_good(str(e), status_of(e))
            return
        failures = int(self._cp.get("failures", 0)) + 1
        self._cp["failures"] = failures
        self._cp["last_error"] = error
        self._persist()
        if self.restart_mode == "none" or failures > self.max_retries or not self.retryable(typed, status):
            tries = f" after {failures} attempts" if failures > 1 else ""
            self._fail_for_good(f"stream failed{tries}: {error}", status)
            return
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1))
        self.ctx.log.warning("activity %s: stream failed (%s); retry in %.1f s", self.id, error, delay)
        deadline = time.monotonic() + delay
        with self._cond:
            while self._abort is None and self._record.state in (RUNNING, SUSPENDED):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))

    def _final_resources(self, finished_at: float) -> Resources | None:
        """What the activity cost, as of its end (given to the terminal move: saved with it)."""
        if self._monitor is None:
            return None
        try:
            return self._snapshot(sample=False, finished_at=finished_at)
        except Exception:  # never keeps the activity from ending
            self.ctx.log.exception("activity %s: final resources", self.id)
            return None

    def _reap_stale(self) -> None:
        reap_stale(self._cp.get("pids", []), self.stale_exit_wait_s)
        self._cp["pids"] = []
