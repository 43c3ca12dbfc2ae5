"""The controller's side of grants (issue 19): an activity that makes one storage node (the **peer**, the
node whose agent runs it) write into another (the **destination**) starts only under a grant the
controller obtained from the destination's agent, over the controller's own connection (``grant.add``
on its root-only control socket). The grant's id travels in the activity's ``grant`` param; the peer
presents it on every ``recv.*`` / ``backup.*`` call to the destination, which refuses a peer's work no
grant covers. A peer's word never widens what it may do: only the controller grants.

:func:`grant_request` says what to ask for, from the kind and its params alone (nothing is contacted):

==============  ==============  =====================  ==============================================
kind            grants on       names                  allow
==============  ==============  =====================  ==============================================
replicate       destination     dataset (recursive     ``create`` / ``increment`` as the request
                                as the request)        implies; ``rollback`` only with
                                                       ``rollback_destination``
migrate         destination     dataset                ``create``
standby-sync    the standby     dataset                ``increment``, ``prune``; no expiry (ttl 0):
                                                       revoked when the relationship ends or moves
backup          backup node     volume                 ``backup``
restore         backup node     volume                 ``backup`` (ttl a day: a restore never binds
                                                       it; revoked when the controller sees its end)
==============  ==============  =====================  ==============================================

:func:`start_granted` grants, then starts with the id; the source's session is opened while the
destination grants (a cold command pays its two SSH set-ups at once, not one after the other).
Invariants: a grant refused (or the destination's agent unreachable) starts nothing, and the error is
the agent's type with one line naming what was asked; a start refused after the grant was made, or a
source that cannot be reached, revokes that grant; a start whose outcome is unknown (the connection
died) revokes it only once the source's agent shows no activity holding it.
:func:`revoke_grants` ends a relationship's grants (best effort: an unreachable node is logged, never
fatal).

Layering: callers pass ``node_for`` (a node's name → its agent ``Node``, :mod:`zfs_backend.rpc`), as
for :func:`.api.snapshot_replicate`. This module imports only params validation: a command line that
starts a replication loads no planner, no ZFS layer, no transport and no logging.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..activity.handle import BackendActivity
from ..errors import AgentUnavailable, HostError, ProtocolError, UsageError, ZfsBackendError
from ..zfs.names import parse_dataset, validate_node
from .migrate_request import KIND as MIGRATE_KIND
from .migrate_request import MigrateRequest
from .request import KIND as REPLICATE_KIND
from .request import TUNING_PARAMS, Request
from .wire import validate_backup_id, validate_grant

__all__ = [
    "BACKUP_KIND",
    "GRANTED_KINDS",
    "GRANT_PARAM",
    "RESTORE_GRANT_TTL_S",
    "RESTORE_KIND",
    "SYNC_KIND",
    "AgentNode",
    "GrantRequest",
    "grant_request",
    "obtain_grant",
    "obtain_node",
    "revoke_grants",
    "start_granted",
]

GRANT_PARAM = "grant"
# the kinds' own modules load the ZFS layer and the transport; their names are repeated here (a unit
# test holds them equal) so that this module stays light
SYNC_KIND = "standby-sync"
BACKUP_KIND = "backup"
RESTORE_KIND = "restore"
GRANTED_KINDS = frozenset({REPLICATE_KIND, MIGRATE_KIND, SYNC_KIND, BACKUP_KIND, RESTORE_KIND})
#: a restore never binds its grant (no ``backup.begin``): it must outlive the longest restore
RESTORE_GRANT_TTL_S = 86400.0
#: a start that failed this way may have gone through: look before revoking
_UNKNOWN_OUTCOME = (AgentUnavailable, HostError, ProtocolError)


class AgentNode(Protocol):
    """What starting a granted activity needs of a node's agent (``zfs_backend.rpc.client.Node``)."""

    def start(self, kind: str, params: dict[str, Any]) -> BackendActivity: ...

    def list(self, state: str | None = None) -> list[Any]: ...

    def ping(self) -> dict[str, Any]: ...

    def grant(
        self,
        peer: str,
        allow: Sequence[str],
        *,
        dataset: str | None = None,
        volume: str | None = None,
        recursive: bool = False,
        ttl_s: float | None = None,
    ) -> dict[str, Any]: ...

    def revoke_grant(
        self, grant: str | None = None, *, dataset: str | None = None, peer: str | None = None
    ) -> int: ...


@dataclass(frozen=True)
class GrantRequest:
    """One ``grant.add``: on ``destination``'s agent, for ``peer``."""

    destination: str
    peer: str
    allow: tuple[str, ...]
    dataset: str | None = None
    volume: str | None = None
    recursive: bool = False
    ttl_s: float | None = None

    @property
    def what(self) -> str:
        """What the grant lets the peer do, for messages."""
        if self.volume is not None:
            return f"reach the backups of volume {self.volume}"
        return f"receive into {self.destination}:{self.dataset} ({', '.join(self.allow)})"

    def ask(self, node: AgentNode) -> str:
        """The grant's id, from ``node`` (the destination's agent)."""
        try:
            answer = node.grant(
                self.peer,
                list(self.allow),
                dataset=self.dataset,
                volume=self.volume,
                recursive=self.recursive,
                ttl_s=self.ttl_s,
            )
        except ZfsBackendError as e:
            raise _retyped(e, f"{self.destination}: no grant for {self.peer} to {self.what}: {e}") from None
        gid = answer.get("grant") if isinstance(answer, dict) else None
        try:
            return validate_grant(gid)
        except UsageError:
            raise ProtocolError(f"{self.destination}: grant.add answered {ascii(answer)[:120]}") from None


def _warn(msg: str, *args: object) -> None:
    import logging  # lazy: the command line that starts a replication loads no logging

    logging.getLogger("zfs_backend.grants").warning(msg, *args)


def _retyped(e: ZfsBackendError, message: str) -> ZfsBackendError:
    """``e``'s type (its exit code) with ``message`` (what the agent says, as ``error_from_payload``)."""
    exc = type(e).__new__(type(e))
    Exception.__init__(exc, message.replace("\n", " "))
    return exc


def _replicate(p: Mapping[str, Any]) -> GrantRequest:
    req = Request.from_params(p, also=TUNING_PARAMS)
    if req.force_full_copy:
        allow = ["create"]
    elif req.incremental_from is not None:
        allow = ["increment"]
    else:
        allow = ["create", "increment"]
    if req.rollback_destination and not req.force_full_copy:
        allow.append("rollback")
    return GrantRequest(
        destination=req.destination_node,
        peer=req.source_node,
        allow=tuple(allow),
        dataset=str(req.destination),
        recursive=req.recursive,
    )


def _migrate(p: Mapping[str, Any], peer: str) -> GrantRequest:
    """``create`` only: its later rounds begin again as the holder the grant is bound to (the destination
    lets a bound holder begin again under its claim), and the kind refuses a destination that exists."""
    req = MigrateRequest.from_params(dict(p))
    return GrantRequest(req.destination_node, peer, ("create",), dataset=str(req.destination))


def _sync(p: Mapping[str, Any], peer: str) -> GrantRequest:
    try:
        dest_node = validate_node(str(p["destination_node"]))
        dest = parse_dataset(str(p.get("destination") or p["dataset"]))
    except KeyError as e:
        raise UsageError(f"standby-sync param {e} is required") from None
    return GrantRequest(dest_node, peer, ("increment", "prune"), dataset=str(dest), ttl_s=0.0)


def _backup(kind: str, p: Mapping[str, Any], peer: str) -> GrantRequest:
    if not isinstance(p.get("backup_node"), str) or not isinstance(p.get("volume_id"), str):
        raise UsageError(f"{kind} params 'backup_node' and 'volume_id' are required (strings)")
    return GrantRequest(
        validate_node(p["backup_node"]),
        peer,
        ("backup",),
        volume=validate_backup_id(p["volume_id"], "volume id"),
        ttl_s=RESTORE_GRANT_TTL_S if kind == RESTORE_KIND else None,
    )


def grant_request(kind: str, params: Mapping[str, Any], peer: str) -> GrantRequest:
    """What to ask the destination for before ``kind`` starts on ``peer``'s agent with ``params``
    (validated here as the kind validates them: a bad name is refused before anything is contacted)."""
    validate_node(peer)
    if GRANT_PARAM in params:
        raise UsageError(f"{kind} param 'grant' is made by the controller, never given by a caller")
    if kind == REPLICATE_KIND:
        g = _replicate(params)
        if g.peer != peer:
            raise UsageError(f"replicate from {g.peer} cannot start on {peer}'s agent")
        return g
    if kind == MIGRATE_KIND:
        return _migrate(params, peer)
    if kind == SYNC_KIND:
        return _sync(params, peer)
    if kind in (BACKUP_KIND, RESTORE_KIND):
        return _backup(kind, params, peer)
    raise UsageError(f"kind {kind!r} writes into no other node: it needs no grant")


def obtain_node(node_for: Callable[[str], AgentNode], req: GrantRequest) -> AgentNode:
    """``req.destination``'s agent (one line, its error type, when it cannot be named or reached)."""
    try:
        return node_for(req.destination)
    except ZfsBackendError as e:
        raise _retyped(e, f"{req.destination}: no grant for {req.peer} to {req.what}: {e}") from None


def obtain_grant(node_for: Callable[[str], AgentNode], req: GrantRequest) -> str:
    """Ask ``req.destination``'s agent for the grant; its id. Raises (one line, the agent's error type)
    when it is refused or the agent cannot be reached."""
    return req.ask(obtain_node(node_for, req))


def _holds(node: AgentNode, gid: str) -> bool | None:
    """Whether an activity on ``node`` carries grant ``gid`` (None: cannot tell)."""
    try:
        acts = node.list()
        return any(a.record().params.get(GRANT_PARAM) == gid for a in acts)
    except Exception:
        return None


def start_granted(
    node_for: Callable[[str], AgentNode],
    peer: str,
    kind: str,
    params: Mapping[str, Any],
    *,
    request: GrantRequest | None = None,
) -> BackendActivity:
    """Grant, then start ``kind`` on ``peer``'s agent with ``params`` and the grant's id (see the module
    doc for what happens to the grant when something fails). ``request``: what to ask, when the caller
    built it (default: :func:`grant_request`)."""
    req = request or grant_request(kind, params, peer)
    nodes: dict[str, AgentNode] = {}

    def reach(name: str) -> AgentNode:  # one session per node for this start, however node_for makes them
        if name not in nodes:
            nodes[name] = node_for(name)
        return nodes[name]

    dest = obtain_node(reach, req)
    source = reach(peer)
    # the source's session is opened while the destination grants (a cold one costs an SSH set-up: the two
    # in parallel, not one after the other); never two calls at once on one session
    warm = None if source is dest else _WarmUp(source)
    try:
        gid = req.ask(dest)
    finally:
        failed = None if warm is None else warm.join()
    if failed is not None:  # the source cannot be reached: nothing can start, the grant goes
        revoke_grants(reach, req.destination, grant=gid)
        raise failed
    try:
        return source.start(kind, {**params, GRANT_PARAM: gid})
    except _UNKNOWN_OUTCOME:
        with contextlib.suppress(Exception):
            if _holds(source, gid) is False:
                revoke_grants(reach, req.destination, grant=gid)
        raise
    except ZfsBackendError:  # refused: nothing started, the grant goes
        revoke_grants(reach, req.destination, grant=gid)
        raise


class _WarmUp:
    """``node.ping()`` on a thread of its own: the session opened (SSH master, forwarded socket) by the time
    the start is sent. ``join`` returns what it raised, if anything."""

    def __init__(self, node: AgentNode) -> None:
        import threading

        self.node = node
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="grant-warm-up", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.node.ping()
        except BaseException as e:  # handed to the caller by join()
            self.error = e

    def join(self) -> BaseException | None:
        self._thread.join()
        return self.error


def revoke_grants(
    node_for: Callable[[str], AgentNode],
    destination: str,
    dataset: str | None = None,
    peer: str | None = None,
    *,
    grant: str | None = None,
) -> int | None:
    """Revoke the grant ``grant``, or every grant for ``dataset`` (from ``peer``, or any), on
    ``destination``. Best effort: returns how many went, or None when the node could not be reached or
    refused (logged, never raised: a relationship ends, or moves, even when its old destination is down).
    """
    if grant is None and dataset is None:
        raise UsageError("revoke which grants? name a grant or a dataset")
    try:
        node = node_for(destination)
        if grant is not None:
            return int(node.revoke_grant(validate_grant(grant)))
        return int(node.revoke_grant(dataset=dataset, peer=peer))
    except Exception as e:
        what = grant or f"the grants for {dataset}" + (f" from {peer}" if peer else "")
        _warn("%s: %s not revoked (revoke it when the node answers): %s", destination, what, e)
        return None
