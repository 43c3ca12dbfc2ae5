"""``snapshot_replicate``: start the ``replicate`` activity on the source node's agent and return its
handle.

Names and options are validated here before anything reaches a node (``InvalidName``,
``UsageError``). The source node's agent then plans before it stores anything, with the destination's
agent (which claims the destination for this replication): a missing snapshot, source dataset or
destination parent raises ``DatasetNotFound``; a diverged destination (without ``rollback_destination``),
no common snapshot, too little space for the estimate, the same replication already running, or another
replication receiving into the same destination raise a ``ReplicationConflict`` subclass. Every refusal
comes back from the start call itself and changes nothing.

Before the start, the destination's agent grants the source node this replication (``grant.add`` over
the controller's own connection: the destination dataset, ``create``/``increment`` as the request
implies, ``rollback`` only with ``rollback_destination``; see :mod:`.granted`); the grant's id is the
activity's ``grant`` param. A refused grant starts nothing; a refused start revokes the grant.

Layering note: the agent client (:mod:`zfs_backend.rpc`, below this package) is imported lazily in
:func:`_default_node_for` only (a caller that passes ``node_for``, as the driver, flows and tests do,
never loads it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..activity.handle import BackendActivity
from ..activity.relay import MAX_BWLIMIT_BPS
from ..config import Settings, load_settings
from ..errors import UsageError
from ..hosts.ciphers import DEFAULT_CIPHER
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, parse_node_qualified, parse_snapshot
from ..zfs.parse import ParseError, parse_human_size
from .granted import AgentNode, grant_request, start_granted
from .request import KIND, Request

__all__ = ["AgentNode", "parse_bwlimit", "snapshot_replicate"]


def _default_node_for(settings: Settings) -> Callable[[str], AgentNode]:
    from ..rpc.connect import connect_node  # lazy: only when the caller passes no node_for

    return lambda name: connect_node(name, settings)


def parse_bwlimit(value: int | str | None) -> int | None:
    """Bytes per second from an int or a size such as ``"20M"`` (per second); None: unlimited."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"invalid bwlimit {value!r}")
    if isinstance(value, int):
        return value  # bounded by Request (1 KiB/s - MAX_BWLIMIT_BPS)
    if isinstance(value, str):
        shown = repr(value if len(value) <= 40 else value[:40] + "...")
        text = value.strip().removesuffix("/s").removesuffix("B")
        try:
            n = parse_human_size(text) if len(text) <= 40 else None
        except ParseError:
            n = None
        if n is None:
            raise UsageError(f"invalid bwlimit {shown}: expected bytes per second, e.g. 20M")
        if n > MAX_BWLIMIT_BPS:
            raise UsageError(f"invalid bwlimit {shown}: at most {MAX_BWLIMIT_BPS} bytes/s (1T)")
        return n
    raise UsageError(f"invalid bwlimit {type(value).__name__}")


def _request(
    snapshot: str | SnapshotName,
    source_server: str | None,
    destination_server: str,
    *,
    destination: str | DatasetName | None,
    **options: Any,
) -> Request:
    if isinstance(snapshot, str) and ":" in snapshot.split("@", 1)[0]:
        nq = parse_node_qualified(snapshot)
        if not isinstance(nq.name, SnapshotName):
            raise UsageError(f"{snapshot}: expected NODE:pool/fs@snap")
        if source_server not in (None, nq.node):
            raise UsageError(f"{snapshot}: names node {nq.node}, but source_server is {source_server}")
        snap, source_server = nq.name, nq.node
    else:
        snap = snapshot if isinstance(snapshot, SnapshotName) else parse_snapshot(snapshot)
    if source_server is None:
        raise UsageError("no source server: give source_server or NODE:pool/fs@snap")
    if not isinstance(destination_server, str):
        raise UsageError(f"invalid destination server {destination_server!r}")
    if ":" in destination_server:
        nq = parse_node_qualified(destination_server)
        if not isinstance(nq.name, DatasetName):
            raise UsageError(f"{destination_server}: expected NODE:pool/fs (a dataset)")
        if destination is not None and parse_dataset(str(destination)) != nq.name:
            raise UsageError("destination given twice, differently")
        dest_node, dest = nq.node, nq.name
    else:
        dest_node = destination_server
        dest = snap.dataset if destination is None else parse_dataset(str(destination))
    return Request(
        snapshot=snap,
        source_node=source_server,
        destination_node=dest_node,
        destination=dest,
        **options,
    )


def snapshot_replicate(
    snapshot: str | SnapshotName,
    source_server: str | None,
    destination_server: str,
    force_full_copy: bool = False,
    *,
    destination: str | DatasetName | None = None,
    incremental_from: str | None = None,
    intermediates: bool = False,
    bwlimit: int | str | None = None,
    rollback_destination: bool = False,
    recursive: bool = False,
    properties: bool = False,
    cipher: str | None = None,
    compress: bool = False,
    settings: Settings | None = None,
    node_for: Callable[[str], AgentNode] | None = None,
    extra_params: dict[str, Any] | None = None,
    parallel: int = 1,
    raw: bool = False,
    transport: str | None = None,
) -> BackendActivity:
    """Replicate ``snapshot`` of ``source_server`` to ``destination_server``; return the activity.

    ``snapshot``: ``pool/fs@snap`` (or ``NODE:pool/fs@snap``, then ``source_server`` may be None).
    ``destination_server``: a node name (the destination dataset is then ``destination`` or the
    source's own name) or ``NODE:pool/fs``. ``force_full_copy``: a full stream into a new dataset.
    ``incremental_from``: the base snapshot (must be common, by GUID); ``intermediates``: ``-I``.
    ``bwlimit``: bytes/s (int, or ``"20M"``). ``rollback_destination``: allow discarding the
    destination's snapshots and changes after the common base. ``recursive``: ``send -R``.
    ``properties``: ``send -p``. ``cipher``: OpenSSH cipher (default: ``Settings.ssh_cipher``).
    ``compress``: zstd on the wire (``replication.compress``; for slow links and data that compresses).
    ``parallel``: with ``recursive``, the tree's datasets this many at a time (one stream each).
    ``raw``: ``send -w``, only of an encrypted dataset (the key never leaves the source, see
    ``replication.raw``); refused otherwise.
    ``transport``: ``ssh`` or ``tls`` (the TLS data channel between the nodes' certificates, for trusted
    storage networks; ``replication.tls_channel``); default ``Settings.replication_transport``.
    ``node_for``: how to reach a node's agent (default: inventory + SSH). ``extra_params``: kind
    tuning (``max_retries``, ``backoff_s``, ``space_check``, ``stall_timeout_s``); anything else is
    refused (a ``grant`` too: the destination's agent makes it, asked here).
    """
    s = settings or load_settings()
    req = _request(
        snapshot,
        source_server,
        destination_server,
        destination=destination,
        force_full_copy=force_full_copy,
        incremental_from=incremental_from,
        intermediates=intermediates,
        bwlimit_bps=parse_bwlimit(bwlimit),
        rollback_destination=rollback_destination,
        recursive=recursive,
        properties=properties,
        cipher=cipher or s.ssh_cipher or DEFAULT_CIPHER,
        compress="zstd" if compress else None,
        parallel=parallel,
        raw=raw,
        transport=transport or s.replication_transport,
    )
    params = {**req.to_params(), **(extra_params or {})}
    grant = grant_request(KIND, params, req.source_node)  # refuses what the agent would, before any I/O
    return start_granted(node_for or _default_node_for(s), req.source_node, KIND, params, request=grant)
