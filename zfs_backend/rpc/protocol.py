"""The agent protocol: line-delimited JSON over a byte stream (unix socket, or ``zfs-backend rpc``
over SSH). One request per line, one response per line, in order, on one connection::

    → {"id": 7, "op": "get", "args": {"id": "act-01J…"}}
    ← {"id": 7, "result": {…activity record…}}
    ← {"id": 7, "error": {"type": "ActivityNotFound", "message": "no activity act-01J…"}}

Ops and their ``args`` → ``result``:

    ping      {}                          → {"agent": "zfs-backend", "protocol": 1, "node", "pid", "active",
                                             "codecs", "tls", "libzfs_core"}
    kinds     {}                          → ["pipeline", …]
    start     {"kind", "params"}          → record
    list      {"state"?: str, "limit"?: int|null, "since"?: seconds}
                                          → [record, …] in creation order: every non-terminal one, and
                                            of the finished ones (those finished at or after "since",
                                            a UNIX time) the "limit" that finished last (absent:
                                            LIST_LIMIT; null: all, which may pass MAX_LINE)
    get       {"id"}                      → record
    suspend   {"id"}                      → record      (likewise resume, cancel)
    set       {"id", "bwlimit_bps": int|null} → record  (a running pipeline's limit, at once; null: none)
    events    {"id"}                      → [{"seq", "at", "old", "new", "detail"}, …]
    holds     {"release_stale"?: bool}    → {"holds": [hold, …], "released": [hold, …]}  (the project's
                                            own holds on this node; see ``agent.holds``)
    wait      {"id", "timeout"?: seconds} → record      (returns at terminal or timeout; max 60 s)
    shutdown  {}                          → {}          (the agent stops after answering)

The receiving end of replications into this node's datasets (``zfs_backend.replication.receiver``),
called by the source node's agent; the only ops a peer node may call (on the peer socket; ``"grant"``:
the controller's grant, required of a peer's ``recv.begin``, see below):

    recv.begin    {"dataset", "holder", "source", "recursive", "sent_guids", "grant"?} → the tree's state
    recv.clean    {"dataset", "holder", "target"?}         recv.discard {"dataset", "holder", "base_guids"}
    recv.renew    {"dataset", "holder"}                    recv.release {"dataset", "holder"}
    recv.finish   {"dataset", "holder", "target_guids", "readonly_replica"}
    recv.abort    {"dataset", "holder"}                    recv.status  {}
    recv.drop_partial {"dataset", "holder", "tokens"}  (an unusable token's partial receive, if the project's)
    recv.expect   {"dataset", "holder", "sent_guids"}      (a standby's next increment)
    recv.commit   {"dataset", "holder", "target_guid", "prune_prefix"?}   (hold the new base, prune)
    recv.fence    {"dataset", "holder", "reason"?}         (abort, and shut the holder out for good)
    recv.expect_many {"items": [{"dataset", "holder", "sent_guids"}, …]}   (a tick of a node pair's
    recv.commit_many {"items": [{"dataset", "holder", "target_guid", "prune_prefix"?}, …]}   standbys:
                  each item checked and done as its single op, one durable write; → [{"ok": answer} or
                  {"error": payload}, …] in order)

A backup node's side of volume backups (``zfs_backend.kinds.backupstore``), also open to peers
(under a backup grant, see ``kinds.backup_access``):

    backup.begin  {"volume", "backup", "holder", "parent"?, "grant"?}
    backup.commit {"volume", "backup", "holder", "snapshot", "guid"}
    backup.abort  {"volume", "backup", "holder"}
    backup.list   {"volume"?} → [entry, ...]                 backup.verify {"volume", "backup"} → chain

The controller's grants of work to peer nodes (``zfs_backend.replication.grants``; the control socket
only, never a peer's):

    grant.add     {"peer", "allow", "dataset", "recursive"?, "ttl_s"?}  or  {"peer", "allow": ["backup"],
                  "volume", "ttl_s"?}                                   → {"grant": "gr-…", "expires_at"}
    grant.revoke  {"grant"}  or  {"dataset", "peer"?}                   → {"revoked": n}
    grant.list    {}                                                    → [grant, …]

Peer sessions (the peer socket, ``zfs_backend.replication.authority``): the first line of every one is
``peer.hello {"peer": NODE}``, written by ``peer-exec --peer NODE`` (the forced command of that node's
key) before a byte of the peer's own; the agent refuses any op before it and any second hello. On a
peer session ``recv.begin`` and ``backup.begin`` carry ``"grant"`` and the other ops are checked against
the claim's peer; and ``peer-exec`` asks before it runs a stream:

    peer.hello    {"peer"}                                   → {"peer"}
    peer.admit    {"what": "receive", "dataset"}             → {"dataset", "recv_no_mount", "recv_properties",
                                                                 "dialect"}
                  {"what": "backup-write"|"backup-read", "volume", "backup"} → {"volume", "backup"}

Errors carry the class name of a ``zfs_backend.errors`` exception; the client re-raises that type. A
line that is not a JSON object, or names an unknown op, gets a ``ProtocolError``. A line longer than
``MAX_LINE`` bytes is refused.
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors
from ..errors import ActivityError, ProtocolError, ZfsBackendError

__all__ = [
    "BACKUP_OPS",
    "GRANT_OPS",
    "HELLO_OP",
    "LIST_LIMIT",
    "MAX_LINE",
    "OPS",
    "PEER_OPS",
    "PROTOCOL_VERSION",
    "READ_ONLY_OPS",
    "RECV_OPS",
    "decode",
    "encode",
    "error_from_payload",
    "error_payload",
    "list_window",
    "request",
    "response",
]

PROTOCOL_VERSION = 1
MAX_LINE = 4 << 20
#: finished activities a ``list`` returns when its caller names no limit (the live ones: all of them)
LIST_LIMIT = 100
RECV_OPS = frozenset(
    {
        "recv.begin",
        "recv.clean",
        "recv.discard",
        "recv.renew",
        "recv.finish",
        "recv.release",
        "recv.abort",
        "recv.drop_partial",
        "recv.status",
        "recv.expect",
        "recv.commit",
        "recv.expect_many",
        "recv.commit_many",
        "recv.fence",
    }
)
#: a backup node's side of volume backups (``kinds.backupstore``)
BACKUP_OPS = frozenset({"backup.begin", "backup.commit", "backup.abort", "backup.list", "backup.verify"})
#: the controller's grants of work to peers (``replication.grants``): never reachable from a peer
GRANT_OPS = frozenset({"grant.add", "grant.revoke", "grant.list"})
#: the first line of every peer session, written by ``peer-exec --peer NODE`` (never by the peer)
HELLO_OP = "peer.hello"
OPS = frozenset(
    {
        "ping",
        "kinds",
        "start",
        "list",
        "get",
        "suspend",
        "resume",
        "cancel",
        "set",
        "events",
        "holds",
        "wait",
        "shutdown",
        "peer.admit",
        *RECV_OPS,
        *BACKUP_OPS,
        *GRANT_OPS,
    }
)
#: what a peer node may ask (its narrow SSH key reaches only the peer socket): the receiving end of
#: replications and the backup store; fencing a holder off a dataset is the controller's (a forced
#: failover), never a peer's
PEER_OPS = frozenset({"ping", "peer.admit", *RECV_OPS, *BACKUP_OPS} - {"recv.fence"})
#: ops that may be re-sent safely when a connection dies with the answer outstanding
READ_ONLY_OPS = frozenset(
    {
        "ping",
        "kinds",
        "list",
        "get",
        "events",
        "wait",
        "recv.status",
        "recv.renew",
        "backup.list",
        "backup.verify",
        "grant.list",
        "peer.admit",
    }
)
MAX_WAIT_S = 60.0


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    return obj


def request(req_id: int, op: str, **args: Any) -> dict[str, Any]:
    return {"id": req_id, "op": op, "args": args}


def response(req_id: Any, result: Any = None, error: BaseException | None = None) -> dict[str, Any]:
    if error is not None:
        return {"id": req_id, "error": error_payload(error)}
    return {"id": req_id, "result": result}


def error_payload(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, ZfsBackendError):
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "ActivityError", "message": f"agent internal error: {type(exc).__name__}: {exc}"}


def error_from_payload(payload: Any) -> ZfsBackendError:
    """The typed exception an error payload names (``ActivityError`` when the type is unknown)."""
    if not isinstance(payload, dict):
        return ProtocolError(f"malformed error: {payload!r}")
    name = str(payload.get("type", ""))
    message = str(payload.get("message", "")) or name
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ZfsBackendError)):
        cls = ActivityError
    exc = cls.__new__(cls)  # some carry extra constructor arguments; the message is what travels
    Exception.__init__(exc, message)
    return exc


def list_window(args: dict[str, Any]) -> tuple[int | None, float | None]:
    """A ``list`` op's ``limit`` (absent: ``LIST_LIMIT``; null: all) and ``since``, checked."""
    limit = args.get("limit", LIST_LIMIT)
    since = args.get("since")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ProtocolError(f"list: limit must be a whole number >= 0 or null, not {limit!r}")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        raise ProtocolError(f"list: since must be a UNIX time in seconds, not {since!r}")
    return limit, None if since is None else float(since)
