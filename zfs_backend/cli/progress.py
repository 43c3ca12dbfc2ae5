"""Following an activity on a terminal: a rich progress bar (n of m, rate, ETA) until it ends.

Rendering only: it reads ``record()`` of any ``BackendActivity`` (local or remote) and draws it.
"""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..activity.core import BackendActivity
from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from .render import human_bytes, human_duration, human_rate

__all__ = ["EXIT_CANCELLED", "follow", "run_in_foreground", "summary_line"]


class _RateColumn(ProgressColumn):
    """The rate in the same binary units as the byte counts (rich's own column uses MB/s)."""

    def render(self, task: Task) -> Text:
        return Text(human_rate(task.speed) if task.speed else "-", style="progress.data.speed")


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
        _RateColumn(),
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
            rec = act.wait_record(interval)  # returns at once when the activity ends
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


EXIT_CANCELLED = 130


def run_in_foreground(act: BackendActivity, *, label: str, as_json: bool, detach: bool) -> int:
    """What ``replicate`` and ``volume replicate`` do with the activity they started: print its id and
    return (``detach``), or follow it with a progress bar where Ctrl-C cancels it (with rollback) and
    says so. The last line (or the JSON record) reports what it cost. Exit code: 0 only on success,
    130 when cancelled, else the activity's status."""
    console = Console(highlight=False, stderr=as_json)
    if detach:
        print(json.dumps({"id": act.id, "node": act.node, "kind": act.kind}) if as_json else act.id)
        return 0
    try:
        rec = follow(act, console, label=label)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cancelling, rolling the destination back…[/]")
        act.cancel()
        act.wait(120)
        rec = act.record()
        if rec.state == "cancelled":
            console.print("cancelled: the destination was rolled back to its state before the replication")
        else:
            console.print(f"[red]cancel ended {rec.state}: {rec.error or ''}[/]")
        _final(rec, as_json, console)
        return EXIT_CANCELLED
    _final(rec, as_json, console)
    return 0 if rec.state == "succeeded" else (rec.status or 1)


def _final(rec: ActivityRecord, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(rec.to_dict()))
    else:
        console.print(summary_line(rec))
