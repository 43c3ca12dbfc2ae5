"""Supervised daemon mode, for nodes where systemd is not PID 1: ``zfs-backend agent --daemon``.

A supervisor process (double fork, its own session, stdio to a log file) runs the agent as its child
and starts it again when it exits for any reason other than a stop, with a back-off (1 s, doubling up to
30 s; back to 1 s after a minute of uptime). The agent carries its unfinished activities on after each
start (``self_restarting``), so a crashed agent costs a pause, not an activity.

The pid file is also the supervisor's lock: the supervisor holds an exclusive ``flock`` on it for its
whole life, so "running" is "the lock is held" (never a stale pid reused by another process), and
``start`` is idempotent: a second ``start`` sees the lock and changes nothing.

``stop`` sends SIGTERM to the supervisor, which forwards it to the agent (the agent detaches its
activities, see ``daemon``), waits for it and exits, removing nothing but its own pid file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AgentUnavailable

__all__ = ["StartResult", "Supervised", "start", "status", "stop"]

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
CHILD_STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Supervised:
    """What to supervise: the child's argv and environment, the pid/lock file and the log file."""

    argv: Sequence[str]
    pidfile: Path
    log: Path
    env: Mapping[str, str]


@dataclass(frozen=True)
class StartResult:
    started: bool  # False: a supervisor was already running (nothing changed)
    pid: int


def status(pidfile: Path) -> int | None:
    """The running supervisor's pid, or None (no pid file, or nobody holds its lock)."""
    try:
        fd = os.open(pidfile, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def start(spec: Supervised, timeout: float = 30.0) -> StartResult:
    """Start the supervisor unless one is running. Returns once it holds its lock and started the child."""
    pid = status(spec.pidfile)
    if pid is not None:
        return StartResult(False, pid)
    spec.pidfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    spec.log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    rfd, wfd = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the forked child
        os.close(rfd)
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _become_supervisor(spec, wfd)
        finally:
            os._exit(1)
    os.close(wfd)
    os.waitpid(first, 0)
    answer = b""
    deadline = time.monotonic() + timeout
    with os.fdopen(rfd, "rb") as r:
        while time.monotonic() < deadline:
            chunk = r.read1(64) if hasattr(r, "read1") else r.read(64)
            if not chunk:
                break
            answer += chunk
            if answer.endswith(b"\n"):
                break
    word, _, value = answer.decode(errors="replace").strip().partition(" ")
    if word == "started" and value.isdigit():
        return StartResult(True, int(value))
    if word == "running" and value.lstrip("-").isdigit():
        return StartResult(False, int(value))
    raise AgentUnavailable(f"the agent supervisor did not start: {answer.decode(errors='replace').strip()}")


def stop(pidfile: Path, timeout: float = CHILD_STOP_TIMEOUT_S + 10) -> int | None:
    """SIGTERM the supervisor and wait until it released its lock. Returns its pid, or None if none ran."""
    pid = status(pidfile)
    if pid is None:
        return None
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while status(pidfile) is not None:
        if time.monotonic() > deadline:
            raise AgentUnavailable(f"the agent supervisor (pid {pid}) did not stop within {timeout:g} s")
        time.sleep(0.1)
    return pid


# ---- the supervisor process -----------------------------------------------------------------------


def _say(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode() + b"\n")
        os.close(fd)


def _become_supervisor(spec: Supervised, ready_fd: int) -> None:  # pragma: no cover - forked
    fd = os.open(spec.pidfile, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _say(ready_fd, f"running {status(spec.pidfile) or -1}")
        os._exit(0)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    log_fd = os.open(spec.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stdio
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir("/")
    os.umask(0o077)
    code = 0
    try:
        code = _supervise(spec, ready_fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spec.pidfile)
        os.close(fd)
    os._exit(code)


def _log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()


def _supervise(spec: Supervised, ready_fd: int | None) -> int:
    """Run the child until SIGTERM/SIGINT; restart it whenever it exits otherwise."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    backoff = MIN_BACKOFF_S
    while not stopping:
        started_at = time.monotonic()
        child = subprocess.Popen(list(spec.argv), env=dict(spec.env), stdin=subprocess.DEVNULL)
        _log(f"started {spec.argv[0]} (pid {child.pid})")
        if ready_fd is not None:
            _say(ready_fd, f"started {os.getpid()}")
            ready_fd = None
        rc = _wait(child, lambda: stopping)
        if stopping:
            break
        uptime = time.monotonic() - started_at
        backoff = MIN_BACKOFF_S if uptime > STABLE_AFTER_S else min(backoff * 2, MAX_BACKOFF_S)
        _log(f"child exited with {rc} after {uptime:.1f} s; restarting in {backoff:g} s")
        deadline = time.monotonic() + backoff
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
    if child is not None and child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _log(f"child {child.pid} ignored SIGTERM for {CHILD_STOP_TIMEOUT_S:g} s; killing it")
            child.kill()
            child.wait()
    _log("stopped")
    return 0


def _wait(child: subprocess.Popen[bytes], stopping: object) -> int:
    """Wait for ``child``; once ``stopping()`` turns true, keep waiting for it to exit (it got SIGTERM)."""
    assert callable(stopping)
    while True:
        try:
            return child.wait(0.5)
        except subprocess.TimeoutExpired:
            if stopping():
                try:
                    return child.wait(CHILD_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    return child.wait()
