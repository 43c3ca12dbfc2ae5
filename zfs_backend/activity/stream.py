"""One stream of a pipeline activity: producer → relay → consumer, as two process groups.

``StreamRun`` owns what a single attempt creates and must give back: the two pipes, the ``Relay``
between them, the stderr files of both sides and the two processes. It knows nothing of activity
states, retries or persistence (``pipeline.PipelineActivity`` does); it starts the sides, reaps them
with their exact CPU time, and words the failure when the stream did not end cleanly. Each side is
started by ``zfs.cmd.spawn_stream``, and the failure's words are typed by ``zfs.cmd.stream_error``
(in ``PipelineActivity``): argv and stderr of a stream are zfs/cmd.py's, as a command's are.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from ..hosts.base import Host
from ..zfs.cmd import spawn_stream
from .procs import create_time, kill_process_group, stderr_tail, wait_rusage
from .relay import Relay, enlarge_pipe
from .states import STATUS_FAILED

__all__ = ["Endpoint", "StreamRun"]


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


class StreamRun:
    """The pipes, relay, stderr files and processes of one stream; a context manager that closes them."""

    def __init__(self, producer: Endpoint, consumer: Endpoint, *, bwlimit_bps: float | None) -> None:
        self.producer = producer
        self.consumer = consumer
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        enlarge_pipe(w1)
        enlarge_pipe(w2)
        #: the ends the children inherit: closed here once they are started (or not)
        self._child_fds = [w1, r2]
        self._perr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._cerr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.relay = Relay(r1, w2, bwlimit_bps=bwlimit_bps)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start the producer, then the consumer, each in its own process group. On failure, whatever
        had started is killed and reaped before the error is raised."""
        w1, r2 = self._child_fds
        prod, cons, null = self.producer, self.consumer, subprocess.DEVNULL
        try:
            self.procs.append(spawn_stream(prod.host, prod.argv, stdin=null, stdout=w1, stderr=self._perr))
            self.procs.append(spawn_stream(cons.host, cons.argv, stdin=r2, stdout=null, stderr=self._cerr))
        except BaseException:
            for p in self.procs:
                kill_process_group(p.pid, 0.5)
                p.wait()
            self.procs = []
            raise
        finally:
            self._close_child_fds()  # the children hold their own copies

    def pids(self) -> list[list[float]]:
        """``[pid, create_time]`` of each side, as a checkpoint keeps them to find them again."""
        return [[p.pid, create_time(p.pid)] for p in self.procs]

    def reap(self, last_look: Callable[[], None]) -> list[tuple[int, float | None]]:
        """Wait for both sides; return each one's exit code and CPU seconds (None when unknown).

        Both are let exit without being reaped first (a zombie keeps ``/proc/<pid>/io``) and
        ``last_look`` runs then: an endpoint like ssh writes its last bytes after the relay's EOF.
        Only CPU is taken from ``wait4``: its ``ru_maxrss`` also counts the pre-exec copy of this process.
        """
        for p in self.procs:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        last_look()
        out: list[tuple[int, float | None]] = []
        for p in self.procs:
            rc, usage = wait_rusage(p)
            out.append((rc, None if usage is None else usage.ru_utime + usage.ru_stime))
        return out

    def failure(self, result: str, rcs: list[int], *, consumer_ends_stream: bool) -> tuple[str, int] | None:
        """None when the stream ended cleanly, else (what went wrong, the status to fail with).

        ``consumer_ends_stream``: the consumer knows where its stream ends and may exit before the
        producer's EOF reaches the relay, so a broken write to it is no failure when both exit 0."""
        ended = result == Relay.EOF or (result == Relay.BROKEN and consumer_ends_stream)
        if ended and rcs == [0, 0] and not self.relay.torn_down:
            return None
        parts = []
        for name, rc, f in (("producer", rcs[0], self._perr), ("consumer", rcs[1], self._cerr)):
            if rc != 0:
                parts.append(f"{name} exited {rc}" + (f": {t}" if (t := stderr_tail(f)) else ""))
        if result == Relay.BROKEN and self.relay.error:
            parts.append(self.relay.error)
        if self.relay.torn_down:  # the watchdog's reason first: the exits above are its doing
            parts.insert(0, self.relay.torn_down)
        status = next((rc for rc in rcs if rc > 0), STATUS_FAILED)
        return "; ".join(parts) or "stream ended early", status

    def close(self) -> None:
        self.relay.close()
        self._close_child_fds()
        self._perr.close()
        self._cerr.close()

    def __enter__(self) -> StreamRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _close_child_fds(self) -> None:
        for fd in self._child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child_fds = []
