"""Plain data describing an activity: progress, resources, and the stable JSON record.

Data only: no I/O, no rendering. The JSON form (``ActivityRecord.to_dict``) is documented in
``docs/activity.md`` and is what ``zfs-backend activity … --json`` prints and the agent protocol carries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .states import ALL_STATES, PENDING, SUCCEEDED

__all__ = ["ActivityRecord", "Progress", "Resources"]


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` in ``unit``. ``(0, 0)`` means no anticipated completion."""

    done: int = 0
    total: int = 0
    unit: str = "bytes"

    def __post_init__(self) -> None:
        if self.done < 0 or self.total < 0:
            raise ValueError("progress cannot be negative")
        if self.done > self.total:
            raise ValueError(f"progress {self.done} > total {self.total}")

    @property
    def pair(self) -> tuple[int, int]:
        return (self.done, self.total)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "unit": self.unit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Progress:
        return cls(int(d.get("done", 0)), int(d.get("total", 0)), str(d.get("unit", "bytes")))

    @classmethod
    def view(cls, done: int, total: int, unit: str = "bytes", state: str = PENDING) -> Progress:
        """The contract's view of raw counters: never ``n > m``; ``(0, 0)`` while the total is unknown;
        ``n == m`` on success."""
        if state == SUCCEEDED:
            return cls(done, done, unit)
        if total <= 0:
            return cls(0, 0, unit)
        return cls(min(done, total), total, unit)


@dataclass(frozen=True)
class Resources:
    """What the work cost so far. ``rate_bps`` is a moving average; ``eta_s`` is None when unknown."""

    elapsed_s: float = 0.0
    net_bytes_sent: int = 0
    net_bytes_received: int = 0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("elapsed_s", "cpu_s", "rate_bps"):
            d[k] = round(float(d[k]), 3)
        if d["eta_s"] is not None:
            d["eta_s"] = round(float(d["eta_s"]), 1) if math.isfinite(d["eta_s"]) else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Resources:
        d = d or {}
        eta = d.get("eta_s")
        return cls(
            elapsed_s=float(d.get("elapsed_s", 0.0)),
            net_bytes_sent=int(d.get("net_bytes_sent", 0)),
            net_bytes_received=int(d.get("net_bytes_received", 0)),
            cpu_s=float(d.get("cpu_s", 0.0)),
            peak_rss_bytes=int(d.get("peak_rss_bytes", 0)),
            rate_bps=float(d.get("rate_bps", 0.0)),
            eta_s=None if eta is None else float(eta),
        )


@dataclass(frozen=True)
class ActivityRecord:
    """The stable, JSON-able form of an activity (see ``docs/activity.md``)."""

    id: str
    kind: str
    node: str
    state: str = PENDING
    status: int | None = None
    error: str | None = None
    progress: Progress = field(default_factory=Progress)
    self_restarting: bool = False
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    resources: Resources = field(default_factory=Resources)
    params: dict[str, Any] = field(default_factory=dict)
    #: what the work did, for the caller (kind-specific; e.g. what a replication discarded or created)
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in ALL_STATES:
            raise ValueError(f"unknown state {self.state!r}")

    def with_(self, **changes: Any) -> ActivityRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "node": self.node,
            "state": self.state,
            "status": self.status,
            "error": self.error,
            "progress": self.progress.to_dict(),
            "self_restarting": self.self_restarting,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "resources": self.resources.to_dict(),
            "params": dict(self.params),
            "result": dict(self.result),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActivityRecord:
        status = d.get("status")
        return cls(
            id=str(d["id"]),
            kind=str(d["kind"]),
            node=str(d.get("node", "")),
            state=str(d.get("state", PENDING)),
            status=None if status is None else int(status),
            error=d.get("error"),
            progress=Progress.from_dict(d.get("progress") or {}),
            self_restarting=bool(d.get("self_restarting", False)),
            created_at=float(d.get("created_at", 0.0)),
            started_at=None if d.get("started_at") is None else float(d["started_at"]),
            finished_at=None if d.get("finished_at") is None else float(d["finished_at"]),
            resources=Resources.from_dict(d.get("resources")),
            params=dict(d.get("params") or {}),
            result=dict(d.get("result") or {}),
        )
