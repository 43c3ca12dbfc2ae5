"""Volume and snapshot objects with Cinder's field names (``cinder/objects/volume.py``,
``snapshot.py``), as small dataclasses: the driver needs no ``cinder`` package.

``Volume.name`` is ``volume-<id>`` and ``Snapshot.name`` ``snapshot-<id>`` (Cinder's default
``volume_name_template`` / ``snapshot_name_template``); sizes are whole GiB, as in Cinder. Ids are
validated (one safe name component) because they become part of dataset and snapshot names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidName
from .errors import InvalidSize

__all__ = [
    "GIB",
    "SNAPSHOT_STATUSES",
    "STATUSES",
    "Snapshot",
    "Volume",
    "check_size",
    "new_id",
    "validate_id",
]

GIB = 1 << 30

# Cinder's volume and snapshot statuses (the ones this project uses).
STATUSES = frozenset(
    {"creating", "available", "in-use", "deleting", "extending", "error", "error_deleting", "error_extending"}
)
SNAPSHOT_STATUSES = frozenset({"creating", "available", "deleting", "error", "error_deleting"})

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_id(value: object, what: str = "id") -> str:
    """``value`` if it is a safe id: 1-64 of ``[A-Za-z0-9_.-]``, starting alphanumeric (UUIDs pass)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = ascii(value) if isinstance(value, str) else repr(value)
        raise InvalidName(f"invalid {what} {shown[:80]}: expected 1-64 of [A-Za-z0-9_.-], alphanumeric first")
    return value


#: the largest volume: 1 EiB (its sparse file's length must fit in an off_t, 2**63 bytes)
MAX_SIZE_GIB = 1 << 30


def check_size(size: object, what: str = "size") -> int:
    """``size`` (GiB) if it is an integer from 1 to ``MAX_SIZE_GIB``."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidSize(f"invalid {what} {str(size)[:40]!r}: expected a whole number of GiB")
    if size <= 0:
        raise InvalidSize(f"invalid {what} {size}: must be at least 1 GiB")
    if size > MAX_SIZE_GIB:
        raise InvalidSize(f"invalid {what}: at most {MAX_SIZE_GIB} GiB (1 EiB)")
    return size


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Volume:
    """A Cinder-shaped volume. ``size`` in GiB; ``host`` is Cinder's ``node@backend#pool`` string."""

    id: str
    size: int
    display_name: str | None = None
    status: str = "creating"
    provider_location: str | None = None
    host: str | None = None
    snapshot_id: str | None = None
    source_volid: str | None = None
    attach_status: str = "detached"
    metadata: dict[str, Any] = field(default_factory=dict)
    replication_status: str | None = None

    @property
    def name(self) -> str:
        return f"volume-{self.id}"


@dataclass
class Snapshot:
    """A Cinder-shaped snapshot of volume ``volume_id``; ``volume_size`` is that volume's size (GiB)."""

    id: str
    volume_id: str
    volume_size: int
    display_name: str | None = None
    status: str = "creating"
    provider_location: str | None = None

    @property
    def name(self) -> str:
        return f"snapshot-{self.id}"

    @property
    def volume_name(self) -> str:
        return f"volume-{self.volume_id}"
