"""Transports between the controller and a node agent: one open connection carrying line-delimited
JSON (see ``protocol``), reopened when it dies.

* ``UnixSocketTransport(path)``: the local agent.
* ``CommandTransport(argv)``: a long-lived local command whose stdin/stdout reach an agent, e.g.
  ``host.stream_argv(["zfs-backend", "rpc"])`` (OpenSSH with ControlMaster).
* ``ChannelTransport(open_channel)``: a paramiko channel (``SSHHost.session([...])``).

If a connection dies with an answer outstanding, a read-only request is sent again once; a mutating
one raises ``AgentUnavailable`` saying its outcome is unknown (``Transport.roundtrip(retry=...)``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import AgentUnavailable
from .protocol import MAX_LINE

__all__ = ["ChannelTransport", "CommandTransport", "Transport", "UnixSocketTransport"]


class _Lost(Exception):
    """The connection died; ``sent`` says whether the request had left."""

    def __init__(self, why: str, sent: bool) -> None:
        super().__init__(why)
        self.sent = sent


class Transport(ABC):
    """One request line out, one response line back; thread-safe; reconnects lazily."""

    name = "agent"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._r: IO[bytes] | None = None
        self._w: IO[bytes] | None = None

    @abstractmethod
    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        """Connect; return (reader, writer). Raise ``AgentUnavailable`` when impossible."""

    def _dead(self) -> bool:
        """Cheap check that the open connection is already known dead (EOF pending)."""
        return False

    def _drop(self) -> None:
        for f in (self._w, self._r):
            with contextlib.suppress(Exception):
                if f is not None:
                    f.close()
        self._r = self._w = None

    def roundtrip(self, line: bytes, *, retry: bool) -> bytes:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._once(line)
                except _Lost as e:
                    self._drop()
                    if e.sent and not retry:
                        raise AgentUnavailable(
                            f"{self.name}: connection to the agent lost; the outcome is unknown ({e})"
                        ) from None
                    if attempt == 2:
                        raise AgentUnavailable(f"{self.name}: agent unreachable: {e}") from None
                except BaseException:
                    # interrupted between the request and its answer (Ctrl-C in a command that follows
                    # an activity): that answer would be read as the next request's, so the connection
                    # goes (the next call opens a new one)
                    self._drop()
                    raise
        raise AssertionError("unreachable")

    def _once(self, line: bytes) -> bytes:
        if self._r is not None and self._dead():
            self._drop()
        if self._r is None or self._w is None:
            self._r, self._w = self._open()
        try:
            self._w.write(line)
            self._w.flush()
        except (OSError, ValueError) as e:
            raise _Lost(str(e) or type(e).__name__, sent=False) from e
        try:
            out = self._r.readline(MAX_LINE + 1)
        except (OSError, ValueError) as e:
            raise _Lost(str(e) or type(e).__name__, sent=True) from e
        if not out.endswith(b"\n"):
            raise _Lost(self._eof_reason(), sent=True)
        return out

    def _eof_reason(self) -> str:
        return "connection closed"

    def close(self) -> None:
        with self._lock:
            self._drop()


class UnixSocketTransport(Transport):
    #: longer than the longest single request (``wait`` ≤ 60 s, ``cancel`` waits ≤ 30 s for rollback)
    DEFAULT_TIMEOUT = 120.0

    def __init__(self, path: str | Path, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.path))
        except OSError as e:
            s.close()
            raise AgentUnavailable(f"no agent at {self.path}: {e.strerror or e}") from None
        s.settimeout(self.timeout)
        self._sock = s
        return s.makefile("rb"), s.makefile("wb")

    def _dead(self) -> bool:
        s = self._sock
        if s is None:
            return True
        try:
            ready, _, _ = select.select([s], [], [], 0)
            return bool(ready) and s.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _drop(self) -> None:
        super()._drop()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class CommandTransport(Transport):
    """A local command (e.g. ``ssh -o ControlMaster=auto NODE zfs-backend rpc``) as the pipe."""

    def __init__(self, argv: Sequence[str], name: str = "") -> None:
        super().__init__()
        self.argv = list(argv)
        self.name = name or " ".join(self.argv[:3])
        self._proc: subprocess.Popen[bytes] | None = None

    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise AgentUnavailable(f"{self.name}: cannot start {self.argv[0]}: {e}") from None
        assert self._proc.stdout is not None and self._proc.stdin is not None
        return self._proc.stdout, self._proc.stdin

    def _dead(self) -> bool:
        p = self._proc
        if p is None or p.poll() is not None or p.stdout is None:
            return True
        # between requests nothing may be readable: readable means EOF (the bridge exited because
        # the agent went away) or garbage; either way, start afresh
        try:
            ready, _, _ = select.select([p.stdout], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(ready)

    def _eof_reason(self) -> str:
        p = self._proc
        if p is None:
            return "not started"
        try:
            rc = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "connection closed"
        err = (p.stderr.read() if p.stderr else b"").decode("utf-8", "replace").strip().splitlines()
        return f"`{self.name}` exited {rc}" + (f": {err[-1]}" if err else "")

    def _drop(self) -> None:
        super()._drop()
        p, self._proc = self._proc, None
        if p is not None:
            with contextlib.suppress(Exception):
                p.terminate()
                p.wait(timeout=5)
            if p.stderr:
                p.stderr.close()


class ChannelTransport(Transport):
    """A paramiko channel running ``zfs-backend rpc``: ``open_channel()`` returns a started channel
    (e.g. ``lambda: ssh_host.session(["zfs-backend", "rpc"])``)."""

    def __init__(self, open_channel: Callable[[], Any], name: str = "paramiko") -> None:
        super().__init__()
        self.open_channel = open_channel
        self.name = name
        self._chan: Any = None

    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        try:
            self._chan = self.open_channel()
        except Exception as e:
            raise AgentUnavailable(f"{self.name}: {e}") from None
        return self._chan.makefile("rb"), self._chan.makefile_stdin("wb")

    def _dead(self) -> bool:
        return self._chan is None or self._chan.exit_status_ready()

    def _drop(self) -> None:
        super()._drop()
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.close()
            self._chan = None
