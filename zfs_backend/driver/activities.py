"""Which backend activities concern which volumes, and one line to show for each.

An activity concerns a volume when one of its parameters names the volume's filesystem (or a snapshot
or child of it) under the driver's parent: a ``replicate`` of ``tank/volumes/volume-<id>@snapshot-<s>``
concerns volume ``<id>`` (the storage id: Cinder's ``name_id``). Pure functions, plus
:func:`node_activities`, which asks the node's agent. Used by the cinder adapter to publish each volume's
activity where a Cinder user sees it (``zfs_backend.cinder.activities``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from ..config import Settings

__all__ = ["activity_line", "latest_by_volume", "node_activities", "volumes_of"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def volumes_of(record: ActivityRecord, parent: str) -> set[str]:
    """The storage ids of the volumes under ``parent`` that ``record``'s parameters name."""
    pattern = re.compile(rf"(?:^|:){re.escape(parent)}/volume-([A-Za-z0-9_.-]+)(?:[@/]|$)")
    found: set[str] = set()
    for s in _strings(record.params):
        m = pattern.search(s)
        if m:
            found.add(m.group(1))
    return found


def latest_by_volume(records: Iterable[ActivityRecord], parent: str) -> dict[str, ActivityRecord]:
    """For each volume, its unfinished activity (the newest, if several), else its newest finished one."""
    out: dict[str, ActivityRecord] = {}

    def rank(r: ActivityRecord) -> tuple[bool, float]:
        return (r.state not in TERMINAL, float(r.created_at or 0.0))

    for rec in records:
        for vid in volumes_of(rec, parent):
            if vid not in out or rank(rec) > rank(out[vid]):
                out[vid] = rec
    return out


def activity_line(record: ActivityRecord) -> str:
    """``replicate running 104857600 of 536870912 bytes (act-01M... on node1)``: kind, state, progress
    ``n of m`` in its unit (``0 of 0``: no anticipated completion), and where to ask for more."""
    p = record.progress
    text = f"{record.kind} {record.state} {p.done} of {p.total} {p.unit} ({record.id} on {record.node})"
    if record.error:
        text += f": {record.error}"
    return text[:255]  # Cinder's metadata values are at most 255 characters


def node_activities(node: str, settings: Settings) -> list[ActivityRecord]:
    """Every activity the node's agent holds (one round trip over the node's SSH master)."""
    from ..rpc.connect import connect_node

    n = connect_node(node, settings)
    try:
        return n.client.list()
    finally:
        n.close()
