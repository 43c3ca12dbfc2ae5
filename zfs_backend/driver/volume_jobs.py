"""The volume service's long jobs, each a backend activity: migrate a volume to another node, back it up to
a backup node, restore a backup into a new volume. The service (:mod:`.service`) records the volumes and
backups; the work runs on the nodes' agents (``migrate``, ``backup``, ``restore`` kinds).

Each job is two calls: ``start_*`` checks, records and starts the activity (returns it), and
``finish_*`` waits for it and does the controller's part: the export switch of a migration, the export
of a restored volume, the backup's record. The command line follows the activity in between (progress
bar, Ctrl-C → cancel), or detaches.

Backups: ``backup_node`` is the ``--backup-node`` given, else the volume node's inventory variable
``zfs_backend_backup_node``. ``incremental`` builds on the newest complete backup of the volume (whose
snapshot the volume must still hold). A backup of an in-use volume is taken from a snapshot: the
volume's status and attachments do not change.

Every job starts under a grant (``replication.granted``): the migration's destination grants the source
node the new dataset; the backup node grants the node that backs up or restores the volume's backups.
A restore's grant is revoked when the controller sees the restore end (a backup's is used up by its
commit or abort).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..activity.handle import BackendActivity
from ..errors import BackupError, BackupNotFound, InvalidName
from ..kinds.backup import BACKUP_KIND, RESTORE_KIND
from ..replication.granted import GRANT_PARAM, revoke_grants, start_granted
from ..zfs.names import validate_node
from . import layout, migration
from .models import GIB, Volume, new_id
from .records import BackupRecord, validate_display_name

if TYPE_CHECKING:
    from .service import VolumeService

__all__ = [
    "finish_backup",
    "finish_migration",
    "finish_restore",
    "get_backup",
    "list_backups",
    "migration_switch",
    "record_migration",
    "start_backup",
    "start_migration",
    "start_restore",
]

BACKUP_NODE_VAR = "zfs_backend_backup_node"


def _node(svc: VolumeService, name: str) -> Any:
    from ..rpc.connect import connect_node

    return connect_node(name, svc.settings)


# ---- migrate -----------------------------------------------------------------------------------


def start_migration(svc: VolumeService, name: str, to_node: str, **tuning: Any) -> BackendActivity:
    rec = svc.get_volume(name)
    validate_node(to_node)
    if to_node == rec.node:
        raise InvalidName(f"volume {name} is on {to_node} already")
    src, dst = svc.driver(rec.node), svc.driver(to_node)
    return migration.start(src, dst, rec.model(), node_for=lambda n: _node(svc, n), **tuning)


def migration_switch(svc: VolumeService, name: str, to_node: str, act: BackendActivity) -> migration.Switch:
    """The controller's part of the migration ``act`` (made as soon as it runs): a caller that follows
    the activity itself hands it every record (``at_hold``: the unexport at the hold before the quiesce)
    and then to :func:`finish_migration`."""
    rec = svc.get_volume(name)
    return migration.Switch(svc.driver(rec.node), svc.driver(to_node), rec.model(), act)


def finish_migration(
    svc: VolumeService,
    name: str,
    to_node: str,
    act: BackendActivity,
    switch: migration.Switch | None = None,
) -> dict[str, Any]:
    """Wait for the migration (acting at its hold), switch the export, record the volume on
    ``to_node``. Returns the update (``provider_location``, ``quiesce_s``). A migration that did not
    succeed raises ``MigrationFailed`` with the source exported as it was."""
    update = (switch or migration_switch(svc, name, to_node, act)).finish()
    record_migration(svc, name, to_node, update["provider_location"])
    return update


def record_migration(svc: VolumeService, name: str, to_node: str, location: str) -> None:
    """The volume's record after its switch: on ``to_node`` at ``location`` (idempotent)."""
    svc.relocate(name, to_node, location)


# ---- backup ------------------------------------------------------------------------------------


def _backup_node(svc: VolumeService, node: str, given: str | None) -> str:
    if given is not None:
        return validate_node(given)
    from ..hosts.inventory import load_inventory

    value = load_inventory(svc.settings.inventory).node(node).vars.get(BACKUP_NODE_VAR)
    if not isinstance(value, str):
        raise BackupError(f"no backup node: give --backup-node, or set {BACKUP_NODE_VAR} for {node}")
    return validate_node(value)


def list_backups(svc: VolumeService, volume: str | None = None) -> list[BackupRecord]:
    """The backups, those still being made brought up to date from their activity."""
    with svc.reading() as db:
        if volume is None:
            rows = db.execute("SELECT * FROM backups ORDER BY created_at").fetchall()
        else:
            rows = db.execute(
                "SELECT * FROM backups WHERE volume_id = ? OR volume_name = ? ORDER BY created_at",
                (volume, volume),
            ).fetchall()
    out = [BackupRecord(**dict(r)) for r in rows]
    for b in [b for b in out if b.status == "creating" and b.activity_id]:
        try:
            act = _node(svc, b.node).get(b.activity_id)
            if act.done:
                finish_backup(svc, b.id, act)
        except Exception:  # noqa: S112 - a node down leaves the record as it is
            continue
    return [get_backup(svc, b.id) for b in out]


def get_backup(svc: VolumeService, backup_id: str) -> BackupRecord:
    with svc.reading() as db:
        row = db.execute("SELECT * FROM backups WHERE id = ?", (backup_id,)).fetchone()
    if row is None:
        raise BackupNotFound(f"no backup {ascii(backup_id)[:80]}")
    return BackupRecord(**dict(row))


def start_backup(
    svc: VolumeService, name: str, *, incremental: bool = False, backup_node: str | None = None, **tuning: Any
) -> tuple[BackupRecord, BackendActivity]:
    rec = svc.get_volume(name)
    bnode = _backup_node(svc, rec.node, backup_node)
    if bnode == rec.node:
        raise BackupError(f"a backup of {name} must go to another node than {rec.node}")
    parent = None
    if incremental:
        done = [b for b in list_backups(svc, rec.id) if b.status == "available"]
        if not done:
            raise BackupNotFound(f"volume {name} has no backup yet: make a full one first")
        parent = done[-1].id
    bid = new_id()
    with svc.transaction() as db:
        db.execute(
            "INSERT INTO backups VALUES (?, ?, ?, ?, ?, ?, ?, 'creating', NULL, NULL, NULL, ?)",
            (bid, rec.id, rec.name, rec.node, bnode, parent, rec.size, time.time()),
        )
    ds = svc.driver(rec.node).dataset_of(rec.model())
    params = {
        "dataset": str(ds),
        "volume_id": rec.id,
        "backup_id": bid,
        "backup_node": bnode,
        "incremental": incremental,
        **tuning,
    }
    try:
        act = start_granted(lambda n: _node(svc, n), rec.node, BACKUP_KIND, params)
    except BaseException:
        with svc.transaction() as db:
            db.execute("DELETE FROM backups WHERE id = ?", (bid,))
        raise
    with svc.transaction() as db:
        db.execute("UPDATE backups SET activity_id = ? WHERE id = ?", (act.id, bid))
    return get_backup(svc, bid), act


def finish_backup(svc: VolumeService, backup_id: str, act: BackendActivity) -> BackupRecord:
    """Record how the backup ended: ``available`` (with its stream's size and checksum), else gone."""
    act.wait(None)
    rec = act.record()
    with svc.transaction() as db:
        if rec.state == "succeeded":
            entry = rec.result.get("backup") or {}
            db.execute(
                "UPDATE backups SET status = 'available', stream_bytes = ?, sha256 = ? WHERE id = ?",
                (entry.get("size"), entry.get("sha256"), backup_id),
            )
        else:
            db.execute("UPDATE backups SET status = 'error' WHERE id = ?", (backup_id,))
    return get_backup(svc, backup_id)


# ---- restore -----------------------------------------------------------------------------------


def start_restore(
    svc: VolumeService, backup_id: str, *, to: str | None = None, node: str | None = None, **tuning: Any
) -> tuple[str, BackendActivity]:
    """A new volume (``to``, default ``restore-<backup id>``) on ``node`` (default: where the backed-up
    volume is, or was) from the backup's chain. Returns the new volume's name and the activity."""
    b = get_backup(svc, backup_id)
    if b.status != "available":
        raise BackupError(f"backup {backup_id} is {b.status}, not available")
    name = validate_display_name(to or f"restore-{b.id[:8]}")
    if node is None:
        try:
            node = svc.get_volume(b.volume_id).node
        except Exception:
            node = b.node
    validate_node(node)
    d = svc.driver(node)
    layout.check_capacity(d.zfs, d.options, b.size * GIB)
    vid = new_id()
    now = time.time()
    from .errors import VolumeExists

    try:
        with svc.transaction() as db:
            db.execute(
                "INSERT INTO volumes VALUES (?, ?, ?, ?, 'creating', NULL, NULL, NULL, ?, ?)",
                (vid, name, node, b.size, now, now),
            )
    except Exception as e:
        if "UNIQUE" in str(e):
            raise VolumeExists(f"a volume named {name} already exists") from None
        raise
    params = {
        "volume_id": b.volume_id,
        "backup_id": b.id,
        "backup_node": b.backup_node,
        "destination": str(d.dataset_of(Volume(id=vid, size=b.size))),
        **tuning,
    }
    try:
        act = start_granted(lambda n: _node(svc, n), node, RESTORE_KIND, params)
    except BaseException:
        with svc.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id = ?", (vid,))
        raise
    return name, act


def finish_restore(svc: VolumeService, name: str, act: BackendActivity) -> Any:
    """Wait for the restore; the new volume gets its size properties and export, and becomes
    ``available``. A restore that did not succeed leaves no volume (its activity removed the dataset)."""
    rec = svc.get_volume(name)
    state = act.wait(None)
    params = act.record().params
    if params.get(GRANT_PARAM):  # a restore never binds its grant: it would wait for its expiry
        revoke_grants(lambda n: _node(svc, n), str(params["backup_node"]), grant=str(params[GRANT_PARAM]))
    if state != "succeeded":
        with svc.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id = ?", (rec.id,))
        raise BackupError(f"restore {act.id} {state}: {act.record().error or ''}")
    d = svc.driver(rec.node)
    ds = d.dataset_of(rec.model())
    for k, v in layout.space_props(rec.size * GIB, d.options.thin).items():
        d.zfs.set(ds, k, v)
    d.export(ds)
    svc.set_status(rec.id, "available", provider_location=d.location(ds))
    return svc.get_volume(rec.id)
