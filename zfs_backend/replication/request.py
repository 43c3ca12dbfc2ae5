"""A validated replication request, and planning it against live nodes.

:class:`Request` is what the controller sends to the source node's agent as the activity's params
(``to_params``/``from_params``: every name is validated again on the agent). :func:`plan_live` reads
both nodes and applies the pure planner (:func:`~zfs_backend.replication.plan.incremental_path`);
:func:`check_space` refuses a stream the destination has no room for. Both the controller (before
starting anything) and the activity (on the agent, authoritative) use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DatasetNotFound, InvalidName, UsageError
from ..zfs.api import Zfs
from ..zfs.models import Snapshot
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, parse_snapshot, validate_node
from .estimate import Estimate, destination_modified, estimate_send, needed_space
from .plan import NO_SPACE, Conflict, Plan, incremental_path
from .transport import DEFAULT_CIPHER, validate_cipher

__all__ = ["DestinationState", "Request", "check_space", "plan_live", "read_destination"]


def _short_snap(text: str | None) -> str | None:
    """Validate an ``incremental_from`` given as ``snap``, ``@snap`` or ``pool/fs@snap``."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidName(f"invalid snapshot name {text!r}")
    short = text.rpartition("@")[2] if "@" in text else text
    if "@" in text and not text.startswith("@"):
        parse_snapshot(text)
    SnapshotName(DatasetName("pool"), short)  # validates the short name
    return short


@dataclass(frozen=True)
class Request:
    """One replication, validated. ``bwlimit_bps`` is in bytes per second."""

    snapshot: SnapshotName
    source_node: str
    destination_node: str
    destination: DatasetName
    force_full_copy: bool = False
    incremental_from: str | None = None
    intermediates: bool = False
    rollback_destination: bool = False
    recursive: bool = False
    properties: bool = False
    bwlimit_bps: int | None = None
    cipher: str = DEFAULT_CIPHER

    def __post_init__(self) -> None:
        if not isinstance(self.snapshot, SnapshotName) or not isinstance(self.destination, DatasetName):
            raise UsageError("replication request: names must be validated SnapshotName/DatasetName")
        validate_node(self.source_node)
        validate_node(self.destination_node)
        object.__setattr__(self, "incremental_from", _short_snap(self.incremental_from))
        validate_cipher(self.cipher)
        if self.bwlimit_bps is not None and (
            isinstance(self.bwlimit_bps, bool)
            or not isinstance(self.bwlimit_bps, int)
            or self.bwlimit_bps < 1024
        ):
            raise UsageError(f"bwlimit must be at least 1024 bytes/s, not {self.bwlimit_bps!r}")
        if self.source_node == self.destination_node and self.snapshot.dataset == self.destination:
            raise UsageError("source and destination are the same dataset on the same node")
        if self.intermediates and self.force_full_copy:
            raise UsageError("intermediates (-I) apply to incremental streams, not to a full copy")
        if self.incremental_from is not None and self.force_full_copy:
            raise UsageError("incremental_from and force_full_copy contradict each other")

    @property
    def key(self) -> tuple[str, str, str]:
        """What two replications must not share while running: source dataset, destination."""
        return (str(self.snapshot.dataset), self.destination_node, str(self.destination))

    def to_params(self) -> dict[str, Any]:
        return {
            "snapshot": str(self.snapshot),
            "source_node": self.source_node,
            "destination_node": self.destination_node,
            "destination": str(self.destination),
            "force_full_copy": self.force_full_copy,
            "incremental_from": self.incremental_from,
            "intermediates": self.intermediates,
            "rollback_destination": self.rollback_destination,
            "recursive": self.recursive,
            "properties": self.properties,
            "bwlimit_bps": self.bwlimit_bps,
            "cipher": self.cipher,
        }

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> Request:
        if not isinstance(p, Mapping):
            raise UsageError("replicate params must be a JSON object")
        for k in ("snapshot", "source_node", "destination_node", "destination"):
            if not isinstance(p.get(k), str):
                raise UsageError(f"replicate param {k!r} is required (a string)")
        flags = {}
        for k in ("force_full_copy", "intermediates", "rollback_destination", "recursive", "properties"):
            v = p.get(k, False)
            if not isinstance(v, bool):
                raise UsageError(f"replicate param {k!r} must be true or false")
            flags[k] = v
        bw = p.get("bwlimit_bps")
        if isinstance(bw, float) and bw.is_integer():
            bw = int(bw)
        return cls(
            snapshot=parse_snapshot(p["snapshot"]),
            source_node=p["source_node"],
            destination_node=p["destination_node"],
            destination=parse_dataset(p["destination"]),
            incremental_from=p.get("incremental_from"),
            bwlimit_bps=bw,
            cipher=p.get("cipher") or DEFAULT_CIPHER,
            **flags,
        )


@dataclass(frozen=True)
class DestinationState:
    """The destination dataset as read now: ``snapshots`` None when it does not exist."""

    snapshots: list[Snapshot] | None
    modified: bool = False
    available: int | None = None


def read_destination(dst: Zfs, name: DatasetName) -> DestinationState:
    """Read the destination dataset (or, when absent, check its parent exists and read its space)."""
    if not dst.exists(name):
        parent = name.parent
        if parent is not None and not dst.exists(parent):
            raise DatasetNotFound(f"{dst.host.name}: the destination's parent {parent} does not exist")
        avail = dst.get_int(parent, "available") if parent is not None else None
        return DestinationState(None, False, avail)
    heads = dst.list_datasets(name, recursive=False)
    if not heads:
        raise DatasetNotFound(f"{dst.host.name}: {name} is not a filesystem")
    head = heads[0]
    snaps = dst.list_snapshots(name)
    written = dst.get_int(name, "written") if dst.dialect.written_property else None
    return DestinationState(snaps, destination_modified(head, snaps, written), head.available)


def plan_live(src: Zfs, dst: Zfs, req: Request) -> tuple[Plan, Estimate, DestinationState]:
    """Plan ``req`` from the nodes' current state. Raises ``DatasetNotFound`` (snapshot, source or
    destination parent missing) or a ``ReplicationConflict`` subclass; runs only read-only commands."""
    source = req.snapshot.dataset
    if not src.exists(source):
        raise DatasetNotFound(f"{src.host.name}: source dataset {source} does not exist")
    chain = src.list_snapshots(source)
    if not any(s.snap == req.snapshot.snap for s in chain):
        raise DatasetNotFound(f"{src.host.name}: snapshot {req.snapshot} does not exist")
    state = read_destination(dst, req.destination)
    outcome = incremental_path(
        chain,
        state.snapshots,
        req.snapshot.snap,
        force_full_copy=req.force_full_copy,
        incremental_from=req.incremental_from,
        intermediates=req.intermediates,
        rollback_destination=req.rollback_destination,
        destination_modified=state.modified,
    )
    if isinstance(outcome, Conflict):
        raise outcome.error()
    est = estimate_send(src, outcome.send_spec(recursive=req.recursive, properties=req.properties))
    return outcome, est, state


def check_space(state: DestinationState, estimate: Estimate, where: str) -> None:
    """Refuse (``InsufficientSpace``) when the destination has less than the estimate needs."""
    if state.available is None:
        return
    need = needed_space(estimate.bytes)
    if state.available < need:
        raise Conflict(
            NO_SPACE,
            f"{where}: the destination has {state.available >> 20} MiB available; the stream needs about "
            f"{need >> 20} MiB ({estimate.bytes >> 20} MiB by {estimate.method}, plus margin)",
        ).error()
