"""``PipelineActivity``: a generic byte-stream pipeline, producer → relay → consumer.

The producer and the consumer are argv lists on hosts, each started with ``Host.spawn`` (its own
process group). The relay (``relay.Relay``) runs in the hosting process and counts bytes; a ticker
persists the counter, the checkpoint and the resources every ``persist_interval_s`` and at the end, so
the progress a caller sees is always persisted and never goes backwards.

Kinds subclass it and override hooks::

    plan()                        once, before the first stream (choose snapshots, validate, …); run by
                                  ``prepare()`` before the record is stored, so a refusal stores nothing
    estimate_total() -> int       m; 0 = unknown. ``revise_total(m)`` raises it later (never below n)
    build_producer(offset)        -> Endpoint(host, argv); ``offset`` > 0 only in "offset" restarts
    build_consumer(offset)        -> Endpoint(host, argv)
    restart_offset(delivered)     "offset" mode: where to restart (default: bytes already delivered)
    on_restart(checkpoint)        before a restarted stream (after a stream failure or agent restart)
    on_success()                  after a complete stream, before ``succeeded``; raise to fail
    rollback()                    after cancel has killed both process groups
    extra_cpu_pids()              processes whose CPU is attributed (e.g. a zfs-fuse daemon)
    retryable(error, status)      False: a failed stream is final (e.g. out of space), no retry
    recover_failure(error)        True: the cause was mended, retry now without counting a failure;
                                  raise to fail at once with that error
    on_final_failure()            the activity is about to fail for good (e.g. undo a partial effect)
    on_tick()                     every ``persist_interval_s`` while a stream runs (e.g. renew a lease)

``restart_mode``: "offset" (rebuild both sides from the byte offset already delivered: no byte lost,
none counted twice), "rerun" (the whole stream again; n = max(previous n, new bytes)), or "none" (a
broken stream fails the activity). Stream failures are retried ``max_retries`` times with exponential
backoff, then the activity fails with the last error. ``kind_state`` is a JSON dict persisted in the
checkpoint for the kind's own use (e.g. the snapshots ``plan()`` chose).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from ..errors import ActivityNotFound, ZfsBackendError
from ..hosts.base import Host
from .core import ActivityContext, LocalActivity
from .procs import create_time, kill_process_group, reap_stale, stderr_tail, wait_rusage
from .relay import Relay, enlarge_pipe
from .report import ActivityRecord, Progress, Resources
from .resources import ResourceMonitor
from .states import (
    CANCELLED,
    CANCELLING,
    FAILED,
    PENDING,
    RUNNING,
    STATUS_CANCELLED,
    STATUS_FAILED,
    STATUS_OK,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL,
)

__all__ = ["Endpoint", "PipelineActivity"]


@dataclass(frozen=True)
class Endpoint:
    host: Host
    argv: list[str]
    #: whether the local process's own I/O is the network traffic (``ssh``); False for an OpenSSH mux
    #: client, which hands its descriptors to the master: the relay's count stands in for it then
    counts_network: bool = True

    @property
    def remote(self) -> bool:
        """True when the local process is a network endpoint (e.g. ``ssh``), not the command."""
        return self.host.stream_argv(self.argv) != list(self.argv)


class PipelineActivity(LocalActivity):
    """Abstract: subclasses provide at least ``build_producer`` and ``build_consumer``."""

    restart_mode: str = "rerun"  # "offset" | "rerun" | "none"
    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    persist_interval_s: float = 0.5
    stale_exit_wait_s: float = 5.0
    cancel_wait_s: float = 30.0
    bwlimit_bps: float | None = None

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
        self._relay: Relay | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._abort: str | None = None  # "cancel" | "detach"
        self._prod_remote = self._cons_remote = False
        self._base = 0
        self._monitor: ResourceMonitor | None = None
        #: the exception that kept the last attempt from building its pipeline (for ``retryable``)
        self.build_error: Exception | None = None

    # -- hooks ------------------------------------------------------------------------------------
    def plan(self) -> None:
        """Once, before the first stream."""

    def estimate_total(self) -> int:
        return 0

    def build_producer(self, offset: int) -> Endpoint:
        raise NotImplementedError

    def build_consumer(self, offset: int) -> Endpoint:
        raise NotImplementedError

    def restart_offset(self, delivered: int) -> int:
        return delivered

    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        """Before a restarted stream."""

    def on_success(self) -> None:
        """After the stream completed, before ``succeeded``. Raise to fail the activity."""

    def rollback(self) -> None:
        """After cancel killed both process groups: undo the activity's effect on the destination."""

    def extra_cpu_pids(self) -> list[int]:
        return []

    def retryable(self, error: str, status: int) -> bool:
        """Whether a failed stream is worth another attempt (default: always, up to ``max_retries``)."""
        return True

    def recover_failure(self, error: str) -> bool:
        """A stream failed with ``error``: True when the kind mended the cause and the next attempt may
        start at once, not counted as a failure. Raise to fail the activity with that error."""
        return False

    def on_final_failure(self) -> None:
        """The activity is about to fail for good."""

    def on_tick(self) -> None:
        """Called every ``persist_interval_s`` while a stream runs."""

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

    # -- control ----------------------------------------------------------------------------------
    def suspend(self) -> None:
        with self._cond:
            self._transition(SUSPENDED, verb="suspend")
            relay = self._relay
            if relay is not None:
                relay.pause()
        if relay is not None:
            relay.pause(wait=2.0)
            self._persist()

    def resume(self) -> None:
        with self._cond:
            self._transition(RUNNING, verb="resume")
            if self._relay is not None:
                self._relay.unpause()

    def cancel(self) -> None:
        with self._cond:
            self._transition(CANCELLING, verb="cancel")
            self._abort = "cancel"
            if self._relay is not None:
                self._relay.abort()
            procs = list(self._procs)
        for p in procs:
            kill_process_group(p.pid)
        if self._thread is None:  # not hosted (e.g. never started): finish here
            self._finish_cancel()
        self.wait(self.cancel_wait_s)

    def detach(self, timeout: float = 10.0) -> None:
        """Agent shutdown: stop the stream tidily (producer first, then let the consumer drain what
        it was given), persist the counters, leave the state non-terminal."""
        with self._cond:
            if self._abort is None:
                self._abort = "detach"
            relay = self._relay
            if relay is not None:
                relay.abort()
            procs = list(self._procs)
            self._cond.notify_all()
        if procs:
            kill_process_group(procs[0].pid)
        self.join(timeout)
        for p in procs[1:]:
            kill_process_group(p.pid, grace_s=0.5)

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
                    self._fail_for_good(f"plan failed: {e}", _status_of(e))
                    continue
                self._persist()
            if state == PENDING:
                with contextlib.suppress(Exception):
                    self._transition(RUNNING, verb="start", only_from=PENDING)
                continue
            self._attempt()

    def _fail_if_possible(self, error: str, status: int) -> None:
        with contextlib.suppress(Exception):
            self._transition(FAILED, status=status, error=error)

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
                self._fail_if_possible("the stream was interrupted and this kind cannot restart it", 1)
                return
            try:
                self.on_restart(dict(self._cp))
                if self.restart_mode == "offset":
                    offset = max(0, int(self.restart_offset(int(self._cp.get("delivered", 0)))))
            except Exception as e:
                self._fail_for_good(f"restart failed: {e}", _status_of(e))
                return
        self._cp["attempts"] = int(self._cp.get("attempts", 0)) + 1
        self._base = self._delivered = offset
        self._cp["delivered"] = offset
        outcome, error, status = self._stream(offset)
        if outcome == "ok":
            self._complete()
        elif outcome == "cancel":
            self._finish_cancel()
        elif outcome == "failed":
            self._after_failure(error, status)
        # "detach": leave the state as it is

    def _stream(self, offset: int) -> tuple[str, str, int]:
        self.build_error = None
        try:
            producer = self.build_producer(offset)
            consumer = self.build_consumer(offset)
        except Exception as e:
            self.build_error = e
            return "failed", f"cannot build the pipeline: {e}", _status_of(e)
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        enlarge_pipe(w1)
        enlarge_pipe(w2)
        perr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
        cerr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        relay = Relay(r1, w2, bwlimit_bps=self._bwlimit())
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with self._cond:
                if self._abort is not None or self._record.state not in (RUNNING, SUSPENDED):
                    relay.close()
                    _close(w1, r2)
                    return ("cancel" if self._abort == "cancel" else "detach"), "", 0
                if self._record.state == SUSPENDED:
                    relay.pause()
                try:
                    procs.append(
                        producer.host.spawn(producer.argv, stdin=subprocess.DEVNULL, stdout=w1, stderr=perr)
                    )
                    procs.append(
                        consumer.host.spawn(consumer.argv, stdin=r2, stdout=subprocess.DEVNULL, stderr=cerr)
                    )
                except (OSError, ZfsBackendError) as e:
                    for p in procs:
                        kill_process_group(p.pid, 0.5)
                        p.wait()
                    relay.close()
                    return "failed", f"cannot start the pipeline: {e}", STATUS_FAILED
                finally:
                    _close(w1, r2)  # the children hold their own copies
                self._procs, self._relay = procs, relay
            self._cp["pids"] = [[p.pid, create_time(p.pid)] for p in procs]
            self._start_monitor(procs, producer, consumer)
            self._persist()
            stop = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(stop,), name=f"tick-{self.id}", daemon=True)
            ticker.start()
            result = relay.run()
            relay.close()
            rcs = self._reap(procs)
            stop.set()
            ticker.join()
            self._persist()
            with self._cond:
                self._relay, self._procs = None, []
            if self._abort is not None:
                return ("cancel" if self._abort == "cancel" else "detach"), "", 0
            if result == Relay.EOF and rcs == [0, 0]:
                self._cp["pids"] = []
                return "ok", "", 0
            parts = []
            for name, rc, f in (("producer", rcs[0], perr), ("consumer", rcs[1], cerr)):
                if rc != 0:
                    parts.append(f"{name} exited {rc}" + (f": {t}" if (t := stderr_tail(f)) else ""))
            if result == Relay.BROKEN and relay.error:
                parts.append(relay.error)
            status = next((rc for rc in rcs if rc > 0), STATUS_FAILED)
            return "failed", "; ".join(parts) or "stream ended early", status
        finally:
            perr.close()
            cerr.close()

    def _reap(self, procs: list[subprocess.Popen[bytes]]) -> list[int]:
        """Wait for both sides, folding their exact CPU/RSS (wait4) into the resources."""
        mon = self._monitor
        # Let both sides exit without reaping them (zombies keep /proc/<pid>/io), then take the last
        # sample: an endpoint like ssh writes its final bytes after the relay's EOF.
        for p in procs:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        if mon is not None:
            mon.sample()
        rcs = []
        for p, (pid, ctime) in zip(procs, self._cp.get("pids", []), strict=False):
            rc, usage = wait_rusage(p)
            rcs.append(rc)
            if usage is not None and mon is not None:
                # CPU only: ru_maxrss also counts the pre-exec copy of this (large) process
                mon.add_exited(pid, ctime, usage.ru_utime + usage.ru_stime)
        return rcs

    def _bwlimit(self) -> float | None:
        v = self.params.get("bwlimit_bps", self.bwlimit_bps)
        return float(v) if v else None

    def _start_monitor(self, procs: list[subprocess.Popen[bytes]], prod: Endpoint, cons: Endpoint) -> None:
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
            self.on_success()
        except Exception as e:
            self._fail_for_good(f"completion check failed: {e}", _status_of(e))
            return
        self._persist()
        with contextlib.suppress(Exception):
            self._transition(SUCCEEDED, status=STATUS_OK)
        self._final_resources()

    def _after_failure(self, error: str, status: int) -> None:
        try:
            if self.recover_failure(error):
                self.ctx.log.info("activity %s: stream failed (%s); mended, starting again", self.id, error)
                return
        except Exception as e:
            self._cp["last_error"] = error
            self._persist()
            self._fail_for_good(str(e), _status_of(e))
            self._final_resources()
            return
        failures = int(self._cp.get("failures", 0)) + 1
        self._cp["failures"] = failures
        self._cp["last_error"] = error
        self._persist()
        if self.restart_mode == "none" or failures > self.max_retries or not self.retryable(error, status):
            tries = f" after {failures} attempts" if failures > 1 else ""
            self._fail_for_good(f"stream failed{tries}: {error}", status)
            self._final_resources()
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

    def _finish_cancel(self) -> None:
        try:
            self.rollback()
        except Exception as e:
            self._fail_if_possible(f"cancelled, but the rollback failed: {e}", STATUS_FAILED)
            return
        with contextlib.suppress(Exception):
            self._transition(CANCELLED, status=STATUS_CANCELLED, error="cancelled")
        self._final_resources()

    def _final_resources(self) -> None:
        if self._monitor is None:
            return
        with contextlib.suppress(Exception), self._cond:
            res = self._snapshot(sample=False, finished_at=self._record.finished_at or time.time())
            self.ctx.store.save_resources(self.id, res)
            self._refresh()

    def _reap_stale(self) -> None:
        reap_stale(self._cp.get("pids", []), self.stale_exit_wait_s)
        self._cp["pids"] = []


def _status_of(e: BaseException) -> int:
    """The status a failure carries: the error's exit code for this project's errors (e.g. 8 for a
    replication conflict), else the generic failure status."""
    code = getattr(e, "exit_code", None)
    return code if isinstance(code, int) and code > 0 else STATUS_FAILED


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
