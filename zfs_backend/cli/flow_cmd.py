"""``zfs-backend flow list|show|resume``, ``zfs-backend conductor`` and ``zfs-backend jobboard up|down``:
TaskFlow flows from the logbook, the processes that run posted ones, and a loopback Redis for them.
Rendering only; the work is in ``zfs_backend.flows``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from ..config import load_settings
from .numbers import PORT_MAX, seconds, whole

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("flow", help="workflows (TaskFlow) from the logbook: list, show, resume")
    s = p.add_subparsers(dest="flow_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="flows and their state")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    sh = s.add_parser("show", help="one flow: its inputs, tasks, their state and progress")
    sh.add_argument("id", help="flow id (or its first 8+ characters)")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)
    r = s.add_parser("resume", help="carry a flow on from the logbook (its controller died)")
    r.add_argument("id")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_resume)

    c = sub.add_parser(
        "conductor",
        help="claim and run flows posted on the jobboard ($ZFS_BACKEND_JOBBOARD), until SIGTERM",
    )
    c.add_argument("--name", help="this conductor's name (default: conductor-<host>)")
    c.add_argument(
        "--claim-expiry",
        type=seconds("--claim-expiry", 1, 86400),
        default=30.0,
        metavar="S",
        help="a dead conductor's jobs are free after S",
    )
    c.add_argument("--max-jobs", type=whole("--max-jobs", 1, 10**9), help="stop after running this many jobs")
    c.set_defaults(func=_conductor)

    j = sub.add_parser("jobboard", help="a loopback redis-server for the jobboard: up, down")
    j.add_argument("action", choices=["up", "down"])
    j.add_argument("--port", type=whole("--port", 1, PORT_MAX), default=6390)
    j.set_defaults(func=_jobboard)


def _dump(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _list(args: argparse.Namespace) -> int:
    from ..flows.runs import list_flows

    flows = list_flows(load_settings())
    if args.json:
        _dump(flows)
        return 0
    t = Table(title="flows")
    for col in ("id", "name", "state", "created", "tasks"):
        t.add_column(col)
    for f in flows:
        done = sum(1 for a in f["atoms"] if a["state"] in ("SUCCESS", "IGNORE"))
        created = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f["created_at"])) if f["created_at"] else "-"
        )
        t.add_row(f["id"][:8], f["name"], f["state"], created, f"{done}/{len(f['atoms'])}")
    Console(highlight=False).print(t)
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..flows.runs import show_flow

    f = show_flow(load_settings(), args.id)
    if args.json:
        _dump(f)
        return 0
    con = Console(highlight=False)
    con.print(f"[bold]{f['name']}[/] {f['id']}  {f['state']}  ({f['factory']})")
    con.print(f"inputs: {json.dumps(f['store'], sort_keys=True)}")
    t = Table()
    for col in ("task", "state", "progress", "result / error"):
        t.add_column(col)
    for a in f["atoms"]:
        shown = a["error"] or ("" if a["result"] is None else json.dumps(a["result"], default=str))
        t.add_row(a["name"], a["state"], f"{a['progress']:.0%}", shown[:80])
    con.print(t)
    return 0


def _resume(args: argparse.Namespace) -> int:
    from ..flows.engine import resume_flow
    from .standby_cmd import print_run, progress_printer

    run = resume_flow(
        load_settings(), args.id, on_progress=None if args.json else progress_printer(Console())
    )
    return print_run(run, args.json)


def _conductor(args: argparse.Namespace) -> int:
    import logging

    from ..flows.jobboard import run_conductor

    logging.getLogger("zfs_backend").setLevel(logging.INFO)
    return run_conductor(load_settings(), args.name, claim_expiry_s=args.claim_expiry, max_jobs=args.max_jobs)


def _jobboard(args: argparse.Namespace) -> int:
    from ..flows.redis_server import RedisServer

    server = RedisServer(load_settings().home / "jobboard", args.port)
    if args.action == "up":
        url = server.start()
        print(f"export ZFS_BACKEND_JOBBOARD={url} ZFS_BACKEND_JOBBOARD_PASSWORD_FILE={server.password_file}")
    else:
        server.stop()
    return 0
