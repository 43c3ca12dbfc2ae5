"""``zfs-backend standby create|status|failover|remove``: a volume's hot standby, through the flows of
``zfs_backend.flows.standby``. Rendering only."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from ..config import load_settings
from .numbers import seconds
from .render import human_bytes, human_duration

#: a lag goal beyond a year means nothing
MAX_LAG_S = 366 * 86400

__all__ = ["print_run", "progress_printer", "register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "standby",
        help="a volume's hot standby on another node: create, status, failover, remove",
        description=(
            "A hot standby is a replica of a volume on another node, kept up to date by a standby-sync "
            "activity on the volume's node (a snapshot and an increment every interval). Create, failover "
            "and remove run as TaskFlow flows (zfs-backend flow list): in this command, or on a conductor "
            "when ZFS_BACKEND_JOBBOARD is set. A failed flow is reverted (exit 9)."
        ),
    )
    s = p.add_subparsers(dest="standby_command", metavar="ACTION", required=True)
    c = s.add_parser("create", help="seed a standby of VOLUME on NODE and keep it in sync")
    c.add_argument("volume")
    c.add_argument("--standby", required=True, metavar="NODE", help="the node holding the standby")
    c.add_argument(
        "--interval",
        type=seconds("--interval", 0.5, 86400),
        default=5.0,
        metavar="S",
        help="seconds between syncs (5)",
    )
    c.add_argument(
        "--max-lag",
        type=seconds("--max-lag", 0, MAX_LAG_S),
        default=0.0,
        metavar="S",
        help="the lag goal, reported by status",
    )
    c.add_argument(
        "--compress",
        action="store_true",
        help="zstd on the wire for the syncs (slow links; until a failover re-creates the sync)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_create)
    st = s.add_parser("status", help="lag, last sync, activity state, last error")
    st.add_argument("volume", nargs="?")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)
    f = s.add_parser("failover", help="make the standby the volume (controlled, or --force)")
    f.add_argument("volume")
    f.add_argument(
        "--force",
        action="store_true",
        help="the primary is unreachable: promote the standby at its newest snapshot, report the data lost",
    )
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_failover)
    r = s.add_parser("remove", help="stop syncing and destroy the standby replica")
    r.add_argument("volume")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_remove)


def progress_printer(con: Console) -> Any:
    """An ``on_progress`` callback: one line per finished atom, progress of long ones every 10 %."""
    last: dict[str, float] = {}
    t0 = time.monotonic()

    def cb(atom: str, state: str, fraction: float) -> None:
        if state == "PROGRESS":
            if 0.0 < fraction < 1.0 and fraction - last.get(atom, 0.0) >= 0.1:
                last[atom] = fraction
                con.print(f"  {atom}: {fraction:.0%}")
        elif state in ("SUCCESS", "FAILURE", "REVERTED", "IGNORE"):
            con.print(f"  [{time.monotonic() - t0:6.2f} s] {atom}: {state.lower()}")

    return cb


def print_run(run: Any, as_json: bool, extra: dict[str, Any] | None = None) -> int:
    from ..flows.runs import raise_for

    if as_json:
        out = {"flow": run.id, "name": run.name, "state": run.state, "error": run.error, **(extra or {})}
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    raise_for(run)
    return 0


def _create(args: argparse.Namespace) -> int:
    from ..flows.standby import standby_create

    con = Console(stderr=args.json, highlight=False)
    t0 = time.monotonic()
    run = standby_create(
        load_settings(),
        args.volume,
        args.standby,
        interval_s=args.interval,
        max_lag_s=args.max_lag,
        compress=args.compress,
        on_progress=None if args.json else progress_printer(con),
    )
    aside = run.results.get("set_aside")
    if not args.json and run.state == "SUCCESS":
        if aside:
            con.print(f"the old primary's copy is kept as {aside} (compare it, then destroy it)")
        con.print(
            f"standby of {args.volume} on {args.standby} in sync "
            f"(flow {run.id[:8]}, {time.monotonic() - t0:.1f} s)"
        )
    return print_run(run, args.json, {"set_aside": aside} if aside else None)


def _failover(args: argparse.Namespace) -> int:
    from ..flows.standby import standby_failover, standby_status

    con = Console(stderr=args.json, highlight=False)
    t0 = time.monotonic()
    run = standby_failover(
        load_settings(),
        args.volume,
        force=args.force,
        on_progress=None if args.json else progress_printer(con),
    )
    took = time.monotonic() - t0
    report: dict[str, Any] = {"duration_s": round(took, 3)}
    if run.state == "SUCCESS":
        [st] = standby_status(args.volume)
        report.update(st.get("detail") or {})
        if not args.json:
            lost = report.get("lost_window_s")
            con.print(
                f"{args.volume} now served by {st['primary']} ({took:.2f} s); "
                + (
                    f"[red]writes after @{report.get('snapshot')} are lost: up to {lost:.1f} s of data[/]"
                    if args.force
                    else f"standby: {st['standby']}; no acknowledged write lost"
                )
            )
    return print_run(run, args.json, report)


def _status(args: argparse.Namespace) -> int:
    from ..flows.standby import standby_status

    rows = standby_status(args.volume)
    if args.json:
        json.dump(rows if args.volume is None else rows[0], sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        return 0
    t = Table(title="standbys")
    for col in (
        "volume",
        "primary",
        "standby",
        "replication",
        "state",
        "lag",
        "max lag",
        "last sync",
        "last error",
    ):
        t.add_column(col)
    for r in rows:
        ls = r.get("last_sync") or {}
        t.add_row(
            r["volume"],
            r["primary"],
            r["standby"] or "-",
            r["replication_status"],
            r.get("state") or "-",
            "-" if r.get("lag_s") is None else human_duration(r["lag_s"]),
            human_duration(r.get("max_lag_s")) if r.get("max_lag_s") else "-",
            f"{human_bytes(ls.get('bytes'))} in {human_duration(ls.get('duration_s'))}" if ls else "-",
            (r.get("last_error") or "")[:60],
        )
    Console(highlight=False).print(t)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from ..flows.standby import standby_remove

    out = standby_remove(args.volume)
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        Console(highlight=False).print(
            f"standby of {args.volume} removed ({out.get('destroyed') or 'no replica destroyed'})"
        )
        if out.get("left"):
            Console(highlight=False, stderr=True).print(out["left"])
    return 0
