"""The activity kinds built on the replication core: what a node's agent runs to move a dataset's
snapshots to another node (see ``docs/replication.md``, ``docs/flows.md``).

Each module registers its kind(s) with ``activity.core.register_kind`` when it is imported (the agent's
``manager`` imports them all); the controller never needs them to start one (the validated requests and
the grants are the core's, in :mod:`zfs_backend.replication`).

``replicate`` (the ``replicate`` kind: one replication, a tree of streams, restarts from resume tokens),
``standby`` + ``standby_stream`` (``standby-sync``: a hot standby's syncs, and the increment's stream),
``backup`` (``backup`` and ``restore``: a volume to stream files on a backup node and back) +
``backupstore`` (the backup node's manifests and stream files, written by ``peer-exec``) +
``backup_access`` (the backup node's ``backup.*`` ops for a peer, under the controller's grants),
``migrate`` (``migrate``: a volume to another node while it stays in use; its params are
``replication.migrate_request``).

Layering: the kinds sit above the core (``replication``) and below the agent (server); the core never
imports a kind.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .backup import Backup, Restore
    from .migrate import Migrate
    from .replicate import Replicate
    from .standby import StandbySync

__all__ = ["Backup", "Migrate", "Replicate", "Restore", "StandbySync"]

_EXPORTS = {
    "Backup": "backup",
    "Migrate": "migrate",
    "Replicate": "replicate",
    "Restore": "backup",
    "StandbySync": "standby",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
