"""Replication of ZFS snapshots node to node as a backend activity (see ``docs/replication.md``).

``plan`` (pure planner, matched by GUID), ``estimate`` (the size behind ``m``), ``transport`` (the
destination as reached from the source node with OpenSSH), ``request`` (validated request, live
planning), ``activity`` (the ``replicate`` kind, run by the source node's agent), ``api``
(``snapshot_replicate``).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
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

_EXPORTS = {
    "AlreadyRunning": "plan",
    "Conflict": "plan",
    "DestinationDiverged": "plan",
    "DestinationExistsConflict": "plan",
    "InsufficientSpace": "plan",
    "KIND": "activity",
    "NoCommonBase": "plan",
    "Plan": "plan",
    "Replicate": "activity",
    "Request": "request",
    "UpToDate": "plan",
    "incremental_path": "plan",
    "parse_bwlimit": "api",
    "snapshot_replicate": "api",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
