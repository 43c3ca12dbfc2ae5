"""The replication core: a dataset's snapshots sent from one node and received on another, safely
(see ``docs/replication.md``). The activity kinds built on it are in :mod:`zfs_backend.kinds`.

Planning (source side): ``plan`` (pure planner, matched by GUID), ``estimate`` (the size behind ``m``,
and the space check), ``tree_plan`` (a recursive request as one job per dataset), ``parallel`` (those
jobs as parallel streams), ``resume`` and ``restart`` (carrying on from a resume token or the newest
common snapshot), ``cursor`` (a relationship's cursor bookmarks), ``raw`` (raw sends of encrypted
datasets), ``compress`` (the stream's codec; ``python -m zfs_backend.replication.compress`` on a node).

Requests (what a controller validates and sends): ``request`` (the ``replicate`` kind's params),
``migrate_request`` (the ``migrate`` kind's params), ``api`` (``snapshot_replicate``), ``granted``
(the controller's side of grants: grant, then start).

The receiving end (the destination's agent): ``receiver`` (claims, begin/finish, ``Receiver``) with
``receiver_abort`` (abort and partial receives) and ``receiver_standby`` (a standby's
``expect``/``commit``/``fence``), ``claims`` (the claim store), ``head`` (checks of a destination's
head), ``grants`` (the destination's grant store), ``authority`` (what a peer may do: grants, replica
roots).

Between the two: ``remote`` (the source's client of the receiving end), ``wire`` (the marks' property
names, JSON codecs and validators both sides share), ``upkeep`` (the receiver hooks and stderr patterns
the streaming kinds share). The stream's SSH (``PeerHost``, the cipher allowlist) is in ``hosts``.

Layering: above ``rpc``, ``activity``, ``zfs`` and ``hosts``; never imports a kind or the agent.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
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
    "AlreadyRunning",
    "Conflict",
    "DestinationDiverged",
    "DestinationExistsConflict",
    "InsufficientSpace",
    "NoCommonBase",
    "Plan",
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
    "NoCommonBase": "plan",
    "Plan": "plan",
    "Request": "request",
    "UpToDate": "plan",
    "incremental_path": "plan",
    "parse_bwlimit": "api",
    "snapshot_replicate": "api",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
