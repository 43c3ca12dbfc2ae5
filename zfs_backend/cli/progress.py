"""Following an activity on a terminal: a rich progress bar (n of m, rate, ETA) until it ends.

Rendering only: it reads ``record()`` of any ``BackendActivity`` (local or remote) and draws it.
``rich`` is imported only to draw on a terminal: a script's call (output to a pipe or a file) does
not pay its import (~0.1 s of a command's fixed cost).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..activity.handle import BackendActivity
from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from .render import human_bytes, human_duration, human_rate
from .sigint import Deferral, deferred

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EXIT_CANCELLED",
    "OnRecord",
    "follow",
    "run_in_foreground",
    "start_and_follow",
    "summary_line",
    "wait_quietly",
]


def _rate_column() -> Any:
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """The rate in the same binary units as the byte counts (rich's own column uses MB/s)."""

        def render(self, task: Task) -> Text:
            return Text(human_rate(task.speed) if task.speed else "-", style="progress.data.speed")

    return RateColumn()


#: what a command does with every record it sees while it follows an activity (a migration's
#: controller acts at its hold: ``driver.migration.Switch.at_hold``)
OnRecord = Callable[[ActivityRecord], None]


def _nothing(rec: ActivityRecord) -> None:
    pass


def wait_quietly(
    act: BackendActivity,
    *,
    timeout: float | None = None,
    interval: float = 0.25,
    on_record: OnRecord = _nothing,
) -> ActivityRecord:
    """Wait for the activity like :func:`follow`, drawing nothing (output not on a terminal)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    rec = act.record()
    on_record(rec)
    while rec.state not in TERMINAL and (deadline is None or time.monotonic() < deadline):
        rec = act.wait_record(interval)  # returns at once when the activity ends
        on_record(rec)
    return rec


def follow(
    act: BackendActivity,
    console: Console,
    *,
    timeout: float | None = None,
    interval: float = 0.25,
    label: str | None = None,
    on_record: OnRecord = _nothing,
) -> ActivityRecord:
    """Draw the activity's progress until it is terminal or ``timeout`` passes; return the last record.
    ``on_record`` sees every record, the first and the last too."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    deadline = None if timeout is None else time.monotonic() + timeout
    rec = act.record()
    on_record(rec)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        _rate_column(),
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
            on_record(rec)
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


def run_in_foreground(
    act: BackendActivity,
    *,
    label: str,
    as_json: bool,
    detach: bool,
    on_record: OnRecord = _nothing,
    sigint: Deferral | None = None,
) -> int:
    """What ``replicate`` and ``volume replicate`` do with the activity they started: print its id and
    return (``detach``), or follow it with a progress bar where Ctrl-C cancels it (with rollback) and
    says so. The last line (or the JSON record) reports what it cost. Exit code: 0 only on success,
    130 when cancelled, else the activity's status. ``on_record``: the command's own part while it
    follows (see :func:`follow`). ``sigint``: the command deferred Ctrl-C while it started the activity
    (``cli.sigint``); one noted then cancels it at once, as Ctrl-C while it is followed does (with
    ``detach`` too: the user stopped the command before it could return)."""
    if detach and not (sigint is not None and sigint.pending):
        print(json.dumps({"id": act.id, "node": act.node, "kind": act.kind}) if as_json else act.id)
        return 0
    stream = sys.stderr if as_json else sys.stdout
    console = None
    if stream.isatty():
        from rich.console import Console

        console = Console(highlight=False, stderr=as_json)

    def say(text: str, style: str = "") -> None:
        if console is not None:
            console.print(f"[{style}]{text}[/]" if style else text, markup=bool(style))
        else:
            print(text, file=stream, flush=True)

    try:
        with contextlib.nullcontext() if sigint is None else sigint.raising():
            if console is not None:
                rec = follow(act, console, label=label, on_record=on_record)
            else:
                rec = wait_quietly(act, on_record=on_record)
    except KeyboardInterrupt:
        say("interrupted: cancelling, rolling the destination back…", "yellow")
        act.cancel()
        act.wait(120)
        rec = act.record()
        if rec.state == "cancelled":
            say("cancelled: the destination was rolled back to its state before the replication")
        else:
            say(f"cancel ended {rec.state}: {rec.error or ''}", "red")
        _final(rec, as_json, say)
        return EXIT_CANCELLED
    _final(rec, as_json, say)
    return 0 if rec.state == "succeeded" else (rec.status or 1)


def start_and_follow(start: Callable[[], BackendActivity], *, label: str, as_json: bool, detach: bool) -> int:
    """``start()`` an activity and :func:`run_in_foreground` it, Ctrl-C deferred while it starts: once
    started, a Ctrl-C cancels it whenever it came (``cli.sigint``). A start that raises raises (nothing
    started), whether or not Ctrl-C came meanwhile."""
    with deferred() as sigint:
        act = start()
        return run_in_foreground(act, label=label, as_json=as_json, detach=detach, sigint=sigint)


def _final(rec: ActivityRecord, as_json: bool, say: Any) -> None:
    if as_json:
        print(json.dumps(rec.to_dict()))
    else:
        say(summary_line(rec))
