"""The volume service's records: its SQLite schema (volumes, snapshots, attachments) and the rows as
frozen dataclasses, with the rule for the names users give volumes and snapshots."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidName
from .models import Snapshot, Volume

__all__ = [
    "REPLICATION_STATUSES",
    "SCHEMA",
    "BackupRecord",
    "ReplicationRecord",
    "SnapshotRecord",
    "VolumeRecord",
    "validate_display_name",
]

#: Cinder's volume ``replication_status`` values (``fields.ReplicationStatus``)
REPLICATION_STATUSES = frozenset(
    {"disabled", "enabled", "error", "enabling", "disabling", "failing-over", "failed-over", "not-capable"}
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    node TEXT NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    provider_location TEXT,
    snapshot_id TEXT,
    source_volid TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    client TEXT NOT NULL,
    attached_at REAL NOT NULL,
    PRIMARY KEY (volume_id, client)
);
CREATE TABLE IF NOT EXISTS volume_attachments (
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    attachment_id TEXT NOT NULL,
    client TEXT NOT NULL,
    attached_at REAL NOT NULL,
    PRIMARY KEY (volume_id, attachment_id)
);
-- attachments of an older version (one per client) become the clients' default attachments
INSERT OR IGNORE INTO volume_attachments
    SELECT volume_id, 'client-' || client, client, attached_at FROM attachments;
DELETE FROM attachments;
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    name TEXT NOT NULL,
    volume_size INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (volume_id, name)
);
CREATE TABLE IF NOT EXISTS replication (
    volume_id TEXT PRIMARY KEY REFERENCES volumes(id),
    replication_status TEXT NOT NULL,
    standby_node TEXT,
    activity_id TEXT,
    interval_s REAL,
    max_lag_s REAL,
    detail TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    volume_name TEXT NOT NULL,
    node TEXT NOT NULL,
    backup_node TEXT NOT NULL,
    parent_id TEXT,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    activity_id TEXT,
    stream_bytes INTEGER,
    sha256 TEXT,
    created_at REAL NOT NULL
);
"""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_display_name(name: object, what: str = "volume") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = ascii(name)[:80] if isinstance(name, str) else repr(name)
        raise InvalidName(f"invalid {what} name {shown}: expected 1-64 of [A-Za-z0-9_.-], alphanumeric first")
    return name


@dataclass(frozen=True)
class VolumeRecord:
    id: str
    name: str
    node: str
    size: int
    status: str
    provider_location: str | None
    snapshot_id: str | None
    source_volid: str | None
    created_at: float
    updated_at: float

    def model(self) -> Volume:
        return Volume(
            id=self.id,
            size=self.size,
            display_name=self.name,
            status=self.status,
            provider_location=self.provider_location,
            snapshot_id=self.snapshot_id,
            source_volid=self.source_volid,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SnapshotRecord:
    id: str
    volume_id: str
    name: str
    volume_size: int
    status: str
    created_at: float

    def model(self) -> Snapshot:
        return Snapshot(
            id=self.id, volume_id=self.volume_id, volume_size=self.volume_size, display_name=self.name
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReplicationRecord:
    """A volume's replication (Cinder's ``replication_status``) and its standby relationship: the node
    holding the standby, the ``standby-sync`` activity on the volume's node, its interval and lag goal;
    ``detail``: what the last flow recorded (e.g. a forced failover's data-loss window)."""

    volume_id: str
    replication_status: str
    standby_node: str | None
    activity_id: str | None
    interval_s: float | None
    max_lag_s: float | None
    detail: dict[str, Any]
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BackupRecord:
    """A volume backup as the service knows it (the backup node's manifest holds its stream)."""

    id: str
    volume_id: str
    volume_name: str
    node: str
    backup_node: str
    parent_id: str | None
    size: int
    status: str
    activity_id: str | None
    stream_bytes: int | None
    sha256: str | None
    created_at: float

    @property
    def incremental(self) -> bool:
        return self.parent_id is not None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "incremental": self.incremental}
