"""Process-group helpers for activities: kill a group, reap the leftovers of an earlier attempt."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from typing import IO

import psutil

__all__ = ["create_time", "end_within", "kill_process_group", "reap_stale", "stderr_tail", "wait_rusage"]


def kill_process_group(pgid: int, grace_s: float = 2.0) -> None:
    """SIGTERM the group, then SIGKILL it after ``grace_s`` if anything is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def end_within(procs: list[subprocess.Popen[bytes]], wait_s: float, grace_s: float = 2.0) -> None:
    """Give our children ``procs`` ``wait_s`` in all to exit on their own, then kill the group of each
    one still running. They are not reaped (``wait_rusage`` still gets their exact CPU)."""
    deadline = time.monotonic() + wait_s
    for p in procs:
        while True:
            try:
                if os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                    break  # exited (a zombie until reaped)
            except ChildProcessError:
                break  # already reaped
            if time.monotonic() >= deadline:
                kill_process_group(p.pid, grace_s=grace_s)
                break
            time.sleep(0.05)


def create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def reap_stale(pids: list[list[float]] | list[tuple[int, float]], exit_wait_s: float = 5.0) -> None:
    """Processes of an earlier attempt (or an earlier agent) may still run: give them ``exit_wait_s``
    to finish on their own (a consumer drains what it was given), then kill their groups.

    ``pids`` holds ``(pid, create_time)`` pairs; a pid reused by another process is left alone."""
    live: list[psutil.Process] = []
    for pid, ctime in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - float(ctime)) < 0.01:
                live.append(proc)
    if not live:
        return
    _gone, alive = psutil.wait_procs(live, timeout=exit_wait_s)
    for proc in alive:
        kill_process_group(proc.pid)


def stderr_tail(f: IO[bytes] | None, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a captured stderr file, on one line."""
    if f is None:
        return ""
    try:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - limit))
        text = f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def wait_rusage(proc: subprocess.Popen[bytes]) -> tuple[int, resource.struct_rusage | None]:
    """Wait for a child and return its exit code and resource usage (``wait4``): exact CPU time and
    peak RSS of the child and the descendants it waited for, even when it lived too short to sample."""
    while True:
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:  # already reaped elsewhere
            return proc.wait(), None
        except InterruptedError:
            continue
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, usage
