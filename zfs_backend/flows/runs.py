"""Flow runs as the logbook keeps them: what a run came to (``FlowRun``), finding a flow by its id or
an id prefix, and a flow detail as plain data (``zfs-backend flow list|show``).

Apart from :mod:`.engine` (which runs flows) so that :mod:`.jobboard`, which answers a posted flow's
run by reading it back, and the engine, which posts to the jobboard, do not import each other.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from taskflow import states
from taskflow.persistence import models

from ..config import Settings
from ..errors import FlowError, FlowNotFound
from .persistence import backend

__all__ = ["FlowRun", "describe", "find_flow", "list_flows", "raise_for", "show_flow"]


@dataclass
class FlowRun:
    """What a flow run came to."""

    id: str
    name: str
    state: str
    results: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def find_flow(conn: Any, flow_id: str) -> tuple[models.LogBook, models.FlowDetail]:
    for book in conn.get_logbooks():
        for fd in book:
            if fd.uuid == flow_id or (fd.uuid.startswith(flow_id) and len(flow_id) >= 8):
                return book, fd
    raise FlowNotFound(f"no flow {flow_id}")


def describe(fd: models.FlowDetail) -> dict[str, Any]:
    """A flow detail as plain data: its state, inputs and atoms (state, progress, result)."""
    atoms = []
    for ad in fd:
        if ad.name.startswith("_TaskFlow_"):
            continue
        result = ad.results if ad.state == states.SUCCESS else None
        atoms.append(
            {
                "name": ad.name,
                "state": ad.state,
                "intention": ad.intention,
                "progress": float((ad.meta or {}).get("progress") or 0.0),
                "result": result if _plain(result) else repr(result),
                "error": None if ad.failure is None else ad.failure.exception_str,
            }
        )
    meta = fd.meta or {}
    return {
        "id": fd.uuid,
        "name": fd.name,
        "state": fd.state,
        "factory": (meta.get("factory") or {}).get("name"),
        "store": meta.get("store") or {},
        "created_at": meta.get("created_at"),
        "atoms": atoms,
    }


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool | list | tuple | dict)


def list_flows(settings: Settings) -> list[dict[str, Any]]:
    with backend(settings) as be, contextlib.closing(be.get_connection()) as conn:
        out = [describe(fd) for book in conn.get_logbooks() for fd in book]
    return sorted(out, key=lambda d: d.get("created_at") or 0)


def show_flow(settings: Settings, flow_id: str) -> dict[str, Any]:
    with backend(settings) as be, contextlib.closing(be.get_connection()) as conn:
        return describe(find_flow(conn, flow_id)[1])


def raise_for(run: FlowRun) -> FlowRun:
    """The run, or a ``FlowError`` saying it did not succeed (and was reverted)."""
    if run.state != states.SUCCESS:
        raise FlowError(f"flow {run.id[:8]} {run.name}: {run.state.lower()}: {run.error or 'did not finish'}")
    return run
