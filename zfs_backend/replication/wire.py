"""The wire-level names and codecs of a replication, shared by the source's side (:mod:`.remote`, the
activities) and the destination's receiving end (:mod:`.receiver`, :mod:`.receiver_standby`):

* the user properties the receiver marks a received dataset with (``RECEIVER_PROP``, ``SOURCE_PROP``),
  read back by the controller's flows, the driver and backups;
* :func:`validate_holder`: a claim's holder is an activity id; :func:`validate_grant`: a grant id (what
  the controller gave the destination's agent for a peer's work, see :mod:`.grants`);
  :func:`validate_backup_id`: a volume or backup id (a backup grant's volume, a backup node's entries);
* the JSON shapes of a snapshot (:func:`snapshot_to_dict` / :func:`snapshot_from_dict`) and of a head's
  changes (:func:`changes_to_dict`) in the ``recv.*`` ops' answers.

It imports nothing of the receiving end, and no ZFS layer at import time: every side may import it
(:mod:`.request` does, for :func:`validate_grant`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from ..zfs.changes import HeadChanges
    from ..zfs.models import Snapshot

__all__ = [
    "RECEIVER_PROP",
    "SOURCE_PROP",
    "changes_to_dict",
    "snapshot_from_dict",
    "snapshot_to_dict",
    "validate_backup_id",
    "validate_grant",
    "validate_holder",
]

RECEIVER_PROP = "zfs_backend:receiver"
SOURCE_PROP = "zfs_backend:source"
_HOLDER = re.compile(r"act-[0-9A-HJKMNP-TV-Z]{26}")
_GRANT = re.compile(r"gr-[0-9A-HJKMNP-TV-Z]{26}")
_BACKUP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_holder(holder: object) -> str:
    if not isinstance(holder, str) or not _HOLDER.fullmatch(holder):
        raise UsageError(f"invalid activity id {holder!r}")
    return holder


def validate_grant(value: object) -> str:
    """A grant id: ``gr-`` and 26 characters of Crockford base32 (a ULID, as activity ids)."""
    if not isinstance(value, str) or not _GRANT.fullmatch(value):
        raise UsageError(f"invalid grant id {ascii(value)[:80]}")
    return value


def snapshot_to_dict(s: Snapshot) -> dict[str, Any]:
    return {
        "name": str(s.name),
        "guid": s.guid,
        "createtxg": s.createtxg,
        "used": s.used,
        "referenced": s.referenced,
        "creation": s.creation,
    }


def snapshot_from_dict(d: dict[str, Any]) -> Snapshot:
    from ..zfs.models import Snapshot  # not at import: request validation loads no ZFS layer
    from ..zfs.names import parse_snapshot

    return Snapshot(
        name=parse_snapshot(str(d["name"])),
        guid=int(d["guid"]),
        createtxg=int(d["createtxg"]),
        used=int(d["used"]),
        referenced=int(d["referenced"]),
        creation=int(d["creation"]),
    )


def changes_to_dict(c: HeadChanges) -> dict[str, Any]:
    return {"changed": c.changed, "noisy": c.noisy, "detail": c.detail, "bytes": c.bytes}


def validate_backup_id(value: object, what: str = "backup id") -> str:
    """A volume or backup id: 1-64 of ``[A-Za-z0-9_.-]``, alphanumeric first (UUIDs pass)."""
    if not isinstance(value, str) or not _BACKUP_ID.fullmatch(value):
        raise UsageError(f"invalid {what} {ascii(value)[:80]}")
    return value
