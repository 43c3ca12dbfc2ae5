"""The controller-side volume service, standing in for cinder-volume: a SQLite table of volumes and
snapshots with Cinder's statuses, calling one ``ZfsNfsDriver`` per node.

Attachments are recorded by id with their client address (Cinder's ``volume_attachment``): ``attach``
records one and grants its client access to the volume's export, ``detach`` ends one (or every one of
a client, or all); an address keeps access while any attachment of it is left (the node counts them
in the exports file: :mod:`.nfs`), and a volume is ``in-use`` while it has attachments.
The database is private (``zfs_backend.private``).

Users name volumes (``display_name``, unique) and snapshots (unique per volume); ids are UUIDs.
Input is checked before anything is recorded; a record is written ``creating`` before the driver is
called and becomes ``available`` after it. When the driver fails, it has already undone its own
work on the node, so the record is removed and the error raised: nothing half-created remains. A
delete that fails leaves the volume ``error_deleting`` (retry with ``delete``).

The database is kept the one way (:mod:`zfs_backend.durable`: WAL, ``synchronous=FULL``, one connection
per process behind a lock, each change one ``BEGIN IMMEDIATE`` :meth:`VolumeService.transaction`; lookups
one read transaction, :meth:`VolumeService.reading`, which takes no write lock: readers in other
processes, ``volume list|show`` or a Cinder adapter's, do not queue behind each other or a writer). The
service is a context manager: leaving it closes the drivers' connections and the database (a later
call opens it again).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from ..activity.handle import BackendActivity
from ..config import Settings
from ..durable import open_db, reading, transaction
from ..errors import InvalidName
from ..zfs.names import validate_node
from .attachment_records import AttachmentRecords
from .errors import VolumeBusy, VolumeExists, VolumeNotFound
from .models import Snapshot, Volume, check_size, new_id
from .records import (
    SCHEMA,
    ReplicationRecord,
    SnapshotRecord,
    VolumeRecord,
    validate_display_name,
)
from .replication_records import ReplicationRecords
from .zfs_nfs import ZfsNfsDriver

__all__ = ["ReplicationRecord", "SnapshotRecord", "VolumeRecord", "VolumeService", "validate_display_name"]


class VolumeService(AttachmentRecords, ReplicationRecords):
    """Volumes and snapshots across the inventory's nodes, recorded in ``<home>/volumes.db``."""

    def __init__(
        self,
        settings: Settings,
        db_path: Path | None = None,
        driver_for: Callable[[str], ZfsNfsDriver] | None = None,
    ) -> None:
        self.settings = settings
        self.db_path = db_path or settings.home / "volumes.db"
        self._driver_for = driver_for
        self._drivers: dict[str, ZfsNfsDriver] = {}
        self._lock = threading.Lock()
        self._db_lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._open()

    def _open(self) -> sqlite3.Connection:
        """The process's connection (opened, and the schema made sure of, on first use after
        :meth:`close` or in a forked child)."""
        with self._db_lock:
            if self._conn is None or self._conn_pid != os.getpid():
                db = open_db(self.db_path, "volume database")
                db.row_factory = sqlite3.Row
                db.executescript(SCHEMA)
                self._conn, self._conn_pid = db, os.getpid()
            return self._conn

    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` transaction on the volume database (rows as ``sqlite3.Row``):
        committed when the block ends, rolled back when it raises. Never nested."""
        return transaction(self._open(), self._db_lock)

    def reading(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One read transaction on the volume database (rows as ``sqlite3.Row``): one snapshot of it, no
        write lock taken, a write inside refused. Never nested, nor inside :meth:`transaction`."""
        return reading(self._open(), self._db_lock)

    def __enter__(self) -> VolumeService:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- drivers -------------------------------------------------------------------------------

    def driver(self, node: str) -> ZfsNfsDriver:
        validate_node(node)
        with self._lock:
            d = self._drivers.get(node)
            if d is None:
                if self._driver_for is not None:
                    d = self._driver_for(node)
                else:
                    d = ZfsNfsDriver.for_node(self.settings, node)
                self._drivers[node] = d
            return d

    def close(self) -> None:
        """The drivers' connections to their nodes and the database closed."""
        for d in self._drivers.values():
            if d.host is not None:
                d.host.close()
        self._drivers.clear()
        with self._db_lock:
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ---- lookups -------------------------------------------------------------------------------

    def list_volumes(self) -> list[VolumeRecord]:
        with self.reading() as db:
            return [VolumeRecord(**dict(r)) for r in db.execute("SELECT * FROM volumes ORDER BY created_at")]

    def get_volume(self, name_or_id: str) -> VolumeRecord:
        with self.reading() as db:
            row = db.execute(
                "SELECT * FROM volumes WHERE name = ? OR id = ?", (name_or_id, name_or_id)
            ).fetchone()
        if row is None:
            raise VolumeNotFound(f"no volume named {ascii(name_or_id)[:80]}")
        return VolumeRecord(**dict(row))

    def list_snapshots(self, volume: str | None = None) -> list[SnapshotRecord]:
        vid = None if volume is None else self.get_volume(volume).id
        with self.reading() as db:
            if vid is None:
                rows = db.execute("SELECT * FROM snapshots ORDER BY created_at").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM snapshots WHERE volume_id = ? ORDER BY created_at", (vid,)
                ).fetchall()
            return [SnapshotRecord(**dict(r)) for r in rows]

    def get_snapshot(self, volume: str, name: str) -> SnapshotRecord:
        vid = self.get_volume(volume).id
        with self.reading() as db:
            row = db.execute(
                "SELECT * FROM snapshots WHERE volume_id = ? AND name = ?", (vid, name)
            ).fetchone()
        if row is None:
            raise VolumeNotFound(f"volume {volume} has no snapshot named {ascii(name)[:80]}")
        return SnapshotRecord(**dict(row))

    def _status(self, table: str, id_: str, status: str, **extra: Any) -> None:
        sets = ", ".join(["status = ?", *(f"{k} = ?" for k in extra)])
        if table == "volumes":
            sets += ", updated_at = ?"
            values = [status, *extra.values(), time.time(), id_]
        else:
            values = [status, *extra.values(), id_]
        with self.transaction() as db:
            db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", values)  # noqa: S608 - fixed names

    # ---- volumes -------------------------------------------------------------------------------

    def create_volume(
        self,
        name: str,
        size: int,
        node: str | None = None,
        *,
        snapshot: tuple[str, str] | None = None,
        source: str | None = None,
    ) -> VolumeRecord:
        """A new volume on ``node``: empty, from ``snapshot`` (volume, snapshot name) or cloned from
        ``source`` (both on their own node)."""
        validate_display_name(name)
        check_size(size)
        snap_rec = self.get_snapshot(*snapshot) if snapshot else None
        src_rec = self.get_volume(source) if source else None
        origin_node = (
            self.get_volume(snapshot[0]).node if snapshot else src_rec.node if src_rec else None  # type: ignore[index]
        )
        if node is None:
            node = origin_node
        if node is None:
            raise InvalidName("give the node to create the volume on")
        validate_node(node)
        if origin_node is not None and origin_node != node:
            raise InvalidName(f"clones stay on their origin's node ({origin_node}); replicate to move data")
        driver = self.driver(node)
        now = time.time()
        vid = new_id()
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO volumes VALUES (?, ?, ?, ?, 'creating', NULL, ?, ?, ?, ?)",
                    (
                        vid,
                        name,
                        node,
                        size,
                        snap_rec.id if snap_rec else None,
                        src_rec.id if src_rec else None,
                        now,
                        now,
                    ),
                )
        except sqlite3.IntegrityError:
            raise VolumeExists(f"a volume named {name} already exists") from None
        model = Volume(id=vid, size=size, display_name=name)
        try:
            if snap_rec is not None:
                update = driver.create_volume_from_snapshot(model, snap_rec.model())
            elif src_rec is not None:
                update = driver.create_cloned_volume(model, src_rec.model())
            else:
                update = driver.create_volume(model)
        except BaseException:
            with self.transaction() as db:
                db.execute("DELETE FROM volumes WHERE id = ?", (vid,))
            raise
        self._status("volumes", vid, "available", provider_location=update.get("provider_location"))
        return self.get_volume(vid)

    def delete_volume(self, name: str) -> None:
        rec = self.get_volume(name)
        if rec.status == "in-use":
            raise VolumeBusy(f"volume {name} is attached (in-use): detach it first")
        snaps = self.list_snapshots(rec.id)
        if snaps:
            raise VolumeBusy(
                f"volume {name} has snapshots ({', '.join(s.name for s in snaps)}): delete them first"
            )
        self._status("volumes", rec.id, "deleting")
        try:
            self.driver(rec.node).delete_volume(rec.model())
        except BaseException:
            self._status("volumes", rec.id, "error_deleting")
            raise
        with self.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id = ?", (rec.id,))

    def extend_volume(self, name: str, new_size: int) -> VolumeRecord:
        rec = self.get_volume(name)
        check_size(new_size, "new size")
        self._status("volumes", rec.id, "extending")
        try:
            self.driver(rec.node).extend_volume(rec.model(), new_size)
        except BaseException:
            self._status("volumes", rec.id, rec.status)
            raise
        with self.transaction() as db:
            db.execute(
                "UPDATE volumes SET size = ?, updated_at = ? WHERE id = ?", (new_size, time.time(), rec.id)
            )
        self._status("volumes", rec.id, rec.status)
        return self.get_volume(rec.id)

    # ---- snapshots -----------------------------------------------------------------------------

    def create_snapshot(self, volume: str, name: str) -> SnapshotRecord:
        rec = self.get_volume(volume)
        validate_display_name(name, "snapshot")
        sid = new_id()
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?, ?, 'creating', ?)",
                    (sid, rec.id, name, rec.size, time.time()),
                )
        except sqlite3.IntegrityError:
            raise VolumeExists(f"volume {volume} already has a snapshot named {name}") from None
        snap = Snapshot(id=sid, volume_id=rec.id, volume_size=rec.size, display_name=name)
        try:
            self.driver(rec.node).create_snapshot(snap)
        except BaseException:
            with self.transaction() as db:
                db.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
            raise
        self._status("snapshots", sid, "available")
        return self.get_snapshot(rec.id, name)

    def delete_snapshot(self, volume: str, name: str) -> None:
        snap = self.get_snapshot(volume, name)
        rec = self.get_volume(volume)
        self._status("snapshots", snap.id, "deleting")
        try:
            self.driver(rec.node).delete_snapshot(snap.model())
        except BaseException:
            self._status("snapshots", snap.id, "available")
            raise
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE id = ?", (snap.id,))

    # ---- stats / replicate --------------------------------------------------------------

    def stats(self, node: str, refresh: bool = True) -> dict[str, Any]:
        return self.driver(node).get_volume_stats(refresh=refresh)

    def replicate(
        self, volume: str, snapshot: str, to_node: str, full: bool = False, **kwargs: Any
    ) -> BackendActivity:
        """``snapshot_replicate`` of a volume's snapshot to ``to_node`` (same volume name there)."""
        rec = self.get_volume(volume)
        snap = self.get_snapshot(rec.id, snapshot)
        validate_node(to_node)
        if to_node == rec.node:
            raise InvalidName(f"volume {volume} is on {to_node} already; pick another node")
        return self.driver(rec.node).snapshot_replicate(snap.model(), rec.node, to_node, full, **kwargs)

    # ---- status, location and replication (what flows change) ----------------------------------

    def set_status(
        self, name: str, status: str, *, expect: str | None = None, provider_location: str | None = None
    ) -> VolumeRecord:
        """Move a volume to ``status`` (a flow's busy state and back). ``expect``: only from that status
        (else ``VolumeBusy``: another flow holds it). ``provider_location``: recorded with it (a job's
        new volume, now exported)."""
        rec = self.get_volume(name)
        if expect is not None and rec.status != expect:
            raise VolumeBusy(f"volume {rec.name} is {rec.status}, not {expect}")
        where = {} if provider_location is None else {"provider_location": provider_location}
        self._status("volumes", rec.id, status, **where)
        return self.get_volume(rec.id)

    def relocate(self, name: str, node: str, provider_location: str | None) -> VolumeRecord:
        """The volume now lives on ``node`` (a failover promoted its standby there)."""
        rec = self.get_volume(name)
        validate_node(node)
        with self.transaction() as db:
            db.execute(
                "UPDATE volumes SET node = ?, provider_location = ?, updated_at = ? WHERE id = ?",
                (node, provider_location, time.time(), rec.id),
            )
        return self.get_volume(rec.id)
