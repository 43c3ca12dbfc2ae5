"""The small Cinder's processes: started in sessions of their own, recorded, found and stopped by id.

Each process is started with ``start_new_session`` (its pid is its session id), umask 077 (whatever it
writes is private) and the marker ``ZFS_BACKEND_CINDER_ROOT=<state dir>`` in its environment. Its record
``run/<name>.json`` (0600) holds the pid, its start time and argv. What belongs to this Cinder is found by
that marker, which every child inherits (cinder's worker processes, Erlang's helpers, and the OpenSSH
master connections the driver opens to the nodes, which leave the session): :func:`stop` ends exactly
those processes, never anything found by its name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..errors import LabError
from ..private import private_dir, private_open

__all__ = [
    "MARKER",
    "Proc",
    "marked",
    "port_free",
    "read_record",
    "run_tool",
    "start",
    "stop",
    "tail",
    "wait_for",
]

MARKER = "ZFS_BACKEND_CINDER_ROOT"


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    create_time: float
    argv: tuple[str, ...]

    def alive(self) -> bool:
        """The recorded process, not a later one with the same pid, and not a zombie."""
        try:
            p = psutil.Process(self.pid)
            return abs(p.create_time() - self.create_time) < 0.5 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def _record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def read_record(run_dir: Path, name: str) -> Proc | None:
    try:
        d = json.loads(_record_path(run_dir, name).read_text())
        return Proc(str(d["name"]), int(d["pid"]), float(d["create_time"]), tuple(d["argv"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def start(
    name: str, argv: Sequence[str], *, root: Path, log: Path, env: Mapping[str, str], cwd: Path
) -> tuple[Proc, subprocess.Popen[bytes]]:
    """Start ``argv`` (a list, never a shell string) with its output appended to ``log``."""
    run_dir = root / "run"
    private_dir(run_dir)
    full_env = {**env, MARKER: str(root)}
    fd = private_open(log, os.O_WRONLY | os.O_APPEND)
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            umask=0o077,
            close_fds=True,
        )
    finally:
        os.close(fd)
    try:
        created = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        created = 0.0
    proc = Proc(name, popen.pid, created, tuple(argv))
    rec = {"name": name, "pid": proc.pid, "create_time": created, "argv": list(argv)}
    out = private_open(_record_path(run_dir, name), os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(out, "w") as f:
        json.dump(rec, f)
    return proc, popen


def run_tool(what: str, argv: Sequence[str], *, env: Mapping[str, str], timeout: float) -> None:
    """Run a setup tool (``mariadb-install-db``, ``keystone-manage ...``) to its end: argv a list,
    umask 077, output captured; ``LabError`` naming ``what``, its status and the end of its output when
    it fails."""
    r = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=dict(env), umask=0o077
    )
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip()[-2000:]
        raise LabError(f"{what} failed ({r.returncode}): {why}")


def marked(root: Path) -> list[psutil.Process]:
    """Every live process whose environment carries this Cinder's marker."""
    want = str(root)
    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if p.environ().get(MARKER) == want and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def _session(p: psutil.Process) -> int | None:
    try:
        return os.getsid(p.pid)
    except OSError:
        return None


def _terminate(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL what is left after ``timeout`` s. Returns what was killed hard."""
    procs = list(procs)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    return alive


def stop(root: Path, order: Sequence[str], timeout: float = 30.0) -> list[str]:
    """Stop the recorded processes in ``order`` (each with its session: a service's forked workers),
    then every other process still carrying the marker. Returns one line per process stopped."""
    run_dir = root / "run"
    done: list[str] = []
    for name in order:
        rec = read_record(run_dir, name)
        members = [p for p in marked(root) if rec is not None and _session(p) == rec.pid]
        if members:
            hard = _terminate(members, timeout)
            done.append(f"{name} (pid {rec.pid if rec else '?'}{', killed' if hard else ''})")
        with contextlib.suppress(FileNotFoundError):
            _record_path(run_dir, name).unlink()
    rest = marked(root)
    if rest:
        _terminate(rest, timeout=10)
        done += [f"left-over pid {p.pid}" for p in rest]
    return done


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` (connections of a previous run in TIME_WAIT do not count: the
    servers set SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def wait_for(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    procs: Sequence[tuple[Proc, subprocess.Popen[bytes], Path]] = (),
    interval: float = 0.5,
) -> float:
    """Poll ``ready()`` until true; fail at once, with its log's tail, if one of ``procs`` exits.
    Returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - t0
        for proc, popen, log in procs:
            if popen.poll() is not None:
                raise LabError(
                    f"{proc.name} exited ({popen.returncode}) while waiting for {what}:\n{tail(log)}"
                )
        if time.monotonic() - t0 > timeout:
            # each process's own output, and its service's log file beside it (cinder-volume.log)
            paths = [p for *_, out in procs for p in (out, out.with_suffix(".log")) if p.exists()]
            logs = "\n".join(f"--- {log}\n{tail(log, 10)}" for log in paths)
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(interval)
