"""A validated replication request.

:class:`Request` is what the controller sends to the source node's agent as the activity's params
(``to_params``/``from_params``: every name is validated again on the agent, and a parameter it does
not know is refused: nothing a caller passes chooses how a command runs, e.g. an ``ssh_config``).
``grant``: the id of the grant the destination's agent made for this replication (the controller asks
for it, see :mod:`.granted`); the activity presents it on every ``recv.*`` call.
It imports only name validation: a command line that starts a replication loads no planner, no ZFS
layer and no transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..activity.relay import MAX_BWLIMIT_BPS
from ..errors import InvalidName, UsageError
from ..hosts.ciphers import DEFAULT_CIPHER, validate_cipher
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, parse_snapshot, validate_node
from .compress import validate_codec
from .wire import validate_grant

__all__ = ["KIND", "TRANSPORTS", "TUNING_PARAMS", "Request"]

KIND = "replicate"
#: params the kind reads besides the request (tests and benchmarks tune retries; the stall watchdog's
#: timeout, ``activity.live``; never how SSH runs)
TUNING_PARAMS = frozenset({"max_retries", "backoff_s", "space_check", "stall_timeout_s"})


def _cut(value: object) -> str:
    """``value`` for an error line: short, whatever its size (an int of thousands of digits has no repr)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit number"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


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


_PARAM_KEYS = frozenset(
    {
        "snapshot",
        "source_node",
        "destination_node",
        "destination",
        "force_full_copy",
        "incremental_from",
        "intermediates",
        "rollback_destination",
        "recursive",
        "properties",
        "bwlimit_bps",
        "cipher",
        "compress",
        "grant",
        "parallel",
        "raw",
        "transport",
    }
)
#: how the stream crosses between the nodes: over the SSH channel, or the TLS data channel
#: (``replication.tls_channel``; the control plane stays on SSH either way)
TRANSPORTS = ("ssh", "tls")
#: the most streams of a recursive tree at once (each is an SSH channel: sshd's MaxSessions is 10)
MAX_PARALLEL = 8


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
    #: the stream's codec on the wire (``replication.compress``), None: as ``zfs send`` wrote it
    compress: str | None = None
    #: the destination's grant for this work (``replication.grants``), presented on every ``recv.*`` call
    grant: str | None = None
    #: a recursive tree's datasets replicated this many at a time, one stream each (1: one ``send -R``)
    parallel: int = 1
    #: ``zfs send -w``: an encrypted dataset sent as it is on disk, the key never leaving the source
    raw: bool = False
    #: ``ssh`` (the stream inside the SSH session) or ``tls`` (the TLS data channel, ``tls_channel``)
    transport: str = "ssh"

    def __post_init__(self) -> None:
        if not isinstance(self.snapshot, SnapshotName) or not isinstance(self.destination, DatasetName):
            raise UsageError("replication request: names must be validated SnapshotName/DatasetName")
        validate_node(self.source_node)
        validate_node(self.destination_node)
        object.__setattr__(self, "incremental_from", _short_snap(self.incremental_from))
        validate_cipher(self.cipher)
        try:
            validate_codec(self.compress)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.grant is not None:
            validate_grant(self.grant)
        if self.bwlimit_bps is not None and (
            isinstance(self.bwlimit_bps, bool)
            or not isinstance(self.bwlimit_bps, int)
            or not 1024 <= self.bwlimit_bps <= MAX_BWLIMIT_BPS
        ):
            raise UsageError(f"bwlimit must be 1024-{MAX_BWLIMIT_BPS} bytes/s, not {_cut(self.bwlimit_bps)}")
        if self.source_node == self.destination_node and self.snapshot.dataset == self.destination:
            raise UsageError("source and destination are the same dataset on the same node")
        if self.intermediates and self.force_full_copy:
            raise UsageError("intermediates (-I) apply to incremental streams, not to a full copy")
        if self.incremental_from is not None and self.force_full_copy:
            raise UsageError("incremental_from and force_full_copy contradict each other")
        if (
            isinstance(self.parallel, bool)
            or not isinstance(self.parallel, int)
            or not 1 <= self.parallel <= MAX_PARALLEL
        ):
            raise UsageError(
                f"parallel must be a whole number from 1 to {MAX_PARALLEL}, not {_cut(self.parallel)}"
            )
        if self.transport not in TRANSPORTS:
            raise UsageError(f"transport must be one of {', '.join(TRANSPORTS)}, not {_cut(self.transport)}")
        if self.transport == "tls" and self.compress:
            raise UsageError(
                "compress is for slow links over ssh; the tls transport sends the stream as it is"
            )
        if self.parallel > 1 and not self.recursive:
            raise UsageError("parallel applies to a recursive tree (recursive)")

    @property
    def key(self) -> tuple[str, str, str]:
        """What two replications must not share while running: source dataset, destination."""
        return (str(self.snapshot.dataset), self.destination_node, str(self.destination))

    def to_params(self) -> dict[str, Any]:
        """The params; ``grant`` only when there is one (the controller adds it at the start)."""
        return (
            {
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
            | ({"grant": self.grant} if self.grant is not None else {})
            | ({"parallel": self.parallel} if self.parallel != 1 else {})
            | ({"raw": True} if self.raw else {})
            | ({"compress": self.compress} if self.compress else {})  # absent: any agent takes it
            | ({"transport": self.transport} if self.transport != "ssh" else {})
        )

    @classmethod
    def from_params(cls, p: Mapping[str, Any], *, also: frozenset[str] = frozenset()) -> Request:
        """The request in ``p``; ``also``: other keys the caller reads itself (tuning). Any other key is
        refused by name."""
        if not isinstance(p, Mapping):
            raise UsageError("replicate params must be a JSON object")
        unknown = sorted(set(p) - _PARAM_KEYS - also)
        if unknown:
            what = ", ".join(repr(k) for k in unknown)
            raise UsageError(
                f"replicate params {what} are not accepted (SSH config, known_hosts and keys come from the "
                "node's own configuration, never from a request)"
            )
        for k in ("snapshot", "source_node", "destination_node", "destination"):
            if not isinstance(p.get(k), str):
                raise UsageError(f"replicate param {k!r} is required (a string)")
        flags = {}
        for k in (
            "force_full_copy",
            "intermediates",
            "rollback_destination",
            "recursive",
            "properties",
            "raw",
        ):
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
            compress=p.get("compress"),
            grant=p.get("grant"),
            parallel=p.get("parallel", 1),
            transport=p.get("transport", "ssh"),
            **flags,
        )
