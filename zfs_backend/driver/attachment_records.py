"""The attachments of the volume service's volumes (Cinder's ``volume_attachment``): recorded by id with
their client address in the ``volume_attachments`` table, each granted on the node through the volume's
driver (``initialize_connection``) and ended there (``terminate_connection``). An address keeps access
while any attachment of it is left (the node counts them in the exports file: :mod:`.nfs`); a volume is
``in-use`` while it has attachments. The methods of :class:`~.service.VolumeService`, kept apart."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .access import attachment_id, client_address
from .nfs import Attachment, default_attachment, validate_attachment_id
from .records import VolumeRecord

if TYPE_CHECKING:
    from .zfs_nfs import ZfsNfsDriver

__all__ = ["AttachmentRecords"]


class AttachmentRecords:
    """The attachment methods of :class:`~.service.VolumeService` (which provides the database, the
    volume lookup and the drivers)."""

    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def reading(self) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def get_volume(self, name_or_id: str) -> VolumeRecord:
        raise NotImplementedError

    def driver(self, node: str) -> ZfsNfsDriver:
        raise NotImplementedError

    def attachments(self, name: str) -> list[str]:
        """The client addresses the volume is attached to (each once, first attached first)."""
        return list(dict.fromkeys(client for _, client in self.attachment_records(name)))

    def attachment_records(self, name: str) -> list[tuple[str, str]]:
        """The volume's attachments: (attachment id, client address), first attached first."""
        rec = self.get_volume(name)
        with self.reading() as db:
            rows = db.execute(
                "SELECT attachment_id, client FROM volume_attachments WHERE volume_id = ? "
                "ORDER BY attached_at, attachment_id",
                (rec.id,),
            )
            return [(str(r["attachment_id"]), str(r["client"])) for r in rows]

    def attach(self, name: str, connector: dict[str, Any], attachment: str | None = None) -> dict[str, Any]:
        """Export (if needed), record attachment ``attachment`` (default: ``connector["attachment_id"]``,
        else the client's default attachment) of ``connector["ip"]``, grant the address access and
        return the NFS connection info; the volume becomes ``in-use``. A connector without a valid
        ``ip``, or a bad attachment id, is refused before anything."""
        client = client_address(connector)
        att = attachment if attachment is not None else attachment_id(connector)
        att = default_attachment(client) if att is None else validate_attachment_id(att)
        Attachment(att, client)  # an id naming another client's default is refused here
        rec = self.get_volume(name)
        d = self.driver(rec.node)
        d.create_export(None, rec.model(), connector)
        info = d.initialize_connection(rec.model(), {**connector, "ip": client, "attachment_id": att})
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO volume_attachments VALUES (?, ?, ?, ?)",
                (rec.id, att, client, time.time()),
            )
            db.execute(
                "UPDATE volumes SET status = 'in-use', updated_at = ? WHERE id = ?", (time.time(), rec.id)
            )
        return info

    def detach(
        self, name: str, connector: dict[str, Any] | None = None, attachment: str | None = None
    ) -> list[str]:
        """End attachments: the one named ``attachment``, else every one of ``connector["ip"]``, else
        (both None) every one. An address loses access with its last attachment; the volume is
        ``available`` again when none is left. Returns the clients detached (each once)."""
        client = client_address(connector) if connector is not None else None
        att = None if attachment is None else validate_attachment_id(attachment)
        rec = self.get_volume(name)
        records = self.attachment_records(rec.id)
        ending = [(a, c) for a, c in records if (att is None or a == att) and (client is None or c == client)]
        d = self.driver(rec.node)
        for a, c in ending:  # by id: another process may be attaching the same client right now
            d.terminate_connection(rec.model(), {"ip": c, "attachment_id": a})
            with self.transaction() as db:
                db.execute(
                    "DELETE FROM volume_attachments WHERE volume_id = ? AND attachment_id = ?", (rec.id, a)
                )
                left = db.execute(
                    "SELECT 1 FROM volume_attachments WHERE volume_id = ?", (rec.id,)
                ).fetchone()
                if left is None:
                    db.execute(
                        "UPDATE volumes SET status = 'available', updated_at = ? WHERE id = ?",
                        (time.time(), rec.id),
                    )
        if client is not None and not ending:  # not recorded here: the node's grant of it still goes
            d.terminate_connection(rec.model(), {"ip": client})
        return list(dict.fromkeys(c for _, c in ending)) or ([client] if client is not None else [])
