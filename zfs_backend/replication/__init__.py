"""Replication of ZFS snapshots node to node as a backend activity (see ``docs/replication.md``).

``plan`` (pure planner, matched by GUID), ``estimate`` (the size behind ``m``), ``transport`` (the
destination as reached from the source node with OpenSSH), ``request`` (validated request, live
planning), ``activity`` (the ``replicate`` kind, run by the source node's agent), ``api``
(``snapshot_replicate``).
"""

from .activity import KIND, Replicate
from .api import parse_bwlimit, snapshot_replicate
from .plan import (
    AlreadyRunning,
    Conflict,
    DestinationDiverged,
    DestinationExistsConflict,
    InsufficientSpace,
    NoCommonBase,
    Plan,
    UpToDate,
    incremental_path,
)
from .request import Request

__all__ = [
    "KIND",
    "AlreadyRunning",
    "Conflict",
    "DestinationDiverged",
    "DestinationExistsConflict",
    "InsufficientSpace",
    "NoCommonBase",
    "Plan",
    "Replicate",
    "Request",
    "UpToDate",
    "incremental_path",
    "parse_bwlimit",
    "snapshot_replicate",
]
