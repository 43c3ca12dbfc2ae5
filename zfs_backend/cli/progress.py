"""Following an activity on a terminal: a rich progress bar (n of m, rate, ETA) until it ends.

Rendering only: it reads ``record()`` of any ``BackendActivity`` (local or remote) and draws it.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..activity.core import BackendActivity
from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from .render import human_bytes, human_duration, human_rate

__all__ = ["follow", "summary_line"]


def follow(
    act: BackendActivity,
    console: Console,
    *,
    timeout: float | None = None,
    interval: float = 0.25,
    label: str | None = None,
) -> ActivityRecord:
    """Draw the activity's progress until it is terminal or ``timeout`` passes; return the last record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    rec = act.record()
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[state]}"),
    ]
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(label or f"{rec.kind} {rec.id}", total=None, state=rec.state)
        while True:
            done, total = rec.progress.pair
            bar.update(task, completed=done, total=total or None, state=rec.state)
            if rec.state in TERMINAL:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(interval)
            rec = act.record()
    return rec


def summary_line(rec: ActivityRecord) -> str:
    r = rec.resources
    done, total = rec.progress.pair
    head = {
        "succeeded": "done",
        "failed": "FAILED",
        "cancelled": "cancelled (rolled back)",
    }.get(rec.state, rec.state)
    parts = [
        f"{rec.id} {head}: {human_bytes(done)} of {human_bytes(total)}",
        f"in {human_duration(r.elapsed_s)}",
        f"at {human_rate(r.rate_bps if rec.state not in TERMINAL else _avg(done, r.elapsed_s))}",
        f"cpu {r.cpu_s:.1f} s",
        f"peak rss {human_bytes(r.peak_rss_bytes)}",
    ]
    line = ", ".join(parts)
    if rec.error:
        line += f"; error: {rec.error}"
    return line


def _avg(done: int, elapsed: float | None) -> float | None:
    return done / elapsed if elapsed else None
