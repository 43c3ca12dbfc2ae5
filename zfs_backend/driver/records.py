"""The volume service's records: its SQLite schema (volumes, snapshots, attachments) and the rows as
frozen dataclasses, with the rule for the names users give volumes and snapshots."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidName
from .models import Snapshot, Volume

__all__ = ["SCHEMA", "SnapshotRecord", "VolumeRecord", "validate_display_name"]

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
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    name TEXT NOT NULL,
    volume_size INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (volume_id, name)
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
