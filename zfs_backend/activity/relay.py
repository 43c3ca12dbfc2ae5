"""The byte relay between a producer's stdout and a consumer's stdin, run in the hosting process.

* Both pipes are enlarged to 1 MiB (``F_SETPIPE_SZ``): measured, a Python relay then costs nothing;
  with 64 KiB pipes it loses 7-20 %.
* Bytes move with ``os.splice`` (pipe to pipe, no copy through Python) up to ``chunk`` at a time, or
  ``os.read``/``os.write`` where splice is refused. Memory is flat whatever the stream length.
* ``count`` is incremented after the bytes are in the consumer's pipe, never before.
* ``pause()`` closes a gate checked before every chunk: no byte moves while paused (the processes block
  on full pipes and stay); ``pause(wait=…)`` returns once the chunk in flight, if any, has landed.
* Optional token-bucket bandwidth limit (bytes/s), with chunks small enough to keep it smooth; a limit
  that is not a finite number up to ``MAX_BWLIMIT_BPS`` is refused (``UsageError``), never run.
  ``set_rate()`` changes (or lifts) it while the relay runs: the next chunk obeys it, the stream goes on.
* ``idle_s()``: seconds since a byte last moved while the relay ran unpaused (0 when paused, not yet
  started or finished): what the stall watchdog reads. ``tear_down(reason)`` records why the stream was
  torn down (the watchdog's words, reported by ``StreamRun.failure``) and stops the relay.
* ``abort()`` makes the relay stop before its next chunk (cancel, agent shutdown).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import threading
import time

from ..errors import UsageError

__all__ = ["MAX_BWLIMIT_BPS", "PIPE_SIZE", "Relay", "enlarge_pipe"]

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
CHUNK = 1 << 20
#: the largest bandwidth limit anything accepts (bytes/s): 1 TiB/s, far above any link; beyond it a
#: number is a mistake (or 400 digits), refused with one line wherever a rate comes in
MAX_BWLIMIT_BPS = 1 << 40


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Set the pipe's capacity (best effort); return the size obtained (0 if refused)."""
    try:
        return int(fcntl.fcntl(fd, F_SETPIPE_SZ, size))
    except OSError:
        return 0


class Relay:
    """Moves bytes from ``src`` to ``dst`` (file descriptors) until EOF, error or ``abort()``."""

    EOF = "eof"
    ABORTED = "aborted"
    BROKEN = "broken"

    def __init__(self, src: int, dst: int, *, chunk: int = CHUNK, bwlimit_bps: float | None = None) -> None:
        self.src = src
        self.dst = dst
        self._max_chunk = chunk
        self._rate_lock = threading.Lock()
        self.bwlimit_bps: float | None = None
        self.chunk = chunk
        self._tokens = 0.0
        self._last_refill = time.monotonic()
        self.set_rate(bwlimit_bps)
        self._tokens = float(self.chunk)
        self.count = 0
        self.error: str | None = None
        #: why the stream was torn down from outside (the stall watchdog), None otherwise
        self.torn_down: str | None = None
        self._running = False
        self._last_move = time.monotonic()
        self._use_splice = hasattr(os, "splice")
        self._gate = threading.Event()
        self._gate.set()
        self._aborted = False
        self._busy = threading.Condition()
        self._in_flight = False
        self._closed = False

    # -- control (any thread) ---------------------------------------------------------------------
    def set_rate(self, bwlimit_bps: float | None) -> None:
        """Set the bandwidth limit (bytes/s; None or 0: none), also while ``run`` moves bytes: the
        bucket keeps no more than one chunk of the new rate, so a lower limit holds from the next chunk."""
        if bwlimit_bps is not None and not (math.isfinite(bwlimit_bps) and bwlimit_bps <= MAX_BWLIMIT_BPS):
            raise UsageError(f"bwlimit must be at most {MAX_BWLIMIT_BPS} bytes/s, not {bwlimit_bps!r}")
        rate = float(bwlimit_bps) if bwlimit_bps and bwlimit_bps > 0 else None
        with self._rate_lock:
            self.bwlimit_bps = rate
            # ~10 refills per second keeps the rate smooth; never below 4 KiB per move
            self.chunk = self._max_chunk if rate is None else max(4096, min(self._max_chunk, int(rate / 10)))
            self._tokens = min(self._tokens, float(self.chunk))

    def idle_s(self) -> float:
        """Seconds since a byte last moved, counted only while running and not paused."""
        if not self._running or self.paused:
            return 0.0
        return max(0.0, time.monotonic() - self._last_move)

    def tear_down(self, reason: str) -> None:
        """Stop the relay for ``reason`` (reported as the stream's failure); the caller kills the sides."""
        self.torn_down = reason
        self.abort()

    def pause(self, wait: float = 0.0) -> bool:
        """Stop moving bytes. With ``wait``, block until no chunk is in flight (True) or the wait ends."""
        self._gate.clear()
        deadline = time.monotonic() + wait
        with self._busy:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._busy.wait(left)
        return True

    def unpause(self) -> None:
        self._last_move = time.monotonic()  # a suspended stream is not a stalled one
        self._gate.set()

    @property
    def paused(self) -> bool:
        return not self._gate.is_set()

    def abort(self) -> None:
        self._aborted = True
        self._gate.set()

    # -- the loop (the relay's thread) ------------------------------------------------------------
    def run(self) -> str:
        self._last_move = time.monotonic()
        self._running = True
        try:
            return self._loop()
        finally:
            self._running = False

    def _loop(self) -> str:
        while True:
            if self._aborted:
                return self.ABORTED
            if not self._gate.is_set():
                self._gate.wait()
                continue
            want = self._take_tokens()
            if want == 0:
                continue
            with self._busy:
                self._in_flight = True
            try:
                n = self._move(want)
            except OSError as e:
                self.error = f"relay: {os.strerror(e.errno) if e.errno else e}"
                return self.BROKEN
            finally:
                with self._busy:
                    self._in_flight = False
                    self._busy.notify_all()
            if n == 0:
                return self.EOF
            self.count += n
            self._last_move = time.monotonic()
            with self._rate_lock:
                if self.bwlimit_bps:
                    self._tokens -= n

    def _take_tokens(self) -> int:
        with self._rate_lock:
            rate, chunk = self.bwlimit_bps, self.chunk
            if not rate:
                return chunk
            now = time.monotonic()
            self._tokens = min(float(chunk), self._tokens + (now - self._last_refill) * rate)
            self._last_refill = now
            tokens = self._tokens
        # Move in batches of ~20 ms worth of bytes (at least 4 KiB): waking up for every few hundred bytes
        # would spin the relay thousands of times a second and starve the agent's other threads.
        batch = min(chunk, max(4096, int(rate * 0.02)))
        if tokens < batch:
            time.sleep(min(0.1, (batch - tokens) / rate + 0.001))
            return 0
        return int(tokens)

    def _move(self, want: int) -> int:
        if self._use_splice:
            try:
                return os.splice(self.src, self.dst, want)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                self._use_splice = False
        buf = os.read(self.src, want)
        view = memoryview(buf)
        while view:
            k = os.write(self.dst, view)
            view = view[k:]
        return len(buf)

    def close(self) -> None:
        """Close both ends (once: a second call does nothing, the numbers may belong to others by then)."""
        with self._busy:
            if self._closed:
                return
            self._closed = True
        for fd in (self.src, self.dst):
            with contextlib.suppress(OSError):
                os.close(fd)
