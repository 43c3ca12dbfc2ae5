"""``zfs-backend activity ...``: list, inspect and steer the backend activities of a node.

rich is imported where a table or a bar is drawn: ``--json`` answers load none of it (~30-70 ms here).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..activity.report import ActivityRecord
from ..activity.states import ALL_STATES, TERMINAL
from ..config import load_settings
from ..rpc.client import Node
from ..rpc.connect import connect_node
from .numbers import seconds, whole
from .progress import follow, summary_line
from .render import human_bytes, human_duration, human_rate, parse_rate

if TYPE_CHECKING:
    from rich.table import Table

#: finished activities ``activity list`` shows by default (a screenful; rendering a table row costs ~2 ms)
SHOWN = 20
#: waiting longer than a year for one activity means nothing
MAX_TIMEOUT_S = 366 * 86400

__all__ = ["register"]

WAIT_TIMEOUT_EXIT = 124


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "activity",
        help="list, show, suspend, resume, cancel and wait for backend activities",
        description=(
            "Backend activities run on a storage node's agent. --node NODE reaches that node's agent through "
            "the inventory over SSH; without it, the local agent. Exit codes: 10 unknown activity, "
            "11 illegal transition, 12 agent down, 13 node unreachable; `wait` exits with the activity's "
            "status (0 = success), 124 on timeout."
        ),
    )
    p.set_defaults(quick_exit=True)  # clients of an agent: nothing of theirs to tear down (see main)
    s = p.add_subparsers(dest="activity_command", metavar="ACTION", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--node", help="node name from the inventory (default: the local agent)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    ls = s.add_parser(
        "list",
        help="activities of a node",
        description=(
            "Every activity not yet finished, and the finished ones that finished last (--limit, default "
            f"{SHOWN}; --all: every one the node keeps, see ZFS_BACKEND_ACTIVITY_KEEP); oldest first."
        ),
    )
    ls.add_argument("--state", choices=sorted(ALL_STATES), help="only those in this state")
    window = ls.add_mutually_exclusive_group()
    window.add_argument(
        "--limit",
        type=whole("--limit", 0, 1_000_000),
        default=SHOWN,
        help=f"at most this many finished activities, those that finished last (default {SHOWN})",
    )
    window.add_argument("--all", action="store_true", help="every finished activity the node keeps")
    common(ls)
    ls.set_defaults(func=cmd_list)
    for name, helptext in (
        ("show", "one activity in full"),
        ("suspend", "stop moving bytes until resume (bytes already moved are kept)"),
        ("resume", "leave the suspended state"),
        ("cancel", "abort and roll back (destination left as before)"),
    ):
        sp = s.add_parser(name, help=helptext)
        sp.add_argument("id")
        common(sp)
        sp.set_defaults(func=cmd_one, action=name)
    st = s.add_parser("set", help="change a running activity's bandwidth limit (no restart of its stream)")
    st.add_argument("id")
    st.add_argument(
        "--bwlimit",
        metavar="RATE",
        required=True,
        type=bwlimit_setting,
        help="new limit, e.g. 20M (bytes/s) or 100mbit; 'none' lifts it",
    )
    common(st)
    st.set_defaults(func=cmd_set)
    ev = s.add_parser("events", help="what happened to an activity (states, limits set, stalls)")
    ev.add_argument("id")
    common(ev)
    ev.set_defaults(func=cmd_events)
    ho = s.add_parser(
        "holds",
        help="the project's ZFS holds on a node, and which no live activity owns",
        description=(
            "Lists the holds tagged zfs_backend:<activity> on the node's snapshots, each live (its activity "
            "runs, or its claim's lease holds) or stale. --release-stale releases the stale ones; a live "
            "hold and any other tag (a user's hold) are never touched."
        ),
    )
    ho.add_argument("--release-stale", action="store_true", help="release the holds no live activity owns")
    common(ho)
    ho.set_defaults(func=cmd_holds)
    w = s.add_parser("wait", help="follow an activity to its end; exit code = its status")
    w.add_argument("id")
    w.add_argument(
        "--timeout",
        type=seconds("--timeout", 0, MAX_TIMEOUT_S),
        help="give up after this many seconds (exit 124)",
    )
    common(w)
    w.set_defaults(func=cmd_wait)
    wa = s.add_parser("watch", help="a live table of the node's activities (Ctrl-C to leave)")
    wa.add_argument("--node", help="node name from the inventory (default: the local agent)")
    wa.add_argument(
        "--interval",
        type=seconds("--interval", 0.1, 3600),
        default=1.0,
        help="refresh interval in seconds",
    )
    wa.set_defaults(func=cmd_watch)


@contextmanager
def _node(args: argparse.Namespace) -> Iterator[Node]:
    node = connect_node(args.node, load_settings())
    try:
        yield node
    finally:
        node.close()


def _table(records: list[ActivityRecord], title: str) -> Table:
    from rich.table import Table

    t = Table(title=title)
    for col in ("id", "kind", "state", "status", "progress", "done / total", "rate", "eta", "elapsed"):
        t.add_column(col)
    for r in records:
        done, total = r.progress.pair
        frac = r.progress.fraction
        res = r.resources
        t.add_row(
            r.id,
            r.kind,
            _state(r.state),
            "-" if r.status is None else str(r.status),
            "-" if frac is None else f"{frac:.0%}",
            f"{human_bytes(done)} / {human_bytes(total)}",
            human_rate(res.rate_bps) if r.state not in TERMINAL else "-",
            human_duration(res.eta_s) if r.state not in TERMINAL else "-",
            human_duration(res.elapsed_s),
        )
    return t


def _state(state: str) -> str:
    color = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "suspended": "cyan"}.get(state)
    return f"[{color}]{state}[/]" if color else state


def cmd_list(args: argparse.Namespace) -> int:
    limit = None if args.all else args.limit
    with _node(args) as node:
        records = [a.record() for a in node.list(args.state, limit=limit)]
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    from rich.console import Console

    Console().print(_table(records, f"activities on {args.node or 'local'}"))
    if limit is not None and sum(1 for r in records if r.state in TERMINAL) >= limit:
        print(f"(the {limit} that finished last; --limit N or --all for more)")
    return 0


def cmd_one(args: argparse.Namespace) -> int:
    with _node(args) as node:
        act = node.get(args.id)
        if args.action != "show":
            getattr(act, args.action)()
        rec = act.record()
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
    elif args.action == "show":
        from rich.console import Console

        Console().print_json(json.dumps(rec.to_dict()))
    else:
        print(f"{rec.id}: {rec.state}")
    return 0


def bwlimit_setting(text: str) -> int | None:
    """``--bwlimit`` of ``activity set``: a rate (bytes/s, at least 1 KiB/s) or ``none``."""
    if text.strip().lower() in ("none", "0", "off", "unlimited"):
        return None
    return max(1024, parse_rate(text) // 8)


def cmd_set(args: argparse.Namespace) -> int:
    with _node(args) as node:
        act = node.get(args.id)
        act.set_bwlimit(args.bwlimit)
        rec = act.record()
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
    else:
        shown = "none" if args.bwlimit is None else f"{human_rate(args.bwlimit)} ({args.bwlimit} bytes/s)"
        print(f"{rec.id}: {rec.state}, bwlimit {shown}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    with _node(args) as node:
        events = node.get(args.id).events()
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    for e in events:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(e["at"])))
        print(f"{at}Z  {e['old'] or '-'} -> {e['new']}" + (f"  {e['detail']}" if e.get("detail") else ""))
    return 0


def cmd_holds(args: argparse.Namespace) -> int:
    with _node(args) as node:
        report = node.client.holds(release_stale=args.release_stale)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"project holds on {args.node or 'local'} ({report['listing']})")
    for col in ("snapshot", "tag", "state", "why"):
        t.add_column(col)
    for h in report["holds"]:
        t.add_row(h["snapshot"], h["tag"], "live" if h["live"] else "[red]stale[/]", h["why"])
    con = Console()
    con.print(t)
    for h in report["released"]:
        con.print(f"released {h['tag']} on {h['snapshot']} ({h['why']})")
    for u in report["unaccounted"]:
        con.print(
            f"{u['snapshot']}: {u['userrefs']} holds, {u['recorded']} of them the project's records know"
        )
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from rich.console import Console

    con = Console(stderr=True)
    with _node(args) as node:
        act = node.get(args.id)
        if args.json:
            act.wait(args.timeout)
            rec = act.record()
        else:
            rec = follow(act, con, timeout=args.timeout)
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
    else:
        con.print(summary_line(rec))
    if rec.state not in TERMINAL:
        return WAIT_TIMEOUT_EXIT
    return int(rec.status or 0)


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    with _node(args) as node, Live(console=Console(), auto_refresh=False) as live:
        try:
            while True:
                records = [a.record() for a in node.list(limit=SHOWN)]
                live.update(_table(records, f"activities on {args.node or 'local'}"), refresh=True)
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
