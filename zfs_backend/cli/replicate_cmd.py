"""``zfs-backend replicate SRC_NODE:pool/fs@snap DST_NODE:pool/fs``: start a replication on the source
node's agent and follow it (or ``--detach``). Rendering only; the work is in ``zfs_backend.replication``.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from ..activity.states import CANCELLED, SUCCEEDED
from ..config import load_settings
from ..replication import snapshot_replicate
from .progress import follow, summary_line
from .render import parse_rate

__all__ = ["register"]

EXIT_CANCELLED = 130


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replicate",
        help="replicate a snapshot to another node (incremental by GUID), as a backend activity",
        description=(
            "Plans from here (full, or incremental from the newest snapshot both sides hold, matched by "
            "GUID), refuses diverged destinations and short space without changing anything, then runs "
            "`zfs send | ssh DST zfs recv` as an activity on the source node's agent. In the foreground "
            "a progress bar follows it; Ctrl-C cancels it and rolls the destination back. Exit 0 only "
            "on success; 8 when refused by a conflict."
        ),
    )
    p.add_argument("source", metavar="SRC_NODE:pool/fs@snap")
    p.add_argument("destination", metavar="DST_NODE:pool/fs")
    p.add_argument("--full", action="store_true", help="full stream into a new dataset (force_full_copy)")
    p.add_argument("--incremental-from", metavar="SNAP", help="base snapshot (must be common, by GUID)")
    p.add_argument("--intermediates", action="store_true", help="send the snapshots in between too (-I)")
    p.add_argument("--bwlimit", metavar="RATE", help="bandwidth limit, e.g. 20M (bytes/s) or 100mbit")
    p.add_argument(
        "--rollback-destination",
        action="store_true",
        help="discard the destination's snapshots/changes after the common base (irreversible)",
    )
    p.add_argument("--recursive", action="store_true", help="replicate the dataset tree (send -R)")
    p.add_argument("--properties", action="store_true", help="carry the dataset properties (send -p)")
    p.add_argument("--cipher", help="OpenSSH cipher for the stream (default aes128-gcm@openssh.com)")
    p.add_argument("--detach", action="store_true", help="print the activity id and return")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_replicate)


def cmd_replicate(args: argparse.Namespace) -> int:
    settings = load_settings()
    bw = None if args.bwlimit is None else max(1024, parse_rate(args.bwlimit) // 8)
    act = snapshot_replicate(
        args.source,
        None,
        args.destination,
        args.full,
        incremental_from=args.incremental_from,
        intermediates=args.intermediates,
        bwlimit=bw,
        rollback_destination=args.rollback_destination,
        recursive=args.recursive,
        properties=args.properties,
        cipher=args.cipher,
        settings=settings,
    )
    console = Console(highlight=False, stderr=args.json)
    if args.detach:
        if args.json:
            print(json.dumps({"id": act.id, "node": act.node, "kind": act.kind}))
        else:
            print(act.id)
        return 0
    try:
        rec = follow(act, console, label=f"{args.source} → {args.destination}")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cancelling, rolling the destination back…[/]")
        act.cancel()
        act.wait(120)
        rec = act.record()
        if rec.state == CANCELLED:
            console.print("cancelled: the destination was rolled back to its state before the replication")
        else:
            console.print(f"[red]cancel ended {rec.state}: {rec.error or ''}[/]")
        _final(rec, args.json, console)
        return EXIT_CANCELLED
    _final(rec, args.json, console)
    return 0 if rec.state == SUCCEEDED else (rec.status or 1)


def _final(rec, as_json: bool, console: Console) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        json.dump(rec.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        console.print(summary_line(rec))
