"""``PipelineHooks``: what a kind of pipeline activity provides, and the defaults it may keep.

A kind subclasses ``pipeline.PipelineActivity`` and overrides these hooks::

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
                                  (``error``: the stream's typed error, ``zfs.cmd.stream_error``: a
                                  kind tests its type, never its text)
    on_final_failure()            the activity is about to fail for good (e.g. undo a partial effect)
    on_tick()                     every ``persist_interval_s`` while a stream runs (e.g. renew a lease)
    next_stream()                 after a complete stream: True when the kind has another one to run
                                  (e.g. an incremental catch-up); the next stream's bytes add to n
    suspend_tears_down()          True: ``suspend`` ends the stream's processes instead of pausing the
                                  relay, and ``resume`` restarts it (``on_restart``): for a kind whose
                                  restart loses nothing (a resume token, an offset restart)
    stream_resumes_at()           after ``build_*``: the bytes of this stream the consumer already
                                  holds when the producer resumes a cut stream (``zfs send -t``), so
                                  that n counts on from there; None: as ``restart_mode`` says

``restart_mode``: "offset" (rebuild both sides from the byte offset already delivered: no byte lost,
none counted twice), "rerun" (the whole stream again; n = max(previous n, new bytes)), or "none" (a
broken stream fails the activity). Stream failures are retried ``max_retries`` times with exponential
backoff, then the activity fails with the last error. ``kind_state`` is a JSON dict persisted in the
checkpoint for the kind's own use (e.g. the snapshots ``plan()`` chose).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UsageError, ZfsBackendError
from .stream import Endpoint

__all__ = ["PipelineHooks"]


class PipelineHooks:
    """The hooks and tunables of a pipeline kind; ``pipeline.PipelineActivity`` calls them."""

    restart_mode: str = "rerun"  # "offset" | "rerun" | "none"
    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    persist_interval_s: float = 0.5
    stale_exit_wait_s: float = 5.0
    bwlimit_bps: float | None = None
    #: the consumer knows where its stream ends (``zfs receive`` reads to the END record) and may exit
    #: before the producer's EOF reaches the relay (a remote producer: ``ssh``): a write to it that
    #: breaks then is not a failure when both sides exit 0
    consumer_ends_stream: bool = False

    def tune_retries(self, params: Mapping[str, Any], bad: str) -> None:
        """``max_retries`` and ``backoff_s`` from a kind's params (else its own defaults); a value that is
        not a number is refused with ``UsageError("{bad}: ...")``."""
        try:
            self.max_retries = int(params.get("max_retries", self.max_retries))
            self.backoff_s = float(params.get("backoff_s", self.backoff_s))
        except (TypeError, ValueError) as e:
            raise UsageError(f"{bad}: {e}") from e

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

    def extra_cpu_pids(self) -> list[int]:
        return []

    def retryable(self, error: ZfsBackendError, status: int) -> bool:
        """Whether a failed stream is worth another attempt (default: always, up to ``max_retries``)."""
        return True

    def recover_failure(self, error: ZfsBackendError) -> bool:
        """A stream failed with ``error``: True when the kind mended the cause and the next attempt may
        start at once, not counted as a failure. Raise to fail the activity with that error."""
        return False

    def on_final_failure(self) -> None:
        """The activity is about to fail for good."""

    def on_tick(self) -> None:
        """Called every ``persist_interval_s`` while a stream runs."""

    def next_stream(self) -> bool:
        """After a complete stream, before ``on_success``: True when the kind has prepared another
        stream (built by the next ``build_producer``/``build_consumer``). Its bytes are added to those
        of the streams before it; retries and restarts count per stream. Default: one stream."""
        return False

    def suspend_tears_down(self) -> bool:
        """Whether ``suspend`` stops the stream's processes (the next ``resume`` restarts the stream
        through ``on_restart``) rather than pausing the relay with the processes left, blocked.
        Default: pause."""
        return False

    def stream_resumes_at(self) -> int | None:
        """After ``build_producer``/``build_consumer``: the bytes of this stream the consumer already
        holds when the producer resumes a cut stream where it stopped (``zfs send -t``), else None."""
        return None
