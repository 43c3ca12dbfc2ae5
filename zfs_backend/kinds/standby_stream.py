"""The stream of one standby increment: ``zfs send -i`` on the primary → the agent's relay (suspend
pauses it) → ``ssh STANDBY zfs receive`` over the node's ControlMaster (never ``-F``). Mixed into
:class:`~.standby.StandbySync`, whose control verbs stop or pause it from other threads.

The receiving side of the next increment is started as soon as the last one ended: ``ssh`` through
the master, the peer's forced command (a Python start, ~0.2 s on the lab) and ``zfs receive`` waiting
for its stream on stdin. The sync then only has to send: what a sync costs is the snapshot, the
stream and two round trips to the standby's agent. A pre-started receiver that died meanwhile (the
link was cut) is simply replaced."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from typing import IO, Any

from ..activity.procs import kill_process_group, stderr_tail, wait_rusage
from ..activity.relay import Relay, enlarge_pipe
from ..activity.report import ActivityRecord
from ..activity.states import SUSPENDED
from ..hosts.local import LocalHost
from ..hosts.peer import PeerHost
from ..replication.compress import pack_argv, unpack_argv
from ..zfs.api import Zfs
from ..zfs.cmd import spawn_stream
from ..zfs.dialect import Dialect
from ..zfs.models import RecvSpec, SendSpec
from ..zfs.names import DatasetName

__all__ = ["IncrementPipe"]


class IncrementPipe:
    """What it needs from the activity: its lock, its state, where to send."""

    _cond: threading.Condition
    _abort: str | None
    _procs: list[subprocess.Popen[bytes]]
    _relay: Relay | None
    _zfs: Zfs
    _peer: PeerHost
    #: the codec on the wire (``replication.compress``), None: none
    compress: str | None
    dest: DatasetName
    ctx: Any
    _record: ActivityRecord

    _next: tuple[subprocess.Popen[bytes], int, IO[bytes]] | None = None

    def _drop_next(self) -> None:
        """Kill the pre-started receiver, if any (the caller holds ``_cond``; a cancel or detach does,
        through ``StandbySync._halt``)."""
        nxt, self._next = self._next, None
        if nxt is not None:
            proc, fd, err = nxt
            _close(fd)
            kill_process_group(proc.pid, grace_s=0.5)
            with contextlib.suppress(Exception):
                proc.wait(5)
            err.close()

    def _start_receiver(self) -> None:
        """The receiving side of the next increment, waiting for its stream."""
        with self._cond:
            if self._next is not None or self._abort is not None:
                return
            recv = RecvSpec(target=self.dest).argv(Dialect(name="standby"))
            r2, w2 = os.pipe()
            enlarge_pipe(w2)
            err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
            try:
                if self.compress:  # zstd after the relay, unpacked by the standby's peer-exec
                    argv = pack_argv(self.compress, self._peer.stream_argv(unpack_argv(self.compress, recv)))
                    proc = spawn_stream(
                        LocalHost(self.ctx.node), argv, stdin=r2, stdout=subprocess.DEVNULL, stderr=err
                    )
                else:
                    proc = spawn_stream(self._peer, recv, stdin=r2, stdout=subprocess.DEVNULL, stderr=err)
            except Exception:
                _close(r2, w2)
                err.close()
                raise
            finally:
                _close(r2)
            self._next = (proc, w2, err)

    def _take_receiver(self) -> tuple[subprocess.Popen[bytes], int, IO[bytes]]:
        nxt = self._next
        if nxt is None or nxt[0].poll() is not None:
            self._drop_next()
            self._start_receiver()
            nxt = self._next
        assert nxt is not None
        self._next = None
        return nxt

    def _pipe(self, spec: SendSpec) -> tuple[int, int, float, str]:
        r1, w1 = os.pipe()
        enlarge_pipe(w1)
        with tempfile.TemporaryFile() as perr:
            with self._cond:
                if self._abort is not None:
                    _close(r1, w1)
                    return 1, 0, 0.0, "stopped"
                consumer, w2, cerr = self._take_receiver()
                relay = Relay(r1, w2)
                try:
                    producer = spawn_stream(
                        LocalHost(self.ctx.node),
                        self._zfs.send_argv(spec),
                        stdin=subprocess.DEVNULL,
                        stdout=w1,
                        stderr=perr,
                    )
                except Exception:
                    relay.close()
                    kill_process_group(consumer.pid, grace_s=0.5)
                    cerr.close()
                    raise
                finally:
                    _close(w1)
                self._procs = [producer, consumer]
                self._relay = relay
                if self._record.state == SUSPENDED:
                    relay.pause()
            with cerr:
                result = relay.run()
                relay.close()
                waited = [wait_rusage(p) for p in self._procs]
                with self._cond:
                    self._procs, self._relay = [], None
                cpu = sum(u.ru_utime + u.ru_stime for _rc, u in waited if u is not None)
                rcs = [rc for rc, _u in waited]
                if result == Relay.EOF and rcs == [0, 0]:
                    return 0, relay.count, cpu, ""
                parts = [
                    f"send exited {rcs[0]}: {stderr_tail(perr)}",
                    f"receive exited {rcs[1]}: {stderr_tail(cerr)}",
                ]
                return 1, relay.count, cpu, "; ".join(p for p, rc in zip(parts, rcs, strict=True) if rc != 0)


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
