"""The controller side: ``AgentClient`` over a transport, ``RemoteActivity`` and ``Node``.

Transports carry line-delimited JSON (see ``protocol``) and keep one connection open:

* ``UnixSocketTransport(path)``: the local agent.
* ``CommandTransport(argv)``: a long-lived local command whose stdin/stdout reach an agent, e.g.
  ``host.stream_argv(["zfs-backend", "rpc"])`` (OpenSSH with ControlMaster).
* ``ChannelTransport(open_channel)``: a paramiko channel (``SSHHost.session([...])``).

A dead connection is reopened before the next request. If it dies with an answer outstanding, a
read-only request (``get``, ``list``, ``wait``, ``ping``) is sent again once; a mutating one raises
``AgentUnavailable`` saying its outcome is unknown. Errors come back as the ``zfs_backend.errors``
type the agent raised (``ActivityNotFound``, ``InvalidTransition``, …).
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ..activity.core import BackendActivity
from ..activity.report import ActivityRecord, Resources
from ..activity.states import TERMINAL
from ..config import Settings, load_settings
from ..errors import AgentUnavailable, ProtocolError
from ..hosts.base import Host
from .protocol import MAX_LINE, MAX_WAIT_S, READ_ONLY_OPS, decode, encode, error_from_payload, request

__all__ = [
    "AgentClient",
    "ChannelTransport",
    "CommandTransport",
    "Node",
    "RemoteActivity",
    "Transport",
    "UnixSocketTransport",
]


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


class AgentClient:
    """Typed calls to one agent. Every method is one round trip."""

    def __init__(self, transport: Transport, node: str = "local") -> None:
        self.transport = transport
        self.node = node
        self._ids = itertools.count(1)

    def call(self, op: str, **args: Any) -> Any:
        req_id = next(self._ids)
        line = self.transport.roundtrip(encode(request(req_id, op, **args)), retry=op in READ_ONLY_OPS)
        msg = decode(line)
        if "error" in msg:
            raise error_from_payload(msg["error"])
        if msg.get("id") != req_id:
            self.transport.close()
            raise ProtocolError(f"{self.node}: response {msg.get('id')!r} to request {req_id}")
        return msg.get("result")

    def ping(self) -> dict[str, Any]:
        return dict(self.call("ping"))

    def kinds(self) -> list[str]:
        return list(self.call("kinds"))

    def start(self, kind: str, params: dict[str, Any]) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("start", kind=kind, params=params))

    def list(self, state: str | None = None) -> list[ActivityRecord]:
        return [ActivityRecord.from_dict(d) for d in self.call("list", state=state)]

    def get(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("get", id=activity_id))

    def suspend(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("suspend", id=activity_id))

    def resume(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("resume", id=activity_id))

    def cancel(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("cancel", id=activity_id))

    def wait(self, activity_id: str, timeout: float | None = None) -> ActivityRecord:
        """Until terminal or ``timeout`` (None: forever), in round trips of at most 60 s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_WAIT_S if deadline is None else max(0.0, min(MAX_WAIT_S, deadline - time.monotonic()))
            rec = ActivityRecord.from_dict(self.call("wait", id=activity_id, timeout=left))
            if rec.state in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return rec

    def shutdown(self) -> None:
        self.call("shutdown")

    def close(self) -> None:
        self.transport.close()


class RemoteActivity(BackendActivity):
    """The ``BackendActivity`` interface over an ``AgentClient``.

    Each property reads a fresh record (one round trip) unless the cached one is younger than
    ``max_age`` seconds; renderers call ``refresh()`` once and read the returned record.
    """

    def __init__(self, client: AgentClient, record: ActivityRecord, max_age: float = 0.0) -> None:
        self.client = client
        self._rec = record
        self._at = time.monotonic()
        self.max_age = max_age

    def refresh(self) -> ActivityRecord:
        self._set(self.client.get(self._rec.id))
        return self._rec

    def _set(self, rec: ActivityRecord) -> None:
        self._rec, self._at = rec, time.monotonic()

    def _fresh(self) -> ActivityRecord:
        if self._rec.state in TERMINAL or time.monotonic() - self._at < self.max_age:
            return self._rec
        return self.refresh()

    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def kind(self) -> str:
        return self._rec.kind

    @property
    def node(self) -> str:
        return self._rec.node

    @property
    def progress(self) -> tuple[int, int]:
        return self._fresh().progress.pair

    @property
    def self_restarting(self) -> bool:
        return self._rec.self_restarting

    @property
    def state(self) -> str:
        return self._fresh().state

    @property
    def status(self) -> int | None:
        return self._fresh().status

    @property
    def error(self) -> str | None:
        return self._fresh().error

    def suspend(self) -> None:
        self._set(self.client.suspend(self.id))

    def resume(self) -> None:
        self._set(self.client.resume(self.id))

    def cancel(self) -> None:
        self._set(self.client.cancel(self.id))

    def resources(self) -> Resources:
        return self._fresh().resources

    def record(self) -> ActivityRecord:
        return self._fresh()

    def wait(self, timeout: float | None = None) -> str:
        self._set(self.client.wait(self.id, timeout))
        return self._rec.state


class Node:
    """A storage node's agent, as the controller sees it."""

    def __init__(self, client: AgentClient, name: str = "local") -> None:
        self.client = client
        self.name = name

    @classmethod
    def local(cls, settings: Settings | None = None, socket_path: str | Path | None = None) -> Node:
        path = socket_path or (settings or load_settings()).agent_socket
        return cls(AgentClient(UnixSocketTransport(path), node="local"), "local")

    @classmethod
    def over_ssh(cls, host: Host, zfs_backend_bin: str = "zfs-backend", *, paramiko: bool = False) -> Node:
        """One persistent ``zfs-backend rpc`` session to ``host``: OpenSSH (``host.stream_argv``,
        multiplexed) by default, or a paramiko channel (``host.session``) with ``paramiko=True``."""
        argv = [zfs_backend_bin, "rpc"]
        transport: Transport
        if paramiko:
            transport = ChannelTransport(lambda: host.session(argv), name=host.name)  # type: ignore[attr-defined]
        else:
            transport = CommandTransport(host.stream_argv(argv), name=host.name)
        return cls(AgentClient(transport, node=host.name), host.name)

    def ping(self) -> dict[str, Any]:
        return self.client.ping()

    def start(self, kind: str, params: dict[str, Any]) -> RemoteActivity:
        return RemoteActivity(self.client, self.client.start(kind, params))

    def list(self, state: str | None = None) -> list[RemoteActivity]:
        return [RemoteActivity(self.client, r) for r in self.client.list(state)]

    def get(self, activity_id: str) -> RemoteActivity:
        return RemoteActivity(self.client, self.client.get(activity_id))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
