"""``zfs-backend top``: a live view of the activities of every node in the inventory at once.

One poller thread per node keeps a session to its agent (``connect_node``) and lists its activities every
``--interval`` seconds; a node that cannot be reached shows as a row of its own (``UNREACHABLE`` and the
error) while the others go on, and comes back by itself. The screen is redrawn from the pollers' last
answers; keys act on the selected row:

    ↑/↓ or k/j   select          s suspend   r resume   x cancel (then y to confirm)
    o / O        sort by the next column / reverse       K kind filter   F state filter
    a            also finished activities (default: running ones and those that ended < 10 min ago)
    q            quit

Each poll asks the agent only for what the screen shows (``Top.window``: the live activities and those
finished in the last ten minutes, or with ``a`` or a state filter the ``SHOWN_LIMIT`` that finished last),
so a node keeping a long history answers as fast as one with a short one.

Rendering and key handling only: the verbs are the agents' own (``suspend``/``resume``/``cancel``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..activity.report import ActivityRecord
from ..activity.states import ALL_STATES, TERMINAL
from ..config import Settings, load_settings
from ..hosts.inventory import load_inventory
from ..rpc.client import Node
from ..rpc.connect import connect_node
from .numbers import seconds
from .render import human_bytes, human_duration, human_rate

__all__ = ["register"]

SORT_KEYS = ("node", "kind", "state", "progress", "rate", "created")
RECENT_S = 600.0
#: finished activities asked of each node at most (the screen shows a few dozen rows)
SHOWN_LIMIT = 500


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("top", help="live view of every node's activities; keys suspend/resume/cancel")
    p.add_argument("--kind", help="only this kind")
    p.add_argument("--state", choices=sorted(ALL_STATES), help="only this state")
    p.add_argument("--sort", choices=SORT_KEYS, default="created")
    p.add_argument(
        "--interval",
        type=seconds("--interval", 0.1, 3600),
        default=1.0,
        help="seconds between polls (default 1)",
    )
    p.add_argument("--nodes", help="comma-separated nodes (default: the whole inventory)")
    p.set_defaults(func=cmd_top)


@dataclass
class NodeView:
    name: str
    records: list[ActivityRecord] = field(default_factory=list)
    error: str | None = None
    at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    node: Node | None = None


class Poller(threading.Thread):
    def __init__(
        self,
        view: NodeView,
        settings: Settings,
        interval: float,
        stop: threading.Event,
        window: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        super().__init__(name=f"top-{view.name}", daemon=True)
        self.view, self.settings, self.interval, self.stop = view, settings, interval, stop
        self.window = window

    def run(self) -> None:
        v = self.view
        while not self.stop.is_set():
            try:
                with v.lock:
                    if v.node is None:
                        v.node = connect_node(v.name, self.settings)
                    recs = v.node.client.list(**self.window())
                v.records, v.error, v.at = recs, None, time.time()
            except Exception as e:
                v.error = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                with v.lock:
                    if v.node is not None:
                        with contextlib.suppress(Exception):
                            v.node.close()
                    v.node = None
            self.stop.wait(self.interval)


class Top:
    def __init__(self, views: list[NodeView], args: argparse.Namespace) -> None:
        self.views = views
        self.kind: str | None = args.kind
        self.state: str | None = args.state
        self.sort = args.sort
        self.reverse = args.sort == "created"
        self.show_all = False
        self.selected: tuple[str, str] | None = None  # (node, id)
        # the cursor stays on the first row (the newest, by default) until a key moves it, as in top(1):
        # activities that appear later, or from a node that answered later, do not steal the selection
        self.on_top = True
        self.start = 0  # the first row on the screen (scrolled only to keep the selection in view)
        self.message = ""
        self.confirm: tuple[str, str] | None = None

    def window(self, now: float | None = None) -> dict[str, Any]:
        """What a poll asks each agent for (``AgentClient.list``'s arguments): what ``rows()`` may show."""
        if self.show_all or self.state:
            return {"state": self.state, "limit": SHOWN_LIMIT}
        return {"since": (time.time() if now is None else now) - RECENT_S, "limit": SHOWN_LIMIT}

    def rows(self) -> list[tuple[str, ActivityRecord]]:
        now = time.time()
        out = []
        for v in self.views:
            for r in v.records:
                if self.kind and r.kind != self.kind:
                    continue
                if self.state and r.state != self.state:
                    continue
                old = r.state in TERMINAL and now - (r.finished_at or 0) > RECENT_S
                if old and not self.show_all and not self.state:
                    continue
                out.append((v.name, r))

        def key(row: tuple[str, ActivityRecord]) -> Any:
            n, r = row
            return {
                "node": (n, r.created_at),
                "kind": (r.kind, r.created_at),
                "state": (r.state, r.created_at),
                "progress": (r.progress.fraction or 0.0, r.created_at),
                "rate": (r.resources.rate_bps, r.created_at),
                "created": (r.created_at,),
            }[self.sort]

        return sorted(out, key=key, reverse=self.reverse)

    def _settle(self, rows: list[tuple[str, ActivityRecord]]) -> None:
        """Keep the selection on a row that is shown: the first one while following the top (or when
        the selected row left the view), none when nothing is shown. A key never acts on a row the
        screen does not show (a filter just changed, the activity aged out)."""
        if not rows:
            self.selected = None
        elif self.on_top or self.selected not in [(n, r.id) for n, r in rows]:
            self.selected = (rows[0][0], rows[0][1].id)

    def _index(self, rows: list[tuple[str, ActivityRecord]]) -> int:
        ids = [(n, r.id) for n, r in rows]
        if self.selected in ids:
            return ids.index(self.selected)
        return 0

    def render(self, height: int = 0) -> Group:
        """The screen: the nodes and the last message first (never cut), then as many rows as fit in
        ``height`` lines (0: all), scrolled to keep the selected row in view, then the keys."""
        rows = self.rows()
        self._settle(rows)
        down = [v for v in self.views if v.error is not None]
        shown, start = rows, 0
        if height > 0:
            # nodes, message, title, the table's borders, header and caption, keys
            room = max(1, height - 9 - len(down))
            if len(rows) > room:
                i = self._index(rows)
                start = min(max(self.start, i - room + 1), i, len(rows) - room)
                shown = rows[start : start + room]
        self.start = start
        filt = (
            f"kind={self.kind or 'all'} state={self.state or ('all' if self.show_all else 'active+recent')}"
        )
        t = Table(title=f"zfs-backend top — {filt} — sort {self.sort}{' ↓' if self.reverse else ' ↑'}")
        for col in ("node", "id", "kind", "state", "phase", "progress", "done / total", "rate", "eta"):
            t.add_column(col, no_wrap=True, min_width=30 if col == "id" else None)
        for n, r in shown:
            done, total = r.progress.pair
            frac = r.progress.fraction
            live = r.state not in TERMINAL
            style = "reverse" if (n, r.id) == self.selected else None
            t.add_row(
                n, r.id, r.kind, r.state, str(r.result.get("phase") or "-"),
                "-" if frac is None else f"{frac:.0%}", f"{human_bytes(done)} / {human_bytes(total)}",
                human_rate(r.resources.rate_bps) if live else "-",
                human_duration(r.resources.eta_s) if live else "-", style=style,
            )  # fmt: skip
        for v in down:
            t.add_row(
                v.name, Text("UNREACHABLE", style="bold red"), "", "", "", "", (v.error or "")[:60], "", ""
            )
        if len(shown) < len(rows):
            t.caption = f"rows {start + 1}-{start + len(shown)} of {len(rows)} (↑↓ scrolls)"
        nodes = ", ".join(f"{v.name}:{'down' if v.error else 'up'}" for v in self.views)
        help_ = "↑↓ select  s suspend  r resume  x cancel  o/O sort  K kind  F state  a all  q quit"
        return Group(
            Text(nodes, no_wrap=True, overflow="ellipsis"),
            Text(self.message, style="bold", no_wrap=True, overflow="ellipsis"),
            t,
            Text(help_, style="dim", no_wrap=True, overflow="ellipsis"),
        )

    def _view(self, node: str) -> NodeView:
        return next(v for v in self.views if v.name == node)

    def act(self, verb: str) -> None:
        if self.selected is None:
            self.message = "nothing selected"
            return
        node, aid = self.selected
        v = self._view(node)
        try:
            with v.lock:
                if v.node is None:
                    raise RuntimeError(f"{node} is unreachable")
                rec = ActivityRecord.from_dict(v.node.client.call(verb, id=aid))
            self.message = f"{verb}: {aid} on {node} is {rec.state}"
        except Exception as e:
            self.message = f"{verb} {aid}: {e}"

    def key(self, k: str) -> bool:
        """Handle one key; False: quit."""
        if self.confirm is not None:
            node, aid = self.confirm
            self.confirm = None
            if k in ("y", "Y"):
                self.selected = (node, aid)
                self.act("cancel")
            else:
                self.message = "cancel not confirmed"
            return True
        rows = self.rows()
        self._settle(rows)
        i = self._index(rows)
        if k == "q":
            return False
        if k in ("\x1b[A", "k") and rows:
            self.selected = (rows[max(0, i - 1)][0], rows[max(0, i - 1)][1].id)
            self.on_top = i <= 1
        elif k in ("\x1b[B", "j") and rows:
            self.selected = (rows[min(len(rows) - 1, i + 1)][0], rows[min(len(rows) - 1, i + 1)][1].id)
            self.on_top = False
        elif k in ("s", "r", "x") and self.selected is None:
            self.message = "nothing selected"
        elif k == "s":
            self.act("suspend")
        elif k == "r":
            self.act("resume")
        elif k == "x" and self.selected is not None:
            self.confirm = self.selected
            self.message = f"cancel {self.selected[1]} on {self.selected[0]} (rolls it back)? y/n"
        elif k == "o":
            self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        elif k == "O":
            self.reverse = not self.reverse
        elif k == "K":
            kinds = sorted({r.kind for v in self.views for r in v.records})
            seq: list[str | None] = [None, *kinds]
            self.kind = seq[(seq.index(self.kind) + 1) % len(seq)] if self.kind in seq else None
        elif k == "F":
            states: list[str | None] = [None, *sorted(ALL_STATES)]
            self.state = states[(states.index(self.state) + 1) % len(states)]
        elif k == "a":
            self.show_all = not self.show_all
        return True


def split_keys(data: str) -> list[str]:
    """The keys in what one read of the terminal returned: single characters, and escape sequences
    (``ESC [ A`` for an arrow) kept whole. Keys typed (or sent) faster than the screen refreshes arrive
    together and must all count."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i] == "\x1b" and data[i + 1 : i + 2] in ("[", "O") and i + 2 < len(data):
            j = i + 2
            while j < len(data) and not data[j].isalpha() and data[j] != "~":
                j += 1
            keys.append(data[i : j + 1])
            i = j + 1
        else:
            keys.append(data[i])
            i += 1
    return keys


def _read_keys(fd: int, timeout: float) -> list[str]:
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return []
    return split_keys(os.read(fd, 64).decode(errors="replace"))


def cmd_top(args: argparse.Namespace) -> int:
    settings = load_settings()
    names = args.nodes.split(",") if args.nodes else load_inventory(settings=settings).names
    views = [NodeView(n) for n in names]
    stop = threading.Event()
    top = Top(views, args)
    for v in views:
        Poller(v, settings, args.interval, stop, top.window).start()
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd) if os.isatty(fd) else None
    try:
        if old is not None:
            tty.setcbreak(fd)
        console = Console()
        with Live(top.render(console.size.height), console=console, auto_refresh=False, screen=True) as live:
            while True:
                if not all(top.key(k) for k in _read_keys(fd, min(0.5, args.interval))):
                    break
                live.update(top.render(console.size.height), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if old is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
    return 0
