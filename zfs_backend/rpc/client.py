"""The controller side: ``AgentClient`` over a transport (``transport.py``), ``RemoteActivity`` and
``Node``.

Grants (issue 19): before the controller starts an activity in which one node writes into another, it
asks the destination's agent for a grant (``grant``: ``grant.add`` on the control socket, never a peer's
op) and ends a relationship's grants with ``revoke_grant`` (``grant.revoke``); see
``zfs_backend.replication.granted``.

Errors come back as the ``zfs_backend.errors`` type the agent raised (``ActivityNotFound``,
``InvalidTransition``, …); a dead connection is reopened before the next request, and a read-only
request (``get``, ``list``, ``wait``, ``ping``) whose answer was lost is sent again once. A session whose
far end answered ``AgentUnavailable`` (its bridge found no agent: a node still booting) is dropped, so
the next request opens a new one rather than reading the same error for ever.
"""

from __future__ import annotations

import builtins
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..activity.handle import BackendActivity
from ..activity.report import ActivityRecord, Resources
from ..activity.states import TERMINAL
from ..config import Settings, load_settings
from ..errors import AgentUnavailable, ProtocolError
from ..hosts.base import Host
from .protocol import LIST_LIMIT, MAX_WAIT_S, READ_ONLY_OPS, decode, encode, error_from_payload, request
from .transport import ChannelTransport, CommandTransport, Transport, UnixSocketTransport

__all__ = [
    "AgentClient",
    "ChannelTransport",
    "CommandTransport",
    "Node",
    "RemoteActivity",
    "Transport",
    "UnixSocketTransport",
]


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
            err = error_from_payload(msg["error"])
            if isinstance(err, AgentUnavailable):
                # the far end's bridge found no agent (a node still booting) and answers every line of
                # this session so for as long as it lives: the next call opens a new one
                self.transport.close()
            raise err
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

    def list(
        self, state: str | None = None, *, limit: int | None = LIST_LIMIT, since: float | None = None
    ) -> list[ActivityRecord]:
        """Every non-terminal activity, and of the finished ones (since ``since``, a UNIX time) the
        ``limit`` that finished last (None: all of them); in creation order."""
        args: dict[str, Any] = {"state": state, "limit": limit}
        if since is not None:
            args["since"] = since
        return [ActivityRecord.from_dict(d) for d in self.call("list", **args)]

    def get(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("get", id=activity_id))

    def suspend(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("suspend", id=activity_id))

    def resume(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("resume", id=activity_id))

    def cancel(self, activity_id: str) -> ActivityRecord:
        return ActivityRecord.from_dict(self.call("cancel", id=activity_id))

    def set_bwlimit(self, activity_id: str, bwlimit_bps: int | None) -> ActivityRecord:
        """Change the bandwidth limit of a running activity (None: no limit)."""
        return ActivityRecord.from_dict(self.call("set", id=activity_id, bwlimit_bps=bwlimit_bps))

    def events(self, activity_id: str) -> builtins.list[dict[str, Any]]:
        return list(self.call("events", id=activity_id))

    def holds(self, *, release_stale: bool = False) -> dict[str, Any]:
        """The project's holds on this node, and those released (with ``release_stale``)."""
        return dict(self.call("holds", release_stale=release_stale))

    def wait(self, activity_id: str, timeout: float | None = None) -> ActivityRecord:
        """Until terminal or ``timeout`` (None: forever), in round trips of at most 60 s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_WAIT_S if deadline is None else max(0.0, min(MAX_WAIT_S, deadline - time.monotonic()))
            rec = ActivityRecord.from_dict(self.call("wait", id=activity_id, timeout=left))
            if rec.state in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return rec

    def grant(
        self,
        peer: str,
        allow: Sequence[str],
        *,
        dataset: str | None = None,
        volume: str | None = None,
        recursive: bool = False,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        """``grant.add``: let ``peer`` do ``allow`` on ``dataset`` (``recursive``) or on ``volume``'s
        backups, here; ``ttl_s``: how long it may wait for its first use (None: the agent's default, 0:
        never expires). Returns ``{"grant": id, "expires_at": ...}``."""
        args: dict[str, Any] = {"peer": peer, "allow": list(allow)}
        if dataset is not None:
            args.update(dataset=dataset, recursive=bool(recursive))
        if volume is not None:
            args["volume"] = volume
        if ttl_s is not None:
            args["ttl_s"] = float(ttl_s)
        return dict(self.call("grant.add", **args))

    def revoke_grant(
        self, grant: str | None = None, *, dataset: str | None = None, peer: str | None = None
    ) -> int:
        """``grant.revoke``: the grant ``grant``, or every grant on ``dataset`` (from ``peer``, or any).
        Returns how many went."""
        if grant is not None:
            args: dict[str, Any] = {"grant": grant}
        else:
            args = {"dataset": dataset}
            if peer is not None:
                args["peer"] = peer
        return int(dict(self.call("grant.revoke", **args)).get("revoked", 0))

    def grants(self) -> builtins.list[dict[str, Any]]:
        """``grant.list``: the live grants on this node."""
        return [dict(g) for g in self.call("grant.list")]

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

    def set_bwlimit(self, bwlimit_bps: int | None) -> None:
        self._set(self.client.set_bwlimit(self.id, bwlimit_bps))

    def events(self) -> list[dict[str, Any]]:
        return self.client.events(self.id)

    def resources(self) -> Resources:
        return self._fresh().resources

    def record(self) -> ActivityRecord:
        return self._fresh()

    def wait(self, timeout: float | None = None) -> str:
        self._set(self.client.wait(self.id, timeout))
        return self._rec.state

    def wait_record(self, timeout: float) -> ActivityRecord:
        """One round trip: the agent answers at the end or after ``timeout``."""
        self._set(self.client.wait(self.id, timeout))
        return self._rec


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

    def list(
        self, state: str | None = None, *, limit: int | None = LIST_LIMIT, since: float | None = None
    ) -> list[RemoteActivity]:
        return [RemoteActivity(self.client, r) for r in self.client.list(state, limit=limit, since=since)]

    def grant(
        self,
        peer: str,
        allow: Sequence[str],
        *,
        dataset: str | None = None,
        volume: str | None = None,
        recursive: bool = False,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        """A grant on this node for ``peer`` (see ``AgentClient.grant``)."""
        c = self.client
        return c.grant(peer, allow, dataset=dataset, volume=volume, recursive=recursive, ttl_s=ttl_s)

    def revoke_grant(
        self, grant: str | None = None, *, dataset: str | None = None, peer: str | None = None
    ) -> int:
        return self.client.revoke_grant(grant, dataset=dataset, peer=peer)

    def get(self, activity_id: str) -> RemoteActivity:
        return RemoteActivity(self.client, self.client.get(activity_id))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
